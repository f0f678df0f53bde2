//! The HTTP side: TLS termination, authentication, authorisation, audit, and dispatch of each
//! request to discovery, OpenAPI, or a resource verb.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::Request;
use axum::http::{header, HeaderMap, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{json, Value};
use tokio::net::TcpListener;

use crate::auth::{Attributes, Authorizer, Decision, Tokens, User};
use crate::cache::WatchCache;
use crate::error::{ApiError, ApiResult};
use crate::objects::{admit, meta_str, Update, WriteOptions};
use crate::request::{
    body_type, decode_json_or_yaml, response_format, BodyType, Format, Query, Target,
};
use crate::storage::Storage;
use crate::{discovery, patch, read};

/// Largest request body accepted, as kube-apiserver's default (3 MiB).
pub const MAX_BODY: usize = 3 * 1024 * 1024;

/// Everything a request handler needs.
pub struct ApiServer {
    pub storage: Arc<dyn Storage>,
    pub cache: Arc<WatchCache>,
    pub authz: Authorizer,
    pub tokens: Tokens,
    pub audit: Option<crate::audit::Audit>,
    /// The range Service cluster IPs come from.
    pub service_cidr: crate::alloc::Cidr,
    /// Signs and verifies ServiceAccount tokens.
    pub sa_tokens: crate::serviceaccount::TokenSigner,
    /// Calls node agents.
    pub kubelet: crate::kubelet::KubeletClient,
}

/// The identity the TLS layer established for a connection.
#[derive(Clone, Debug)]
pub struct Peer {
    pub addr: SocketAddr,
    pub cert_user: Option<User>,
}

/// Encodes a value in the negotiated format.
pub fn encode(status: StatusCode, v: &Value, format: Format) -> Response {
    match format {
        Format::Yaml => (
            status,
            [(header::CONTENT_TYPE, "application/yaml")],
            serde_yaml_ng::to_string(v).unwrap_or_default(),
        )
            .into_response(),
        Format::Table => (
            status,
            [(
                header::CONTENT_TYPE,
                "application/json;as=Table;v=v1;g=meta.k8s.io",
            )],
            serde_json::to_vec(v).unwrap_or_default(),
        )
            .into_response(),
        Format::Json => (
            status,
            [(header::CONTENT_TYPE, "application/json")],
            serde_json::to_vec(v).unwrap_or_default(),
        )
            .into_response(),
    }
}

fn with_warnings(mut resp: Response, warnings: &[String]) -> Response {
    for w in warnings {
        let value = format!("299 - \"{}\"", w.replace('"', "'"));
        if let Ok(h) = header::HeaderValue::from_str(&value) {
            resp.headers_mut().append("Warning", h);
        }
    }
    resp
}

fn verb_of(method: &Method, target: &Target, q: &Query) -> &'static str {
    match (method.as_str(), target.name.is_some()) {
        ("GET", true) => "get",
        ("GET", false) if q.flag("watch") => "watch",
        ("GET", false) => "list",
        ("POST", _) => "create",
        ("PUT", _) => "update",
        ("PATCH", _) => "patch",
        ("DELETE", true) => "delete",
        ("DELETE", false) => "deletecollection",
        _ => "unknown",
    }
}

