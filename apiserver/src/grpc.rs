//! The `berth.v1.Api` gRPC service (`proto/berth/v1/api.proto`): Get, List, Watch, Create,
//! Update, Apply and Delete over any served resource, objects carried as JSON bytes with their
//! group/version/kind. Each call runs through the same authorisation, admission and storage
//! paths as REST; the caller's identity comes from the HTTPS layer (request extensions).

use std::pin::Pin;
use std::sync::Arc;

use berth_api::registry::{self, ResourceInfo};
use futures::{Stream, StreamExt};
use serde_json::Value;
use tonic::{Request, Response, Status};

use crate::auth::{Attributes, User};
use crate::error::{ApiError, ApiResult};
use crate::objects::{FieldValidation, WriteOptions};
use crate::request::{BodyType, Query, Target};
use crate::server::ApiServer;

/// Generated messages and service.
#[allow(clippy::all, missing_docs, rust_2018_idioms)]
pub mod pb {
    tonic::include_proto!("berth.v1");
}

use pb::api_server::Api;
pub use pb::api_server::ApiServer as GrpcService;

/// The service implementation over an [`ApiServer`].
#[derive(Clone)]
pub struct Grpc {
    pub server: Arc<ApiServer>,
}

/// Maps an API error to a gRPC status carrying the Kubernetes `Status` JSON in its details.
fn status(e: ApiError) -> Status {
    use tonic::Code;
    let code = match e.code {
        400 | 413 | 415 | 422 => Code::InvalidArgument,
        401 => Code::Unauthenticated,
        403 => Code::PermissionDenied,
        404 => Code::NotFound,
        409 if e.reason == "AlreadyExists" => Code::AlreadyExists,
        409 => Code::Aborted,
        410 => Code::OutOfRange,
        405 | 406 => Code::Unimplemented,
        503 => Code::Unavailable,
        504 => Code::DeadlineExceeded,
        _ => Code::Internal,
    };
    Status::with_details(code, e.message.clone(), e.status().to_string().into())
}

fn resource(gvk: Option<&pb::GroupVersionKind>) -> ApiResult<&'static ResourceInfo> {
    let gvk = gvk.ok_or_else(|| ApiError::bad_request("gvk is required"))?;
    registry::by_group_version_kind(&gvk.group, &gvk.version, &gvk.kind).ok_or_else(|| {
        ApiError::new(
            404,
            "NotFound",
            format!(
                "no kind {:?} is served in group {:?} version {:?}",
                gvk.kind, gvk.group, gvk.version
            ),
        )
    })
}

fn gvk(info: &ResourceInfo) -> pb::GroupVersionKind {
    pb::GroupVersionKind {
        group: info.group.to_string(),
        version: info.version.to_string(),
        kind: info.kind.to_string(),
    }
}

fn object(info: &ResourceInfo, v: &Value) -> pb::Object {
    pb::Object {
        gvk: Some(gvk(info)),
        json: serde_json::to_vec(v).unwrap_or_default(),
    }
}

fn some(s: &str) -> Option<String> {
    (!s.is_empty()).then(|| s.to_string())
}

fn target(
    info: &'static ResourceInfo,
    namespace: &str,
    name: &str,
    sub: &str,
) -> ApiResult<Target> {
    if info.namespaced() && namespace.is_empty() && !name.is_empty() {
        return Err(ApiError::bad_request(format!(
            "{} is namespaced: a namespace is required",
            info.qualified_plural()
        )));
    }
    if !info.namespaced() && !namespace.is_empty() {
        return Err(ApiError::bad_request(format!(
            "{} is cluster-scoped: no namespace is allowed",
            info.qualified_plural()
        )));
    }
    if !sub.is_empty() && !info.has_subresource(sub) {
        return Err(ApiError::path_not_found());
    }
    Ok(Target {
        info,
        namespace: some(namespace),
        name: some(name),
        subresource: some(sub),
    })
}

/// The object in a write request: its kind, namespace and name, and its JSON.
fn decode_object(o: Option<&pb::Object>) -> ApiResult<(&'static ResourceInfo, Value)> {
    let o = o.ok_or_else(|| ApiError::bad_request("object is required"))?;
    let info = resource(o.gvk.as_ref())?;
    let v: Value = serde_json::from_slice(&o.json)
        .map_err(|e| ApiError::bad_request(format!("object json: {e}")))?;
    Ok((info, v))
}

