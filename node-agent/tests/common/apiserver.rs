//! A minimal fake API server over HTTPS: what kubectl 1.32 and the Python client need
//! for exec and port-forward of one pod, `default/web`, whose `exec` and `portforward`
//! subresources go straight into the agent's stream endpoints (the real API server's
//! splice is left out; the protocols on the wire are the same).

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use anyhow::Result;
use axum::extract::{Path as UrlPath, Request};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get};
use axum::{Json, Router};
use berth_node_agent::stream::{
    serve_exec, serve_port_forward, ExecBackend, ExecOptions, PortForwardDialer, PortForwardOptions,
};
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::service::TowerToHyperService;
use serde_json::json;
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

use super::Task;

/// The fake API server: what kubectl 1.32 needs for exec and port-forward.
pub struct ApiServer {
    pub addr: SocketAddr,
    /// Every request line it got, for failure messages.
    pub log: Arc<Mutex<Vec<String>>>,
    _task: Task,
}

fn pod() -> serde_json::Value {
    json!({
        "kind": "Pod", "apiVersion": "v1",
        "metadata": {"name": "web", "namespace": "default", "uid": "6c1a4f7e-0000-4000-8000-000000000001",
                     "resourceVersion": "7", "creationTimestamp": "2025-01-01T00:00:00Z"},
        "spec": {"nodeName": "node-1", "containers": [{"name": "main", "image": "busybox",
                 "ports": [{"containerPort": 80, "protocol": "TCP"}]}]},
        "status": {"phase": "Running", "podIP": "10.244.0.7",
                   "conditions": [{"type": "Ready", "status": "True"}],
                   "containerStatuses": [{"name": "main", "ready": true, "restartCount": 0, "image": "busybox",
                                          "imageID": "", "state": {"running": {"startedAt": "2025-01-01T00:00:00Z"}}}]}
    })
}

fn not_found(what: &str) -> Response {
    (
        http::StatusCode::NOT_FOUND,
        Json(
            json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
            "message": format!("{what} not found"), "reason": "NotFound", "code": 404}),
        ),
    )
        .into_response()
}

pub async fn api_server(
    backend: Arc<dyn ExecBackend>,
    dialer: Arc<dyn PortForwardDialer>,
) -> Result<ApiServer> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let log = Arc::new(Mutex::new(Vec::new()));

    let resources = json!({"kind": "APIResourceList", "groupVersion": "v1", "resources": [
        {"name": "pods", "singularName": "pod", "namespaced": true, "kind": "Pod",
         "verbs": ["get", "list"], "shortNames": ["po"], "categories": ["all"]},
        {"name": "pods/attach", "singularName": "", "namespaced": true, "kind": "PodAttachOptions", "verbs": ["create", "get"]},
        {"name": "pods/exec", "singularName": "", "namespaced": true, "kind": "PodExecOptions", "verbs": ["create", "get"]},
        {"name": "pods/portforward", "singularName": "", "namespaced": true, "kind": "PodPortForwardOptions", "verbs": ["create", "get"]}
    ]});
    let router = Router::new()
        .route(
            "/version",
            get(|| async {
                Json(json!({"major": "1", "minor": "32", "gitVersion": "v1.32.4",
                    "gitCommit": "0000000", "gitTreeState": "clean", "buildDate": "2025-01-01T00:00:00Z",
                    "goVersion": "go1.23", "compiler": "gc", "platform": "linux/amd64"}))
            }),
        )
        .route(
            "/api",
            get(move || async move {
                Json(json!({"kind": "APIVersions", "versions": ["v1"],
                    "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": addr.to_string()}]}))
            }),
        )
        .route(
            "/apis",
            get(|| async { Json(json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": []})) }),
        )
        .route("/api/v1", get(move || async move { Json(resources.clone()) }))
        .route(
            "/api/v1/namespaces/{ns}/pods/{name}",
            get(|UrlPath((ns, name)): UrlPath<(String, String)>| async move {
                if (ns.as_str(), name.as_str()) == ("default", "web") {
                    Json(pod()).into_response()
                } else {
                    not_found(&format!("pods \"{name}\""))
                }
            }),
        )
        .route(
            "/api/v1/namespaces/{ns}/pods/{name}/exec",
            any(move |req: Request| {
                let backend = backend.clone();
                async move {
                    match ExecOptions::from_query(req.uri().query().unwrap_or("")) {
                        Ok(opts) => serve_exec(req, opts, backend).await,
                        Err(err) => err.into_response(),
                    }
                }
            }),
        )
        .route(
            "/api/v1/namespaces/{ns}/pods/{name}/portforward",
            any(move |UrlPath((ns, name)): UrlPath<(String, String)>, req: Request| {
                let dialer = dialer.clone();
                async move {
                    let query = req.uri().query().unwrap_or("");
                    match PortForwardOptions::from_query(format!("{ns}/{name}"), query) {
                        Ok(opts) => serve_port_forward(req, opts, dialer).await,
                        Err(err) => err.into_response(),
                    }
                }
            }),
        )
        .fallback(|req: Request| async move { not_found(&req.uri().to_string()) });
    let logged = log.clone();
    let router = router.layer(axum::middleware::from_fn(
        move |req: Request, next: axum::middleware::Next| {
            let log = logged.clone();
            async move {
                let line = format!(
                    "{} {} upgrade={:?}",
                    req.method(),
                    req.uri(),
                    req.headers().get("upgrade")
                );
                let resp = next.run(req).await;
                log.lock()
                    .expect("log lock")
                    .push(format!("{line} -> {}", resp.status()));
                resp
            }
        },
    ));

    let acceptor = tls_acceptor()?;
    let task = tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            let svc = TowerToHyperService::new(router.clone());
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let _ = auto::Builder::new(TokioExecutor::new())
                    .serve_connection_with_upgrades(TokioIo::new(tls), svc)
                    .await;
            });
        }
    });
    Ok(ApiServer {
        addr,
        log,
        _task: Task(task),
    })
}

fn tls_acceptor() -> Result<TlsAcceptor> {
    let cert = rcgen::generate_simple_self_signed(vec!["127.0.0.1".into(), "localhost".into()])?;
    let key = rustls::pki_types::PrivateKeyDer::Pkcs8(cert.signing_key.serialize_der().into());
    let mut config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()?
    .with_no_client_auth()
    .with_single_cert(vec![cert.cert.der().clone()], key)?;
    // Upgrades need HTTP/1.1 (client-go asks for it on those connections anyway).
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(TlsAcceptor::from(Arc::new(config)))
}

impl ApiServer {
    /// The request lines so far, with their answers' status.
    pub fn requests(&self) -> Vec<String> {
        self.log.lock().expect("log lock").clone()
    }
}
