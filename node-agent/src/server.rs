//! The agent's HTTPS endpoint, on kubelet's paths, for the API server only: a client
//! certificate from the cluster CA naming `berth-apiserver-kubelet-client` (or a member of
//! `system:masters`) is required.
//!
//! - `GET /containerLogs/{namespace}/{pod}/{container}`: `follow`, `tailLines`,
//!   `sinceSeconds`, `sinceTime`, `timestamps`, `previous`, `limitBytes`.
//! - `GET /stats/summary`: kubelet's Summary API (node, pods, containers: CPU and memory).
//! - `GET|POST /exec/{namespace}/{pod}/{container}`, `/attach/...`: the Kubernetes
//!   streaming protocols ([`crate::stream`]) over websocket or SPDY.
//! - `GET|POST /portForward/{namespace}/{pod}`.
//! - `GET /images`, `POST /images/load` (an OCI layout or `docker save` tarball as the
//!   body): the node's image store, for `kctl image`.
//! - `GET /healthz`.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Path as UrlPath, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use berth_runtime::logs::{self, ReadOptions};
use berth_runtime::pod::ContainerState;
use jiff::Timestamp;
use k8s_openapi::api::core::v1::Pod;
use kube::runtime::reflector::ObjectRef;
use serde::Deserialize;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncSeekExt};

use crate::Agent;

/// The identity the API server presents to agents.
pub const APISERVER_CLIENT_CN: &str = "berth-apiserver-kubelet-client";

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("tls: {0}")]
    Tls(String),
    #[error("listening on {addr}: {source}")]
    Listen {
        addr: String,
        #[source]
        source: std::io::Error,
    },
}

/// The TLS setup: our serving certificate and key, and the CA client certificates must
/// chain to (all PEM).
#[derive(Debug, Clone)]
pub struct TlsFiles {
    pub cert_pem: String,
    pub key_pem: String,
    pub client_ca_pem: String,
}

fn server_config(tls: &TlsFiles) -> Result<Arc<rustls::ServerConfig>, Error> {
    let err = |what: &str, e: &dyn std::fmt::Display| Error::Tls(format!("{what}: {e}"));
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    for c in rustls_pemfile::certs(&mut tls.client_ca_pem.as_bytes()) {
        let c = c.map_err(|e| err("client CA", &e))?;
        roots.add(c).map_err(|e| err("client CA", &e))?;
    }
    let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
        Arc::new(roots),
        provider.clone(),
    )
    .build()
    .map_err(|e| err("client verifier", &e))?;
    let certs = rustls_pemfile::certs(&mut tls.cert_pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| err("serving certificate", &e))?;
    let key = rustls_pemfile::private_key(&mut tls.key_pem.as_bytes())
        .map_err(|e| err("serving key", &e))?
        .ok_or_else(|| Error::Tls("serving key: no private key in the PEM".into()))?;
    let mut cfg = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| err("versions", &e))?
        .with_client_cert_verifier(verifier)
        .with_single_cert(certs, key)
        .map_err(|e| err("serving certificate", &e))?;
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(cfg))
}

/// May the holder of this (verified) client certificate call us?
fn allowed(der: &[u8]) -> bool {
    let Ok((_, cert)) = x509_parser::parse_x509_certificate(der) else {
        return false;
    };
    let subject = cert.subject();
    let cn_ok = subject
        .iter_common_name()
        .any(|c| c.as_str().ok() == Some(APISERVER_CLIENT_CN));
    let masters = subject
        .iter_organization()
        .any(|o| o.as_str().ok() == Some("system:masters"));
    cn_ok || masters
}

/// The routes, without TLS (tests drive them directly).
pub fn router(agent: Arc<Agent>) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route(
            "/containerLogs/{namespace}/{pod}/{container}",
            get(container_logs),
        )
        .route("/stats/summary", get(stats_summary))
        .route("/images", get(list_images))
        .route("/images/load", axum::routing::post(load_images))
        .route(
            "/exec/{namespace}/{pod}/{container}",
            get(exec_route).post(exec_route),
        )
        .route(
            "/attach/{namespace}/{pod}/{container}",
            get(attach_route).post(attach_route),
        )
        .route(
            "/portForward/{namespace}/{pod}",
            get(port_forward_route).post(port_forward_route),
        )
        .with_state(agent)
}

