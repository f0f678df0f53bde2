//! Field errors, as Kubernetes' `k8s.io/apimachinery/pkg/util/validation/field`: a path to the
//! field, an [`ErrorType`], the bad value and a detail; and [`Invalid`], the error a whole object
//! fails with, which turns into a `Status` with `details.causes`.

use std::fmt;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Status, StatusCause, StatusDetails};
use thiserror::Error;

/// What is wrong with a field, mirroring Kubernetes' `field.ErrorType`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorType {
    NotFound,
    Required,
    Duplicate,
    Invalid,
    NotSupported,
    Forbidden,
    TooLong,
    TooMany,
    Internal,
    TypeInvalid,
}

impl ErrorType {
    /// The `reason` of a `StatusCause` (Kubernetes' `metav1.CauseType`).
    pub fn reason(self) -> &'static str {
        match self {
            ErrorType::NotFound => "FieldValueNotFound",
            ErrorType::Required => "FieldValueRequired",
            ErrorType::Duplicate => "FieldValueDuplicate",
            ErrorType::Invalid => "FieldValueInvalid",
            ErrorType::NotSupported => "FieldValueNotSupported",
            ErrorType::Forbidden => "FieldValueForbidden",
            ErrorType::TooLong => "FieldValueTooLong",
            ErrorType::TooMany => "FieldValueTooMany",
            ErrorType::Internal => "InternalError",
            ErrorType::TypeInvalid => "FieldValueTypeInvalid",
        }
    }

    /// Kubernetes' text for the type, lower-cased.
    pub fn description(self) -> &'static str {
        match self {
            // Kubernetes' exact words: clients and users match on them.
            ErrorType::NotFound => "Not found",
            ErrorType::Required => "Required value",
            ErrorType::Duplicate => "Duplicate value",
            ErrorType::Invalid | ErrorType::TypeInvalid => "Invalid value",
            ErrorType::NotSupported => "Unsupported value",
            ErrorType::Forbidden => "Forbidden",
            ErrorType::TooLong => "Too long",
            ErrorType::TooMany => "Too many",
            ErrorType::Internal => "Internal error",
        }
    }
}

/// A path to a field: `spec.containers[1].ports[0].containerPort`, `data[key]`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub struct Path(String);

impl Path {
    pub fn new(root: &str) -> Self {
        Path(root.to_string())
    }

    pub fn child(&self, name: &str) -> Self {
        if self.0.is_empty() {
            Path(name.to_string())
        } else {
            Path(format!("{}.{name}", self.0))
        }
    }

    pub fn index(&self, i: usize) -> Self {
        Path(format!("{}[{i}]", self.0))
    }

