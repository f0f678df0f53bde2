//! Root tests against the host's real cgroup hierarchies (CI runs as root).
//!
//! Each test makes its own cgroup `berth-test-<pid>-<n>` at the top of the hierarchy and a
//! guard kills everything in it and removes it when the test ends, even by panic. The same
//! scenarios run on v1 (when `/sys/fs/cgroup` is not cgroup2) and on v2 (when it is); the
//! other version is skipped with a note on stderr.
//!
//! The test process makes itself a child subreaper, so the processes a test kills (orphans
//! included) come back to it and are reaped: `pids.current` counts a zombie until it is
//! reaped, and an init that does not reap would keep them forever.

#![allow(clippy::print_stderr)]

use std::io::{Read, Write};
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Once;
use std::thread;
use std::time::{Duration, Instant};

use berth_runtime::cgroups::{
    detect, is_cgroup2_mount, Cgroups, Cgroupv1, Cgroupv2, DeviceRule, Resources, DEFAULT_ROOT,
};
use nix::errno::Errno;
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;

static NEXT: AtomicUsize = AtomicUsize::new(0);

fn unique() -> String {
    format!(
        "berth-test-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

fn host_is_v2() -> bool {
    is_cgroup2_mount(Path::new(DEFAULT_ROOT)).expect("statfs /sys/fs/cgroup")
}

/// The host's v1 hierarchies, or `None` (with the reason on stderr) on a v2 host.
fn host_v1(test: &str) -> Option<Cgroupv1> {
    if host_is_v2() {
        eprintln!("{test}: skipped for v1: {DEFAULT_ROOT} is cgroup2");
        return None;
    }
    Some(Cgroupv1::from_host().expect("v1 controllers in /proc/self/mountinfo"))
}

/// The host's unified hierarchy, or `None` (with the reason on stderr) when
/// `/sys/fs/cgroup` is not cgroup2.
fn host_v2(test: &str) -> Option<Cgroupv2> {
    if !host_is_v2() {
        eprintln!("{test}: skipped for v2: {DEFAULT_ROOT} is not cgroup2 (v1 or hybrid host)");
        return None;
    }
    let cg = Cgroupv2::new(PathBuf::from(DEFAULT_ROOT));
    let offered = std::fs::read_to_string(cg.root().join("cgroup.controllers")).unwrap();
    for c in ["memory", "cpu", "pids"] {
        assert!(
            offered.split_whitespace().any(|o| o == c),
            "v2 root lacks the {c} controller: {offered}"
        );
    }
    Some(cg)
}

/// Make killed orphans this process's children, so [`reap`] can collect them.
fn become_subreaper() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| nix::sys::prctl::set_child_subreaper(true).expect("PR_SET_CHILD_SUBREAPER"));
}

/// Every pid in `path` and below.
fn subtree_pids(cg: &dyn Cgroups, path: &str) -> Vec<i32> {
    let mut pids = cg.procs(path).unwrap_or_default();
    for child in cg.children(path).unwrap_or_default() {
        pids.extend(subtree_pids(cg, &format!("{path}/{child}")));
    }
    pids
}

/// Wait for killed processes that are, or are about to become, our children (an orphan
/// is reparented to us a moment after its parent dies).
fn reap(pids: &[i32]) {
    for &pid in pids {
        let start = Instant::now();
        loop {
            match waitpid(Pid::from_raw(pid), Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::StillAlive) | Err(Errno::ECHILD)
                    if start.elapsed() < Duration::from_secs(2) =>
                {
                    thread::sleep(Duration::from_millis(5));
                }
                Err(Errno::EINTR) => {}
                _ => break,
            }
        }
    }
}

/// Owns a test cgroup: kills whatever is in it, reaps it and removes the cgroup on drop,
/// panic or not.
struct Guard<'a> {
    cg: &'a dyn Cgroups,
    path: String,
}

impl<'a> Guard<'a> {
    fn create(cg: &'a dyn Cgroups, res: &Resources) -> Self {
        become_subreaper();
        let guard = Guard { cg, path: unique() };
        cg.create(&guard.path, res).expect("create test cgroup");
        guard
    }

