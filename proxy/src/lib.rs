//! The service proxy: Services and EndpointSlices programmed into a `Dataplane`,
//! with IPVS (kernel ip_vs over generic netlink) and nftables verdict maps behind it,
//! and the cluster DNS server that names the same Services.
//!
//! Start reading at [`ipvs`]: the IPVS back end, from the kernel-facing netlink client
//! up to the planner and its executor; [`dns`] answers `<svc>.<ns>.svc.<domain>`.
#![forbid(unsafe_code)]

pub mod dns;
pub mod ipvs;
