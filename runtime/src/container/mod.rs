//! One container's lifecycle: `create`, `start`, `state`, `kill`, `delete`, `exec`.
//!
//! `create` runs in a single-threaded process (the CLI or a shim: never inside a tokio
//! runtime, since it clones). It records the container in `ROOT/<id>/state.json` *before*
//! it makes anything, so a driver killed at any point leaves a record that
//! [`cleanup_abandoned`] can finish or undo; the container's mounts live only in its own
//! mount namespace, so there is nothing on the host's mount table to leak.

mod exec;
mod init;
pub mod mounts;
pub mod security;

use std::fs;
use std::io::{Read, Write};
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use nix::sched::CloneFlags;
use nix::sys::signal::Signal;
use nix::unistd::Pid;
use oci_spec::runtime::{LinuxNamespaceType, Spec};
use serde::{Deserialize, Serialize};

use crate::cgroups::{self, Cgroups};
pub use exec::{exec, ExecOptions};
pub use mounts::Rootfs;

/// Errors of the container lifecycle. Each names the container, path or step.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{0}")]
    Invalid(String),
    #[error("{what} {path}: {source}")]
    Sys {
        what: String,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{what}: {source}")]
    Process {
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error("exec {program}: {source}")]
    Exec {
        program: String,
        #[source]
        source: std::io::Error,
    },
    #[error("container {0} does not exist")]
    NotFound(String),
    #[error("container {0} already exists")]
    Exists(String),
    #[error("container {id} is {status}, {wanted}")]
    WrongState {
        id: String,
        status: Status,
        wanted: &'static str,
    },
    #[error("container init failed: {0}")]
    Init(String),
    #[error(transparent)]
    Cgroup(#[from] cgroups::Error),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

fn io_err(what: &str, path: &Path) -> impl FnOnce(std::io::Error) -> Error {
    let what = what.to_string();
    let path = path.to_path_buf();
    move |source| Error::Sys { what, path, source }
}

/// OCI status of a container.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Creating,
    Created,
    Running,
    Stopped,
}

impl std::fmt::Display for Status {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Status::Creating => "creating",
            Status::Created => "created",
            Status::Running => "running",
            Status::Stopped => "stopped",
        })
    }
}

/// A process identity that survives pid reuse: the pid and its start time in clock ticks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct ProcId {
    pub pid: i32,
    pub start: u64,
}

impl ProcId {
    pub fn of(pid: i32) -> Option<ProcId> {
        proc_start(pid).map(|start| ProcId { pid, start })
    }
    pub fn current() -> ProcId {
        let pid = std::process::id() as i32;
        ProcId::of(pid).unwrap_or(ProcId { pid, start: 0 })
    }
    /// The same process is still there and not a zombie.
    pub fn alive(&self) -> bool {
        self.pid > 0
            && matches!(proc_stat(self.pid), Some((state, start)) if start == self.start && state != 'Z' && state != 'X')
    }
}

fn proc_stat(pid: i32) -> Option<(char, u64)> {
    let s = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name is in parentheses and may contain spaces: parse after the last ')'.
    let rest = &s[s.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split(' ').collect();
    let state = fields.first()?.chars().next()?;
    let start = fields.get(19)?.parse().ok()?;
    Some((state, start))
}

fn proc_start(pid: i32) -> Option<u64> {
    proc_stat(pid).map(|(_, s)| s)
}

/// What the runtime keeps on disk for one container (`ROOT/<id>/state.json`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Record {
    pub id: String,
    pub bundle: PathBuf,
    /// `creating` until init reported ready; `created` afterwards (running and stopped are
    /// read from the process).
    pub status: Status,
    pub init: ProcId,
    /// The process that is creating the container; a `creating` record whose creator is gone
    /// was abandoned.
    pub creator: ProcId,
    pub cgroup: String,
    pub rootfs: Option<Rootfs>,
    pub created: String,
    #[serde(default)]
    pub annotations: std::collections::BTreeMap<String, String>,
}

