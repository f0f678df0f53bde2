//! Server-side apply and field ownership, with the semantics of Kubernetes' structured-merge-diff.
//!
//! Every object carries `metadata.managedFields`: one entry per manager and operation, each with
//! the [`FieldSet`] that manager owns. [`apply`] merges an apply configuration into the live
//! object and moves ownership; [`update_managed_fields`] records who changed what on an ordinary
//! create, update or patch.
//!
//! Apply, for manager `m`:
//! 1. The configuration is merged into the live object: objects key by key, keyed lists item by
//!    item ([`ListType::Map`]), set lists value by value, everything else replaced.
//! 2. A field another manager owns whose value the merge changes (or adds) is a [`Conflict`],
//!    unless `force`, in which case it becomes `m`'s alone. Equal values are shared: both own them.
//! 3. `m` owns exactly the fields of its configuration.
//! 4. Fields `m` owned before and no longer applies are removed from the object, unless another
//!    manager owns them (or something below them).
//!
//! Managers with nothing left are dropped. `apiVersion`, `kind` and the server-set metadata
//! (`name`, `namespace`, `uid`, `resourceVersion`, `generation`, `creationTimestamp`,
//! `deletionTimestamp`, `managedFields`...) are never owned; `status` in an apply configuration
//! is ignored, as the API server resets it for the main resource.

use std::cmp::Ordering;
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use serde_json::{json, Map, Value};
use thiserror::Error;

use super::fieldset::{self, canonical, collect, item_element, list_elements, path_string};
use super::fieldset::{FieldSet, PathElement};
use super::json::json_equal;
use super::schema::{self, ListType, Shape};

/// The manager Kubernetes gives the fields of an object that had no managed fields when it was
/// first applied to.
pub const BEFORE_FIRST_APPLY: &str = "before-first-apply";

/// Metadata the server sets, which no manager owns and an apply configuration cannot set.
const SERVER_METADATA: &[&str] = &[
    "creationTimestamp",
    "deletionGracePeriodSeconds",
    "deletionTimestamp",
    "generation",
    "managedFields",
    "resourceVersion",
    "selfLink",
    "uid",
];

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Operation {
    Apply,
    Update,
}

impl Operation {
    pub fn as_str(self) -> &'static str {
        match self {
            Operation::Apply => "Apply",
            Operation::Update => "Update",
        }
    }
}

impl fmt::Display for Operation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One entry of `metadata.managedFields`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ManagedFieldsEntry {
    pub manager: String,
    pub operation: Operation,
    pub api_version: String,
    pub time: Option<String>,
    pub subresource: Option<String>,
    pub fields: FieldSet,
}

impl ManagedFieldsEntry {
    /// Whether this entry is the one of `manager` doing `operation` (appliers are one manager
    /// whatever the version they apply; updaters are one per version).
    fn is(&self, manager: &str, operation: Operation, api_version: &str) -> bool {
        self.manager == manager
            && self.operation == operation
            && self.subresource.is_none()
            && (operation == Operation::Apply || self.api_version == api_version)
    }

    fn same_manager(&self, other: &ManagedFieldsEntry) -> bool {
        self.manager == other.manager
            && self.operation == other.operation
            && self.subresource == other.subresource
            && (self.operation == Operation::Apply || self.api_version == other.api_version)
    }

    pub fn to_json(&self) -> Value {
        let mut entry = Map::new();
        entry.insert("apiVersion".into(), json!(self.api_version));
        entry.insert("fieldsType".into(), json!("FieldsV1"));
        entry.insert("fieldsV1".into(), self.fields.to_fields_v1());
        entry.insert("manager".into(), json!(self.manager));
        entry.insert("operation".into(), json!(self.operation.as_str()));
        if let Some(subresource) = &self.subresource {
            entry.insert("subresource".into(), json!(subresource));
        }
        if let Some(time) = &self.time {
            entry.insert("time".into(), json!(time));
        }
        Value::Object(entry)
    }

    pub fn from_json(value: &Value) -> Result<ManagedFieldsEntry, String> {
        let entry = value.as_object().ok_or("must be a json object")?;
        let string = |name: &str| -> Result<Option<String>, String> {
            match entry.get(name) {
                None | Some(Value::Null) => Ok(None),
                Some(Value::String(s)) => Ok(Some(s.clone())),
                Some(_) => Err(format!("{name} must be a string")),
            }
        };
        let operation = match string("operation")?.as_deref() {
            Some("Apply") => Operation::Apply,
            Some("Update") => Operation::Update,
            Some(other) => return Err(format!("unknown operation {other:?}")),
            None => return Err("missing operation".to_string()),
        };
        let fields = match entry.get("fieldsV1") {
            None | Some(Value::Null) => FieldSet::new(),
            Some(v1) => {
                match string("fieldsType")?.as_deref() {
                    Some("FieldsV1") => {}
                    other => return Err(format!("fieldsType {other:?} is not \"FieldsV1\"")),
                }
                FieldSet::from_fields_v1(v1).map_err(|e| e.to_string())?
            }
        };
        Ok(ManagedFieldsEntry {
            manager: string("manager")?.unwrap_or_default(),
            operation,
            api_version: string("apiVersion")?.unwrap_or_default(),
            time: string("time")?,
            subresource: string("subresource")?.filter(|s| !s.is_empty()),
            fields,
        })
    }

    /// How Kubernetes names the manager in conflicts: `"kubectl"` for an applier,
    /// `"kubectl-edit" using apps/v1` for an updater.
    pub fn describe(&self) -> String {
        describe(
            &self.manager,
            self.operation,
            &self.api_version,
            self.subresource.as_deref(),
        )
    }
}

fn describe(
    manager: &str,
    operation: Operation,
    api_version: &str,
    subresource: Option<&str>,
) -> String {
    let mut out = Value::String(manager.to_string()).to_string();
    if let Some(subresource) = subresource {
        out.push_str(&format!(
            " with subresource {}",
            Value::String(subresource.to_string())
        ));
    }
    if operation == Operation::Update {
        out.push_str(&format!(" using {api_version}"));
    }
    out
}

/// A field an apply would change that another manager owns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Conflict {
    pub manager: String,
    pub operation: Operation,
    pub api_version: String,
    pub subresource: Option<String>,
    /// The field as Kubernetes prints it: `.spec.replicas`,
    /// `.spec.template.spec.containers[name="nginx"].image`.
    pub field_path: String,
}

impl Conflict {
    /// `"kubectl-client-side-apply" using apps/v1`.
    pub fn manager_description(&self) -> String {
        describe(
            &self.manager,
            self.operation,
            &self.api_version,
            self.subresource.as_deref(),
        )
    }

    /// The message of the `FieldManagerConflict` status cause (whose `field` is
    /// [`Conflict::field_path`]): `conflict with "x" using apps/v1`.
    pub fn message(&self) -> String {
        format!("conflict with {}", self.manager_description())
    }
}