    fn sub(&self, child: &str) -> String {
        format!("{}/{child}", self.path)
    }

    /// `kill_all`, then the exit statuses of `kids`, reaping every other process killed.
    fn kill(&self, kids: &mut [Child]) -> Vec<ExitStatus> {
        let pids = subtree_pids(self.cg, &self.path);
        self.cg.kill_all(&self.path).expect("kill_all");
        let statuses = kids
            .iter_mut()
            .map(|k| wait_timeout(k, Duration::from_secs(10)))
            .collect();
        let kid_pids: Vec<i32> = kids.iter().map(|k| k.id() as i32).collect();
        let others: Vec<i32> = pids.into_iter().filter(|p| !kid_pids.contains(p)).collect();
        reap(&others);
        statuses
    }
}

impl Drop for Guard<'_> {
    fn drop(&mut self) {
        let pids = subtree_pids(self.cg, &self.path);
        if let Err(err) = self.cg.kill_all(&self.path) {
            eprintln!("cleanup: kill_all {}: {err}", self.path);
        }
        reap(&pids);
        if let Err(err) = self.cg.remove(&self.path) {
            eprintln!("cleanup: remove {}: {err}", self.path);
        }
    }
}

/// `sh -c script` held at a `read` until [`release`] so it is in its cgroup before it does
/// anything; its stderr is captured.
fn gated_sh(script: &str) -> Child {
    Command::new("/bin/sh")
        .arg("-c")
        .arg(format!("read go; {script}"))
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn /bin/sh")
}

fn spawn_in(cg: &dyn Cgroups, path: &str, script: &str) -> Child {
    let mut child = gated_sh(script);
    if let Err(err) = cg.add_process(path, child.id() as i32) {
        let _ = child.kill();
        let _ = child.wait();
        panic!("add_process {path}: {err}");
    }
    child
}

fn release(child: &mut Child) {
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(b"go\n")
        .expect("release the gate");
}

fn wait_timeout(child: &mut Child, limit: Duration) -> ExitStatus {
    let start = Instant::now();
    loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            return status;
        }
        if start.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            panic!("process {} still running after {limit:?}", child.id());
        }
        thread::sleep(Duration::from_millis(20));
    }
}

fn stderr_of(child: &mut Child) -> String {
    let mut s = String::new();
    if let Some(mut e) = child.stderr.take() {
        let _ = e.read_to_string(&mut s);
    }
    s
}

fn eventually(limit: Duration, mut check: impl FnMut() -> bool) -> bool {
    let start = Instant::now();
    while start.elapsed() < limit {
        if check() {
            return true;
        }
        thread::sleep(Duration::from_millis(20));
    }
    check()
}

// ---- scenarios, for either version ----

fn memory_hog_is_oom_killed(cg: &dyn Cgroups) {
    let limit = 32 << 20;
    let g = Guard::create(
        cg,
        &Resources {
            memory_limit: Some(limit),
            memory_swap_limit: Some(limit),
            ..Resources::default()
        },
    );
    assert_eq!(cg.stats(&g.path).unwrap().oom_kills, 0);
    let mut hog = spawn_in(cg, &g.path, "exec tail /dev/zero");
    release(&mut hog);
    let status = wait_timeout(&mut hog, Duration::from_secs(60));
    assert_eq!(
        status.signal(),
        Some(libc::SIGKILL),
        "hog should be OOM-killed, got {status:?}"
    );
    let stats = cg.stats(&g.path).unwrap();
    assert!(stats.oom_kills >= 1, "no OOM kill counted: {stats:?}");
    assert!(stats.memory_usage_bytes <= limit as u64, "{stats:?}");
}