/// The OCI state document (`runc state`), plus runc's extra fields.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct OciState {
    pub oci_version: String,
    pub id: String,
    pub status: Status,
    pub pid: i32,
    pub bundle: PathBuf,
    pub rootfs: PathBuf,
    pub created: String,
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub annotations: std::collections::BTreeMap<String, String>,
}

/// The runtime's state directory.
#[derive(Debug, Clone)]
pub struct Root {
    pub dir: PathBuf,
}

impl Root {
    pub fn new(dir: impl Into<PathBuf>) -> Result<Root> {
        let dir = dir.into();
        fs::create_dir_all(&dir).map_err(io_err("create runtime root", &dir))?;
        Ok(Root { dir })
    }

    pub fn container_dir(&self, id: &str) -> PathBuf {
        self.dir.join(id)
    }

    fn state_path(&self, id: &str) -> PathBuf {
        self.container_dir(id).join("state.json")
    }

    fn fifo_path(&self, id: &str) -> PathBuf {
        self.container_dir(id).join("exec.fifo")
    }

    pub fn load(&self, id: &str) -> Result<Record> {
        validate_id(id)?;
        let path = self.state_path(id);
        let bytes = match fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(Error::NotFound(id.to_string()))
            }
            Err(e) => return Err(io_err("read state", &path)(e)),
        };
        serde_json::from_slice(&bytes)
            .map_err(|e| Error::Invalid(format!("state {}: {e}", path.display())))
    }

    fn save(&self, rec: &Record) -> Result<()> {
        let path = self.state_path(&rec.id);
        let tmp = path.with_extension("json.tmp");
        let bytes = serde_json::to_vec(rec).expect("records serialise");
        fs::write(&tmp, bytes).map_err(io_err("write state", &tmp))?;
        fs::rename(&tmp, &path).map_err(io_err("write state", &path))
    }

    /// Ids of every container with a directory here.
    pub fn list(&self) -> Result<Vec<String>> {
        list_dirs(&self.dir)
    }

    /// The status of a record, read from its process.
    pub fn status(&self, rec: &Record) -> Status {
        match rec.status {
            Status::Creating => Status::Creating,
            _ if !rec.init.alive() => Status::Stopped,
            _ if self.fifo_path(&rec.id).exists() => Status::Created,
            _ => Status::Running,
        }
    }

    pub fn state(&self, id: &str) -> Result<OciState> {
        let rec = self.load(id)?;
        let status = self.status(&rec);
        Ok(OciState {
            oci_version: "1.2.0".into(),
            id: rec.id.clone(),
            status,
            pid: if status == Status::Stopped {
                0
            } else {
                rec.init.pid
            },
            bundle: rec.bundle.clone(),
            rootfs: rec
                .rootfs
                .as_ref()
                .map(|r| r.target().to_path_buf())
                .unwrap_or_default(),
            created: rec.created.clone(),
            annotations: rec.annotations.clone(),
        })
    }
}

/// Names of the subdirectories of `dir`, sorted; none when `dir` does not exist.
pub(crate) fn list_dirs(dir: &Path) -> Result<Vec<String>> {
    let entries = match fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(io_err("list", dir)(e)),
    };
    let mut out: Vec<String> = entries
        .flatten()
        .filter(|e| e.file_type().map(|t| t.is_dir()).unwrap_or(false))
        .filter_map(|e| e.file_name().to_str().map(str::to_string))
        .collect();
    out.sort();
    Ok(out)
}

pub fn validate_id(id: &str) -> Result<()> {
    let ok = !id.is_empty()
        && id.len() <= 1024
        && id != "."
        && id != ".."
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '+'));
    if ok {
        Ok(())
    } else {
        Err(Error::Invalid(format!(
            "invalid container id {id:?}: use letters, digits, '-', '_', '.', '+'"
        )))
    }
}

/// When the workload execs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StartMode {
    /// Wait on the exec fifo until [`start`] (`runc create`).
    OnStart,
    /// Exec as soon as the container is set up (`runc run`).
    Now,
}