impl fmt::Display for Conflict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.message(), self.field_path)
    }
}

/// The message of the 409 Conflict status, worded as Kubernetes words it.
fn conflicts_message(conflicts: &[Conflict]) -> String {
    if let [only] = conflicts {
        return format!("Apply failed with 1 conflict: {only}");
    }
    let mut by_manager: BTreeMap<(String, String), Vec<&str>> = BTreeMap::new();
    for c in conflicts {
        by_manager
            .entry((c.manager.clone(), c.manager_description()))
            .or_default()
            .push(&c.field_path);
    }
    let mut lines = Vec::new();
    for ((_, manager), paths) in by_manager {
        lines.push(format!("conflicts with {manager}:"));
        lines.extend(paths.into_iter().map(|p| format!("- {p}")));
    }
    format!(
        "Apply failed with {} conflicts: {}",
        conflicts.len(),
        lines.join("\n")
    )
}

#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ApplyError {
    /// 409 Conflict, with one `FieldManagerConflict` cause per conflict.
    #[error("{}", conflicts_message(.0))]
    Conflicts(Vec<Conflict>),
    #[error("apply configuration must be a json object")]
    NotAnObject,
    #[error("apply configuration: {field} must be a non-empty string")]
    MissingField { field: &'static str },
    #[error("metadata.managedFields must be nil")]
    ManagedFieldsInConfig,
    #[error("apply configuration kind {applied:?} does not match the object's kind {live:?}")]
    KindMismatch { applied: String, live: String },
    #[error("invalid apply configuration: {0}")]
    InvalidConfig(fieldset::Error),
    #[error("invalid metadata.managedFields[{index}]: {reason}")]
    InvalidManagedFields { index: usize, reason: String },
}

/// Decodes `metadata.managedFields` of an object (none is an empty list). Entries of the same
/// manager are merged.
pub fn decode_managed_fields(object: &Value) -> Result<Vec<ManagedFieldsEntry>, ApplyError> {
    let items = match object.pointer("/metadata/managedFields") {
        None | Some(Value::Null) => return Ok(Vec::new()),
        Some(Value::Array(items)) => items,
        Some(_) => {
            return Err(ApplyError::InvalidManagedFields {
                index: 0,
                reason: "metadata.managedFields must be a list".to_string(),
            })
        }
    };
    let mut entries: Vec<ManagedFieldsEntry> = Vec::with_capacity(items.len());
    for (index, item) in items.iter().enumerate() {
        let entry = ManagedFieldsEntry::from_json(item)
            .map_err(|reason| ApplyError::InvalidManagedFields { index, reason })?;
        match entries.iter_mut().find(|e| e.same_manager(&entry)) {
            Some(existing) => existing.fields = existing.fields.union(&entry.fields),
            None => entries.push(entry),
        }
    }
    Ok(entries)
}

/// Encodes entries as `metadata.managedFields`, in Kubernetes' order (appliers first, then by
/// time, manager, apiVersion and subresource).
pub fn encode_managed_fields(entries: &[ManagedFieldsEntry]) -> Value {
    let mut sorted: Vec<&ManagedFieldsEntry> = entries.iter().collect();
    sorted.sort_by(|a, b| entry_order(a, b));
    Value::Array(
        sorted
            .into_iter()
            .map(ManagedFieldsEntry::to_json)
            .collect(),
    )
}

fn entry_order(a: &ManagedFieldsEntry, b: &ManagedFieldsEntry) -> Ordering {
    a.operation
        .cmp(&b.operation)
        .then_with(|| a.time.cmp(&b.time))
        .then_with(|| a.manager.cmp(&b.manager))
        .then_with(|| a.api_version.cmp(&b.api_version))
        .then_with(|| a.subresource.cmp(&b.subresource))
}

fn set_managed_fields(object: &mut Value, entries: &[ManagedFieldsEntry]) {
    let Value::Object(map) = object else {
        return;
    };
    let metadata = map
        .entry("metadata")
        .or_insert_with(|| Value::Object(Map::new()));
    if let Value::Object(metadata) = metadata {
        if entries.is_empty() {
            metadata.remove("managedFields");
        } else {
            metadata.insert("managedFields".into(), encode_managed_fields(entries));
        }
    }
}

fn without_managed_fields(object: &Value) -> Value {
    let mut object = object.clone();
    if let Some(Value::Object(metadata)) = object.get_mut("metadata") {
        metadata.remove("managedFields");
    }
    object
}

/// The paths no manager owns.
fn never_owned() -> FieldSet {
    let field = |name: &str| PathElement::Field(name.to_string());
    let mut set = FieldSet::new();
    set.insert(&[field("apiVersion")]);
    set.insert(&[field("kind")]);
    set.insert(&[field("metadata")]);
    for name in ["name", "namespace"].iter().chain(SERVER_METADATA) {
        set.insert(&[field("metadata"), field(name)]);
    }
    set
}

fn non_empty_str(value: Option<&Value>) -> Option<&str> {
    value.and_then(Value::as_str).filter(|s| !s.is_empty())
}

