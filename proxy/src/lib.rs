//! The service proxy: Services and EndpointSlices programmed into a `Dataplane`,
//! with IPVS (kernel ip_vs over generic netlink) and nftables verdict maps behind it.
//! Empty until issue "Pod networking (cni), the service proxy, and cluster DNS".
#![forbid(unsafe_code)]

pub mod dns;
