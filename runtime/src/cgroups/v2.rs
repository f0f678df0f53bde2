//! cgroup v2: one unified tree; controllers are enabled top-down through each parent's
//! `cgroup.subtree_control`.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tracing::debug;

use super::bpf::{replace_filter, DeviceFilterHost, KernelBpf};
use super::devices::{self, filter_program};
use super::{
    child_names, dirs_depth_first, keyed, kill_until_empty, mkdir, parse_pids, parse_u64,
    read_optional, read_procs, read_string, relative, remove_tree, shares_to_weight, wait_for,
    write_file, write_limit, Cgroups, Error, Freezer, Resources, Result, Stats,
    DEFAULT_KILL_TIMEOUT,
};

/// The controllers enabled for our cgroups, when the parent offers them.
const CONTROLLERS: &[&str] = &["memory", "cpu", "pids"];

/// The CFS period the kernel uses when none is given, in microseconds.
const DEFAULT_PERIOD: u64 = 100_000;

/// How long a freeze may take to settle before killing goes ahead anyway.
const FREEZE_WAIT: Duration = Duration::from_millis(500);

/// cgroup v2 below one root (`/sys/fs/cgroup` on a pure v2 host).
///
/// Device rules become an eBPF device filter attached to the cgroup (v2 has no devices
/// controller); any cgroup2 directory takes one, whatever controllers it has.
#[derive(Debug, Clone)]
pub struct Cgroupv2 {
    root: PathBuf,
    kill_timeout: Duration,
    filters: Arc<dyn DeviceFilterHost>,
}

impl Cgroupv2 {
    pub fn new(root: PathBuf) -> Self {
        Cgroupv2 {
            root,
            kill_timeout: DEFAULT_KILL_TIMEOUT,
            filters: Arc::new(KernelBpf),
        }
    }

    /// Device filters go to `filters` instead of the kernel.
    #[cfg(test)]
    fn with_filters(mut self, filters: Arc<dyn DeviceFilterHost>) -> Self {
        self.filters = filters;
        self
    }

