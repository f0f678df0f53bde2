//! Sets of field paths, the unit of ownership in server-side apply, and their `FieldsV1` form
//! (`metadata.managedFields[].fieldsV1`).
//!
//! A path is a list of [`PathElement`]s: `f:<name>` for an object field, `k:{"name":"nginx"}`
//! for the item of a keyed list, `v:"value"` for a member of a set list (and `i:<n>` for an
//! index, which Berth never produces but accepts). A set holds the paths a manager owns; in
//! `FieldsV1` each path is a chain of nested objects and `".": {}` marks a path that is itself a
//! member while having members below it (a list item and its fields).
//!
//! [`FieldSet::from_value`] computes the set of a value: its scalar leaves, every item of a keyed
//! list (the item itself and its fields), every member of a set list, and every atomic list,
//! atomic object and empty object as one leaf (an empty keyed or set list has no paths).

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use serde_json::{Map, Value};
use thiserror::Error;

use super::schema::{ListType, Shape};

#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum Error {
    #[error("fieldsV1 at {path} must be a json object")]
    NotAnObject { path: String },
    #[error("fieldsV1 at {path}: bad key {key:?}: {reason}")]
    BadKey {
        path: String,
        key: String,
        reason: String,
    },
    #[error("{path}: {reason}")]
    InvalidValue { path: String, reason: String },
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// One step of a field path.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum PathElement {
    /// An object field.
    Field(String),
    /// A keyed list item, as the canonical JSON object of its key fields
    /// (`{"containerPort":80,"protocol":"TCP"}`, fields sorted).
    Key(String),
    /// A member of a set list, as canonical JSON (`"foregroundDeletion"`).
    Value(String),
    /// A list index.
    Index(usize),
}

impl PathElement {
    /// The `FieldsV1` key: `f:name`, `k:{...}`, `v:...` or `i:n`.
    pub fn to_fields_v1_key(&self) -> String {
        match self {
            PathElement::Field(name) => format!("f:{name}"),
            PathElement::Key(key) => format!("k:{key}"),
            PathElement::Value(value) => format!("v:{value}"),
            PathElement::Index(index) => format!("i:{index}"),
        }
    }

    /// Parses a `FieldsV1` key.
    pub fn parse_fields_v1_key(key: &str) -> std::result::Result<PathElement, String> {
        let (prefix, rest) = key
            .split_once(':')
            .ok_or_else(|| "expected a f:, k:, v: or i: prefix".to_string())?;
        let json = |text: &str| {
            serde_json::from_str::<Value>(text).map_err(|e| format!("invalid json: {e}"))
        };
        match prefix {
            "f" => Ok(PathElement::Field(rest.to_string())),
            "k" => match json(rest)? {
                key @ Value::Object(_) => Ok(PathElement::Key(canonical(&key))),
                _ => Err("a k: key must be a json object".to_string()),
            },
            "v" => Ok(PathElement::Value(canonical(&json(rest)?))),
            "i" => rest
                .parse()
                .map(PathElement::Index)
                .map_err(|_| "an i: key must be a non-negative integer".to_string()),
            _ => Err(format!("unknown prefix {prefix:?}")),
        }
    }
}

/// As Kubernetes prints paths in conflicts: `.spec`, `[name="nginx"]`, `[="value"]`, `[0]`.
impl fmt::Display for PathElement {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PathElement::Field(name) => write!(f, ".{name}"),
            PathElement::Key(key) => {
                let fields = match serde_json::from_str::<Value>(key) {
                    Ok(Value::Object(fields)) => fields,
                    _ => return write!(f, "[{key}]"),
                };
                let mut names: Vec<&String> = fields.keys().collect();
                names.sort();
                let parts: Vec<String> = names
                    .into_iter()
                    .map(|name| format!("{name}={}", canonical(&fields[name])))
                    .collect();
                write!(f, "[{}]", parts.join(","))
            }
            PathElement::Value(value) => write!(f, "[={value}]"),
            PathElement::Index(index) => write!(f, "[{index}]"),
        }
    }
}

/// A path as Kubernetes prints it: `.spec.template.spec.containers[name="nginx"].image`.
pub fn path_string(path: &[PathElement]) -> String {
    path.iter().map(ToString::to_string).collect()
}

