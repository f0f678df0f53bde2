//! cgroup v1: one hierarchy per controller, the same relative path made in each.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};
use std::time::Duration;

use tracing::debug;

use super::devices::{self, parse_v1_list, v1_transition, DevicePolicy};
use super::{
    child_names, dirs_depth_first, keyed, kill_until_empty, mkdir, parse_pids, read_optional,
    read_procs, read_string, read_u64, relative, remove_tree, v1_layout, wait_for, write_file,
    write_limit, Cgroups, Error, Freezer, Resources, Result, Stats, DEFAULT_KILL_TIMEOUT,
    DEFAULT_ROOT, MOUNTINFO,
};

/// The controllers a container's cgroup is made in, when mounted.
pub(super) const CONTROLLERS: &[&str] = &[
    "memory", "cpu", "cpuacct", "cpuset", "pids", "freezer", "devices",
];

const MEMORY_LIMIT: &str = "memory.limit_in_bytes";
const MEMSW_LIMIT: &str = "memory.memsw.limit_in_bytes";

/// How long a freeze may take to settle before killing goes ahead anyway.
const FREEZE_WAIT: Duration = Duration::from_millis(500);

/// cgroup v1, driving the controllers in [`CONTROLLERS`] that are mounted.
#[derive(Debug, Clone)]
pub struct Cgroupv1 {
    /// Controller name to its hierarchy's mount point; co-mounted controllers
    /// (`cpu,cpuacct`) share one.
    mounts: BTreeMap<String, PathBuf>,
    kill_timeout: Duration,
}

impl Cgroupv1 {
    /// Controllers mounted at the given roots (as `/sys/fs/cgroup/memory`). Symlinked roots
    /// (`/sys/fs/cgroup/cpu` to `cpu,cpuacct`) are resolved so each hierarchy is used once.
    pub fn new(mounts: BTreeMap<String, PathBuf>) -> Self {
        let mounts = mounts
            .into_iter()
            .map(|(c, p)| {
                let p = fs::canonicalize(&p).unwrap_or(p);
                (c, p)
            })
            .collect();
        Cgroupv1 {
            mounts,
            kill_timeout: DEFAULT_KILL_TIMEOUT,
        }
    }

    /// The v1 controllers mounted on this host, from `/proc/self/mountinfo` (cgroup2
    /// mounts, such as a hybrid host's `/sys/fs/cgroup/unified`, are not looked at).
    pub fn from_host() -> Result<Self> {
        let mountinfo = read_string(Path::new(MOUNTINFO))?;
        let mounts = v1_layout(&mountinfo).map_err(Error::NoHierarchy)?;
        Ok(Cgroupv1::new(mounts))
    }

    /// How long `kill_all` waits for the cgroup to empty.
    pub fn with_kill_timeout(mut self, timeout: Duration) -> Self {
        self.kill_timeout = timeout;
        self
    }

    /// Controller name to mount point.
    pub fn mounts(&self) -> &BTreeMap<String, PathBuf> {
        &self.mounts
    }

    /// `path` in `controller`'s hierarchy, when that controller is mounted.
    pub fn controller_dir(&self, controller: &str, path: &str) -> Option<PathBuf> {
        Some(self.mounts.get(controller)?.join(sanitized(path)))
    }

    fn ctrl(&self, controller: &str, rel: &Path) -> Option<PathBuf> {
        Some(self.mounts.get(controller)?.join(rel))
    }

    /// The distinct hierarchies among the controllers we drive.
    fn roots(&self) -> Vec<&Path> {
        let mut roots: Vec<&Path> = Vec::new();
        for c in CONTROLLERS {
            if let Some(root) = self.mounts.get(*c) {
                if !roots.contains(&root.as_path()) {
                    roots.push(root);
                }
            }
        }
        roots
    }

    /// `rel` in every hierarchy we drive.
    fn dirs(&self, rel: &Path) -> Vec<PathBuf> {
        self.roots().into_iter().map(|r| r.join(rel)).collect()
    }

    /// Fill an empty `cpuset.cpus` and `cpuset.mems` from the parent, or the kernel refuses
    /// to take tasks into the cgroup.
    fn inherit_cpuset(&self, dir: &Path) -> Result<()> {
        let Some(parent) = dir.parent() else {
            return Ok(());
        };
        for file in ["cpuset.cpus", "cpuset.mems"] {
            let own = dir.join(file);
            if !read_string(&own)?.trim().is_empty() {
                continue;
            }
            let inherited = read_string(&parent.join(file))?;
            let inherited = inherited.trim();
            if !inherited.is_empty() {
                write_file(&own, inherited)?;
            }
        }
        Ok(())
    }

