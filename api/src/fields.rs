//! Field selectors: the `?fieldSelector=` form (`metadata.name=x,spec.nodeName!=y`), matched
//! against an object's JSON, and the fields each kind lets clients select on.
//!
//! As in Kubernetes, `=` and `==` mean equal, `!=` not equal; values may escape `\,`, `\=` and
//! `\\`; a field the object lacks reads as its default (usually empty), so
//! `spec.nodeName=` selects unscheduled pods. Call [`FieldSelector::check_supported`] before
//! serving a request: a field the kind does not support is an error naming the field.

use std::fmt;
use std::str::FromStr;

use serde_json::Value;
use thiserror::Error;

use crate::registry;

#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum Error {
    #[error(
        "invalid field selector {selector:?}: {term:?} has no operator, expected one of '=', \
         '==', '!='"
    )]
    MissingOperator { selector: String, term: String },
    #[error("invalid field selector {selector:?}: {term:?} has no field name")]
    EmptyField { selector: String, term: String },
    #[error("invalid field selector {selector:?}: invalid escape sequence in {term:?}")]
    InvalidEscape { selector: String, term: String },
    #[error("field label not supported for {kind}: {field:?} (supported: {supported})")]
    Unsupported {
        kind: String,
        field: String,
        supported: String,
    },
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Operator {
    /// `=`
    Equals,
    /// `==`
    DoubleEquals,
    /// `!=`
    NotEquals,
}

impl Operator {
    fn as_str(self) -> &'static str {
        match self {
            Operator::Equals => "=",
            Operator::DoubleEquals => "==",
            Operator::NotEquals => "!=",
        }
    }
}

/// One `field<op>value` term.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Requirement {
    pub field: String,
    pub operator: Operator,
    /// The unescaped value.
    pub value: String,
}

impl Requirement {
    fn holds(&self, actual: &str) -> bool {
        match self.operator {
            Operator::Equals | Operator::DoubleEquals => actual == self.value,
            Operator::NotEquals => actual != self.value,
        }
    }
}

impl fmt::Display for Requirement {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let escaped = self
            .value
            .replace('\\', "\\\\")
            .replace(',', "\\,")
            .replace('=', "\\=");
        write!(f, "{}{}{escaped}", self.field, self.operator.as_str())
    }
}

/// A conjunction of field requirements; empty selects everything.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub struct FieldSelector {
    requirements: Vec<Requirement>,
}

/// How a selectable field is read from an object.
struct FieldDef {
    name: &'static str,
    /// Dotted JSON paths, tried in order; the first non-empty value wins.
    paths: &'static [&'static str],
    /// What an absent field reads as.
    default: &'static str,
}

const fn field(name: &'static str, paths: &'static [&'static str]) -> FieldDef {
    FieldDef {
        name,
        paths,
        default: "",
    }
}

const fn field_or(name: &'static str, default: &'static str) -> FieldDef {
    FieldDef {
        name,
        paths: &[],
        default,
    }
}

const POD_FIELDS: &[FieldDef] = &[
    field("spec.nodeName", &[]),
    field("spec.restartPolicy", &[]),
    field("spec.schedulerName", &[]),
    field("spec.serviceAccountName", &[]),
    field_or("spec.hostNetwork", "false"),
    field("status.phase", &[]),
    field("status.podIP", &[]),
    field("status.nominatedNodeName", &[]),
];

const EVENT_FIELDS: &[FieldDef] = &[
    field("involvedObject.kind", &[]),
    field("involvedObject.namespace", &[]),
    field("involvedObject.name", &[]),
    field("involvedObject.uid", &[]),
    field("involvedObject.apiVersion", &[]),
    field("involvedObject.resourceVersion", &[]),
    field("involvedObject.fieldPath", &[]),
    field("reason", &[]),
    field("reportingComponent", &[]),
    // `source` is the reporting component, from either the old or the new field.
    field("source", &["source.component", "reportingComponent"]),
    field("type", &[]),
];

const SECRET_FIELDS: &[FieldDef] = &[field("type", &[])];
const NAMESPACE_FIELDS: &[FieldDef] = &[field("status.phase", &[])];
const NODE_FIELDS: &[FieldDef] = &[field_or("spec.unschedulable", "false")];
const SERVICE_FIELDS: &[FieldDef] = &[field("spec.clusterIP", &[]), field("spec.type", &[])];
const REPLICA_SET_FIELDS: &[FieldDef] = &[field_or("status.replicas", "0")];
const JOB_FIELDS: &[FieldDef] = &[field_or("status.successful", "0")];

/// The fields a kind supports beyond `metadata.name` (and `metadata.namespace`).
fn kind_fields(kind: &str) -> &'static [FieldDef] {
    match kind {
        "Pod" => POD_FIELDS,
        "Event" => EVENT_FIELDS,
        "Secret" => SECRET_FIELDS,
        "Namespace" => NAMESPACE_FIELDS,
        "Node" => NODE_FIELDS,
        "Service" => SERVICE_FIELDS,
        "ReplicaSet" => REPLICA_SET_FIELDS,
        "Job" => JOB_FIELDS,
        _ => &[],
    }
}

