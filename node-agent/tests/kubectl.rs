//! The real kubectl 1.32 against the fake API server of `common::apiserver`, whose pod
//! subresources `exec` and `portforward` go straight into the agent's stream endpoints.
//!
//! Skipped (passing, with a note) when kubectl or curl is not on PATH.

mod common;

use std::path::PathBuf;
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{anyhow, bail, Context as _, Result};
use berth_node_agent::stream::fake::{FakeDialer, FakeExecBackend};
use berth_node_agent::stream::{ExecBackend, PortForwardDialer};
use common::apiserver::{api_server, ApiServer};
use common::{http_server, on_path, within};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::Command;

/// A kubeconfig and cache directory for one run.
struct Kubectl {
    dir: tempfile::TempDir,
    api: ApiServer,
}

impl Kubectl {
    async fn start(
        backend: Arc<dyn ExecBackend>,
        dialer: Arc<dyn PortForwardDialer>,
    ) -> Result<Self> {
        let api = api_server(backend, dialer).await?;
        let dir = tempfile::tempdir()?;
        let config = format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: fake\n  cluster:\n    server: https://{}\n    insecure-skip-tls-verify: true\nusers:\n- name: u\n  user:\n    token: faketoken\ncontexts:\n- name: c\n  context: {{cluster: fake, user: u, namespace: default}}\ncurrent-context: c\n",
            api.addr
        );
        std::fs::write(dir.path().join("config"), config)?;
        Ok(Self { dir, api })
    }

    fn command(&self, args: &[&str], env: &[(&str, &str)]) -> Command {
        let mut cmd = Command::new("kubectl");
        cmd.env("KUBECONFIG", self.dir.path().join("config"))
            .env("HOME", self.dir.path())
            .arg("--cache-dir")
            .arg(self.cache_dir())
            .args(args)
            .envs(env.iter().copied())
            .kill_on_drop(true);
        cmd
    }

    fn cache_dir(&self) -> PathBuf {
        self.dir.path().join("cache")
    }

    /// Runs kubectl to completion; returns (exit code, stdout, stderr).
    async fn run(
        &self,
        args: &[&str],
        env: &[(&str, &str)],
        stdin: Option<&str>,
    ) -> Result<(i32, String, String)> {
        let mut child = self
            .command(args, env)
            .stdin(if stdin.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .context("starting kubectl")?;
        if let Some(input) = stdin {
            let mut w = child.stdin.take().expect("piped stdin");
            w.write_all(input.as_bytes()).await?;
            drop(w);
        }
        let out = tokio::time::timeout(Duration::from_secs(60), child.wait_with_output())
            .await
            .map_err(|_| {
                anyhow!(
                    "kubectl {args:?} timed out; requests: {:#?}",
                    self.requests()
                )
            })??;
        Ok((
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        ))
    }

    fn requests(&self) -> Vec<String> {
        self.api.requests()
    }
}

#[allow(clippy::print_stderr)]
fn tools_present() -> bool {
    let present = on_path("kubectl") && on_path("curl");
    if !present {
        eprintln!("skipped: kubectl or curl is not on PATH");
    }
    present
}