/// Everything `create` needs.
pub struct CreateOptions<'a> {
    pub root: &'a Root,
    pub id: &'a str,
    pub bundle: &'a Path,
    pub spec: Spec,
    /// `None`: the bundle's `root.path`.
    pub rootfs: Option<Rootfs>,
    pub cgroups: &'a dyn Cgroups,
    pub mode: StartMode,
    /// Descriptors for the container's stdin, stdout, stderr; `None` inherits ours.
    pub stdio: Option<[RawFd; 3]>,
    pub annotations: std::collections::BTreeMap<String, String>,
}

/// A created container, as seen by the process that created it (its parent).
#[derive(Debug)]
pub struct Created {
    pub pid: i32,
    /// Open until the workload execs; it carries an exec error (`E...`) if exec fails.
    pub sync: UnixStream,
}

impl Created {
    /// Wait until the workload has exec'd; returns the error if it could not.
    pub fn wait_exec(mut self) -> Result<()> {
        let mut buf = Vec::new();
        let _ = self.sync.read_to_end(&mut buf);
        match buf.strip_prefix(b"E") {
            Some(msg) => Err(Error::Init(String::from_utf8_lossy(msg).into_owned())),
            None => Ok(()),
        }
    }
}

/// Now, as RFC 3339 UTC with nanoseconds.
pub fn now_rfc3339() -> String {
    let d = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    let secs = d.as_secs() as i64;
    let (days, rem) = (secs.div_euclid(86400), secs.rem_euclid(86400));
    // Civil from days (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:09}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        d.subsec_nanos()
    )
}

/// Where containers without `linux.cgroupsPath` go: apart from the node agent's pods (under
/// `berth/`), whose recovery removes whatever it does not own there.
pub const DEFAULT_CGROUP_PARENT: &str = "berth-runtime";

/// The cgroup path of a spec: `linux.cgroupsPath` or `berth-runtime/<id>`.
pub fn cgroup_path(spec: &Spec, id: &str) -> String {
    spec.linux()
        .as_ref()
        .and_then(|l| l.cgroups_path().as_ref())
        .map(|p| p.to_string_lossy().trim_start_matches('/').to_string())
        .filter(|p| !p.is_empty() && !p.contains(':'))
        .unwrap_or_else(|| format!("{DEFAULT_CGROUP_PARENT}/{id}"))
}

/// The cgroup limits a spec asks for.
pub fn resources(spec: &Spec) -> cgroups::Resources {
    let mut r = cgroups::Resources::default();
    let Some(res) = spec.linux().as_ref().and_then(|l| l.resources().as_ref()) else {
        return r;
    };
    if let Some(m) = res.memory() {
        r.memory_limit = m.limit();
        r.memory_swap_limit = m.swap();
    }
    if let Some(c) = res.cpu() {
        r.cpu_shares = c.shares();
        r.cpu_quota = c.quota();
        r.cpu_period = c.period();
    }
    if let Some(p) = res.pids() {
        r.pids_limit = Some(p.limit());
    }
    if let Some(devices) = res.devices() {
        for d in devices {
            use oci_spec::runtime::LinuxDeviceType as T;
            r.devices.push(cgroups::DeviceRule {
                allow: d.allow(),
                kind: match d.typ() {
                    Some(T::C) | Some(T::U) => 'c',
                    Some(T::B) => 'b',
                    // The device cgroup knows no fifos: such a rule means nothing to it.
                    Some(T::P) => continue,
                    Some(T::A) | None => 'a',
                },
                major: d.major(),
                minor: d.minor(),
                access: d.access().clone().unwrap_or_else(|| "rwm".into()),
            });
        }
        // As runc: the defaults come after the spec's rules, so a deny-all cannot take away
        // /dev/null.
        r.devices.extend(cgroups::DeviceRule::defaults());
    }
    r
}

fn ns_flag(t: LinuxNamespaceType) -> CloneFlags {
    match t {
        LinuxNamespaceType::Mount => CloneFlags::CLONE_NEWNS,
        LinuxNamespaceType::Cgroup => CloneFlags::CLONE_NEWCGROUP,
        LinuxNamespaceType::Uts => CloneFlags::CLONE_NEWUTS,
        LinuxNamespaceType::Ipc => CloneFlags::CLONE_NEWIPC,
        LinuxNamespaceType::User => CloneFlags::CLONE_NEWUSER,
        LinuxNamespaceType::Pid => CloneFlags::CLONE_NEWPID,
        LinuxNamespaceType::Network => CloneFlags::CLONE_NEWNET,
        LinuxNamespaceType::Time => CloneFlags::from_bits_retain(libc::CLONE_NEWTIME),
    }
}

