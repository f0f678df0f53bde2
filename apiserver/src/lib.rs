//! The API server: the only door to the store.
//!
//! Start reading at [`control_plane`], which runs a store member, the watch cache, and the
//! HTTPS API for `berth server`. A request goes through [`server`] (TLS, authentication,
//! authorisation, dispatch), [`request`] (paths, query, media types), then [`read`] (get, list,
//! watch from the [`cache`]) or [`objects`] / [`delete`] (writes: admission, server-owned
//! fields, compare-and-swap through [`storage`]). [`patch`] and [`managed`] hold the patch
//! formats and field ownership; [`discovery`], [`openapi`] and [`table`] what kubectl reads
//! besides objects; [`protobuf`] decodes kubectl's protobuf bodies; [`auth`], [`tls`] and
//! [`serviceaccount`] identities, the cluster CA and ServiceAccount tokens;
//! [`bootstrap_token`] the tokens nodes join with and [`certificates`] the
//! CertificateSigningRequests they then send, with the approver and signer for node
//! certificates; [`kubelet`] the calls to node agents (logs, exec, attach, port-forward,
//! `nodes/proxy`) and [`metrics`] `metrics.k8s.io` from their summaries; [`alloc`] Service addresses; [`grpc`] the `berth.v1` gRPC service on the same
//! port; [`bootstrap`] what a new cluster starts with.
#![forbid(unsafe_code)]

pub mod alloc;
pub mod audit;
pub mod auth;
pub mod bootstrap;
pub mod bootstrap_token;
pub mod cache;
pub mod certificates;
pub mod control_plane;
pub mod delete;
pub mod discovery;
pub mod error;
pub mod grpc;
pub mod kubelet;
pub mod managed;
pub mod metrics;
pub mod objects;
pub mod openapi;
pub mod patch;
pub mod protobuf;
pub mod read;
pub mod request;
pub mod server;
pub mod serviceaccount;
pub mod storage;
pub mod table;
pub mod tls;

pub use control_plane::{ControlPlane, ServerArgs};