impl ApiServer {
    /// `/metrics` in Prometheus' text format: the store member's Raft state, as etcd's
    /// `etcd_server_is_leader` and `etcd_server_has_leader` (for admins only, as in
    /// Kubernetes).
    fn prometheus_metrics(&self) -> Response {
        use std::fmt::Write;
        let mut out = String::new();
        if let Some(m) = self.storage.member_status() {
            let gauge = |out: &mut String, name: &str, help: &str, value: String| {
                let _ = write!(
                    out,
                    "# HELP {name} {help}\n# TYPE {name} gauge\n{name}{{member=\"{}\"}} {value}\n",
                    m.name
                );
            };
            gauge(
                &mut out,
                "berth_store_is_leader",
                "Whether this server's store member leads the Raft group (1) or not (0).",
                u8::from(m.is_leader).to_string(),
            );
            gauge(
                &mut out,
                "berth_store_has_leader",
                "Whether this server's store member knows of a leader (1) or not (0).",
                u8::from(m.has_leader).to_string(),
            );
            gauge(
                &mut out,
                "berth_store_term",
                "The Raft term this server's store member is in.",
                m.term.to_string(),
            );
        }
        (
            StatusCode::OK,
            [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
            out,
        )
            .into_response()
    }

    /// The caller: a bearer token if one is sent, else the client certificate.
    pub fn authenticate(&self, headers: &HeaderMap, peer: &Peer) -> Option<User> {
        if let Some(auth) = headers
            .get(header::AUTHORIZATION)
            .and_then(|h| h.to_str().ok())
        {
            let token = auth.strip_prefix("Bearer ").map(str::trim)?;
            return self
                .tokens
                .authenticate(token)
                .or_else(|| self.sa_tokens.authenticate(token, &self.cache))
                .or_else(|| crate::bootstrap_token::authenticate(token, &self.cache));
        }
        peer.cert_user.clone()
    }

    /// Serves one request end to end.
    pub async fn handle(self: Arc<Self>, peer: Peer, req: Request) -> Response {
        let method = req.method().clone();
        let path = req.uri().path().to_string();
        let query = Query::parse(req.uri().query());
        let Some(user) = self.authenticate(req.headers(), &peer) else {
            return ApiError::unauthorized().into_response();
        };
        let result = self.route(&user, req, &method, &path, &query).await;
        let resp = match result {
            Ok(r) => r,
            Err(e) => e.into_response(),
        };
        if let Some(audit) = &self.audit {
            if method != Method::GET {
                audit.record(&user, method.as_str(), &path, resp.status().as_u16());
            }
        }
        tracing::debug!(user = %user.name, %method, %path, status = resp.status().as_u16(), "request");
        resp
    }

    async fn route(
        &self,
        user: &User,
        req: Request,
        method: &Method,
        path: &str,
        q: &Query,
    ) -> ApiResult<Response> {
        let segs: Vec<&str> = path
            .trim_matches('/')
            .split('/')
            .filter(|s| !s.is_empty())
            .collect();
        if let ["api", "v1", "nodes", node, "proxy", rest @ ..] = segs.as_slice() {
            let verb = match *method {
                Method::GET | Method::HEAD => "get",
                Method::POST => "create",
                Method::PUT => "update",
                Method::PATCH => "patch",
                Method::DELETE => "delete",
                _ => "proxy",
            };
            let attrs = Attributes::Resource {
                verb: verb.into(),
                group: String::new(),
                resource: "nodes".into(),
                subresource: "proxy".into(),
                namespace: String::new(),
                name: node.to_string(),
            };
            self.check(user, &attrs)?;
            return self.node_proxy(node, rest, req).await;
        }
        if let ["apis", "metrics.k8s.io", "v1beta1", rest @ ..] = segs.as_slice() {
            if !rest.is_empty() {
                return self.serve_metrics(user, method, rest, q).await;
            }
        }
        let (group, version, rest) = match segs.as_slice() {
            ["api", "v1", rest @ ..] if !rest.is_empty() => ("", "v1", rest),
            ["apis", g, v, rest @ ..] if !rest.is_empty() => (*g, *v, rest),
            _ => {
                let attrs = Attributes::NonResource {
                    verb: method.as_str().to_ascii_lowercase(),
                    path: path.to_string(),
                };
                self.check(user, &attrs)?;
                if path == "/metrics" {
                    return Ok(self.prometheus_metrics());
                }
                return discovery::serve(method, path, req.headers());
            }
        };
        let target = Target::parse(group, version, rest)?;
        let streamed = target.info.kind == "Pod"
            && matches!(
                target.subresource.as_deref(),
                Some("log" | "exec" | "attach" | "portforward")
            );
        let verb = match target.subresource.as_deref() {
            // Kubernetes 1.30+ authorises websocket GETs of these as create, as the POSTs.
            Some("exec" | "attach" | "portforward") if streamed => "create",
            _ => verb_of(method, &target, q),
        };
        // As Kubernetes, a list or watch of one name (`fieldSelector=metadata.name=x`) is
        // authorised as a request for that name.
        let mut name = target.name.clone().unwrap_or_default();
        if name.is_empty() && matches!(verb, "list" | "watch") {
            if let Some(n) = q
                .get("fieldSelector")
                .and_then(|f| berth_api::fields::FieldSelector::parse(f).ok())
                .and_then(|f| f.requires_exact_match("metadata.name").map(str::to_string))
            {
                name = n;
            }
        }
        let attrs = Attributes::Resource {
            verb: verb.to_string(),
            group: target.info.group.to_string(),
            resource: target.info.plural.to_string(),
            subresource: target.subresource.clone().unwrap_or_default(),
            namespace: target.namespace.clone().unwrap_or_default(),
            name,
        };
        self.check_fresh(user, &attrs).await?;
        if streamed {
            let sub = target.subresource.clone().unwrap_or_default();
            return self.pod_stream(&target, &sub, req, q).await;
        }
        let accept = req
            .headers()
            .get(header::ACCEPT)
            .and_then(|h| h.to_str().ok())
            .map(str::to_string);
        let content_type = req
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|h| h.to_str().ok())
            .map(str::to_string);
        let body = read_body(req.into_body()).await?;
        let format = response_format(accept.as_deref())?;
        let object_format = if format == Format::Table && !matches!(verb, "get" | "list" | "watch")
        {
            Format::Json
        } else {
            format
        };
        match (verb, target.subresource.as_deref()) {
            ("get", None | Some("status") | Some("approval")) => {
                let v = self.get(&target, q).await?;
                if format == Format::Table {
                    let t = crate::table::to_table(
                        target.info,
                        &[&v],
                        meta_str(&v, "resourceVersion"),
                        jiff::Timestamp::now(),
                        crate::table::IncludeObject::Metadata,
                    );
                    return Ok(encode(StatusCode::OK, &t, Format::Table));
                }
                Ok(encode(StatusCode::OK, &v, format))
            }
            ("get", Some("scale")) => {
                let v = self.get(&target, q).await?;
                Ok(encode(
                    StatusCode::OK,
                    &scale_of(&target, &v),
                    object_format,
                ))
            }
            ("list", None) => {
                let result = self.list(&target, q).await?;
                Ok(read::list_response(target.info, &result, format))
            }
            ("watch", None) => self.watch(&target, q, format),
            ("create", None) => {
                if target.name.is_some() {
                    return Err(ApiError::method_not_allowed(
                        "POST is not allowed on a named object",
                    ));
                }
                let mut opts = WriteOptions::from_query(q, "unknown")?;
                opts.requester = Some(user.clone());
                let value = decode_body(content_type.as_deref(), &body)?;
                let w = self.create(&target, value, &opts).await?;
                Ok(with_warnings(
                    encode(StatusCode::CREATED, &w.object, object_format),
                    &w.warnings,
                ))
            }
            ("create", Some("token")) => {
                let request = if body.is_empty() {
                    json!({})
                } else {
                    decode_json_or_yaml(&body, false)?
                };
                let parent = Target {
                    subresource: None,
                    ..target.clone()
                };
                let sa = self.get(&parent, q).await?;
                let resp = crate::serviceaccount::token_response(&self.sa_tokens, &sa, &request)?;
                Ok(encode(StatusCode::CREATED, &resp, object_format))
            }
            ("create", Some("binding")) => {
                let value = decode_body(content_type.as_deref(), &body)?;
                let opts = WriteOptions::from_query(q, "unknown")?;
                self.bind(&target, value, &opts).await?;
                Ok(encode(
                    StatusCode::CREATED,
                    &json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "code": 201}),
                    object_format,
                ))
            }
            ("update", None | Some("status") | Some("approval")) => {
                let opts = WriteOptions::from_query(q, "unknown")?;
                let value = decode_body(content_type.as_deref(), &body)?;
                let w = self.update(&target, value, &opts).await?;
                let code = if w.created {
                    StatusCode::CREATED
                } else {
                    StatusCode::OK
                };
                Ok(with_warnings(
                    encode(code, &w.object, object_format),
                    &w.warnings,
                ))
            }
            ("update" | "patch", Some("scale")) => {
                let opts = WriteOptions::from_query(q, "unknown")?;
                let ty = body_type(content_type.as_deref())?;
                let w = self
                    .write_scale(&target, ty, &body, verb == "patch", &opts)
                    .await?;
                Ok(encode(
                    StatusCode::OK,
                    &scale_of(&target, &w.object),
                    object_format,
                ))
            }
            ("patch", None | Some("status") | Some("approval")) => {
                let ty = body_type(content_type.as_deref())?;
                let manager_default = if ty == BodyType::ApplyPatch {
                    ""
                } else {
                    "unknown"
                };
                let mut opts = WriteOptions::from_query(q, manager_default)?;
                opts.apply = ty == BodyType::ApplyPatch;
                opts.requester = Some(user.clone());
                if ty == BodyType::ApplyPatch && opts.field_manager.is_empty() {
                    return Err(ApiError::bad_request(
                        "PatchOptions.meta.k8s.io \"\" is invalid: fieldManager: Required value: is required for apply patch",
                    ));
                }
                let w = self
                    .patch(&target, ty, &body, q.flag("force"), &opts)
                    .await?;
                let code = if w.created {
                    StatusCode::CREATED
                } else {
                    StatusCode::OK
                };
                Ok(with_warnings(
                    encode(code, &w.object, object_format),
                    &w.warnings,
                ))
            }
            ("delete", None) => {
                let opts = crate::delete::DeleteOptions::parse(q, &body)?;
                let (object, gone) = self.delete(&target, &opts).await?;
                if gone {
                    Ok(encode(
                        StatusCode::OK,
                        &json!({"kind": "Status", "apiVersion": "v1", "metadata": {},
                            "status": "Success", "details": {"name": target.name(),
                            "group": target.info.group, "kind": target.info.plural,
                            "uid": meta_str(&object, "uid")}}),
                        object_format,
                    ))
                } else {
                    Ok(encode(StatusCode::OK, &object, object_format))
                }
            }
            ("deletecollection", None) => {
                let opts = crate::delete::DeleteOptions::parse(q, &body)?;
                let list = self.delete_collection(&target, q, &opts).await?;
                Ok(encode(StatusCode::OK, &list, object_format))
            }
            _ => Err(ApiError::method_not_allowed(format!(
                "{} is not supported on {}{}",
                method,
                target.info.qualified_plural(),
                target
                    .subresource
                    .as_deref()
                    .map(|s| format!("/{s}"))
                    .unwrap_or_default()
            ))),
        }
    }

    /// [`check`](Self::check), but a node refused on what the watch cache holds (the node a
    /// pod is bound to, who asked for a CSR) is checked again once the cache has caught up
    /// with the store: an agent may ask about an object it has just created.
    pub async fn check_fresh(&self, user: &User, attrs: &Attributes) -> ApiResult<()> {
        let first = self.check(user, attrs);
        if first.is_ok() || user.node_name().is_none() {
            return first;
        }
        let rev = self
            .storage
            .linearizable_revision()
            .await
            .map_err(|e| ApiError::unavailable(e.to_string()))?;
        if rev > self.cache.revision() {
            self.cache.wait_for(rev).await?;
            return self.check(user, attrs);
        }
        first
    }

    /// Authorises `attrs` for `user`: 403 with Kubernetes' wording when refused.
    pub fn check(&self, user: &User, attrs: &Attributes) -> ApiResult<()> {
        match self.authz.authorize(user, attrs) {
            Decision::Allow => Ok(()),
            Decision::Deny => Err(ApiError::forbidden(attrs.forbidden_message(user))),
        }
    }

    /// PUT: replace the object (creating it is not allowed, as for most Kubernetes kinds).
    pub async fn update(
        &self,
        target: &Target,
        value: Value,
        opts: &WriteOptions,
    ) -> ApiResult<crate::objects::Written> {
        let precondition = meta_str(&value, "resourceVersion")
            .filter(|s| !s.is_empty())
            .map(str::to_string);
        let info = target.info;
        let status_only = matches!(target.subresource.as_deref(), Some("status" | "approval"));
        self.guaranteed_update(target, opts, |old| {
            let Some(old) = old else {
                return Err(ApiError::not_found(info, target.name()));
            };
            let mut warnings = Vec::new();
            let mut body = value.clone();
            let meta = crate::objects::meta_mut(&mut body);
            meta.remove("resourceVersion");
            if let Some(ns) = &target.namespace {
                meta.entry("namespace").or_insert(Value::String(ns.clone()));
            }
            meta.entry("name")
                .or_insert(Value::String(target.name().to_string()));
            if status_only {
                // Validate the whole object as it will be stored.
                let mut merged = old.clone();
                if let Some(s) = body.get("status") {
                    merged["status"] = s.clone();
                }
                body = merged;
            }
            let object = admit(info, body, opts.validation, &mut warnings)?;
            Ok(Update::Replace {
                object,
                warnings,
                precondition: precondition.clone(),
            })
        })
        .await
    }

    /// PATCH in any of the four patch formats.
    pub async fn patch(
        &self,
        target: &Target,
        ty: BodyType,
        body: &[u8],
        force: bool,
        opts: &WriteOptions,
    ) -> ApiResult<crate::objects::Written> {
        let info = target.info;
        let patch_doc = match ty {
            BodyType::ApplyPatch => decode_json_or_yaml(body, true)?,
            BodyType::JsonPatch | BodyType::MergePatch | BodyType::StrategicMergePatch => {
                decode_json_or_yaml(body, false)?
            }
            _ => {
                return Err(ApiError::unsupported_media_type(
                    "a patch needs application/json-patch+json, application/merge-patch+json, application/strategic-merge-patch+json or application/apply-patch+yaml",
                ))
            }
        };
        let now = crate::objects::now();
        self.guaranteed_update(target, opts, |old| {
            let mut warnings = Vec::new();
            let Some(old) = old else {
                if ty == BodyType::ApplyPatch {
                    // Server-side apply creates what is missing.
                    let created = patch::apply(None, &patch_doc, &opts.field_manager, force, &now)
                        .map_err(|e| e.into_api(info, target.name()))?;
                    return Ok(Update::Create(created));
                }
                return Err(ApiError::not_found(info, target.name()));
            };
            let mut base = old.clone();
            if let Some(m) = base.get_mut("metadata").and_then(Value::as_object_mut) {
                m.remove("resourceVersion");
            }
            let patched = match ty {
                BodyType::JsonPatch => patch::json_patch(&base, &patch_doc)?,
                BodyType::MergePatch => patch::merge_patch(&base, &patch_doc),
                BodyType::StrategicMergePatch => {
                    patch::strategic_merge_patch(&base, &patch_doc, info.kind)?
                }
                BodyType::ApplyPatch => {
                    patch::apply(Some(&base), &patch_doc, &opts.field_manager, force, &now)
                        .map_err(|e| e.into_api(info, target.name()))?
                }
                _ => unreachable!("checked above"),
            };
            // A patch that sets metadata.resourceVersion makes it a precondition.
            let precondition = meta_str(&patched, "resourceVersion").map(str::to_string);
            let mut body = patched;
            if let Some(m) = body.get_mut("metadata").and_then(Value::as_object_mut) {
                m.remove("resourceVersion");
            }
            let object = admit(info, body, opts.validation, &mut warnings)?;
            Ok(Update::Replace {
                object,
                warnings,
                precondition,
            })
        })
        .await
    }

    /// `pods/binding`: assigns a pod to a node, once.
    async fn bind(&self, target: &Target, binding: Value, opts: &WriteOptions) -> ApiResult<()> {
        let node = binding
            .pointer("/target/name")
            .and_then(Value::as_str)
            .filter(|n| !n.is_empty())
            .ok_or_else(|| ApiError::bad_request("binding target name is required"))?
            .to_string();
        let pod_target = Target {
            subresource: Some("binding".into()),
            ..target.clone()
        };
        self.guaranteed_update(&pod_target, opts, |old| {
            let Some(old) = old else {
                return Err(ApiError::not_found(target.info, target.name()));
            };
            if let Some(current) = old.pointer("/spec/nodeName").and_then(Value::as_str) {
                if !current.is_empty() {
                    return Err(ApiError::conflict(
                        target.info,
                        target.name(),
                        &format!(
                            "pod {} is already assigned to node \"{current}\"",
                            target.name()
                        ),
                    ));
                }
            }
            if meta_str(old, "deletionTimestamp").is_some() {
                return Err(ApiError::conflict(
                    target.info,
                    target.name(),
                    "pod is being deleted, cannot be assigned to a host",
                ));
            }
            let mut new = old.clone();
            new["spec"]["nodeName"] = Value::String(node.clone());
            let conditions = new["status"]["conditions"]
                .as_array()
                .cloned()
                .unwrap_or_default();
            let mut conditions: Vec<Value> = conditions
                .into_iter()
                .filter(|c| c["type"] != "PodScheduled")
                .collect();
            conditions.push(json!({"type": "PodScheduled", "status": "True",
                "lastTransitionTime": crate::objects::now()}));
            new["status"]["conditions"] = Value::Array(conditions);
            Ok(Update::Replace {
                object: new,
                warnings: Vec::new(),
                precondition: None,
            })
        })
        .await
        .map(|_| ())
    }
}