/// JSON with object keys sorted, so equal values have one spelling.
pub(crate) fn canonical(value: &Value) -> String {
    match value {
        Value::Object(map) => {
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort();
            let parts: Vec<String> = keys
                .into_iter()
                .map(|k| format!("{}:{}", Value::String(k.clone()), canonical(&map[k])))
                .collect();
            format!("{{{}}}", parts.join(","))
        }
        Value::Array(items) => {
            let parts: Vec<String> = items.iter().map(canonical).collect();
            format!("[{}]", parts.join(","))
        }
        other => other.to_string(),
    }
}

/// The value a list map key takes when an item leaves it out (the OpenAPI default).
fn key_default(key: &str) -> Option<Value> {
    (key == "protocol").then(|| Value::String("TCP".to_string()))
}

/// The path element of a keyed list item, or `None` when it is not an object with every key.
pub(crate) fn item_element(item: &Value, keys: &[&str]) -> Option<PathElement> {
    let item = item.as_object()?;
    let mut fields = Map::new();
    for key in keys {
        let value = match item.get(*key) {
            Some(value) if !value.is_null() => value.clone(),
            _ => key_default(key)?,
        };
        fields.insert((*key).to_string(), value);
    }
    Some(PathElement::Key(canonical(&Value::Object(fields))))
}

/// The path elements of every item of a keyed list, or why the list cannot be keyed (an item
/// without a key, or two items with the same one).
pub(crate) fn list_elements(
    items: &[Value],
    keys: &[&str],
) -> std::result::Result<Vec<PathElement>, String> {
    let mut seen = BTreeSet::new();
    let mut out = Vec::with_capacity(items.len());
    for (index, item) in items.iter().enumerate() {
        let element = item_element(item, keys).ok_or_else(|| {
            format!(
                "element {index}: associative list with keys {keys:?} has an element that is \
                 not an object with every key"
            )
        })?;
        if !seen.insert(element.clone()) {
            return Err(format!("duplicate entries for key {element}"));
        }
        out.push(element);
    }
    Ok(out)
}

/// A set of field paths.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FieldSet {
    /// Paths that end here.
    members: BTreeSet<PathElement>,
    /// Paths that go on; never empty sets.
    children: BTreeMap<PathElement, FieldSet>,
}

impl FieldSet {
    pub fn new() -> FieldSet {
        FieldSet::default()
    }

    pub fn is_empty(&self) -> bool {
        self.members.is_empty() && self.children.is_empty()
    }

    /// Adds a path (the empty path, the root, is not a member of any set).
    pub fn insert(&mut self, path: &[PathElement]) {
        match path {
            [] => {}
            [last] => {
                self.members.insert(last.clone());
            }
            [first, rest @ ..] => self.children.entry(first.clone()).or_default().insert(rest),
        }
    }

    pub fn contains(&self, path: &[PathElement]) -> bool {
        match path {
            [] => false,
            [last] => self.members.contains(last),
            [first, rest @ ..] => self.children.get(first).is_some_and(|c| c.contains(rest)),
        }
    }

    /// Whether `element` itself is a member at this level.
    pub(crate) fn has_member(&self, element: &PathElement) -> bool {
        self.members.contains(element)
    }

    /// The paths below `element`, when there are any.
    pub(crate) fn child(&self, element: &PathElement) -> Option<&FieldSet> {
        self.children.get(element)
    }

    pub(crate) fn members(&self) -> impl Iterator<Item = &PathElement> {
        self.members.iter()
    }

    pub(crate) fn children(&self) -> impl Iterator<Item = (&PathElement, &FieldSet)> {
        self.children.iter()
    }

    pub fn union(&self, other: &FieldSet) -> FieldSet {
        let mut out = self.clone();
        out.members.extend(other.members.iter().cloned());
        for (element, child) in &other.children {
            match out.children.get_mut(element) {
                Some(mine) => *mine = mine.union(child),
                None => {
                    out.children.insert(element.clone(), child.clone());
                }
            }
        }
        out
    }

