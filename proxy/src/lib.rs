//! The service proxy: Services and EndpointSlices programmed into a [`Dataplane`], with
//! nftables ([`Nftables`]) and IPVS ([`ipvs`]) behind it, and the cluster DNS server
//! ([`dns`]) that names the same Services.
//!
//! Where to start reading:
//! - [`model`]: the pure translation of Services and slices into per-service-port state,
//!   and the [`Change`]s between two states.
//! - [`dataplane`]: the one trait every back end implements, and `FakeDataplane`.
//! - [`nft`]: the nftables back end (one table, verdict maps; see its docs for the layout).
//! - [`watch`]: [`run`], the watches and the batching loop around a [`watch::Syncer`].
//! - [`conntrack`]: stale UDP flows cleared when endpoints go.
//! - [`ipvs`]: the kernel's IPVS over generic netlink, its planner and executor, and
//!   [`IpvsDataplane`], the IPVS back end (with an nftables table for masquerade and
//!   refusals).
//! - [`dns`]: `<svc>.<ns>.svc.<domain>` answered from the same watches' objects.
//!
//! Embedding it (the node agent and `berth proxy` do this):
//!
//! ```no_run
//! # async fn f(client: kube::Client) -> Result<(), berth_proxy::Error> {
//! use berth_proxy::{Config, IpvsConfig, IpvsDataplane, Mode, NftConfig, Nftables};
//! let config = Config { node_name: "n1".into(), cluster_cidr: "10.244.0.0/16".parse().ok(), ..Config::default() };
//! let dataplane: Box<dyn berth_proxy::Dataplane> = match berth_proxy::select_mode(config.mode) {
//!     Mode::Ipvs => Box::new(IpvsDataplane::new(IpvsConfig {
//!         node_ips: vec!["192.0.2.1".parse().unwrap()],
//!         cluster_cidr: config.cluster_cidr,
//!         ..IpvsConfig::default()
//!     })),
//!     _ => Box::new(Nftables::new(NftConfig { cluster_cidr: config.cluster_cidr, ..NftConfig::default() })),
//! };
//! berth_proxy::run(client, config, dataplane).await
//! # }
//! ```
#![forbid(unsafe_code)]

pub mod config;
pub mod conntrack;
pub mod dataplane;
pub mod dns;
pub mod ipvs;
pub mod model;
pub mod nft;
pub mod watch;

pub use config::{ipvs_available, select_mode, Config, Ipv4Cidr, Mode};
pub use dataplane::Dataplane;
#[cfg(any(test, feature = "test-util"))]
pub use dataplane::FakeDataplane;
pub use ipvs::{IpvsConfig, IpvsDataplane};
pub use model::{Change, Endpoint, Model, Protocol, ServicePortInfo, ServicePortName, State};
pub use nft::{NftConfig, Nftables};
pub use watch::run;

/// Why [`run`] stopped.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("the {0} watch ended")]
    WatchEnded(&'static str),
    #[error("the data plane task panicked or was cancelled")]
    Task(#[from] tokio::task::JoinError),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
