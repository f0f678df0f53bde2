//! Cgroups v1 and v2 behind one trait.
//!
//! Paths are relative to the hierarchy roots (`berth/pod-x/ctr-y`); the implementation
//! places them in every v1 controller it drives, or in the one v2 tree. Implementations take
//! their mount root as an argument so tests can point them at a scratch directory.
//!
//! [`detect`] picks the layout of this host: [`Cgroupv2`] when `/sys/fs/cgroup` is a cgroup2
//! mount, else [`Cgroupv1`] over the per-controller mounts listed in `/proc/self/mountinfo`
//! (a hybrid host's `/sys/fs/cgroup/unified` is ignored). The files both versions share
//! (reading, writing, removing trees, the freeze-and-kill loop) live here; `v1.rs` and
//! `v2.rs` hold what differs. Device rules are folded into one policy in `devices.rs`,
//! which v1 writes to the `devices` controller and v2 enforces with an eBPF program
//! (`bpf.rs`) attached to the cgroup.

use std::collections::BTreeMap;
use std::fs;
use std::io::{ErrorKind, Write};
use std::path::{Component, Path, PathBuf};
use std::thread;
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use tracing::{debug, info, warn};

mod bpf;
mod devices;
#[cfg(any(test, feature = "test-util"))]
mod fake;
mod v1;
mod v2;

#[cfg(any(test, feature = "test-util"))]
pub use fake::{FakeCall, FakeCgroups};
pub use v1::Cgroupv1;
pub use v2::Cgroupv2;

/// Where the kernel's cgroup hierarchies are mounted on a normal host.
pub const DEFAULT_ROOT: &str = "/sys/fs/cgroup";

/// How long `kill_all` waits for a cgroup to empty before it gives up.
pub const DEFAULT_KILL_TIMEOUT: Duration = Duration::from_secs(10);

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
    /// A limit was asked of a controller that is not mounted (v1) or not enabled (v2).
    #[error("cgroup {path}: controller {controller} is not available")]
    MissingController { path: PathBuf, controller: String },
    /// A `bpf(2)` call for the cgroup's v2 device filter failed; `op` names the call.
    #[error("cgroup {path}: {op}: {source}")]
    Bpf {
        path: PathBuf,
        op: String,
        #[source]
        source: std::io::Error,
    },
    /// `kill_all` gave up with processes left.
    #[error("cgroup {path}: processes {pids:?} still present after {waited:?}")]
    KillTimeout {
        path: PathBuf,
        pids: Vec<i32>,
        waited: Duration,
    },
}

impl Error {
    fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.into(),
            source,
        }
    }

    fn invalid(path: impl Into<PathBuf>, message: impl Into<String>) -> Self {
        Error::Invalid {
            path: path.into(),
            message: message.into(),
        }
    }

    /// The OS error number behind an `Io` or `Bpf` error.
    pub fn raw_os_error(&self) -> Option<i32> {
        match self {
            Error::Io { source, .. } | Error::Bpf { source, .. } => source.raw_os_error(),
            _ => None,
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What a cgroup limits. `None` leaves the kernel's default.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Resources {
    /// Memory limit in bytes (v1 `memory.limit_in_bytes`, v2 `memory.max`); negative is
    /// unlimited.
    pub memory_limit: Option<i64>,
    /// Memory plus swap limit in bytes; set equal to `memory_limit` to forbid swap; negative
    /// is unlimited. Skipped when the kernel does not account swap.
    pub memory_swap_limit: Option<i64>,
    /// CPU shares in v1 units (2..262144, clamped); v2 converts to `cpu.weight`.
    pub cpu_shares: Option<u64>,
    /// CFS quota in microseconds per `cpu_period`; `None` or negative is unlimited.
    pub cpu_quota: Option<i64>,
    /// CFS period in microseconds (default 100000).
    pub cpu_period: Option<u64>,
    /// Maximum number of tasks; zero or negative is unlimited.
    pub pids_limit: Option<i64>,
    /// Device access rules in OCI order (a later rule overrides an earlier one; folding
    /// starts from deny-all). Empty leaves the device policy as inherited. v1 writes them to
    /// the `devices` controller; v2 attaches a device filter program in place of the last.
    pub devices: Vec<DeviceRule>,
}

/// One device cgroup rule (`linux.resources.devices` in OCI).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceRule {
    pub allow: bool,
    /// `a` (all), `c` (char) or `b` (block).
    pub kind: char,
    /// `None` is any (`*`).
    pub major: Option<i64>,
    pub minor: Option<i64>,
    /// A subset of `rwm`.
    pub access: String,
}