/// Every field selector `kind` supports: `metadata.name`, `metadata.namespace` for namespaced
/// kinds, and the kind's own.
pub fn supported_fields(kind: &str) -> Vec<&'static str> {
    let mut fields = vec!["metadata.name"];
    if registry::by_kind(kind).is_none_or(|r| r.namespaced()) {
        fields.push("metadata.namespace");
    }
    fields.extend(kind_fields(kind).iter().map(|f| f.name));
    fields
}

fn lookup<'a>(obj: &'a Value, dotted: &str) -> Option<&'a Value> {
    dotted.split('.').try_fold(obj, |v, key| v.get(key))
}

fn scalar(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Bool(b) => Some(b.to_string()),
        Value::Number(n) => Some(n.to_string()),
        Value::Null | Value::Array(_) | Value::Object(_) => None,
    }
}

/// The value a field selector compares for `field` of an object of `kind`. Fields the kind does
/// not define are read by their dotted path; absent fields read as the field's default.
pub fn field_value(kind: &str, field: &str, obj: &Value) -> String {
    let def = kind_fields(kind).iter().find(|f| f.name == field);
    let (paths, default): (Vec<&str>, &str) = match def {
        Some(d) if !d.paths.is_empty() => (d.paths.to_vec(), d.default),
        Some(d) => (vec![d.name], d.default),
        None => (vec![field], ""),
    };
    paths
        .into_iter()
        .filter_map(|p| lookup(obj, p).and_then(scalar))
        .find(|v| !v.is_empty())
        .unwrap_or_else(|| default.to_string())
}

impl FieldSelector {
    pub fn everything() -> Self {
        FieldSelector::default()
    }

    /// Parses `field=value,field!=value`; empty terms are skipped.
    pub fn parse(selector: &str) -> Result<Self> {
        let mut requirements = Vec::new();
        for term in split_terms(selector) {
            if term.is_empty() {
                continue;
            }
            let err_term = || term.clone();
            let Some((field, operator, raw)) = split_term(&term) else {
                return Err(Error::MissingOperator {
                    selector: selector.to_string(),
                    term: err_term(),
                });
            };
            if field.is_empty() {
                return Err(Error::EmptyField {
                    selector: selector.to_string(),
                    term: err_term(),
                });
            }
            let value = unescape(raw).ok_or_else(|| Error::InvalidEscape {
                selector: selector.to_string(),
                term: err_term(),
            })?;
            requirements.push(Requirement {
                field: field.to_string(),
                operator,
                value,
            });
        }
        requirements.sort_by(|a, b| a.field.cmp(&b.field));
        Ok(FieldSelector { requirements })
    }

    pub fn requirements(&self) -> &[Requirement] {
        &self.requirements
    }

    pub fn is_empty(&self) -> bool {
        self.requirements.is_empty()
    }

    /// Errors on the first field `kind` does not support.
    pub fn check_supported(&self, kind: &str) -> Result<()> {
        let supported = supported_fields(kind);
        match self
            .requirements
            .iter()
            .find(|r| !supported.contains(&r.field.as_str()))
        {
            None => Ok(()),
            Some(r) => Err(Error::Unsupported {
                kind: kind.to_string(),
                field: r.field.clone(),
                supported: supported.join(", "),
            }),
        }
    }

    /// Whether an object of `kind`, as JSON, satisfies every requirement.
    pub fn matches(&self, kind: &str, obj: &Value) -> bool {
        self.requirements
            .iter()
            .all(|r| r.holds(&field_value(kind, &r.field, obj)))
    }