fn fork_bomb_stops_at_pids_max(cg: &dyn Cgroups, pids_events: &Path) {
    let g = Guard::create(
        cg,
        &Resources {
            pids_limit: Some(20),
            ..Resources::default()
        },
    );
    let events = |p: &str| {
        let content = std::fs::read_to_string(pids_events.join(p).join("pids.events")).unwrap();
        content
            .lines()
            .find_map(|l| l.strip_prefix("max ")?.trim().parse::<u64>().ok())
            .unwrap_or(0)
    };
    assert_eq!(events(&g.path), 0);
    let mut bomb = spawn_in(
        cg,
        &g.path,
        "n=0; while [ $n -lt 100 ]; do sleep 600 & n=$((n+1)); done; wait",
    );
    release(&mut bomb);
    // The shell either gives up at the first failed fork or goes on to `wait`; either
    // way the cgroup fills up to the limit.
    assert!(
        eventually(Duration::from_secs(20), || events(&g.path) >= 1),
        "no fork was refused; pids_current = {}",
        cg.stats(&g.path).unwrap().pids_current
    );
    let stats = cg.stats(&g.path).unwrap();
    assert!(
        (2..=20).contains(&stats.pids_current),
        "pids_current {} outside 2..=20",
        stats.pids_current
    );
    let status = g.kill(std::slice::from_mut(&mut bomb))[0];
    let err = stderr_of(&mut bomb);
    assert!(
        status.signal() == Some(libc::SIGKILL) || err.to_lowercase().contains("fork"),
        "shell neither killed nor reported a failed fork: {status:?} {err:?}"
    );
    assert_eq!(cg.stats(&g.path).unwrap().pids_current, 0);
}

fn cpu_usage_grows(cg: &dyn Cgroups) {
    let g = Guard::create(cg, &Resources::default());
    let before = cg.stats(&g.path).unwrap().cpu_usage_ns;
    let mut busy = spawn_in(
        cg,
        &g.path,
        "i=0; while [ $i -lt 200000 ]; do i=$((i+1)); done",
    );
    release(&mut busy);
    let status = wait_timeout(&mut busy, Duration::from_secs(60));
    assert!(status.success(), "{status:?}");
    let after = cg.stats(&g.path).unwrap().cpu_usage_ns;
    assert!(
        after >= before + 20_000_000,
        "cpu usage went from {before} to {after} ns over a busy loop"
    );
}

/// Processes sit in two leaves (v2 allows none in a cgroup whose children have
/// controllers), one of them with a grandchild shell forking on its own.
fn kill_all_empties_the_tree(cg: &dyn Cgroups) {
    let g = Guard::create(cg, &Resources::default());
    let (a, b) = (g.sub("a"), g.sub("b"));
    cg.create(&a, &Resources::default()).unwrap();
    cg.create(&b, &Resources::default()).unwrap();
    let mut kids: Vec<Child> = (0..3).map(|_| spawn_in(cg, &a, "exec sleep 600")).collect();
    kids.push(spawn_in(
        cg,
        &b,
        "sleep 600 & sleep 600 & sh -c 'sleep 600 & wait' & wait",
    ));
    for k in &mut kids {
        release(k);
    }
    assert!(
        eventually(Duration::from_secs(10), || {
            cg.procs(&a).unwrap().len() == 3 && cg.procs(&b).unwrap().len() == 5
        }),
        "processes did not show up: {:?} {:?}",
        cg.procs(&a),
        cg.procs(&b)
    );
    assert_eq!(cg.children(&g.path).unwrap(), vec!["a", "b"]);
    assert_eq!(cg.stats(&g.path).unwrap().pids_current, 8);

    let pids = subtree_pids(cg, &g.path);
    let start = Instant::now();
    cg.kill_all(&g.path).unwrap();
    let took = start.elapsed();
    assert!(took < Duration::from_secs(5), "kill_all took {took:?}");
    // Empty at once; zombies are not listed, though pids.current counts them until reaped.
    assert!(cg.procs(&a).unwrap().is_empty());
    assert!(cg.procs(&b).unwrap().is_empty());
    for k in &mut kids {
        let status = wait_timeout(k, Duration::from_secs(5));
        assert_eq!(status.signal(), Some(libc::SIGKILL), "{status:?}");
    }
    let kid_pids: Vec<i32> = kids.iter().map(|k| k.id() as i32).collect();
    reap(
        &pids
            .into_iter()
            .filter(|p| !kid_pids.contains(p))
            .collect::<Vec<_>>(),
    );
    assert_eq!(cg.stats(&g.path).unwrap().pids_current, 0);
    // Killing an empty or missing cgroup is fine.
    cg.kill_all(&g.path).unwrap();
    cg.kill_all(&g.sub("missing")).unwrap();
}

