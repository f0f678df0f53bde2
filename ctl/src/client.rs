//! The one way kctl reaches a cluster: a kube-rs [`kube::Client`] built from the kubeconfig,
//! used for raw requests so that kctl chooses its own media types (server-side Tables, apply
//! patches) and reads the server's `Status` errors itself.

use std::path::Path;

use berth_api::ResourceInfo;
use http::{Method, Request};
use http_body_util::BodyExt;
use kube::client::Body;
use kube::config::KubeConfigOptions;
use serde_json::Value;

use crate::error::{ApiError, Error, Result};
use crate::kubeconfig;

/// The Accept header of `get`: a server-side Table, else plain JSON.
pub const TABLE_ACCEPT: &str = "application/json;as=Table;v=v1;g=meta.k8s.io, application/json";
pub const JSON: &str = "application/json";
pub const APPLY_PATCH: &str = "application/apply-patch+yaml";
pub const MERGE_PATCH: &str = "application/merge-patch+json";
pub const STRATEGIC_MERGE_PATCH: &str = "application/strategic-merge-patch+json";
pub const JSON_PATCH: &str = "application/json-patch+json";

/// A connection to one cluster, with the namespace commands default to.
#[derive(Clone)]
pub struct Cluster {
    client: kube::Client,
    /// `-n`, else the context's namespace, else `default`.
    pub namespace: String,
    /// The API server's URL, as the kubeconfig gives it.
    pub server: String,
}

impl std::fmt::Debug for Cluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cluster")
            .field("server", &self.server)
            .field("namespace", &self.namespace)
            .finish()
    }
}

impl Cluster {
    /// Connects with the kubeconfig `--kubeconfig`, `KUBECONFIG` or `~/.kube/config` names,
    /// in its current context or `--context`.
    pub async fn connect(
        kubeconfig_flag: Option<&Path>,
        context: Option<&str>,
        namespace: Option<&str>,
    ) -> Result<Cluster> {
        let paths = kubeconfig::paths_from_env(kubeconfig_flag);
        let config = kubeconfig::load(&paths, kubeconfig_flag.is_some())?;
        let options = KubeConfigOptions {
            context: context.map(str::to_string),
            ..KubeConfigOptions::default()
        };
        let config = kube::Config::from_custom_kubeconfig(config, &options)
            .await
            .map_err(|e| Error::Config(format!("kubeconfig: {e}")))?;
        let server = config.cluster_url.to_string();
        let namespace = namespace
            .map(str::to_string)
            .unwrap_or_else(|| config.default_namespace.clone());
        let client = kube::Client::try_from(config).map_err(|source| Error::Connect {
            server: server.clone(),
            source: Box::new(source),
        })?;
        Ok(Cluster {
            client,
            namespace,
            server,
        })
    }

    /// The underlying kube-rs client, for the streaming protocols it implements (exec and
    /// port-forward over websockets).
    pub fn kube_client(&self) -> kube::Client {
        self.client.clone()
    }

    /// Sends one request; an answer of 400 or more becomes [`Error::Api`].
    pub async fn send(
        &self,
        method: Method,
        uri: &str,
        accept: &str,
        body: Option<(&str, Vec<u8>)>,
    ) -> Result<http::Response<Body>> {
        let mut builder = Request::builder()
            .method(method)
            .uri(uri)
            .header(http::header::ACCEPT, accept)
            .header(
                http::header::USER_AGENT,
                concat!("kctl/", env!("CARGO_PKG_VERSION")),
            );
        let body = match body {
            Some((content_type, bytes)) => {
                builder = builder.header(http::header::CONTENT_TYPE, content_type);
                Body::from(bytes)
            }
            None => Body::empty(),
        };
        let request = builder
            .body(body)
            .map_err(|e| Error::Usage(e.to_string()))?;
        let response = self
            .client
            .send(request)
            .await
            .map_err(|source| Error::Connect {
                server: self.server.clone(),
                source: Box::new(source),
            })?;
        let code = response.status().as_u16();
        if code >= 400 {
            let bytes = response
                .into_body()
                .collect()
                .await
                .map(|b| b.to_bytes().to_vec())
                .unwrap_or_default();
            return Err(Error::from(ApiError::from_response(code, &bytes)));
        }
        Ok(response)
    }