    pub fn intersection(&self, other: &FieldSet) -> FieldSet {
        let members = self.members.intersection(&other.members).cloned().collect();
        let children = self
            .children
            .iter()
            .filter_map(|(element, child)| {
                let both = child.intersection(other.children.get(element)?);
                (!both.is_empty()).then(|| (element.clone(), both))
            })
            .collect();
        FieldSet { members, children }
    }

    /// The paths of this set that are not in `other`.
    pub fn difference(&self, other: &FieldSet) -> FieldSet {
        let members = self.members.difference(&other.members).cloned().collect();
        let children = self
            .children
            .iter()
            .filter_map(|(element, child)| {
                let rest = match other.children.get(element) {
                    Some(theirs) => child.difference(theirs),
                    None => child.clone(),
                };
                (!rest.is_empty()).then(|| (element.clone(), rest))
            })
            .collect();
        FieldSet { members, children }
    }

    /// Every path, in order (a path before the paths below it).
    pub fn paths(&self) -> Vec<Vec<PathElement>> {
        let mut out = Vec::new();
        self.walk(&mut Vec::new(), &mut out);
        out
    }

    fn walk(&self, prefix: &mut Vec<PathElement>, out: &mut Vec<Vec<PathElement>>) {
        let elements: BTreeSet<&PathElement> =
            self.members.iter().chain(self.children.keys()).collect();
        for element in elements {
            prefix.push(element.clone());
            if self.members.contains(element) {
                out.push(prefix.clone());
            }
            if let Some(child) = self.children.get(element) {
                child.walk(prefix, out);
            }
            prefix.pop();
        }
    }

    /// The `FieldsV1` JSON of this set.
    pub fn to_fields_v1(&self) -> Value {
        let elements: BTreeSet<&PathElement> =
            self.members.iter().chain(self.children.keys()).collect();
        let mut out = Map::new();
        for element in elements {
            let mut node = match self.children.get(element).map(FieldSet::to_fields_v1) {
                Some(Value::Object(node)) => node,
                _ => Map::new(),
            };
            if self.children.contains_key(element) && self.members.contains(element) {
                node.insert(".".to_string(), Value::Object(Map::new()));
            }
            out.insert(element.to_fields_v1_key(), Value::Object(node));
        }
        Value::Object(out)
    }

    /// Parses `FieldsV1` JSON.
    pub fn from_fields_v1(value: &Value) -> Result<FieldSet> {
        parse_fields_v1(value, &mut Vec::new())
    }

    /// The set of `value`, an object of the given shape. Lists that should be keyed but cannot
    /// be (an item without its key, duplicate keys) count as one atomic leaf.
    pub fn from_value(value: &Value, shape: Shape) -> FieldSet {
        let mut out = FieldSet::new();
        // Lenient collection does not fail.
        let _ = collect(value, shape, &mut Vec::new(), &mut out, false);
        out
    }

    /// [`FieldSet::from_value`] for an apply configuration: a keyed list that cannot be keyed
    /// is an error, as Kubernetes rejects it.
    pub fn try_from_value(value: &Value, shape: Shape) -> Result<FieldSet> {
        let mut out = FieldSet::new();
        collect(value, shape, &mut Vec::new(), &mut out, true)?;
        Ok(out)
    }
}

fn parse_fields_v1(value: &Value, path: &mut Vec<PathElement>) -> Result<FieldSet> {
    let map = value
        .as_object()
        .ok_or_else(|| Error::NotAnObject { path: shown(path) })?;
    let mut set = FieldSet::new();
    for (key, child) in map {
        if key == "." {
            continue;
        }
        let element = PathElement::parse_fields_v1_key(key).map_err(|reason| Error::BadKey {
            path: shown(path),
            key: key.clone(),
            reason,
        })?;
        path.push(element.clone());
        let node = child
            .as_object()
            .ok_or_else(|| Error::NotAnObject { path: shown(path) })?;
        if node.is_empty() || node.contains_key(".") {
            set.members.insert(element.clone());
        }
        let below = parse_fields_v1(child, path)?;
        path.pop();
        if !below.is_empty() {
            set.children.insert(element, below);
        }
    }
    Ok(set)
}

fn shown(path: &[PathElement]) -> String {
    if path.is_empty() {
        ".".to_string()
    } else {
        path_string(path)
    }
}

