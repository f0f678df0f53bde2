//! Strategic merge patch (`application/strategic-merge-patch+json`), the server half of
//! apimachinery's `strategicpatch.StrategicMergePatch`, as kubectl 1.32 uses it.
//!
//! Objects merge key by key and `null` deletes a key. Lists follow the field's
//! [`ListStrategy`]: replaced whole, unioned (lists of scalars with `patchStrategy:"merge"`), or
//! merged item by item on the merge key. The directives:
//!
//! - `$patch: replace` in an object replaces it; as a list item, it replaces the list with the
//!   patch's other items. `$patch: delete` in an object empties it (and drops it where the
//!   document has no such field); as a list item, it deletes the items with its merge key.
//!   `$patch: merge` is the default and is accepted anywhere (Kubernetes rejects it).
//! - `$setElementOrder/<field>` gives the order of the merged list (items it does not name keep
//!   their place relative to the live list).
//! - `$retainKeys` lists the only keys the object keeps.
//! - `$deleteFromPrimitiveList/<field>` lists scalars to remove from the list.
//!
//! Directives never reach the result: a value the document did not have is merged into an empty
//! one, which strips them. Any other key starting with `$` is an error rather than a field.

use std::collections::BTreeSet;

use serde_json::{Map, Value};
use thiserror::Error;

use super::schema::{self, ListStrategy, Shape};

const DIRECTIVE: &str = "$patch";
const RETAIN_KEYS: &str = "$retainKeys";
const SET_ELEMENT_ORDER: &str = "$setElementOrder/";
const DELETE_FROM_PRIMITIVE_LIST: &str = "$deleteFromPrimitiveList/";

/// Why a strategic merge patch could not be applied. Kubernetes answers all of these with
/// 400 Bad Request. Paths are JSON paths from the object root (`.spec.containers[0]`).
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum Error {
    #[error("strategic merge patch: the {what} must be a json object")]
    NotAnObject { what: &'static str },
    #[error("strategic merge patch: unknown $patch directive {directive} at {path}")]
    UnknownPatchDirective { path: String, directive: String },
    #[error("strategic merge patch: unknown directive {key:?} at {path}")]
    UnknownDirective { path: String, key: String },
    #[error("strategic merge patch: {key:?} at {path} must be a list")]
    NotAList { path: String, key: String },
    #[error("strategic merge patch: $retainKeys at {path} must be a list of field names")]
    BadRetainKeys { path: String },
    #[error("strategic merge patch: field {field:?} at {path} is not listed in $retainKeys")]
    NotInRetainKeys { path: String, field: String },
    #[error(
        "strategic merge patch: item {index} of {path} does not contain declared merge key {key:?}"
    )]
    MissingMergeKey {
        path: String,
        index: usize,
        key: String,
    },
    #[error("strategic merge patch: the list at {path} mixes objects and scalars")]
    MixedList { path: String },
    #[error("strategic merge patch: the list at {path} holds objects but has no merge key")]
    NoMergeKey { path: String },
    #[error(
        "strategic merge patch: the order of the list at {path} doesn't match its \
         $setElementOrder list"
    )]
    OrderMismatch { path: String },
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Applies a strategic merge patch to `doc`, an object of `kind` (`"Deployment"`). A kind
/// without a table in [`schema`] merges like a JSON merge patch (every list replaced), with the
/// directives still honoured.
pub fn strategic_merge_patch(doc: &Value, patch: &Value, kind: &str) -> Result<Value> {
    strategic_merge_patch_with(doc, patch, schema::for_kind(kind).unwrap_or(Shape::Any))
}

/// [`strategic_merge_patch`] with an explicit schema for the document's root.
pub fn strategic_merge_patch_with(doc: &Value, patch: &Value, shape: Shape) -> Result<Value> {
    let patch = patch
        .as_object()
        .ok_or(Error::NotAnObject { what: "patch" })?;
    let doc = doc
        .as_object()
        .ok_or(Error::NotAnObject { what: "document" })?;
    merge_map(doc.clone(), patch, shape, "").map(Value::Object)
}

fn show(path: &str) -> String {
    if path.is_empty() {
        ".".to_string()
    } else {
        path.to_string()
    }
}

fn field_path(path: &str, field: &str) -> String {
    format!("{path}.{field}")
}

fn item_path(path: &str, index: usize) -> String {
    format!("{}[{index}]", show(path))
}

fn directive_of(map: &Map<String, Value>) -> Option<&Value> {
    map.get(DIRECTIVE)
}

fn is_delete(value: &Value) -> bool {
    value
        .as_object()
        .and_then(directive_of)
        .is_some_and(|d| d == "delete")
}

fn merge_map(
    mut original: Map<String, Value>,
    patch: &Map<String, Value>,
    shape: Shape,
    path: &str,
) -> Result<Map<String, Value>> {
    if let Some(directive) = directive_of(patch) {
        match directive.as_str() {
            Some("replace") => {
                let rest: Map<String, Value> = patch
                    .iter()
                    .filter(|(k, _)| *k != DIRECTIVE)
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect();
                return merge_map(Map::new(), &rest, shape, path);
            }
            Some("delete") => return Ok(Map::new()),
            Some("merge") => {}
            _ => {
                return Err(Error::UnknownPatchDirective {
                    path: show(path),
                    directive: directive.to_string(),
                })
            }
        }
    }

    if let Some(retain) = patch.get(RETAIN_KEYS) {
        retain_keys(&mut original, patch, retain, path)?;
    }

    let mut ordered = BTreeSet::new();
    for (key, order) in patch {
        if let Some(field) = key.strip_prefix(SET_ELEMENT_ORDER) {
            set_element_order(
                &mut original,
                patch,
                key,
                field,
                order,
                shape.field(field),
                path,
            )?;
            ordered.insert(field);
        }
    }

    for (key, value) in patch {
        if key == DIRECTIVE
            || key == RETAIN_KEYS
            || key.starts_with(SET_ELEMENT_ORDER)
            || ordered.contains(key.as_str())
        {
            continue;
        }
        if let Some(field) = key.strip_prefix(DELETE_FROM_PRIMITIVE_LIST) {
            let doomed = value.as_array().ok_or_else(|| Error::NotAList {
                path: show(path),
                key: key.clone(),
            })?;
            if let Some(Value::Array(items)) = original.get_mut(field) {
                items.retain(|item| !doomed.contains(item));
            }
            continue;
        }
        if key.starts_with('$') {
            return Err(Error::UnknownDirective {
                path: show(path),
                key: key.clone(),
            });
        }
        if value.is_null() {
            original.remove(key);
            continue;
        }
        let child = shape.field(key);
        let child_path = field_path(path, key);
        let merged = match original.get_mut(key) {
            None => fresh(value, child, &child_path)?,
            Some(slot) => merge_value(std::mem::take(slot), value, child, &child_path)?,
        };
        match merged {
            Some(merged) => {
                original.insert(key.clone(), merged);
            }
            None => {
                original.remove(key);
            }
        }
    }
    Ok(original)
}

