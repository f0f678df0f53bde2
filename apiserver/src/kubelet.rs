//! Calls to node agents (Berth's kubelets): the pod subresources that stream (`log`, `exec`,
//! `attach`, `portforward`) and `nodes/{name}/proxy/...` are forwarded to the agent of the
//! node, and [`crate::metrics`] reads the agents' `/stats/summary`.
//!
//! An agent serves HTTPS at the node's address from `status.addresses` (InternalIP first, then
//! Hostname, then any other) on `status.daemonEndpoints.kubeletEndpoint.Port` (10250 when
//! unset). Its serving certificate must chain to the cluster CA and name that address; the API
//! server presents its client certificate `pki/apiserver-kubelet-client.crt` (CN
//! `berth-apiserver-kubelet-client`). Each call is one HTTP/1.1 connection: upgrades (exec,
//! attach, port-forward) exist only there.
//!
//! Agent paths, as kubelet's, with the client's query string passed through unchanged:
//! `GET /containerLogs/{ns}/{pod}/{container}`, `GET|POST /exec/{ns}/{pod}/{container}`,
//! `GET|POST /attach/{ns}/{pod}/{container}`, `GET|POST /portForward/{ns}/{pod}`,
//! `GET /stats/summary`, and any path under `nodes/{name}/proxy/`.
//!
//! A request the agent answers with `101 Switching Protocols` is answered 101 with the agent's
//! headers, and the two upgraded connections are spliced byte for byte until either closes.
//! Anything else is relayed as the agent sent it, its body streamed unbuffered (so
//! `logs -f` prints lines as they come); a non-2xx answer to a log request becomes a `Status`.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::Request;
use axum::http::{header, HeaderMap, HeaderName, HeaderValue, Method, StatusCode, Uri};
use axum::response::Response;
use serde_json::Value;

use crate::error::{ApiError, ApiResult};
use crate::request::{Query, Target};
use crate::server::ApiServer;

/// Port an agent serves on when its Node does not say.
pub const DEFAULT_PORT: u16 = 10250;
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("node {node}: {reason}")]
    NoEndpoint { node: String, reason: String },
    #[error("connecting to the agent at {addr}: {source}")]
    Connect {
        addr: String,
        #[source]
        source: std::io::Error,
    },
    #[error("connecting to the agent at {addr}: timed out")]
    ConnectTimeout { addr: String },
    #[error("request to the agent at {addr}: {source}")]
    Http {
        addr: String,
        #[source]
        source: hyper::Error,
    },
    #[error("bad request to the agent: {0}")]
    Request(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl From<Error> for ApiError {
    fn from(e: Error) -> Self {
        match e {
            Error::NoEndpoint { .. } => ApiError::bad_request(e.to_string()),
            Error::Request(_) => ApiError::bad_request(e.to_string()),
            // Kubernetes answers a failed dial to kubelet with 500 (`error dialing backend`).
            other => ApiError::internal(format!("error dialing backend: {other}")),
        }
    }
}

/// Where a node's agent listens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    /// An IP address or a host name, as the node reports it.
    pub host: String,
    pub port: u16,
}

impl Endpoint {
    /// The endpoint a Node object publishes.
    pub fn of_node(node: &Value) -> Result<Self> {
        let name = node
            .pointer("/metadata/name")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string();
        let addresses = node
            .pointer("/status/addresses")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        let of_type = |ty: &str| {
            addresses
                .iter()
                .find(|a| a["type"] == ty)
                .and_then(|a| a["address"].as_str())
                .filter(|a| !a.is_empty())
                .map(str::to_string)
        };
        let host = of_type("InternalIP")
            .or_else(|| of_type("Hostname"))
            .or_else(|| of_type("ExternalIP"))
            .or_else(|| of_type("InternalDNS"))
            .or_else(|| of_type("ExternalDNS"))
            .ok_or_else(|| Error::NoEndpoint {
                node: name.clone(),
                reason: "no preferred addresses found in status.addresses".into(),
            })?;
        let port = node
            .pointer("/status/daemonEndpoints/kubeletEndpoint/Port")
            .and_then(Value::as_u64)
            .filter(|p| *p > 0)
            .unwrap_or(DEFAULT_PORT as u64);
        let port = u16::try_from(port).map_err(|_| Error::NoEndpoint {
            node: name,
            reason: format!("kubelet port {port} is out of range"),
        })?;
        Ok(Self { host, port })
    }