/// Check a spec before anything is made, so bad input changes nothing.
pub fn validate(spec: &Spec, rootfs: Option<&Rootfs>, bundle: &Path) -> Result<()> {
    let process = spec
        .process()
        .as_ref()
        .ok_or_else(|| Error::Invalid("config.json: process is required".into()))?;
    if process.args().as_deref().unwrap_or_default().is_empty() {
        return Err(Error::Invalid(
            "config.json: process.args must name a program".into(),
        ));
    }
    if !process.cwd().is_absolute() {
        return Err(Error::Invalid(format!(
            "config.json: process.cwd {} must be absolute",
            process.cwd().display()
        )));
    }
    if process.terminal().unwrap_or(false) {
        return Err(Error::Invalid(
            "config.json: process.terminal is set but no console socket was given".into(),
        ));
    }
    if rootfs.is_none() {
        let root = spec
            .root()
            .as_ref()
            .ok_or_else(|| Error::Invalid("config.json: root is required".into()))?;
        let path = bundle.join(root.path());
        if !path.is_dir() {
            return Err(Error::Invalid(format!(
                "config.json: root.path {} is not a directory",
                path.display()
            )));
        }
    }
    let namespaces = spec.linux().as_ref().and_then(|l| l.namespaces().as_ref());
    if !namespaces
        .into_iter()
        .flatten()
        .any(|n| n.typ() == LinuxNamespaceType::Mount)
    {
        return Err(Error::Invalid(
            "config.json: a mount namespace is required (Berth never mounts on the host)".into(),
        ));
    }
    for m in spec.mounts().as_deref().unwrap_or_default() {
        if !m.destination().is_absolute() {
            return Err(Error::Invalid(format!(
                "config.json: mount destination {} must be absolute",
                m.destination().display()
            )));
        }
    }
    Ok(())
}

/// Create a container: its record, cgroup and init process, which waits (in `OnStart`
/// mode) for [`start`]. On failure everything made is removed again.
pub fn create(opts: CreateOptions<'_>) -> Result<Created> {
    validate_id(opts.id)?;
    let bundle = fs::canonicalize(opts.bundle).map_err(io_err("bundle", opts.bundle))?;
    validate(&opts.spec, opts.rootfs.as_ref(), &bundle)?;
    let root = opts.root;
    let dir = root.container_dir(opts.id);
    match fs::create_dir(&dir) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            return Err(Error::Exists(opts.id.to_string()))
        }
        Err(e) => return Err(io_err("create container dir", &dir)(e)),
    }
    let rootfs = opts.rootfs.clone().unwrap_or_else(|| {
        let p = opts
            .spec
            .root()
            .as_ref()
            .map(|r| bundle.join(r.path()))
            .unwrap_or_default();
        Rootfs::Path(p)
    });
    let mut rec = Record {
        id: opts.id.to_string(),
        bundle,
        status: Status::Creating,
        init: ProcId::default(),
        creator: ProcId::current(),
        cgroup: cgroup_path(&opts.spec, opts.id),
        rootfs: Some(rootfs.clone()),
        created: now_rfc3339(),
        annotations: opts.annotations.clone(),
    };
    // Recorded before anything else exists, so a crash from here on is recoverable.
    if let Err(e) = root.save(&rec) {
        let _ = fs::remove_dir_all(&dir);
        return Err(e);
    }
    match create_inner(&opts, &mut rec, rootfs) {
        Ok(c) => Ok(c),
        Err(e) => {
            let _ = destroy(root, &rec, opts.cgroups);
            Err(e)
        }
    }
}

