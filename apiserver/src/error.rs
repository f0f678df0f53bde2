//! API errors as Kubernetes reports them: a `Status` with an HTTP code, a reason clients
//! switch on (`NotFound`, `AlreadyExists`, `Conflict`, `Invalid`...), a message kubectl prints
//! after `Error from server (<reason>): `, and details naming the object.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use berth_api::registry::ResourceInfo;
use berth_api::validation::Invalid;
use serde_json::{json, Value};

use crate::{cache, storage};

/// An error answered to an API client.
#[derive(Debug, Clone)]
pub struct ApiError {
    pub code: u16,
    pub reason: &'static str,
    pub message: String,
    pub details: Option<Value>,
}

pub type ApiResult<T> = std::result::Result<T, ApiError>;

fn details(info: &ResourceInfo, name: &str) -> Value {
    json!({"name": name, "group": info.group, "kind": info.plural})
}

impl ApiError {
    pub fn new(code: u16, reason: &'static str, message: impl Into<String>) -> Self {
        Self {
            code,
            reason,
            message: message.into(),
            details: None,
        }
    }

    pub fn with_details(mut self, details: Value) -> Self {
        self.details = Some(details);
        self
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(400, "BadRequest", message)
    }

    pub fn not_found(info: &ResourceInfo, name: &str) -> Self {
        Self::new(
            404,
            "NotFound",
            format!("{} \"{name}\" not found", info.qualified_plural()),
        )
        .with_details(details(info, name))
    }

    pub fn path_not_found() -> Self {
        Self::new(
            404,
            "NotFound",
            "the server could not find the requested resource",
        )
    }

    pub fn already_exists(info: &ResourceInfo, name: &str) -> Self {
        Self::new(
            409,
            "AlreadyExists",
            format!("{} \"{name}\" already exists", info.qualified_plural()),
        )
        .with_details(details(info, name))
    }

    pub fn conflict(info: &ResourceInfo, name: &str, why: &str) -> Self {
        Self::new(
            409,
            "Conflict",
            format!(
                "Operation cannot be fulfilled on {} \"{name}\": {why}",
                info.qualified_plural()
            ),
        )
        .with_details(details(info, name))
    }

    pub fn modified(info: &ResourceInfo, name: &str) -> Self {
        Self::conflict(
            info,
            name,
            "the object has been modified; please apply your changes to the latest version and \
             try again",
        )
    }

    pub fn invalid(e: &Invalid) -> Self {
        let status = serde_json::to_value(e.to_status()).unwrap_or(Value::Null);
        Self {
            code: 422,
            reason: "Invalid",
            message: e.to_string(),
            details: status.get("details").cloned(),
        }
    }

    /// A 422 naming one field, for checks made by the API server itself.
    pub fn invalid_field(
        info: &ResourceInfo,
        name: &str,
        field: &str,
        cause_reason: &str,
        message: &str,
    ) -> Self {
        let kind = if info.group.is_empty() {
            info.kind.to_string()
        } else {
            format!("{}.{}", info.kind, info.group)
        };
        Self::new(
            422,
            "Invalid",
            format!("{kind} \"{name}\" is invalid: {field}: {message}"),
        )
        .with_details(json!({
            "name": name, "group": info.group, "kind": info.kind,
            "causes": [{"reason": cause_reason, "message": message, "field": field}],
        }))
    }

    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::new(403, "Forbidden", message)
    }

    pub fn unauthorized() -> Self {
        Self::new(401, "Unauthorized", "Unauthorized")
    }

    pub fn method_not_allowed(message: impl Into<String>) -> Self {
        Self::new(405, "MethodNotAllowed", message)
    }

    pub fn unsupported_media_type(content_type: &str) -> Self {
        Self::new(
            415,
            "UnsupportedMediaType",
            format!("the body of the request was in an unknown format - accepted media types include: application/json, application/yaml, application/vnd.kubernetes.protobuf (got {content_type:?})"),
        )
    }

    pub fn not_acceptable(accept: &str) -> Self {
        Self::new(
            406,
            "NotAcceptable",
            format!("only the following media types are accepted: application/json, application/yaml, application/json;as=Table;v=v1;g=meta.k8s.io (got {accept:?})"),
        )
    }

    pub fn too_large(limit: usize) -> Self {
        Self::new(
            413,
            "RequestEntityTooLarge",
            format!("Request entity too large: limit is {limit}"),
        )
    }

    pub fn gone(message: impl Into<String>) -> Self {
        Self::new(410, "Expired", message)
    }

    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(500, "InternalError", message)
    }

    pub fn timeout(message: impl Into<String>) -> Self {
        Self::new(504, "Timeout", message)
    }

    pub fn unavailable(message: impl Into<String>) -> Self {
        Self::new(503, "ServiceUnavailable", message)
    }

    /// The `Status` object.
    pub fn status(&self) -> Value {
        let mut s = json!({
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
            "code": self.code,
        });
        if let Some(d) = &self.details {
            s["details"] = d.clone();
        }
        s
    }

    /// Maps a store error on the object `name` of `info`.
    pub fn from_storage(e: storage::Error, info: &ResourceInfo, name: &str) -> Self {
        match e {
            storage::Error::AlreadyExists { .. } => Self::already_exists(info, name),
            storage::Error::NotFound { .. } => Self::not_found(info, name),
            storage::Error::Conflict { .. } => Self::modified(info, name),
            storage::Error::Compacted {
                requested,
                compacted,
            } => Self::gone(format!(
                "too old resource version: {requested} ({compacted})"
            )),
            storage::Error::FutureRevision { requested } => {
                Self::timeout(format!("Too large resource version: {requested}"))
            }
            storage::Error::TooLarge { size, max } => Self::new(
                413,
                "RequestEntityTooLarge",
                format!("etcdserver: request is too large ({size} bytes, limit {max})"),
            ),
            storage::Error::Unavailable(m) => Self::unavailable(m),
        }
    }
}

impl From<cache::Error> for ApiError {
    fn from(e: cache::Error) -> Self {
        match e {
            cache::Error::TooOld { requested, oldest } => {
                Self::gone(format!("too old resource version: {requested} ({oldest})"))
            }
            cache::Error::TooLarge { requested, current } => Self::timeout(format!(
                "Too large resource version: {requested}, current: {current}"
            ))
            .with_details(json!({"causes": [{"reason": "ResourceVersionTooLarge",
                "message": "Too large resource version"}], "retryAfterSeconds": 1})),
            cache::Error::Storage(e) => Self::unavailable(e.to_string()),
        }
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({}): {}", self.code, self.reason, self.message)
    }
}

impl std::error::Error for ApiError {}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let code = StatusCode::from_u16(self.code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        (
            code,
            [(axum::http::header::CONTENT_TYPE, "application/json")],
            self.status().to_string(),
        )
            .into_response()
    }
}