    /// The value `field` must equal for anything to match, if the selector pins it (e.g.
    /// `spec.nodeName=n1`): what an index or a watch cache can look up directly.
    pub fn requires_exact_match(&self, field: &str) -> Option<&str> {
        self.requirements
            .iter()
            .find(|r| r.field == field && r.operator != Operator::NotEquals)
            .map(|r| r.value.as_str())
    }
}

impl FromStr for FieldSelector {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        FieldSelector::parse(s)
    }
}

impl fmt::Display for FieldSelector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, r) in self.requirements.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            write!(f, "{r}")?;
        }
        Ok(())
    }
}

/// Splits on commas that are not escaped.
fn split_terms(s: &str) -> Vec<String> {
    let mut terms = Vec::new();
    let mut cur = String::new();
    let mut escaped = false;
    for c in s.chars() {
        if escaped {
            cur.push(c);
            escaped = false;
        } else if c == '\\' {
            cur.push(c);
            escaped = true;
        } else if c == ',' {
            terms.push(std::mem::take(&mut cur));
        } else {
            cur.push(c);
        }
    }
    terms.push(cur);
    terms
}

/// Finds the first unescaped operator: `!=`, `==` or `=`.
fn split_term(term: &str) -> Option<(&str, Operator, &str)> {
    let mut escaped = false;
    for (i, c) in term.char_indices() {
        if escaped {
            escaped = false;
            continue;
        }
        if c == '\\' {
            escaped = true;
            continue;
        }
        let rest = &term[i..];
        for (text, op) in [
            ("!=", Operator::NotEquals),
            ("==", Operator::DoubleEquals),
            ("=", Operator::Equals),
        ] {
            if rest.starts_with(text) {
                return Some((&term[..i], op, &term[i + text.len()..]));
            }
        }
    }
    None
}