/// Applies `applied` (an apply configuration, `application/apply-patch+yaml` decoded to JSON)
/// for `manager` to `live` (`None` to create), and returns the new object with its
/// `metadata.managedFields`. `now` is the RFC 3339 time for the manager's entry, set when the
/// object changes.
pub fn apply(
    live: Option<&Value>,
    applied: &Value,
    manager: &str,
    force: bool,
    now: &str,
) -> Result<Value, ApplyError> {
    let config = applied.as_object().ok_or(ApplyError::NotAnObject)?;
    let api_version = non_empty_str(config.get("apiVersion")).ok_or(ApplyError::MissingField {
        field: "apiVersion",
    })?;
    let kind =
        non_empty_str(config.get("kind")).ok_or(ApplyError::MissingField { field: "kind" })?;
    match applied.pointer("/metadata/managedFields") {
        None | Some(Value::Null) => {}
        Some(Value::Array(items)) if items.is_empty() => {}
        Some(_) => return Err(ApplyError::ManagedFieldsInConfig),
    }
    if let Some(live_kind) = live.and_then(|l| non_empty_str(l.get("kind"))) {
        if live_kind != kind {
            return Err(ApplyError::KindMismatch {
                applied: kind.to_string(),
                live: live_kind.to_string(),
            });
        }
    }
    let shape = schema::apply_shape(kind);
    let never = never_owned();

    let mut config = applied.clone();
    strip_server_fields(&mut config);
    let applied_set = FieldSet::try_from_value(&config, shape)
        .map_err(ApplyError::InvalidConfig)?
        .difference(&never);

    let mut entries = match live {
        Some(live) => decode_managed_fields(live)?,
        None => Vec::new(),
    };
    let live_object = live.map_or_else(|| json!({}), without_managed_fields);
    if live.is_some() && entries.is_empty() {
        let mut existing = live_object.clone();
        if let Value::Object(map) = &mut existing {
            map.remove("status");
        }
        let fields = FieldSet::from_value(&existing, shape).difference(&never);
        if !fields.is_empty() {
            entries.push(ManagedFieldsEntry {
                manager: BEFORE_FIRST_APPLY.to_string(),
                operation: Operation::Update,
                api_version: non_empty_str(live_object.get("apiVersion"))
                    .unwrap_or(api_version)
                    .to_string(),
                time: None,
                subresource: None,
                fields,
            });
        }
    }

    let merged = merge_config(&live_object, &config, shape);
    let diff = compare(&live_object, &merged, shape);
    let changed = diff.added.union(&diff.modified).difference(&never);
    let removed = diff.removed.difference(&never);

    let mine = |e: &ManagedFieldsEntry| e.is(manager, Operation::Apply, api_version);
    let mut conflicts = Vec::new();
    for entry in entries.iter().filter(|e| !mine(e)) {
        for path in entry.fields.intersection(&changed).paths() {
            conflicts.push(Conflict {
                manager: entry.manager.clone(),
                operation: entry.operation,
                api_version: entry.api_version.clone(),
                subresource: entry.subresource.clone(),
                field_path: path_string(&path),
            });
        }
    }
    if !conflicts.is_empty() && !force {
        return Err(ApplyError::Conflicts(conflicts));
    }

    for entry in entries.iter_mut().filter(|e| !mine(e)) {
        entry.fields = entry.fields.difference(&changed).difference(&removed);
    }
    let (last, time) = match entries.iter().position(mine) {
        Some(at) => {
            let old = entries.remove(at);
            (old.fields, old.time)
        }
        None => (FieldSet::new(), None),
    };
    entries.push(ManagedFieldsEntry {
        manager: manager.to_string(),
        operation: Operation::Apply,
        api_version: api_version.to_string(),
        time,
        subresource: None,
        fields: applied_set,
    });
    entries.retain(|e| !e.fields.is_empty());

    let owned = entries
        .iter()
        .fold(FieldSet::new(), |all, e| all.union(&e.fields));
    let mut result = merged;
    prune(&mut result, &last.difference(&owned), &owned, shape, &[]);

    if !json_equal(&result, &live_object) {
        if let Some(entry) = entries.iter_mut().find(|e| mine(e)) {
            entry.time = Some(now.to_string());
        }
    }
    set_managed_fields(&mut result, &entries);
    Ok(result)
}

/// Records an ordinary write (create, update, patch; `old` is `None` on create) by `manager`:
/// the fields it added or changed become its own (in its `operation` entry for the object's
/// apiVersion) and leave every other manager, and removed fields leave every manager. Returns
/// `new` with the updated `metadata.managedFields`.
///
/// Managed fields `new` carries are used when they decode and are not empty (a client may edit
/// them); otherwise `old`'s are. `[{}]` strips them, as in Kubernetes.
pub fn update_managed_fields(
    old: Option<&Value>,
    new: &Value,
    manager: &str,
    operation: Operation,
    now: &str,
) -> Value {
    if new
        .pointer("/metadata/managedFields")
        .and_then(Value::as_array)
        .is_some_and(|items| items.len() == 1 && items[0].as_object().is_some_and(Map::is_empty))
    {
        return without_managed_fields(new);
    }
    let shape = schema::apply_shape(non_empty_str(new.get("kind")).unwrap_or_default());
    let api_version = non_empty_str(new.get("apiVersion"))
        .unwrap_or_default()
        .to_string();
    let mut entries = decode_managed_fields(new)
        .ok()
        .filter(|entries| !entries.is_empty())
        .or_else(|| old.and_then(|old| decode_managed_fields(old).ok()))
        .unwrap_or_default();

    let old_object = old.map_or_else(|| json!({}), without_managed_fields);
    let new_object = without_managed_fields(new);
    let diff = compare(&old_object, &new_object, shape);
    let never = never_owned();
    let changed = diff.added.union(&diff.modified).difference(&never);
    let removed = diff.removed.difference(&never);

    for entry in &mut entries {
        entry.fields = entry.fields.difference(&changed).difference(&removed);
    }
    if !changed.is_empty() {
        match entries
            .iter_mut()
            .find(|e| e.is(manager, operation, &api_version))
        {
            Some(entry) => {
                entry.fields = entry.fields.union(&changed);
                entry.api_version.clone_from(&api_version);
                entry.time = Some(now.to_string());
            }
            None => entries.push(ManagedFieldsEntry {
                manager: manager.to_string(),
                operation,
                api_version,
                time: Some(now.to_string()),
                subresource: None,
                fields: changed,
            }),
        }
    }
    entries.retain(|e| !e.fields.is_empty());
    let mut result = new.clone();
    set_managed_fields(&mut result, &entries);
    result
}

/// Drops what an apply configuration may not set: `status` and server-set metadata.
fn strip_server_fields(config: &mut Value) {
    let Value::Object(map) = config else {
        return;
    };
    map.remove("status");
    if let Some(Value::Object(metadata)) = map.get_mut("metadata") {
        for name in SERVER_METADATA {
            metadata.remove(*name);
        }
    }
}

fn without_nulls(value: &Value) -> Value {
    match value {
        Value::Object(map) => Value::Object(
            map.iter()
                .filter(|(_, v)| !v.is_null())
                .map(|(k, v)| (k.clone(), without_nulls(v)))
                .collect(),
        ),
        Value::Array(items) => Value::Array(items.iter().map(without_nulls).collect()),
        other => other.clone(),
    }
}

/// Merges an apply configuration into the live object (structured-merge-diff's merge).
fn merge_config(live: &Value, config: &Value, shape: Shape) -> Value {
    match (live, config) {
        (Value::Object(live), Value::Object(config)) if !matches!(shape, Shape::Atomic) => {
            let mut out = live.clone();
            for (name, value) in config {
                if value.is_null() {
                    out.remove(name);
                    continue;
                }
                let merged = match live.get(name) {
                    Some(old) => merge_config(old, value, shape.field(name)),
                    None => without_nulls(value),
                };
                out.insert(name.clone(), merged);
            }
            Value::Object(out)
        }
        (Value::Array(live), Value::Array(config)) => {
            let Some(list) = shape.list() else {
                return without_nulls(&Value::Array(config.clone()));
            };
            match list.apply {
                ListType::Map(keys) => {
                    match (list_elements(live, keys), list_elements(config, keys)) {
                        (Ok(live_keys), Ok(config_keys)) => {
                            let item = *list.item;
                            Value::Array(merge_ordered(
                                live,
                                &live_keys,
                                config,
                                &config_keys,
                                |old, new| match old {
                                    Some(old) => merge_config(old, new, item),
                                    None => without_nulls(new),
                                },
                            ))
                        }
                        _ => without_nulls(&Value::Array(config.clone())),
                    }
                }
                ListType::Set => {
                    let element = |v: &Value| PathElement::Value(canonical(v));
                    let live_keys: Vec<PathElement> = live.iter().map(element).collect();
                    let config_keys: Vec<PathElement> = config.iter().map(element).collect();
                    Value::Array(merge_ordered(
                        live,
                        &live_keys,
                        config,
                        &config_keys,
                        |_, new| new.clone(),
                    ))
                }
                ListType::Atomic => without_nulls(&Value::Array(config.clone())),
            }
        }
        _ => without_nulls(config),
    }
}

