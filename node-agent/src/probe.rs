//! Liveness, readiness and startup probes (exec, httpGet, tcpSocket) with all their timing
//! fields. Each probe of a running container is a task; results land in a shared table
//! keyed by container id, and every change wakes the pod's worker. The startup probe runs
//! first; liveness and readiness begin once it has passed.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use k8s_openapi::api::core::v1::{Container, Probe};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::Notify;
use tokio::task::JoinHandle;

use crate::pod::plan::{ProbeFailure, ProbeState};

/// Runs a command in a container for exec probes: (exit code, output).
#[async_trait::async_trait]
pub trait Exec: Send + Sync {
    async fn exec(
        &self,
        container_id: &str,
        command: &[String],
        timeout: Duration,
    ) -> std::io::Result<(i32, String)>;
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Liveness,
    Readiness,
    Startup,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Liveness => "Liveness",
            Kind::Readiness => "Readiness",
            Kind::Startup => "Startup",
        }
    }
}

/// The outcome of one probe run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Success,
    Failure(String),
}

/// Where a container's probes go.
#[derive(Clone)]
pub struct Target {
    /// The address for httpGet and tcpSocket without an explicit host: the pod IP.
    pub ip: String,
    pub exec: Arc<dyn Exec>,
    /// Called with (probe kind, message) on every failed run, for the Unhealthy event.
    pub on_failure: Arc<dyn Fn(Kind, String) + Send + Sync>,
}

/// The probe table of the node.
#[derive(Default)]
pub struct Probes {
    states: Arc<Mutex<BTreeMap<String, ProbeState>>>,
    tasks: Mutex<HashMap<String, Vec<JoinHandle<()>>>>,
}

impl std::fmt::Debug for Probes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Probes").finish_non_exhaustive()
    }
}

fn secs(v: Option<i32>, default: i32) -> Duration {
    Duration::from_secs(v.unwrap_or(default).max(0) as u64)
}

impl Probes {
    /// Results for these containers (only those with probes appear).
    pub fn snapshot(&self) -> BTreeMap<String, ProbeState> {
        self.states.lock().expect("probe table").clone()
    }

    pub fn is_probing(&self, id: &str) -> bool {
        self.tasks.lock().expect("probe tasks").contains_key(id)
    }

    /// Start the probes of container `c`, running as `id`. `was` is what the pod's status
    /// last said (ready, started) of this very container, so a restarted agent does not
    /// flip a ready container to unready while its first probe is pending.
    pub fn start(
        &self,
        id: &str,
        c: &Container,
        target: Target,
        wake: Arc<Notify>,
        was: (bool, bool),
    ) {
        if c.liveness_probe.is_none() && c.readiness_probe.is_none() && c.startup_probe.is_none() {
            return;
        }
        let mut tasks = self.tasks.lock().expect("probe tasks");
        if tasks.contains_key(id) {
            return;
        }
        self.states.lock().expect("probe table").insert(
            id.to_string(),
            ProbeState {
                ready: c.readiness_probe.is_none() || was.0,
                started: c.startup_probe.is_none() || was.1,
                failed: None,
            },
        );
        let started_before = was.1;
        let run = Runner {
            id: id.to_string(),
            container: c.clone(),
            target,
            states: self.states.clone(),
            wake,
        };
        let handles = match &c.startup_probe {
            Some(p) if !started_before => vec![tokio::spawn(run.clone().startup(p.clone()))],
            _ => run.clone().after_startup(),
        };
        tasks.insert(id.to_string(), handles);
    }

    /// Stop a container's probes and forget its results.
    pub fn stop(&self, id: &str) {
        if let Some(handles) = self.tasks.lock().expect("probe tasks").remove(id) {
            for h in handles {
                h.abort();
            }
        }
        self.states.lock().expect("probe table").remove(id);
    }
}

#[derive(Clone)]
struct Runner {
    id: String,
    container: Container,
    target: Target,
    states: Arc<Mutex<BTreeMap<String, ProbeState>>>,
    wake: Arc<Notify>,
}