/// Merges `patch` into a value the document has; `None` drops the field.
fn merge_value(old: Value, patch: &Value, shape: Shape, path: &str) -> Result<Option<Value>> {
    match (old, patch) {
        (Value::Object(old), Value::Object(patch)) => {
            merge_map(old, patch, shape, path).map(|m| Some(Value::Object(m)))
        }
        (Value::Array(old), Value::Array(patch)) => {
            merge_list(old, patch, shape, path).map(|m| Some(Value::Array(m.items)))
        }
        (_, patch) => fresh(patch, shape, path),
    }
}

/// The value a patch gives a field the document does not have: merged into nothing, so that
/// directives are applied and stripped. `None` when the patch deletes it.
fn fresh(patch: &Value, shape: Shape, path: &str) -> Result<Option<Value>> {
    match patch {
        Value::Object(_) if is_delete(patch) => Ok(None),
        Value::Object(map) => {
            merge_map(Map::new(), map, shape, path).map(|m| Some(Value::Object(m)))
        }
        Value::Array(items) => {
            merge_list(Vec::new(), items, shape, path).map(|m| Some(Value::Array(m.items)))
        }
        other => Ok(Some(other.clone())),
    }
}

/// A merged list, and the live order `$setElementOrder` falls back on for items it does not
/// name.
struct Merged {
    items: Vec<Value>,
    server_order: Vec<Value>,
}

fn merge_list(original: Vec<Value>, patch: &[Value], shape: Shape, path: &str) -> Result<Merged> {
    let list = shape.list();
    let strategy = list.map_or(ListStrategy::Atomic, |l| l.patch);
    let item = list.map_or(Shape::Any, |l| *l.item);
    if original.is_empty() && patch.is_empty() {
        return Ok(Merged {
            items: original,
            server_order: Vec::new(),
        });
    }
    let is_data_object = |v: &&Value| {
        v.as_object()
            .is_some_and(|m| directive_of(m).is_none() || m.len() > 1)
    };
    let objects = original.iter().chain(patch).filter(is_data_object).count();
    let scalars = original
        .iter()
        .chain(patch)
        .filter(|v| !v.is_object())
        .count();
    match strategy {
        ListStrategy::Atomic => Ok(Merged {
            items: fresh_items(patch, item, path)?,
            server_order: original,
        }),
        _ if objects > 0 && scalars > 0 => Err(Error::MixedList { path: show(path) }),
        ListStrategy::Merge { key, .. } if objects > 0 => {
            merge_objects(original, patch, key, item, path)
        }
        ListStrategy::Set if objects > 0 => Err(Error::NoMergeKey { path: show(path) }),
        ListStrategy::Set | ListStrategy::Merge { .. } => merge_scalars(original, patch, path),
    }
}

/// The items of a list the patch replaces, merged into nothing.
fn fresh_items(patch: &[Value], shape: Shape, path: &str) -> Result<Vec<Value>> {
    let mut items = Vec::with_capacity(patch.len());
    for (index, value) in patch.iter().enumerate() {
        match value {
            Value::Object(map) => {
                if is_delete(value) || (directive_of(map).is_some() && map.len() == 1) {
                    continue;
                }
                let merged = merge_map(Map::new(), map, shape, &item_path(path, index))?;
                items.push(Value::Object(merged));
            }
            other => items.push(other.clone()),
        }
    }
    Ok(items)
}

/// A list of scalars with `patchStrategy:"merge"`: the union, patch values in patch order.
fn merge_scalars(original: Vec<Value>, patch: &[Value], path: &str) -> Result<Merged> {
    let mut replace = false;
    let mut added = Vec::new();
    for (index, value) in patch.iter().enumerate() {
        match value.as_object() {
            Some(map) => match directive_of(map).and_then(Value::as_str) {
                Some("replace") => replace = true,
                Some("merge") => {}
                _ => {
                    return Err(Error::UnknownPatchDirective {
                        path: item_path(path, index),
                        directive: value.to_string(),
                    })
                }
            },
            None => added.push(value.clone()),
        }
    }
    if replace {
        return Ok(Merged {
            items: added,
            server_order: original,
        });
    }
    let mut all: Vec<Value> = Vec::with_capacity(original.len() + added.len());
    for value in original.iter().chain(&added) {
        if !all.contains(value) {
            all.push(value.clone());
        }
    }
    let (from_patch, server_only) = all.into_iter().partition(|v| added.contains(v));
    let items = normalize_order(from_patch, server_only, &added, &original, None);
    Ok(Merged {
        items,
        server_order: original,
    })
}