/// The `autoscaling/v1` Scale of a scalable object.
fn scale_of(target: &Target, obj: &Value) -> Value {
    let selector = obj
        .pointer("/spec/selector/matchLabels")
        .and_then(Value::as_object)
        .map(|m| {
            m.iter()
                .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or("")))
                .collect::<Vec<_>>()
                .join(",")
        })
        .unwrap_or_default();
    json!({
        "kind": "Scale",
        "apiVersion": "autoscaling/v1",
        "metadata": {
            "name": meta_str(obj, "name"),
            "namespace": target.namespace,
            "uid": meta_str(obj, "uid"),
            "resourceVersion": meta_str(obj, "resourceVersion"),
            "creationTimestamp": meta_str(obj, "creationTimestamp"),
        },
        "spec": {"replicas": obj.pointer("/spec/replicas").cloned().unwrap_or(json!(0))},
        "status": {
            "replicas": obj.pointer("/status/replicas").cloned().unwrap_or(json!(0)),
            "selector": selector,
        },
    })
}

impl ApiServer {
    async fn write_scale(
        &self,
        target: &Target,
        ty: BodyType,
        body: &[u8],
        is_patch: bool,
        opts: &WriteOptions,
    ) -> ApiResult<crate::objects::Written> {
        let parent = Target {
            subresource: None,
            ..target.clone()
        };
        let doc = decode_json_or_yaml(body, ty == BodyType::Yaml || ty == BodyType::ApplyPatch)?;
        let info = target.info;
        self.guaranteed_update(&parent, opts, |old| {
            let Some(old) = old else {
                return Err(ApiError::not_found(info, target.name()));
            };
            let scale = scale_of(target, old);
            let new_scale = if is_patch {
                match ty {
                    BodyType::JsonPatch => patch::json_patch(&scale, &doc)?,
                    _ => patch::merge_patch(&scale, &doc),
                }
            } else {
                doc.clone()
            };
            let replicas = new_scale
                .pointer("/spec/replicas")
                .and_then(Value::as_i64)
                .unwrap_or(0);
            if replicas < 0 {
                return Err(ApiError::invalid_field(
                    info,
                    target.name(),
                    "spec.replicas",
                    "FieldValueInvalid",
                    "Invalid value: must be greater than or equal to 0",
                ));
            }
            let precondition = if is_patch {
                None
            } else {
                meta_str(&new_scale, "resourceVersion")
                    .filter(|s| !s.is_empty())
                    .map(str::to_string)
            };
            let mut new = old.clone();
            new["spec"]["replicas"] = json!(replicas);
            if let Some(m) = new.get_mut("metadata").and_then(Value::as_object_mut) {
                m.remove("resourceVersion");
            }
            Ok(Update::Replace {
                object: new,
                warnings: Vec::new(),
                precondition,
            })
        })
        .await
    }
}

