//! An in-memory [`Cgroups`] that records the calls it gets, for tests of the code above the
//! seam.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Mutex, MutexGuard};

use super::{relative, Cgroups, Error, Resources, Result, Stats};

/// One call a [`FakeCgroups`] received (reads are not recorded).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FakeCall {
    Create(String, Resources),
    Update(String, Resources),
    AddProcess(String, i32),
    KillAll(String),
    Remove(String),
}

#[derive(Debug, Default)]
struct Group {
    res: Resources,
    procs: Vec<i32>,
    stats: Stats,
}

#[derive(Debug, Default)]
struct State {
    calls: Vec<FakeCall>,
    groups: BTreeMap<PathBuf, Group>,
}

/// Cgroups kept in memory: `create` makes a path and its parents, `kill_all` empties a
/// subtree, `stats` returns what [`FakeCgroups::set_stats`] stored.
#[derive(Debug)]
pub struct FakeCgroups {
    version: u8,
    state: Mutex<State>,
}

impl FakeCgroups {
    /// A fake that reports `version` (1 or 2).
    pub fn new(version: u8) -> Self {
        FakeCgroups {
            version,
            state: Mutex::new(State::default()),
        }
    }

    /// Every mutating call so far, in order.
    pub fn calls(&self) -> Vec<FakeCall> {
        self.lock().calls.clone()
    }

    /// The limits in force for `path`, merged over creates and updates.
    pub fn resources(&self, path: &str) -> Option<Resources> {
        let rel = relative(path, true).ok()?;
        self.lock().groups.get(&rel).map(|g| g.res.clone())
    }