    fn apply(&self, path: &str, rel: &Path, res: &Resources) -> Result<()> {
        let missing = |controller: &str| Error::MissingController {
            path: PathBuf::from(path),
            controller: controller.to_string(),
        };
        // Decided before anything is written, so bad rules change nothing.
        let devices = devices::policy(Path::new(path), &res.devices)?;
        let devices_dir = match devices {
            Some(_) => Some(
                self.ctrl("devices", rel)
                    .ok_or_else(|| missing("devices"))?,
            ),
            None => None,
        };

        if res.memory_limit.is_some() || res.memory_swap_limit.is_some() {
            let dir = self.ctrl("memory", rel).ok_or_else(|| missing("memory"))?;
            self.set_memory(&dir, res)?;
        }

        if res.cpu_shares.is_some() || res.cpu_quota.is_some() || res.cpu_period.is_some() {
            let dir = self.ctrl("cpu", rel).ok_or_else(|| missing("cpu"))?;
            if let Some(shares) = res.cpu_shares {
                let shares = shares.clamp(2, 262_144).to_string();
                write_limit(&dir, "cpu.shares", "cpu", &shares)?;
            }
            // The period first: the kernel checks a quota against the period in force.
            if let Some(period) = res.cpu_period {
                write_limit(&dir, "cpu.cfs_period_us", "cpu", &period.to_string())?;
            }
            if let Some(quota) = res.cpu_quota {
                let quota = if quota < 0 { -1 } else { quota };
                write_limit(&dir, "cpu.cfs_quota_us", "cpu", &quota.to_string())?;
            }
        }

        if let Some(limit) = res.pids_limit {
            let dir = self.ctrl("pids", rel).ok_or_else(|| missing("pids"))?;
            let value = if limit <= 0 {
                "max".to_string()
            } else {
                limit.to_string()
            };
            write_limit(&dir, "pids.max", "pids", &value)?;
        }

        if let (Some(dir), Some(target)) = (devices_dir, devices) {
            set_devices(&dir, &target)?;
        }
        Ok(())
    }

    /// The kernel keeps `memsw >= memory`: try the memory limit first and, when that is
    /// refused (lowering memsw below it), memsw first, as runc does.
    fn set_memory(&self, dir: &Path, res: &Resources) -> Result<()> {
        let bytes = |v: i64| {
            if v < 0 {
                "-1".to_string()
            } else {
                v.to_string()
            }
        };
        let limit = res.memory_limit.map(bytes);
        let swap = res.memory_swap_limit.map(bytes).filter(|_| {
            let accounted = dir.join(MEMSW_LIMIT).exists();
            if !accounted {
                debug!(dir = %dir.display(), "no swap accounting; memory_swap_limit skipped");
            }
            accounted
        });
        match (limit, swap) {
            (Some(limit), Some(swap)) => match write_limit(dir, MEMORY_LIMIT, "memory", &limit) {
                Err(err) if err.raw_os_error() == Some(libc::EINVAL) => {
                    write_limit(dir, MEMSW_LIMIT, "memory", &swap)?;
                    write_limit(dir, MEMORY_LIMIT, "memory", &limit)
                }
                Err(err) => Err(err),
                Ok(()) => write_limit(dir, MEMSW_LIMIT, "memory", &swap),
            },
            (Some(limit), None) => write_limit(dir, MEMORY_LIMIT, "memory", &limit),
            (None, Some(swap)) => write_limit(dir, MEMSW_LIMIT, "memory", &swap),
            (None, None) => Ok(()),
        }
    }

    /// The directory `path` is in for the hierarchies other than the memory controller's
    /// when memory is not mounted.
    fn primary_root(&self) -> PathBuf {
        self.mounts
            .get("memory")
            .cloned()
            .or_else(|| self.roots().first().map(|r| r.to_path_buf()))
            .unwrap_or_else(|| Path::new(DEFAULT_ROOT).join("memory"))
    }
}