/// Adds the paths of `value` (at `path`) to `out`.
pub(crate) fn collect(
    value: &Value,
    shape: Shape,
    path: &mut Vec<PathElement>,
    out: &mut FieldSet,
    strict: bool,
) -> Result<()> {
    match value {
        Value::Object(map) if !map.is_empty() && !matches!(shape, Shape::Atomic) => {
            for (name, child) in map {
                path.push(PathElement::Field(name.clone()));
                collect(child, shape.field(name), path, out, strict)?;
                path.pop();
            }
        }
        // An empty keyed or set list has no members; an empty atomic one is a leaf.
        Value::Array(items) => match shape.list() {
            Some(list) => match list.apply {
                ListType::Map(keys) => match list_elements(items, keys) {
                    Ok(elements) => {
                        for (item, element) in items.iter().zip(elements) {
                            path.push(element);
                            out.insert(path);
                            collect(item, *list.item, path, out, strict)?;
                            path.pop();
                        }
                    }
                    Err(reason) if strict => {
                        return Err(Error::InvalidValue {
                            path: shown(path),
                            reason,
                        })
                    }
                    Err(_) => out.insert(path),
                },
                ListType::Set => {
                    for item in items {
                        path.push(PathElement::Value(canonical(item)));
                        out.insert(path);
                        path.pop();
                    }
                }
                ListType::Atomic => out.insert(path),
            },
            None => out.insert(path),
        },
        _ => out.insert(path),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::patch::schema;
    use serde_json::json;

    fn f(name: &str) -> PathElement {
        PathElement::Field(name.to_string())
    }

    fn k(key: Value) -> PathElement {
        PathElement::Key(canonical(&key))
    }

    fn set(paths: &[&[PathElement]]) -> FieldSet {
        let mut s = FieldSet::new();
        for p in paths {
            s.insert(p);
        }
        s
    }

    #[test]
    fn fields_v1_round_trip() {
        let v1 = json!({
            "f:metadata": {"f:labels": {"f:app": {}}},
            "f:spec": {"f:containers": {"k:{\"name\":\"nginx\"}": {".": {}, "f:image": {}}}}
        });
        let s = FieldSet::from_fields_v1(&v1).unwrap();
        assert!(s.contains(&[f("metadata"), f("labels"), f("app")]));
        assert!(s.contains(&[f("spec"), f("containers"), k(json!({"name": "nginx"}))]));
        assert!(s.contains(&[
            f("spec"),
            f("containers"),
            k(json!({"name": "nginx"})),
            f("image")
        ]));
        assert!(!s.contains(&[f("spec"), f("containers")]));
        assert!(!s.contains(&[f("metadata")]));
        assert_eq!(s.to_fields_v1(), v1);
    }

    #[test]
    fn fields_v1_keys_are_canonical() {
        let s = FieldSet::from_fields_v1(&json!({
            "f:ports": {"k:{\"protocol\": \"TCP\", \"containerPort\": 80}": {}},
            "f:finalizers": {"v:\"a\"": {}},
            "f:list": {"i:3": {}}
        }))
        .unwrap();
        assert_eq!(
            s.to_fields_v1(),
            json!({
                "f:finalizers": {"v:\"a\"": {}},
                "f:list": {"i:3": {}},
                "f:ports": {"k:{\"containerPort\":80,\"protocol\":\"TCP\"}": {}}
            })
        );
    }

    #[test]
    fn bad_fields_v1() {
        for (v1, want) in [
            (json!([]), "fieldsV1 at . must be a json object"),
            (json!({"f:a": 1}), "fieldsV1 at .a must be a json object"),
            (json!({"x:a": {}}), "unknown prefix \"x\""),
            (json!({"a": {}}), "expected a f:, k:, v: or i: prefix"),
            (
                json!({"f:a": {"k:[1]": {}}}),
                "a k: key must be a json object",
            ),
            (json!({"v:{": {}}), "invalid json"),
            (json!({"i:-1": {}}), "non-negative integer"),
        ] {
            let err = FieldSet::from_fields_v1(&v1).expect_err("should fail");
            assert!(err.to_string().contains(want), "{err}");
        }
    }

    #[test]
    fn paths_print_like_kubernetes() {
        let path = [
            f("spec"),
            f("containers"),
            k(json!({"name": "nginx"})),
            f("ports"),
            k(json!({"protocol": "TCP", "containerPort": 80})),
        ];
        assert_eq!(
            path_string(&path),
            ".spec.containers[name=\"nginx\"].ports[containerPort=80,protocol=\"TCP\"]"
        );
        assert_eq!(
            path_string(&[
                f("metadata"),
                f("finalizers"),
                PathElement::Value("\"x\"".into())
            ]),
            ".metadata.finalizers[=\"x\"]"
        );
        assert_eq!(path_string(&[f("a"), PathElement::Index(2)]), ".a[2]");
    }

    #[test]
    fn set_operations() {
        let a = set(&[&[f("a")], &[f("b"), f("c")], &[f("b"), f("d")]]);
        let b = set(&[&[f("b"), f("c")], &[f("e")]]);
        assert_eq!(
            a.union(&b),
            set(&[&[f("a")], &[f("b"), f("c")], &[f("b"), f("d")], &[f("e")]])
        );
        assert_eq!(a.intersection(&b), set(&[&[f("b"), f("c")]]));
        assert_eq!(a.difference(&b), set(&[&[f("a")], &[f("b"), f("d")]]));
        assert!(a.difference(&a).is_empty());
        assert!(a.intersection(&set(&[&[f("b")]])).is_empty());
        assert_eq!(
            a.paths(),
            vec![vec![f("a")], vec![f("b"), f("c")], vec![f("b"), f("d")]]
        );
        // A member and paths below it are distinct.
        let item = set(&[&[f("l"), k(json!({"name": "x"}))]]);
        let field = set(&[&[f("l"), k(json!({"name": "x"})), f("v")]]);
        assert_eq!(item.union(&field).difference(&field), item);
    }

    #[test]
    fn the_set_of_a_deployment() {
        let deployment = json!({
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": "web", "labels": {"app": "web"}, "finalizers": ["x"]},
            "spec": {
                "replicas": 2,
                "selector": {"matchLabels": {"app": "web"}},
                "template": {
                    "metadata": {"labels": {"app": "web"}},
                    "spec": {"containers": [{
                        "name": "nginx",
                        "image": "nginx",
                        "ports": [{"containerPort": 80}],
                        "args": ["-g"],
                        "resources": {}
                    }]}
                }
            }
        });
        let s = FieldSet::from_value(&deployment, schema::apply_shape("Deployment"));
        assert_eq!(
            s.to_fields_v1(),
            json!({
                "f:apiVersion": {},
                "f:kind": {},
                "f:metadata": {
                    "f:finalizers": {"v:\"x\"": {}},
                    "f:labels": {"f:app": {}},
                    "f:name": {}
                },
                "f:spec": {
                    "f:replicas": {},
                    "f:selector": {},
                    "f:template": {
                        "f:metadata": {"f:labels": {"f:app": {}}},
                        "f:spec": {"f:containers": {"k:{\"name\":\"nginx\"}": {
                            ".": {},
                            "f:args": {},
                            "f:image": {},
                            "f:name": {},
                            "f:ports": {"k:{\"containerPort\":80,\"protocol\":\"TCP\"}": {
                                ".": {},
                                "f:containerPort": {}
                            }},
                            "f:resources": {}
                        }}}
                    }
                }
            })
        );
    }

    #[test]
    fn unkeyable_lists() {
        let pod = json!({"spec": {"containers": [{"image": "x"}]}});
        let shape = schema::apply_shape("Pod");
        let s = FieldSet::from_value(&pod, shape);
        assert_eq!(s.paths(), vec![vec![f("spec"), f("containers")]]);
        let err = FieldSet::try_from_value(&pod, shape).unwrap_err();
        assert!(
            err.to_string().starts_with(".spec.containers: element 0:"),
            "{err}"
        );
        let dup = json!({"spec": {"containers": [{"name": "a"}, {"name": "a"}]}});
        let err = FieldSet::try_from_value(&dup, shape).unwrap_err();
        assert_eq!(
            err.to_string(),
            ".spec.containers: duplicate entries for key [name=\"a\"]"
        );
    }
}