/// Serve HTTPS on `listener` until the task is dropped.
pub async fn serve(
    agent: Arc<Agent>,
    listener: tokio::net::TcpListener,
    tls: TlsFiles,
) -> Result<(), Error> {
    let acceptor = tokio_rustls::TlsAcceptor::from(server_config(&tls)?);
    let app = router(agent);
    loop {
        let (tcp, addr) = match listener.accept().await {
            Ok(x) => x,
            Err(e) => {
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let acceptor = acceptor.clone();
        let app = app.clone();
        tokio::spawn(async move {
            let tls = match acceptor.accept(tcp).await {
                Ok(t) => t,
                Err(e) => {
                    tracing::debug!(%addr, error = %e, "tls handshake failed");
                    return;
                }
            };
            let ok = tls
                .get_ref()
                .1
                .peer_certificates()
                .and_then(|c| c.first())
                .is_some_and(|c| allowed(c));
            let svc =
                hyper::service::service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                    let app = app.clone();
                    async move {
                        if !ok {
                            return Ok::<_, std::convert::Infallible>(bad(
                                StatusCode::FORBIDDEN,
                                "only the API server may call the agent\n",
                            ));
                        }
                        let req = req.map(Body::new);
                        Ok(tower::ServiceExt::oneshot(app, req)
                            .await
                            .unwrap_or_else(|e| match e {}))
                    }
                });
            let io = hyper_util::rt::TokioIo::new(tls);
            let builder =
                hyper_util::server::conn::auto::Builder::new(hyper_util::rt::TokioExecutor::new());
            if let Err(e) = builder.serve_connection_with_upgrades(io, svc).await {
                tracing::debug!(%addr, error = %e, "agent connection ended");
            }
        });
    }
}

fn bad(code: StatusCode, msg: impl Into<String>) -> Response {
    (code, msg.into()).into_response()
}

#[derive(Debug, Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct LogQuery {
    #[serde(default)]
    follow: Option<String>,
    tail_lines: Option<i64>,
    since_seconds: Option<i64>,
    since_time: Option<String>,
    #[serde(default)]
    timestamps: Option<String>,
    #[serde(default)]
    previous: Option<String>,
    limit_bytes: Option<i64>,
}

fn truthy(v: &Option<String>) -> bool {
    matches!(v.as_deref(), Some("true" | "1" | ""))
}

/// The log directory of a pod's container and its attempts on disk, newest last.
fn attempts(dir: &Path) -> Vec<(u32, PathBuf)> {
    let mut out: Vec<(u32, PathBuf)> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            let n: u32 = name.strip_suffix(".log")?.parse().ok()?;
            Some((n, e.path()))
        })
        .collect();
    out.sort();
    out
}