    pub fn key(&self, key: &str) -> Self {
        Path(format!("{}[{key}]", self.0))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Path {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// One failing field.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("{field}: {}", self.body())]
pub struct FieldError {
    pub error_type: ErrorType,
    pub field: String,
    /// The bad value, rendered (strings quoted), when the type shows one.
    pub value: Option<String>,
    pub detail: String,
}

/// Every failing field of an object.
pub type ErrorList = Vec<FieldError>;

impl FieldError {
    fn new(error_type: ErrorType, path: &Path, value: Option<String>, detail: String) -> Self {
        FieldError {
            error_type,
            field: path.to_string(),
            value,
            detail,
        }
    }

    pub fn required(path: &Path, detail: impl Into<String>) -> Self {
        Self::new(ErrorType::Required, path, None, detail.into())
    }

    pub fn invalid(path: &Path, value: impl fmt::Debug, detail: impl Into<String>) -> Self {
        Self::new(
            ErrorType::Invalid,
            path,
            Some(format!("{value:?}")),
            detail.into(),
        )
    }

    pub fn not_found(path: &Path, value: impl fmt::Debug) -> Self {
        Self::new(
            ErrorType::NotFound,
            path,
            Some(format!("{value:?}")),
            String::new(),
        )
    }

    pub fn duplicate(path: &Path, value: impl fmt::Debug) -> Self {
        Self::new(
            ErrorType::Duplicate,
            path,
            Some(format!("{value:?}")),
            String::new(),
        )
    }

    pub fn not_supported(path: &Path, value: impl fmt::Debug, supported: &[&str]) -> Self {
        let list: Vec<String> = supported.iter().map(|s| format!("{s:?}")).collect();
        Self::new(
            ErrorType::NotSupported,
            path,
            Some(format!("{value:?}")),
            format!("supported values: {}", list.join(", ")),
        )
    }

    pub fn forbidden(path: &Path, detail: impl Into<String>) -> Self {
        Self::new(ErrorType::Forbidden, path, None, detail.into())
    }

    pub fn too_long(path: &Path, max: usize) -> Self {
        Self::new(
            ErrorType::TooLong,
            path,
            None,
            format!("must have at most {max} bytes"),
        )
    }

    pub fn too_many(path: &Path, actual: usize, max: usize) -> Self {
        Self::new(
            ErrorType::TooMany,
            path,
            Some(actual.to_string()),
            format!("must have at most {max} items"),
        )
    }

    /// The message without the field, as a `StatusCause` carries it.
    pub fn body(&self) -> String {
        let mut s = self.error_type.description().to_string();
        let shows_value = !matches!(
            self.error_type,
            ErrorType::Required | ErrorType::Forbidden | ErrorType::TooLong | ErrorType::Internal
        );
        if let (true, Some(value)) = (shows_value, &self.value) {
            s.push_str(": ");
            s.push_str(value);
        }
        if !self.detail.is_empty() {
            s.push_str(": ");
            s.push_str(&self.detail);
        }
        s
    }

    pub fn to_cause(&self) -> StatusCause {
        StatusCause {
            field: Some(self.field.clone()),
            message: Some(self.body()),
            reason: Some(self.error_type.reason().to_string()),
        }
    }
}

/// An object that failed validation, with every failing field.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("{kind} {name:?} is invalid: {}", summary(.errors))]
pub struct Invalid {
    /// API group of the kind (`""` for core).
    pub group: String,
    pub kind: String,
    pub name: String,
    pub errors: ErrorList,
}

fn summary(errors: &[FieldError]) -> String {
    match errors {
        [one] => one.to_string(),
        many => {
            let all: Vec<String> = many.iter().map(ToString::to_string).collect();
            format!("[{}]", all.join(", "))
        }
    }
}

impl Invalid {
    /// The `Status` the API server answers with: 422, reason `Invalid`, one cause per field.
    pub fn to_status(&self) -> Status {
        Status {
            code: Some(422),
            message: Some(self.to_string()),
            reason: Some("Invalid".to_string()),
            status: Some("Failure".to_string()),
            details: Some(StatusDetails {
                group: Some(self.group.clone()),
                kind: Some(self.kind.clone()),
                name: Some(self.name.clone()),
                causes: Some(self.errors.iter().map(FieldError::to_cause).collect()),
                ..Default::default()
            }),
            ..Default::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths() {
        let spec = Path::new("spec");
        assert_eq!(
            spec.child("containers")
                .index(1)
                .child("ports")
                .index(0)
                .child("containerPort")
                .as_str(),
            "spec.containers[1].ports[0].containerPort"
        );
        assert_eq!(Path::new("data").key("a.b").as_str(), "data[a.b]");
        assert_eq!(Path::default().child("reason").as_str(), "reason");
    }

    #[test]
    fn messages_follow_kubernetes_shapes() {
        let p = Path::new("spec").child("restartPolicy");
        assert_eq!(
            FieldError::required(&p, "").to_string(),
            "spec.restartPolicy: Required value"
        );
        assert_eq!(
            FieldError::invalid(&p, "x", "bad").to_string(),
            "spec.restartPolicy: Invalid value: \"x\": bad"
        );
        assert_eq!(
            FieldError::invalid(&p, -1, "must be greater than or equal to 0").to_string(),
            "spec.restartPolicy: Invalid value: -1: must be greater than or equal to 0"
        );
        assert_eq!(
            FieldError::not_supported(&p, "Sometimes", &["Always", "Never"]).to_string(),
            "spec.restartPolicy: Unsupported value: \"Sometimes\": supported values: \
             \"Always\", \"Never\""
        );
        assert_eq!(
            FieldError::too_long(&p, 10).to_string(),
            "spec.restartPolicy: Too long: must have at most 10 bytes"
        );
        assert_eq!(
            FieldError::duplicate(&p, "a").to_string(),
            "spec.restartPolicy: Duplicate value: \"a\""
        );
        assert_eq!(
            FieldError::forbidden(&p, "no").to_string(),
            "spec.restartPolicy: Forbidden: no"
        );
    }

    #[test]
    fn invalid_becomes_a_status_with_causes() {
        let invalid = Invalid {
            group: String::new(),
            kind: "Pod".into(),
            name: "web".into(),
            errors: vec![
                FieldError::required(&Path::new("spec").child("containers"), ""),
                FieldError::invalid(&Path::new("metadata").child("name"), "Web", "bad"),
            ],
        };
        assert_eq!(
            invalid.to_string(),
            "Pod \"web\" is invalid: [spec.containers: Required value, metadata.name: Invalid \
             value: \"Web\": bad]"
        );
        let status = invalid.to_status();
        assert_eq!(status.code, Some(422));
        assert_eq!(status.reason.as_deref(), Some("Invalid"));
        let details = status.details.unwrap();
        assert_eq!(details.kind.as_deref(), Some("Pod"));
        let causes = details.causes.unwrap();
        assert_eq!(causes.len(), 2);
        assert_eq!(causes[0].field.as_deref(), Some("spec.containers"));
        assert_eq!(causes[0].reason.as_deref(), Some("FieldValueRequired"));
        assert_eq!(
            causes[1].message.as_deref(),
            Some("Invalid value: \"Web\": bad")
        );
    }
}
