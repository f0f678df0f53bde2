//! kctl's errors. An API error keeps the server's `Status` (reason, message, field causes) and
//! renders as kubectl does: `Error from server (Invalid): ...`, then one line per cause.

use std::fmt;
use std::path::PathBuf;

use serde_json::Value;
use thiserror::Error;

/// A failed API call: what the server said, as a Kubernetes `Status`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    /// HTTP status code.
    pub code: u16,
    /// The Status reason (`NotFound`, `Invalid`, ...), or one derived from the code.
    pub reason: String,
    pub message: String,
    pub causes: Vec<Cause>,
    /// What kctl was doing, e.g. `error when applying deployment.apps/web from "web.yaml"`.
    pub context: Option<String>,
}

/// One entry of `details.causes`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cause {
    pub field: String,
    pub reason: String,
    pub message: String,
}

impl ApiError {
    /// Reads an error response: a `Status` object when the body is one, else the body's text.
    pub fn from_response(code: u16, body: &[u8]) -> ApiError {
        let fallback_reason = reason_for_code(code).to_string();
        let status: Option<Value> = serde_json::from_slice(body).ok();
        match status {
            Some(status) if status["kind"] == "Status" => {
                let text = |v: &Value| v.as_str().unwrap_or_default().to_string();
                let reason = text(&status["reason"]);
                let causes = status["details"]["causes"]
                    .as_array()
                    .map(|causes| {
                        causes
                            .iter()
                            .map(|c| Cause {
                                field: text(&c["field"]),
                                reason: text(&c["reason"]),
                                message: text(&c["message"]),
                            })
                            .collect()
                    })
                    .unwrap_or_default();
                ApiError {
                    code,
                    reason: if reason.is_empty() {
                        fallback_reason
                    } else {
                        reason
                    },
                    message: text(&status["message"]),
                    causes,
                    context: None,
                }
            }
            _ => {
                let text = String::from_utf8_lossy(body).trim().to_string();
                let message = if text.is_empty() || code == 404 {
                    default_message(code)
                } else {
                    text
                };
                ApiError {
                    code,
                    reason: fallback_reason,
                    message,
                    causes: Vec::new(),
                    context: None,
                }
            }
        }
    }

    pub fn is_not_found(&self) -> bool {
        self.code == 404
    }
}

impl fmt::Display for ApiError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Error from server ({}): ", self.reason)?;
        if let Some(context) = &self.context {
            write!(f, "{context}: ")?;
        }
        write!(f, "{}", self.message)?;
        for cause in &self.causes {
            match (cause.field.is_empty(), cause.message.is_empty()) {
                (false, false) => write!(f, "\n  * {}: {}", cause.field, cause.message)?,
                (true, false) => write!(f, "\n  * {}", cause.message)?,
                (false, true) => write!(f, "\n  * {}: {}", cause.field, cause.reason)?,
                (true, true) => {}
            }
        }
        Ok(())
    }
}

fn reason_for_code(code: u16) -> &'static str {
    match code {
        400 => "BadRequest",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "NotFound",
        405 => "MethodNotAllowed",
        406 => "NotAcceptable",
        409 => "Conflict",
        410 => "Gone",
        413 => "RequestEntityTooLarge",
        415 => "UnsupportedMediaType",
        422 => "Invalid",
        429 => "TooManyRequests",
        500 => "InternalError",
        503 => "ServiceUnavailable",
        504 => "Timeout",
        _ => "Unknown",
    }
}

fn default_message(code: u16) -> String {
    match code {
        404 => "the server could not find the requested resource".to_string(),
        _ => format!("the server responded with status {code}"),
    }
}

