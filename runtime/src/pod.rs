//! Pods: a sandbox (the pause container, owning the pod's net, ipc and uts namespaces, and
//! its shared `/dev/shm`, hostname, hosts and resolv.conf) plus member containers that join
//! it. This is the runtime's face to the node agent, shaped like CRI: the agent translates a
//! Pod into [`SandboxConfig`] and [`ContainerConfig`]; nothing here knows Kubernetes types.
//!
//! Containers are created through the shim (`berth runtime shim`), so the agent never clones
//! and can be killed at any moment. Everything is on disk under the runtime's root:
//!
//! ```text
//! ROOT/images/                the image store
//! ROOT/state/<ctr>/           container records (runc-like), exit.json from the monitor
//! ROOT/pods/<pod>/            sandbox.json, hostname, hosts, resolv.conf, shm/ (tmpfs), volumes/
//! ROOT/containers/<ctr>/      meta.json, bundle/config.json, rootfs.json, upper/, work/, rootfs/
//! ROOT/pause/rootfs/          the pause binary, shared read-only by every sandbox
//! ```
//!
//! Calls block (they fork the shim and touch files): async callers use `spawn_blocking`.

use std::collections::{BTreeMap, HashSet};
use std::ffi::OsString;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use oci_spec::runtime::Spec;
use serde::{Deserialize, Serialize};

use crate::cgroups::{self, Cgroups, Resources};
use crate::container::{self, security, ProcId, Root, Rootfs, Status};
use crate::image::{self, ImageStore};
use crate::shim;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{what} {path}: {source}")]
    Io {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{0}")]
    Invalid(String),
    #[error("sandbox {0} does not exist")]
    NoSandbox(String),
    #[error("container {0} does not exist")]
    NoContainer(String),
    #[error("{0} already exists")]
    Exists(String),
    #[error("shim for container {id}: {message}")]
    Shim { id: String, message: String },
    #[error("image {reference}: {source}")]
    Image {
        reference: String,
        #[source]
        source: image::Error,
    },
    #[error(transparent)]
    Container(#[from] container::Error),
    #[error(transparent)]
    Cgroup(#[from] cgroups::Error),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

fn io(what: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> Error {
    let path = path.to_path_buf();
    move |source| Error::Io { what, path, source }
}

/// How the runtime is set up on a node.
#[derive(Debug, Clone)]
pub struct RuntimeConfig {
    pub root: PathBuf,
    /// The program (and leading arguments) that runs `runtime` verbs: `berth runtime` or
    /// `berth-runtime`.
    pub shim: Vec<OsString>,
    /// The cgroup every pod goes under.
    pub cgroup_parent: String,
}

impl RuntimeConfig {
    /// `berth-runtime` next to the current executable, or the current executable with
    /// `runtime` when it is `berth`.
    pub fn new(root: impl Into<PathBuf>, shim: Vec<OsString>) -> RuntimeConfig {
        RuntimeConfig {
            root: root.into(),
            shim,
            cgroup_parent: "berth".into(),
        }
    }
}

/// DNS for the pod's resolv.conf.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct DnsConfig {
    pub servers: Vec<String>,
    pub searches: Vec<String>,
    pub options: Vec<String>,
}

/// A pod sandbox, as the agent asks for it.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct SandboxConfig {
    /// Unique on the node (the agent uses the pod's uid).
    pub id: String,
    pub name: String,
    pub namespace: String,
    pub hostname: String,
    pub dns: DnsConfig,
    /// Extra `/etc/hosts` lines: (address, names).
    pub hosts: Vec<(String, Vec<String>)>,
    pub host_network: bool,
    pub host_pid: bool,
    pub host_ipc: bool,
    /// Members share one pid namespace (the pause container's).
    pub share_process_namespace: bool,
    /// `hostUsers: false`: a user namespace mapping the pod's root to an unprivileged range.
    pub user_namespace: bool,
    /// Pod-level limits on the pod's cgroup.
    pub memory_limit: Option<i64>,
    pub cpu_quota: Option<i64>,
    pub sysctls: BTreeMap<String, String>,
    pub labels: BTreeMap<String, String>,
    pub annotations: BTreeMap<String, String>,
}

/// A volume (or any host path) mounted into a container.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct VolumeMount {
    pub host_path: PathBuf,
    pub container_path: PathBuf,
    pub readonly: bool,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub enum SeccompProfile {
    #[default]
    RuntimeDefault,
    Unconfined,
    /// An OCI seccomp profile (JSON) on the node.
    Localhost(PathBuf),
}

/// A member container, as the agent asks for it.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct ContainerConfig {
    pub name: String,
    /// Distinguishes restarts of the same container; part of the id.
    pub attempt: u32,
    pub image: String,
    pub command: Vec<String>,
    pub args: Vec<String>,
    /// Added after (and overriding) the image's environment.
    pub env: Vec<(String, String)>,
    pub working_dir: Option<String>,
    pub run_as_user: Option<u32>,
    pub run_as_group: Option<u32>,
    pub supplemental_groups: Vec<u32>,
    pub mounts: Vec<VolumeMount>,
    pub memory_limit: Option<i64>,
    pub cpu_shares: Option<u64>,
    pub cpu_quota: Option<i64>,
    pub cpu_period: Option<u64>,
    pub pids_limit: Option<i64>,
    pub privileged: bool,
    pub capabilities_add: Vec<String>,
    pub capabilities_drop: Vec<String>,
    pub seccomp: SeccompProfile,
    pub readonly_rootfs: bool,
    pub no_new_privileges: bool,
    /// Where the monitor writes stdout and stderr (CRI format); none discards them.
    pub log_path: Option<PathBuf>,
    pub log_max_size: Option<u64>,
    pub log_max_files: Option<usize>,
    pub labels: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ContainerState {
    Created,
    Running,
    Exited,
    Unknown,
}

/// What the agent reads back about a container.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ContainerStatus {
    pub id: String,
    pub sandbox_id: String,
    pub name: String,
    pub attempt: u32,
    pub image: String,
    pub image_id: String,
    pub state: ContainerState,
    pub pid: i32,
    pub created_at: String,
    pub started_at: Option<String>,
    pub finished_at: Option<String>,
    pub exit_code: Option<i32>,
    /// `Completed`, `Error`, `OOMKilled`, or `Unknown` when the monitor was lost.
    pub reason: Option<String>,
    pub log_path: Option<PathBuf>,
    pub labels: BTreeMap<String, String>,
}

/// A sandbox as it stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sandbox {
    pub id: String,
    pub config: SandboxConfig,
    /// The pause container is running.
    pub ready: bool,
    pub pid: i32,
    /// `/proc/<pause>/ns/net`, for the CNI (none with host networking or when stopped).
    pub netns: Option<PathBuf>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct SandboxRecord {
    config: SandboxConfig,
    pause_id: String,
    creator: ProcId,
    /// Set once the sandbox is complete; a record without it whose creator is gone was
    /// abandoned mid-way.
    ready: bool,
    cgroup: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct ContainerMeta {
    id: String,
    sandbox_id: String,
    config: ContainerConfig,
    image_id: String,
    created_at: String,
    started_at: Option<String>,
    creator: ProcId,
    /// Set once the shim reported the container created.
    created: bool,
}

/// What [`Runtime::recover`] cleaned up.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct RecoverReport {
    pub containers_removed: Vec<String>,
    pub sandboxes_removed: Vec<String>,
    pub cgroups_removed: Vec<String>,
}

/// The runtime of one node.
#[derive(Debug)]
pub struct Runtime {
    cfg: RuntimeConfig,
    images: ImageStore,
    cg: Box<dyn Cgroups>,
    state: Root,
}

fn write_json(path: &Path, value: &impl Serialize) -> Result<()> {
    let tmp = path.with_extension("tmp");
    fs::write(&tmp, serde_json::to_vec_pretty(value).expect("serialises"))
        .map_err(io("write", &tmp))?;
    fs::rename(&tmp, path).map_err(io("write", path))
}

fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> Result<T> {
    let bytes = fs::read(path).map_err(io("read", path))?;
    serde_json::from_slice(&bytes).map_err(|e| Error::Invalid(format!("{}: {e}", path.display())))
}

/// runc's and containerd's default masked and read-only paths.
const MASKED: [&str; 11] = [
    "/proc/acpi",
    "/proc/asound",
    "/proc/kcore",
    "/proc/keys",
    "/proc/latency_stats",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/proc/sched_debug",
    "/proc/scsi",
    "/sys/firmware",
    "/sys/devices/virtual/powercap",
];
const READONLY: [&str; 5] = [
    "/proc/bus",
    "/proc/fs",
    "/proc/irq",
    "/proc/sys",
    "/proc/sysrq-trigger",
];

/// The first uid of a pod's user namespace range (65536 ids each), picked from its id.
fn userns_base(id: &str) -> u32 {
    let h = id.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ b as u64).wrapping_mul(0x100_0000_01b3)
    });
    // Ranges 1..=16000 of 65536 ids: above the host's ordinary users, below 2^31.
    (1 + (h % 16000) as u32) * 65536
}