impl DeviceRule {
    /// The devices every container may use whatever its spec says, as runc allows them:
    /// mknod of any node (opening is what counts), null, zero, full, random, urandom, tty,
    /// ptmx and the pseudo-terminal slaves.
    pub fn defaults() -> Vec<DeviceRule> {
        let r = |kind, major, minor, access: &str| DeviceRule {
            allow: true,
            kind,
            major,
            minor,
            access: access.into(),
        };
        vec![
            r('c', None, None, "m"),
            r('b', None, None, "m"),
            r('c', Some(1), Some(3), "rwm"),
            r('c', Some(1), Some(5), "rwm"),
            r('c', Some(1), Some(7), "rwm"),
            r('c', Some(1), Some(8), "rwm"),
            r('c', Some(1), Some(9), "rwm"),
            r('c', Some(5), Some(0), "rwm"),
            r('c', Some(5), Some(2), "rwm"),
            r('c', Some(136), None, "rwm"),
        ]
    }
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
    /// A missing cgroup is already empty.
    fn kill_all(&self, path: &str) -> Result<()>;
    fn stats(&self, path: &str) -> Result<Stats>;
    /// Remove the cgroup and its children (after `kill_all`). Missing is not an error.
    fn remove(&self, path: &str) -> Result<()>;
    fn exists(&self, path: &str) -> bool;
    /// Names of the child cgroups of `path` (for cleaning up leftovers), sorted; none when
    /// `path` does not exist.
    fn children(&self, path: &str) -> Result<Vec<String>>;
    /// The directory a process must be in for `path`, in the hierarchy that a cgroup
    /// namespace roots at (v2: the unified dir; v1: the memory controller's).
    fn dir(&self, path: &str) -> PathBuf;
}

/// The cgroup layout of this host: [`Cgroupv2`] at `/sys/fs/cgroup` when that is a cgroup2
/// mount (statfs magic `CGROUP2_SUPER_MAGIC`), else [`Cgroupv1`] over the v1 controller
/// mounts in `/proc/self/mountinfo`.
pub fn detect() -> Result<Box<dyn Cgroups>> {
    let root = Path::new(DEFAULT_ROOT);
    let is_cgroup2 = is_cgroup2_mount(root)?;
    let mountinfo = if is_cgroup2 {
        String::new()
    } else {
        read_string(Path::new(MOUNTINFO))?
    };
    match decide(is_cgroup2, root, &mountinfo)? {
        Layout::V2(root) => {
            info!(root = %root.display(), "using cgroup v2");
            Ok(Box::new(Cgroupv2::new(root)))
        }
        Layout::V1(mounts) => {
            info!(controllers = ?mounts.keys().collect::<Vec<_>>(), "using cgroup v1");
            Ok(Box::new(Cgroupv1::new(mounts)))
        }
    }
}

const MOUNTINFO: &str = "/proc/self/mountinfo";

/// Whether `path` is the root of a cgroup2 filesystem (statfs magic `CGROUP2_SUPER_MAGIC`).
pub fn is_cgroup2_mount(path: &Path) -> Result<bool> {
    let st = nix::sys::statfs::statfs(path).map_err(|e| Error::io(path, e.into()))?;
    Ok(st.filesystem_type() == nix::sys::statfs::CGROUP2_SUPER_MAGIC)
}

/// What [`detect`] found, before building it.
#[derive(Debug, PartialEq, Eq)]
enum Layout {
    V2(PathBuf),
    V1(BTreeMap<String, PathBuf>),
}