impl Runner {
    fn update(&self, f: impl FnOnce(&mut ProbeState)) {
        let mut states = self.states.lock().expect("probe table");
        let Some(s) = states.get_mut(&self.id) else {
            return;
        };
        let before = *s;
        f(s);
        if *s != before {
            self.wake.notify_one();
        }
    }

    fn after_startup(self) -> Vec<JoinHandle<()>> {
        let mut out = Vec::new();
        if let Some(p) = self.container.liveness_probe.clone() {
            out.push(tokio::spawn(self.clone().repeat(Kind::Liveness, p)));
        }
        if let Some(p) = self.container.readiness_probe.clone() {
            out.push(tokio::spawn(self.clone().repeat(Kind::Readiness, p)));
        }
        out
    }

    async fn startup(self, p: Probe) {
        let failures = self.repeat_until(Kind::Startup, &p).await;
        if failures {
            self.update(|s| s.failed = Some(ProbeFailure::Startup));
            return;
        }
        self.update(|s| s.started = true);
        // The liveness and readiness tasks outlive this one; they stop with the container.
        for h in self.clone().after_startup() {
            // Detached: aborting the startup task does not stop them, but `stop` removes
            // the state they write to and they end when their container is gone.
            drop(h);
        }
    }

    /// Run a startup probe until it passes (false) or fails for good (true).
    async fn repeat_until(&self, kind: Kind, p: &Probe) -> bool {
        tokio::time::sleep(secs(p.initial_delay_seconds, 0)).await;
        let threshold = p.failure_threshold.unwrap_or(3).max(1);
        let mut failures = 0;
        loop {
            match self.once(kind, p).await {
                Outcome::Success => return false,
                Outcome::Failure(msg) => {
                    failures += 1;
                    (self.target.on_failure)(kind, msg);
                    if failures >= threshold {
                        return true;
                    }
                }
            }
            tokio::time::sleep(secs(p.period_seconds, 10)).await;
            if !self
                .states
                .lock()
                .expect("probe table")
                .contains_key(&self.id)
            {
                return false;
            }
        }
    }

    async fn repeat(self, kind: Kind, p: Probe) {
        tokio::time::sleep(secs(p.initial_delay_seconds, 0)).await;
        let fail_at = p.failure_threshold.unwrap_or(3).max(1);
        let pass_at = p.success_threshold.unwrap_or(1).max(1);
        let (mut failures, mut successes) = (0, 0);
        loop {
            if !self
                .states
                .lock()
                .expect("probe table")
                .contains_key(&self.id)
            {
                return;
            }
            match self.once(kind, &p).await {
                Outcome::Success => {
                    failures = 0;
                    successes += 1;
                    if kind == Kind::Readiness && successes >= pass_at {
                        self.update(|s| s.ready = true);
                    }
                }
                Outcome::Failure(msg) => {
                    successes = 0;
                    failures += 1;
                    (self.target.on_failure)(kind, msg);
                    if failures >= fail_at {
                        match kind {
                            Kind::Readiness => self.update(|s| s.ready = false),
                            _ => {
                                self.update(|s| s.failed = Some(ProbeFailure::Liveness));
                                return;
                            }
                        }
                    }
                }
            }
            tokio::time::sleep(secs(p.period_seconds, 10)).await;
        }
    }

    async fn once(&self, kind: Kind, p: &Probe) -> Outcome {
        let timeout = secs(p.timeout_seconds, 1).max(Duration::from_secs(1));
        let out = run_probe(p, &self.container, &self.id, &self.target, timeout).await;
        if let Outcome::Failure(m) = &out {
            tracing::debug!(container = %self.id, probe = kind.name(), message = %m, "probe failed");
        }
        out
    }
}

