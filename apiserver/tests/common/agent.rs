//! A fake node agent in the test process: HTTPS with a serving certificate from the cluster
//! CA, accepting only the API server's kubelet-client certificate, serving kubelet's paths
//! (`/containerLogs`, a websocket echo on `/exec`, `/stats/summary`, `/healthz`) and
//! recording what it was asked.

use std::sync::{Arc, Mutex};

use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Path, RawQuery, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get};
use axum::Router;
use berth_apiserver::tls::Pki;
use serde_json::Value;

#[derive(Default)]
pub struct Seen {
    /// Path and query of every request that reached a handler.
    pub requests: Vec<String>,
}

#[derive(Clone)]
pub struct AgentState {
    pub seen: Arc<Mutex<Seen>>,
    /// Released by the test to let a followed log stream send its second line.
    pub release: Arc<tokio::sync::Notify>,
    pub summary: Arc<Mutex<Value>>,
    /// Log streams that ended or were dropped (their client went away).
    pub logs_closed: Arc<std::sync::atomic::AtomicUsize>,
}

/// Counts a log stream as closed when dropped.
struct Closed(Arc<std::sync::atomic::AtomicUsize>);

impl Drop for Closed {
    fn drop(&mut self) {
        self.0.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    }
}

pub struct FakeAgent {
    pub port: u16,
    pub state: AgentState,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for FakeAgent {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn record(state: &AgentState, path: &str, query: &Option<String>) {
    let q = query
        .as_deref()
        .map(|q| format!("?{q}"))
        .unwrap_or_default();
    state
        .seen
        .lock()
        .unwrap()
        .requests
        .push(format!("{path}{q}"));
}

async fn logs(
    State(state): State<AgentState>,
    Path((ns, pod, container)): Path<(String, String, String)>,
    RawQuery(query): RawQuery,
) -> Response {
    record(
        &state,
        &format!("/containerLogs/{ns}/{pod}/{container}"),
        &query,
    );
    if container == "broken" {
        return (StatusCode::NOT_FOUND, "container \"broken\" is not running").into_response();
    }
    let follow = query.as_deref().unwrap_or("").contains("follow=true");
    let release = state.release.clone();
    let stream = async_stream(follow, release, Closed(state.logs_closed.clone()));
    axum::body::Body::from_stream(stream).into_response()
}

fn async_stream(
    follow: bool,
    release: Arc<tokio::sync::Notify>,
    closed: Closed,
) -> impl futures::Stream<Item = Result<bytes::Bytes, std::io::Error>> {
    futures::stream::unfold((0u8, closed), move |(step, closed)| {
        let release = release.clone();
        async move {
            match step {
                0 => Some((Ok(bytes::Bytes::from_static(b"line 1\n")), (1, closed))),
                1 => {
                    if follow {
                        release.notified().await;
                    }
                    Some((Ok(bytes::Bytes::from_static(b"line 2\n")), (2, closed)))
                }
                _ => None,
            }
        }
    })
}

async fn exec(
    State(state): State<AgentState>,
    Path((ns, pod, container)): Path<(String, String, String)>,
    RawQuery(query): RawQuery,
    ws: Result<WebSocketUpgrade, axum::extract::ws::rejection::WebSocketUpgradeRejection>,
) -> Response {
    record(&state, &format!("/exec/{ns}/{pod}/{container}"), &query);
    let Ok(ws) = ws else {
        return (StatusCode::BAD_REQUEST, "upgrade request required").into_response();
    };
    let first = query.unwrap_or_default();
    ws.protocols(["v5.channel.k8s.io"])
        .on_upgrade(move |socket| echo(socket, first))
}

/// Sends the query it was called with, then echoes every binary message. The command
/// `hello` instead answers as a real agent would for kubectl (remote command protocol v5):
/// a line on stdout, then success on the error channel.
async fn echo(mut socket: WebSocket, first: String) {
    if first.starts_with("command=hello&") {
        let _ = socket
            .send(Message::Binary(
                b"\x01hello from the agent\n".to_vec().into(),
            ))
            .await;
        let _ = socket
            .send(Message::Binary(
                b"\x03{\"metadata\":{},\"status\":\"Success\"}"
                    .to_vec()
                    .into(),
            ))
            .await;
        let close = axum::extract::ws::CloseFrame {
            code: 1000,
            reason: "".into(),
        };
        let _ = socket.send(Message::Close(Some(close))).await;
        return;
    }
    if socket
        .send(Message::Binary(first.into_bytes().into()))
        .await
        .is_err()
    {
        return;
    }
    while let Some(Ok(msg)) = socket.recv().await {
        let echoed = match msg {
            Message::Binary(b) => socket.send(Message::Binary(b)).await,
            Message::Close(_) => return,
            _ => Ok(()),
        };
        if echoed.is_err() {
            return;
        }
    }
}

/// Port-forward over a plain HTTP upgrade (SPDY, as kubectl's fallback): 101 with the
/// protocol, then every byte echoed.
async fn port_forward(
    State(state): State<AgentState>,
    Path((ns, pod)): Path<(String, String)>,
    RawQuery(query): RawQuery,
    mut req: axum::extract::Request,
) -> Response {
    record(&state, &format!("/portForward/{ns}/{pod}"), &query);
    let spdy = req
        .headers()
        .get("upgrade")
        .is_some_and(|u| u.as_bytes().eq_ignore_ascii_case(b"SPDY/3.1"));
    if !spdy {
        return (StatusCode::BAD_REQUEST, "SPDY upgrade required").into_response();
    }
    let protocol = req
        .headers()
        .get_all("x-stream-protocol-version")
        .iter()
        .map(|v| v.to_str().unwrap_or("").to_string())
        .collect::<Vec<_>>()
        .join(",");
    let upgrade = hyper::upgrade::on(&mut req);
    tokio::spawn(async move {
        let Ok(upgraded) = upgrade.await else { return };
        let (mut r, mut w) = tokio::io::split(hyper_util::rt::TokioIo::new(upgraded));
        let _ = tokio::io::copy(&mut r, &mut w).await;
    });
    Response::builder()
        .status(StatusCode::SWITCHING_PROTOCOLS)
        .header("connection", "Upgrade")
        .header("upgrade", "SPDY/3.1")
        .header("x-stream-protocol-version", protocol)
        .body(axum::body::Body::empty())
        .unwrap()
}

async fn summary(State(state): State<AgentState>) -> Response {
    record(&state, "/stats/summary", &None);
    let v = state.summary.lock().unwrap().clone();
    axum::Json(v).into_response()
}

async fn healthz(State(state): State<AgentState>, RawQuery(query): RawQuery) -> Response {
    record(&state, "/healthz", &query);
    format!("ok {}", query.unwrap_or_default()).into_response()
}

impl FakeAgent {
    /// Starts an agent for node `node` on a free loopback port.
    pub async fn start(pki: &Pki, node: &str) -> Self {
        let (cert, key) = pki
            .issue(
                &format!("system:node:{node}"),
                &["system:nodes"],
                &["127.0.0.1".to_string()],
                true,
            )
            .unwrap();
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut roots = rustls::RootCertStore::empty();
        for c in berth_apiserver::tls::certs(&pki.ca_pem, "ca").unwrap() {
            roots.add(c).unwrap();
        }
        let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
            Arc::new(roots),
            provider.clone(),
        )
        .build()
        .unwrap();
        let mut cfg = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_client_cert_verifier(verifier)
            .with_single_cert(
                berth_apiserver::tls::certs(&cert, "agent").unwrap(),
                berth_apiserver::tls::private_key(&key, "agent").unwrap(),
            )
            .unwrap();
        cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(cfg));
        let state = AgentState {
            seen: Default::default(),
            release: Default::default(),
            summary: Arc::new(Mutex::new(Value::Null)),
            logs_closed: Default::default(),
        };
        let router = Router::new()
            .route("/containerLogs/{ns}/{pod}/{container}", get(logs))
            .route("/exec/{ns}/{pod}/{container}", any(exec))
            .route("/portForward/{ns}/{pod}", any(port_forward))
            .route("/stats/summary", get(summary))
            .route("/healthz", any(healthz))
            .with_state(state.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let task = tokio::spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    continue;
                };
                let acceptor = acceptor.clone();
                let router = router.clone();
                tokio::spawn(async move {
                    let Ok(tls) = acceptor.accept(tcp).await else {
                        return;
                    };
                    let cn = tls
                        .get_ref()
                        .1
                        .peer_certificates()
                        .and_then(|c| c.first())
                        .and_then(|c| berth_apiserver::auth::user_from_cert(c))
                        .map(|u| u.name);
                    let allowed = cn.as_deref() == Some(berth_apiserver::tls::KUBELET_CLIENT_CN);
                    let svc = hyper::service::service_fn(
                        move |req: hyper::Request<hyper::body::Incoming>| {
                            let router = router.clone();
                            async move {
                                if !allowed {
                                    return Ok::<_, std::convert::Infallible>(
                                        (StatusCode::FORBIDDEN, "not the API server")
                                            .into_response(),
                                    );
                                }
                                use tower::ServiceExt;
                                Ok(router
                                    .oneshot(req.map(axum::body::Body::new))
                                    .await
                                    .unwrap())
                            }
                        },
                    );
                    let _ = hyper_util::server::conn::auto::Builder::new(
                        hyper_util::rt::TokioExecutor::new(),
                    )
                    .serve_connection_with_upgrades(hyper_util::rt::TokioIo::new(tls), svc)
                    .await;
                });
            }
        });
        Self { port, state, task }
    }

    pub fn requests(&self) -> Vec<String> {
        self.state.seen.lock().unwrap().requests.clone()
    }

    /// The Node object publishing this agent.
    pub fn node(&self, name: &str) -> Value {
        serde_json::json!({"apiVersion": "v1", "kind": "Node",
            "metadata": {"name": name, "labels": {"kubernetes.io/hostname": name}},
            "status": {"addresses": [{"type": "Hostname", "address": "localhost"},
                    {"type": "InternalIP", "address": "127.0.0.1"}],
                "daemonEndpoints": {"kubeletEndpoint": {"Port": self.port}},
                "capacity": {"cpu": "4", "memory": "8Gi", "pods": "110"},
                "allocatable": {"cpu": "4", "memory": "8Gi", "pods": "110"}}})
    }
}