/// Move the `devices` cgroup `dir` from what its `devices.list` shows to `target`, then
/// check that the kernel lists what was asked for (a parent that allows less refuses the
/// writes; a hole the kernel ignored would show here).
fn set_devices(dir: &Path, target: &DevicePolicy) -> Result<()> {
    let list = dir.join("devices.list");
    let listed = |list: &Path| -> Result<DevicePolicy> {
        parse_v1_list(&read_string(list)?).map_err(|m| Error::invalid(list, m))
    };
    let current = listed(&list)?;
    let writes = v1_transition(&current, target);
    for w in &writes {
        write_limit(dir, w.file(), "devices", &w.line)?;
    }
    let now = listed(&list)?;
    if !target.listed_as(&now) {
        return Err(Error::invalid(
            &list,
            format!(
                "after {} writes the kernel lists {now}, not {target}",
                writes.len()
            ),
        ));
    }
    debug!(dir = %dir.display(), policy = %target, writes = writes.len(), "device rules set");
    Ok(())
}

/// `path` with only its normal components, so a bad path can never point outside the root.
fn sanitized(path: &str) -> PathBuf {
    relative(path, true).unwrap_or_else(|_| {
        Path::new(path)
            .components()
            .filter(|c| matches!(c, std::path::Component::Normal(_)))
            .collect()
    })
}

/// The v1 freezer of one cgroup and its descendants.
struct V1Freezer {
    dir: PathBuf,
}

impl Freezer for V1Freezer {
    fn set_frozen(&self, frozen: bool) -> Result<()> {
        let state = self.dir.join("freezer.state");
        if frozen {
            write_file(&state, "FROZEN")?;
            let settled = wait_for(FREEZE_WAIT, || Ok(read_string(&state)?.trim() == "FROZEN"))?;
            if !settled {
                debug!(path = %state.display(), "freeze did not settle; killing anyway");
            }
            return Ok(());
        }
        // A child frozen on its own stays frozen when the parent thaws: thaw each.
        let mut dirs = dirs_depth_first(&self.dir)?;
        dirs.reverse();
        for dir in dirs {
            let state = dir.join("freezer.state");
            if state.exists() {
                write_file(&state, "THAWED")?;
            }
        }
        Ok(())
    }
}

impl Cgroups for Cgroupv1 {
    fn version(&self) -> u8 {
        1
    }

    fn create(&self, path: &str, res: &Resources) -> Result<()> {
        let rel = relative(path, false)?;
        let roots = self.roots();
        if roots.is_empty() {
            return Err(Error::NoHierarchy(format!(
                "none of the v1 controllers {CONTROLLERS:?} is mounted"
            )));
        }
        debug!(cgroup = path, ?res, "creating v1 cgroup");
        let cpuset = self.mounts.get("cpuset").map(PathBuf::as_path);
        for root in roots {
            let mut dir = root.to_path_buf();
            for comp in rel.components() {
                dir.push(comp);
                mkdir(&dir)?;
                if Some(root) == cpuset {
                    self.inherit_cpuset(&dir)?;
                }
            }
        }
        self.apply(path, &rel, res)
    }

    fn update(&self, path: &str, res: &Resources) -> Result<()> {
        let rel = relative(path, false)?;
        debug!(cgroup = path, ?res, "updating v1 cgroup");
        self.apply(path, &rel, res)
    }

    fn add_process(&self, path: &str, pid: i32) -> Result<()> {
        let rel = relative(path, true)?;
        for dir in self.dirs(&rel) {
            write_file(&dir.join("cgroup.procs"), &pid.to_string())?;
        }
        debug!(cgroup = path, pid, "process added");
        Ok(())
    }

    fn procs(&self, path: &str) -> Result<Vec<i32>> {
        let file = self.dir(path).join("cgroup.procs");
        parse_pids(&file, &read_string(&file)?)
    }

    fn kill_all(&self, path: &str) -> Result<()> {
        let rel = relative(path, false)?;
        let dirs: Vec<PathBuf> = self.dirs(&rel).into_iter().filter(|d| d.is_dir()).collect();
        if dirs.is_empty() {
            return Ok(());
        }
        debug!(cgroup = path, "killing every process");
        let freezer = self
            .ctrl("freezer", &rel)
            .filter(|d| d.join("freezer.state").exists())
            .map(|dir| V1Freezer { dir });
        let list = || -> Result<Vec<i32>> {
            let mut pids = BTreeSet::new();
            for dir in &dirs {
                for sub in dirs_depth_first(dir)? {
                    pids.extend(read_procs(&sub)?);
                }
            }
            Ok(pids.into_iter().collect())
        };
        kill_until_empty(
            &self.dir(path),
            self.kill_timeout,
            freezer.as_ref().map(|f| f as &dyn Freezer),
            &list,
        )
    }