fn create_inner(opts: &CreateOptions<'_>, rec: &mut Record, rootfs: Rootfs) -> Result<Created> {
    let root = opts.root;
    let spec = &opts.spec;
    let fifo = match opts.mode {
        StartMode::OnStart => {
            let p = root.fifo_path(opts.id);
            // 0622 as runc: an init that entered a user namespace must still open it.
            nix::unistd::mkfifo(&p, nix::sys::stat::Mode::from_bits_truncate(0o622))
                .map_err(|e| io_err("make exec fifo", &p)(e.into()))?;
            // Past the umask.
            fs::set_permissions(&p, std::os::unix::fs::PermissionsExt::from_mode(0o622))
                .map_err(io_err("chmod exec fifo", &p))?;
            Some(p)
        }
        StartMode::Now => None,
    };

    let mut flags = CloneFlags::empty();
    let mut join = Vec::new();
    let mut join_pid = None;
    let mut join_user = None;
    let mut new_cgroupns = false;
    let mut userns = false;
    for ns in spec
        .linux()
        .as_ref()
        .and_then(|l| l.namespaces().as_ref())
        .into_iter()
        .flatten()
    {
        let flag = ns_flag(ns.typ());
        match (ns.path(), ns.typ()) {
            (Some(p), LinuxNamespaceType::Pid) => join_pid = Some(p.clone()),
            (Some(p), LinuxNamespaceType::User) => join_user = Some(p.clone()),
            (Some(p), _) => join.push((flag, p.clone())),
            (None, LinuxNamespaceType::Cgroup) => new_cgroupns = true,
            // Unshared by init after its mounts, not cloned: see `InitContext::new_userns`.
            (None, LinuxNamespaceType::User) => userns = true,
            (None, _) => flags |= flag,
        }
    }
    let seccomp = match spec.linux().as_ref().and_then(|l| l.seccomp().as_ref()) {
        Some(profile) => security::compile_seccomp(profile)?,
        None => Vec::new(),
    };
    if userns && id_maps(spec).is_none() {
        return Err(Error::Invalid(
            "config.json: a new user namespace needs linux.uidMappings and linux.gidMappings"
                .into(),
        ));
    }

    let cg = opts.cgroups;
    cg.create(&rec.cgroup, &resources(spec))?;
    tracing::debug!(container = %rec.id, cgroup = %rec.cgroup, "cgroup made");

    if let Some(p) = &join_pid {
        // setns on a pid namespace applies to our future children: the init we clone next.
        let fd = fs::File::open(p).map_err(io_err("open pid namespace", p))?;
        nix::sched::setns(&fd, CloneFlags::CLONE_NEWPID)
            .map_err(|e| io_err("join pid namespace", p)(e.into()))?;
    }

    let ctx = init::InitContext {
        spec: spec.clone(),
        rootfs: Some(rootfs),
        facts: mounts::HostFacts::read(),
        clone_flags: flags,
        join,
        join_user,
        new_userns: userns,
        new_cgroupns,
        seccomp,
        stdio: opts.stdio,
        fifo,
    };
    let (mut parent_sock, child_sock) = UnixStream::pair().map_err(|e| Error::Process {
        what: "socketpair".into(),
        source: e,
    })?;
    let child_fd = child_sock.as_raw_fd();
    // On cgroup v2 the init is born in its cgroup (clone3 with CLONE_INTO_CGROUP): no
    // migration afterwards, which is what costs an RCU grace period.
    let cgroup_dir = (cg.version() == 2)
        .then(|| {
            nix::fcntl::open(
                &cg.dir(&rec.cgroup),
                nix::fcntl::OFlag::O_PATH
                    | nix::fcntl::OFlag::O_DIRECTORY
                    | nix::fcntl::OFlag::O_CLOEXEC,
                nix::sys::stat::Mode::empty(),
            )
            .ok()
        })
        .flatten();
    let mut born_in_cgroup = false;
    let mut pid = None;
    if let Some(dir) = &cgroup_dir {
        match clone_into_cgroup(flags, dir.as_raw_fd()) {
            Ok(Some(p)) => {
                pid = Some(p);
                born_in_cgroup = true;
            }
            Ok(None) => {
                // The child: a fork-like copy of this (single-threaded) process.
                // SAFETY: the child owns its copy of the descriptor table; child_fd is open in it.
                let mut sock = UnixStream::from(unsafe { init::owned(child_fd) });
                init::run(&ctx, &mut sock)
            }
            // Older kernels (before 5.7) or a cgroup that refuses: migrate as on v1.
            Err(e) => tracing::debug!(error = %e, "clone3 into cgroup unavailable"),
        }
    }
    let pid = match pid {
        Some(p) => p,
        None => {
            let mut stack = vec![0u8; 1 << 20];
            let cb = Box::new(|| {
                // SAFETY: the child owns its copy of the descriptor table; child_fd is open in it.
                let mut sock = UnixStream::from(unsafe { init::owned(child_fd) });
                init::run(&ctx, &mut sock)
            });
            // SAFETY: this process is single-threaded (the CLI or a shim; documented contract
            // of `create`), so the child may run ordinary Rust code on its copy of our memory.
            // The stack outlives the call in the parent and is the child's own copy in the child.
            unsafe { nix::sched::clone(cb, &mut stack, flags, Some(libc::SIGCHLD)) }.map_err(
                |e| Error::Process {
                    what: "clone container init".into(),
                    source: e.into(),
                },
            )?
        }
    };
    drop(child_sock);
    tracing::debug!(container = %rec.id, pid = pid.as_raw(), "init cloned");
    rec.init = ProcId::of(pid.as_raw()).unwrap_or(ProcId {
        pid: pid.as_raw(),
        start: 0,
    });
    root.save(rec)?;

    let kill_child = |e: Error| {
        let _ = nix::sys::signal::kill(pid, Signal::SIGKILL);
        let _ = nix::sys::wait::waitpid(pid, None);
        e
    };
    // The init works while we place it: if it failed first, its message is the cause.
    let init_failed = |e: Error, sock: &mut UnixStream| {
        let e = kill_child(e);
        let mut msg = Vec::new();
        let _ = sock.read_to_end(&mut msg);
        match msg.strip_prefix(b"E") {
            Some(m) => Error::Init(String::from_utf8_lossy(m).into_owned()),
            None => e,
        }
    };
    if !born_in_cgroup {
        if let Err(e) = cg.add_process(&rec.cgroup, pid.as_raw()) {
            return Err(init_failed(e.into(), &mut parent_sock));
        }
    }
    tracing::debug!(container = %rec.id, "init placed in its cgroup");
    if let Err(e) = parent_sock.write_all(b"G") {
        let e = Error::Process {
            what: "signal container init".into(),
            source: e,
        };
        return Err(init_failed(e, &mut parent_sock));
    }
    let mut first = [0u8; 1];
    let mut n = parent_sock.read(&mut first).unwrap_or(0);
    if n == 1 && first[0] == b'U' {
        // The init made its user namespace: map it, then let it go on.
        write_id_maps(spec, pid.as_raw()).map_err(kill_child)?;
        parent_sock.write_all(b"M").map_err(|e| {
            kill_child(Error::Process {
                what: "signal container init".into(),
                source: e,
            })
        })?;
        n = parent_sock.read(&mut first).unwrap_or(0);
    }
    if n == 0 || first[0] != b'R' {
        let mut msg = Vec::new();
        let _ = parent_sock.read_to_end(&mut msg);
        let msg = if n == 0 {
            "container init exited before it was ready".to_string()
        } else {
            String::from_utf8_lossy(&msg).into_owned()
        };
        return Err(kill_child(Error::Init(msg)));
    }
    tracing::debug!(container = %rec.id, "init ready");
    rec.status = Status::Created;
    root.save(rec)?;
    Ok(Created {
        pid: pid.as_raw(),
        sync: parent_sock,
    })
}

