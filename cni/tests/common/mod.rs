//! Network namespaces for the crate's tests.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;

/// Named network namespaces, deleted on drop.
pub struct Namespaces(Vec<String>);

impl Namespaces {
    pub fn new(tag: &str, names: &[&str]) -> Namespaces {
        let all: Vec<String> = names
            .iter()
            .map(|n| format!("bt-{tag}-{}-{n}", std::process::id()))
            .collect();
        let ns = Namespaces(Vec::new());
        let mut ns = ns;
        for n in &all {
            let ok = Command::new("ip")
                .args(["netns", "add", n])
                .status()
                .unwrap()
                .success();
            assert!(ok, "ip netns add {n}");
            ns.0.push(n.clone());
        }
        ns
    }
    pub fn name(&self, i: usize) -> &str {
        &self.0[i]
    }
    pub fn path(&self, i: usize) -> PathBuf {
        Path::new("/run/netns").join(&self.0[i])
    }
}

impl Namespaces {
    /// Run a command inside namespace `i`; panics on failure.
    pub fn exec(&self, i: usize, args: &[&str]) {
        let out = Command::new("ip")
            .args(["netns", "exec", self.name(i)])
            .args(args)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Run `f` inside namespace `i`.
    pub fn run<T: Send>(
        &self,
        i: usize,
        f: impl FnOnce() -> Result<T, berth_cni::plugin::Error> + Send,
    ) -> T {
        let path = self.path(i);
        let ns = berth_cni::netns::open(&path).unwrap();
        berth_cni::netns::run_in(&ns, &path, f).unwrap()
    }
}

impl Drop for Namespaces {
    fn drop(&mut self) {
        for n in &self.0 {
            let _ = Command::new("ip").args(["netns", "del", n]).status();
        }
    }
}