fn port(p: &IntOrString, c: &Container) -> Result<u16, String> {
    match p {
        IntOrString::Int(n) => u16::try_from(*n).map_err(|_| format!("invalid port {n}")),
        IntOrString::String(name) => c
            .ports
            .iter()
            .flatten()
            .find(|cp| cp.name.as_deref() == Some(name))
            .map(|cp| cp.container_port as u16)
            .ok_or_else(|| format!("no container port named {name:?}")),
    }
}

/// One run of probe `p` against container `c` (id `id`).
pub async fn run_probe(
    p: &Probe,
    c: &Container,
    id: &str,
    target: &Target,
    timeout: Duration,
) -> Outcome {
    if let Some(e) = &p.exec {
        let cmd = e.command.clone().unwrap_or_default();
        return match target.exec.exec(id, &cmd, timeout).await {
            Ok((0, _)) => Outcome::Success,
            Ok((code, out)) => Outcome::Failure(if out.trim().is_empty() {
                format!("command {cmd:?} exited with {code}")
            } else {
                out.trim().to_string()
            }),
            Err(e) => Outcome::Failure(format!("command {cmd:?}: {e}")),
        };
    }
    if let Some(h) = &p.http_get {
        let port = match port(&h.port, c) {
            Ok(p) => p,
            Err(e) => return Outcome::Failure(e),
        };
        let host = h.host.clone().unwrap_or_else(|| target.ip.clone());
        if h.scheme.as_deref() == Some("HTTPS") {
            return Outcome::Failure("HTTPS probes are not supported yet".into());
        }
        let path = h.path.clone().unwrap_or_else(|| "/".into());
        let headers: Vec<(String, String)> = h
            .http_headers
            .iter()
            .flatten()
            .map(|h| (h.name.clone(), h.value.clone()))
            .collect();
        return match tokio::time::timeout(timeout, http_get(&host, port, &path, &headers)).await {
            Ok(Ok(code)) if (200..400).contains(&code) => Outcome::Success,
            Ok(Ok(code)) => Outcome::Failure(format!("HTTP probe failed with statuscode: {code}")),
            Ok(Err(e)) => Outcome::Failure(format!("Get \"http://{host}:{port}{path}\": {e}")),
            Err(_) => Outcome::Failure(format!(
                "Get \"http://{host}:{port}{path}\": context deadline exceeded (Client.Timeout exceeded while awaiting headers)"
            )),
        };
    }
    if let Some(t) = &p.tcp_socket {
        let port = match port(&t.port, c) {
            Ok(p) => p,
            Err(e) => return Outcome::Failure(e),
        };
        let host = t.host.clone().unwrap_or_else(|| target.ip.clone());
        return match tokio::time::timeout(
            timeout,
            tokio::net::TcpStream::connect((host.as_str(), port)),
        )
        .await
        {
            Ok(Ok(_)) => Outcome::Success,
            Ok(Err(e)) => Outcome::Failure(format!("dial tcp {host}:{port}: {e}")),
            Err(_) => Outcome::Failure(format!("dial tcp {host}:{port}: i/o timeout")),
        };
    }
    Outcome::Failure("the probe has no handler (exec, httpGet or tcpSocket)".into())
}

