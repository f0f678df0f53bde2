//! Root tests of whole containers through the `berth-runtime` binary (CI runs as root).
//!
//! Each test builds its own busybox bundle in a temp dir ([`Bundle::busybox`]: Debian's static
//! `/bin/busybox` with its applet links, and `runc spec`'s defaults plus a cgroup namespace)
//! and runs it under its own runtime root. A [`Ctr`] guard deletes the container with
//! `--force` when the test ends, even by panic; when the test passed, the guard then checks
//! that nothing is left: no state directory, no `berth-runtime/<id>` cgroup, no live process of the
//! container.
//!
//! Everything that clones goes through the binary: `container::create` must run in a
//! single-threaded process, and the test harness runs tests on threads. The library is used
//! for what only reads (state documents, exit records, the host's cgroups).

#![allow(clippy::print_stderr)]

use std::ffi::OsStr;
use std::fmt;
use std::fs;
use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::str::FromStr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::OnceLock;
use std::thread;
use std::time::{Duration, Instant};

use berth_runtime::container::{OciState, Status};
use berth_runtime::shim::Exit;
use serde_json::{json, Value};
use tempfile::TempDir;

const BIN: &str = env!("CARGO_BIN_EXE_berth-runtime");
/// No command of the runtime should take longer (a hang fails the test instead of CI).
const COMMAND_LIMIT: Duration = Duration::from_secs(30);

// ---------------------------------------------------------------------------------------
// The bundle fixture

/// An OCI bundle in a temp dir: `rootfs/` and `config.json`.
struct Bundle {
    dir: TempDir,
    spec: Value,
}

impl Bundle {
    /// A busybox bundle with `runc spec`'s defaults (and a cgroup namespace) running
    /// `/bin/true`; change it with the builder's methods, then [`BundleBuilder::build`].
    fn busybox() -> BundleBuilder {
        BundleBuilder { spec: runc_spec() }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    fn rootfs(&self) -> PathBuf {
        self.dir.path().join("rootfs")
    }
}

struct BundleBuilder {
    spec: Value,
}

impl BundleBuilder {
    fn args<I, S>(mut self, args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        let args: Vec<String> = args.into_iter().map(Into::into).collect();
        self.spec["process"]["args"] = json!(args);
        self
    }

    /// Run `script` with `sh -c`.
    fn sh(self, script: &str) -> Self {
        self.args(["sh", "-c", script])
    }

    fn hostname(mut self, name: &str) -> Self {
        self.spec["hostname"] = json!(name);
        self
    }

    /// A memory limit with no swap on top.
    fn memory_limit(mut self, bytes: i64) -> Self {
        self.spec["linux"]["resources"]["memory"] = json!({ "limit": bytes, "swap": bytes });
        self
    }

    fn pids_limit(mut self, n: i64) -> Self {
        self.spec["linux"]["resources"]["pids"] = json!({ "limit": n });
        self
    }

    /// `root.readonly` false (runc's default is a read-only root).
    fn writable_rootfs(mut self) -> Self {
        self.spec["root"]["readonly"] = json!(false);
        self
    }

    fn seccomp(mut self, profile: Value) -> Self {
        self.spec["linux"]["seccomp"] = profile;
        self
    }

    /// Any other change to the spec.
    fn edit(mut self, f: impl FnOnce(&mut Value)) -> Self {
        f(&mut self.spec);
        self
    }