fn deny_all() -> DeviceRule {
    DeviceRule {
        allow: false,
        kind: 'a',
        major: None,
        minor: None,
        access: "rwm".into(),
    }
}

/// Deny every device but the char devices `(major, minor, access)`.
fn deny_all_but(chars: &[(i64, i64, &str)]) -> Resources {
    let mut devices = vec![deny_all()];
    devices.extend(chars.iter().map(|&(major, minor, access)| DeviceRule {
        allow: true,
        kind: 'c',
        major: Some(major),
        minor: Some(minor),
        access: access.into(),
    }));
    Resources {
        devices,
        ..Resources::default()
    }
}

/// What a container gets: deny all, then runc's defaults.
fn container_defaults() -> Resources {
    let mut devices = vec![deny_all()];
    devices.extend(DeviceRule::defaults());
    Resources {
        devices,
        ..Resources::default()
    }
}

/// Run `script` in the cgroup `path`: `Ok`, or the exit status and stderr.
fn run_in(cg: &dyn Cgroups, path: &str, script: &str) -> Result<(), String> {
    let mut child = spawn_in(cg, path, script);
    release(&mut child);
    let status = wait_timeout(&mut child, Duration::from_secs(20));
    let err = stderr_of(&mut child);
    if status.success() {
        Ok(())
    } else {
        Err(format!("{status:?}: {err}"))
    }
}

#[track_caller]
fn refused(outcome: Result<(), String>, what: &str) {
    match outcome {
        Ok(()) => panic!("{what}: allowed, should be refused"),
        Err(err) => assert!(
            err.contains("Operation not permitted"),
            "{what}: failed, but not with EPERM: {err}"
        ),
    }
}

/// The device rules decide which device nodes a process in the cgroup may open or make,
/// and `update` changes them for processes already inside.
fn device_rules_gate_opens(cg: &dyn Cgroups) {
    let g = Guard::create(cg, &deny_all_but(&[(1, 3, "rwm")]));
    let tmp = tempfile::tempdir().unwrap();
    let run = |script: &str| run_in(cg, &g.path, script);
    let read = |dev: &str| run(&format!("head -c1 {dev} >/dev/null"));
    let write = |dev: &str| run(&format!("echo x > {dev}"));
    let node = tmp.path().join("kmsg");
    let mknod = || {
        let _ = std::fs::remove_file(&node);
        run(&format!("mknod {} c 1 11", node.display()))
    };

    read("/dev/null").expect("read /dev/null");
    write("/dev/null").expect("write /dev/null");
    refused(read("/dev/zero"), "read /dev/zero");
    refused(write("/dev/zero"), "write /dev/zero");
    refused(mknod(), "mknod c 1:11");

    // Waiting inside while the rules change: the new ones apply to it.
    let mut waiting = spawn_in(cg, &g.path, "head -c1 /dev/zero >/dev/null");
    cg.update(&g.path, &deny_all_but(&[(1, 3, "rwm"), (1, 5, "r")]))
        .unwrap();
    release(&mut waiting);
    let status = wait_timeout(&mut waiting, Duration::from_secs(20));
    assert!(status.success(), "{status:?}: {}", stderr_of(&mut waiting));
    read("/dev/zero").expect("read /dev/zero once allowed");
    refused(write("/dev/zero"), "write /dev/zero with only r");
    read("/dev/null").expect("read /dev/null after update");

    cg.update(&g.path, &deny_all_but(&[(1, 3, "rwm")])).unwrap();
    refused(read("/dev/zero"), "read /dev/zero after taking it back");

    cg.update(&g.path, &container_defaults()).unwrap();
    for dev in [
        "/dev/null",
        "/dev/zero",
        "/dev/full",
        "/dev/urandom",
        "/dev/random",
    ] {
        read(dev).unwrap_or_else(|e| panic!("read {dev} with the defaults: {e}"));
    }
    mknod().expect("mknod is allowed by the defaults");
    refused(read(&node.display().to_string()), "read the node made");
    if Path::new("/dev/loop0").exists() {
        refused(
            read("/dev/loop0"),
            "read /dev/loop0 (b 7:0) with the defaults",
        );
    }

    // Privileged: everything.
    let mut all = container_defaults();
    all.devices[0].allow = true;
    cg.update(&g.path, &all).unwrap();
    write("/dev/zero").expect("write /dev/zero when all is allowed");
}

