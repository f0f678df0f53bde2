//! Network namespaces for the crate's tests.
#![allow(dead_code)]

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

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

/// What `berth-cni` printed for one command run in the node namespace `node`.
pub struct Out {
    pub ok: bool,
    pub json: serde_json::Value,
}

pub fn plugin(node: &str, command: &str, container: &str, netns: &Path, conf: &str) -> Out {
    let mut child = Command::new("ip")
        .args(["netns", "exec", node, env!("CARGO_BIN_EXE_berth-cni")])
        .env_clear()
        .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
        .env("CNI_COMMAND", command)
        .env("CNI_CONTAINERID", container)
        .env("CNI_NETNS", netns)
        .env("CNI_IFNAME", "eth0")
        .env("CNI_PATH", "/nonexistent")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(conf.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    Out {
        ok: out.status.success(),
        json: serde_json::from_str(text.trim()).unwrap_or(serde_json::Value::Null),
    }
}