fn decide(root_is_cgroup2: bool, root: &Path, mountinfo: &str) -> Result<Layout> {
    if root_is_cgroup2 {
        return Ok(Layout::V2(root.to_path_buf()));
    }
    v1_layout(mountinfo)
        .map(Layout::V1)
        .map_err(|err| Error::NoHierarchy(format!("{} is not cgroup2 and {err}", root.display())))
}

/// The v1 controller mounts in `mountinfo`, or why they are no use.
fn v1_layout(mountinfo: &str) -> Result<BTreeMap<String, PathBuf>, String> {
    let mounts = v1_mounts(mountinfo);
    if !v1::CONTROLLERS.iter().any(|c| mounts.contains_key(*c)) {
        return Err(format!(
            "{MOUNTINFO} has none of the v1 controllers {:?}",
            v1::CONTROLLERS
        ));
    }
    Ok(mounts)
}

/// Every v1 controller's mount point, from the text of `/proc/self/mountinfo`. Only
/// filesystems of type `cgroup` count (a hybrid host's cgroup2 mount is not v1); named
/// hierarchies such as `name=systemd` are skipped; the first mount of a controller wins.
fn v1_mounts(mountinfo: &str) -> BTreeMap<String, PathBuf> {
    const KNOWN: &[&str] = &[
        "blkio",
        "cpu",
        "cpuacct",
        "cpuset",
        "devices",
        "freezer",
        "hugetlb",
        "memory",
        "misc",
        "net_cls",
        "net_prio",
        "perf_event",
        "pids",
        "rdma",
    ];
    let mut mounts = BTreeMap::new();
    for line in mountinfo.lines() {
        let Some((before, after)) = line.split_once(" - ") else {
            continue;
        };
        let Some(mount_point) = before.split(' ').nth(4) else {
            continue;
        };
        let mut after = after.split(' ');
        if after.next() != Some("cgroup") {
            continue;
        }
        let Some(super_opts) = after.nth(1) else {
            continue;
        };
        for opt in super_opts.split(',') {
            if KNOWN.contains(&opt) {
                mounts
                    .entry(opt.to_string())
                    .or_insert_with(|| PathBuf::from(unescape_mountinfo(mount_point)));
            }
        }
    }
    mounts
}