/// Reads a request body of at most [`MAX_BODY`] bytes. A larger body is still read (up to a
/// bound) and discarded before the 413 answer, so HTTP/2 clients see a clean response rather
/// than a reset stream.
async fn read_body(body: Body) -> ApiResult<bytes::Bytes> {
    use futures::StreamExt;
    const DRAIN: usize = 64 * 1024 * 1024;
    let mut stream = body.into_data_stream();
    let mut buf = bytes::BytesMut::new();
    let mut total = 0usize;
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| ApiError::bad_request(format!("reading body: {e}")))?;
        total += chunk.len();
        tracing::trace!(total, "body chunk");
        if total > DRAIN {
            break;
        }
        if total <= MAX_BODY {
            buf.extend_from_slice(&chunk);
        }
    }
    if total > MAX_BODY {
        return Err(ApiError::too_large(MAX_BODY));
    }
    Ok(buf.freeze())
}

/// Decodes a create/update body by its media type.
fn decode_body(content_type: Option<&str>, body: &[u8]) -> ApiResult<Value> {
    match body_type(content_type)? {
        BodyType::Json => decode_json_or_yaml(body, false),
        BodyType::Yaml => decode_json_or_yaml(body, true),
        BodyType::Protobuf => crate::protobuf::decode(body).map_err(|e| match e {
            crate::protobuf::Error::ContentEncoding(_)
            | crate::protobuf::Error::UnknownKind { .. } => {
                ApiError::unsupported_media_type(&e.to_string())
            }
            other => ApiError::bad_request(other.to_string()),
        }),
        _ => Err(ApiError::unsupported_media_type(
            content_type.unwrap_or_default(),
        )),
    }
}

