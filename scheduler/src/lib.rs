//! The scheduler: decides where every pod lands, as kube-scheduler's default profile would.
//!
//! It owns the scheduling queue ([`queue`]: priority order, back-off, parking of unschedulable
//! pods until the cluster changes), the picture of the cluster it decides on ([`snapshot`]:
//! nodes with integer free resources, pods bound or assumed, spread counts kept
//! incrementally), the decision itself ([`decide`]: filters and scores as pure functions of a
//! pod and a snapshot), the wording of failures ([`unschedulable`]), and binding through
//! `pods/binding` ([`run`]).
//!
//! Start reading at [`decide::Decider::decide`]: the whole decision, with no I/O. Then
//! [`run::run`], the thin loop around it: watches in, bindings and status patches out.
//!
//! Performance (`benches/scheduler.rs`, 5,000 nodes, 10,000 pods, 2 cores): about 10,700
//! decisions/s, sampling nodes as kube-scheduler does (`percentageOfNodesToScore`); with
//! bindings through an in-process API server about 690 pods/s, close to the same number of
//! plain pod PATCHes (about 800/s): the API server's commit to the store (a Raft log flush
//! with fsync) is what bounds it, not the scheduler.
#![forbid(unsafe_code)]

pub mod decide;
pub mod info;
pub mod queue;
pub mod run;
pub mod snapshot;
pub mod unschedulable;

#[cfg(any(test, feature = "test-util"))]
pub mod testing;

pub use decide::{schedule, Decider};
pub use info::PodInfo;
pub use queue::{Queue, QueueConfig};
pub use run::run;
pub use snapshot::Snapshot;
pub use unschedulable::Unschedulable;

/// Errors of the scheduler's loop.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("the {0} watch ended")]
    WatchEnded(&'static str),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// How the scheduler runs. `Config::default()` is kube-scheduler's defaults.
#[derive(Debug, Clone)]
pub struct Config {
    /// The `spec.schedulerName` this scheduler serves (and the events' source component).
    pub scheduler_name: String,
    /// kube-scheduler's `percentageOfNodesToScore`; `None` is adaptive:
    /// `max(5, 50 − nodes/125)` percent, and never fewer than 100 nodes.
    pub percentage_of_nodes_to_score: Option<u32>,
    /// Bindings and status writes in flight at once.
    pub max_writes_in_flight: usize,
    pub queue: QueueConfig,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            scheduler_name: info::DEFAULT_SCHEDULER.into(),
            percentage_of_nodes_to_score: None,
            max_writes_in_flight: 64,
            queue: QueueConfig::default(),
        }
    }
}