    fn authority(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }
}

/// The API server's client for agents.
#[derive(Clone)]
pub struct KubeletClient {
    tls: Arc<rustls::ClientConfig>,
}

impl KubeletClient {
    pub fn new(tls: Arc<rustls::ClientConfig>) -> Self {
        Self { tls }
    }

    /// Sends one request to the agent at `ep` on a new connection. `req`'s URI is the agent
    /// path and query. The connection serves upgrades.
    pub async fn send(
        &self,
        ep: &Endpoint,
        mut req: hyper::Request<Body>,
    ) -> Result<hyper::Response<hyper::body::Incoming>> {
        let addr = ep.authority();
        let tcp = tokio::time::timeout(CONNECT_TIMEOUT, tokio::net::TcpStream::connect(&addr))
            .await
            .map_err(|_| Error::ConnectTimeout { addr: addr.clone() })?
            .map_err(|source| Error::Connect {
                addr: addr.clone(),
                source,
            })?;
        let _ = tcp.set_nodelay(true);
        let server_name = match ep.host.parse::<std::net::IpAddr>() {
            Ok(ip) => rustls::pki_types::ServerName::IpAddress(ip.into()),
            Err(_) => rustls::pki_types::ServerName::try_from(ep.host.clone())
                .map_err(|e| Error::Request(format!("host {:?}: {e}", ep.host)))?,
        };
        let connector = tokio_rustls::TlsConnector::from(self.tls.clone());
        let tls = tokio::time::timeout(CONNECT_TIMEOUT, connector.connect(server_name, tcp))
            .await
            .map_err(|_| Error::ConnectTimeout { addr: addr.clone() })?
            .map_err(|source| Error::Connect {
                addr: addr.clone(),
                source,
            })?;
        let (mut sender, conn) =
            hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tls))
                .await
                .map_err(|source| Error::Http {
                    addr: addr.clone(),
                    source,
                })?;
        let conn_addr = addr.clone();
        tokio::spawn(async move {
            if let Err(e) = conn.with_upgrades().await {
                tracing::debug!(addr = %conn_addr, error = %e, "agent connection ended");
            }
        });
        req.headers_mut().insert(
            header::HOST,
            HeaderValue::from_str(&addr).map_err(|e| Error::Request(e.to_string()))?,
        );
        sender
            .send_request(req)
            .await
            .map_err(|source| Error::Http { addr, source })
    }

    /// GETs `path` from the agent and decodes the JSON answer, within `timeout`.
    pub async fn get_json(&self, ep: &Endpoint, path: &str, timeout: Duration) -> ApiResult<Value> {
        let run = async {
            let req = hyper::Request::get(path)
                .header(header::ACCEPT, "application/json")
                .body(Body::empty())
                .map_err(|e| ApiError::internal(e.to_string()))?;
            let resp = self.send(ep, req).await?;
            let status = resp.status();
            let body = http_body_util::BodyExt::collect(resp.into_body())
                .await
                .map_err(|e| ApiError::internal(format!("reading the agent's answer: {e}")))?
                .to_bytes();
            if !status.is_success() {
                return Err(ApiError::internal(format!(
                    "the agent answered {status}: {}",
                    String::from_utf8_lossy(&body)
                )));
            }
            serde_json::from_slice(&body)
                .map_err(|e| ApiError::internal(format!("decoding the agent's answer: {e}")))
        };
        tokio::time::timeout(timeout, run).await.map_err(|_| {
            ApiError::timeout(format!(
                "the agent at {} did not answer in time",
                ep.authority()
            ))
        })?
    }
}

/// Headers that describe one hop, never forwarded as they are.
fn hop_by_hop(name: &HeaderName) -> bool {
    matches!(
        name.as_str(),
        "connection"
            | "keep-alive"
            | "proxy-connection"
            | "proxy-authenticate"
            | "proxy-authorization"
            | "te"
            | "trailer"
            | "transfer-encoding"
            | "upgrade"
    )
}