/// `dirs(path)` lists every directory `path` should be in (each v1 hierarchy, or the one
/// v2 directory).
fn remove_leaves_nothing(cg: &dyn Cgroups, dirs: &dyn Fn(&str) -> Vec<PathBuf>) {
    let g = Guard::create(
        cg,
        &Resources {
            memory_limit: Some(64 << 20),
            cpu_shares: Some(256),
            cpu_quota: Some(50_000),
            cpu_period: Some(100_000),
            pids_limit: Some(50),
            ..Resources::default()
        },
    );
    let leaf = g.sub("pod/ctr");
    cg.create(&leaf, &Resources::default()).unwrap();
    let mut short = spawn_in(cg, &leaf, "exit 0");
    release(&mut short);
    assert!(wait_timeout(&mut short, Duration::from_secs(10)).success());
    for d in dirs(&leaf) {
        assert!(d.is_dir(), "{} missing after create", d.display());
    }
    cg.kill_all(&g.path).unwrap();
    cg.remove(&g.path).unwrap();
    for d in dirs(&g.path) {
        assert!(!d.exists(), "{} left behind", d.display());
    }
    assert!(!cg.exists(&g.path));
    cg.remove(&g.path).unwrap();
}

/// The guard every test relies on: after a panic, the processes are gone (and reaped) and
/// so is the cgroup, in every directory `dirs` lists.
fn guard_cleans_up_after_a_panic(cg: &dyn Cgroups, dirs: &dyn Fn(&str) -> Vec<PathBuf>) {
    let mut seen: (String, Vec<i32>) = (String::new(), Vec::new());
    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let g = Guard::create(cg, &Resources::default());
        let leaf = g.sub("x");
        cg.create(&leaf, &Resources::default()).unwrap();
        let mut kids: Vec<Child> = (0..2)
            .map(|_| spawn_in(cg, &leaf, "sleep 600 & exec sleep 600"))
            .collect();
        for k in &mut kids {
            release(k);
        }
        assert!(eventually(Duration::from_secs(10), || {
            cg.procs(&leaf).unwrap().len() == 4
        }));
        seen = (g.path.clone(), subtree_pids(cg, &g.path));
        panic!("deliberate panic with {} processes in {leaf}", seen.1.len());
    }));
    assert!(outcome.is_err());
    let (path, pids) = seen;
    assert_eq!(pids.len(), 4);
    for d in dirs(&path) {
        assert!(!d.exists(), "{} left behind", d.display());
    }
    for pid in pids {
        assert_eq!(
            nix::sys::signal::kill(Pid::from_raw(pid), None),
            Err(Errno::ESRCH),
            "pid {pid} still there"
        );
    }
}

// ---- v1 ----

fn v1_dirs(cg: &Cgroupv1) -> impl Fn(&str) -> Vec<PathBuf> + '_ {
    move |path| {
        [
            "memory", "cpu", "cpuacct", "cpuset", "pids", "freezer", "devices",
        ]
        .iter()
        .filter_map(|c| cg.controller_dir(c, path))
        .collect()
    }
}

#[test]
fn v1_memory_hog_is_oom_killed() {
    if let Some(cg) = host_v1("v1_memory_hog_is_oom_killed") {
        memory_hog_is_oom_killed(&cg);
    }
}