    fn stats(&self, path: &str) -> Result<Stats> {
        let rel = relative(path, true)?;
        let dir = self.dir(path);
        if !dir.is_dir() {
            return Err(Error::io(
                dir,
                std::io::Error::from(std::io::ErrorKind::NotFound),
            ));
        }
        let mut stats = Stats::default();
        if let Some(dir) = self.ctrl("cpuacct", &rel) {
            stats.cpu_usage_ns = read_u64(&dir.join("cpuacct.usage"))?;
        }
        if let Some(dir) = self.ctrl("memory", &rel) {
            let usage = read_u64(&dir.join("memory.usage_in_bytes"))?;
            let stat = read_string(&dir.join("memory.stat"))?;
            let inactive = keyed(&stat, "total_inactive_file")
                .or_else(|| keyed(&stat, "inactive_file"))
                .unwrap_or(0);
            stats.memory_usage_bytes = usage;
            stats.memory_working_set_bytes = usage.saturating_sub(inactive);
            // `oom_kill` is there since Linux 4.13.
            stats.oom_kills = read_optional(&dir.join("memory.oom_control"))?
                .and_then(|s| keyed(&s, "oom_kill"))
                .unwrap_or(0);
        }
        if let Some(dir) = self.ctrl("pids", &rel) {
            stats.pids_current = read_u64(&dir.join("pids.current"))?;
        }
        Ok(stats)
    }

    fn remove(&self, path: &str) -> Result<()> {
        let rel = relative(path, false)?;
        let mut first_err = None;
        for dir in self.dirs(&rel) {
            if let Err(err) = remove_tree(&dir) {
                first_err.get_or_insert(err);
            }
        }
        match first_err {
            Some(err) => Err(err),
            None => {
                debug!(cgroup = path, "removed v1 cgroup");
                Ok(())
            }
        }
    }

    fn exists(&self, path: &str) -> bool {
        self.dir(path).is_dir()
    }

    fn children(&self, path: &str) -> Result<Vec<String>> {
        child_names(&self.dir(path))
    }