fn is_grpc(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|h| h.to_str().ok())
        .is_some_and(|ct| ct.starts_with("application/grpc"))
}

/// A gRPC call: authenticated like REST, then handed to the tonic service.
async fn serve_grpc(
    server: &ApiServer,
    peer: &Peer,
    mut grpc: crate::grpc::GrpcService<crate::grpc::Grpc>,
    mut req: hyper::Request<hyper::body::Incoming>,
) -> Response {
    use tower::Service;
    let Some(user) = server.authenticate(req.headers(), peer) else {
        return tonic::Status::unauthenticated("Unauthorized")
            .into_http::<tonic::body::Body>()
            .map(Body::new);
    };
    req.extensions_mut().insert(user);
    match grpc.call(req).await {
        Ok(resp) => resp.map(Body::new),
        Err(never) => match never {},
    }
}

/// Serves HTTPS on `listener` until the task is dropped.
pub async fn serve_tls(
    server: Arc<ApiServer>,
    listener: TcpListener,
    tls: Arc<rustls::ServerConfig>,
    shutdown: tokio::sync::watch::Receiver<bool>,
) {
    let acceptor = tokio_rustls::TlsAcceptor::from(tls);
    loop {
        let (tcp, addr) = match listener.accept().await {
            Ok(x) => x,
            Err(e) => {
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = tcp.set_nodelay(true);
        let acceptor = acceptor.clone();
        let server = server.clone();
        let mut shutdown = shutdown.clone();
        tokio::spawn(async move {
            let tls = match acceptor.accept(tcp).await {
                Ok(t) => t,
                Err(e) => {
                    tracing::debug!(%addr, error = %e, "tls handshake failed");
                    return;
                }
            };
            let cert_user = tls
                .get_ref()
                .1
                .peer_certificates()
                .and_then(|c| c.first())
                .and_then(|c| crate::auth::user_from_cert(c));
            let peer = Peer { addr, cert_user };
            let grpc = crate::grpc::GrpcService::new(crate::grpc::Grpc {
                server: server.clone(),
            });
            let svc =
                hyper::service::service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                    let server = server.clone();
                    let peer = peer.clone();
                    let grpc = grpc.clone();
                    async move {
                        if is_grpc(req.headers()) {
                            return Ok(serve_grpc(&server, &peer, grpc, req).await);
                        }
                        let req = req.map(Body::new);
                        Ok::<_, std::convert::Infallible>(server.handle(peer, req).await)
                    }
                });
            let io = hyper_util::rt::TokioIo::new(tls);
            let builder =
                hyper_util::server::conn::auto::Builder::new(hyper_util::rt::TokioExecutor::new());
            tokio::select! {
                r = builder.serve_connection_with_upgrades(io, svc) => {
                    if let Err(e) = r {
                        tracing::debug!(%addr, error = %e, "connection ended");
                    }
                }
                _ = shutdown.wait_for(|s| *s) => {}
            }
        });
    }
}