fn meta(v: &Value, field: &str) -> String {
    crate::objects::meta_str(v, field)
        .unwrap_or_default()
        .to_string()
}

fn options(o: Option<&pb::WriteOptions>, default_manager: &str) -> ApiResult<WriteOptions> {
    let o = o.cloned().unwrap_or_default();
    let validation = match o.field_validation.as_str() {
        "" | "Strict" => FieldValidation::Strict,
        "Warn" => FieldValidation::Warn,
        "Ignore" => FieldValidation::Ignore,
        other => {
            return Err(ApiError::bad_request(format!(
                "field_validation must be Ignore, Warn or Strict (got {other:?})"
            )))
        }
    };
    Ok(WriteOptions {
        dry_run: o.dry_run,
        field_manager: some(&o.field_manager).unwrap_or_else(|| default_manager.to_string()),
        validation,
        apply: false,
        requester: None,
    })
}

fn write_response(info: &ResourceInfo, w: crate::objects::Written) -> pb::WriteResponse {
    pb::WriteResponse {
        object: Some(object(info, &w.object)),
        created: w.created,
        warnings: w.warnings,
    }
}

impl Grpc {
    fn user<T>(req: &Request<T>) -> Result<User, Status> {
        req.extensions()
            .get::<User>()
            .cloned()
            .ok_or_else(|| status(ApiError::unauthorized()))
    }

    fn authorize(&self, user: &User, verb: &str, t: &Target) -> ApiResult<()> {
        let attrs = Attributes::Resource {
            verb: verb.to_string(),
            group: t.info.group.to_string(),
            resource: t.info.plural.to_string(),
            subresource: t.subresource.clone().unwrap_or_default(),
            namespace: t.namespace.clone().unwrap_or_default(),
            name: t.name.clone().unwrap_or_default(),
        };
        self.server.check(user, &attrs)
    }
}

type WatchStream = Pin<Box<dyn Stream<Item = Result<pb::WatchEvent, Status>> + Send>>;

#[tonic::async_trait]
impl Api for Grpc {
    async fn get(&self, req: Request<pb::GetRequest>) -> Result<Response<pb::Object>, Status> {
        let user = Self::user(&req)?;
        let r = req.into_inner().r#ref.unwrap_or_default();
        let run = async {
            let info = resource(r.gvk.as_ref())?;
            let t = target(info, &r.namespace, &r.name, &r.subresource)?;
            if t.name.is_none() {
                return Err(ApiError::bad_request("name is required"));
            }
            self.authorize(&user, "get", &t)?;
            let v = self.server.get(&t, &Query::default()).await?;
            Ok(object(info, &v))
        };
        run.await.map(Response::new).map_err(status)
    }