impl Runtime {
    /// Open (or make) the runtime's root, install the pause binary and clean up whatever a
    /// previous run left half-made.
    pub fn open(cfg: RuntimeConfig) -> Result<Runtime> {
        let cg = cgroups::detect()?;
        Runtime::open_with(cfg, cg)
    }

    pub fn open_with(cfg: RuntimeConfig, cg: Box<dyn Cgroups>) -> Result<Runtime> {
        for d in ["pods", "containers", "pause/rootfs"] {
            let p = cfg.root.join(d);
            fs::create_dir_all(&p).map_err(io("create", &p))?;
        }
        let images = ImageStore::open(&cfg.root.join("images")).map_err(|source| Error::Image {
            reference: cfg.root.join("images").display().to_string(),
            source,
        })?;
        let pause_dir = cfg.root.join("pause/rootfs");
        crate::pause::install(&pause_dir).map_err(io("install pause", &pause_dir))?;
        let state = Root::new(cfg.root.join("state"))?;
        let rt = Runtime {
            cfg,
            images,
            cg,
            state,
        };
        let report = rt.recover()?;
        if report != RecoverReport::default() {
            tracing::info!(?report, "cleaned up after an earlier run");
        }
        Ok(rt)
    }

    pub fn images(&self) -> &ImageStore {
        &self.images
    }

    pub fn cgroups(&self) -> &dyn Cgroups {
        &*self.cg
    }

    fn pod_dir(&self, id: &str) -> PathBuf {
        self.cfg.root.join("pods").join(id)
    }

    fn ctr_dir(&self, id: &str) -> PathBuf {
        self.cfg.root.join("containers").join(id)
    }

    fn pod_cgroup(&self, id: &str) -> String {
        format!("{}/pod-{id}", self.cfg.cgroup_parent)
    }

    /// A directory for an `emptyDir` volume of the pod, made on first use.
    pub fn empty_dir(&self, sandbox_id: &str, volume: &str) -> Result<PathBuf> {
        container::validate_id(volume)?;
        let p = self.pod_dir(sandbox_id).join("volumes").join(volume);
        fs::create_dir_all(&p).map_err(io("create emptyDir", &p))?;
        Ok(p)
    }