fn is_upgrade(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| {
            v.split(',')
                .any(|t| t.trim().eq_ignore_ascii_case("upgrade"))
        })
        && headers.contains_key(header::UPGRADE)
}

/// Forwards `req` to `path_and_query` on the agent at `ep`: an upgrade is spliced, anything
/// else relayed. `status_errors` turns a non-2xx answer into a `Status` (for logs).
pub async fn forward(
    client: &KubeletClient,
    ep: &Endpoint,
    mut req: Request,
    path_and_query: &str,
    status_errors: bool,
) -> ApiResult<Response> {
    let upgrade = is_upgrade(req.headers());
    let client_upgrade = upgrade.then(|| hyper::upgrade::on(&mut req));
    let (parts, body) = req.into_parts();
    let uri: Uri = path_and_query
        .parse()
        .map_err(|e| ApiError::bad_request(format!("bad agent path {path_and_query:?}: {e}")))?;
    let mut out = hyper::Request::builder()
        .method(parts.method.clone())
        .uri(uri);
    for (name, value) in &parts.headers {
        if hop_by_hop(name)
            || name == header::HOST
            || name == header::AUTHORIZATION
            || name.as_str().starts_with("impersonate-")
        {
            continue;
        }
        out = out.header(name, value);
    }
    if upgrade {
        for name in [header::CONNECTION, header::UPGRADE] {
            for value in parts.headers.get_all(&name) {
                out = out.header(&name, value);
            }
        }
    }
    let body = if upgrade { Body::empty() } else { body };
    let out = out
        .body(body)
        .map_err(|e| ApiError::bad_request(format!("building the agent request: {e}")))?;
    let mut resp = client.send(ep, out).await?;
    let status = resp.status();
    if status == StatusCode::SWITCHING_PROTOCOLS {
        let Some(client_upgrade) = client_upgrade else {
            return Err(ApiError::internal("the agent switched protocols unasked"));
        };
        let agent_upgrade = hyper::upgrade::on(&mut resp);
        let mut answer = Response::builder().status(StatusCode::SWITCHING_PROTOCOLS);
        for (name, value) in resp.headers() {
            answer = answer.header(name, value);
        }
        tokio::spawn(async move {
            let (client, agent) = match tokio::join!(client_upgrade, agent_upgrade) {
                (Ok(c), Ok(a)) => (c, a),
                (c, a) => {
                    tracing::debug!(client = ?c.err(), agent = ?a.err(), "upgrade failed");
                    return;
                }
            };
            let mut client = hyper_util::rt::TokioIo::new(client);
            let mut agent = hyper_util::rt::TokioIo::new(agent);
            match tokio::io::copy_bidirectional(&mut client, &mut agent).await {
                Ok((up, down)) => tracing::debug!(up, down, "upgraded stream closed"),
                Err(e) => tracing::debug!(error = %e, "upgraded stream ended"),
            }
        });
        return answer
            .body(Body::empty())
            .map_err(|e| ApiError::internal(e.to_string()));
    }
    if status_errors && !status.is_success() {
        let body = http_body_util::BodyExt::collect(resp.into_body())
            .await
            .map(|b| b.to_bytes())
            .unwrap_or_default();
        return Err(agent_error(status, &body));
    }
    let (parts, body) = resp.into_parts();
    let mut answer = Response::builder().status(parts.status);
    for (name, value) in &parts.headers {
        if !hop_by_hop(name) {
            answer = answer.header(name, value);
        }
    }
    answer
        .body(Body::new(body))
        .map_err(|e| ApiError::internal(e.to_string()))
}

/// A `Status` for an agent's error answer: its own `Status` when it sent one, else its text
/// with the code it answered.
fn agent_error(status: StatusCode, body: &[u8]) -> ApiError {
    if let Ok(v) = serde_json::from_slice::<Value>(body) {
        if v["kind"] == "Status" {
            let reason = match v["reason"].as_str() {
                Some("NotFound") => "NotFound",
                Some("BadRequest") => "BadRequest",
                Some("Forbidden") => "Forbidden",
                _ => reason_for(status),
            };
            let mut e = ApiError::new(
                status.as_u16(),
                reason,
                v["message"].as_str().unwrap_or("").to_string(),
            );
            e.details = v.get("details").cloned();
            return e;
        }
    }
    let text = String::from_utf8_lossy(body).trim().to_string();
    let message = if text.is_empty() {
        format!("the node agent answered {status}")
    } else {
        text
    };
    ApiError::new(status.as_u16(), reason_for(status), message)
}