#[derive(Debug, Error)]
pub enum Error {
    #[error("{0}")]
    Api(Box<ApiError>),
    #[error("cannot reach the API server at {server}: {source}")]
    Connect {
        server: String,
        #[source]
        source: Box<kube::Error>,
    },
    #[error("no kubeconfig: {0}")]
    NoKubeconfig(String),
    #[error("kubeconfig {path:?}: {message}")]
    Kubeconfig { path: PathBuf, message: String },
    #[error("{0}")]
    Config(String),
    #[error("cannot read {path:?}: {source}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot write {path:?}: {source}")]
    Write {
        path: String,
        #[source]
        source: std::io::Error,
    },
    /// A manifest that does not decode: names the file, the document and the line.
    #[error("error parsing {file:?}: {source}")]
    Manifest {
        file: String,
        #[source]
        source: Box<berth_api::decode::Error>,
    },
    /// A manifest object of a kind the cluster does not serve.
    #[error("error in {file:?} document {document} (line {line}): {message}")]
    ManifestObject {
        file: String,
        document: usize,
        line: usize,
        message: String,
    },
    #[error("the server doesn't have a resource type {0:?}")]
    UnknownResource(String),
    #[error("{0}")]
    Usage(String),
    #[error("{0}")]
    Unsupported(String),
    #[error("{0}")]
    Jsonpath(#[from] crate::jsonpath::Error),
    #[error("unexpected answer from the server for {what}: {message}")]
    Decode { what: String, message: String },
    #[error("timed out waiting for {0}")]
    Timeout(String),
    #[error("{0}")]
    Failed(String),
    /// A command run by `exec` ended with a non-zero exit code.
    #[error("command terminated with exit code {code}")]
    CommandExit { code: i32 },
    #[error("writing output: {0}")]
    Output(#[source] std::io::Error),
}

impl Error {
    /// Whether this is the server's answer (kubectl prints those without an `error: ` prefix).
    pub fn is_api(&self) -> bool {
        matches!(self, Error::Api(_))
    }

    /// Whether this is a 404 from the server.
    pub fn is_not_found(&self) -> bool {
        matches!(self, Error::Api(e) if e.is_not_found())
    }

    /// Adds what kctl was doing to an API error; other errors are returned as they are.
    pub fn context(self, context: impl Into<String>) -> Error {
        match self {
            Error::Api(mut e) => {
                e.context = Some(context.into());
                Error::Api(e)
            }
            other => other,
        }
    }
}

impl From<ApiError> for Error {
    fn from(e: ApiError) -> Error {
        Error::Api(Box::new(e))
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn invalid_status_renders_message_and_causes() {
        let body = br#"{"kind":"Status","apiVersion":"v1","status":"Failure",
            "message":"Deployment.apps \"web\" is invalid: spec.replicas: Invalid value: -1: must be greater than or equal to 0",
            "reason":"Invalid","code":422,
            "details":{"name":"web","group":"apps","kind":"Deployment","causes":[
              {"reason":"FieldValueInvalid","message":"Invalid value: -1: must be greater than or equal to 0","field":"spec.replicas"},
              {"reason":"FieldValueRequired","message":"Required value","field":"spec.selector"}]}}"#;
        let err = ApiError::from_response(422, body);
        assert_eq!(err.reason, "Invalid");
        assert_eq!(err.causes.len(), 2);
        let text = Error::from(err)
            .context("error when applying deployment.apps/web from \"web.yaml\"")
            .to_string();
        let lines: Vec<&str> = text.lines().collect();
        assert!(lines[0].starts_with(
            "Error from server (Invalid): error when applying deployment.apps/web from \"web.yaml\": Deployment.apps \"web\" is invalid"
        ));
        assert_eq!(
            lines[1],
            "  * spec.replicas: Invalid value: -1: must be greater than or equal to 0"
        );
        assert_eq!(lines[2], "  * spec.selector: Required value");
    }

    #[test]
    fn a_body_that_is_not_a_status_gets_a_reason_from_the_code() {
        let err = ApiError::from_response(404, b"404 page not found");
        assert_eq!(
            err.to_string(),
            "Error from server (NotFound): the server could not find the requested resource"
        );
        let err = ApiError::from_response(500, b"boom");
        assert_eq!(err.to_string(), "Error from server (InternalError): boom");
    }
}