    fn dir(&self, path: &str) -> PathBuf {
        self.primary_root().join(sanitized(path))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A scratch v1 layout: `cpu` and `cpuacct` co-mounted, the rest one each, with the
    /// interface files the kernel would make in `rel` (and its parents).
    struct Scratch {
        _tmp: tempfile::TempDir,
        root: PathBuf,
        cg: Cgroupv1,
    }

    impl Scratch {
        fn new() -> Self {
            let tmp = tempfile::tempdir().unwrap();
            let root = fs::canonicalize(tmp.path()).unwrap();
            let mut mounts = BTreeMap::new();
            for (c, dir) in [
                ("memory", "memory"),
                ("cpu", "cpu,cpuacct"),
                ("cpuacct", "cpu,cpuacct"),
                ("cpuset", "cpuset"),
                ("pids", "pids"),
                ("freezer", "freezer"),
            ] {
                fs::create_dir_all(root.join(dir)).unwrap();
                mounts.insert(c.to_string(), root.join(dir));
            }
            fs::write(root.join("cpuset/cpuset.cpus"), "0-3\n").unwrap();
            fs::write(root.join("cpuset/cpuset.mems"), "0\n").unwrap();
            Scratch {
                root,
                cg: Cgroupv1::new(mounts),
                _tmp: tmp,
            }
        }

        /// Make `rel` with the files the kernel would put there.
        fn kernel_mkdir(&self, rel: &str) {
            let files: &[(&str, &[(&str, &str)])] = &[
                (
                    "memory",
                    &[
                        ("memory.limit_in_bytes", "9223372036854771712\n"),
                        ("memory.memsw.limit_in_bytes", "9223372036854771712\n"),
                        ("memory.usage_in_bytes", "0\n"),
                        ("memory.stat", ""),
                        ("memory.oom_control", "oom_kill_disable 0\nunder_oom 0\n"),
                    ],
                ),
                (
                    "cpu,cpuacct",
                    &[
                        ("cpu.shares", "1024\n"),
                        ("cpu.cfs_quota_us", "-1\n"),
                        ("cpu.cfs_period_us", "100000\n"),
                        ("cpuacct.usage", "0\n"),
                    ],
                ),
                ("cpuset", &[("cpuset.cpus", ""), ("cpuset.mems", "")]),
                ("pids", &[("pids.max", "max\n"), ("pids.current", "0\n")]),
                ("freezer", &[("freezer.state", "THAWED\n")]),
            ];
            let mut sub = PathBuf::new();
            for comp in Path::new(rel).components() {
                sub.push(comp);
                for (hier, files) in files {
                    let dir = self.root.join(hier).join(&sub);
                    fs::create_dir_all(&dir).unwrap();
                    fs::write(dir.join("cgroup.procs"), "").unwrap();
                    for (f, content) in *files {
                        fs::write(dir.join(f), content).unwrap();
                    }
                }
            }
        }

        fn read(&self, hier: &str, rel: &str, file: &str) -> String {
            fs::read_to_string(self.root.join(hier).join(rel).join(file)).unwrap()
        }
    }

    #[test]
    fn create_writes_limits_and_inherits_cpuset() {
        let s = Scratch::new();
        s.kernel_mkdir("berth/pod/c1");
        let res = Resources {
            memory_limit: Some(64 << 20),
            memory_swap_limit: Some(64 << 20),
            cpu_shares: Some(512),
            cpu_quota: Some(50_000),
            cpu_period: Some(100_000),
            pids_limit: Some(20),
            ..Resources::default()
        };
        s.cg.create("berth/pod/c1", &res).unwrap();
        let p = "berth/pod/c1";
        assert_eq!(s.read("memory", p, "memory.limit_in_bytes"), "67108864");
        assert_eq!(
            s.read("memory", p, "memory.memsw.limit_in_bytes"),
            "67108864"
        );
        assert_eq!(s.read("cpu,cpuacct", p, "cpu.shares"), "512");
        assert_eq!(s.read("cpu,cpuacct", p, "cpu.cfs_quota_us"), "50000");
        assert_eq!(s.read("cpu,cpuacct", p, "cpu.cfs_period_us"), "100000");
        assert_eq!(s.read("pids", p, "pids.max"), "20");
        for level in ["berth", "berth/pod", p] {
            assert_eq!(s.read("cpuset", level, "cpuset.cpus"), "0-3");
            assert_eq!(s.read("cpuset", level, "cpuset.mems"), "0");
        }
    }

    #[test]
    fn unlimited_values_and_untouched_fields() {
        let s = Scratch::new();
        s.kernel_mkdir("c");
        s.cg.create("c", &Resources::default()).unwrap();
        assert_eq!(
            s.read("pids", "c", "pids.max"),
            "max\n",
            "None leaves the default"
        );
        let res = Resources {
            memory_limit: Some(-1),
            cpu_quota: Some(-5),
            pids_limit: Some(0),
            ..Resources::default()
        };
        s.cg.update("c", &res).unwrap();
        assert_eq!(s.read("memory", "c", "memory.limit_in_bytes"), "-1");
        assert_eq!(s.read("cpu,cpuacct", "c", "cpu.cfs_quota_us"), "-1");
        assert_eq!(s.read("cpu,cpuacct", "c", "cpu.shares"), "1024\n");
        assert_eq!(s.read("pids", "c", "pids.max"), "max");
    }

    #[test]
    fn swap_skipped_without_accounting() {
        let s = Scratch::new();
        s.kernel_mkdir("c");
        fs::remove_file(s.root.join("memory/c/memory.memsw.limit_in_bytes")).unwrap();
        let res = Resources {
            memory_limit: Some(1 << 20),
            memory_swap_limit: Some(2 << 20),
            ..Resources::default()
        };
        s.cg.create("c", &res).unwrap();
        assert_eq!(s.read("memory", "c", "memory.limit_in_bytes"), "1048576");
        assert!(!s.root.join("memory/c/memory.memsw.limit_in_bytes").exists());
    }

    #[test]
    fn missing_controller_is_named() {
        let s = Scratch::new();
        s.kernel_mkdir("c");
        let mut mounts = s.cg.mounts().clone();
        mounts.remove("pids");
        let cg = Cgroupv1::new(mounts);
        let res = Resources {
            pids_limit: Some(5),
            ..Resources::default()
        };
        let err = cg.create("c", &res).unwrap_err();
        assert!(
            matches!(&err, Error::MissingController { controller, .. } if controller == "pids"),
            "{err}"
        );
    }

    #[test]
    fn device_rules_need_the_devices_controller_and_valid_rules() {
        let s = Scratch::new();
        s.kernel_mkdir("c");
        let deny_all = crate::cgroups::DeviceRule {
            allow: false,
            kind: 'a',
            major: None,
            minor: None,
            access: "rwm".into(),
        };
        let res = Resources {
            pids_limit: Some(5),
            devices: vec![deny_all.clone()],
            ..Resources::default()
        };
        let err = s.cg.update("c", &res).unwrap_err();
        assert!(
            matches!(&err, Error::MissingController { controller, .. } if controller == "devices"),
            "{err}"
        );
        assert_eq!(s.read("pids", "c", "pids.max"), "max\n", "nothing written");

        let mut bad = deny_all;
        bad.kind = 'x';
        let res = Resources {
            pids_limit: Some(5),
            devices: vec![bad],
            ..Resources::default()
        };
        let err = s.cg.update("c", &res).unwrap_err();
        assert!(err.to_string().contains("device type 'x'"), "{err}");
        assert_eq!(s.read("pids", "c", "pids.max"), "max\n", "nothing written");
    }

    #[test]
    fn add_process_writes_each_hierarchy_once() {
        let s = Scratch::new();
        s.kernel_mkdir("c");
        s.cg.add_process("c", 4242).unwrap();
        for hier in ["memory", "cpu,cpuacct", "cpuset", "pids", "freezer"] {
            assert_eq!(s.read(hier, "c", "cgroup.procs"), "4242", "{hier}");
        }
        assert_eq!(s.cg.procs("c").unwrap(), vec![4242]);
        assert_eq!(s.cg.dir("c"), s.root.join("memory/c"));
        assert_eq!(
            s.cg.controller_dir("cpuacct", "c"),
            Some(s.root.join("cpu,cpuacct/c"))
        );
    }

    #[test]
    fn stats_from_files() {
        let s = Scratch::new();
        s.kernel_mkdir("c");
        let w = |hier: &str, file: &str, content: &str| {
            fs::write(s.root.join(hier).join("c").join(file), content).unwrap()
        };
        w("cpu,cpuacct", "cpuacct.usage", "123456789\n");
        w("memory", "memory.usage_in_bytes", "10000\n");
        w(
            "memory",
            "memory.stat",
            "cache 0\ninactive_file 100\ntotal_cache 0\ntotal_inactive_file 3000\n",
        );
        w(
            "memory",
            "memory.oom_control",
            "oom_kill_disable 0\nunder_oom 0\noom_kill 2\n",
        );
        w("pids", "pids.current", "7\n");
        assert_eq!(
            s.cg.stats("c").unwrap(),
            Stats {
                cpu_usage_ns: 123_456_789,
                memory_usage_bytes: 10_000,
                memory_working_set_bytes: 7_000,
                oom_kills: 2,
                pids_current: 7,
            }
        );
        let err = s.cg.stats("gone").unwrap_err();
        assert!(err.to_string().contains("memory/gone"), "{err}");
    }

    #[test]
    fn remove_every_hierarchy_and_refuse_root() {
        let s = Scratch::new();
        for hier in ["memory", "cpu,cpuacct", "cpuset", "pids", "freezer"] {
            fs::create_dir_all(s.root.join(hier).join("berth/pod/c1")).unwrap();
            fs::create_dir_all(s.root.join(hier).join("berth/pod/c2")).unwrap();
        }
        assert_eq!(s.cg.children("berth/pod").unwrap(), vec!["c1", "c2"]);
        s.cg.remove("berth/pod").unwrap();
        for hier in ["memory", "cpu,cpuacct", "cpuset", "pids", "freezer"] {
            assert!(!s.root.join(hier).join("berth/pod").exists(), "{hier}");
            assert!(s.root.join(hier).join("berth").exists(), "{hier}");
        }
        assert!(!s.cg.exists("berth/pod"));
        s.cg.remove("berth/pod").unwrap();
        assert!(s.cg.remove("").is_err());
        assert!(s.cg.kill_all("/").is_err());
        assert!(s.cg.create("../x", &Resources::default()).is_err());
    }

    #[test]
    fn kill_all_on_an_empty_scratch_cgroup_thaws_and_returns() {
        let s = Scratch::new();
        s.kernel_mkdir("c/d");
        s.cg.kill_all("c").unwrap();
        assert_eq!(s.read("freezer", "c", "freezer.state"), "THAWED");
        assert_eq!(s.read("freezer", "c/d", "freezer.state"), "THAWED");
        s.cg.kill_all("missing").unwrap();
    }
}
