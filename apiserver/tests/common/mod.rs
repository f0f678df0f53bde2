//! A control plane in this process for API tests: a single store member and the HTTPS API on
//! free loopback ports, in a temporary directory removed on drop.

#![allow(dead_code)]

pub mod agent;

pub use berth_testkit::free_port;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use berth_apiserver::{ControlPlane, ServerArgs};

pub struct Cluster {
    pub cp: Option<ControlPlane>,
    pub dir: tempfile::TempDir,
    pub args: ServerArgs,
}

impl Cluster {
    pub async fn start() -> Self {
        Self::start_with(|_| {}).await
    }

    pub async fn start_with(tweak: impl FnOnce(&mut ServerArgs)) -> Self {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_test_writer()
            .try_init();
        let dir = tempfile::tempdir().unwrap();
        let mut args = ServerArgs {
            listen: format!("127.0.0.1:{}", free_port()).parse().unwrap(),
            store_client_url: format!("http://127.0.0.1:{}", free_port()),
            store_peer_url: format!("http://127.0.0.1:{}", free_port()),
            ..ServerArgs::new(dir.path().join("data"))
        };
        tweak(&mut args);
        let cp = ControlPlane::start(args.clone()).await.unwrap();
        Self {
            cp: Some(cp),
            dir,
            args,
        }
    }

    pub fn cp(&self) -> &ControlPlane {
        self.cp.as_ref().unwrap()
    }

    pub fn kubeconfig(&self) -> PathBuf {
        self.cp().kubeconfig.clone()
    }

    pub fn url(&self) -> String {
        format!("https://127.0.0.1:{}", self.cp().addr.port())
    }

    /// Runs the real kubectl against this cluster, with a private cache directory.
    pub fn kubectl(&self, args: &[&str]) -> Output {
        kubectl_in(&self.kubeconfig(), self.dir.path(), args, None)
    }

    pub fn kubectl_stdin(&self, args: &[&str], stdin: &str) -> Output {
        kubectl_in(&self.kubeconfig(), self.dir.path(), args, Some(stdin))
    }

    /// kubectl that must succeed; returns stdout.
    pub fn kubectl_ok(&self, args: &[&str]) -> String {
        let out = self.kubectl(args);
        assert!(
            out.status.success(),
            "kubectl {args:?} failed: {}\n{}",
            String::from_utf8_lossy(&out.stderr),
            String::from_utf8_lossy(&out.stdout)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    /// Stops the control plane and starts it again on the same directory and ports.
    pub async fn restart(mut self) -> Self {
        if let Some(cp) = self.cp.take() {
            cp.shutdown().await;
        }
        self.cp = Some(ControlPlane::start(self.args.clone()).await.unwrap());
        self
    }

    pub async fn stop(mut self) {
        if let Some(cp) = self.cp.take() {
            cp.shutdown().await;
        }
    }
}

pub fn kubectl_in(kubeconfig: &Path, dir: &Path, args: &[&str], stdin: Option<&str>) -> Output {
    use std::io::Write;
    let mut cmd = Command::new("kubectl");
    cmd.env("KUBECONFIG", kubeconfig)
        .env("HOME", dir)
        .arg("--cache-dir")
        .arg(dir.join("kubectl-cache"))
        .args(args)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let mut child = cmd.spawn().expect("kubectl is installed");
    if let Some(input) = stdin {
        child
            .stdin
            .take()
            .unwrap()
            .write_all(input.as_bytes())
            .unwrap();
    } else {
        drop(child.stdin.take());
    }
    child.wait_with_output().unwrap()
}

pub fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p
}