/// A list of objects with a merge key.
fn merge_objects(
    original: Vec<Value>,
    patch: &[Value],
    key: &str,
    shape: Shape,
    path: &str,
) -> Result<Merged> {
    let original_len = original.len();
    let mut current = original;
    let mut replace = false;
    let mut plain: Vec<(usize, &Map<String, Value>)> = Vec::new();
    for (index, value) in patch.iter().enumerate() {
        // merge_list only sends lists of objects here.
        let map = value
            .as_object()
            .ok_or_else(|| Error::MixedList { path: show(path) })?;
        let Some(directive) = directive_of(map) else {
            plain.push((index, map));
            continue;
        };
        match directive.as_str() {
            Some("delete") => {
                let wanted = map.get(key).ok_or_else(|| Error::MissingMergeKey {
                    path: show(path),
                    index,
                    key: key.to_string(),
                })?;
                current.retain(|item| item.get(key) != Some(wanted));
            }
            Some("replace") => replace = true,
            Some("merge") if map.len() > 1 => plain.push((index, map)),
            Some("merge") => {}
            _ => {
                return Err(Error::UnknownPatchDirective {
                    path: item_path(path, index),
                    directive: directive.to_string(),
                })
            }
        }
    }

    if replace {
        let mut items = Vec::with_capacity(plain.len());
        for (index, map) in plain {
            items.push(Value::Object(merge_map(
                Map::new(),
                map,
                shape,
                &item_path(path, index),
            )?));
        }
        return Ok(Merged {
            items,
            server_order: current,
        });
    }

    let after_delete = current.len();
    let mut patch_order = Vec::with_capacity(plain.len());
    for (index, map) in plain {
        let wanted = map.get(key).ok_or_else(|| Error::MissingMergeKey {
            path: show(path),
            index,
            key: key.to_string(),
        })?;
        patch_order.push(Value::Object(map.clone()));
        let at = current
            .iter()
            .position(|item| item.get(key) == Some(wanted));
        let item_path = item_path(path, index);
        match at {
            Some(at) => {
                let old = match std::mem::take(&mut current[at]) {
                    Value::Object(old) => old,
                    _ => Map::new(),
                };
                current[at] = Value::Object(merge_map(old, map, shape, &item_path)?);
            }
            None => current.push(Value::Object(merge_map(
                Map::new(),
                map,
                shape,
                &item_path,
            )?)),
        }
    }

    let live_order = current[..after_delete].to_vec();
    // What `$setElementOrder` compares against: the live list after deletions, with appended
    // items, cut to the live list's length (the view Kubernetes' in-place slice edits leave).
    let mut server_order = current.clone();
    server_order.truncate(original_len);
    let ids: Vec<&Value> = patch_order.iter().filter_map(|v| v.get(key)).collect();
    let (from_patch, server_only) = current
        .into_iter()
        .partition(|item| item.get(key).is_some_and(|k| ids.contains(&k)));
    let items = normalize_order(
        from_patch,
        server_only,
        &patch_order,
        &live_order,
        Some(key),
    );
    Ok(Merged {
        items,
        server_order,
    })
}

/// The identity of an item for ordering: its merge key, or itself for scalars.
fn identity<'a>(value: &'a Value, key: Option<&str>) -> Option<&'a Value> {
    match key {
        Some(key) => value.get(key),
        None => Some(value),
    }
}

fn position_in(list: &[Value], value: &Value, key: Option<&str>) -> Option<usize> {
    let wanted = identity(value, key)?;
    list.iter().position(|v| identity(v, key) == Some(wanted))
}

/// Orders the patch's items by `patch_order` and the live-only items by `server_order`, then
/// interleaves them keeping both relative orders (apimachinery's `normalizeElementOrder`).
fn normalize_order(
    mut from_patch: Vec<Value>,
    mut server_only: Vec<Value>,
    patch_order: &[Value],
    server_order: &[Value],
    key: Option<&str>,
) -> Vec<Value> {
    from_patch.sort_by_key(|v| position_in(patch_order, v, key).unwrap_or(usize::MAX));
    server_only.sort_by_key(|v| position_in(server_order, v, key).unwrap_or(usize::MAX));

    // A live-only item goes before a patch item only when both are in the live list and it
    // comes first there.
    let mut out = Vec::with_capacity(from_patch.len() + server_only.len());
    let mut left = server_only.into_iter().peekable();
    let mut right = from_patch.into_iter().peekable();
    loop {
        let take_left = match (left.peek(), right.peek()) {
            (None, None) => break,
            (Some(_), None) => true,
            (None, Some(_)) => false,
            (Some(l), Some(r)) => matches!(
                (position_in(server_order, l, key), position_in(server_order, r, key)),
                (Some(li), Some(ri)) if li < ri
            ),
        };
        let next = if take_left { left.next() } else { right.next() };
        out.extend(next);
    }
    out
}

fn retain_keys(
    original: &mut Map<String, Value>,
    patch: &Map<String, Value>,
    retain: &Value,
    path: &str,
) -> Result<()> {
    let bad = || Error::BadRetainKeys { path: show(path) };
    let keys = retain
        .as_array()
        .ok_or_else(bad)?
        .iter()
        .map(|v| v.as_str().ok_or_else(bad))
        .collect::<Result<BTreeSet<&str>>>()?;
    for (field, value) in patch {
        if value.is_null() || field.starts_with('$') {
            continue;
        }
        if !keys.contains(field.as_str()) {
            return Err(Error::NotInRetainKeys {
                path: show(path),
                field: field.clone(),
            });
        }
    }
    original.retain(|field, _| keys.contains(field.as_str()));
    Ok(())
}

fn set_element_order(
    original: &mut Map<String, Value>,
    patch: &Map<String, Value>,
    directive: &str,
    field: &str,
    order: &Value,
    shape: Shape,
    path: &str,
) -> Result<()> {
    let not_a_list = |key: &str| Error::NotAList {
        path: show(path),
        key: key.to_string(),
    };
    let order = order.as_array().ok_or_else(|| not_a_list(directive))?;
    let list_path = field_path(path, field);
    let key = match shape.list().map(|l| l.patch) {
        Some(ListStrategy::Merge { key, .. }) if order.iter().all(Value::is_object) => Some(key),
        _ => None,
    };
    if let Some(key) = key {
        if let Some(index) = order.iter().position(|v| v.get(key).is_none()) {
            return Err(Error::MissingMergeKey {
                path: format!("{}.{directive}", show(path)),
                index,
                key: key.to_string(),
            });
        }
    }
    let from_patch = match patch.get(field) {
        None => None,
        Some(Value::Array(items)) => Some(items.as_slice()),
        Some(_) => return Err(not_a_list(field)),
    };
    if let Some(from_patch) = from_patch {
        check_order(from_patch, order, key, &list_path)?;
    }
    let from_doc = match original.get(field) {
        None | Some(Value::Null) => None,
        Some(Value::Array(items)) => Some(items.clone()),
        Some(_) => return Err(not_a_list(field)),
    };
    let merged = match (from_doc, from_patch) {
        (None, None) => return Ok(()),
        (Some(items), None) => Merged {
            server_order: items.clone(),
            items,
        },
        (None, Some(from_patch)) => Merged {
            items: merge_list(Vec::new(), from_patch, shape, &list_path)?.items,
            server_order: Vec::new(),
        },
        (Some(items), Some(from_patch)) => merge_list(items, from_patch, shape, &list_path)?,
    };
    let (named, unnamed) = merged
        .items
        .into_iter()
        .partition(|v| position_in(order, v, key).is_some());
    let items = normalize_order(named, unnamed, order, &merged.server_order, key);
    original.insert(field.to_string(), Value::Array(items));
    Ok(())
}

