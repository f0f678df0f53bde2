//! The four patch formats, as the API server applies them: JSON patch (RFC 6902), JSON merge
//! patch (RFC 7386), strategic merge patch and server-side apply. The algorithms live in
//! `berth_api::patch` (pure functions); this module maps their errors to API errors.

use berth_api::patch as algo;
use berth_api::registry::ResourceInfo;
use serde_json::{json, Value};

use crate::error::ApiError;

pub use algo::merge_patch;

/// JSON patch; a patch that is not a list is a bad request, a failing operation is invalid.
pub fn json_patch(doc: &Value, patch: &Value) -> Result<Value, ApiError> {
    algo::json_patch(doc, patch).map_err(|e| match e {
        algo::JsonPatchError::NotAList | algo::JsonPatchError::Malformed { .. } => {
            ApiError::bad_request(e.to_string())
        }
        other => ApiError::new(422, "Invalid", other.to_string()),
    })
}

/// Strategic merge patch with the patch metadata of `kind`.
pub fn strategic_merge_patch(doc: &Value, patch: &Value, kind: &str) -> Result<Value, ApiError> {
    algo::strategic_merge_patch(doc, patch, kind).map_err(|e| ApiError::bad_request(e.to_string()))
}

/// Server-side apply of `applied` by `manager` onto `live` (absent: create).
pub fn apply(
    live: Option<&Value>,
    applied: &Value,
    manager: &str,
    force: bool,
    now: &str,
) -> Result<Value, ApplyFailure> {
    algo::apply(live, applied, manager, force, now).map_err(ApplyFailure)
}

/// A failed apply, kept structured until it becomes a `Status`.
#[derive(Debug)]
pub struct ApplyFailure(pub algo::ApplyError);

impl ApplyFailure {
    pub fn into_api(self, info: &ResourceInfo, name: &str) -> ApiError {
        match &self.0 {
            algo::ApplyError::Conflicts(conflicts) => {
                let causes: Vec<Value> = conflicts
                    .iter()
                    .map(|c| {
                        json!({"type": "FieldManagerConflict", "message": c.message(),
                            "field": c.field_path})
                    })
                    .collect();
                ApiError::new(409, "Conflict", self.0.to_string()).with_details(json!({
                    "name": name, "group": info.group, "kind": info.plural, "causes": causes}))
            }
            other => ApiError::bad_request(other.to_string()),
        }
    }
}