    /// Make the pod's sandbox and start its pause container.
    pub fn run_sandbox(&self, cfg: &SandboxConfig) -> Result<Sandbox> {
        container::validate_id(&cfg.id)?;
        let dir = self.pod_dir(&cfg.id);
        match fs::create_dir(&dir) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                return Err(Error::Exists(format!("sandbox {}", cfg.id)))
            }
            Err(e) => return Err(io("create sandbox dir", &dir)(e)),
        }
        let rec = SandboxRecord {
            config: cfg.clone(),
            pause_id: format!("{}-pause", cfg.id),
            creator: ProcId::current(),
            ready: false,
            cgroup: self.pod_cgroup(&cfg.id),
        };
        write_json(&dir.join("sandbox.json"), &rec)?;
        match self.run_sandbox_inner(cfg, rec) {
            Ok(s) => Ok(s),
            Err(e) => {
                let _ = self.remove_sandbox(&cfg.id);
                Err(e)
            }
        }
    }

    fn run_sandbox_inner(&self, cfg: &SandboxConfig, mut rec: SandboxRecord) -> Result<Sandbox> {
        let dir = self.pod_dir(&cfg.id);
        let hostname = sandbox_hostname(cfg);
        fs::write(dir.join("hostname"), format!("{hostname}\n"))
            .map_err(io("write hostname", &dir))?;
        self.write_hosts(&cfg.id, &[])?;
        let mut resolv = String::new();
        for s in &cfg.dns.servers {
            resolv.push_str(&format!("nameserver {s}\n"));
        }
        if !cfg.dns.searches.is_empty() {
            resolv.push_str(&format!("search {}\n", cfg.dns.searches.join(" ")));
        }
        if !cfg.dns.options.is_empty() {
            resolv.push_str(&format!("options {}\n", cfg.dns.options.join(" ")));
        }
        if cfg.dns.servers.is_empty() && cfg.host_network {
            resolv = fs::read_to_string("/etc/resolv.conf").unwrap_or_default();
        }
        fs::write(dir.join("resolv.conf"), resolv).map_err(io("write resolv.conf", &dir))?;

        // The pod's /dev/shm: a tmpfs on the host, unmounted when the sandbox goes (and by
        // `recover` if we die first).
        let shm = dir.join("shm");
        fs::create_dir_all(&shm).map_err(io("create shm", &shm))?;
        nix::mount::mount(
            Some("shm"),
            &shm,
            Some("tmpfs"),
            nix::mount::MsFlags::MS_NOSUID
                | nix::mount::MsFlags::MS_NODEV
                | nix::mount::MsFlags::MS_NOEXEC,
            Some("mode=1777,size=65536k"),
        )
        .map_err(|e| io("mount shm", &shm)(e.into()))?;

        self.cg.create(
            &rec.cgroup,
            &Resources {
                memory_limit: cfg.memory_limit,
                cpu_quota: cfg.cpu_quota,
                ..Resources::default()
            },
        )?;

        let spec = self.pause_spec(cfg, &rec)?;
        let bundle = self.ctr_dir(&rec.pause_id).join("bundle");
        fs::create_dir_all(&bundle).map_err(io("create bundle", &bundle))?;
        write_json(&bundle.join("config.json"), &spec)?;
        self.spawn_shim(&rec.pause_id, &bundle, None, None)?;
        container::start(&self.state, &rec.pause_id)?;
        rec.ready = true;
        write_json(&dir.join("sandbox.json"), &rec)?;
        self.sandbox(&cfg.id)
    }

    /// Rewrite the pod's /etc/hosts (in place: containers see it through a bind mount).
    pub fn write_hosts(&self, sandbox_id: &str, pod_ips: &[String]) -> Result<()> {
        let dir = self.pod_dir(sandbox_id);
        let rec: SandboxRecord = read_json(&dir.join("sandbox.json"))?;
        let cfg = &rec.config;
        let hostname = sandbox_hostname(cfg);
        let mut hosts = String::from(
            "# Kubernetes-managed hosts file.\n127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\nfe00::0\tip6-localnet\nfe00::0\tip6-mcastprefix\nfe00::1\tip6-allnodes\nfe00::2\tip6-allrouters\n",
        );
        for ip in pod_ips {
            hosts.push_str(&format!("{ip}\t{hostname}\n"));
        }
        for (ip, names) in &cfg.hosts {
            hosts.push_str(&format!("{ip}\t{}\n", names.join("\t")));
        }
        let path = dir.join("hosts");
        fs::write(&path, hosts).map_err(io("write hosts", &path))
    }

    fn base_spec(&self) -> Spec {
        let json = serde_json::json!({
            "ociVersion": "1.2.0",
            "process": {"user": {"uid": 0, "gid": 0}, "args": ["/bin/true"], "cwd": "/"},
            "root": {"path": "rootfs"},
            "mounts": [
                {"destination": "/proc", "type": "proc", "source": "proc", "options": ["nosuid", "noexec", "nodev"]},
                {"destination": "/dev", "type": "tmpfs", "source": "tmpfs", "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]},
                {"destination": "/dev/pts", "type": "devpts", "source": "devpts", "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"]},
                {"destination": "/dev/mqueue", "type": "mqueue", "source": "mqueue", "options": ["nosuid", "noexec", "nodev"]},
                {"destination": "/sys", "type": "sysfs", "source": "sysfs", "options": ["nosuid", "noexec", "nodev", "ro"]},
                {"destination": "/sys/fs/cgroup", "type": "cgroup", "source": "cgroup", "options": ["nosuid", "noexec", "nodev", "relatime", "ro"]},
            ],
            "linux": {
                "maskedPaths": MASKED,
                "readonlyPaths": READONLY,
            },
        });
        serde_json::from_value(json).expect("the base spec is valid")
    }

    fn namespaces(
        &self,
        cfg: &SandboxConfig,
        pause_pid: Option<i32>,
        member: bool,
    ) -> Vec<serde_json::Value> {
        let mut ns = vec![
            serde_json::json!({"type": "mount"}),
            serde_json::json!({"type": "cgroup"}),
        ];
        let join = |t: &str, file: &str| match pause_pid {
            Some(pid) => serde_json::json!({"type": t, "path": format!("/proc/{pid}/ns/{file}")}),
            None => serde_json::json!({"type": t}),
        };
        if !cfg.host_network {
            ns.push(join("network", "net"));
            ns.push(join("uts", "uts"));
        }
        if !cfg.host_ipc {
            ns.push(join("ipc", "ipc"));
        }
        if !cfg.host_pid {
            if member && cfg.share_process_namespace {
                ns.push(join("pid", "pid"));
            } else {
                ns.push(serde_json::json!({"type": "pid"}));
            }
        }
        if cfg.user_namespace {
            ns.push(join("user", "user"));
        }
        ns
    }

    fn pause_spec(&self, cfg: &SandboxConfig, rec: &SandboxRecord) -> Result<Spec> {
        let dir = self.pod_dir(&cfg.id);
        let mut v = serde_json::to_value(self.base_spec()).expect("serialises");
        v["process"] = serde_json::json!({
            "user": {"uid": 65535, "gid": 65535},
            "args": [format!("/{}", crate::pause::FILE_NAME)],
            "cwd": "/",
            "noNewPrivileges": true,
            "capabilities": {},
        });
        v["root"] =
            serde_json::json!({"path": self.cfg.root.join("pause/rootfs"), "readonly": true});
        v["hostname"] = serde_json::json!(sandbox_hostname(cfg));
        v["mounts"]
            .as_array_mut()
            .expect("mounts")
            .push(serde_json::json!({"destination": "/dev/shm", "type": "bind", "source": dir.join("shm"), "options": ["rbind", "nosuid", "nodev", "noexec"]}));
        v["linux"]["namespaces"] = serde_json::json!(self.namespaces(cfg, None, false));
        v["linux"]["cgroupsPath"] = serde_json::json!(format!("{}/pause", rec.cgroup));
        v["linux"]["sysctl"] = serde_json::json!(cfg.sysctls);
        v["linux"]["seccomp"] =
            serde_json::to_value(security::default_seccomp()).expect("serialises");
        if cfg.user_namespace {
            let base = userns_base(&cfg.id);
            let map = serde_json::json!([{"containerID": 0, "hostID": base, "size": 65536}]);
            v["linux"]["uidMappings"] = map.clone();
            v["linux"]["gidMappings"] = map;
        }
        serde_json::from_value(v).map_err(|e| Error::Invalid(format!("pause spec: {e}")))
    }

    /// Run the shim for a container and wait for its report.
    fn spawn_shim(
        &self,
        id: &str,
        bundle: &Path,
        rootfs: Option<&Path>,
        log: Option<(&Path, u64, usize)>,
    ) -> Result<i32> {
        let (program, lead) = self
            .cfg
            .shim
            .split_first()
            .ok_or_else(|| Error::Invalid("no shim program configured".into()))?;
        let mut cmd = std::process::Command::new(program);
        cmd.args(lead)
            .arg("--root")
            .arg(&self.state.dir)
            .arg("shim")
            .arg("--bundle")
            .arg(bundle);
        if let Some(r) = rootfs {
            cmd.arg("--rootfs").arg(r);
        }
        if let Some((path, size, files)) = log {
            cmd.arg("--log-path")
                .arg(path)
                .arg("--log-max-size")
                .arg(size.to_string())
                .arg("--log-max-files")
                .arg(files.to_string());
        }
        cmd.arg(id);
        let shim_log = shim::shim_log_path(&self.state, id);
        let stderr = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&shim_log)
            .map(Stdio::from)
            .unwrap_or_else(|_| Stdio::null());
        let out = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(stderr)
            .output()
            .map_err(|e| Error::Shim {
                id: id.into(),
                message: format!("run {}: {e}", program.to_string_lossy()),
            })?;
        shim::parse_report(&String::from_utf8_lossy(&out.stdout)).map_err(|message| Error::Shim {
            id: id.into(),
            message,
        })
    }

    /// The sandbox's current state.
    pub fn sandbox(&self, id: &str) -> Result<Sandbox> {
        let path = self.pod_dir(id).join("sandbox.json");
        if !path.exists() {
            return Err(Error::NoSandbox(id.into()));
        }
        let rec: SandboxRecord = read_json(&path)?;
        let (ready, pid) = match self.state.load(&rec.pause_id) {
            Ok(r) => (
                rec.ready && self.state.status(&r) == Status::Running,
                r.init.pid,
            ),
            Err(_) => (false, 0),
        };
        Ok(Sandbox {
            id: id.into(),
            netns: (ready && !rec.config.host_network)
                .then(|| PathBuf::from(format!("/proc/{pid}/ns/net"))),
            config: rec.config,
            ready,
            pid: if ready { pid } else { 0 },
        })
    }

    pub fn list_sandboxes(&self) -> Result<Vec<Sandbox>> {
        self.list_sandboxes_with_prefix("")
    }

    /// The sandboxes whose ids start with `prefix`; only their records are read, so a caller
    /// that names its sandboxes after their pod finds them without reading every pod's.
    pub fn list_sandboxes_with_prefix(&self, prefix: &str) -> Result<Vec<Sandbox>> {
        let mut out = Vec::new();
        for id in list_dirs(&self.cfg.root.join("pods"))? {
            if !id.starts_with(prefix) {
                continue;
            }
            if let Ok(s) = self.sandbox(&id) {
                out.push(s);
            }
        }
        Ok(out)
    }

    /// Stop every container of the sandbox (grace each), then its pause container.
    pub fn stop_sandbox(&self, id: &str, grace: Duration) -> Result<()> {
        let path = self.pod_dir(id).join("sandbox.json");
        let rec: SandboxRecord = match read_json(&path) {
            Ok(r) => r,
            Err(_) => return Err(Error::NoSandbox(id.into())),
        };
        for c in self.list_containers(Some(id))? {
            self.stop_container(&c.id, grace)?;
        }
        if self.state.load(&rec.pause_id).is_ok() {
            self.stop_container(&rec.pause_id, Duration::from_secs(2))?;
        }
        Ok(())
    }

    /// Remove the sandbox and everything in it; a missing sandbox is not an error.
    pub fn remove_sandbox(&self, id: &str) -> Result<()> {
        let dir = self.pod_dir(id);
        let rec: Option<SandboxRecord> = read_json(&dir.join("sandbox.json")).ok();
        for c in self.list_containers(Some(id))? {
            self.remove_container_force(&c.id)?;
        }
        let pause_id = format!("{id}-pause");
        self.remove_container_force(&pause_id)?;
        let cgroup = rec.map(|r| r.cgroup).unwrap_or_else(|| self.pod_cgroup(id));
        if self.cg.exists(&cgroup) {
            self.cg.kill_all(&cgroup)?;
            self.cg.remove(&cgroup)?;
        }
        unmount_if_mounted(&dir.join("shm"))?;
        match fs::remove_dir_all(&dir) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(io("remove sandbox dir", &dir)(e)),
        }
    }

    /// Create a member container (not started). Returns its id, `<sandbox>-<name>-<attempt>`.
    pub fn create_container(&self, sandbox_id: &str, cfg: &ContainerConfig) -> Result<String> {
        let sandbox = self.sandbox(sandbox_id)?;
        if !sandbox.ready {
            return Err(Error::Invalid(format!(
                "sandbox {sandbox_id} is not ready (its pause container is not running)"
            )));
        }
        let id = format!("{sandbox_id}-{}-{}", cfg.name, cfg.attempt);
        container::validate_id(&id)?;
        let image = self.images.get(&cfg.image).map_err(|source| Error::Image {
            reference: cfg.image.clone(),
            source,
        })?;
        let dir = self.ctr_dir(&id);
        match fs::create_dir(&dir) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                return Err(Error::Exists(format!("container {id}")))
            }
            Err(e) => return Err(io("create container dir", &dir)(e)),
        }
        let mut meta = ContainerMeta {
            id: id.clone(),
            sandbox_id: sandbox_id.into(),
            config: cfg.clone(),
            image_id: image.id.clone(),
            created_at: container::now_rfc3339(),
            started_at: None,
            creator: ProcId::current(),
            created: false,
        };
        write_json(&dir.join("meta.json"), &meta)?;
        let result = (|| -> Result<()> {
            let layers = self
                .images
                .layer_dirs(&image)
                .map_err(|source| Error::Image {
                    reference: cfg.image.clone(),
                    source,
                })?;
            for d in ["upper", "work", "rootfs", "bundle"] {
                fs::create_dir_all(dir.join(d)).map_err(io("create", &dir.join(d)))?;
            }
            let rootfs = Rootfs::Overlay {
                lower: layers.clone(),
                upper: dir.join("upper"),
                work: dir.join("work"),
                target: dir.join("rootfs"),
            };
            write_json(&dir.join("rootfs.json"), &rootfs)?;
            let spec = self.member_spec(&sandbox, &id, cfg, &image, &layers)?;
            write_json(&dir.join("bundle/config.json"), &spec)?;
            let log = cfg.log_path.as_deref().map(|p| {
                (
                    p,
                    cfg.log_max_size.unwrap_or(10 * 1024 * 1024),
                    cfg.log_max_files.unwrap_or(5),
                )
            });
            if let Some(p) = cfg.log_path.as_deref().and_then(Path::parent) {
                fs::create_dir_all(p).map_err(io("create log dir", p))?;
            }
            self.spawn_shim(
                &id,
                &dir.join("bundle"),
                Some(&dir.join("rootfs.json")),
                log,
            )?;
            Ok(())
        })();
        if let Err(e) = result {
            let _ = self.remove_container_force(&id);
            return Err(e);
        }
        meta.created = true;
        write_json(&dir.join("meta.json"), &meta)?;
        Ok(id)
    }

    fn member_spec(
        &self,
        sandbox: &Sandbox,
        id: &str,
        cfg: &ContainerConfig,
        image: &image::Image,
        layers: &[PathBuf],
    ) -> Result<Spec> {
        let pod_dir = self.pod_dir(&sandbox.id);
        let args = image::resolve_command(&image.config, &cfg.command, &cfg.args);
        if args.is_empty() {
            return Err(Error::Invalid(format!(
                "container {}: no command given and image {} has neither Entrypoint nor Cmd",
                cfg.name, cfg.image
            )));
        }
        let mut env: Vec<String> = image.config.env.clone();
        for (k, v) in &cfg.env {
            env.retain(|e| e.split('=').next() != Some(k.as_str()));
            env.push(format!("{k}={v}"));
        }
        if !env.iter().any(|e| e.starts_with("PATH=")) {
            env.insert(
                0,
                "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".into(),
            );
        }
        if !env.iter().any(|e| e.starts_with("HOSTNAME=")) {
            env.push(format!("HOSTNAME={}", sandbox_hostname(&sandbox.config)));
        }
        let cwd = cfg
            .working_dir
            .clone()
            .filter(|w| !w.is_empty())
            .or_else(|| Some(image.config.working_dir.clone()).filter(|w| !w.is_empty()))
            .unwrap_or_else(|| "/".into());
        let (mut uid, mut gid) = resolve_image_user(&image.config.user, layers)?;
        if let Some(u) = cfg.run_as_user {
            uid = u;
            // runAsUser without runAsGroup: the image's group only if the image named a user.
            if cfg.run_as_group.is_none() && image.config.user.is_empty() {
                gid = 0;
            }
        }
        if let Some(g) = cfg.run_as_group {
            gid = g;
        }

        let caps: Vec<String> = if cfg.privileged {
            caps::all().iter().map(|c| c.to_string()).collect()
        } else {
            let drop_all = cfg
                .capabilities_drop
                .iter()
                .any(|c| c.eq_ignore_ascii_case("ALL"));
            let norm = |c: &str| {
                let c = c.to_ascii_uppercase();
                if c.starts_with("CAP_") {
                    c
                } else {
                    format!("CAP_{c}")
                }
            };
            let dropped: HashSet<String> = cfg.capabilities_drop.iter().map(|c| norm(c)).collect();
            let mut set: Vec<String> = if drop_all {
                Vec::new()
            } else {
                security::DEFAULT_CAPS
                    .iter()
                    .map(|c| c.to_string())
                    .filter(|c| !dropped.contains(c))
                    .collect()
            };
            for c in &cfg.capabilities_add {
                let c = norm(c);
                if c == "CAP_ALL" {
                    set = caps::all().iter().map(|c| c.to_string()).collect();
                } else if !set.contains(&c) {
                    set.push(c);
                }
            }
            set
        };
        let mut v = serde_json::to_value(self.base_spec()).expect("serialises");
        v["process"] = serde_json::json!({
            "user": {"uid": uid, "gid": gid, "additionalGids": cfg.supplemental_groups},
            "args": args,
            "env": env,
            "cwd": cwd,
            "noNewPrivileges": cfg.no_new_privileges,
            "capabilities": {"bounding": caps, "effective": caps, "permitted": caps},
            "oomScoreAdj": 0,
        });
        v["root"] = serde_json::json!({"path": self.ctr_dir(id).join("rootfs"), "readonly": cfg.readonly_rootfs});
        let mounts = v["mounts"].as_array_mut().expect("mounts");
        if cfg.privileged {
            // Privileged containers see /sys writable and no masked paths, as in Kubernetes.
            for m in mounts.iter_mut() {
                if m["destination"] == "/sys" || m["destination"] == "/sys/fs/cgroup" {
                    m["options"] = serde_json::json!(["nosuid", "noexec", "nodev", "rw"]);
                }
            }
        }
        mounts.push(serde_json::json!({"destination": "/dev/shm", "type": "bind", "source": pod_dir.join("shm"), "options": ["rbind", "nosuid", "nodev", "noexec"]}));
        for (file, opts) in [("hosts", "rw"), ("hostname", "rw"), ("resolv.conf", "rw")] {
            mounts.push(serde_json::json!({"destination": format!("/etc/{file}"), "type": "bind", "source": pod_dir.join(file), "options": ["rbind", "nosuid", "nodev", "noexec", opts]}));
        }
        for m in &cfg.mounts {
            if !m.container_path.is_absolute() {
                return Err(Error::Invalid(format!(
                    "container {}: mount path {} must be absolute",
                    cfg.name,
                    m.container_path.display()
                )));
            }
            if !m.host_path.exists() {
                return Err(Error::Invalid(format!(
                    "container {}: volume source {} does not exist",
                    cfg.name,
                    m.host_path.display()
                )));
            }
            let mut opts = vec!["rbind", "nosuid", "nodev"];
            opts.push(if m.readonly { "ro" } else { "rw" });
            mounts.push(serde_json::json!({"destination": m.container_path, "type": "bind", "source": m.host_path, "options": opts}));
        }
        if cfg.privileged {
            v["linux"]["maskedPaths"] = serde_json::json!([]);
            v["linux"]["readonlyPaths"] = serde_json::json!([]);
        }
        v["linux"]["namespaces"] =
            serde_json::json!(self.namespaces(&sandbox.config, Some(sandbox.pid), true));
        v["linux"]["cgroupsPath"] = serde_json::json!(format!(
            "{}/{}-{}",
            self.pod_cgroup(&sandbox.id),
            cfg.name,
            cfg.attempt
        ));
        // Deny every device but the defaults (added by the container layer); privileged
        // containers get them all.
        let mut res = if cfg.privileged {
            serde_json::json!({"devices": [{"allow": true, "access": "rwm"}]})
        } else {
            serde_json::json!({"devices": [{"allow": false, "access": "rwm"}]})
        };
        if let Some(m) = cfg.memory_limit {
            res["memory"] = serde_json::json!({"limit": m, "swap": m});
        }
        let mut cpu = serde_json::json!({});
        if let Some(s) = cfg.cpu_shares {
            cpu["shares"] = serde_json::json!(s);
        }
        if let Some(q) = cfg.cpu_quota {
            cpu["quota"] = serde_json::json!(q);
            cpu["period"] = serde_json::json!(cfg.cpu_period.unwrap_or(100_000));
        }
        res["cpu"] = cpu;
        if let Some(p) = cfg.pids_limit {
            res["pids"] = serde_json::json!({"limit": p});
        }
        v["linux"]["resources"] = res;
        match &cfg.seccomp {
            SeccompProfile::RuntimeDefault if !cfg.privileged => {
                v["linux"]["seccomp"] =
                    serde_json::to_value(security::default_seccomp()).expect("serialises");
            }
            SeccompProfile::Localhost(p) => {
                let profile: serde_json::Value = read_json(p)?;
                v["linux"]["seccomp"] = profile;
            }
            _ => {}
        }
        serde_json::from_value(v).map_err(|e| Error::Invalid(format!("container spec: {e}")))
    }

    /// Let a created container run.
    pub fn start_container(&self, id: &str) -> Result<()> {
        let path = self.ctr_dir(id).join("meta.json");
        let mut meta: ContainerMeta =
            read_json(&path).map_err(|_| Error::NoContainer(id.into()))?;
        container::start(&self.state, id)?;
        meta.started_at = Some(container::now_rfc3339());
        write_json(&path, &meta)
    }

    /// SIGTERM (or the image's stop signal), `grace`, then SIGKILL to everything in the
    /// container; waits until its monitor has recorded the exit.
    pub fn stop_container(&self, id: &str, grace: Duration) -> Result<()> {
        let rec = match self.state.load(id) {
            Ok(r) => r,
            Err(container::Error::NotFound(_)) => return Ok(()),
            Err(e) => return Err(e.into()),
        };
        let status = self.state.status(&rec);
        if matches!(status, Status::Running | Status::Created) {
            let signal = self.stop_signal(id).unwrap_or(Signal::SIGTERM);
            let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(rec.init.pid), signal);
            let deadline = Instant::now() + grace;
            while rec.init.alive() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(10));
            }
            if self.cg.exists(&rec.cgroup) {
                self.cg.kill_all(&rec.cgroup)?;
            }
        }
        // The monitor writes exit.json right after it reaps the init.
        let deadline = Instant::now() + Duration::from_secs(5);
        while shim::read_exit(&self.state, id).is_none()
            && Instant::now() < deadline
            && rec.creator.alive()
        {
            std::thread::sleep(Duration::from_millis(5));
        }
        Ok(())
    }

    fn stop_signal(&self, id: &str) -> Option<Signal> {
        let meta: ContainerMeta = read_json(&self.ctr_dir(id).join("meta.json")).ok()?;
        let image = self.images.get(&meta.image_id).ok()?;
        let s = image.config.stop_signal?;
        crate::cli::parse_signal(&s).ok()
    }

    /// Remove a stopped container; refuses a running one.
    pub fn remove_container(&self, id: &str) -> Result<()> {
        if let Ok(rec) = self.state.load(id) {
            let status = self.state.status(&rec);
            if status == Status::Running {
                return Err(container::Error::WrongState {
                    id: id.into(),
                    status,
                    wanted: "stop it before removing it",
                }
                .into());
            }
        }
        self.remove_container_force(id)
    }

    fn remove_container_force(&self, id: &str) -> Result<()> {
        match container::delete(&self.state, id, true, &*self.cg) {
            Ok(()) | Err(container::Error::NotFound(_)) => {}
            Err(e) => return Err(e.into()),
        }
        let _ = fs::remove_file(shim::shim_log_path(&self.state, id));
        let dir = self.ctr_dir(id);
        match fs::remove_dir_all(&dir) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(io("remove container dir", &dir)(e)),
        }
    }

    pub fn container_status(&self, id: &str) -> Result<ContainerStatus> {
        let meta: ContainerMeta = read_json(&self.ctr_dir(id).join("meta.json"))
            .map_err(|_| Error::NoContainer(id.into()))?;
        let (state, pid) = match self.state.load(id) {
            Ok(rec) => match self.state.status(&rec) {
                Status::Created => (ContainerState::Created, rec.init.pid),
                Status::Running => (ContainerState::Running, rec.init.pid),
                // Exited, but its monitor (the record's creator) has not written down how
                // yet: still running as far as anyone can tell.
                Status::Stopped
                    if rec.creator.alive() && shim::read_exit(&self.state, id).is_none() =>
                {
                    (ContainerState::Running, rec.init.pid)
                }
                Status::Stopped => (ContainerState::Exited, 0),
                Status::Creating => (ContainerState::Unknown, 0),
            },
            Err(_) => (ContainerState::Unknown, 0),
        };
        let exit = (state == ContainerState::Exited)
            .then(|| shim::read_exit(&self.state, id))
            .flatten();
        let (exit_code, reason, finished_at) = match (&exit, state) {
            (Some(e), _) => (
                Some(e.code),
                Some(e.reason.clone()),
                Some(e.finished_at.clone()),
            ),
            // The monitor died with the container: the code is lost.
            (None, ContainerState::Exited) => (Some(255), Some("Unknown".to_string()), None),
            _ => (None, None, None),
        };
        Ok(ContainerStatus {
            id: id.into(),
            sandbox_id: meta.sandbox_id,
            name: meta.config.name.clone(),
            attempt: meta.config.attempt,
            image: meta.config.image.clone(),
            image_id: meta.image_id,
            state,
            pid,
            created_at: meta.created_at,
            started_at: meta.started_at,
            finished_at,
            exit_code,
            reason,
            log_path: meta.config.log_path.clone(),
            labels: meta.config.labels.clone(),
        })
    }

    /// Member containers (not pause), of one sandbox or all.
    pub fn list_containers(&self, sandbox_id: Option<&str>) -> Result<Vec<ContainerStatus>> {
        let mut out = Vec::new();
        // Member ids are `<sandbox>-<name>-<attempt>`: skip other sandboxes' without
        // reading their records.
        let prefix = sandbox_id.map(|sb| format!("{sb}-"));
        for id in list_dirs(&self.cfg.root.join("containers"))? {
            if id.ends_with("-pause")
                || prefix.as_ref().is_some_and(|p| !id.starts_with(p.as_str()))
            {
                continue;
            }
            if let Ok(s) = self.container_status(&id) {
                if sandbox_id.is_none_or(|sb| s.sandbox_id == sb) {
                    out.push(s);
                }
            }
        }
        Ok(out)
    }

    /// A command that runs `opts` inside container `id` (through `runtime exec`); spawn it
    /// with the stdio you want (tokio's `Command::from` works). Its exit code is the
    /// process's.
    pub fn exec_command(&self, id: &str, opts: &container::ExecOptions) -> std::process::Command {
        let (program, lead) = self.cfg.shim.split_first().expect("shim configured");
        let mut cmd = std::process::Command::new(program);
        cmd.args(lead)
            .arg("--root")
            .arg(&self.state.dir)
            .arg("exec");
        if opts.tty {
            cmd.arg("--tty");
        }
        for e in &opts.env {
            cmd.arg("--env").arg(e);
        }
        if let Some(c) = &opts.cwd {
            cmd.arg("--cwd").arg(c);
        }
        if let Some((u, g)) = opts.user {
            cmd.arg("--user").arg(format!("{u}:{g}"));
        }
        if let Some(s) = &opts.console_socket {
            cmd.arg("--console-socket").arg(s);
        }
        cmd.arg(id).arg("--").args(&opts.args);
        cmd
    }

    /// A descriptor that becomes readable once container `id` has ended and its monitor has
    /// written down how (a pidfd of the monitor, which exits right after `exit.json`). `None`
    /// when the container has already ended. Poll it (e.g. tokio's `AsyncFd`) instead of
    /// asking [`Runtime::container_status`] in a loop.
    pub fn exit_fd(&self, id: &str) -> Result<Option<std::os::fd::OwnedFd>> {
        let rec = self.state.load(id)?;
        let monitor = rec.creator;
        if !monitor.alive() {
            return Ok(None);
        }
        // SAFETY: pidfd_open takes a pid and flags and returns a new descriptor we own.
        let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, monitor.pid, 0) };
        if fd < 0 {
            let e = std::io::Error::last_os_error();
            if e.raw_os_error() == Some(libc::ESRCH) {
                return Ok(None);
            }
            return Err(io("pidfd_open", &self.ctr_dir(id))(e));
        }
        // SAFETY: the syscall returned a fresh descriptor nobody else owns.
        let fd =
            unsafe { <std::os::fd::OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd as i32) };
        // The pid may have been reused between the check and the open: check again now that
        // the descriptor pins whatever process it names.
        if !monitor.alive() {
            return Ok(None);
        }
        Ok(Some(fd))
    }

    /// CPU and memory of a container (or a whole pod with `pod-<id>`).
    pub fn stats(&self, id: &str) -> Result<cgroups::Stats> {
        let rec = self.state.load(id)?;
        Ok(self.cg.stats(&rec.cgroup)?)
    }

    /// CPU and memory of a whole pod (its sandbox's cgroup, members included).
    pub fn sandbox_stats(&self, id: &str) -> Result<cgroups::Stats> {
        Ok(self.cg.stats(&self.pod_cgroup(id))?)
    }

    /// Remove every image no container uses.
    pub fn gc_images(&self) -> Result<image::GcReport> {
        let mut in_use = HashSet::new();
        for id in list_dirs(&self.cfg.root.join("containers"))? {
            if let Ok(meta) = read_json::<ContainerMeta>(&self.ctr_dir(&id).join("meta.json")) {
                in_use.insert(meta.image_id);
            }
        }
        self.images.gc(&in_use).map_err(|source| Error::Image {
            reference: "gc".into(),
            source,
        })
    }

    /// Finish or undo what a killed predecessor left: containers and sandboxes whose creation
    /// was abandoned, records without their other half, pod shm mounts and cgroups nobody
    /// owns. Running containers and complete sandboxes are kept, for the agent to reconcile.
    pub fn recover(&self) -> Result<RecoverReport> {
        let mut report = RecoverReport {
            containers_removed: container::cleanup_abandoned(&self.state, &*self.cg)?,
            ..RecoverReport::default()
        };
        // Container directories whose creation never completed.
        for id in list_dirs(&self.cfg.root.join("containers"))? {
            let dir = self.ctr_dir(&id);
            let abandoned = match read_json::<ContainerMeta>(&dir.join("meta.json")) {
                Ok(m) => !m.created && !m.creator.alive(),
                // The pause container has no meta: it belongs to its sandbox.
                Err(_) => !id.ends_with("-pause"),
            };
            let orphan = id.ends_with("-pause")
                && !self
                    .pod_dir(id.trim_end_matches("-pause"))
                    .join("sandbox.json")
                    .exists();
            if abandoned || orphan {
                self.remove_container_force(&id)?;
                report.containers_removed.push(id);
            }
        }
        // Records whose container directory is gone.
        for id in self.state.list()? {
            if !self.ctr_dir(&id).exists() {
                self.remove_container_force(&id)?;
                report.containers_removed.push(id);
            }
        }
        // Sandboxes whose creation was abandoned.
        for id in list_dirs(&self.cfg.root.join("pods"))? {
            let dir = self.pod_dir(&id);
            let abandoned = match read_json::<SandboxRecord>(&dir.join("sandbox.json")) {
                Ok(r) => !r.ready && !r.creator.alive(),
                Err(_) => true,
            };
            if abandoned {
                self.remove_sandbox(&id)?;
                report.sandboxes_removed.push(id);
            }
        }
        // Pod cgroups (and container cgroups inside them) nobody owns.
        let pods: HashSet<String> = list_dirs(&self.cfg.root.join("pods"))?
            .into_iter()
            .map(|id| format!("pod-{id}"))
            .collect();
        if self.cg.exists(&self.cfg.cgroup_parent) {
            for child in self.cg.children(&self.cfg.cgroup_parent)? {
                if !pods.contains(&child) {
                    let path = format!("{}/{child}", self.cfg.cgroup_parent);
                    self.cg.kill_all(&path)?;
                    self.cg.remove(&path)?;
                    report.cgroups_removed.push(path);
                }
            }
        }
        report.containers_removed.sort();
        report.containers_removed.dedup();
        Ok(report)
    }
}