    fn build(self) -> Bundle {
        let dir = tempfile::Builder::new()
            .prefix("berth-bundle-")
            .tempdir()
            .expect("bundle temp dir");
        make_busybox_rootfs(&dir.path().join("rootfs"));
        let config = serde_json::to_vec_pretty(&self.spec).expect("spec serialises");
        fs::write(dir.path().join("config.json"), config).expect("write config.json");
        Bundle {
            dir,
            spec: self.spec,
        }
    }
}

/// `runc spec` (runc 1.1) with a cgroup namespace added and `/bin/true` as the process.
fn runc_spec() -> Value {
    let caps = json!(["CAP_AUDIT_WRITE", "CAP_KILL", "CAP_NET_BIND_SERVICE"]);
    json!({
        "ociVersion": "1.0.2-dev",
        "process": {
            "terminal": false,
            "user": { "uid": 0, "gid": 0 },
            "args": ["/bin/true"],
            "env": [
                "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
                "TERM=xterm"
            ],
            "cwd": "/",
            "capabilities": {
                "bounding": caps,
                "effective": caps,
                "permitted": caps,
                "ambient": caps
            },
            "rlimits": [{ "type": "RLIMIT_NOFILE", "hard": 1024, "soft": 1024 }],
            "noNewPrivileges": true
        },
        "root": { "path": "rootfs", "readonly": true },
        "hostname": "runc",
        "mounts": [
            { "destination": "/proc", "type": "proc", "source": "proc" },
            { "destination": "/dev", "type": "tmpfs", "source": "tmpfs",
              "options": ["nosuid", "strictatime", "mode=755", "size=65536k"] },
            { "destination": "/dev/pts", "type": "devpts", "source": "devpts",
              "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"] },
            { "destination": "/dev/shm", "type": "tmpfs", "source": "shm",
              "options": ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"] },
            { "destination": "/dev/mqueue", "type": "mqueue", "source": "mqueue",
              "options": ["nosuid", "noexec", "nodev"] },
            { "destination": "/sys", "type": "sysfs", "source": "sysfs",
              "options": ["nosuid", "noexec", "nodev", "ro"] },
            { "destination": "/sys/fs/cgroup", "type": "cgroup", "source": "cgroup",
              "options": ["nosuid", "noexec", "nodev", "relatime", "ro"] }
        ],
        "linux": {
            "resources": { "devices": [{ "allow": false, "access": "rwm" }] },
            "namespaces": [
                { "type": "pid" }, { "type": "network" }, { "type": "ipc" },
                { "type": "uts" }, { "type": "mount" }, { "type": "cgroup" }
            ],
            "maskedPaths": [
                "/proc/acpi", "/proc/asound", "/proc/kcore", "/proc/keys",
                "/proc/latency_stats", "/proc/timer_list", "/proc/timer_stats",
                "/proc/sched_debug", "/sys/firmware", "/proc/scsi"
            ],
            "readonlyPaths": [
                "/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger"
            ]
        }
    })
}

/// Debian's static busybox (package busybox-static) at `/bin/busybox`.
const BUSYBOX: &str = "/bin/busybox";

fn applets() -> &'static [String] {
    static APPLETS: OnceLock<Vec<String>> = OnceLock::new();
    APPLETS.get_or_init(|| {
        let out = Command::new(BUSYBOX)
            .arg("--list")
            .output()
            .unwrap_or_else(|e| panic!("{BUSYBOX} --list (install busybox-static): {e}"));
        assert!(out.status.success(), "{BUSYBOX} --list: {}", out.status);
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(|l| l.trim().to_string())
            .filter(|l| !l.is_empty() && !l.contains('/'))
            .collect()
    })
}

fn make_busybox_rootfs(rootfs: &Path) {
    for dir in ["bin", "etc", "root", "tmp", "proc", "dev", "sys"] {
        fs::create_dir_all(rootfs.join(dir)).expect("rootfs dir");
    }
    fs::set_permissions(rootfs.join("tmp"), fs::Permissions::from_mode(0o1777)).unwrap();
    fs::copy(BUSYBOX, rootfs.join("bin/busybox")).expect("copy busybox");
    for applet in applets() {
        let link = rootfs.join("bin").join(applet);
        if !link.exists() {
            symlink("busybox", link).expect("applet link");
        }
    }
    fs::write(
        rootfs.join("etc/passwd"),
        "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n",
    )
    .unwrap();
    fs::write(rootfs.join("etc/group"), "root:x:0:\nnogroup:x:65534:\n").unwrap();
}

// ---------------------------------------------------------------------------------------
// Running the binary

/// How a command ended and what it printed.
struct Out {
    status: ExitStatus,
    stdout: String,
    stderr: String,
}

impl Out {
    fn ok(&self) -> bool {
        self.status.success()
    }

    fn code(&self) -> Option<i32> {
        self.status.code()
    }

    fn lines(&self) -> Vec<&str> {
        self.stdout.lines().collect()
    }

    /// Panic with everything it printed unless it succeeded.
    #[track_caller]
    fn expect_ok(self, what: &str) -> Self {
        assert!(self.ok(), "{what} failed: {self}");
        self
    }
}

impl fmt::Debug for Out {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl fmt::Display for Out {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}\n--- stdout\n{}--- stderr\n{}",
            self.status, self.stdout, self.stderr
        )
    }
}

/// A runtime command in the background. Its output goes to files, not pipes: a container it
/// creates inherits them and may hold them open long after the command exits.
struct Running {
    child: Option<Child>,
    stdout: PathBuf,
    stderr: PathBuf,
    what: String,
}

