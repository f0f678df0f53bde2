//! The service proxy: Services and EndpointSlices programmed into a `Dataplane`,
//! with IPVS (kernel ip_vs over generic netlink) and nftables verdict maps behind it.
//!
//! Start reading at [`ipvs`]: the IPVS back end, from the kernel-facing netlink client
//! up to the planner and its executor.
#![forbid(unsafe_code)]

pub mod ipvs;