/// `clone3(CLONE_INTO_CGROUP)`, fork-style (no new stack): `Some(pid)` in the parent, `None`
/// in the child.
fn clone_into_cgroup(flags: CloneFlags, cgroup_fd: RawFd) -> std::io::Result<Option<Pid>> {
    #[repr(C)]
    #[derive(Default)]
    struct CloneArgs {
        flags: u64,
        pidfd: u64,
        child_tid: u64,
        parent_tid: u64,
        exit_signal: u64,
        stack: u64,
        stack_size: u64,
        tls: u64,
        set_tid: u64,
        set_tid_size: u64,
        cgroup: u64,
    }
    const CLONE_INTO_CGROUP: u64 = 0x2_0000_0000;
    let args = CloneArgs {
        flags: flags.bits() as u64 | CLONE_INTO_CGROUP,
        exit_signal: libc::SIGCHLD as u64,
        cgroup: cgroup_fd as u64,
        ..CloneArgs::default()
    };
    // SAFETY: clone3 reads `args` (of the size we pass). Without a stack it forks: the child
    // continues here on a copy of our memory, which is sound because the caller is
    // single-threaded (the contract of `create`).
    let ret = unsafe {
        libc::syscall(
            libc::SYS_clone3,
            &args as *const CloneArgs,
            std::mem::size_of::<CloneArgs>(),
        )
    };
    match ret {
        0 => Ok(None),
        p if p > 0 => Ok(Some(Pid::from_raw(p as i32))),
        _ => Err(std::io::Error::last_os_error()),
    }
}