/// A plain HTTP/1.1 GET; returns the status code.
async fn http_get(
    host: &str,
    port: u16,
    path: &str,
    headers: &[(String, String)],
) -> std::io::Result<u16> {
    let mut s = tokio::net::TcpStream::connect((host, port)).await?;
    let mut req = format!(
        "GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nUser-Agent: kube-probe/1.32\r\nAccept: */*\r\nConnection: close\r\n"
    );
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes()).await?;
    let mut buf = Vec::with_capacity(256);
    let mut chunk = [0u8; 256];
    while !buf.windows(2).any(|w| w == b"\r\n") {
        let n = s.read(&mut chunk).await?;
        if n == 0 {
            break;
        }
        buf.extend_from_slice(&chunk[..n]);
        if buf.len() > 8192 {
            break;
        }
    }
    let line = String::from_utf8_lossy(&buf);
    line.split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| {
            std::io::Error::new(std::io::ErrorKind::InvalidData, "malformed HTTP response")
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{HTTPGetAction, TCPSocketAction};

    struct NoExec;
    #[async_trait::async_trait]
    impl Exec for NoExec {
        async fn exec(&self, _: &str, _: &[String], _: Duration) -> std::io::Result<(i32, String)> {
            Ok((1, "no".into()))
        }
    }

    fn target() -> Target {
        Target {
            ip: "127.0.0.1".into(),
            exec: Arc::new(NoExec),
            on_failure: Arc::new(|_, _| {}),
        }
    }

    async fn server(status: &'static str) -> u16 {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = l.local_addr().unwrap().port();
        tokio::spawn(async move {
            while let Ok((mut s, _)) = l.accept().await {
                let mut buf = [0u8; 1024];
                let _ = s.read(&mut buf).await;
                let _ = s
                    .write_all(format!("HTTP/1.1 {status}\r\nContent-Length: 0\r\n\r\n").as_bytes())
                    .await;
            }
        });
        port
    }

    #[tokio::test]
    async fn http_tcp_and_exec_probes_report_success_and_failure() {
        let ok = server("200 OK").await;
        let bad = server("500 Internal Server Error").await;
        let c = Container {
            name: "app".into(),
            ports: Some(vec![k8s_openapi::api::core::v1::ContainerPort {
                name: Some("http".into()),
                container_port: ok as i32,
                ..Default::default()
            }]),
            ..Default::default()
        };
        let http = |port: IntOrString| Probe {
            http_get: Some(HTTPGetAction {
                port,
                path: Some("/healthz".into()),
                ..Default::default()
            }),
            ..Default::default()
        };
        let t = target();
        let d = Duration::from_secs(1);
        assert_eq!(
            run_probe(&http(IntOrString::String("http".into())), &c, "x", &t, d).await,
            Outcome::Success
        );
        assert_eq!(
            run_probe(&http(IntOrString::Int(bad as i32)), &c, "x", &t, d).await,
            Outcome::Failure("HTTP probe failed with statuscode: 500".into())
        );
        let tcp = |port: u16| Probe {
            tcp_socket: Some(TCPSocketAction {
                port: IntOrString::Int(port as i32),
                host: None,
            }),
            ..Default::default()
        };
        assert_eq!(run_probe(&tcp(ok), &c, "x", &t, d).await, Outcome::Success);
        let closed = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        assert!(
            matches!(run_probe(&tcp(closed), &c, "x", &t, d).await, Outcome::Failure(m) if m.contains("dial tcp"))
        );
        let exec = Probe {
            exec: Some(k8s_openapi::api::core::v1::ExecAction {
                command: Some(vec!["false".into()]),
            }),
            ..Default::default()
        };
        assert_eq!(
            run_probe(&exec, &c, "x", &t, d).await,
            Outcome::Failure("no".into())
        );
    }

    #[tokio::test]
    async fn readiness_flips_after_thresholds_and_liveness_fails_for_good() {
        let port = server("500 Internal Server Error").await;
        let probes = Probes::default();
        let wake = Arc::new(Notify::new());
        let probe = Probe {
            http_get: Some(HTTPGetAction {
                port: IntOrString::Int(port as i32),
                ..Default::default()
            }),
            period_seconds: Some(1),
            failure_threshold: Some(2),
            ..Default::default()
        };
        let c = Container {
            name: "app".into(),
            readiness_probe: Some(probe.clone()),
            liveness_probe: Some(probe),
            ..Default::default()
        };
        probes.start("id1", &c, target(), wake.clone(), (false, false));
        assert_eq!(
            probes.snapshot()["id1"],
            ProbeState {
                ready: false,
                started: true,
                failed: None
            }
        );
        for _ in 0..50 {
            if probes.snapshot()["id1"].failed.is_some() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        assert_eq!(
            probes.snapshot()["id1"].failed,
            Some(ProbeFailure::Liveness)
        );
        probes.stop("id1");
        assert!(!probes.snapshot().contains_key("id1"));
    }
}