    /// Sends a request and reads the whole answer.
    pub async fn call(
        &self,
        method: Method,
        uri: &str,
        accept: &str,
        body: Option<(&str, Vec<u8>)>,
    ) -> Result<Vec<u8>> {
        let response = self.send(method, uri, accept, body).await?;
        let bytes = response
            .into_body()
            .collect()
            .await
            .map_err(|source| Error::Connect {
                server: self.server.clone(),
                source: Box::new(source),
            })?;
        Ok(bytes.to_bytes().to_vec())
    }

    /// Sends a request with a JSON body (or none) and parses the JSON answer.
    pub async fn json(
        &self,
        method: Method,
        uri: &str,
        accept: &str,
        body: Option<(&str, &Value)>,
    ) -> Result<Value> {
        let body = body.map(|(ct, v)| (ct, v.to_string().into_bytes()));
        let bytes = self.call(method, uri, accept, body).await?;
        if bytes.is_empty() {
            return Ok(Value::Null);
        }
        serde_json::from_slice(&bytes).map_err(|e| Error::Decode {
            what: uri.to_string(),
            message: e.to_string(),
        })
    }

    pub async fn get(&self, uri: &str) -> Result<Value> {
        self.json(Method::GET, uri, JSON, None).await
    }

    /// GETs a server-side Table (a plain list or object if the server does not print Tables).
    pub async fn get_table(&self, uri: &str) -> Result<Value> {
        self.json(Method::GET, uri, TABLE_ACCEPT, None).await
    }

    pub async fn post(&self, uri: &str, body: &Value) -> Result<Value> {
        self.json(Method::POST, uri, JSON, Some((JSON, body))).await
    }

    pub async fn put(&self, uri: &str, body: &Value) -> Result<Value> {
        self.json(Method::PUT, uri, JSON, Some((JSON, body))).await
    }

    pub async fn patch(&self, uri: &str, content_type: &str, body: &Value) -> Result<Value> {
        self.json(Method::PATCH, uri, JSON, Some((content_type, body)))
            .await
    }

    /// DELETE with background propagation, as kubectl deletes.
    pub async fn delete(&self, uri: &str) -> Result<Value> {
        let options = serde_json::json!({"propagationPolicy": "Background"});
        self.json(Method::DELETE, uri, JSON, Some((JSON, &options)))
            .await
    }

    /// Opens a streaming GET (watch, logs): the answer's body, read as it arrives.
    pub async fn stream(&self, uri: &str, accept: &str) -> Result<Stream> {
        let response = self.send(Method::GET, uri, accept, None).await?;
        Ok(Stream {
            body: response.into_body(),
            buffer: Vec::new(),
            server: self.server.clone(),
        })
    }
}

/// A response body read piece by piece.
pub struct Stream {
    body: Body,
    buffer: Vec<u8>,
    server: String,
}

impl std::fmt::Debug for Stream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Stream")
    }
}

impl Stream {
    /// The next non-empty data frame; `None` at the end.
    async fn next_data(&mut self) -> Result<Option<Vec<u8>>> {
        loop {
            match self.body.frame().await {
                None => return Ok(None),
                Some(Err(source)) => {
                    return Err(Error::Connect {
                        server: self.server.clone(),
                        source: Box::new(source),
                    })
                }
                Some(Ok(frame)) => match frame.into_data() {
                    Ok(data) if !data.is_empty() => return Ok(Some(data.to_vec())),
                    _ => {}
                },
            }
        }
    }

    /// The next piece of the body as it arrived; `None` at the end.
    pub async fn chunk(&mut self) -> Result<Option<Vec<u8>>> {
        if !self.buffer.is_empty() {
            return Ok(Some(std::mem::take(&mut self.buffer)));
        }
        self.next_data().await
    }