/// The `uid_map` and `gid_map` contents a spec asks for.
fn id_maps(spec: &Spec) -> Option<(String, String)> {
    let linux = spec.linux().as_ref();
    let fmt = |maps: Option<&Vec<oci_spec::runtime::LinuxIdMapping>>| -> String {
        maps.into_iter()
            .flatten()
            .map(|m| format!("{} {} {}\n", m.container_id(), m.host_id(), m.size()))
            .collect()
    };
    let uid = fmt(linux.and_then(|l| l.uid_mappings().as_ref()));
    let gid = fmt(linux.and_then(|l| l.gid_mappings().as_ref()));
    (!uid.is_empty() && !gid.is_empty()).then_some((uid, gid))
}

fn write_id_maps(spec: &Spec, pid: i32) -> Result<()> {
    let (uid, gid) = id_maps(spec).ok_or_else(|| Error::Invalid("no id mappings".into()))?;
    for (file, data) in [("uid_map", uid), ("gid_map", gid)] {
        let path = PathBuf::from(format!("/proc/{pid}/{file}"));
        fs::write(&path, data).map_err(io_err("write id map", &path))?;
    }
    Ok(())
}

/// Let a created container exec its workload.
pub fn start(root: &Root, id: &str) -> Result<()> {
    let rec = root.load(id)?;
    let status = root.status(&rec);
    if status != Status::Created {
        return Err(Error::WrongState {
            id: id.into(),
            status,
            wanted: "only a created container can be started",
        });
    }
    let fifo = root.fifo_path(id);
    let mut f = fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC)
        .open(&fifo)
        .map_err(io_err("open exec fifo", &fifo))?;
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut buf = [0u8; 1];
    loop {
        match f.read(&mut buf) {
            Ok(1) => break,
            Ok(_) | Err(_) => {
                if !rec.init.alive() {
                    let _ = fs::remove_file(&fifo);
                    return Err(Error::Init(format!(
                        "container {id} exited before it was started"
                    )));
                }
                if Instant::now() > deadline {
                    return Err(Error::Init(format!(
                        "container {id} did not take the start signal within 10s"
                    )));
                }
                let pfd = nix::poll::PollFd::new(
                    std::os::fd::AsFd::as_fd(&f),
                    nix::poll::PollFlags::POLLIN,
                );
                let _ = nix::poll::poll(&mut [pfd], nix::poll::PollTimeout::from(20u8));
            }
        }
    }
    fs::remove_file(&fifo).map_err(io_err("remove exec fifo", &fifo))?;
    Ok(())
}

/// Send a signal to the container's init (or, with `all`, to every process in its cgroup).
pub fn kill(root: &Root, id: &str, signal: Signal, all: bool, cg: &dyn Cgroups) -> Result<()> {
    let rec = root.load(id)?;
    let status = root.status(&rec);
    if all {
        for pid in cg.procs(&rec.cgroup).unwrap_or_default() {
            let _ = nix::sys::signal::kill(Pid::from_raw(pid), signal);
        }
        return Ok(());
    }
    if !matches!(status, Status::Created | Status::Running) {
        return Err(Error::WrongState {
            id: id.into(),
            status,
            wanted: "only a created or running container can be signalled",
        });
    }
    nix::sys::signal::kill(Pid::from_raw(rec.init.pid), signal).map_err(|e| Error::Process {
        what: format!("signal {signal} to container {id}"),
        source: e.into(),
    })
}

