//! The node agent: Berth's kubelet, run as `berth agent`.
//!
//! It will own node registration and lease heartbeats, the pod sync loop (sandbox,
//! init containers, members, probes, restart back-off), status reporting and the
//! agent's HTTPS endpoint for logs, exec, attach and port-forward.
//! Empty until issue "The node agent", apart from [`stream`]: the exec, attach and
//! port-forward protocols of that endpoint.
#![forbid(unsafe_code)]

pub mod stream;