/// Merges two keyed lists in structured-merge-diff's order: live items the configuration does
/// not name keep their place, the configuration's items come in its order.
fn merge_ordered(
    live: &[Value],
    live_keys: &[PathElement],
    config: &[Value],
    config_keys: &[PathElement],
    merge: impl Fn(Option<&Value>, &Value) -> Value,
) -> Vec<Value> {
    let mut live_at: BTreeMap<&PathElement, usize> = BTreeMap::new();
    for (i, key) in live_keys.iter().enumerate() {
        live_at.entry(key).or_insert(i);
    }
    let in_config: BTreeSet<&PathElement> = config_keys.iter().collect();
    let shared: Vec<&PathElement> = config_keys
        .iter()
        .filter(|k| live_at.contains_key(k))
        .collect();
    let mut next_shared = 0;
    let mut out = Vec::with_capacity(live.len() + config.len());
    let (mut li, mut ci) = (0, 0);
    while li < live.len() || ci < config.len() {
        if li < live.len() && ci < config.len() {
            let key = &live_keys[li];
            if key == &config_keys[ci] {
                out.push(merge(Some(&live[li]), &config[ci]));
                li += 1;
                ci += 1;
                next_shared += 1;
                continue;
            }
            if in_config.contains(key) && shared.get(next_shared).is_some_and(|s| *s != key) {
                // A shared item, but not the one due next: it comes when the config names it.
                li += 1;
                continue;
            }
        }
        if li < live.len() && !in_config.contains(&live_keys[li]) {
            out.push(live[li].clone());
            li += 1;
            continue;
        }
        if ci < config.len() {
            let key = &config_keys[ci];
            let old = live_at.get(key).map(|&i| &live[i]);
            out.push(merge(old, &config[ci]));
            ci += 1;
            if shared.get(next_shared) == Some(&key) {
                next_shared += 1;
            }
            continue;
        }
        // A live duplicate of an item already merged.
        li += 1;
    }
    out
}

#[derive(Default)]
struct Diff {
    added: FieldSet,
    modified: FieldSet,
    removed: FieldSet,
}

/// The paths added, changed and removed going from `old` to `new`.
fn compare(old: &Value, new: &Value, shape: Shape) -> Diff {
    let mut diff = Diff::default();
    compare_at(old, new, shape, &mut Vec::new(), &mut diff);
    diff
}

fn add_all(value: &Value, shape: Shape, path: &mut Vec<PathElement>, set: &mut FieldSet) {
    // Lenient collection does not fail.
    let _ = collect(value, shape, path, set, false);
}

/// Whether `value` counts as one leaf in its set.
fn is_leaf(value: &Value, shape: Shape) -> bool {
    match value {
        Value::Object(map) => map.is_empty() || matches!(shape, Shape::Atomic),
        Value::Array(items) => {
            items.is_empty()
                || match shape.list().map(|l| l.apply) {
                    Some(ListType::Map(keys)) => list_elements(items, keys).is_err(),
                    Some(ListType::Set) => false,
                    _ => true,
                }
        }
        _ => true,
    }
}

fn compare_at(
    old: &Value,
    new: &Value,
    shape: Shape,
    path: &mut Vec<PathElement>,
    diff: &mut Diff,
) {
    match (old, new) {
        (Value::Object(o), Value::Object(n))
            if !(matches!(shape, Shape::Atomic) || (o.is_empty() && n.is_empty())) =>
        {
            for (name, old_value) in o {
                path.push(PathElement::Field(name.clone()));
                match n.get(name) {
                    Some(new_value) => {
                        compare_at(old_value, new_value, shape.field(name), path, diff)
                    }
                    None => add_all(old_value, shape.field(name), path, &mut diff.removed),
                }
                path.pop();
            }
            for (name, new_value) in n.iter().filter(|(name, _)| !o.contains_key(*name)) {
                path.push(PathElement::Field(name.clone()));
                add_all(new_value, shape.field(name), path, &mut diff.added);
                path.pop();
            }
        }
        (Value::Array(o), Value::Array(n)) if !is_leaf(old, shape) || !is_leaf(new, shape) => {
            let list = shape.list();
            match (list.map(|l| l.apply), list) {
                (Some(ListType::Map(keys)), Some(list)) => {
                    match (list_elements(o, keys), list_elements(n, keys)) {
                        (Ok(old_keys), Ok(new_keys)) => {
                            compare_items(o, &old_keys, n, &new_keys, *list.item, path, diff)
                        }
                        _ => replace_leaf(old, new, shape, path, diff),
                    }
                }
                (Some(ListType::Set), _) => {
                    let old_values: BTreeSet<String> = o.iter().map(canonical).collect();
                    let new_values: BTreeSet<String> = n.iter().map(canonical).collect();
                    for v in old_values.difference(&new_values) {
                        path.push(PathElement::Value(v.clone()));
                        diff.removed.insert(path);
                        path.pop();
                    }
                    for v in new_values.difference(&old_values) {
                        path.push(PathElement::Value(v.clone()));
                        diff.added.insert(path);
                        path.pop();
                    }
                }
                _ => replace_leaf(old, new, shape, path, diff),
            }
        }
        _ => replace_leaf(old, new, shape, path, diff),
    }
}

fn compare_items(
    old: &[Value],
    old_keys: &[PathElement],
    new: &[Value],
    new_keys: &[PathElement],
    item: Shape,
    path: &mut Vec<PathElement>,
    diff: &mut Diff,
) {
    for (old_item, key) in old.iter().zip(old_keys) {
        path.push(key.clone());
        match new_keys.iter().position(|k| k == key) {
            Some(at) => compare_at(old_item, &new[at], item, path, diff),
            None => {
                diff.removed.insert(path);
                add_all(old_item, item, path, &mut diff.removed);
            }
        }
        path.pop();
    }
    for (new_item, key) in new.iter().zip(new_keys) {
        if !old_keys.contains(key) {
            path.push(key.clone());
            diff.added.insert(path);
            add_all(new_item, item, path, &mut diff.added);
            path.pop();
        }
    }
}

/// Two values that are compared whole: equal, changed, or of different structure.
fn replace_leaf(
    old: &Value,
    new: &Value,
    shape: Shape,
    path: &mut Vec<PathElement>,
    diff: &mut Diff,
) {
    if json_equal(old, new) {
        return;
    }
    if is_leaf(old, shape) && is_leaf(new, shape) {
        diff.modified.insert(path);
    } else {
        add_all(old, shape, path, &mut diff.removed);
        add_all(new, shape, path, &mut diff.added);
    }
}