/// Remove a container: its processes (with `force`, or when stopped), cgroup and directory.
pub fn delete(root: &Root, id: &str, force: bool, cg: &dyn Cgroups) -> Result<()> {
    let rec = root.load(id)?;
    let status = root.status(&rec);
    if status == Status::Running && !force {
        return Err(Error::WrongState {
            id: id.into(),
            status,
            wanted: "stop it first or use --force",
        });
    }
    destroy(root, &rec, cg)
}

/// Kill, un-cgroup and forget a container, whatever state it is in.
fn destroy(root: &Root, rec: &Record, cg: &dyn Cgroups) -> Result<()> {
    if rec.init.alive() {
        let _ = nix::sys::signal::kill(Pid::from_raw(rec.init.pid), Signal::SIGKILL);
    }
    if cg.exists(&rec.cgroup) {
        cg.kill_all(&rec.cgroup)?;
        cg.remove(&rec.cgroup)?;
    }
    // Reap it if it is our child; harmless otherwise.
    if rec.init.pid > 0 {
        let _ = nix::sys::wait::waitpid(
            Pid::from_raw(rec.init.pid),
            Some(nix::sys::wait::WaitPidFlag::WNOHANG),
        );
    }
    let dir = root.container_dir(&rec.id);
    // The monitor may be writing exit.json into the directory as we remove it: retry.
    let mut tries = 0;
    loop {
        match fs::remove_dir_all(&dir) {
            Ok(()) => return Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::DirectoryNotEmpty && tries < 100 => {
                tries += 1;
                std::thread::sleep(Duration::from_millis(10));
            }
            Err(e) => return Err(io_err("remove container dir", &dir)(e)),
        }
    }
}

/// Undo every container whose creation was abandoned (a `creating` record whose creator is
/// gone). Returns the ids removed.
pub fn cleanup_abandoned(root: &Root, cg: &dyn Cgroups) -> Result<Vec<String>> {
    let mut removed = Vec::new();
    for id in root.list()? {
        match root.load(&id) {
            Ok(rec) if rec.status == Status::Creating && !rec.creator.alive() => {
                tracing::info!(container = %id, "removing a container whose creation was abandoned");
                destroy(root, &rec, cg)?;
                removed.push(id);
            }
            Ok(_) => {}
            // A directory without a readable record was never recorded: nothing else exists.
            Err(Error::NotFound(_)) | Err(Error::Invalid(_)) => {
                let dir = root.container_dir(&id);
                if dir.join("state.json.tmp").exists() || !dir.join("state.json").exists() {
                    let _ = fs::remove_dir_all(&dir);
                    removed.push(id);
                }
            }
            Err(e) => return Err(e),
        }
    }
    Ok(removed)
}

/// The cgroup path recorded for a container.
pub fn cgroup_path_of(root: &Root, id: &str) -> Option<String> {
    root.load(id).ok().map(|r| r.cgroup)
}

/// Read a bundle's `config.json`.
pub fn load_spec(bundle: &Path) -> Result<Spec> {
    let path = bundle.join("config.json");
    let bytes = fs::read(&path).map_err(io_err("read", &path))?;
    serde_json::from_slice(&bytes).map_err(|e| Error::Invalid(format!("{}: {e}", path.display())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_checked() {
        assert!(validate_id("web-1_a.b+c").is_ok());
        for bad in ["", ".", "..", "a/b", "a b", "x\0"] {
            assert!(validate_id(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn own_process_is_alive_and_a_fake_start_time_is_not() {
        let me = ProcId::current();
        assert!(me.alive());
        assert!(!ProcId {
            pid: me.pid,
            start: me.start + 1
        }
        .alive());
    }

    #[test]
    fn timestamps_are_rfc3339() {
        let t = now_rfc3339();
        assert_eq!(t.len(), 30, "{t}");
        assert!(t.starts_with("20") && t.ends_with('Z'), "{t}");
    }
}