/// Undo mountinfo's octal escapes (`\040` for a space).
fn unescape_mountinfo(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\' && i + 3 < bytes.len() {
            let digits = &bytes[i + 1..i + 4];
            if digits.iter().all(|d| (b'0'..=b'7').contains(d)) {
                let value = digits
                    .iter()
                    .fold(0u32, |acc, d| acc * 8 + u32::from(d - b'0'));
                if let Ok(b) = u8::try_from(value) {
                    out.push(b);
                    i += 4;
                    continue;
                }
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The v2 `cpu.weight` for v1 `cpu.shares`, as runc and kubelet convert it: shares in
/// 2..=262144 map linearly onto weights 1..=10000.
pub fn shares_to_weight(shares: u64) -> u64 {
    let shares = shares.clamp(2, 262_144);
    1 + ((shares - 2) * 9999) / 262_142
}

/// `path` as a relative path below a hierarchy root; `..`, `.` and empty paths (the root
/// itself, unless `allow_root`) are refused so nothing outside our cgroups is touched.
fn relative(path: &str, allow_root: bool) -> Result<PathBuf> {
    let mut rel = PathBuf::new();
    for comp in Path::new(path).components() {
        match comp {
            Component::Normal(c) => rel.push(c),
            Component::RootDir => {}
            Component::CurDir | Component::ParentDir | Component::Prefix(_) => {
                return Err(Error::invalid(path, "path must not contain . or .."));
            }
        }
    }
    if rel.as_os_str().is_empty() && !allow_root {
        return Err(Error::invalid(
            path,
            "refusing to act on the hierarchy root",
        ));
    }
    Ok(rel)
}

fn read_string(path: &Path) -> Result<String> {
    fs::read_to_string(path).map_err(|e| Error::io(path, e))
}

/// The file's content, or `None` when it does not exist.
fn read_optional(path: &Path) -> Result<Option<String>> {
    match fs::read_to_string(path) {
        Ok(s) => Ok(Some(s)),
        Err(e) if e.kind() == ErrorKind::NotFound => Ok(None),
        Err(e) => Err(Error::io(path, e)),
    }
}

fn parse_u64(path: &Path, s: &str) -> Result<u64> {
    let s = s.trim();
    s.parse()
        .map_err(|_| Error::invalid(path, format!("expected a number, found {s:?}")))
}

fn read_u64(path: &Path) -> Result<u64> {
    parse_u64(path, &read_string(path)?)
}

/// The value of `key` in a flat-keyed file (`memory.stat`, `cpu.stat`, `memory.events`,
/// `memory.oom_control`).
fn keyed(content: &str, key: &str) -> Option<u64> {
    content.lines().find_map(|line| {
        let mut it = line.split_whitespace();
        (it.next() == Some(key))
            .then(|| it.next()?.parse().ok())
            .flatten()
    })
}

/// Write an interface file. Never creates it: a missing file is a missing controller or
/// cgroup, not something to paper over.
fn write_file(path: &Path, value: &str) -> Result<()> {
    debug!(path = %path.display(), value, "cgroup write");
    fs::OpenOptions::new()
        .write(true)
        .truncate(true)
        .open(path)
        .and_then(|mut f| f.write_all(value.as_bytes()))
        .map_err(|e| Error::io(path, e))
}

/// Write a limit file, reporting a missing file in an existing cgroup as a missing
/// controller.
fn write_limit(dir: &Path, file: &str, controller: &str, value: &str) -> Result<()> {
    let path = dir.join(file);
    match write_file(&path, value) {
        Err(Error::Io { source, .. }) if source.kind() == ErrorKind::NotFound && dir.is_dir() => {
            Err(Error::MissingController {
                path,
                controller: controller.to_string(),
            })
        }
        other => other,
    }
}

fn mkdir(dir: &Path) -> Result<()> {
    match fs::create_dir(dir) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(Error::io(dir, e)),
    }
}

fn parse_pids(path: &Path, content: &str) -> Result<Vec<i32>> {
    content
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(|l| {
            l.parse()
                .map_err(|_| Error::invalid(path, format!("expected a pid, found {l:?}")))
        })
        .collect()
}

/// The pids in `dir/cgroup.procs`; a cgroup removed meanwhile has none.
fn read_procs(dir: &Path) -> Result<Vec<i32>> {
    let path = dir.join("cgroup.procs");
    match read_optional(&path)? {
        Some(content) => parse_pids(&path, &content),
        None => Ok(Vec::new()),
    }
}

/// `dir` and every directory below it, children before their parents. Directories that
/// vanish while walking are left out.
fn dirs_depth_first(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    walk(dir, &mut out)?;
    return Ok(out);

    fn walk(dir: &Path, out: &mut Vec<PathBuf>) -> Result<()> {
        let entries = match fs::read_dir(dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(Error::io(dir, e)),
        };
        let mut subdirs = Vec::new();
        for entry in entries {
            let entry = entry.map_err(|e| Error::io(dir, e))?;
            let is_dir = entry.file_type().map_err(|e| Error::io(entry.path(), e))?;
            if is_dir.is_dir() {
                subdirs.push(entry.path());
            }
        }
        subdirs.sort();
        for sub in subdirs {
            walk(&sub, out)?;
        }
        out.push(dir.to_path_buf());
        Ok(())
    }
}

/// Names of the subdirectories of `dir`, sorted; none when it does not exist.
fn child_names(dir: &Path) -> Result<Vec<String>> {
    let entries = match fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(Error::io(dir, e)),
    };
    let mut names = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| Error::io(dir, e))?;
        if entry
            .file_type()
            .map_err(|e| Error::io(entry.path(), e))?
            .is_dir()
        {
            names.push(entry.file_name().to_string_lossy().into_owned());
        }
    }
    names.sort();
    Ok(names)
}

/// How long `remove` keeps retrying a busy cgroup (its last tasks are still exiting).
const RMDIR_RETRY: Duration = Duration::from_secs(2);