#[test]
fn v1_fork_bomb_stops_at_pids_max() {
    if let Some(cg) = host_v1("v1_fork_bomb_stops_at_pids_max") {
        let pids = cg.controller_dir("pids", "").expect("pids controller");
        fork_bomb_stops_at_pids_max(&cg, &pids);
    }
}

#[test]
fn v1_cpu_usage_grows() {
    if let Some(cg) = host_v1("v1_cpu_usage_grows") {
        cpu_usage_grows(&cg);
    }
}

#[test]
fn v1_kill_all_empties_the_tree() {
    if let Some(cg) = host_v1("v1_kill_all_empties_the_tree") {
        kill_all_empties_the_tree(&cg);
    }
}

#[test]
fn v1_remove_leaves_nothing() {
    if let Some(cg) = host_v1("v1_remove_leaves_nothing") {
        remove_leaves_nothing(&cg, &v1_dirs(&cg));
    }
}

#[test]
fn v1_guard_cleans_up_after_a_panic() {
    if let Some(cg) = host_v1("v1_guard_cleans_up_after_a_panic") {
        guard_cleans_up_after_a_panic(&cg, &v1_dirs(&cg));
    }
}

#[test]
fn v1_limits_land_in_each_controller() {
    let Some(cg) = host_v1("v1_limits_land_in_each_controller") else {
        return;
    };
    let res = Resources {
        memory_limit: Some(48 << 20),
        memory_swap_limit: Some(48 << 20),
        cpu_shares: Some(512),
        cpu_quota: Some(25_000),
        cpu_period: Some(50_000),
        pids_limit: Some(33),
        ..Resources::default()
    };
    let g = Guard::create(&cg, &res);
    let read = |c: &str, f: &str| {
        std::fs::read_to_string(cg.controller_dir(c, &g.path).unwrap().join(f))
            .unwrap()
            .trim()
            .to_string()
    };
    assert_eq!(
        read("memory", "memory.limit_in_bytes"),
        (48u64 << 20).to_string()
    );
    if cg
        .controller_dir("memory", "")
        .unwrap()
        .join("memory.memsw.limit_in_bytes")
        .exists()
    {
        assert_eq!(
            read("memory", "memory.memsw.limit_in_bytes"),
            (48u64 << 20).to_string()
        );
    }
    assert_eq!(read("cpu", "cpu.shares"), "512");
    assert_eq!(read("cpu", "cpu.cfs_quota_us"), "25000");
    assert_eq!(read("cpu", "cpu.cfs_period_us"), "50000");
    assert_eq!(read("pids", "pids.max"), "33");
    assert!(!read("cpuset", "cpuset.cpus").is_empty());
    assert!(!read("cpuset", "cpuset.mems").is_empty());

    // Raising memory above the memsw limit needs memsw raised first; update handles it.
    cg.update(
        &g.path,
        &Resources {
            memory_limit: Some(96 << 20),
            memory_swap_limit: Some(96 << 20),
            cpu_quota: Some(-1),
            pids_limit: Some(-1),
            ..Resources::default()
        },
    )
    .unwrap();
    assert_eq!(
        read("memory", "memory.limit_in_bytes"),
        (96u64 << 20).to_string()
    );
    assert_eq!(read("cpu", "cpu.cfs_quota_us"), "-1");
    assert_eq!(read("pids", "pids.max"), "max");
    assert_eq!(read("cpu", "cpu.shares"), "512", "untouched by update");
}

#[test]
fn v1_device_rules_gate_opens() {
    let Some(cg) = host_v1("v1_device_rules_gate_opens") else {
        return;
    };
    if cg.controller_dir("devices", "").is_none() {
        eprintln!("v1_device_rules_gate_opens: skipped: no devices controller");
        return;
    }
    device_rules_gate_opens(&cg);
}