/// Removes the paths of `remove` from `value`, except where `keep` owns something below them;
/// `protected` names the key fields of the item `value` is (they stay while the item does).
/// Returns whether anything was removed. An object or list left empty by the removal goes too.
fn prune(
    value: &mut Value,
    remove: &FieldSet,
    keep: &FieldSet,
    shape: Shape,
    protected: &[&str],
) -> bool {
    let empty = FieldSet::new();
    let mut changed = false;
    match value {
        Value::Object(map) => {
            for element in remove.members() {
                let PathElement::Field(name) = element else {
                    continue;
                };
                if protected.contains(&name.as_str()) || keep.child(element).is_some() {
                    continue;
                }
                changed |= map.remove(name).is_some();
            }
            for (element, below) in remove.children() {
                let PathElement::Field(name) = element else {
                    continue;
                };
                let Some(child) = map.get_mut(name) else {
                    continue;
                };
                let kept = keep.child(element).unwrap_or(&empty);
                if prune(child, below, kept, shape.field(name), &[]) {
                    changed = true;
                    let now_empty = match child {
                        Value::Object(m) => m.is_empty(),
                        Value::Array(a) => a.is_empty(),
                        _ => false,
                    };
                    if now_empty && !keep.has_member(element) {
                        map.remove(name);
                    }
                }
            }
        }
        Value::Array(items) => {
            let Some(list) = shape.list() else {
                return false;
            };
            match list.apply {
                ListType::Map(keys) => {
                    let doomed: BTreeSet<&PathElement> = remove
                        .members()
                        .filter(|e| keep.child(e).is_none())
                        .collect();
                    let before = items.len();
                    items.retain(|item| {
                        item_element(item, keys).is_none_or(|key| !doomed.contains(&key))
                    });
                    changed |= items.len() != before;
                    for (element, below) in remove.children() {
                        let kept = keep.child(element).unwrap_or(&empty);
                        if let Some(item) = items
                            .iter_mut()
                            .find(|item| item_element(item, keys).as_ref() == Some(element))
                        {
                            changed |= prune(item, below, kept, *list.item, keys);
                        }
                    }
                }
                ListType::Set => {
                    let before = items.len();
                    items.retain(|item| {
                        !remove
                            .members()
                            .any(|e| *e == PathElement::Value(canonical(item)))
                    });
                    changed |= items.len() != before;
                }
                ListType::Atomic => {}
            }
        }
        _ => {}
    }
    changed
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: &str = "2025-01-01T00:00:00Z";
    const LATER: &str = "2025-01-02T00:00:00Z";

    fn deployment(spec: Value) -> Value {
        json!({
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": "web", "namespace": "default"},
            "spec": spec
        })
    }

    fn managed(object: &Value) -> Vec<ManagedFieldsEntry> {
        decode_managed_fields(object).unwrap()
    }

    fn entry<'a>(object: &'a Value, manager: &str) -> &'a Value {
        object["metadata"]["managedFields"]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["manager"] == manager)
            .unwrap_or_else(|| panic!("no entry for {manager} in {object}"))
    }

    fn managers(object: &Value) -> Vec<String> {
        managed(object).into_iter().map(|e| e.manager).collect()
    }

    fn ok(live: Option<&Value>, applied: &Value, manager: &str) -> Value {
        apply(live, applied, manager, false, NOW).unwrap_or_else(|e| panic!("{e}"))
    }

    fn conflicts(live: &Value, applied: &Value, manager: &str) -> Vec<Conflict> {
        match apply(Some(live), applied, manager, false, LATER) {
            Err(ApplyError::Conflicts(c)) => c,
            other => panic!("expected conflicts, got {other:?}"),
        }
    }

    #[test]
    fn apply_creates_and_records_the_applied_fields() {
        let cfg = deployment(json!({
            "replicas": 2,
            "selector": {"matchLabels": {"app": "web"}},
            "template": {"metadata": {"labels": {"app": "web"}},
                         "spec": {"containers": [{"name": "nginx", "image": "nginx:1.27"}]}}
        }));
        let got = ok(None, &cfg, "kubectl");
        assert_eq!(got["spec"], cfg["spec"]);
        assert_eq!(
            got["metadata"]["managedFields"],
            json!([{
                "apiVersion": "apps/v1",
                "fieldsType": "FieldsV1",
                "fieldsV1": {"f:spec": {
                    "f:replicas": {},
                    "f:selector": {},
                    "f:template": {
                        "f:metadata": {"f:labels": {"f:app": {}}},
                        "f:spec": {"f:containers": {"k:{\"name\":\"nginx\"}": {
                            ".": {}, "f:image": {}, "f:name": {}
                        }}}
                    }
                }},
                "manager": "kubectl",
                "operation": "Apply",
                "time": NOW
            }])
        );
    }

    #[test]
    fn server_fields_and_status_are_ignored() {
        let mut cfg = deployment(json!({"replicas": 1}));
        cfg["metadata"]["resourceVersion"] = json!("7");
        cfg["metadata"]["uid"] = json!("u");
        cfg["metadata"]["creationTimestamp"] = json!(null);
        cfg["metadata"]["generation"] = json!(3);
        cfg["status"] = json!({"replicas": 5});
        let live = {
            let mut l = deployment(json!({"replicas": 1}));
            l["metadata"]["uid"] = json!("real");
            l["status"] = json!({"replicas": 1});
            l["metadata"]["managedFields"] = json!([]);
            l
        };
        let got = ok(Some(&live), &cfg, "kubectl");
        assert_eq!(got["metadata"]["uid"], "real");
        assert_eq!(got["status"], json!({"replicas": 1}));
        assert_eq!(got["metadata"].get("resourceVersion"), None);
        assert_eq!(
            entry(&got, "kubectl")["fieldsV1"],
            json!({"f:spec": {"f:replicas": {}}})
        );
    }

    #[test]
    fn managed_fields_in_the_config_are_rejected() {
        let mut cfg = deployment(json!({}));
        cfg["metadata"]["managedFields"] = json!([{"manager": "x"}]);
        assert_eq!(
            apply(None, &cfg, "m", false, NOW),
            Err(ApplyError::ManagedFieldsInConfig)
        );
        assert_eq!(
            ApplyError::ManagedFieldsInConfig.to_string(),
            "metadata.managedFields must be nil"
        );
    }

    #[test]
    fn invalid_configs() {
        assert_eq!(
            apply(None, &json!([]), "m", false, NOW),
            Err(ApplyError::NotAnObject)
        );
        assert_eq!(
            apply(None, &json!({"kind": "Pod"}), "m", false, NOW),
            Err(ApplyError::MissingField {
                field: "apiVersion"
            })
        );
        assert_eq!(
            apply(
                None,
                &json!({"apiVersion": "v1", "kind": ""}),
                "m",
                false,
                NOW
            ),
            Err(ApplyError::MissingField { field: "kind" })
        );
        let pod = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"},
                         "spec": {"containers": [{"image": "x"}]}});
        let err = apply(None, &pod, "m", false, NOW).unwrap_err();
        assert!(matches!(err, ApplyError::InvalidConfig(_)), "{err}");
        assert!(
            err.to_string()
                .starts_with("invalid apply configuration: .spec.containers: element 0"),
            "{err}"
        );
        let live = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "p"}});
        let err = apply(Some(&live), &pod, "m", false, NOW).unwrap_err();
        assert!(matches!(err, ApplyError::KindMismatch { .. }), "{err}");
        let bad = json!({"apiVersion": "v1", "kind": "Pod",
                         "metadata": {"name": "p", "managedFields": [{"manager": "x"}]}});
        let pod = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"}});
        let err = apply(Some(&bad), &pod, "m", false, NOW).unwrap_err();
        assert_eq!(
            err,
            ApplyError::InvalidManagedFields {
                index: 0,
                reason: "missing operation".into()
            }
        );
    }

    #[test]
    fn a_second_manager_conflicts_on_a_changed_field() {
        let first = ok(None, &deployment(json!({"replicas": 2})), "kubectl");
        let c = conflicts(&first, &deployment(json!({"replicas": 3})), "argo");
        assert_eq!(
            c,
            [Conflict {
                manager: "kubectl".into(),
                operation: Operation::Apply,
                api_version: "apps/v1".into(),
                subresource: None,
                field_path: ".spec.replicas".into(),
            }]
        );
        assert_eq!(
            ApplyError::Conflicts(c).to_string(),
            "Apply failed with 1 conflict: conflict with \"kubectl\": .spec.replicas"
        );
    }

    #[test]
    fn conflicts_with_updaters_name_their_version() {
        let created = update_managed_fields(
            None,
            &deployment(json!({"replicas": 2, "paused": false})),
            "kubectl-client-side-apply",
            Operation::Update,
            NOW,
        );
        let c = conflicts(
            &created,
            &deployment(json!({"replicas": 3, "paused": true})),
            "kubectl",
        );
        assert_eq!(c.len(), 2);
        assert_eq!(
            c[0].message(),
            "conflict with \"kubectl-client-side-apply\" using apps/v1"
        );
        assert_eq!(
            ApplyError::Conflicts(c).to_string(),
            "Apply failed with 2 conflicts: conflicts with \"kubectl-client-side-apply\" using \
             apps/v1:\n- .spec.paused\n- .spec.replicas"
        );
        let single = update_managed_fields(
            None,
            &deployment(json!({"replicas": 2})),
            "kubectl-client-side-apply",
            Operation::Update,
            NOW,
        );
        let c = conflicts(&single, &deployment(json!({"replicas": 3})), "kubectl");
        assert_eq!(
            ApplyError::Conflicts(c).to_string(),
            "Apply failed with 1 conflict: conflict with \"kubectl-client-side-apply\" using \
             apps/v1: .spec.replicas"
        );
    }

    #[test]
    fn conflicts_from_several_managers_are_grouped() {
        let a = ok(None, &deployment(json!({"replicas": 1})), "a");
        let b = ok(Some(&a), &deployment(json!({"minReadySeconds": 5})), "b");
        let err = apply(
            Some(&b),
            &deployment(json!({"replicas": 2, "minReadySeconds": 6})),
            "c",
            false,
            NOW,
        )
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "Apply failed with 2 conflicts: conflicts with \"a\":\n- .spec.replicas\n\
             conflicts with \"b\":\n- .spec.minReadySeconds"
        );
    }

    #[test]
    fn equal_values_are_shared_and_shared_fields_survive() {
        let a = ok(
            None,
            &deployment(json!({"replicas": 2, "paused": true})),
            "a",
        );
        // b applies the same replicas: no conflict, both own it.
        let both = ok(Some(&a), &deployment(json!({"replicas": 2})), "b");
        for m in ["a", "b"] {
            assert!(
                entry(&both, m)["fieldsV1"]["f:spec"]
                    .get("f:replicas")
                    .is_some(),
                "{m}"
            );
        }
        // a stops applying replicas and paused: replicas stays (b owns it), paused goes.
        let mut nothing = deployment(json!({}));
        nothing.as_object_mut().unwrap().remove("spec");
        let after = ok(Some(&both), &nothing, "a");
        assert_eq!(after["spec"], json!({"replicas": 2}));
        assert_eq!(managers(&after), ["b"]);
    }

    #[test]
    fn force_takes_ownership() {
        let a = ok(
            None,
            &deployment(json!({"replicas": 2, "paused": true})),
            "a",
        );
        let got = apply(
            Some(&a),
            &deployment(json!({"replicas": 5})),
            "b",
            true,
            LATER,
        )
        .unwrap();
        assert_eq!(got["spec"], json!({"replicas": 5, "paused": true}));
        assert_eq!(
            entry(&got, "a")["fieldsV1"],
            json!({"f:spec": {"f:paused": {}}})
        );
        assert_eq!(
            entry(&got, "b")["fieldsV1"],
            json!({"f:spec": {"f:replicas": {}}})
        );
        assert_eq!(entry(&got, "b")["time"], LATER);
        assert_eq!(entry(&got, "a")["time"], NOW);
        // a re-applying its old value now conflicts with b.
        let c = conflicts(
            &got,
            &deployment(json!({"replicas": 2, "paused": true})),
            "a",
        );
        assert_eq!(c[0].manager, "b");
        assert_eq!(c[0].field_path, ".spec.replicas");
    }

    #[test]
    fn a_manager_losing_everything_is_dropped() {
        let a = ok(None, &deployment(json!({"replicas": 2})), "a");
        let got = apply(
            Some(&a),
            &deployment(json!({"replicas": 3})),
            "b",
            true,
            NOW,
        )
        .unwrap();
        assert_eq!(managers(&got), ["b"]);
    }

    #[test]
    fn fields_no_longer_applied_are_removed() {
        let cfg = deployment(json!({
            "replicas": 2,
            "template": {"metadata": {"labels": {"app": "web", "tier": "front"}},
                         "spec": {"containers": [
                             {"name": "nginx", "image": "nginx", "env": [{"name": "A", "value": "1"}]},
                             {"name": "sidecar", "image": "busybox"}]}}
        }));
        let first = ok(None, &cfg, "kubectl");
        let second = deployment(json!({
            "template": {"metadata": {"labels": {"app": "web"}},
                         "spec": {"containers": [{"name": "nginx", "image": "nginx"}]}}
        }));
        let got = ok(Some(&first), &second, "kubectl");
        assert_eq!(got["spec"], second["spec"]);
    }

    #[test]
    fn removal_keeps_what_others_own_inside_an_item() {
        let first = ok(
            None,
            &deployment(json!({"template": {"spec": {"containers": [
                {"name": "nginx", "image": "nginx"}, {"name": "log", "image": "fluent"}
            ]}}})),
            "a",
        );
        // b sets resources on the log container.
        let b = ok(
            Some(&first),
            &deployment(json!({"template": {"spec": {"containers": [
                {"name": "log", "resources": {"limits": {"cpu": "1"}}}
            ]}}})),
            "b",
        );
        // a drops the log container: its image goes, b's resources and the key stay.
        let got = ok(
            Some(&b),
            &deployment(json!({"template": {"spec": {"containers": [
                {"name": "nginx", "image": "nginx"}
            ]}}})),
            "a",
        );
        assert_eq!(
            got["spec"]["template"]["spec"]["containers"],
            json!([{"name": "nginx", "image": "nginx"},
                   {"name": "log", "resources": {"limits": {"cpu": "1"}}}])
        );
    }

    #[test]
    fn keyed_lists_merge_by_key_and_keep_live_items() {
        let live = update_managed_fields(
            None,
            &json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "s"},
                    "spec": {"ports": [{"port": 80, "protocol": "TCP", "targetPort": 8080},
                                       {"port": 53, "protocol": "UDP"}]}}),
            "kubectl-create",
            Operation::Update,
            NOW,
        );
        let cfg = json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "s"},
                         "spec": {"ports": [{"port": 443}, {"port": 80, "name": "http"}]}});
        let got = ok(Some(&live), &cfg, "kubectl");
        assert_eq!(
            got["spec"]["ports"],
            json!([{"port": 443}, {"port": 80, "protocol": "TCP", "targetPort": 8080, "name": "http"},
                   {"port": 53, "protocol": "UDP"}])
        );
        assert_eq!(
            entry(&got, "kubectl")["fieldsV1"],
            json!({"f:spec": {"f:ports": {
                "k:{\"port\":443,\"protocol\":\"TCP\"}": {".": {}, "f:port": {}},
                "k:{\"port\":80,\"protocol\":\"TCP\"}": {".": {}, "f:name": {}, "f:port": {}}
            }}})
        );
    }

    #[test]
    fn atomic_lists_and_maps_are_replaced_and_owned_whole() {
        let pod = |spec: Value| json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"}, "spec": spec});
        let first = ok(
            None,
            &pod(
                json!({"tolerations": [{"key": "a"}], "nodeSelector": {"a": "1", "b": "2"},
                        "containers": [{"name": "c", "command": ["x", "y"]}]}),
            ),
            "a",
        );
        assert_eq!(
            entry(&first, "a")["fieldsV1"],
            json!({"f:spec": {
                "f:containers": {"k:{\"name\":\"c\"}": {".": {}, "f:command": {}, "f:name": {}}},
                "f:nodeSelector": {},
                "f:tolerations": {}
            }})
        );
        let c = conflicts(&first, &pod(json!({"nodeSelector": {"a": "1"}})), "b");
        assert_eq!(c[0].field_path, ".spec.nodeSelector");
        let got = apply(
            Some(&first),
            &pod(json!({"tolerations": [{"key": "b"}],
                        "containers": [{"name": "c", "command": ["z"]}]})),
            "b",
            true,
            NOW,
        )
        .unwrap();
        assert_eq!(got["spec"]["tolerations"], json!([{"key": "b"}]));
        assert_eq!(got["spec"]["containers"][0]["command"], json!(["z"]));
    }

    #[test]
    fn set_lists_are_owned_per_value() {
        let meta = |finalizers: Value| {
            json!({"apiVersion": "v1", "kind": "ConfigMap",
                   "metadata": {"name": "c", "finalizers": finalizers}})
        };
        let a = ok(None, &meta(json!(["a/x"])), "a");
        let both = ok(Some(&a), &meta(json!(["b/y"])), "b");
        assert_eq!(both["metadata"]["finalizers"], json!(["a/x", "b/y"]));
        assert_eq!(
            entry(&both, "b")["fieldsV1"],
            json!({"f:metadata": {"f:finalizers": {"v:\"b/y\"": {}}}})
        );
        let bare = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}});
        let got = ok(Some(&both), &bare, "a");
        assert_eq!(managers(&got), ["b"]);
        assert_eq!(got["metadata"]["finalizers"], json!(["b/y"]));
    }

    #[test]
    fn objects_without_managed_fields_belong_to_before_first_apply() {
        let live = deployment(json!({"replicas": 1, "paused": false}));
        let c = conflicts(&live, &deployment(json!({"replicas": 2})), "kubectl");
        assert_eq!(c[0].manager, BEFORE_FIRST_APPLY);
        assert_eq!(
            c[0].to_string(),
            "conflict with \"before-first-apply\" using apps/v1: .spec.replicas"
        );
        // Applying equal values shares them and conflicts with nothing.
        let got = ok(Some(&live), &deployment(json!({"replicas": 1})), "kubectl");
        assert_eq!(managers(&got), ["kubectl", BEFORE_FIRST_APPLY]);
    }

    #[test]
    fn a_no_op_apply_keeps_the_time() {
        let first = ok(None, &deployment(json!({"replicas": 1})), "a");
        let again = apply(
            Some(&first),
            &deployment(json!({"replicas": 1})),
            "a",
            false,
            LATER,
        )
        .unwrap();
        assert_eq!(again, first);
        let changed = apply(
            Some(&first),
            &deployment(json!({"replicas": 2})),
            "a",
            false,
            LATER,
        )
        .unwrap();
        assert_eq!(entry(&changed, "a")["time"], LATER);
    }

    #[test]
    fn the_apply_version_follows_the_last_apply() {
        let first = ok(None, &deployment(json!({"replicas": 1})), "a");
        let mut cfg = deployment(json!({"replicas": 1}));
        cfg["apiVersion"] = json!("apps/v2");
        let got = ok(Some(&first), &cfg, "a");
        assert_eq!(managed(&got).len(), 1);
        assert_eq!(entry(&got, "a")["apiVersion"], "apps/v2");
    }

    #[test]
    fn null_in_a_config_removes_the_field() {
        let first = ok(
            None,
            &deployment(json!({"replicas": 1, "paused": true})),
            "a",
        );
        let got = ok(
            Some(&first),
            &deployment(json!({"replicas": 1, "paused": null})),
            "a",
        );
        assert_eq!(got["spec"], json!({"replicas": 1}));
    }

    #[test]
    fn keyed_list_order_follows_structured_merge_diff() {
        let item = |name: &str| json!({"name": name});
        let live = vec![item("a"), item("b"), item("c")];
        let keys = |items: &[Value]| list_elements(items, &["name"]).unwrap();
        let names = |items: Vec<Value>| -> Vec<String> {
            items
                .into_iter()
                .map(|i| i["name"].as_str().unwrap().to_string())
                .collect()
        };
        for (config, want) in [
            (vec![item("c"), item("a")], vec!["b", "c", "a"]),
            (vec![item("d")], vec!["a", "b", "c", "d"]),
            (vec![item("b"), item("x")], vec!["a", "b", "c", "x"]),
            (vec![item("c"), item("b"), item("a")], vec!["c", "b", "a"]),
        ] {
            let got = merge_ordered(&live, &keys(&live), &config, &keys(&config), |_, n| {
                n.clone()
            });
            assert_eq!(names(got), want, "{config:?}");
        }
    }

    #[test]
    fn update_records_changed_fields_and_takes_them_from_others() {
        let created = update_managed_fields(
            None,
            &deployment(json!({"replicas": 1, "template": {"metadata": {"labels": {"app": "w"}}}})),
            "kubectl-create",
            Operation::Update,
            NOW,
        );
        assert_eq!(
            created["metadata"]["managedFields"],
            json!([{
                "apiVersion": "apps/v1",
                "fieldsType": "FieldsV1",
                "fieldsV1": {"f:spec": {"f:replicas": {},
                                        "f:template": {"f:metadata": {"f:labels": {"f:app": {}}}}}},
                "manager": "kubectl-create",
                "operation": "Update",
                "time": NOW
            }])
        );
        // kubectl scale changes replicas: it moves to kubectl-scale.
        let mut scaled = created.clone();
        scaled["spec"]["replicas"] = json!(3);
        let scaled = update_managed_fields(
            Some(&created),
            &scaled,
            "kubectl-scale",
            Operation::Update,
            LATER,
        );
        assert_eq!(
            entry(&scaled, "kubectl-create")["fieldsV1"],
            json!({"f:spec": {"f:template": {"f:metadata": {"f:labels": {"f:app": {}}}}}})
        );
        assert_eq!(entry(&scaled, "kubectl-create")["time"], NOW);
        assert_eq!(
            entry(&scaled, "kubectl-scale")["fieldsV1"],
            json!({"f:spec": {"f:replicas": {}}})
        );
        // A later apply of replicas conflicts with the scaler.
        let c = conflicts(&scaled, &deployment(json!({"replicas": 1})), "kubectl");
        assert_eq!(
            c[0].message(),
            "conflict with \"kubectl-scale\" using apps/v1"
        );
    }

    #[test]
    fn update_removals_leave_every_manager() {
        let applied = ok(
            None,
            &deployment(json!({"replicas": 1, "paused": true})),
            "a",
        );
        let mut edited = applied.clone();
        edited["spec"].as_object_mut().unwrap().remove("paused");
        let got = update_managed_fields(
            Some(&applied),
            &edited,
            "kubectl-edit",
            Operation::Update,
            LATER,
        );
        // Removing is not owning: kubectl-edit gets no entry, a loses paused.
        assert_eq!(managers(&got), ["a"]);
        assert_eq!(
            entry(&got, "a")["fieldsV1"],
            json!({"f:spec": {"f:replicas": {}}})
        );
        assert_eq!(entry(&got, "a")["time"], NOW);
    }

    #[test]
    fn update_without_changes_keeps_entries() {
        let applied = ok(None, &deployment(json!({"replicas": 1})), "a");
        let got = update_managed_fields(Some(&applied), &applied, "x", Operation::Update, LATER);
        assert_eq!(got, applied);
        // A client that drops managedFields from the body keeps the stored ones.
        let mut bare = applied.clone();
        bare["metadata"]
            .as_object_mut()
            .unwrap()
            .remove("managedFields");
        let got = update_managed_fields(Some(&applied), &bare, "x", Operation::Update, LATER);
        assert_eq!(got, applied);
    }

    #[test]
    fn update_can_replace_or_strip_managed_fields() {
        let applied = ok(None, &deployment(json!({"replicas": 1})), "a");
        let mut stripped = applied.clone();
        stripped["metadata"]["managedFields"] = json!([{}]);
        let got = update_managed_fields(Some(&applied), &stripped, "x", Operation::Update, LATER);
        assert_eq!(got["metadata"].get("managedFields"), None);
        let mut edited = applied.clone();
        edited["metadata"]["managedFields"][0]["manager"] = json!("renamed");
        let got = update_managed_fields(Some(&applied), &edited, "x", Operation::Update, LATER);
        assert_eq!(managers(&got), ["renamed"]);
    }

    #[test]
    fn updaters_are_one_entry_per_version() {
        let v1 = update_managed_fields(
            None,
            &deployment(json!({"replicas": 1})),
            "ctl",
            Operation::Update,
            NOW,
        );
        let mut v2 = v1.clone();
        v2["apiVersion"] = json!("apps/v1beta2");
        v2["spec"]["paused"] = json!(true);
        let got = update_managed_fields(Some(&v1), &v2, "ctl", Operation::Update, LATER);
        let entries = managed(&got);
        assert_eq!(entries.len(), 2);
        assert!(entries.iter().all(|e| e.manager == "ctl"));
    }

    #[test]
    fn status_updates_are_recorded() {
        let pod = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"},
                         "spec": {"containers": [{"name": "c", "image": "x"}]}});
        let created = update_managed_fields(None, &pod, "kubectl-run", Operation::Update, NOW);
        let mut running = created.clone();
        running["status"] = json!({"phase": "Running",
                                   "conditions": [{"type": "Ready", "status": "True"}]});
        let got = update_managed_fields(
            Some(&created),
            &running,
            "kubelet",
            Operation::Update,
            LATER,
        );
        assert_eq!(
            entry(&got, "kubelet")["fieldsV1"],
            json!({"f:status": {
                "f:conditions": {"k:{\"type\":\"Ready\"}": {".": {}, "f:status": {}, "f:type": {}}},
                "f:phase": {}
            }})
        );
    }

    #[test]
    fn managed_fields_entries_round_trip_and_sort() {
        let entries = vec![
            ManagedFieldsEntry {
                manager: "z".into(),
                operation: Operation::Update,
                api_version: "v1".into(),
                time: Some(NOW.into()),
                subresource: Some("status".into()),
                fields: FieldSet::new(),
            },
            ManagedFieldsEntry {
                manager: "y".into(),
                operation: Operation::Apply,
                api_version: "v1".into(),
                time: Some(LATER.into()),
                subresource: None,
                fields: FieldSet::new(),
            },
        ];
        let encoded = encode_managed_fields(&entries);
        assert_eq!(encoded[0]["manager"], "y");
        assert_eq!(encoded[1]["subresource"], "status");
        let object = json!({"metadata": {"managedFields": encoded}});
        let decoded = decode_managed_fields(&object).unwrap();
        assert_eq!(decoded, [entries[1].clone(), entries[0].clone()]);
        assert_eq!(
            entries[0].describe(),
            "\"z\" with subresource \"status\" using v1"
        );
        let err = ManagedFieldsEntry::from_json(
            &json!({"operation": "Apply", "fieldsType": "FieldsV2", "fieldsV1": {}}),
        )
        .unwrap_err();
        assert!(err.contains("FieldsV2"), "{err}");
    }
}