    /// How long `kill_all` waits for the cgroup to empty.
    pub fn with_kill_timeout(mut self, timeout: Duration) -> Self {
        self.kill_timeout = timeout;
        self
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Enable [`CONTROLLERS`] (those `dir` offers in `cgroup.controllers` and has not
    /// enabled yet) for `dir`'s children.
    fn enable_controllers(&self, dir: &Path) -> Result<()> {
        let available = read_string(&dir.join("cgroup.controllers"))?;
        let available: BTreeSet<&str> = available.split_whitespace().collect();
        let subtree = dir.join("cgroup.subtree_control");
        let enabled = read_string(&subtree)?;
        let enabled: BTreeSet<&str> = enabled
            .split_whitespace()
            .map(|c| c.trim_start_matches('+'))
            .collect();
        let wanted: Vec<String> = CONTROLLERS
            .iter()
            .filter(|c| available.contains(*c) && !enabled.contains(*c))
            .map(|c| format!("+{c}"))
            .collect();
        if wanted.is_empty() {
            return Ok(());
        }
        write_file(&subtree, &wanted.join(" "))
    }

    fn apply(&self, dir: &Path, res: &Resources) -> Result<()> {
        // Decided before anything is written, so bad rules change nothing.
        let devices = devices::policy(dir, &res.devices)?;
        if let Some(limit) = res.memory_limit {
            write_limit(dir, "memory.max", "memory", &max_or(limit))?;
        }
        if let Some(swap) = res.memory_swap_limit {
            let file = dir.join("memory.swap.max");
            if file.exists() {
                let memory = match res.memory_limit {
                    Some(m) => Some(m),
                    None => current_memory_max(dir)?,
                };
                let value = swap_max(memory, swap).map_err(|m| Error::invalid(&file, m))?;
                write_file(&file, &value)?;
            } else {
                debug!(dir = %dir.display(), "no swap accounting; memory_swap_limit skipped");
            }
        }
        if let Some(shares) = res.cpu_shares {
            let weight = shares_to_weight(shares).to_string();
            write_limit(dir, "cpu.weight", "cpu", &weight)?;
        }
        if res.cpu_quota.is_some() || res.cpu_period.is_some() {
            let current = match (res.cpu_quota, res.cpu_period) {
                (Some(_), Some(_)) => None,
                _ => read_optional(&dir.join("cpu.max"))?,
            };
            let value = cpu_max(current.as_deref(), res.cpu_quota, res.cpu_period);
            write_limit(dir, "cpu.max", "cpu", &value)?;
        }
        if let Some(limit) = res.pids_limit {
            let value = if limit <= 0 {
                "max".to_string()
            } else {
                limit.to_string()
            };
            write_limit(dir, "pids.max", "pids", &value)?;
        }
        if let Some(policy) = devices {
            replace_filter(&*self.filters, dir, &filter_program(&policy))?;
            debug!(dir = %dir.display(), %policy, "device filter in place");
        }
        Ok(())
    }

    fn existing_dir(&self, path: &str, allow_root: bool) -> Result<PathBuf> {
        let dir = self.root.join(relative(path, allow_root)?);
        if !dir.is_dir() {
            return Err(Error::io(
                dir,
                std::io::Error::from(std::io::ErrorKind::NotFound),
            ));
        }
        Ok(dir)
    }
}

/// `memory.max` style: a byte count, or `max` for a negative value.
fn max_or(v: i64) -> String {
    if v < 0 {
        "max".to_string()
    } else {
        v.to_string()
    }
}

/// The memory limit in force, `None` when unlimited.
fn current_memory_max(dir: &Path) -> Result<Option<i64>> {
    let file = dir.join("memory.max");
    let Some(content) = read_optional(&file)? else {
        return Ok(None);
    };
    match content.trim() {
        "max" => Ok(None),
        n => Ok(Some(i64::try_from(parse_u64(&file, n)?).map_err(|_| {
            Error::invalid(&file, format!("{n} is out of range"))
        })?)),
    }
}

/// v2 counts swap on its own: `memory.swap.max` is the v1-style memory+swap limit minus the
/// memory limit (runc's conversion).
fn swap_max(memory: Option<i64>, swap: i64) -> std::result::Result<String, String> {
    if swap < 0 {
        return Ok("max".to_string());
    }
    match memory {
        Some(m) if m >= 0 => {
            if swap < m {
                Err(format!(
                    "memory_swap_limit {swap} is below memory_limit {m}"
                ))
            } else {
                Ok((swap - m).to_string())
            }
        }
        _ => Err(format!("memory_swap_limit {swap} needs a memory limit")),
    }
}

/// The `cpu.max` line: `quota period` or `max period`. A field not given keeps its value in
/// `current` (the file's content), else its default.
fn cpu_max(current: Option<&str>, quota: Option<i64>, period: Option<u64>) -> String {
    let mut cur = current.unwrap_or("").split_whitespace();
    let cur_quota = cur.next().unwrap_or("max");
    let cur_period = cur.next().and_then(|p| p.parse().ok());
    let quota = match quota {
        Some(q) if q >= 0 => q.to_string(),
        Some(_) => "max".to_string(),
        None => cur_quota.to_string(),
    };
    let period = period.or(cur_period).unwrap_or(DEFAULT_PERIOD);
    format!("{quota} {period}")
}

/// `cgroup.freeze` of one cgroup, which freezes its descendants too.
struct V2Freezer {
    dir: PathBuf,
}

impl Freezer for V2Freezer {
    fn set_frozen(&self, frozen: bool) -> Result<()> {
        write_file(
            &self.dir.join("cgroup.freeze"),
            if frozen { "1" } else { "0" },
        )?;
        if frozen {
            let events = self.dir.join("cgroup.events");
            let settled = wait_for(FREEZE_WAIT, || {
                Ok(read_optional(&events)?.and_then(|s| keyed(&s, "frozen")) == Some(1))
            })?;
            if !settled {
                debug!(path = %self.dir.display(), "freeze did not settle; killing anyway");
            }
        }
        Ok(())
    }
}

impl Cgroups for Cgroupv2 {
    fn version(&self) -> u8 {
        2
    }

    fn create(&self, path: &str, res: &Resources) -> Result<()> {
        let rel = relative(path, false)?;
        debug!(cgroup = path, ?res, "creating v2 cgroup");
        let mut dir = self.root.clone();
        for comp in rel.components() {
            self.enable_controllers(&dir)?;
            dir.push(comp);
            mkdir(&dir)?;
        }
        self.apply(&dir, res)
    }

    fn update(&self, path: &str, res: &Resources) -> Result<()> {
        let dir = self.existing_dir(path, false)?;
        debug!(cgroup = path, ?res, "updating v2 cgroup");
        self.apply(&dir, res)
    }

    fn add_process(&self, path: &str, pid: i32) -> Result<()> {
        let dir = self.root.join(relative(path, true)?);
        write_file(&dir.join("cgroup.procs"), &pid.to_string())?;
        debug!(cgroup = path, pid, "process added");
        Ok(())
    }

    fn procs(&self, path: &str) -> Result<Vec<i32>> {
        let file = self.root.join(relative(path, true)?).join("cgroup.procs");
        parse_pids(&file, &read_string(&file)?)
    }

    fn kill_all(&self, path: &str) -> Result<()> {
        let dir = self.root.join(relative(path, false)?);
        if !dir.is_dir() {
            return Ok(());
        }
        debug!(cgroup = path, "killing every process");
        let list = || -> Result<Vec<i32>> {
            let mut pids = BTreeSet::new();
            for sub in dirs_depth_first(&dir)? {
                pids.extend(read_procs(&sub)?);
            }
            Ok(pids.into_iter().collect())
        };
        let kill_file = dir.join("cgroup.kill");
        if kill_file.exists() {
            // Linux 5.14+: the kernel kills the whole subtree, forks included; the loop
            // below only waits (and kills any straggler).
            write_file(&kill_file, "1")?;
            return kill_until_empty(&dir, self.kill_timeout, None, &list);
        }
        let freezer = dir
            .join("cgroup.freeze")
            .exists()
            .then(|| V2Freezer { dir: dir.clone() });
        kill_until_empty(
            &dir,
            self.kill_timeout,
            freezer.as_ref().map(|f| f as &dyn Freezer),
            &list,
        )
    }

    fn stats(&self, path: &str) -> Result<Stats> {
        let dir = self.existing_dir(path, true)?;
        let mut stats = Stats::default();
        if let Some(cpu) = read_optional(&dir.join("cpu.stat"))? {
            stats.cpu_usage_ns = keyed(&cpu, "usage_usec").unwrap_or(0).saturating_mul(1000);
        }
        let current = dir.join("memory.current");
        if let Some(usage) = read_optional(&current)? {
            let usage = parse_u64(&current, &usage)?;
            let inactive = read_optional(&dir.join("memory.stat"))?
                .and_then(|s| keyed(&s, "inactive_file"))
                .unwrap_or(0);
            stats.memory_usage_bytes = usage;
            stats.memory_working_set_bytes = usage.saturating_sub(inactive);
            // Hierarchical: kills in child cgroups count too.
            stats.oom_kills = read_optional(&dir.join("memory.events"))?
                .and_then(|s| keyed(&s, "oom_kill"))
                .unwrap_or(0);
        }
        let pids = dir.join("pids.current");
        if let Some(current) = read_optional(&pids)? {
            stats.pids_current = parse_u64(&pids, &current)?;
        }
        Ok(stats)
    }

    fn remove(&self, path: &str) -> Result<()> {
        let dir = self.root.join(relative(path, false)?);
        remove_tree(&dir)?;
        debug!(cgroup = path, "removed v2 cgroup");
        Ok(())
    }

    fn exists(&self, path: &str) -> bool {
        self.dir(path).is_dir()
    }

    fn children(&self, path: &str) -> Result<Vec<String>> {
        child_names(&self.dir(path))
    }

    fn dir(&self, path: &str) -> PathBuf {
        let rel = relative(path, true).unwrap_or_else(|_| {
            Path::new(path)
                .components()
                .filter(|c| matches!(c, std::path::Component::Normal(_)))
                .collect()
        });
        self.root.join(rel)
    }
}

#[cfg(test)]
mod tests {
    use super::super::bpf::{run, FakeBpf, Insn};
    use super::super::DeviceRule;
    use super::*;
    use std::fs;

    /// A scratch unified tree whose root offers `controllers`.
    struct Scratch {
        _tmp: tempfile::TempDir,
        root: PathBuf,
        cg: Cgroupv2,
    }

    impl Scratch {
        fn new(controllers: &str) -> Self {
            let tmp = tempfile::tempdir().unwrap();
            let root = tmp.path().to_path_buf();
            fs::write(root.join("cgroup.controllers"), controllers).unwrap();
            fs::write(root.join("cgroup.subtree_control"), "").unwrap();
            Scratch {
                cg: Cgroupv2::new(root.clone()),
                root,
                _tmp: tmp,
            }
        }

        /// Make `rel` and its parents as the kernel would, each offering `controllers`.
        fn kernel_mkdir(&self, rel: &str, controllers: &str) {
            let mut dir = self.root.clone();
            for comp in Path::new(rel).components() {
                dir.push(comp);
                fs::create_dir_all(&dir).unwrap();
                let files = [
                    ("cgroup.controllers", controllers),
                    ("cgroup.subtree_control", ""),
                    ("cgroup.procs", ""),
                    ("cgroup.events", "populated 0\nfrozen 0\n"),
                    ("cgroup.freeze", "0\n"),
                    ("cpu.stat", "usage_usec 0\n"),
                    ("memory.max", "max\n"),
                    ("memory.swap.max", "max\n"),
                    ("memory.current", "0\n"),
                    ("memory.stat", ""),
                    ("memory.events", "oom 0\noom_kill 0\n"),
                    ("cpu.weight", "100\n"),
                    ("cpu.max", "max 100000\n"),
                    ("pids.max", "max\n"),
                    ("pids.current", "0\n"),
                ];
                for (f, content) in files {
                    fs::write(dir.join(f), content).unwrap();
                }
            }
        }

        fn read(&self, rel: &str, file: &str) -> String {
            fs::read_to_string(self.root.join(rel).join(file)).unwrap()
        }
    }

    #[test]
    fn create_enables_controllers_and_writes_limits() {
        let s = Scratch::new("cpuset cpu io memory hugetlb pids rdma");
        s.kernel_mkdir("berth/pod/c1", "cpuset cpu io memory pids");
        let res = Resources {
            memory_limit: Some(64 << 20),
            memory_swap_limit: Some(96 << 20),
            cpu_shares: Some(1024),
            cpu_quota: Some(50_000),
            cpu_period: Some(200_000),
            pids_limit: Some(20),
            ..Resources::default()
        };
        s.cg.create("berth/pod/c1", &res).unwrap();
        for parent in ["", "berth", "berth/pod"] {
            assert_eq!(
                s.read(parent, "cgroup.subtree_control"),
                "+memory +cpu +pids",
                "{parent:?}"
            );
        }
        assert_eq!(s.read("berth/pod/c1", "cgroup.subtree_control"), "");
        let c = "berth/pod/c1";
        assert_eq!(s.read(c, "memory.max"), "67108864");
        assert_eq!(s.read(c, "memory.swap.max"), (32u64 << 20).to_string());
        assert_eq!(s.read(c, "cpu.weight"), "39");
        assert_eq!(s.read(c, "cpu.max"), "50000 200000");
        assert_eq!(s.read(c, "pids.max"), "20");
    }

    #[test]
    fn only_offered_and_not_yet_enabled_controllers_are_enabled() {
        let s = Scratch::new("cpu memory");
        fs::write(s.root.join("cgroup.subtree_control"), "memory\n").unwrap();
        s.kernel_mkdir("c", "cpu memory");
        s.cg.create("c", &Resources::default()).unwrap();
        assert_eq!(s.read("", "cgroup.subtree_control"), "+cpu");

        let s = Scratch::new("cpu memory pids");
        fs::write(s.root.join("cgroup.subtree_control"), "cpu memory pids\n").unwrap();
        s.kernel_mkdir("c", "cpu memory pids");
        s.cg.create("c", &Resources::default()).unwrap();
        assert_eq!(
            s.read("", "cgroup.subtree_control"),
            "cpu memory pids\n",
            "nothing to write"
        );
    }

    #[test]
    fn unlimited_quota_and_memory_are_max() {
        let s = Scratch::new("cpu memory pids");
        s.kernel_mkdir("c", "cpu memory pids");
        let res = Resources {
            memory_limit: Some(-1),
            memory_swap_limit: Some(-1),
            cpu_quota: Some(-1),
            cpu_period: Some(100_000),
            pids_limit: Some(-1),
            ..Resources::default()
        };
        s.cg.create("c", &res).unwrap();
        assert_eq!(s.read("c", "memory.max"), "max");
        assert_eq!(s.read("c", "memory.swap.max"), "max");
        assert_eq!(s.read("c", "cpu.max"), "max 100000");
        assert_eq!(s.read("c", "pids.max"), "max");
        assert_eq!(
            s.read("c", "cpu.weight"),
            "100\n",
            "None leaves the default"
        );
    }

    #[test]
    fn cpu_max_keeps_the_field_not_given() {
        assert_eq!(cpu_max(None, Some(25_000), None), "25000 100000");
        assert_eq!(
            cpu_max(Some("max 50000\n"), Some(25_000), None),
            "25000 50000"
        );
        assert_eq!(
            cpu_max(Some("30000 50000\n"), None, Some(10_000)),
            "30000 10000"
        );
        assert_eq!(cpu_max(Some("30000 50000\n"), Some(-1), None), "max 50000");
        assert_eq!(cpu_max(None, None, Some(20_000)), "max 20000");
    }

    #[test]
    fn swap_is_the_excess_over_memory() {
        assert_eq!(swap_max(Some(100), 100).unwrap(), "0");
        assert_eq!(swap_max(Some(100), 250).unwrap(), "150");
        assert_eq!(swap_max(None, -1).unwrap(), "max");
        assert!(swap_max(Some(100), 50).is_err());
        assert!(swap_max(None, 50).is_err());
        assert!(swap_max(Some(-1), 50).is_err());

        // An update of swap alone uses the memory limit already set.
        let s = Scratch::new("cpu memory pids");
        s.kernel_mkdir("c", "cpu memory pids");
        fs::write(s.root.join("c/memory.max"), "1000\n").unwrap();
        let res = Resources {
            memory_swap_limit: Some(1500),
            ..Resources::default()
        };
        s.cg.update("c", &res).unwrap();
        assert_eq!(s.read("c", "memory.swap.max"), "500");
        fs::write(s.root.join("c/memory.max"), "max\n").unwrap();
        let err = s.cg.update("c", &res).unwrap_err();
        assert!(err.to_string().contains("memory.swap.max"), "{err}");
    }

    #[test]
    fn limit_on_a_disabled_controller_is_named() {
        let s = Scratch::new("memory");
        s.kernel_mkdir("c", "memory");
        fs::remove_file(s.root.join("c/pids.max")).unwrap();
        let res = Resources {
            pids_limit: Some(10),
            ..Resources::default()
        };
        let err = s.cg.create("c", &res).unwrap_err();
        assert!(
            matches!(&err, Error::MissingController { controller, .. } if controller == "pids"),
            "{err}"
        );
        let err = s.cg.update("gone", &res).unwrap_err();
        assert!(err.to_string().contains("gone"), "{err}");
    }

    #[test]
    fn stats_from_files() {
        let s = Scratch::new("cpu memory pids");
        s.kernel_mkdir("c", "cpu memory pids");
        let w =
            |file: &str, content: &str| fs::write(s.root.join("c").join(file), content).unwrap();
        w(
            "cpu.stat",
            "usage_usec 1500\nuser_usec 1000\nsystem_usec 500\n",
        );
        w("memory.current", "50000\n");
        w(
            "memory.stat",
            "anon 100\nfile 200\ninactive_file 8000\nactive_file 3\n",
        );
        w(
            "memory.events",
            "low 0\nhigh 0\nmax 12\noom 1\noom_kill 1\noom_group_kill 0\n",
        );
        w("pids.current", "3\n");
        assert_eq!(
            s.cg.stats("c").unwrap(),
            Stats {
                cpu_usage_ns: 1_500_000,
                memory_usage_bytes: 50_000,
                memory_working_set_bytes: 42_000,
                oom_kills: 1,
                pids_current: 3,
            }
        );
        // Controllers not enabled read as zero.
        for f in ["memory.current", "pids.current"] {
            fs::remove_file(s.root.join("c").join(f)).unwrap();
        }
        let st = s.cg.stats("c").unwrap();
        assert_eq!(
            (st.memory_usage_bytes, st.pids_current, st.oom_kills),
            (0, 0, 0)
        );
        assert!(s.cg.stats("gone").is_err());
    }

    fn devices(extra: &[(i64, i64)]) -> Resources {
        let mut rules = vec![DeviceRule {
            allow: false,
            kind: 'a',
            major: None,
            minor: None,
            access: "rwm".into(),
        }];
        rules.extend(extra.iter().map(|&(major, minor)| DeviceRule {
            allow: true,
            kind: 'c',
            major: Some(major),
            minor: Some(minor),
            access: "rwm".into(),
        }));
        Resources {
            devices: rules,
            ..Resources::default()
        }
    }

    /// Whether `prog` lets a process read the char device `major:minor`.
    fn reads(prog: &[Insn], major: u32, minor: u32) -> bool {
        run(prog, [(2 << 16) | 2, major, minor]) == Some(1)
    }

    #[test]
    fn device_rules_become_one_filter_replaced_on_update() {
        let s = Scratch::new("cpu memory pids");
        s.kernel_mkdir("c", "cpu memory pids");
        let fake = Arc::new(FakeBpf::default());
        let cg = s.cg.clone().with_filters(fake.clone());
        let dir = s.root.join("c");

        cg.create("c", &devices(&[(1, 3)])).unwrap();
        let progs = fake.programs(&dir);
        assert_eq!(progs.len(), 1);
        assert!(reads(&progs[0].1, 1, 3) && !reads(&progs[0].1, 1, 5));

        cg.update("c", &devices(&[(1, 3), (1, 5)])).unwrap();
        let progs = fake.programs(&dir);
        assert_eq!(progs.len(), 1, "the old filter is gone");
        assert!(reads(&progs[0].1, 1, 3) && reads(&progs[0].1, 1, 5));
        let d = dir.display();
        assert_eq!(
            fake.calls(),
            [
                format!("attach {d} 1"),
                format!("attach {d} 2"),
                format!("detach {d} 1")
            ]
        );

        // No rules: the filter stays as it is.
        let pids = Resources {
            pids_limit: Some(5),
            ..Resources::default()
        };
        cg.update("c", &pids).unwrap();
        assert_eq!(fake.calls().len(), 3);

        // Bad rules: refused before anything is written.
        let mut bad = devices(&[(1, 3)]);
        bad.devices[1].access = "rwx".into();
        bad.pids_limit = Some(7);
        let err = cg.update("c", &bad).unwrap_err();
        assert!(matches!(err, Error::Invalid { .. }), "{err}");
        assert!(err.to_string().contains("device rule 1"), "{err}");
        assert_eq!(s.read("c", "pids.max"), "5");
        assert_eq!(fake.calls().len(), 3);
    }

    #[test]
    fn procs_kill_remove_and_children() {
        let s = Scratch::new("cpu memory pids");
        s.kernel_mkdir("berth/a", "cpu memory pids");
        s.cg.add_process("berth/a", 77).unwrap();
        assert_eq!(s.read("berth/a", "cgroup.procs"), "77");
        assert_eq!(s.cg.procs("berth/a").unwrap(), vec![77]);
        fs::write(s.root.join("berth/a/cgroup.procs"), "").unwrap();
        // No cgroup.kill here: the freeze path runs and thaws again.
        fs::write(
            s.root.join("berth/cgroup.events"),
            "populated 0\nfrozen 1\n",
        )
        .unwrap();
        s.cg.kill_all("berth").unwrap();
        assert_eq!(s.read("berth", "cgroup.freeze"), "0");
        fs::write(s.root.join("berth/a/cgroup.kill"), "").unwrap();
        s.cg.kill_all("berth/a").unwrap();
        assert_eq!(s.read("berth/a", "cgroup.kill"), "1");

        // A process that never goes away: a clear error naming the cgroup and the pid.
        fs::write(s.root.join("berth/a/cgroup.procs"), "2147483647\n").unwrap();
        let cg = s.cg.clone().with_kill_timeout(Duration::from_millis(50));
        let err = cg.kill_all("berth").unwrap_err();
        assert!(
            matches!(&err, Error::KillTimeout { pids, .. } if pids == &[i32::MAX]),
            "{err}"
        );
        assert!(err.to_string().contains("berth"), "{err}");
        assert_eq!(
            s.read("berth", "cgroup.freeze"),
            "0",
            "thawed after giving up"
        );

        let bare = tempfile::tempdir().unwrap();
        fs::create_dir_all(bare.path().join("berth/x/y")).unwrap();
        fs::create_dir_all(bare.path().join("berth/z")).unwrap();
        let cg = Cgroupv2::new(bare.path().to_path_buf());
        assert_eq!(cg.children("berth").unwrap(), vec!["x", "z"]);
        assert!(cg.children("nothing").unwrap().is_empty());
        cg.remove("berth/x").unwrap();
        assert!(!cg.exists("berth/x") && cg.exists("berth/z"));
        cg.remove("berth/x").unwrap();
        assert!(cg.remove("/").is_err());
        assert_eq!(cg.dir("berth/../etc"), bare.path().join("berth/etc"));
    }
}
