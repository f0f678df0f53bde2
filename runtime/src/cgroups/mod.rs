//! Cgroups v1 and v2 behind one trait.
//!
//! Paths are relative to the hierarchy roots (`berth/pod-x/ctr-y`); the implementation
//! places them in every v1 controller it drives, or in the one v2 tree. Implementations take
//! their mount root as an argument so tests can point them at a scratch directory.

use std::path::PathBuf;

/// Errors from cgroup operations; each names the file it touched.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cgroup {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cgroup {path}: {message}")]
    Invalid { path: PathBuf, message: String },
    #[error("no usable cgroup hierarchy: {0}")]
    NoHierarchy(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What a cgroup limits. `None` leaves the kernel's default.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Resources {
    /// Memory limit in bytes (v1 `memory.limit_in_bytes`, v2 `memory.max`).
    pub memory_limit: Option<i64>,
    /// Memory plus swap limit in bytes; set equal to `memory_limit` to forbid swap.
    pub memory_swap_limit: Option<i64>,
    /// CPU shares in v1 units (2..262144); v2 converts to `cpu.weight`.
    pub cpu_shares: Option<u64>,
    /// CFS quota in microseconds per `cpu_period`; `None` or negative is unlimited.
    pub cpu_quota: Option<i64>,
    /// CFS period in microseconds (default 100000).
    pub cpu_period: Option<u64>,
    /// Maximum number of tasks.
    pub pids_limit: Option<i64>,
}

/// Usage read back for metrics and exit reasons.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Stats {
    pub cpu_usage_ns: u64,
    pub memory_usage_bytes: u64,
    /// Usage minus inactive file pages, as kubelet reports it.
    pub memory_working_set_bytes: u64,
    /// Number of OOM kills in this cgroup since it was made.
    pub oom_kills: u64,
    pub pids_current: u64,
}

/// One cgroup hierarchy layout (v1 or v2). Object-safe: the runtime holds a `Box<dyn Cgroups>`.
pub trait Cgroups: Send + Sync + std::fmt::Debug {
    /// 1 or 2.
    fn version(&self) -> u8;
    /// Make the cgroup (and its parents) and apply `res`. Idempotent.
    fn create(&self, path: &str, res: &Resources) -> Result<()>;
    /// Change the limits of an existing cgroup.
    fn update(&self, path: &str, res: &Resources) -> Result<()>;
    /// Move a process into the cgroup.
    fn add_process(&self, path: &str, pid: i32) -> Result<()>;
    /// Processes in the cgroup (not its children).
    fn procs(&self, path: &str) -> Result<Vec<i32>>;
    /// SIGKILL everything in the cgroup and its children, and wait until it is empty.
    fn kill_all(&self, path: &str) -> Result<()>;
    fn stats(&self, path: &str) -> Result<Stats>;
    /// Remove the cgroup and its children (after `kill_all`). Missing is not an error.
    fn remove(&self, path: &str) -> Result<()>;
    fn exists(&self, path: &str) -> bool;
    /// Names of the child cgroups of `path` (for cleaning up leftovers).
    fn children(&self, path: &str) -> Result<Vec<String>>;
    /// The directory a process must be in for `path`, in the hierarchy that a cgroup
    /// namespace roots at (v2: the unified dir; v1: the memory controller's).
    fn dir(&self, path: &str) -> PathBuf;
}