fn sandbox_hostname(cfg: &SandboxConfig) -> &str {
    if cfg.hostname.is_empty() {
        &cfg.name
    } else {
        &cfg.hostname
    }
}

fn list_dirs(dir: &Path) -> Result<Vec<String>> {
    Ok(container::list_dirs(dir)?)
}

fn unmount_if_mounted(path: &Path) -> Result<()> {
    let info = fs::read_to_string("/proc/self/mountinfo").map_err(io("read mountinfo", path))?;
    let target = path.to_string_lossy();
    let mounted = info
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .any(|m| m == target);
    if mounted {
        nix::mount::umount2(path, nix::mount::MntFlags::MNT_DETACH)
            .map_err(|e| io("unmount", path)(e.into()))?;
    }
    Ok(())
}

/// The image's `User` as numbers: `uid`, `uid:gid`, or names looked up in the image's
/// /etc/passwd and /etc/group (top layer first).
fn resolve_image_user(user: &str, layers: &[PathBuf]) -> Result<(u32, u32)> {
    if user.is_empty() {
        return Ok((0, 0));
    }
    let (u, g) = match user.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (user, None),
    };
    let find = |file: &str| -> Option<String> {
        layers
            .iter()
            .rev()
            .map(|l| l.join(file))
            .find(|p| p.is_file())
            .and_then(|p| fs::read_to_string(p).ok())
    };
    let (uid, passwd_gid) = match u.parse::<u32>() {
        Ok(n) => {
            let gid = find("etc/passwd").and_then(|p| {
                p.lines().find_map(|l| {
                    let f: Vec<&str> = l.split(':').collect();
                    (f.len() > 3 && f[2] == u)
                        .then(|| f[3].parse().ok())
                        .flatten()
                })
            });
            (n, gid)
        }
        Err(_) => {
            let passwd = find("etc/passwd").unwrap_or_default();
            passwd
                .lines()
                .find_map(|l| {
                    let f: Vec<&str> = l.split(':').collect();
                    (f.len() > 3 && f[0] == u).then(|| (f[2].parse().ok(), f[3].parse().ok()))
                })
                .and_then(|(a, b)| Some((a?, b)))
                .ok_or_else(|| {
                    Error::Invalid(format!("image user {u} is not in the image's /etc/passwd"))
                })?
        }
    };
    let gid = match g {
        Some(g) => match g.parse::<u32>() {
            Ok(n) => n,
            Err(_) => find("etc/group")
                .unwrap_or_default()
                .lines()
                .find_map(|l| {
                    let f: Vec<&str> = l.split(':').collect();
                    (f.len() > 2 && f[0] == g)
                        .then(|| f[2].parse().ok())
                        .flatten()
                })
                .ok_or_else(|| {
                    Error::Invalid(format!("image group {g} is not in the image's /etc/group"))
                })?,
        },
        None => passwd_gid.unwrap_or(0),
    };
    Ok((uid, gid))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn image_users_resolve_numerically_and_by_name() {
        let dir = tempfile::tempdir().unwrap();
        let base = dir.path().join("l0");
        fs::create_dir_all(base.join("etc")).unwrap();
        fs::write(
            base.join("etc/passwd"),
            "root:x:0:0::/root:/bin/sh\nweb:x:1000:1001::/home/web:/bin/sh\n",
        )
        .unwrap();
        fs::write(base.join("etc/group"), "root:x:0:\nstaff:x:50:\n").unwrap();
        let layers = vec![base];
        assert_eq!(resolve_image_user("", &layers).unwrap(), (0, 0));
        assert_eq!(resolve_image_user("web", &layers).unwrap(), (1000, 1001));
        assert_eq!(resolve_image_user("1000", &layers).unwrap(), (1000, 1001));
        assert_eq!(
            resolve_image_user("web:staff", &layers).unwrap(),
            (1000, 50)
        );
        assert_eq!(resolve_image_user("7:8", &layers).unwrap(), (7, 8));
        assert!(resolve_image_user("nobody-here", &layers).is_err());
        assert!(resolve_image_user("web:nogroup", &layers).is_err());
    }

    #[test]
    fn userns_ranges_are_aligned_and_distinct() {
        let a = userns_base("pod-a");
        let b = userns_base("pod-b");
        assert_eq!(a % 65536, 0);
        assert!((65536..(1 << 31)).contains(&a));
        assert_ne!(a, b);
    }
}