/// rmdir `dir` and everything below it, depth first, retrying briefly on EBUSY.
fn remove_tree(dir: &Path) -> Result<()> {
    for d in dirs_depth_first(dir)? {
        let start = Instant::now();
        let mut delay = Duration::from_millis(5);
        loop {
            match fs::remove_dir(&d) {
                Ok(()) => {
                    debug!(path = %d.display(), "removed cgroup");
                    break;
                }
                Err(e) if e.kind() == ErrorKind::NotFound => break,
                Err(e)
                    if e.raw_os_error() == Some(libc::EBUSY) && start.elapsed() < RMDIR_RETRY =>
                {
                    thread::sleep(delay);
                    delay = (delay * 2).min(Duration::from_millis(100));
                }
                Err(e) => return Err(Error::io(&d, e)),
            }
        }
    }
    Ok(())
}

/// A way to stop a cgroup's processes from forking while they are killed.
trait Freezer {
    /// Freeze (`true`) or thaw (`false`) the cgroup and its children.
    fn set_frozen(&self, frozen: bool) -> Result<()>;
}

/// SIGKILL everything `list` returns, freezing around each round when a freezer is given,
/// until `list` comes back empty or `timeout` passes.
fn kill_until_empty(
    path: &Path,
    timeout: Duration,
    freezer: Option<&dyn Freezer>,
    list: &dyn Fn() -> Result<Vec<i32>>,
) -> Result<()> {
    let start = Instant::now();
    let mut delay = Duration::from_millis(1);
    loop {
        let frozen = match freezer.map(|f| f.set_frozen(true)) {
            Some(Err(err)) => {
                warn!(%err, path = %path.display(), "freezing before kill failed; killing unfrozen");
                false
            }
            Some(Ok(())) => true,
            None => false,
        };
        let listed = list();
        if let Ok(pids) = &listed {
            // A process outside our pid namespace is listed as 0, and kill(0) would hit our
            // own process group: only positive pids are signalled.
            for &pid in pids.iter().filter(|p| **p > 0) {
                match kill(Pid::from_raw(pid), Signal::SIGKILL) {
                    Ok(()) | Err(Errno::ESRCH) => {}
                    Err(err) => warn!(%err, pid, path = %path.display(), "kill failed"),
                }
            }
        }
        if frozen {
            // Thaw even when listing failed, or the processes stay frozen for good.
            if let Some(f) = freezer {
                f.set_frozen(false)?;
            }
        }
        let pids = listed?;
        if pids.is_empty() {
            return Ok(());
        }
        let waited = start.elapsed();
        if waited >= timeout {
            return Err(Error::KillTimeout {
                path: path.to_path_buf(),
                pids,
                waited,
            });
        }
        debug!(path = %path.display(), remaining = pids.len(), "waiting for killed processes");
        thread::sleep(delay);
        delay = (delay * 2).min(Duration::from_millis(50));
    }
}