/// The patch list's items (deletions aside) must appear in the `$setElementOrder` list, in the
/// same relative order.
fn check_order(from_patch: &[Value], order: &[Value], key: Option<&str>, path: &str) -> Result<()> {
    if order.is_empty() {
        return Ok(());
    }
    let items: Vec<(usize, &Value)> = from_patch
        .iter()
        .enumerate()
        .filter(|(_, v)| key.is_none() || !is_delete(v))
        .collect();
    let (mut p, mut s) = (0, 0);
    while p < items.len() && s < order.len() {
        let (index, item) = items[p];
        if item.as_object().and_then(directive_of).is_some() {
            p += 1;
            continue;
        }
        if let Some(key) = key {
            if item.get(key).is_none() {
                return Err(Error::MissingMergeKey {
                    path: show(path),
                    index,
                    key: key.to_string(),
                });
            }
        }
        if identity(item, key) == identity(&order[s], key) {
            p += 1;
        }
        s += 1;
    }
    if p < items.len() {
        return Err(Error::OrderMismatch { path: show(path) });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::patch::schema::{Field, List, ListType};
    use serde_json::json;

    /// The `MergeItem` type of apimachinery's strategic patch tests.
    static MERGE_ITEM: Shape = Shape::Object(&[
        Field {
            name: "mergingList",
            shape: Shape::List(&List {
                patch: ListStrategy::Merge {
                    key: "name",
                    retain_keys: false,
                },
                apply: ListType::Map(&["name"]),
                item: &MERGE_ITEM,
            }),
        },
        Field {
            name: "nonMergingList",
            shape: Shape::List(&List {
                patch: ListStrategy::Atomic,
                apply: ListType::Atomic,
                item: &MERGE_ITEM,
            }),
        },
        Field {
            name: "mergingIntList",
            shape: Shape::List(&List {
                patch: ListStrategy::Set,
                apply: ListType::Set,
                item: &Shape::Any,
            }),
        },
        Field {
            name: "retainKeysMergingList",
            shape: Shape::List(&List {
                patch: ListStrategy::Merge {
                    key: "name",
                    retain_keys: true,
                },
                apply: ListType::Map(&["name"]),
                item: &MERGE_ITEM,
            }),
        },
    ]);

    fn smp(doc: Value, patch: Value) -> Value {
        strategic_merge_patch_with(&doc, &patch, MERGE_ITEM)
            .unwrap_or_else(|e| panic!("{e}\npatch: {patch}"))
    }

    fn smp_err(doc: Value, patch: Value) -> Error {
        strategic_merge_patch_with(&doc, &patch, MERGE_ITEM).expect_err("patch should fail")
    }

    fn kind(doc: Value, patch: Value, kind: &str) -> Value {
        strategic_merge_patch(&doc, &patch, kind).unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn kubectl_set_image_merges_into_the_named_container() {
        let live = json!({
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "web", "labels": {"app": "web"}},
            "spec": {"replicas": 2, "template": {"spec": {"containers": [
                {"name": "nginx", "image": "nginx:1.27", "ports": [{"containerPort": 80}],
                 "resources": {"limits": {"cpu": "1"}}},
                {"name": "sidecar", "image": "busybox"}
            ]}}}
        });
        let patch = json!({"spec":{"template":{"spec":{"$setElementOrder/containers":[{"name":"nginx"}],"containers":[{"image":"nginx:1.28","name":"nginx"}]}}}});
        let got = kind(live, patch, "Deployment");
        assert_eq!(
            got["spec"]["template"]["spec"]["containers"],
            json!([
                {"name": "nginx", "image": "nginx:1.28", "ports": [{"containerPort": 80}],
                 "resources": {"limits": {"cpu": "1"}}},
                {"name": "sidecar", "image": "busybox"}
            ])
        );
        assert_eq!(got["spec"]["replicas"], 2);
        assert_eq!(got["metadata"]["labels"], json!({"app": "web"}));
    }

    #[test]
    fn kubectl_apply_patch_reorders_and_deletes() {
        // What kubectl apply sends when a container is removed and one is added.
        let live = json!({"kind": "Pod", "spec": {"containers": [
            {"name": "a", "image": "a"}, {"name": "b", "image": "b"}, {"name": "c", "image": "c"}
        ]}});
        let patch = json!({"spec": {
            "$setElementOrder/containers": [{"name": "c"}, {"name": "d"}, {"name": "a"}],
            "containers": [{"name": "d", "image": "d"}, {"name": "b", "$patch": "delete"}]
        }});
        let got = kind(live, patch, "Pod");
        let names: Vec<_> = got["spec"]["containers"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["name"].as_str().unwrap())
            .collect();
        assert_eq!(names, ["c", "d", "a"]);
    }

    #[test]
    fn unique_scalars_when_merging_lists() {
        assert_eq!(
            smp(
                json!({"mergingIntList": [1, 2]}),
                json!({"mergingIntList": [2, 3]})
            ),
            json!({"mergingIntList": [1, 2, 3]})
        );
    }

    #[test]
    fn patch_directives_on_maps() {
        // delete map from nested map
        assert_eq!(
            smp(
                json!({"simpleMap": {"key1": 1, "key2": 1}}),
                json!({"simpleMap": {"$patch": "delete"}})
            ),
            json!({"simpleMap": {}})
        );
        // delete all keys from map
        assert_eq!(
            smp(json!({"name": 1, "value": 1}), json!({"$patch": "replace"})),
            json!({})
        );
        // add key and delete all keys from map
        assert_eq!(
            smp(
                json!({"name": 1, "value": 1}),
                json!({"other": "a", "$patch": "replace"})
            ),
            json!({"other": "a"})
        );
        // A nested replace keeps nothing of the old map.
        assert_eq!(
            smp(
                json!({"simpleMap": {"a": 1, "b": 2}}),
                json!({"simpleMap": {"$patch": "replace", "c": 3}})
            ),
            json!({"simpleMap": {"c": 3}})
        );
        // merge is the default.
        assert_eq!(
            smp(
                json!({"simpleMap": {"a": 1}}),
                json!({"simpleMap": {"$patch": "merge", "b": 2}})
            ),
            json!({"simpleMap": {"a": 1, "b": 2}})
        );
        // A deleted map the document does not have stays absent.
        assert_eq!(
            smp(
                json!({"name": 1}),
                json!({"simpleMap": {"$patch": "delete"}})
            ),
            json!({"name": 1})
        );
    }

    #[test]
    fn patch_directives_in_lists() {
        // delete all items from merging list
        assert_eq!(
            smp(
                json!({"mergingList": [{"name": 1}, {"name": 2}]}),
                json!({"mergingList": [{"$patch": "replace"}]})
            ),
            json!({"mergingList": []})
        );
        // replace with new items
        assert_eq!(
            smp(
                json!({"mergingList": [{"name": 1, "value": "a"}, {"name": 2}]}),
                json!({"mergingList": [{"name": 3}, {"$patch": "replace"}]})
            ),
            json!({"mergingList": [{"name": 3}]})
        );
        // delete all duplicate entries in a merging list
        assert_eq!(
            smp(
                json!({"mergingList": [{"name": 1}, {"name": 1}, {"name": 2, "value": "a"},
                                       {"name": 3}, {"name": 3}]}),
                json!({"mergingList": [{"name": 1, "$patch": "delete"},
                                       {"name": 3, "$patch": "delete"}]})
            ),
            json!({"mergingList": [{"name": 2, "value": "a"}]})
        );
        // nested patch merge with empty list: the deletion of a missing item is dropped.
        assert_eq!(
            smp(
                json!({"name": "hi"}),
                json!({"mergingList": [{"name": "hello"},
                                       {"$patch": "delete", "name": "doesntexist"}]})
            ),
            json!({"name": "hi", "mergingList": [{"name": "hello"}]})
        );
        // replace a list of scalars
        assert_eq!(
            smp(
                json!({"mergingIntList": [1, 2]}),
                json!({"mergingIntList": [3, {"$patch": "replace"}]})
            ),
            json!({"mergingIntList": [3]})
        );
    }

    #[test]
    fn merge_lists_of_maps() {
        let patch = json!({
            "$setElementOrder/mergingList": [{"name": 4}, {"name": 1}, {"name": 2}, {"name": 3}],
            "mergingList": [{"name": 4, "value": 4}, {"name": 3, "value": 3}]
        });
        assert_eq!(
            smp(
                json!({"mergingList": [{"name": 1, "other": "a"},
                                       {"name": 2, "value": 2, "other": "b"}]}),
                patch
            ),
            json!({"mergingList": [{"name": 4, "value": 4}, {"name": 1, "other": "a"},
                                   {"name": 2, "value": 2, "other": "b"},
                                   {"name": 3, "value": 3}]})
        );
    }

    #[test]
    fn add_and_delete_maps_in_a_merging_list() {
        let patch = json!({
            "$setElementOrder/mergingList": [{"name": 2}, {"name": 3}],
            "mergingList": [{"name": 3}, {"name": 1, "$patch": "delete"}]
        });
        // add map and delete map from merging list
        assert_eq!(
            smp(
                json!({"mergingList": [{"name": 1}, {"name": 2, "other": "b"},
                                       {"name": 4, "other": "c"}]}),
                patch
            ),
            json!({"mergingList": [{"name": 2, "other": "b"}, {"name": 4, "other": "c"},
                                   {"name": 3}]})
        );
        // ... with conflict
        let patch = json!({
            "$setElementOrder/mergingList": [{"name": 2}, {"name": 3}],
            "mergingList": [{"name": 2}, {"name": 3}, {"name": 1, "$patch": "delete"}]
        });
        assert_eq!(
            smp(
                json!({"mergingList": [{"name": 1, "other": "a"}, {"name": 4, "other": "c"}]}),
                patch
            ),
            json!({"mergingList": [{"name": 4, "other": "c"}, {"name": 2}, {"name": 3}]})
        );
        // delete missing map from merging list with conflict
        let patch = json!({
            "$setElementOrder/mergingList": [{"name": 2}],
            "mergingList": [{"name": 2}, {"name": 1, "$patch": "delete"}]
        });
        assert_eq!(
            smp(json!({"mergingList": [{"name": 3, "other": "a"}]}), patch),
            json!({"mergingList": [{"name": 2}, {"name": 3, "other": "a"}]})
        );
    }

    #[test]
    fn merging_list_fields_merge_and_delete() {
        // replace map field value in merging list
        assert_eq!(
            smp(
                json!({"mergingList": [{"name": 1, "value": 1, "other": "a"},
                                       {"name": 2, "value": 2, "other": "b"}]}),
                json!({"$setElementOrder/mergingList": [{"name": 1}, {"name": 2}],
                       "mergingList": [{"name": 1, "value": "a"}]})
            ),
            json!({"mergingList": [{"name": 1, "value": "a", "other": "a"},
                                   {"name": 2, "value": 2, "other": "b"}]})
        );
        // delete field from map in merging list
        assert_eq!(
            smp(
                json!({"mergingList": [{"name": 1, "value": 1, "other": "a"},
                                       {"name": 2, "value": 2}]}),
                json!({"$setElementOrder/mergingList": [{"name": 1}, {"name": 2}],
                       "mergingList": [{"name": 1, "value": null}]})
            ),
            json!({"mergingList": [{"name": 1, "other": "a"}, {"name": 2, "value": 2}]})
        );
        // replace non merging list nested in merging list
        assert_eq!(
            smp(
                json!({"mergingList": [{"name": 1, "other": "a",
                                        "nonMergingList": [{"name": 1}, {"name": 2, "value": 2}]},
                                       {"name": 2, "other": "b"}]}),
                json!({"$setElementOrder/mergingList": [{"name": 1}, {"name": 2}],
                       "mergingList": [{"name": 1, "nonMergingList": [{"name": 1, "value": 1}]}]})
            ),
            json!({"mergingList": [{"name": 1, "other": "a",
                                    "nonMergingList": [{"name": 1, "value": 1}]},
                                   {"name": 2, "other": "b"}]})
        );
    }

    #[test]
    fn the_patch_order_wins_in_merging_lists() {
        let doc = json!({"mergingList": [{"name": 1}, {"name": 2, "value": "b"}, {"name": 3}]});
        assert_eq!(
            smp(
                doc.clone(),
                json!({"mergingList": [{"name": 3, "value": "c"}, {"name": 1, "value": "a"},
                                       {"name": 2, "other": "x"}]})
            ),
            json!({"mergingList": [{"name": 3, "value": "c"}, {"name": 1, "value": "a"},
                                   {"name": 2, "value": "b", "other": "x"}]})
        );
        assert_eq!(
            smp(
                doc,
                json!({"mergingList": [{"name": 3, "value": "c"}, {"name": 1, "value": "a"}]})
            ),
            json!({"mergingList": [{"name": 2, "value": "b"}, {"name": 3, "value": "c"},
                                   {"name": 1, "value": "a"}]})
        );
        let ints = json!({"mergingIntList": [1, 2, 3]});
        assert_eq!(
            smp(ints.clone(), json!({"mergingIntList": [3, 1, 2]})),
            json!({"mergingIntList": [3, 1, 2]})
        );
        assert_eq!(
            smp(ints, json!({"mergingIntList": [3, 1]})),
            json!({"mergingIntList": [2, 3, 1]})
        );
    }

    #[test]
    fn set_element_order_may_name_missing_items() {
        assert_eq!(
            smp(
                json!({"mergingList": [{"name": 1}, {"name": 3}]}),
                json!({"$setElementOrder/mergingList": [{"name": 3}, {"name": 2}, {"name": 1}],
                       "mergingList": [{"name": 3, "value": 3}, {"name": 1, "value": 1}]})
            ),
            json!({"mergingList": [{"name": 3, "value": 3}, {"name": 1, "value": 1}]})
        );
        assert_eq!(
            smp(
                json!({"mergingIntList": [1, 3]}),
                json!({"$setElementOrder/mergingIntList": [3, 2, 1]})
            ),
            json!({"mergingIntList": [3, 1]})
        );
    }

    #[test]
    fn set_element_order_must_agree_with_the_patch_list() {
        let err = smp_err(
            json!({"mergingList": [{"name": 1}, {"name": 3}, {"name": 2}]}),
            json!({"$setElementOrder/mergingList": [{"name": 1}, {"name": 2}, {"name": 3}],
                   "mergingList": [{"name": 3, "value": 3}, {"name": 1, "value": 1}]}),
        );
        assert_eq!(
            err,
            Error::OrderMismatch {
                path: ".mergingList".into()
            }
        );
        assert!(err.to_string().contains("doesn't match"));
        let err = smp_err(
            json!({"mergingIntList": [1, 3, 2]}),
            json!({"$setElementOrder/mergingIntList": [1, 2, 3], "mergingIntList": [3, 1]}),
        );
        assert!(matches!(err, Error::OrderMismatch { .. }), "{err}");
        let err = smp_err(
            json!({}),
            json!({"$setElementOrder/mergingList": {"name": 1}}),
        );
        assert!(matches!(err, Error::NotAList { .. }), "{err}");
    }

    #[test]
    fn missing_merge_key_is_an_error() {
        let err = smp_err(
            json!({"mergingList": [{"name": 1, "value": "a"}]}),
            json!({"mergingList": [{"value": "b"}]}),
        );
        assert_eq!(
            err.to_string(),
            "strategic merge patch: item 0 of .mergingList does not contain declared merge key \
             \"name\""
        );
        let err = smp_err(
            json!({"mergingList": [{"name": 1}]}),
            json!({"mergingList": [{"$patch": "delete"}]}),
        );
        assert!(matches!(err, Error::MissingMergeKey { .. }), "{err}");
        let err = smp_err(json!({}), json!({"mergingList": [{"name": 1}, 2]}));
        assert!(matches!(err, Error::MixedList { .. }), "{err}");
        let err = smp_err(
            json!({"mergingList": [{"name": 1}]}),
            json!({"mergingList": [2]}),
        );
        assert!(matches!(err, Error::MixedList { .. }), "{err}");
    }

    #[test]
    fn delete_from_primitive_list() {
        for (doc, patch, want) in [
            // of a nonexistent item
            (
                json!({"mergingIntList": [1, 2]}),
                json!({"$deleteFromPrimitiveList/mergingIntList": [3]}),
                json!({"mergingIntList": [1, 2]}),
            ),
            // on an empty list
            (
                json!({"mergingIntList": null}),
                json!({"$deleteFromPrimitiveList/mergingIntList": [3]}),
                json!({"mergingIntList": null}),
            ),
            // on a nonexistent list
            (
                json!({"foo": ["bar"]}),
                json!({"$deleteFromPrimitiveList/mergingIntList": [3]}),
                json!({"foo": ["bar"]}),
            ),
            // from a list with the merge strategy
            (
                json!({"mergingIntList": [1, 2, 3]}),
                json!({"$deleteFromPrimitiveList/mergingIntList": [2]}),
                json!({"mergingIntList": [1, 3]}),
            ),
            // from a list without it
            (
                json!({"nonMergingIntList": [1, 2, 3]}),
                json!({"$deleteFromPrimitiveList/nonMergingIntList": [2]}),
                json!({"nonMergingIntList": [1, 3]}),
            ),
            // every duplicate, with $setElementOrder
            (
                json!({"mergingIntList": [1, 2, 3, 3, 4]}),
                json!({"$setElementOrder/mergingIntList": [1, 2],
                       "$deleteFromPrimitiveList/mergingIntList": [3]}),
                json!({"mergingIntList": [1, 2, 4]}),
            ),
            // add and delete items in lists of scalars
            (
                json!({"mergingIntList": [1, 2, 3]}),
                json!({"$setElementOrder/mergingIntList": [1, 2, 4],
                       "$deleteFromPrimitiveList/mergingIntList": [3],
                       "mergingIntList": [4]}),
                json!({"mergingIntList": [1, 2, 4]}),
            ),
        ] {
            assert_eq!(smp(doc, patch.clone()), want, "{patch}");
        }
    }

    #[test]
    fn retain_keys() {
        // retainKeys map can add, change and delete a field without the directive
        assert_eq!(
            smp(
                json!({"retainKeysMap": {"name": "foo", "value": "a"}}),
                json!({"retainKeysMap": {"value": "b", "name": null}})
            ),
            json!({"retainKeysMap": {"value": "b"}})
        );
        // With it, everything else goes.
        assert_eq!(
            smp(
                json!({"retainKeysMap": {"name": "foo", "value": "a", "other": "x"}}),
                json!({"retainKeysMap": {"$retainKeys": ["name", "value"], "value": "b"}})
            ),
            json!({"retainKeysMap": {"name": "foo", "value": "b"}})
        );
        // In list items (how kubectl switches a volume's source).
        assert_eq!(
            smp(
                json!({"retainKeysMergingList": [{"name": "bar"},
                                                 {"name": "foo", "value": "a", "other": "o"}]}),
                json!({"retainKeysMergingList": [{"name": "foo", "other": "p",
                                                  "$retainKeys": ["name", "other"]}]})
            ),
            json!({"retainKeysMergingList": [{"name": "bar"},
                                             {"name": "foo", "other": "p"}]})
        );
        let err = smp_err(
            json!({"retainKeysMap": {"name": "foo"}}),
            json!({"retainKeysMap": {"$retainKeys": ["name"], "value": "b"}}),
        );
        assert_eq!(
            err,
            Error::NotInRetainKeys {
                path: ".retainKeysMap".into(),
                field: "value".into()
            }
        );
        let err = smp_err(json!({}), json!({"$retainKeys": "name"}));
        assert!(matches!(err, Error::BadRetainKeys { .. }), "{err}");
    }

    #[test]
    fn null_deletes_and_is_dropped_from_new_values() {
        // defined null values should propagate removing original fields
        assert_eq!(
            smp(
                json!({"name": "original-name", "value": "original-value", "other": "o"}),
                json!({"name": "modified-name", "value": null})
            ),
            json!({"name": "modified-name", "other": "o"})
        );
        assert_eq!(
            smp(
                json!({"name": 2}),
                json!({"name": 1, "value": 1, "other": null})
            ),
            json!({"name": 1, "value": 1})
        );
        assert_eq!(
            smp(
                json!({}),
                json!({"simpleMap": {"a": null, "b": {"c": null, "d": 1}}})
            ),
            json!({"simpleMap": {"b": {"d": 1}}})
        );
    }

    #[test]
    fn directives_never_leak_into_new_values() {
        let got = smp(
            json!({}),
            json!({
                "mergingList": [
                    {"name": 1, "$patch": "merge", "mergingList": [{"name": 2}, {"name": 9, "$patch": "delete"}],
                     "$setElementOrder/mergingList": [{"name": 2}]},
                    {"name": 5, "$patch": "delete"}
                ],
                "simpleMap": {"$patch": "replace", "a": {"$retainKeys": ["b"], "b": 1}},
                "nonMergingList": [{"name": 7, "$patch": "merge"}, {"$patch": "replace"}],
                "$deleteFromPrimitiveList/mergingIntList": [1],
            }),
        );
        assert_eq!(
            got,
            json!({
                "mergingList": [{"name": 1, "mergingList": [{"name": 2}]}],
                "simpleMap": {"a": {"b": 1}},
                "nonMergingList": [{"name": 7}],
            })
        );
    }

    #[test]
    fn unknown_directives_are_errors() {
        let err = smp_err(json!({}), json!({"a": {"$patch": "frob"}}));
        assert_eq!(
            err.to_string(),
            "strategic merge patch: unknown $patch directive \"frob\" at .a"
        );
        let err = smp_err(json!({}), json!({"$frob": 1}));
        assert_eq!(
            err,
            Error::UnknownDirective {
                path: ".".into(),
                key: "$frob".into()
            }
        );
        let err = smp_err(
            json!({"mergingList": [{"name": 1}]}),
            json!({"mergingList": [{"name": 1, "$patch": "frob"}]}),
        );
        assert!(matches!(err, Error::UnknownPatchDirective { .. }), "{err}");
        let err = smp_err(json!({}), json!({"$deleteFromPrimitiveList/x": 1}));
        assert!(matches!(err, Error::NotAList { .. }), "{err}");
    }

    #[test]
    fn objects_in_a_list_of_scalars_have_no_merge_key() {
        let err = strategic_merge_patch(
            &json!({"metadata": {"finalizers": ["a"]}}),
            &json!({"metadata": {"finalizers": [{"name": "b"}]}}),
            "Pod",
        )
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "strategic merge patch: the list at .metadata.finalizers mixes objects and scalars"
        );
        let err = strategic_merge_patch(
            &json!({"metadata": {}}),
            &json!({"metadata": {"finalizers": [{"name": "b"}]}}),
            "Pod",
        )
        .unwrap_err();
        assert_eq!(
            err,
            Error::NoMergeKey {
                path: ".metadata.finalizers".into()
            }
        );
    }

    #[test]
    fn more_pod_lists() {
        let pod = json!({
            "metadata": {"ownerReferences": [{"uid": "1", "kind": "ReplicaSet", "name": "rs"}]},
            "spec": {
                "hostAliases": [{"ip": "10.0.0.1", "hostnames": ["a"]}],
                "initContainers": [{"name": "init", "image": "i"}, {"name": "migrate", "image": "m"}],
                "imagePullSecrets": [{"name": "reg"}]
            }
        });
        let patch = json!({
            "metadata": {"ownerReferences": [{"uid": "1", "controller": true}]},
            "spec": {
                "hostAliases": [{"ip": "10.0.0.1", "hostnames": ["b"]}],
                "initContainers": [{"name": "init", "$patch": "delete"}],
                "imagePullSecrets": [{"name": "other"}]
            }
        });
        let got = kind(pod, patch, "Pod");
        assert_eq!(
            got["metadata"]["ownerReferences"],
            json!([{"uid": "1", "kind": "ReplicaSet", "name": "rs", "controller": true}])
        );
        // hostnames has no strategy: replaced.
        assert_eq!(
            got["spec"]["hostAliases"],
            json!([{"ip": "10.0.0.1", "hostnames": ["b"]}])
        );
        assert_eq!(
            got["spec"]["initContainers"],
            json!([{"name": "migrate", "image": "m"}])
        );
        assert_eq!(
            got["spec"]["imagePullSecrets"],
            json!([{"name": "other"}, {"name": "reg"}])
        );
    }

    #[test]
    fn the_document_and_patch_must_be_objects() {
        assert_eq!(
            smp_err(json!({}), json!([1])),
            Error::NotAnObject { what: "patch" }
        );
        assert_eq!(
            smp_err(json!([1]), json!({})),
            Error::NotAnObject { what: "document" }
        );
    }

    #[test]
    fn a_changed_type_replaces() {
        assert_eq!(
            smp(
                json!({"a": {"b": 1}, "c": [1]}),
                json!({"a": "x", "c": {"d": 1}})
            ),
            json!({"a": "x", "c": {"d": 1}})
        );
        // A map that was not one is replaced, with directives stripped.
        assert_eq!(
            smp(json!({"a": 1}), json!({"a": {"$patch": "replace", "b": 2}})),
            json!({"a": {"b": 2}})
        );
    }

    #[test]
    fn pod_lists_use_their_merge_keys() {
        let pod = json!({
            "kind": "Pod",
            "metadata": {"name": "p", "finalizers": ["a", "b"]},
            "spec": {
                "containers": [{
                    "name": "app",
                    "env": [{"name": "A", "value": "1"}, {"name": "B", "value": "2"}],
                    "volumeMounts": [{"name": "data", "mountPath": "/data"}],
                    "ports": [{"containerPort": 80, "name": "http"}],
                    "command": ["a", "b"]
                }],
                "tolerations": [{"key": "x", "operator": "Exists"}],
                "nodeSelector": {"disk": "ssd", "zone": "a"}
            }
        });
        let patch = json!({
            "metadata": {"finalizers": ["c"], "$deleteFromPrimitiveList/finalizers": ["a"]},
            "spec": {
                "containers": [{
                    "name": "app",
                    "env": [{"name": "B", "value": "3"}],
                    "volumeMounts": [{"name": "logs", "mountPath": "/logs"}],
                    "ports": [{"containerPort": 80, "protocol": "TCP"}],
                    "command": ["c"]
                }],
                "tolerations": [{"key": "y", "operator": "Exists"}],
                "nodeSelector": {"zone": "b"}
            }
        });
        let got = kind(pod, patch, "Pod");
        // Without $setElementOrder, values the live list lacks go first (as in Kubernetes).
        assert_eq!(got["metadata"]["finalizers"], json!(["c", "b"]));
        let c = &got["spec"]["containers"][0];
        assert_eq!(
            c["env"],
            json!([{"name": "A", "value": "1"}, {"name": "B", "value": "3"}])
        );
        assert_eq!(
            c["volumeMounts"],
            json!([{"name": "logs", "mountPath": "/logs"}, {"name": "data", "mountPath": "/data"}])
        );
        assert_eq!(
            c["ports"],
            json!([{"containerPort": 80, "name": "http", "protocol": "TCP"}])
        );
        assert_eq!(c["command"], json!(["c"]));
        assert_eq!(
            got["spec"]["tolerations"],
            json!([{"key": "y", "operator": "Exists"}])
        );
        assert_eq!(
            got["spec"]["nodeSelector"],
            json!({"disk": "ssd", "zone": "b"})
        );
    }

    #[test]
    fn pod_volume_source_switch_with_retain_keys() {
        let pod = json!({"spec": {"volumes": [
            {"name": "data", "emptyDir": {}}, {"name": "cfg", "configMap": {"name": "c"}}
        ]}});
        let patch = json!({"spec": {
            "$setElementOrder/volumes": [{"name": "data"}, {"name": "cfg"}],
            "volumes": [{"$retainKeys": ["hostPath", "name"], "name": "data",
                         "hostPath": {"path": "/srv"}}]
        }});
        assert_eq!(
            kind(pod, patch, "Pod")["spec"]["volumes"],
            json!([{"name": "data", "hostPath": {"path": "/srv"}},
                   {"name": "cfg", "configMap": {"name": "c"}}])
        );
    }

    #[test]
    fn service_ports_merge_by_port_and_conditions_by_type() {
        let svc = json!({"spec": {"ports": [{"port": 80, "targetPort": 8080},
                                            {"port": 443, "targetPort": 8443}]}});
        let got = kind(
            svc,
            json!({"spec": {"ports": [{"port": 443, "name": "https"}, {"port": 80, "$patch": "delete"}]}}),
            "Service",
        );
        assert_eq!(
            got["spec"]["ports"],
            json!([{"port": 443, "targetPort": 8443, "name": "https"}])
        );
        let node = json!({"status": {"conditions": [{"type": "Ready", "status": "False"},
                                                    {"type": "DiskPressure", "status": "False"}]}});
        let got = kind(
            node,
            json!({"status": {"conditions": [{"type": "Ready", "status": "True"}]}}),
            "Node",
        );
        assert_eq!(
            got["status"]["conditions"],
            json!([{"type": "Ready", "status": "True"},
                   {"type": "DiskPressure", "status": "False"}])
        );
    }

    #[test]
    fn unknown_kinds_merge_like_merge_patch_with_directives() {
        let doc = json!({"spec": {"items": [{"name": "a", "x": 1}], "m": {"a": 1, "b": 2}}});
        let got = kind(
            doc,
            json!({"spec": {"items": [{"name": "a", "y": 2}], "m": {"a": null, "c": 3},
                            "n": {"$patch": "replace", "z": 1}}}),
            "Widget",
        );
        assert_eq!(
            got,
            json!({"spec": {"items": [{"name": "a", "y": 2}], "m": {"b": 2, "c": 3},
                            "n": {"z": 1}}})
        );
    }

    #[test]
    fn the_input_is_untouched() {
        let doc = json!({"mergingList": [{"name": 1}]});
        let patch = json!({"mergingList": [{"name": 1, "value": 1}, {"value": 2}]});
        assert!(strategic_merge_patch_with(&doc, &patch, MERGE_ITEM).is_err());
        assert_eq!(doc, json!({"mergingList": [{"name": 1}]}));
    }
}