/// Undoes `\\`, `\,` and `\=`; any other escape, or a trailing `\`, is invalid.
fn unescape(raw: &str) -> Option<String> {
    let mut out = String::with_capacity(raw.len());
    let mut chars = raw.chars();
    while let Some(c) = chars.next() {
        if c == '\\' {
            match chars.next() {
                Some(e @ ('\\' | ',' | '=')) => out.push(e),
                _ => return None,
            }
        } else {
            out.push(c);
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn fs(s: &str) -> FieldSelector {
        FieldSelector::parse(s).unwrap_or_else(|e| panic!("{s}: {e}"))
    }

    fn pod() -> Value {
        json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "web", "namespace": "default"},
            "spec": {"nodeName": "n1", "restartPolicy": "Always", "schedulerName": "default-scheduler"},
            "status": {"phase": "Running", "podIP": "10.244.1.5"}
        })
    }

    #[test]
    fn parses_terms() {
        let s = fs("metadata.name=x,spec.nodeName!=y,status.phase==Running");
        let parts: Vec<_> = s
            .requirements()
            .iter()
            .map(|r| (r.field.as_str(), r.operator, r.value.as_str()))
            .collect();
        assert_eq!(
            parts,
            [
                ("metadata.name", Operator::Equals, "x"),
                ("spec.nodeName", Operator::NotEquals, "y"),
                ("status.phase", Operator::DoubleEquals, "Running"),
            ]
        );
        assert!(fs("").is_empty());
        assert_eq!(fs("a=b,,c=d").requirements().len(), 2);
        assert_eq!(fs("spec.nodeName=").requirements()[0].value, "");
    }

    #[test]
    fn escapes() {
        let s = fs(r"metadata.name=a\,b\=c\\d");
        assert_eq!(s.requirements()[0].value, r"a,b=c\d");
        assert_eq!(s.to_string(), r"metadata.name=a\,b\=c\\d");
        assert_eq!(fs(&s.to_string()), s);
    }

    #[test]
    fn parse_errors_name_the_term() {
        assert_eq!(
            FieldSelector::parse("metadata.name")
                .unwrap_err()
                .to_string(),
            "invalid field selector \"metadata.name\": \"metadata.name\" has no operator, \
             expected one of '=', '==', '!='"
        );
        assert!(matches!(
            FieldSelector::parse("a=b,=c"),
            Err(Error::EmptyField { term, .. }) if term == "=c"
        ));
        assert!(matches!(
            FieldSelector::parse(r"a=b\x"),
            Err(Error::InvalidEscape { .. })
        ));
        assert!(matches!(
            FieldSelector::parse(r"a=b\"),
            Err(Error::InvalidEscape { .. })
        ));
    }

    #[test]
    fn matches_pods() {
        let p = pod();
        for (s, expect) in [
            ("metadata.name=web", true),
            ("metadata.name=db", false),
            ("metadata.namespace=default", true),
            ("spec.nodeName=n1", true),
            ("spec.nodeName!=n1", false),
            ("spec.nodeName!=n2", true),
            ("status.phase=Running,spec.nodeName=n1", true),
            ("status.phase=Pending,spec.nodeName=n1", false),
            ("status.podIP=10.244.1.5", true),
            ("spec.restartPolicy=Always", true),
            ("spec.schedulerName=default-scheduler", true),
            ("spec.hostNetwork=false", true),
            ("spec.serviceAccountName=", true),
            ("", true),
        ] {
            assert_eq!(fs(s).matches("Pod", &p), expect, "{s}");
        }
        let unscheduled = json!({"metadata": {"name": "a"}, "spec": {}});
        assert!(fs("spec.nodeName=").matches("Pod", &unscheduled));
        assert!(!fs("spec.nodeName!=").matches("Pod", &unscheduled));
        let host = json!({"spec": {"hostNetwork": true}});
        assert!(fs("spec.hostNetwork=true").matches("Pod", &host));
    }

    #[test]
    fn matches_events_secrets_and_nodes() {
        let event = json!({
            "metadata": {"name": "e", "namespace": "default"},
            "involvedObject": {"kind": "Pod", "name": "web", "uid": "u1"},
            "reason": "Scheduled", "type": "Normal",
            "reportingComponent": "berth-scheduler"
        });
        assert!(fs("involvedObject.kind=Pod,involvedObject.name=web").matches("Event", &event));
        assert!(fs("involvedObject.uid=u1,reason=Scheduled,type=Normal").matches("Event", &event));
        assert!(fs("source=berth-scheduler").matches("Event", &event));
        let old_style = json!({"source": {"component": "kubelet"}});
        assert!(fs("source=kubelet").matches("Event", &old_style));
        let secret = json!({"type": "kubernetes.io/tls"});
        assert!(fs("type=kubernetes.io/tls").matches("Secret", &secret));
        let node = json!({"metadata": {"name": "n1"}, "spec": {}});
        assert!(fs("spec.unschedulable=false").matches("Node", &node));
        let rs = json!({"status": {}});
        assert!(fs("status.replicas=0").matches("ReplicaSet", &rs));
    }

    #[test]
    fn supported_fields_per_kind() {
        let pod = supported_fields("Pod");
        for f in [
            "metadata.name",
            "metadata.namespace",
            "spec.nodeName",
            "status.phase",
            "spec.restartPolicy",
            "spec.schedulerName",
            "status.podIP",
        ] {
            assert!(pod.contains(&f), "{f}");
        }
        assert_eq!(
            supported_fields("Node"),
            ["metadata.name", "spec.unschedulable"]
        );
        assert_eq!(
            supported_fields("Namespace"),
            ["metadata.name", "status.phase"]
        );
        assert_eq!(
            supported_fields("ConfigMap"),
            ["metadata.name", "metadata.namespace"]
        );
        assert!(supported_fields("Event").contains(&"involvedObject.name"));
        assert!(supported_fields("Event").contains(&"source"));
        assert_eq!(
            supported_fields("Secret"),
            ["metadata.name", "metadata.namespace", "type"]
        );
    }

    #[test]
    fn unsupported_fields_are_errors() {
        assert!(fs("spec.nodeName=n1,metadata.name=a")
            .check_supported("Pod")
            .is_ok());
        let err = fs("spec.nodeName=n1")
            .check_supported("Service")
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "field label not supported for Service: \"spec.nodeName\" (supported: \
             metadata.name, metadata.namespace, spec.clusterIP, spec.type)"
        );
        assert!(fs("metadata.namespace=a").check_supported("Node").is_err());
        assert!(fs("spec.foo=a").check_supported("Pod").is_err());
        assert!(fs("type=Opaque").check_supported("Secret").is_ok());
    }

    #[test]
    fn exact_match_for_indexes() {
        let s = fs("spec.nodeName=n1,status.phase!=Failed");
        assert_eq!(s.requires_exact_match("spec.nodeName"), Some("n1"));
        assert_eq!(s.requires_exact_match("status.phase"), None);
        assert_eq!(s.requires_exact_match("metadata.name"), None);
    }
}