fn reason_for(status: StatusCode) -> &'static str {
    match status.as_u16() {
        400 => "BadRequest",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "NotFound",
        409 => "Conflict",
        422 => "Invalid",
        503 => "ServiceUnavailable",
        504 => "Timeout",
        _ => "InternalError",
    }
}

/// The container a pod request is for: the `container` query, else the pod's
/// `kubectl.kubernetes.io/default-container` annotation, else its only container.
pub fn pick_container(pod: &Value, requested: Option<&str>) -> ApiResult<String> {
    let name = pod
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or("");
    let names = |field: &str| -> Vec<String> {
        pod.pointer(&format!("/spec/{field}"))
            .and_then(Value::as_array)
            .map(|cs| {
                cs.iter()
                    .filter_map(|c| c["name"].as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default()
    };
    let containers = names("containers");
    let init = names("initContainers");
    let ephemeral = names("ephemeralContainers");
    let chosen = match requested.filter(|c| !c.is_empty()) {
        Some(c) => c.to_string(),
        None => {
            let annotated = pod
                .pointer("/metadata/annotations/kubectl.kubernetes.io~1default-container")
                .and_then(Value::as_str)
                .filter(|c| containers.iter().any(|have| have == c));
            match (annotated, containers.as_slice()) {
                (Some(c), _) => c.to_string(),
                (None, [only]) => only.clone(),
                _ => {
                    let mut msg = format!(
                        "a container name must be specified for pod {name}, choose one of: [{}]",
                        containers.join(" ")
                    );
                    if !init.is_empty() {
                        msg.push_str(&format!(
                            " or one of the init containers: [{}]",
                            init.join(" ")
                        ));
                    }
                    return Err(ApiError::bad_request(msg));
                }
            }
        }
    };
    if !containers.contains(&chosen) && !init.contains(&chosen) && !ephemeral.contains(&chosen) {
        return Err(ApiError::bad_request(format!(
            "container {chosen} is not valid for pod {name}"
        )));
    }
    Ok(chosen)
}

fn encode_segment(s: &str) -> String {
    form_urlencoded::byte_serialize(s.as_bytes())
        .collect::<String>()
        .replace('+', "%20")
}

impl ApiServer {
    /// The agent endpoint of node `name`.
    pub async fn node_endpoint(&self, name: &str) -> ApiResult<Endpoint> {
        let info = berth_api::registry::by_kind("Node").expect("nodes are registered");
        let key = format!("/registry/core/nodes/{name}");
        let node = match self.cache.get(&key) {
            Some(c) => (*c.object).clone(),
            None => {
                let target = Target {
                    info,
                    namespace: None,
                    name: Some(name.to_string()),
                    subresource: None,
                };
                self.current(&target)
                    .await?
                    .map(|(_, v)| v)
                    .ok_or_else(|| ApiError::not_found(info, name))?
            }
        };
        Ok(Endpoint::of_node(&node)?)
    }

    /// `pods/{name}/log`, `exec`, `attach` and `portforward`: forwarded to the agent of the
    /// pod's node.
    pub async fn pod_stream(
        &self,
        target: &Target,
        subresource: &str,
        req: Request,
        q: &Query,
    ) -> ApiResult<Response> {
        let pod_target = Target {
            subresource: None,
            ..target.clone()
        };
        let pod = self.get(&pod_target, &Query::default()).await?;
        let ns = target.namespace.as_deref().unwrap_or("");
        let name = target.name();
        let node = pod
            .pointer("/spec/nodeName")
            .and_then(Value::as_str)
            .filter(|n| !n.is_empty())
            .ok_or_else(|| {
                ApiError::bad_request(format!("pod {name} does not have a host assigned"))
            })?
            .to_string();
        let query = req
            .uri()
            .query()
            .map(|q| format!("?{q}"))
            .unwrap_or_default();
        let path = match subresource {
            "log" | "exec" | "attach" => {
                let container = pick_container(&pod, q.get("container"))?;
                if subresource == "exec" && q.all("command").is_empty() {
                    return Err(ApiError::bad_request(
                        "you must specify at least one command for the container",
                    ));
                }
                let base = match subresource {
                    "log" => "containerLogs",
                    other => other,
                };
                format!(
                    "/{base}/{}/{}/{}{query}",
                    encode_segment(ns),
                    encode_segment(name),
                    encode_segment(&container)
                )
            }
            "portforward" => format!(
                "/portForward/{}/{}{query}",
                encode_segment(ns),
                encode_segment(name)
            ),
            other => {
                return Err(ApiError::method_not_allowed(format!(
                    "pods/{other} is not served by node agents"
                )))
            }
        };
        if subresource == "log" && req.method() != Method::GET {
            return Err(ApiError::method_not_allowed(format!(
                "{} is not supported on pods/log",
                req.method()
            )));
        }
        let ep = self.node_endpoint(&node).await?;
        tracing::debug!(pod = %format!("{ns}/{name}"), %node, %path, "forwarding to the node agent");
        forward(&self.kubelet, &ep, req, &path, subresource == "log").await
    }

    /// `nodes/{name}/proxy/{path}`: any method, forwarded to the node's agent.
    pub async fn node_proxy(&self, node: &str, rest: &[&str], req: Request) -> ApiResult<Response> {
        let ep = self.node_endpoint(node).await?;
        let mut path = String::new();
        for seg in rest {
            path.push('/');
            path.push_str(seg);
        }
        if path.is_empty() || req.uri().path().ends_with('/') {
            path.push('/');
        }
        let query = req
            .uri()
            .query()
            .map(|q| format!("?{q}"))
            .unwrap_or_default();
        forward(&self.kubelet, &ep, req, &format!("{path}{query}"), false).await
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn endpoints_prefer_the_internal_ip() {
        let node = json!({"metadata": {"name": "n1"}, "status": {
            "addresses": [{"type": "Hostname", "address": "n1.local"},
                {"type": "InternalIP", "address": "10.0.0.5"}],
            "daemonEndpoints": {"kubeletEndpoint": {"Port": 10999}}}});
        assert_eq!(
            Endpoint::of_node(&node).unwrap(),
            Endpoint {
                host: "10.0.0.5".into(),
                port: 10999
            }
        );
        let by_name = json!({"metadata": {"name": "n1"}, "status": {
            "addresses": [{"type": "Hostname", "address": "n1.local"}]}});
        assert_eq!(
            Endpoint::of_node(&by_name).unwrap(),
            Endpoint {
                host: "n1.local".into(),
                port: DEFAULT_PORT
            }
        );
        let none = json!({"metadata": {"name": "n1"}, "status": {}});
        assert!(Endpoint::of_node(&none).is_err());
        let v6 = Endpoint {
            host: "fd00::1".into(),
            port: 1,
        };
        assert_eq!(v6.authority(), "[fd00::1]:1");
    }

    #[test]
    fn containers_are_defaulted_as_kubernetes_does() {
        let pod = |containers: Value, annotations: Value| {
            json!({"metadata": {"name": "web", "annotations": annotations},
                "spec": {"containers": containers, "initContainers": [{"name": "setup"}]}})
        };
        let one = pod(json!([{"name": "app"}]), json!({}));
        assert_eq!(pick_container(&one, None).unwrap(), "app");
        assert_eq!(pick_container(&one, Some("setup")).unwrap(), "setup");
        let err = pick_container(&one, Some("nope")).unwrap_err();
        assert_eq!(err.message, "container nope is not valid for pod web");
        let two = pod(json!([{"name": "a"}, {"name": "b"}]), json!({}));
        let err = pick_container(&two, None).unwrap_err();
        assert_eq!(err.code, 400);
        assert_eq!(
            err.message,
            "a container name must be specified for pod web, choose one of: [a b] or one of the init containers: [setup]"
        );
        let annotated = pod(
            json!([{"name": "a"}, {"name": "b"}]),
            json!({"kubectl.kubernetes.io/default-container": "b"}),
        );
        assert_eq!(pick_container(&annotated, None).unwrap(), "b");
        assert_eq!(pick_container(&annotated, Some("a")).unwrap(), "a");
    }
}