    /// The next full line (without its newline); a last line without one is returned too.
    pub async fn line(&mut self) -> Result<Option<String>> {
        loop {
            if let Some(at) = self.buffer.iter().position(|b| *b == b'\n') {
                let rest = self.buffer.split_off(at + 1);
                let mut line = std::mem::replace(&mut self.buffer, rest);
                line.pop();
                return Ok(Some(String::from_utf8_lossy(&line).into_owned()));
            }
            match self.next_data().await? {
                Some(data) => self.buffer.extend_from_slice(&data),
                None if self.buffer.is_empty() => return Ok(None),
                None => {
                    let line = std::mem::take(&mut self.buffer);
                    return Ok(Some(String::from_utf8_lossy(&line).into_owned()));
                }
            }
        }
    }
}

/// `/api/v1` for the core group, `/apis/<group>/<version>` otherwise.
pub fn group_version_path(info: &ResourceInfo) -> String {
    if info.group.is_empty() {
        format!("/api/{}", info.version)
    } else {
        format!("/apis/{}/{}", info.group, info.version)
    }
}

/// The collection URL of a kind: in one namespace, or across all (`None`, or a cluster-scoped
/// kind).
pub fn collection_path(info: &ResourceInfo, namespace: Option<&str>) -> String {
    match namespace {
        Some(ns) if info.namespaced() => format!(
            "{}/namespaces/{}/{}",
            group_version_path(info),
            ns,
            info.plural
        ),
        _ => format!("{}/{}", group_version_path(info), info.plural),
    }
}

/// The URL of one object.
pub fn object_path(info: &ResourceInfo, namespace: Option<&str>, name: &str) -> String {
    format!("{}/{}", collection_path(info, namespace), name)
}

/// Appends query parameters, leaving out those with empty values.
pub fn with_query(path: &str, params: &[(&str, &str)]) -> String {
    let mut query = form_urlencoded::Serializer::new(String::new());
    let mut any = false;
    for (key, value) in params {
        if !value.is_empty() {
            query.append_pair(key, value);
            any = true;
        }
    }
    if any {
        format!("{path}?{}", query.finish())
    } else {
        path.to_string()
    }
}

/// What a user typed for a kind (`deploy`, `pods`, `deployments.apps`), resolved.
pub fn resolve(name: &str) -> Result<&'static ResourceInfo> {
    berth_api::registry::resolve(name).ok_or_else(|| Error::UnknownResource(name.to_string()))
}

/// `deployment.apps` or `pod`: how kubectl names a kind in its messages.
pub fn kind_group(info: &ResourceInfo) -> String {
    let kind = info.kind.to_ascii_lowercase();
    if info.group.is_empty() {
        kind
    } else {
        format!("{kind}.{}", info.group)
    }
}

/// The namespace to use for a kind: none for a cluster-scoped one, else the given one.
pub fn scoped<'a>(info: &ResourceInfo, namespace: &'a str) -> Option<&'a str> {
    info.namespaced().then_some(namespace)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_follow_the_kubernetes_layout() {
        let deploy = resolve("deploy").unwrap();
        assert_eq!(
            object_path(deploy, Some("prod"), "web"),
            "/apis/apps/v1/namespaces/prod/deployments/web"
        );
        assert_eq!(collection_path(deploy, None), "/apis/apps/v1/deployments");
        let node = resolve("no").unwrap();
        assert_eq!(collection_path(node, Some("x")), "/api/v1/nodes");
        assert_eq!(
            with_query(
                "/api/v1/pods",
                &[("labelSelector", "app=web,tier!=db"), ("limit", "")]
            ),
            "/api/v1/pods?labelSelector=app%3Dweb%2Ctier%21%3Ddb"
        );
        assert_eq!(kind_group(deploy), "deployment.apps");
        assert_eq!(kind_group(node), "node");
        assert_eq!(
            resolve("widgets").unwrap_err().to_string(),
            "the server doesn't have a resource type \"widgets\""
        );
    }
}