impl Running {
    fn wait(mut self) -> Out {
        let mut child = self.child.take().expect("waited once");
        let deadline = Instant::now() + COMMAND_LIMIT;
        let status = loop {
            if let Some(s) = child.try_wait().expect("try_wait") {
                break s;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!("{} still running after {COMMAND_LIMIT:?}", self.what);
            }
            thread::sleep(Duration::from_millis(2));
        };
        Out {
            status,
            stdout: fs::read_to_string(&self.stdout).unwrap_or_default(),
            stderr: fs::read_to_string(&self.stderr).unwrap_or_default(),
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

// ---------------------------------------------------------------------------------------
// The container guard

static NEXT: AtomicUsize = AtomicUsize::new(0);

/// A container id, its runtime root and bundle. Dropping it deletes the container
/// (`delete --force`) and, unless the test is already failing, asserts nothing is left.
struct Ctr {
    id: String,
    bundle: Bundle,
    /// `state/` is the runtime root; `io/` holds command output and pid files.
    tmp: TempDir,
    /// Every container process the test learnt of, to check none outlives the container.
    pids: Vec<(i32, u64)>,
}

impl Ctr {
    fn new(name: &str, bundle: Bundle) -> Ctr {
        let id = format!(
            "{name}-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        let tmp = tempfile::Builder::new()
            .prefix("berth-ctr-")
            .tempdir()
            .expect("container temp dir");
        fs::create_dir(tmp.path().join("state")).unwrap();
        fs::create_dir(tmp.path().join("io")).unwrap();
        Ctr {
            id,
            bundle,
            tmp,
            pids: Vec::new(),
        }
    }

    fn root(&self) -> PathBuf {
        self.tmp.path().join("state")
    }

    fn io(&self, name: &str) -> PathBuf {
        self.tmp.path().join("io").join(name)
    }

    fn bundle_arg(&self) -> String {
        self.bundle.path().display().to_string()
    }

    /// Start `berth-runtime --root ROOT ARGS...`.
    fn spawn<S: AsRef<OsStr>>(&self, args: &[S]) -> Running {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let stdout = self.io(&format!("{n}.out"));
        let stderr = self.io(&format!("{n}.err"));
        let what = format!(
            "berth-runtime {}",
            args.iter()
                .map(|a| a.as_ref().to_string_lossy().into_owned())
                .collect::<Vec<_>>()
                .join(" ")
        );
        let child = Command::new(BIN)
            .arg("--root")
            .arg(self.root())
            .args(args)
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(fs::File::create(&stdout).unwrap())
            .stderr(fs::File::create(&stderr).unwrap())
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {what}: {e}"));
        Running {
            child: Some(child),
            stdout,
            stderr,
            what,
        }
    }

    fn cli<S: AsRef<OsStr>>(&self, args: &[S]) -> Out {
        self.spawn(args).wait()
    }

    /// `run` the bundle: create, start, wait and delete; the init's pid is remembered.
    fn run(&mut self) -> Out {
        let pid_file = self.io("run.pid");
        let out = self.cli(&[
            "run",
            "--bundle",
            &self.bundle_arg(),
            "--pid-file",
            &pid_file.display().to_string(),
            &self.id,
        ]);
        if let Ok(pid) = fs::read_to_string(&pid_file) {
            self.remember(pid.trim().parse().expect("pid file holds a pid"));
        }
        out
    }

    /// `create` without checking the result (its output goes to `io/create.*`).
    fn try_create(&self) -> Out {
        let pid_file = self.io("create.pid");
        self.cli(&[
            "create",
            "--bundle",
            &self.bundle_arg(),
            "--pid-file",
            &pid_file.display().to_string(),
            &self.id,
        ])
    }

    /// `create`; returns the init's pid.
    #[track_caller]
    fn create(&mut self) -> i32 {
        self.try_create().expect_ok("create");
        let pid: i32 = fs::read_to_string(self.io("create.pid"))
            .expect("create wrote its pid file")
            .trim()
            .parse()
            .expect("pid file holds a pid");
        self.remember(pid);
        pid
    }

    #[track_caller]
    fn start(&self) {
        self.cli(&["start", &self.id]).expect_ok("start");
    }

    /// `create` and `start`; returns the init's pid once the container is running.
    #[track_caller]
    fn started(&mut self) -> i32 {
        let pid = self.create();
        self.start();
        self.wait_for(Status::Running);
        pid
    }

    fn state(&self) -> Result<OciState, Out> {
        let out = self.cli(&["state", &self.id]);
        if !out.ok() {
            return Err(out);
        }
        Ok(serde_json::from_str(&out.stdout)
            .unwrap_or_else(|e| panic!("state is not an OCI state document ({e}): {out}")))
    }

    #[track_caller]
    fn status(&self) -> Status {
        match self.state() {
            Ok(s) => s.status,
            Err(out) => panic!("state {}: {out}", self.id),
        }
    }

    /// Wait until the container is `wanted` (it may not exist yet).
    #[track_caller]
    fn wait_for(&self, wanted: Status) {
        let ok = eventually(
            Duration::from_secs(10),
            || matches!(self.state(), Ok(s) if s.status == wanted),
        );
        let now = self.state().map(|s| s.status.to_string());
        assert!(ok, "container {} never became {wanted}: {now:?}", self.id);
    }

    fn exec(&self, args: &[&str]) -> Out {
        let mut full = vec!["exec"];
        full.extend_from_slice(args);
        self.cli(&full)
    }

    fn remember(&mut self, pid: i32) {
        if let Some(start) = proc_start(pid) {
            self.pids.push((pid, start));
        }
    }

    /// The container's state directory, cgroup and processes are gone.
    #[track_caller]
    fn assert_nothing_left(&self) {
        let id = &self.id;
        let dir = self.root().join(id);
        assert!(!dir.exists(), "state directory {} is left", dir.display());
        let cgroup = format!("{}/{id}", berth_runtime::container::DEFAULT_CGROUP_PARENT);
        let cg = berth_runtime::cgroups::detect().expect("host cgroups");
        assert!(!cg.exists(&cgroup), "cgroup {cgroup} is left");
        let memory = Path::new("/sys/fs/cgroup/memory").join(&cgroup);
        assert!(!memory.exists(), "{} is left", memory.display());
        for (pid, start) in &self.pids {
            assert!(
                !alive(*pid, *start),
                "container process {pid} is still running"
            );
        }
        let in_cgroup = live_pids_in_cgroup(&cgroup);
        assert!(
            in_cgroup.is_empty(),
            "processes {in_cgroup:?} are still in {cgroup}"
        );
    }
}

impl Drop for Ctr {
    fn drop(&mut self) {
        let out = self.cli(&["delete", "--force", &self.id]);
        if thread::panicking() {
            return;
        }
        assert!(out.ok(), "delete --force {}: {out}", self.id);
        self.assert_nothing_left();
    }
}

// ---------------------------------------------------------------------------------------
// Reading the host

/// State and start time (clock ticks after boot) of a process, from `/proc/PID/stat`.
fn proc_stat(pid: i32) -> Option<(char, u64)> {
    let s = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &s[s.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split(' ').collect();
    Some((
        fields.first()?.chars().next()?,
        fields.get(19)?.parse().ok()?,
    ))
}

fn proc_start(pid: i32) -> Option<u64> {
    proc_stat(pid).map(|(_, start)| start)
}

/// The same process still runs (a zombie has ended: it only waits for its parent).
fn alive(pid: i32, start: u64) -> bool {
    matches!(proc_stat(pid), Some((state, s)) if s == start && state != 'Z' && state != 'X')
}

/// Live processes anywhere on the host whose cgroup (any hierarchy) is `path` or below it.
fn live_pids_in_cgroup(path: &str) -> Vec<i32> {
    let mut found = Vec::new();
    let Ok(entries) = fs::read_dir("/proc") else {
        return found;
    };
    for entry in entries.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<i32>().ok())
        else {
            continue;
        };
        let Ok(cgroups) = fs::read_to_string(format!("/proc/{pid}/cgroup")) else {
            continue;
        };
        let inside = cgroups.lines().any(|l| {
            let p = l.splitn(3, ':').nth(2).unwrap_or("");
            let p = p.trim_start_matches('/');
            p == path || p.starts_with(&format!("{path}/"))
        });
        if inside && matches!(proc_stat(pid), Some((s, _)) if s != 'Z' && s != 'X') {
            found.push(pid);
        }
    }
    found
}

fn ns_inode(pid: &str, ns: &str) -> String {
    fs::read_link(format!("/proc/{pid}/ns/{ns}"))
        .unwrap_or_else(|e| panic!("readlink /proc/{pid}/ns/{ns}: {e}"))
        .display()
        .to_string()
}

fn eventually(limit: Duration, mut check: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    loop {
        if check() {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        thread::sleep(Duration::from_millis(10));
    }
}

/// A capability mask as `/proc/PID/status` prints it, from capability names.
fn cap_mask(names: &Value) -> u64 {
    names
        .as_array()
        .expect("a list of capabilities")
        .iter()
        .map(|n| {
            caps::Capability::from_str(n.as_str().unwrap())
                .unwrap_or_else(|e| panic!("{n}: {e}"))
                .bitmask()
        })
        .fold(0, |a, b| a | b)
}

// ---------------------------------------------------------------------------------------
// Isolation

#[test]
fn the_container_sees_itself_as_pid_1() {
    let bundle = Bundle::busybox()
        .sh("echo pid=$$; set -- /proc/[0-9]*; echo procs=$#; echo $1")
        .build();
    let mut c = Ctr::new("pid1", bundle);
    let out = c.run().expect_ok("run");
    // The shell and nothing else: the glob is expanded by the shell itself.
    assert_eq!(out.lines(), ["pid=1", "procs=1", "/proc/1"], "{out}");
}

#[test]
fn the_container_has_its_own_hostname() {
    let bundle = Bundle::busybox()
        .hostname("berth-box")
        .args(["hostname"])
        .build();
    let mut c = Ctr::new("uts", bundle);
    let out = c.run().expect_ok("run");
    assert_eq!(out.stdout.trim(), "berth-box", "{out}");
    let host = nix::unistd::gethostname().unwrap();
    assert_ne!(
        host.to_string_lossy(),
        "berth-box",
        "the host's hostname changed"
    );
}

#[test]
fn the_container_has_its_own_network_with_only_loopback() {
    let bundle = Bundle::busybox()
        .sh("cat /proc/net/dev; readlink /proc/self/ns/net")
        .build();
    let mut c = Ctr::new("net", bundle);
    let out = c.run().expect_ok("run");
    let lines = out.lines();
    // Two header lines, then one line per interface, then the namespace link.
    let interfaces: Vec<&str> = lines[2..lines.len() - 1]
        .iter()
        .filter_map(|l| l.split(':').next())
        .map(str::trim)
        .collect();
    assert_eq!(interfaces, ["lo"], "{out}");
    assert_ne!(
        lines.last().copied().unwrap_or_default(),
        ns_inode("self", "net"),
        "the container shares the host's network namespace"
    );
}

#[test]
fn the_container_sees_none_of_the_hosts_mounts() {
    let bundle = Bundle::busybox()
        .sh("cat /proc/self/mountinfo; [ -e /work ] && echo host-work-visible; true")
        .build();
    let mut c = Ctr::new("mnt", bundle);
    let out = c.run().expect_ok("run");
    assert!(!out.stdout.contains("host-work-visible"), "{out}");
    let points: Vec<&str> = out
        .lines()
        .iter()
        .filter_map(|l| l.split(' ').nth(4))
        .collect();
    assert!(points.contains(&"/"), "{out}");
    // Only what the spec mounts (with masked and read-only paths, and cgroup controllers).
    let allowed = |p: &str| {
        p == "/"
            || ["/proc", "/dev", "/sys"]
                .iter()
                .any(|top| p == *top || p.starts_with(&format!("{top}/")))
    };
    let strays: Vec<&&str> = points.iter().filter(|p| !allowed(p)).collect();
    assert!(strays.is_empty(), "host mounts inside: {strays:?}\n{out}");
    let host = fs::read_to_string("/proc/self/mountinfo").unwrap();
    for point in host.lines().filter_map(|l| l.split(' ').nth(4)) {
        if !allowed(point) {
            assert!(!points.contains(&point), "host mount {point} inside\n{out}");
        }
    }
    assert!(!points.contains(&"/work"), "{out}");
}

#[test]
fn masked_paths_read_empty_and_readonly_paths_refuse_writes() {
    // The spec's masked paths this kernel has (no /proc/kcore without CONFIG_PROC_KCORE):
    // each must read empty inside, files as zero bytes and directories as no entries.
    let masked: Vec<(String, bool)> = runc_spec()["linux"]["maskedPaths"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p.as_str().unwrap().to_string())
        .filter_map(|p| fs::metadata(&p).ok().map(|m| (p, m.is_dir())))
        .collect();
    let host_size = |(p, dir): &(String, bool)| -> usize {
        if *dir {
            fs::read_dir(p).map(|d| d.count()).unwrap_or(0)
        } else {
            fs::read(p).map(|b| b.len()).unwrap_or(0)
        }
    };
    assert!(
        masked.iter().any(|m| host_size(m) > 0),
        "no masked path has content on this host, nothing to test: {masked:?}"
    );
    let mut script = String::new();
    for (p, dir) in &masked {
        if *dir {
            script.push_str(&format!("echo \"{p}=$(ls -A {p} | wc -l)\"\n"));
        } else {
            script.push_str(&format!("echo \"{p}=$(wc -c < {p})\"\n"));
        }
    }
    script.push_str("(echo x > /proc/sys/kernel/domainname) 2>/dev/shm/err; echo sys=$?\n");
    script.push_str("read err < /dev/shm/err; echo \"err=$err\"\n");
    let mut c = Ctr::new("masked", Bundle::busybox().sh(&script).build());
    let out = c.run().expect_ok("run");
    let lines = out.lines();
    for (i, (p, _)) in masked.iter().enumerate() {
        assert_eq!(lines[i], format!("{p}=0"), "{p} is not masked\n{out}");
    }
    assert_ne!(lines[masked.len()], "sys=0", "/proc/sys is writable\n{out}");
    assert!(
        lines[masked.len() + 1].contains("Read-only file system"),
        "{out}"
    );
}

#[test]
fn the_container_keeps_only_the_specs_capabilities() {
    let bundle = Bundle::busybox().args(["cat", "/proc/self/status"]).build();
    let caps = &bundle.spec["process"]["capabilities"];
    let want = cap_mask(&caps["effective"]);
    assert_eq!(want, cap_mask(&caps["bounding"]));
    let mut c = Ctr::new("caps", bundle);
    let out = c.run().expect_ok("run");
    let field = |name: &str| {
        let line = out
            .lines()
            .into_iter()
            .find(|l| l.starts_with(&format!("{name}:")))
            .unwrap_or_else(|| panic!("no {name} in\n{out}"));
        u64::from_str_radix(line.split_whitespace().nth(1).unwrap(), 16).unwrap()
    };
    assert_eq!(
        field("CapEff"),
        want,
        "CapEff {:#x}\n{out}",
        field("CapEff")
    );
    assert_eq!(field("CapPrm"), want, "{out}");
    assert_eq!(field("CapBnd"), want, "{out}");
    assert_eq!(field("NoNewPrivs"), 1, "{out}");
}

#[test]
fn a_seccomp_profile_denies_mkdir_with_eperm() {
    let bundle = Bundle::busybox()
        .writable_rootfs()
        .seccomp(json!({
            "defaultAction": "SCMP_ACT_ALLOW",
            "architectures": ["SCMP_ARCH_X86_64"],
            "syscalls": [{
                "names": ["mkdir", "mkdirat"],
                "action": "SCMP_ACT_ERRNO",
                "errnoRet": 1
            }]
        }))
        .sh("touch /tmp/file && echo touched; mkdir /tmp/x; echo mkdir=$?")
        .build();
    let rootfs = bundle.rootfs();
    let mut c = Ctr::new("seccomp", bundle);
    let out = c.run().expect_ok("run");
    // The file shows the root is writable: only seccomp can refuse the directory.
    assert!(out.stdout.contains("touched"), "{out}");
    assert!(out.stdout.contains("mkdir=1"), "{out}");
    assert!(out.stderr.contains("Operation not permitted"), "{out}");
    assert!(rootfs.join("tmp/file").exists());
    assert!(!rootfs.join("tmp/x").exists());
}

// ---------------------------------------------------------------------------------------
// Exit codes and limits

#[test]
fn run_exits_with_the_containers_code() {
    let mut c = Ctr::new("exit7", Bundle::busybox().sh("exit 7").build());
    let out = c.run();
    assert_eq!(out.code(), Some(7), "{out}");
}

#[test]
fn run_exits_128_plus_the_signal_that_killed_the_container() {
    let mut c = Ctr::new("killed", Bundle::busybox().args(["sleep", "30"]).build());
    let pid_file = c.io("run.pid");
    let run = c.spawn(&[
        "run",
        "--bundle",
        &c.bundle_arg(),
        "--pid-file",
        &pid_file.display().to_string(),
        &c.id,
    ]);
    c.wait_for(Status::Running);
    assert!(eventually(Duration::from_secs(5), || pid_file.exists()));
    let pid: i32 = fs::read_to_string(&pid_file)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    c.remember(pid);
    c.cli(&["kill", &c.id, "KILL"]).expect_ok("kill");
    let out = run.wait();
    assert_eq!(out.code(), Some(128 + 9), "{out}");
}

#[test]
fn a_memory_hog_is_oom_killed_and_the_shim_says_so() {
    let bundle = Bundle::busybox()
        .args(["tail", "/dev/zero"])
        .memory_limit(32 << 20)
        .build();
    let mut c = Ctr::new("oom", bundle);
    let log = c.io("oom.log");
    let out = c.cli(&[
        "shim",
        "--bundle",
        &c.bundle_arg(),
        "--log-path",
        &log.display().to_string(),
        &c.id,
    ]);
    let pid = berth_runtime::shim::parse_report(&out.stdout)
        .unwrap_or_else(|e| panic!("shim: {e}\n{out}"));
    c.remember(pid);
    c.start();
    let exit_json = c.root().join(&c.id).join("exit.json");
    assert!(
        eventually(Duration::from_secs(20), || exit_json.exists()),
        "no exit.json within 20s; state {:?}",
        c.state().ok()
    );
    let exit: Exit = serde_json::from_slice(&fs::read(&exit_json).unwrap()).unwrap();
    assert_eq!(exit.reason, "OOMKilled", "{exit:?}");
    assert_eq!(exit.code, 137, "{exit:?}");
    assert_eq!(exit.signal, Some(9), "{exit:?}");
    assert_eq!(c.status(), Status::Stopped);
    // A stopped container needs no --force.
    c.cli(&["delete", &c.id]).expect_ok("delete");
    c.assert_nothing_left();
}

#[test]
fn a_fork_bomb_stops_at_the_pids_limit() {
    // The bomb runs in a subshell, which dies at its first failed fork; the init (the outer
    // shell) then counts with builtins only, since it cannot fork either.
    let script = r#"
        ( i=0; while [ $i -lt 100 ]; do sleep 10 & i=$((i+1)); echo $i > /dev/shm/started; done ) 2>/dev/shm/err
        set -- /proc/[0-9]*; echo procs=$#
        read started < /dev/shm/started; echo started=$started
        read err < /dev/shm/err; echo "err=$err"
        for f in /sys/fs/cgroup/pids/pids.events /sys/fs/cgroup/pids.events; do
            [ -r $f ] && while read k v; do echo "events_$k=$v"; done < $f
        done
        true
    "#;
    let bundle = Bundle::busybox().pids_limit(30).sh(script).build();
    let mut c = Ctr::new("forkbomb", bundle);
    let out = c.run().expect_ok("run");
    let value = |key: &str| -> String {
        out.lines()
            .iter()
            .find_map(|l| l.strip_prefix(&format!("{key}=")))
            .unwrap_or_else(|| panic!("no {key} in\n{out}"))
            .to_string()
    };
    let procs: u32 = value("procs").parse().unwrap();
    let started: u32 = value("started").parse().unwrap();
    assert!(procs <= 30, "{procs} processes under a limit of 30\n{out}");
    assert!(
        (20..100).contains(&started),
        "{started} of 100 forks succeeded\n{out}"
    );
    assert!(value("err").contains("can't fork"), "{out}");
    let failed: u32 = value("events_max").parse().unwrap();
    assert!(failed >= 1, "no fork was refused\n{out}");
}

// ---------------------------------------------------------------------------------------
// exec

#[test]
fn exec_runs_in_the_containers_namespaces() {
    let bundle = Bundle::busybox()
        .hostname("exec-box")
        .args(["sleep", "30"])
        .build();
    let mut c = Ctr::new("exec", bundle);
    let init = c.started();

    let out = c.exec(&[&c.id, "hostname"]).expect_ok("exec hostname");
    assert_eq!(out.stdout.trim(), "exec-box", "{out}");

    let out = c.exec(&[&c.id, "ps"]).expect_ok("exec ps");
    let rows: Vec<Vec<&str>> = out
        .lines()
        .iter()
        .skip(1)
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert!(
        rows.iter()
            .any(|r| r.first() == Some(&"1") && r.ends_with(&["sleep", "30"])),
        "the container's init is not pid 1 in ps\n{out}"
    );
    // The init and ps itself: no host process is visible.
    assert_eq!(rows.len(), 2, "{out}");

    let init_s = init.to_string();
    for ns in ["net", "pid", "uts", "ipc", "mnt"] {
        let path = format!("/proc/self/ns/{ns}");
        let out = c
            .exec(&[&c.id, "readlink", &path])
            .expect_ok("exec readlink");
        assert_eq!(out.stdout.trim(), ns_inode(&init_s, ns), "{ns}\n{out}");
        assert_ne!(
            out.stdout.trim(),
            ns_inode("self", ns),
            "{ns} is the host's"
        );
    }

    let out = c.exec(&[&c.id, "sh", "-c", "exit 3"]);
    assert_eq!(out.code(), Some(3), "{out}");
}

#[test]
fn exec_takes_env_cwd_and_user() {
    let mut c = Ctr::new("execenv", Bundle::busybox().args(["sleep", "30"]).build());
    c.started();
    let out = c
        .exec(&[
            "-e",
            "GREETING=hello",
            "-e",
            "PATH=/bin",
            "--cwd",
            "/tmp",
            &c.id,
            "sh",
            "-c",
            "echo $GREETING; echo $PATH; pwd",
        ])
        .expect_ok("exec");
    assert_eq!(out.lines(), ["hello", "/bin", "/tmp"], "{out}");
    let out = c
        .exec(&["-u", "65534:65534", &c.id, "id"])
        .expect_ok("exec id");
    assert!(
        out.stdout
            .starts_with("uid=65534(nobody) gid=65534(nogroup)"),
        "{out}"
    );
}

// ---------------------------------------------------------------------------------------
// Lifecycle

#[test]
fn create_start_kill_delete_walk_through_the_states() {
    let mut c = Ctr::new("cycle", Bundle::busybox().args(["sleep", "30"]).build());
    let pid = c.create();
    let state = c.state().expect("state");
    assert_eq!(state.status, Status::Created);
    assert_eq!(state.pid, pid);
    assert_eq!(state.id, c.id);
    assert_eq!(state.bundle, fs::canonicalize(c.bundle.path()).unwrap());
    // Created: the init waits for `start` and has not exec'd the workload yet.
    let comm = fs::read_to_string(format!("/proc/{pid}/comm")).unwrap();
    assert_ne!(comm.trim(), "sleep");
    let listed = c.cli(&["list", "-q"]).expect_ok("list");
    assert_eq!(listed.stdout.trim(), c.id);

    c.start();
    assert_eq!(c.status(), Status::Running);
    let comm = fs::read_to_string(format!("/proc/{pid}/comm")).unwrap();
    assert_eq!(comm.trim(), "sleep");
    // Starting twice is refused.
    let again = c.cli(&["start", &c.id]);
    assert!(!again.ok(), "{again}");

    c.cli(&["kill", &c.id, "KILL"]).expect_ok("kill");
    c.wait_for(Status::Stopped);
    assert_eq!(c.state().unwrap().pid, 0);

    c.cli(&["delete", &c.id]).expect_ok("delete");
    let gone = c.state().expect_err("state after delete");
    assert!(gone.stderr.contains("does not exist"), "{gone}");
    c.assert_nothing_left();
}

#[test]
fn delete_refuses_a_running_container_without_force() {
    let mut c = Ctr::new("busy", Bundle::busybox().args(["sleep", "30"]).build());
    c.started();
    let out = c.cli(&["delete", &c.id]);
    assert!(!out.ok(), "{out}");
    assert!(out.stderr.contains("--force"), "{out}");
    assert_eq!(c.status(), Status::Running);
    c.cli(&["delete", "--force", &c.id])
        .expect_ok("delete --force");
    c.assert_nothing_left();
}

#[test]
fn an_id_can_be_used_again_after_delete() {
    let mut c = Ctr::new("reuse", Bundle::busybox().sh("exit 0").build());
    c.run().expect_ok("first run");
    c.run().expect_ok("second run");
    c.create();
    c.cli(&["delete", &c.id]).expect_ok("delete created");
    c.create();
    assert_eq!(c.status(), Status::Created);
    // The same id twice at once is refused.
    let dup = c.try_create();
    assert!(!dup.ok() && dup.stderr.contains("already exists"), "{dup}");
}

#[test]
fn kill_with_an_unknown_signal_is_refused() {
    let mut c = Ctr::new("badsig", Bundle::busybox().args(["sleep", "30"]).build());
    c.started();
    let out = c.cli(&["kill", &c.id, "NOPE"]);
    assert!(!out.ok(), "{out}");
    assert!(out.stderr.contains("unknown signal NOPE"), "{out}");
    assert_eq!(c.status(), Status::Running);
}

/// `create` fails with `message` in its error and leaves nothing behind.
#[track_caller]
fn refused(name: &str, bundle: Bundle, message: &str) {
    let c = Ctr::new(name, bundle);
    let out = c.try_create();
    assert!(!out.ok(), "{name}: create succeeded: {out}");
    assert!(
        out.stderr.contains(message),
        "{name}: wanted {message:?} in the error: {out}"
    );
    c.assert_nothing_left();
    let run = c.cli(&["run", "--bundle", &c.bundle_arg(), &c.id]);
    assert!(!run.ok() && run.stderr.contains(message), "{name}: {run}");
    c.assert_nothing_left();
}

#[test]
fn invalid_bundles_are_refused_clearly_and_leave_nothing() {
    let b = Bundle::busybox().build();
    fs::remove_file(b.path().join("config.json")).unwrap();
    refused("noconfig", b, "config.json: No such file or directory");

    let b = Bundle::busybox().args(Vec::<String>::new()).build();
    refused("noargs", b, "process.args must name a program");

    let b = Bundle::busybox()
        .edit(|s| s["process"]["cwd"] = json!("tmp"))
        .build();
    refused("relcwd", b, "process.cwd tmp must be absolute");

    let b = Bundle::busybox().build();
    fs::remove_dir_all(b.rootfs()).unwrap();
    refused("norootfs", b, "is not a directory");
}

#[test]
fn running_a_missing_program_fails_clearly_and_leaves_nothing() {
    let mut c = Ctr::new(
        "noprog",
        Bundle::busybox().args(["/bin/no-such-program"]).build(),
    );
    let out = c.run();
    assert!(!out.ok(), "{out}");
    assert!(
        out.stderr
            .contains("exec /bin/no-such-program: No such file or directory"),
        "{out}"
    );
    c.assert_nothing_left();
}
