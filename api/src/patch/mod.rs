//! Patching and server-side apply, as pure functions on `serde_json::Value` for the API server's
//! PATCH handler, by content type:
//!
//! - `application/json-patch+json`: [`json_patch`] (RFC 6902).
//! - `application/merge-patch+json`: [`merge_patch`] (RFC 7386).
//! - `application/strategic-merge-patch+json`: [`strategic_merge_patch`], driven by the
//!   per-kind table in [`schema`] (merge keys, list strategies, from the Kubernetes struct
//!   tags).
//! - `application/apply-patch+yaml`: [`apply()`], server-side apply with field ownership in
//!   `metadata.managedFields` ([`fieldset`] holds the path sets and their `FieldsV1` form).
//!
//! Every other write (create, update, the three patch types) records ownership with
//! [`update_managed_fields`]. None of these functions change their inputs: a failed patch leaves
//! the stored object as it was.

pub mod apply;
pub mod fieldset;
pub mod json;
pub mod schema;
pub mod strategic;

pub use apply::{
    apply, update_managed_fields, ApplyError, Conflict, ManagedFieldsEntry, Operation,
};
pub use fieldset::{FieldSet, PathElement};
pub use json::{json_patch, merge_patch, Error as JsonPatchError};
pub use schema::{list_strategy, ListStrategy};
pub use strategic::{strategic_merge_patch, Error as StrategicPatchError};