    /// What `stats(path)` returns from now on (`pids_current` is the process count).
    pub fn set_stats(&self, path: &str, stats: Stats) {
        if let Ok(rel) = relative(path, true) {
            self.lock().groups.entry(rel).or_default().stats = stats;
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic in another test thread does not make the recorded state wrong.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

fn not_found(rel: PathBuf) -> Error {
    Error::Io {
        path: rel,
        source: std::io::Error::from(std::io::ErrorKind::NotFound),
    }
}

fn merge(into: &mut Resources, res: &Resources) {
    let Resources {
        memory_limit,
        memory_swap_limit,
        cpu_shares,
        cpu_quota,
        cpu_period,
        pids_limit,
        devices,
    } = res.clone();
    into.memory_limit = memory_limit.or(into.memory_limit);
    into.memory_swap_limit = memory_swap_limit.or(into.memory_swap_limit);
    into.cpu_shares = cpu_shares.or(into.cpu_shares);
    into.cpu_quota = cpu_quota.or(into.cpu_quota);
    into.cpu_period = cpu_period.or(into.cpu_period);
    into.pids_limit = pids_limit.or(into.pids_limit);
    if !devices.is_empty() {
        into.devices = devices;
    }
}

impl Cgroups for FakeCgroups {
    fn version(&self) -> u8 {
        self.version
    }

    fn create(&self, path: &str, res: &Resources) -> Result<()> {
        let rel = relative(path, false)?;
        let mut st = self.lock();
        st.calls
            .push(FakeCall::Create(path.to_string(), res.clone()));
        for dir in rel.ancestors().filter(|a| !a.as_os_str().is_empty()) {
            st.groups.entry(dir.to_path_buf()).or_default();
        }
        merge(&mut st.groups.entry(rel).or_default().res, res);
        Ok(())
    }

    fn update(&self, path: &str, res: &Resources) -> Result<()> {
        let rel = relative(path, false)?;
        let mut st = self.lock();
        st.calls
            .push(FakeCall::Update(path.to_string(), res.clone()));
        let group = st
            .groups
            .get_mut(&rel)
            .ok_or_else(|| not_found(rel.clone()))?;
        merge(&mut group.res, res);
        Ok(())
    }

    fn add_process(&self, path: &str, pid: i32) -> Result<()> {
        let rel = relative(path, false)?;
        let mut st = self.lock();
        st.calls.push(FakeCall::AddProcess(path.to_string(), pid));
        for group in st.groups.values_mut() {
            group.procs.retain(|p| *p != pid);
        }
        let group = st
            .groups
            .get_mut(&rel)
            .ok_or_else(|| not_found(rel.clone()))?;
        group.procs.push(pid);
        Ok(())
    }

    fn procs(&self, path: &str) -> Result<Vec<i32>> {
        let rel = relative(path, true)?;
        let st = self.lock();
        let group = st.groups.get(&rel).ok_or_else(|| not_found(rel.clone()))?;
        Ok(group.procs.clone())
    }

    fn kill_all(&self, path: &str) -> Result<()> {
        let rel = relative(path, false)?;
        let mut st = self.lock();
        st.calls.push(FakeCall::KillAll(path.to_string()));
        for (dir, group) in st.groups.iter_mut() {
            if dir.starts_with(&rel) {
                group.procs.clear();
            }
        }
        Ok(())
    }

    fn stats(&self, path: &str) -> Result<Stats> {
        let rel = relative(path, true)?;
        let st = self.lock();
        let group = st.groups.get(&rel).ok_or_else(|| not_found(rel.clone()))?;
        Ok(Stats {
            pids_current: group.procs.len() as u64,
            ..group.stats.clone()
        })
    }

    fn remove(&self, path: &str) -> Result<()> {
        let rel = relative(path, false)?;
        let mut st = self.lock();
        st.calls.push(FakeCall::Remove(path.to_string()));
        st.groups.retain(|dir, _| !dir.starts_with(&rel));
        Ok(())
    }

    fn exists(&self, path: &str) -> bool {
        relative(path, true).is_ok_and(|rel| self.lock().groups.contains_key(&rel))
    }

    fn children(&self, path: &str) -> Result<Vec<String>> {
        let rel = relative(path, true)?;
        let st = self.lock();
        Ok(st
            .groups
            .keys()
            .filter(|dir| dir.parent() == Some(rel.as_path()))
            .filter_map(|dir| Some(dir.file_name()?.to_string_lossy().into_owned()))
            .collect())
    }

    fn dir(&self, path: &str) -> PathBuf {
        PathBuf::from("/fake-cgroup").join(relative(path, true).unwrap_or_default())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_calls_and_tracks_groups() {
        let fake = FakeCgroups::new(2);
        let cg: &dyn Cgroups = &fake;
        let limits = Resources {
            memory_limit: Some(100),
            ..Resources::default()
        };
        cg.create("berth/pod/c", &limits).unwrap();
        cg.update(
            "berth/pod/c",
            &Resources {
                pids_limit: Some(5),
                ..Resources::default()
            },
        )
        .unwrap();
        cg.add_process("berth/pod/c", 10).unwrap();
        assert!(cg.exists("berth/pod"));
        assert_eq!(cg.children("berth").unwrap(), vec!["pod"]);
        assert_eq!(cg.procs("berth/pod/c").unwrap(), vec![10]);
        assert_eq!(cg.stats("berth/pod/c").unwrap().pids_current, 1);
        let res = fake.resources("berth/pod/c").unwrap();
        assert_eq!((res.memory_limit, res.pids_limit), (Some(100), Some(5)));
        cg.kill_all("berth/pod").unwrap();
        assert!(cg.procs("berth/pod/c").unwrap().is_empty());
        cg.remove("berth/pod").unwrap();
        assert!(!cg.exists("berth/pod/c") && cg.exists("berth"));
        assert!(cg.update("berth/pod/c", &limits).is_err());
        assert_eq!(
            fake.calls()[..3],
            [
                FakeCall::Create("berth/pod/c".into(), limits.clone()),
                FakeCall::Update(
                    "berth/pod/c".into(),
                    Resources {
                        pids_limit: Some(5),
                        ..Resources::default()
                    }
                ),
                FakeCall::AddProcess("berth/pod/c".into(), 10),
            ]
        );
    }
}
