//! `metadata.managedFields` for ordinary writes: the fields a create, update or patch set are
//! recorded as owned by its field manager (operation `Update`), and taken from any other
//! manager, as the Kubernetes API server does. Server-side apply records its own entries.

use berth_api::patch::{update_managed_fields, Operation};
use serde_json::Value;

/// Updates `new`'s managed fields for a write by `manager` that turned `old` into `new`.
pub fn on_write(old: Option<&Value>, new: &mut Value, manager: &str, now: &str) {
    *new = update_managed_fields(old, new, manager, Operation::Update, now);
}