/// What the kernel lists matches the rules, and the pod above stays allow-all.
#[test]
fn v1_devices_list_shows_the_rules() {
    let Some(cg) = host_v1("v1_devices_list_shows_the_rules") else {
        return;
    };
    if cg.controller_dir("devices", "").is_none() {
        eprintln!("v1_devices_list_shows_the_rules: skipped: no devices controller");
        return;
    }
    let g = Guard::create(&cg, &Resources::default());
    let ctr = g.sub("ctr");
    cg.create(&ctr, &deny_all_but(&[(1, 3, "rwm")])).unwrap();
    let list = |p: &str| {
        let file = cg
            .controller_dir("devices", p)
            .unwrap()
            .join("devices.list");
        let mut lines: Vec<String> = std::fs::read_to_string(file)
            .unwrap()
            .lines()
            .map(str::to_string)
            .collect();
        lines.sort();
        lines
    };
    assert_eq!(list(&g.path), ["a *:* rwm"]);
    assert_eq!(list(&ctr), ["c 1:3 rwm"]);
    // Creating again changes nothing.
    cg.create(&ctr, &deny_all_but(&[(1, 3, "rwm")])).unwrap();
    assert_eq!(list(&ctr), ["c 1:3 rwm"]);
    cg.update(&ctr, &container_defaults()).unwrap();
    assert_eq!(
        list(&ctr),
        [
            "b *:* m",
            "c *:* m",
            "c 136:* rwm",
            "c 1:3 rwm",
            "c 1:5 rwm",
            "c 1:7 rwm",
            "c 1:8 rwm",
            "c 1:9 rwm",
            "c 5:0 rwm",
            "c 5:2 rwm",
        ]
    );
    // Rules v1 cannot express are refused, and the cgroup keeps what it had.
    let mut holed = deny_all_but(&[(1, 3, "rwm")]);
    holed.devices.insert(
        1,
        DeviceRule {
            allow: true,
            kind: 'c',
            major: None,
            minor: None,
            access: "rw".into(),
        },
    );
    holed.devices.push(DeviceRule {
        allow: false,
        kind: 'c',
        major: Some(1),
        minor: Some(5),
        access: "w".into(),
    });
    let err = cg.update(&ctr, &holed).unwrap_err();
    assert!(err.to_string().contains("cannot express"), "{err}");
    assert_eq!(list(&ctr).len(), 10);
    cg.remove(&ctr).unwrap();
    assert!(!cg.controller_dir("devices", &ctr).unwrap().exists());
}

#[test]
fn detect_matches_the_host() {
    let cg = detect().unwrap();
    if host_is_v2() {
        assert_eq!(cg.version(), 2);
        assert_eq!(cg.dir("a/b"), Path::new(DEFAULT_ROOT).join("a/b"));
    } else {
        assert_eq!(cg.version(), 1);
        let memory = Cgroupv1::from_host()
            .unwrap()
            .controller_dir("memory", "a/b")
            .expect("memory controller");
        assert_eq!(cg.dir("a/b"), memory);
    }
}

// ---- v2 ----

#[test]
fn v2_memory_hog_is_oom_killed() {
    if let Some(cg) = host_v2("v2_memory_hog_is_oom_killed") {
        memory_hog_is_oom_killed(&cg);
    }
}

#[test]
fn v2_fork_bomb_stops_at_pids_max() {
    if let Some(cg) = host_v2("v2_fork_bomb_stops_at_pids_max") {
        let root = cg.root().to_path_buf();
        fork_bomb_stops_at_pids_max(&cg, &root);
    }
}

#[test]
fn v2_cpu_usage_grows() {
    if let Some(cg) = host_v2("v2_cpu_usage_grows") {
        cpu_usage_grows(&cg);
    }
}

#[test]
fn v2_kill_all_empties_the_tree() {
    if let Some(cg) = host_v2("v2_kill_all_empties_the_tree") {
        kill_all_empties_the_tree(&cg);
    }
}

#[test]
fn v2_remove_leaves_nothing() {
    if let Some(cg) = host_v2("v2_remove_leaves_nothing") {
        let dirs = |p: &str| vec![cg.dir(p)];
        remove_leaves_nothing(&cg, &dirs);
    }
}

