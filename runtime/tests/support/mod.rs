//! Shared fixtures for the runtime's root tests: the test images (built once per target
//! dir, under a lock, by `deploy/images/build.sh`) and a runtime in a scratch directory that
//! removes everything it made when dropped.
#![allow(dead_code)]

use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};

use berth_runtime::pod::{Runtime, RuntimeConfig};

#[path = "images.rs"]
mod images;
pub use images::images;

static N: AtomicUsize = AtomicUsize::new(0);

/// A runtime under a scratch root and its own cgroup parent.
pub struct TestRuntime {
    pub rt: Runtime,
    pub dir: tempfile::TempDir,
    pub cgroup_parent: String,
}

impl TestRuntime {
    pub fn new() -> TestRuntime {
        let dir = tempfile::Builder::new()
            .prefix("berth-rt-")
            .tempdir()
            .unwrap();
        let cgroup_parent = format!(
            "berth-test-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::SeqCst)
        );
        let rt = Runtime::open(config(dir.path(), &cgroup_parent)).unwrap();
        TestRuntime {
            rt,
            dir,
            cgroup_parent,
        }
    }

    /// Reopen the runtime (as an agent restart does).
    pub fn reopen(&mut self) {
        self.rt = Runtime::open(config(self.dir.path(), &self.cgroup_parent)).unwrap();
    }

    pub fn import(&self, name: &str) {
        self.rt.images().import(&images().join(name)).unwrap();
    }
}

pub fn config(root: &Path, cgroup_parent: &str) -> RuntimeConfig {
    let mut cfg = RuntimeConfig::new(root, vec![env!("CARGO_BIN_EXE_berth-runtime").into()]);
    cfg.cgroup_parent = cgroup_parent.into();
    cfg
}

impl Drop for TestRuntime {
    fn drop(&mut self) {
        if let Ok(sandboxes) = self.rt.list_sandboxes() {
            for s in sandboxes {
                let _ = self.rt.remove_sandbox(&s.id);
            }
        }
        let _ = self.rt.recover();
        let cg = self.rt.cgroups();
        if cg.exists(&self.cgroup_parent) {
            let _ = cg.kill_all(&self.cgroup_parent);
            let _ = cg.remove(&self.cgroup_parent);
        }
    }
}

/// Mount points under `dir` in our mount table.
pub fn mounts_under(dir: &Path) -> Vec<String> {
    let prefix = dir.to_string_lossy().to_string();
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
        .filter_map(|l| l.split(' ').nth(4).map(str::to_string))
        .filter(|m| m.starts_with(&prefix))
        .collect()
}

/// Processes whose command line mentions `needle`.
pub fn processes_mentioning(needle: &str) -> Vec<i32> {
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        if pid == std::process::id() as i32 {
            continue;
        }
        let cmd = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        if String::from_utf8_lossy(&cmd).contains(needle) {
            // Zombies have an empty cmdline; a match is a live process.
            out.push(pid);
        }
    }
    out
}