    async fn list(
        &self,
        req: Request<pb::ListRequest>,
    ) -> Result<Response<pb::ListResponse>, Status> {
        let user = Self::user(&req)?;
        let r = req.into_inner();
        let run = async {
            let info = resource(r.gvk.as_ref())?;
            let t = target(info, &r.namespace, "", "")?;
            self.authorize(&user, "list", &t)?;
            let q = Query::from_pairs([
                ("labelSelector", r.label_selector),
                ("fieldSelector", r.field_selector),
                (
                    "limit",
                    if r.limit > 0 {
                        r.limit.to_string()
                    } else {
                        String::new()
                    },
                ),
                ("continue", r.r#continue),
                ("resourceVersion", r.resource_version),
            ]);
            let result = self.server.list(&t, &q).await?;
            Ok(pb::ListResponse {
                items: result.items.iter().map(|v| object(info, v)).collect(),
                resource_version: result.revision.to_string(),
                r#continue: result.continue_token.unwrap_or_default(),
            })
        };
        run.await.map(Response::new).map_err(status)
    }

    type WatchStream = WatchStream;

    async fn watch(
        &self,
        req: Request<pb::WatchRequest>,
    ) -> Result<Response<Self::WatchStream>, Status> {
        let user = Self::user(&req)?;
        let r = req.into_inner();
        let run = || {
            let info = resource(r.gvk.as_ref())?;
            let t = target(info, &r.namespace, "", "")?;
            self.authorize(&user, "watch", &t)?;
            let q = Query::from_pairs([
                ("labelSelector", r.label_selector.clone()),
                ("fieldSelector", r.field_selector.clone()),
                ("resourceVersion", r.resource_version.clone()),
                (
                    "allowWatchBookmarks",
                    if r.allow_bookmarks {
                        "true".into()
                    } else {
                        String::new()
                    },
                ),
                (
                    "timeoutSeconds",
                    if r.timeout_seconds > 0 {
                        r.timeout_seconds.to_string()
                    } else {
                        String::new()
                    },
                ),
            ]);
            let rx = self.server.watch_events(&t, &q)?;
            Ok((info, rx))
        };
        let (info, rx) = run().map_err(status)?;
        let stream = tokio_stream::wrappers::ReceiverStream::new(rx).map(move |item| {
            Ok(pb::WatchEvent {
                r#type: item.kind.to_string(),
                object: Some(object(info, &item.object)),
            })
        });
        Ok(Response::new(Box::pin(stream)))
    }

    async fn create(
        &self,
        req: Request<pb::CreateRequest>,
    ) -> Result<Response<pb::WriteResponse>, Status> {
        let user = Self::user(&req)?;
        let r = req.into_inner();
        let run = async {
            let (info, v) = decode_object(r.object.as_ref())?;
            let t = target(info, &meta(&v, "namespace"), "", "")?;
            self.authorize(&user, "create", &t)?;
            let mut opts = options(r.options.as_ref(), "grpc")?;
            opts.requester = Some(user.clone());
            let w = self.server.create(&t, v, &opts).await?;
            Ok(write_response(info, w))
        };
        run.await.map(Response::new).map_err(status)
    }

    async fn update(
        &self,
        req: Request<pb::UpdateRequest>,
    ) -> Result<Response<pb::WriteResponse>, Status> {
        let user = Self::user(&req)?;
        let r = req.into_inner();
        let run = async {
            let (info, v) = decode_object(r.object.as_ref())?;
            if !matches!(r.subresource.as_str(), "" | "status") {
                return Err(ApiError::bad_request("subresource must be empty or status"));
            }
            let t = target(
                info,
                &meta(&v, "namespace"),
                &meta(&v, "name"),
                &r.subresource,
            )?;
            self.authorize(&user, "update", &t)?;
            let opts = options(r.options.as_ref(), "grpc")?;
            let w = self.server.update(&t, v, &opts).await?;
            Ok(write_response(info, w))
        };
        run.await.map(Response::new).map_err(status)
    }

    async fn apply(
        &self,
        req: Request<pb::ApplyRequest>,
    ) -> Result<Response<pb::WriteResponse>, Status> {
        let user = Self::user(&req)?;
        let r = req.into_inner();
        let run = async {
            let (info, v) = decode_object(r.object.as_ref())?;
            let t = target(info, &meta(&v, "namespace"), &meta(&v, "name"), "")?;
            if t.name.is_none() {
                return Err(ApiError::bad_request("metadata.name is required"));
            }
            self.authorize(&user, "patch", &t)?;
            let mut opts = options(r.options.as_ref(), "")?;
            opts.requester = Some(user.clone());
            if opts.field_manager.is_empty() {
                return Err(ApiError::bad_request("field_manager is required for apply"));
            }
            opts.apply = true;
            let body = serde_json::to_vec(&v).map_err(|e| ApiError::internal(e.to_string()))?;
            let w = self
                .server
                .patch(&t, BodyType::ApplyPatch, &body, r.force, &opts)
                .await?;
            Ok(write_response(info, w))
        };
        run.await.map(Response::new).map_err(status)
    }

    async fn delete(
        &self,
        req: Request<pb::DeleteRequest>,
    ) -> Result<Response<pb::DeleteResponse>, Status> {
        let user = Self::user(&req)?;
        let r = req.into_inner();
        let run = async {
            let reference = r.r#ref.clone().unwrap_or_default();
            let info = resource(reference.gvk.as_ref())?;
            let t = target(info, &reference.namespace, &reference.name, "")?;
            if t.name.is_none() {
                return Err(ApiError::bad_request("name is required"));
            }
            self.authorize(&user, "delete", &t)?;
            let opts = crate::delete::DeleteOptions {
                grace_period: r.grace_period_seconds,
                propagation: some(&r.propagation_policy),
                uid: some(&r.precondition_uid),
                resource_version: some(&r.precondition_resource_version),
                dry_run: r.dry_run,
            };
            opts.check()?;
            let (v, deleted) = self.server.delete(&t, &opts).await?;
            Ok(pb::DeleteResponse {
                object: Some(object(info, &v)),
                deleted,
            })
        };
        run.await.map(Response::new).map_err(status)
    }
}