#[test]
fn v2_guard_cleans_up_after_a_panic() {
    if let Some(cg) = host_v2("v2_guard_cleans_up_after_a_panic") {
        let dirs = |p: &str| vec![cg.dir(p)];
        guard_cleans_up_after_a_panic(&cg, &dirs);
    }
}

/// A hybrid host's cgroup2 mount (`/sys/fs/cgroup/unified`), which has no memory, cpu or
/// pids controller but the whole core interface: `cgroup.procs`, `cgroup.kill`,
/// `cgroup.freeze`, `cpu.stat`.
fn hybrid_unified(test: &str) -> Option<Cgroupv2> {
    if host_is_v2() {
        eprintln!("{test}: skipped: pure v2 host, covered by the v2_ tests");
        return None;
    }
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    let mount = mountinfo.lines().find_map(|l| {
        let (before, after) = l.split_once(" - ")?;
        (after.split(' ').next() == Some("cgroup2")).then(|| before.split(' ').nth(4))?
    });
    match mount {
        Some(m) => Some(Cgroupv2::new(PathBuf::from(m))),
        None => {
            eprintln!("{test}: skipped: no cgroup2 mount on this v1 host");
            None
        }
    }
}

/// The device filter works on any cgroup2 directory: the root of a pure v2 host, or a
/// hybrid host's unified mount (which has no controllers to speak of).
#[test]
fn v2_device_rules_gate_opens() {
    let test = "v2_device_rules_gate_opens";
    let cg = if host_is_v2() {
        host_v2(test)
    } else {
        hybrid_unified(test)
    };
    if let Some(cg) = cg {
        device_rules_gate_opens(&cg);
    }
}

#[test]
fn v2_core_interface_on_the_hybrid_unified_mount() {
    let Some(cg) = hybrid_unified("v2_core_interface_on_the_hybrid_unified_mount") else {
        return;
    };
    let offered = std::fs::read_to_string(cg.root().join("cgroup.controllers")).unwrap();
    let g = Guard::create(&cg, &Resources::default());
    let (a, b) = (g.sub("a"), g.sub("b"));
    cg.create(&a, &Resources::default()).unwrap();
    cg.create(&b, &Resources::default()).unwrap();
    if !offered.split_whitespace().any(|c| c == "memory") {
        let err = cg
            .update(
                &a,
                &Resources {
                    memory_limit: Some(1 << 20),
                    ..Resources::default()
                },
            )
            .unwrap_err();
        assert!(err.to_string().contains("memory.max"), "{err}");
    }

    let before = cg.stats(&g.path).unwrap().cpu_usage_ns;
    let mut busy = spawn_in(&cg, &a, "i=0; while [ $i -lt 200000 ]; do i=$((i+1)); done");
    release(&mut busy);
    assert!(wait_timeout(&mut busy, Duration::from_secs(60)).success());
    let after = cg.stats(&g.path).unwrap().cpu_usage_ns;
    assert!(
        after >= before + 20_000_000,
        "cpu.stat went from {before} to {after} ns"
    );

    let mut kids: Vec<Child> = (0..2)
        .map(|_| spawn_in(&cg, &a, "exec sleep 600"))
        .collect();
    kids.push(spawn_in(
        &cg,
        &b,
        "sleep 600 & sh -c 'sleep 600 & wait' & wait",
    ));
    for k in &mut kids {
        release(k);
    }
    assert!(eventually(Duration::from_secs(10), || {
        cg.procs(&a).unwrap().len() == 2 && cg.procs(&b).unwrap().len() == 4
    }));
    let statuses = g.kill(&mut kids);
    assert!(
        statuses.iter().all(|s| s.signal() == Some(libc::SIGKILL)),
        "{statuses:?}"
    );
    assert!(cg.procs(&a).unwrap().is_empty() && cg.procs(&b).unwrap().is_empty());
    cg.remove(&g.path).unwrap();
    assert!(!cg.dir(&g.path).exists());
}