/// The running container `container` of pod `ns/name`, and its sandbox.
fn running_container(
    agent: &Agent,
    ns: &str,
    name: &str,
    container: &str,
) -> Result<(String, berth_runtime::pod::Sandbox), (StatusCode, String)> {
    let pod = find_pod(agent, ns, name).ok_or_else(|| {
        (
            StatusCode::NOT_FOUND,
            format!("pod \"{ns}/{name}\" is not on this node"),
        )
    })?;
    let uid = pod.metadata.uid.clone().unwrap_or_default();
    let sandbox_id = newest_sandbox(agent, &uid).ok_or_else(|| {
        (
            StatusCode::BAD_REQUEST,
            format!("pod \"{name}\" has no sandbox on this node"),
        )
    })?;
    let sandbox = agent
        .rt
        .sandbox(&sandbox_id)
        .map_err(|e| (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
    if container.is_empty() {
        return Ok((String::new(), sandbox));
    }
    let id = agent
        .rt
        .list_containers(Some(&sandbox_id))
        .unwrap_or_default()
        .into_iter()
        .filter(|c| c.name == container)
        .max_by_key(|c| c.attempt)
        .filter(|c| c.state == ContainerState::Running)
        .map(|c| c.id)
        .ok_or_else(|| {
            (
                StatusCode::BAD_REQUEST,
                format!("container {container} is not running in pod {name}"),
            )
        })?;
    Ok((id, sandbox))
}

async fn exec_route(
    State(agent): State<Arc<Agent>>,
    UrlPath((ns, pod, container)): UrlPath<(String, String, String)>,
    req: axum::extract::Request,
) -> Response {
    exec_or_attach(agent, ns, pod, container, req, false).await
}

async fn attach_route(
    State(agent): State<Arc<Agent>>,
    UrlPath((ns, pod, container)): UrlPath<(String, String, String)>,
    req: axum::extract::Request,
) -> Response {
    exec_or_attach(agent, ns, pod, container, req, true).await
}

async fn exec_or_attach(
    agent: Arc<Agent>,
    ns: String,
    pod: String,
    container: String,
    req: axum::extract::Request,
    attach: bool,
) -> Response {
    let opts = match crate::stream::ExecOptions::from_query(req.uri().query().unwrap_or("")) {
        Ok(o) => o,
        Err(e) => return e.into_response(),
    };
    let a = agent.clone();
    let found =
        tokio::task::spawn_blocking(move || running_container(&a, &ns, &pod, &container)).await;
    let id = match found {
        Ok(Ok((id, _))) => id,
        Ok(Err((code, msg))) => return bad(code, msg),
        Err(e) => return bad(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    };
    let backend = Arc::new(crate::exec::ContainerExec {
        rt: agent.rt.clone(),
        container_id: id,
        tmp: agent.cfg.dir.join("tmp"),
    });
    if attach {
        crate::stream::serve_attach(req, opts, backend).await
    } else {
        crate::stream::serve_exec(req, opts, backend).await
    }
}

async fn port_forward_route(
    State(agent): State<Arc<Agent>>,
    UrlPath((ns, pod)): UrlPath<(String, String)>,
    req: axum::extract::Request,
) -> Response {
    let opts = match crate::stream::PortForwardOptions::from_query(
        pod.clone(),
        req.uri().query().unwrap_or(""),
    ) {
        Ok(o) => o,
        Err(e) => return e.into_response(),
    };
    let a = agent.clone();
    let found = tokio::task::spawn_blocking(move || running_container(&a, &ns, &pod, "")).await;
    let sandbox = match found {
        Ok(Ok((_, sb))) => sb,
        Ok(Err((code, msg))) => return bad(code, msg),
        Err(e) => return bad(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    };
    let netns = sandbox
        .netns
        .clone()
        .unwrap_or_else(|| PathBuf::from("/proc/self/ns/net"));
    crate::stream::serve_port_forward(req, opts, Arc::new(crate::exec::PodDialer { netns })).await
}

fn find_pod(agent: &Agent, ns: &str, name: &str) -> Option<Arc<Pod>> {
    agent.pods.get()?.get(&ObjectRef::new(name).within(ns))
}

async fn container_logs(
    State(agent): State<Arc<Agent>>,
    UrlPath((ns, pod_name, container)): UrlPath<(String, String, String)>,
    Query(q): Query<LogQuery>,
) -> Response {
    let Some(pod) = find_pod(&agent, &ns, &pod_name) else {
        return bad(
            StatusCode::NOT_FOUND,
            format!("pod \"{ns}/{pod_name}\" is not on this node"),
        );
    };
    let uid = pod.metadata.uid.clone().unwrap_or_default();
    let dir = agent
        .cfg
        .dir
        .join("logs")
        .join(format!("{ns}_{pod_name}_{uid}"))
        .join(&container);
    let files = attempts(&dir);
    let previous = truthy(&q.previous);
    let chosen = if previous {
        files.iter().rev().nth(1)
    } else {
        files.last()
    };
    let Some((attempt, path)) = chosen.cloned() else {
        return bad(
            StatusCode::BAD_REQUEST,
            if previous {
                format!(
                    "previous terminated container \"{container}\" in pod \"{pod_name}\" not found"
                )
            } else {
                format!("container \"{container}\" in pod \"{pod_name}\" is waiting to start: ContainerCreating")
            },
        );
    };
    let since = match (&q.since_time, q.since_seconds) {
        (Some(t), _) => match t.parse::<Timestamp>() {
            Ok(t) => Some(t.as_nanosecond() as i64),
            Err(e) => return bad(StatusCode::BAD_REQUEST, format!("sinceTime {t:?}: {e}")),
        },
        (None, Some(s)) if s > 0 => {
            Some((Timestamp::now().as_nanosecond() - s as i128 * 1_000_000_000) as i64)
        }
        (None, Some(_)) => {
            return bad(
                StatusCode::BAD_REQUEST,
                "sinceSeconds must be greater than 0",
            )
        }
        _ => None,
    };
    let opts = ReadOptions {
        tail_lines: q.tail_lines.filter(|n| *n >= 0).map(|n| n as usize),
        since,
        limit_bytes: q.limit_bytes.filter(|n| *n > 0).map(|n| n as u64),
    };
    let timestamps = truthy(&q.timestamps);
    let follow = truthy(&q.follow) && !previous;
    let size_before = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
    let p = path.clone();
    let history = match tokio::task::spawn_blocking(move || logs::read_logs(&p, &opts)).await {
        Ok(Ok(lines)) => lines,
        Ok(Err(e)) => {
            return bad(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("reading logs: {e}"),
            )
        }
        Err(e) => {
            return bad(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("reading logs: {e}"),
            )
        }
    };
    let mut head = Vec::new();
    let mut last_time = None;
    for l in &history {
        render(&mut head, timestamps, l.time, &l.content, !l.partial);
        last_time = Some(l.time);
    }
    if !follow {
        return Response::builder()
            .header("content-type", "text/plain")
            .body(Body::from(head))
            .expect("valid response");
    }
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Vec<u8>, std::io::Error>>(16);
    let _ = tx.send(Ok(head)).await;
    let running_id = format!(
        "{}-{container}-{attempt}",
        newest_sandbox(&agent, &uid).unwrap_or_default()
    );
    let mut lines = follow_log(agent.rt.clone(), running_id, path, size_before);
    tokio::spawn(async move {
        while let Some(l) = lines.recv().await {
            // Lines written while the history was read come twice: skip them.
            if last_time.is_some_and(|t| l.time <= t) {
                continue;
            }
            let mut out = Vec::new();
            render(&mut out, timestamps, l.time, &l.content, !l.partial);
            if tx.send(Ok(out)).await.is_err() {
                return;
            }
        }
    });
    let stream =
        futures::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|x| (x, rx)) });
    Response::builder()
        .header("content-type", "text/plain")
        .body(Body::from_stream(stream))
        .expect("valid response")
}

/// The newest sandbox id of pod `uid`, for container ids.
fn newest_sandbox(agent: &Agent, uid: &str) -> Option<String> {
    let mut mine: Vec<_> = agent
        .rt
        .list_sandboxes_with_prefix(&crate::pod::sandbox_prefix(uid))
        .ok()?
        .into_iter()
        .collect();
    mine.sort_by_key(crate::pod::sandbox_attempt);
    mine.pop().map(|s| s.id)
}

fn render(
    out: &mut Vec<u8>,
    timestamps: bool,
    time: logs::Timestamp,
    content: &[u8],
    newline: bool,
) {
    if timestamps {
        out.extend_from_slice(time.to_string().as_bytes());
        out.push(b' ');
    }
    out.extend_from_slice(content);
    if newline {
        out.push(b'\n');
    }
}

/// The log lines appended to `path` after byte `offset`, as they are written, until
/// container `container_id` has ended and the file is drained, or the receiver is dropped.
/// Used by `logs -f` and by attach.
pub(crate) fn follow_log(
    rt: Arc<berth_runtime::pod::Runtime>,
    container_id: String,
    path: PathBuf,
    mut offset: u64,
) -> tokio::sync::mpsc::Receiver<logs::LogLine> {
    let (tx, rx) = tokio::sync::mpsc::channel(256);
    tokio::spawn(async move {
        let mut partial = Vec::new();
        loop {
            let mut chunk = Vec::new();
            if let Ok(mut f) = tokio::fs::File::open(&path).await {
                let len = f.metadata().await.map(|m| m.len()).unwrap_or(0);
                if len < offset {
                    // Rotated: the shim started a new file.
                    offset = 0;
                }
                if f.seek(std::io::SeekFrom::Start(offset)).await.is_ok() {
                    let _ = f.read_to_end(&mut chunk).await;
                }
            }
            offset += chunk.len() as u64;
            partial.extend_from_slice(&chunk);
            while let Some(i) = partial.iter().position(|b| *b == b'\n') {
                let line: Vec<u8> = partial.drain(..=i).collect();
                if let Ok(l) = logs::parse_line(&line) {
                    if tx.send(l).await.is_err() {
                        return;
                    }
                }
            }
            if tx.is_closed() {
                return;
            }
            if chunk.is_empty() {
                let rt = rt.clone();
                let id = container_id.clone();
                let running = tokio::task::spawn_blocking(move || {
                    rt.container_status(&id)
                        .map(|s| s.state == ContainerState::Running)
                        .unwrap_or(false)
                })
                .await
                .unwrap_or(false);
                if !running {
                    // One last read happened above after it ended; done.
                    return;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    });
    rx
}

fn image_json(i: &berth_runtime::image::Image) -> serde_json::Value {
    json!({"id": i.id, "names": i.names, "repoDigests": i.repo_digests, "size": i.size})
}

async fn list_images(State(agent): State<Arc<Agent>>) -> Response {
    let rt = agent.rt.clone();
    match tokio::task::spawn_blocking(move || rt.images().list()).await {
        Ok(Ok(list)) => {
            axum::Json(json!({"images": list.iter().map(image_json).collect::<Vec<_>>()}))
                .into_response()
        }
        Ok(Err(e)) => bad(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
        Err(e) => bad(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    }
}

/// Stream the body to a file, then import it.
async fn load_images(State(agent): State<Arc<Agent>>, req: axum::extract::Request) -> Response {
    use futures::StreamExt;
    use tokio::io::AsyncWriteExt;
    let tmp = agent.cfg.dir.join("tmp");
    if let Err(e) = tokio::fs::create_dir_all(&tmp).await {
        return bad(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("{}: {e}", tmp.display()),
        );
    }
    let path = tmp.join(format!(
        "upload-{}.tar",
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos()
    ));
    let result = async {
        let mut f = tokio::fs::File::create(&path).await?;
        let mut body = req.into_body().into_data_stream();
        while let Some(chunk) = body.next().await {
            let chunk = chunk.map_err(std::io::Error::other)?;
            f.write_all(&chunk).await?;
        }
        f.flush().await?;
        Ok::<_, std::io::Error>(())
    }
    .await;
    if let Err(e) = result {
        let _ = tokio::fs::remove_file(&path).await;
        return bad(StatusCode::BAD_REQUEST, format!("receiving the image: {e}"));
    }
    let rt = agent.rt.clone();
    let p = path.clone();
    let imported = tokio::task::spawn_blocking(move || rt.images().import(&p)).await;
    let _ = tokio::fs::remove_file(&path).await;
    match imported {
        Ok(Ok(images)) => {
            for i in &images {
                tracing::info!(image = %i.names.join(","), id = %i.id, "image loaded");
            }
            axum::Json(json!({"images": images.iter().map(image_json).collect::<Vec<_>>()}))
                .into_response()
        }
        Ok(Err(e)) => bad(StatusCode::BAD_REQUEST, format!("importing the image: {e}")),
        Err(e) => bad(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    }
}

/// CPU usage rates need two samples: the previous one per cgroup.
#[derive(Debug, Default)]
pub struct CpuSamples {
    last: Mutex<HashMap<String, (u64, Timestamp)>>,
}

impl CpuSamples {
    /// Nanocores used since the previous sample of `key` (none on the first).
    pub fn rate(&self, key: &str, usage_ns: u64, now: Timestamp) -> Option<u64> {
        let mut last = self.last.lock().expect("cpu samples");
        let prev = last.insert(key.to_string(), (usage_ns, now));
        let (u0, t0) = prev?;
        let dt = now.duration_since(t0).as_nanos();
        if dt <= 0 || usage_ns < u0 {
            return None;
        }
        Some(((usage_ns - u0) as u128 * 1_000_000_000 / dt as u128) as u64)
    }
}

/// The node's CPU time (all CPUs, non-idle) in nanoseconds, from /proc/stat.
fn node_cpu_ns() -> u64 {
    let text = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let Some(line) = text.lines().next() else {
        return 0;
    };
    let v: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .filter_map(|x| x.parse().ok())
        .collect();
    // user nice system idle iowait irq softirq steal
    let busy: u64 = [0, 1, 2, 5, 6, 7].iter().filter_map(|i| v.get(*i)).sum();
    // USER_HZ is 100 on Linux.
    busy * 10_000_000
}

fn cpu_json(now: Timestamp, total: u64, rate: Option<u64>) -> serde_json::Value {
    let mut v = json!({"time": now.to_string(), "usageCoreNanoSeconds": total});
    if let Some(r) = rate {
        v["usageNanoCores"] = json!(r);
    }
    v
}

fn mem_json(
    now: Timestamp,
    usage: u64,
    working_set: u64,
    available: Option<u64>,
) -> serde_json::Value {
    let mut v =
        json!({"time": now.to_string(), "usageBytes": usage, "workingSetBytes": working_set});
    if let Some(a) = available {
        v["availableBytes"] = json!(a);
    }
    v
}

async fn stats_summary(State(agent): State<Arc<Agent>>) -> Response {
    let a = agent.clone();
    let summary = tokio::task::spawn_blocking(move || summary(&a)).await;
    match summary {
        Ok(v) => axum::Json(v).into_response(),
        Err(e) => bad(StatusCode::INTERNAL_SERVER_ERROR, format!("stats: {e}")),
    }
}

/// kubelet's stats/v1alpha1 Summary.
pub fn summary(agent: &Agent) -> serde_json::Value {
    let now = Timestamp::now();
    let samples = &agent.cpu_samples;
    let node_cpu = node_cpu_ns();
    let total = agent.facts.memory_bytes;
    let available = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|t| {
            let l = t.lines().find(|l| l.starts_with("MemAvailable:"))?;
            l.split_whitespace().nth(1)?.parse::<u64>().ok()
        })
        .map(|kb| kb * 1024)
        .unwrap_or(0);
    let used = total.saturating_sub(available);
    let node = json!({
        "nodeName": agent.facts.name,
        "startTime": now.to_string(),
        "cpu": cpu_json(now, node_cpu, samples.rate("node", node_cpu, now)),
        "memory": mem_json(now, used, used, Some(available)),
    });
    let mut pods = Vec::new();
    let sandboxes = agent.rt.list_sandboxes().unwrap_or_default();
    let containers = agent.rt.list_containers(None).unwrap_or_default();
    for sb in sandboxes.iter().filter(|s| s.ready) {
        let Ok(st) = agent.rt.sandbox_stats(&sb.id) else {
            continue;
        };
        let mut cs = Vec::new();
        for c in containers
            .iter()
            .filter(|c| c.sandbox_id == sb.id && c.state == ContainerState::Running)
        {
            let Ok(s) = agent.rt.stats(&c.id) else {
                continue;
            };
            cs.push(json!({
                "name": c.name,
                "startTime": c.started_at.clone().unwrap_or_default(),
                "cpu": cpu_json(now, s.cpu_usage_ns, samples.rate(&c.id, s.cpu_usage_ns, now)),
                "memory": mem_json(now, s.memory_usage_bytes, s.memory_working_set_bytes, None),
            }));
        }
        pods.push(json!({
            "podRef": {
                "name": sb.config.name,
                "namespace": sb.config.namespace,
                "uid": sb.config.labels.get(crate::pod::POD_UID_LABEL).cloned().unwrap_or_default(),
            },
            "startTime": now.to_string(),
            "containers": cs,
            "cpu": cpu_json(now, st.cpu_usage_ns, samples.rate(&sb.id, st.cpu_usage_ns, now)),
            "memory": mem_json(now, st.memory_usage_bytes, st.memory_working_set_bytes, None),
        }));
    }
    json!({"node": node, "pods": pods})
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_rate_needs_two_samples() {
        let s = CpuSamples::default();
        let t0 = Timestamp::from_second(1_700_000_000).unwrap();
        assert_eq!(s.rate("c", 1_000, t0), None);
        let t1 = t0 + Duration::from_secs(2);
        // 1 s of CPU over 2 s of wall time: half a core.
        assert_eq!(s.rate("c", 1_000_001_000, t1), Some(500_000_000));
    }

    #[test]
    fn log_attempts_sort_numerically() {
        let tmp = tempfile::tempdir().unwrap();
        for n in ["0.log", "10.log", "2.log", "junk"] {
            std::fs::write(tmp.path().join(n), "").unwrap();
        }
        let got: Vec<u32> = attempts(tmp.path()).into_iter().map(|a| a.0).collect();
        assert_eq!(got, [0, 2, 10]);
    }
}