const WEBSOCKETS: &[(&str, &str)] = &[];
const SPDY_EXEC: &[(&str, &str)] = &[("KUBECTL_REMOTE_COMMAND_WEBSOCKETS", "false")];
const SPDY_PORT_FORWARD: &[(&str, &str)] = &[("KUBECTL_PORT_FORWARD_WEBSOCKETS", "false")];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_exec_over_websocket_and_spdy() -> Result<()> {
    if !tools_present() {
        return Ok(());
    }
    let backend = Arc::new(FakeExecBackend::new());
    let k = Kubectl::start(backend.clone(), Arc::new(FakeDialer::new())).await?;
    for (transport, env) in [("websocket", WEBSOCKETS), ("spdy", SPDY_EXEC)] {
        let (code, out, err) = k
            .run(
                &[
                    "exec",
                    "web",
                    "--",
                    "sh",
                    "-c",
                    "echo out; echo err >&2; exit 3",
                ],
                env,
                None,
            )
            .await?;
        let ctx = || {
            format!(
                "{transport}: rc {code}, stdout {out:?}, stderr {err:?}, requests {:#?}",
                k.requests()
            )
        };
        if code != 3 || out != "out\n" || !err.starts_with("err\n") {
            bail!("kubectl exec: {}", ctx());
        }
        if !err.contains("command terminated with exit code 3") {
            bail!("kubectl exec exit message: {}", ctx());
        }

        let (code, out, err) = k
            .run(
                &["exec", "-i", "web", "--", "sh", "-c", "cat; echo done"],
                env,
                Some("hello\nworld\n"),
            )
            .await?;
        if code != 0 || out != "hello\nworld\ndone\n" {
            bail!(
                "kubectl exec -i over {transport}: rc {code}, stdout {out:?}, stderr {err:?}, requests {:#?}",
                k.requests()
            );
        }
    }
    // Which transport carried each: a websocket GET, then SPDY POSTs.
    let requests = k.requests();
    let upgrades: Vec<&String> = requests.iter().filter(|r| r.contains("/exec?")).collect();
    assert!(
        upgrades[0].starts_with("GET ")
            && upgrades[0].contains("\"websocket\"")
            && upgrades[0].ends_with("101 Switching Protocols"),
        "{upgrades:#?}"
    );
    assert!(
        upgrades.iter().any(|r| r.starts_with("POST ")
            && r.contains("\"SPDY/3.1\"")
            && r.ends_with("101 Switching Protocols")),
        "{upgrades:#?}"
    );
    assert_eq!(backend.calls().len(), 4);
    Ok(())
}

/// Starts `kubectl port-forward pod/web :80` and returns the local port it chose.
async fn port_forward(k: &Kubectl, env: &[(&str, &str)]) -> Result<(tokio::process::Child, u16)> {
    let mut child = k
        .command(&["port-forward", "pod/web", ":80"], env)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    let mut lines = BufReader::new(child.stdout.take().expect("piped stdout")).lines();
    // "Forwarding from 127.0.0.1:43117 -> 80"
    let port = within("kubectl port-forward to listen", async {
        while let Some(line) = lines.next_line().await? {
            if let Some(rest) = line.strip_prefix("Forwarding from 127.0.0.1:") {
                let port = rest.split(' ').next().unwrap_or("").parse::<u16>()?;
                return Ok::<u16, anyhow::Error>(port);
            }
        }
        bail!("kubectl port-forward ended before listening")
    })
    .await
    .with_context(|| format!("requests: {:#?}", k.requests()))??;
    // Keep draining its output so it never blocks on a full pipe.
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    Ok((child, port))
}

async fn curl(port: u16) -> Result<String> {
    let out = tokio::time::timeout(
        Duration::from_secs(30),
        Command::new("curl")
            .args([
                "-sS",
                "--max-time",
                "20",
                &format!("http://127.0.0.1:{port}/"),
            ])
            .kill_on_drop(true)
            .output(),
    )
    .await
    .map_err(|_| anyhow!("curl timed out"))??;
    if !out.status.success() {
        bail!("curl failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_port_forward_over_websocket_and_spdy() -> Result<()> {
    if !tools_present() {
        return Ok(());
    }
    let (web, _web) = http_server("hello through kubectl port-forward\n").await?;
    let dialer = Arc::new(FakeDialer::new().route(80, web));
    let k = Kubectl::start(Arc::new(FakeExecBackend::new()), dialer.clone()).await?;
    for (transport, env) in [("websocket", WEBSOCKETS), ("spdy", SPDY_PORT_FORWARD)] {
        let (mut child, port) = port_forward(&k, env).await?;
        // Two connections through one forwarding session.
        for _ in 0..2 {
            let body = curl(port)
                .await
                .with_context(|| format!("{transport}; requests: {:#?}", k.requests()))?;
            assert_eq!(body, "hello through kubectl port-forward\n", "{transport}");
        }
        child.kill().await?;
        let _ = child.wait().await;
    }
    assert_eq!(dialer.dialed(), [80, 80, 80, 80]);
    let requests = k.requests();
    let upgrades: Vec<&String> = requests
        .iter()
        .filter(|r| r.contains("/portforward"))
        .collect();
    assert!(
        upgrades[0].starts_with("GET ")
            && upgrades[0].contains("\"websocket\"")
            && upgrades[0].ends_with("101 Switching Protocols"),
        "{upgrades:#?}"
    );
    assert!(
        upgrades.iter().any(|r| r.starts_with("POST ")
            && r.contains("\"SPDY/3.1\"")
            && r.ends_with("101 Switching Protocols")),
        "{upgrades:#?}"
    );
    Ok(())
}