/// Poll `done` every few milliseconds for at most `limit`; whether it became true.
fn wait_for(limit: Duration, mut done: impl FnMut() -> Result<bool>) -> Result<bool> {
    let start = Instant::now();
    loop {
        if done()? {
            return Ok(true);
        }
        if start.elapsed() >= limit {
            return Ok(false);
        }
        thread::sleep(Duration::from_millis(2));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HYBRID: &str = "\
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu,cpuacct rw,relatime shared:9 - cgroup cgroup rw,cpu,cpuacct
34 31 0:31 / /sys/fs/cgroup/cpuset rw,relatime - cgroup cgroup rw,cpuset
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
39 31 0:36 / /sys/fs/cgroup/pids rw,relatime - cgroup cgroup rw,pids
40 31 0:37 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,xattr,name=systemd
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw,nsdelegate
50 23 0:40 / /mnt/my\\040cg rw - cgroup cgroup rw,freezer
51 23 0:41 / /mnt/other rw - cgroup cgroup rw,memory
";

    #[test]
    fn mountinfo_v1_controllers_ignoring_cgroup2_and_named_hierarchies() {
        let m = v1_mounts(HYBRID);
        let want: BTreeMap<String, PathBuf> = [
            ("cpu", "/sys/fs/cgroup/cpu,cpuacct"),
            ("cpuacct", "/sys/fs/cgroup/cpu,cpuacct"),
            ("cpuset", "/sys/fs/cgroup/cpuset"),
            ("freezer", "/mnt/my cg"),
            ("memory", "/sys/fs/cgroup/memory"),
            ("pids", "/sys/fs/cgroup/pids"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), PathBuf::from(v)))
        .collect();
        assert_eq!(m, want);
    }

    #[test]
    fn decide_prefers_cgroup2_root_then_v1_mounts() {
        let root = Path::new("/sys/fs/cgroup");
        assert_eq!(
            decide(true, root, HYBRID).unwrap(),
            Layout::V2(root.to_path_buf())
        );
        match decide(false, root, HYBRID).unwrap() {
            Layout::V1(m) => assert!(m.contains_key("memory") && !m.contains_key("hugetlb")),
            other => panic!("expected v1, got {other:?}"),
        }
        let only_v2 = "41 31 0:38 / /sys/fs/cgroup/unified rw - cgroup2 cgroup2 rw\n";
        assert!(matches!(
            decide(false, root, only_v2),
            Err(Error::NoHierarchy(_))
        ));
    }

    #[test]
    fn weight_conversion_matches_runc() {
        assert_eq!(shares_to_weight(2), 1);
        assert_eq!(shares_to_weight(1024), 39);
        assert_eq!(shares_to_weight(262_144), 10_000);
        assert_eq!(shares_to_weight(0), 1, "clamped up to 2");
        assert_eq!(shares_to_weight(1_000_000), 10_000, "clamped down");
        assert_eq!(shares_to_weight(512), 1 + (510 * 9999) / 262_142);
    }

    #[test]
    fn relative_paths_refuse_escapes_and_root() {
        assert_eq!(relative("/berth/a/", false).unwrap(), Path::new("berth/a"));
        assert_eq!(relative("berth//a", false).unwrap(), Path::new("berth/a"));
        assert!(relative("berth/../x", false).is_err());
        assert!(relative("./x", false).is_err());
        assert!(relative("", false).is_err());
        assert!(relative("/", false).is_err());
        assert_eq!(relative("", true).unwrap(), Path::new(""));
    }

    #[test]
    fn keyed_files_and_pids_parse() {
        let stat = "cache 10\ninactive_file 7\ntotal_inactive_file 42\n";
        assert_eq!(keyed(stat, "inactive_file"), Some(7));
        assert_eq!(keyed(stat, "total_inactive_file"), Some(42));
        assert_eq!(keyed(stat, "missing"), None);
        let p = Path::new("x/cgroup.procs");
        assert_eq!(parse_pids(p, "1\n22\n\n333\n").unwrap(), vec![1, 22, 333]);
        assert!(matches!(
            parse_pids(p, "1\nabc\n"),
            Err(Error::Invalid { .. })
        ));
    }

    #[test]
    fn remove_tree_is_depth_first_and_missing_is_fine() {
        let tmp = tempfile::tempdir().unwrap();
        let top = tmp.path().join("a");
        fs::create_dir_all(top.join("b/c")).unwrap();
        fs::create_dir_all(top.join("d")).unwrap();
        let order = dirs_depth_first(&top).unwrap();
        let rel: Vec<_> = order
            .iter()
            .map(|p| p.strip_prefix(tmp.path()).unwrap().to_path_buf())
            .collect();
        assert_eq!(
            rel,
            ["a/b/c", "a/b", "a/d", "a"]
                .iter()
                .map(PathBuf::from)
                .collect::<Vec<_>>()
        );
        remove_tree(&top).unwrap();
        assert!(!top.exists());
        remove_tree(&top).unwrap();
    }

    #[test]
    fn write_file_never_creates() {
        let tmp = tempfile::tempdir().unwrap();
        let err = write_limit(tmp.path(), "memory.max", "memory", "1").unwrap_err();
        assert!(
            matches!(&err, Error::MissingController { controller, .. } if controller == "memory"),
            "{err}"
        );
        assert!(err.to_string().contains("memory.max"), "{err}");
        let err = write_limit(&tmp.path().join("gone"), "memory.max", "memory", "1").unwrap_err();
        assert!(matches!(err, Error::Io { .. }), "{err}");
    }
}
