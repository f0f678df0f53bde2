//! Object metadata, labels, annotations and label selectors, plus the small numeric checks every
//! kind uses.

use std::collections::BTreeMap;
use std::fmt;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{
    LabelSelector, LabelSelectorRequirement, ObjectMeta,
};

use super::field::{ErrorList, FieldError, Path};
use super::names;

/// Total size of an object's annotation keys and values, as Kubernetes limits it.
pub const TOTAL_ANNOTATION_SIZE_LIMIT: usize = 256 * 1024;

/// Which format a kind's object names must have.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NameRule {
    /// Most kinds: `a.b-c`, at most 253 characters.
    Dns1123Subdomain,
    /// Namespaces: `a-b`, at most 63 characters.
    Dns1123Label,
    /// Services: a DNS label starting with a letter.
    Dns1035Label,
    /// RBAC kinds: anything usable as one path segment (`system:node` is a valid role name).
    PathSegment,
}

impl NameRule {
    pub fn check(self, name: &str) -> Vec<String> {
        match self {
            NameRule::Dns1123Subdomain => names::is_dns1123_subdomain(name),
            NameRule::Dns1123Label => names::is_dns1123_label(name),
            NameRule::Dns1035Label => names::is_dns1035_label(name),
            NameRule::PathSegment => names::is_path_segment_name(name),
        }
    }

    /// Checks a `generateName` prefix: a trailing '-' is allowed, since a random suffix follows.
    pub fn check_prefix(self, prefix: &str) -> Vec<String> {
        match prefix.strip_suffix('-') {
            Some(rest) if !rest.is_empty() => self.check(&format!("{rest}a")),
            _ => self.check(prefix),
        }
    }
}

/// Validates `metadata` for create: a name (or a `generateName` the server will complete), the
/// namespace the scope demands, labels, annotations, owner references and finalizers.
///
/// Namespaced objects must carry their namespace: the API server sets it from the request path
/// before validating.
pub fn validate_object_meta(
    meta: &ObjectMeta,
    namespaced: bool,
    rule: NameRule,
    path: &Path,
) -> ErrorList {
    let mut errs = ErrorList::new();
    let name = meta.name.as_deref().unwrap_or("");
    let generate_name = meta.generate_name.as_deref().unwrap_or("");
    if !generate_name.is_empty() {
        for msg in rule.check_prefix(generate_name) {
            errs.push(FieldError::invalid(
                &path.child("generateName"),
                generate_name,
                msg,
            ));
        }
    }
    if name.is_empty() {
        if generate_name.is_empty() {
            errs.push(FieldError::required(
                &path.child("name"),
                "name or generateName is required",
            ));
        }
    } else {
        for msg in rule.check(name) {
            errs.push(FieldError::invalid(&path.child("name"), name, msg));
        }
    }

    let namespace = meta.namespace.as_deref().unwrap_or("");
    let ns_path = path.child("namespace");
    if namespaced {
        if namespace.is_empty() {
            errs.push(FieldError::required(&ns_path, ""));
        } else {
            for msg in names::is_dns1123_label(namespace) {
                errs.push(FieldError::invalid(&ns_path, namespace, msg));
            }
        }
    } else if !namespace.is_empty() {
        errs.push(FieldError::forbidden(&ns_path, "not allowed on this type"));
    }

    errs.extend(validate_labels(meta.labels.as_ref(), &path.child("labels")));
    errs.extend(validate_annotations(
        meta.annotations.as_ref(),
        &path.child("annotations"),
    ));
    errs.extend(validate_owner_references(
        meta,
        &path.child("ownerReferences"),
    ));
    for finalizer in meta.finalizers.iter().flatten() {
        for msg in names::is_qualified_name(finalizer) {
            errs.push(FieldError::invalid(
                &path.child("finalizers"),
                finalizer,
                msg,
            ));
        }
    }
    errs
}

fn validate_owner_references(meta: &ObjectMeta, path: &Path) -> ErrorList {
    let mut errs = ErrorList::new();
    let mut controllers = Vec::new();
    for (i, owner) in meta.owner_references.iter().flatten().enumerate() {
        let p = path.index(i);
        let (_, version) = crate::registry::split_api_version(&owner.api_version);
        if version.is_empty() {
            errs.push(FieldError::invalid(
                &p.child("apiVersion"),
                &owner.api_version,
                "version must not be empty",
            ));
        }
        if owner.kind.is_empty() {
            errs.push(FieldError::invalid(
                &p.child("kind"),
                &owner.kind,
                "kind must not be empty",
            ));
        }
        if owner.name.is_empty() {
            errs.push(FieldError::invalid(
                &p.child("name"),
                &owner.name,
                "name must not be empty",
            ));
        }
        if owner.uid.is_empty() {
            errs.push(FieldError::invalid(
                &p.child("uid"),
                &owner.uid,
                "uid must not be empty",
            ));
        }
        if owner.controller == Some(true) {
            controllers.push(format!("{}/{}", owner.kind, owner.name));
        }
    }
    if controllers.len() > 1 {
        errs.push(FieldError::invalid(
            path,
            &controllers,
            "only one reference can have controller set to true",
        ));
    }
    errs
}

/// Label keys must be qualified names and values valid label values; errors name the map's
/// path, with the offending key or value.
pub fn validate_labels(labels: Option<&BTreeMap<String, String>>, path: &Path) -> ErrorList {
    let mut errs = ErrorList::new();
    for (key, value) in labels.into_iter().flatten() {
        for msg in names::is_qualified_name(key) {
            errs.push(FieldError::invalid(path, key, msg));
        }
        for msg in names::is_valid_label_value(value) {
            errs.push(FieldError::invalid(path, value, msg));
        }
    }
    errs
}

/// Annotation keys are qualified names (any case); keys and values together stay within
/// [`TOTAL_ANNOTATION_SIZE_LIMIT`] bytes.
pub fn validate_annotations(
    annotations: Option<&BTreeMap<String, String>>,
    path: &Path,
) -> ErrorList {
    let mut errs = ErrorList::new();
    let mut total = 0;
    for (key, value) in annotations.into_iter().flatten() {
        for msg in names::is_qualified_name(&key.to_ascii_lowercase()) {
            errs.push(FieldError::invalid(path, key, msg));
        }
        total += key.len() + value.len();
    }
    if total > TOTAL_ANNOTATION_SIZE_LIMIT {
        errs.push(FieldError::too_long(path, TOTAL_ANNOTATION_SIZE_LIMIT));
    }
    errs
}

/// A `LabelSelector` is well formed: valid `matchLabels`, and `matchExpressions` with a known
/// operator, values exactly when the operator takes them, valid keys and values.
pub fn validate_label_selector(selector: &LabelSelector, path: &Path) -> ErrorList {
    let mut errs = validate_labels(selector.match_labels.as_ref(), &path.child("matchLabels"));
    for (i, req) in selector.match_expressions.iter().flatten().enumerate() {
        errs.extend(validate_selector_requirement(
            req,
            &path.child("matchExpressions").index(i),
        ));
    }
    errs
}

fn validate_selector_requirement(req: &LabelSelectorRequirement, path: &Path) -> ErrorList {
    let mut errs = ErrorList::new();
    let values = req.values.as_deref().unwrap_or_default();
    match req.operator.as_str() {
        "In" | "NotIn" => {
            if values.is_empty() {
                errs.push(FieldError::required(
                    &path.child("values"),
                    "must be specified when `operator` is 'In' or 'NotIn'",
                ));
            }
        }
        "Exists" | "DoesNotExist" => {
            if !values.is_empty() {
                errs.push(FieldError::forbidden(
                    &path.child("values"),
                    "may not be specified when `operator` is 'Exists' or 'DoesNotExist'",
                ));
            }
        }
        other => errs.push(FieldError::not_supported(
            &path.child("operator"),
            other,
            &["In", "NotIn", "Exists", "DoesNotExist"],
        )),
    }
    for msg in names::is_qualified_name(&req.key) {
        errs.push(FieldError::invalid(&path.child("key"), &req.key, msg));
    }
    for (i, value) in values.iter().enumerate() {
        for msg in names::is_valid_label_value(value) {
            errs.push(FieldError::invalid(
                &path.child("values").index(i),
                value,
                msg,
            ));
        }
    }
    errs
}

/// Whether a selector selects anything narrower than everything.
pub fn selector_is_empty(selector: &LabelSelector) -> bool {
    selector
        .match_labels
        .as_ref()
        .is_none_or(BTreeMap::is_empty)
        && selector
            .match_expressions
            .as_ref()
            .is_none_or(Vec::is_empty)
}

pub(crate) fn nonnegative<T>(value: Option<T>, path: &Path) -> Option<FieldError>
where
    T: PartialOrd + Default + fmt::Debug,
{
    match value {
        Some(v) if v < T::default() => Some(FieldError::invalid(
            path,
            v,
            "must be greater than or equal to 0",
        )),
        _ => None,
    }
}

pub(crate) fn positive<T>(value: Option<T>, path: &Path) -> Option<FieldError>
where
    T: PartialOrd + Default + fmt::Debug,
{
    match value {
        Some(v) if v <= T::default() => {
            Some(FieldError::invalid(path, v, "must be greater than 0"))
        }
        _ => None,
    }
}

/// `value`, if set, is one of `supported`.
pub(crate) fn one_of(value: Option<&str>, supported: &[&str], path: &Path) -> Option<FieldError> {
    match value {
        Some(v) if !supported.contains(&v) => Some(FieldError::not_supported(path, v, supported)),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::validation::ErrorType;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;

    fn meta(name: &str, namespace: Option<&str>) -> ObjectMeta {
        ObjectMeta {
            name: Some(name.into()).filter(|n: &String| !n.is_empty()),
            namespace: namespace.map(Into::into),
            ..Default::default()
        }
    }

    fn has(errs: &ErrorList, t: ErrorType, field: &str) -> bool {
        errs.iter().any(|e| e.error_type == t && e.field == field)
    }

    fn root() -> Path {
        Path::new("metadata")
    }

    fn map(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn name_or_generate_name_is_required() {
        let errs = validate_object_meta(
            &meta("", Some("default")),
            true,
            NameRule::Dns1123Subdomain,
            &root(),
        );
        assert!(has(&errs, ErrorType::Required, "metadata.name"));
        let mut m = meta("", Some("default"));
        m.generate_name = Some("web-".into());
        assert!(validate_object_meta(&m, true, NameRule::Dns1123Subdomain, &root()).is_empty());
        m.generate_name = Some("Web-".into());
        let errs = validate_object_meta(&m, true, NameRule::Dns1123Subdomain, &root());
        assert!(has(&errs, ErrorType::Invalid, "metadata.generateName"));
    }

    #[test]
    fn name_rules_per_kind() {
        let ok = |name: &str, rule| {
            validate_object_meta(&meta(name, None), false, rule, &root()).is_empty()
        };
        assert!(ok("a.b", NameRule::Dns1123Subdomain));
        assert!(!ok("A", NameRule::Dns1123Subdomain));
        assert!(ok("team-a", NameRule::Dns1123Label));
        assert!(!ok("team.a", NameRule::Dns1123Label));
        assert!(ok("web", NameRule::Dns1035Label));
        assert!(!ok("1web", NameRule::Dns1035Label));
        let errs = validate_object_meta(&meta("A", None), false, NameRule::Dns1123Label, &root());
        assert_eq!(errs.len(), 1);
        assert_eq!(errs[0].field, "metadata.name");
        assert_eq!(errs[0].value.as_deref(), Some("\"A\""));
    }

    #[test]
    fn namespace_by_scope() {
        let errs =
            validate_object_meta(&meta("a", None), true, NameRule::Dns1123Subdomain, &root());
        assert!(has(&errs, ErrorType::Required, "metadata.namespace"));
        let errs = validate_object_meta(
            &meta("a", Some("Bad_ns")),
            true,
            NameRule::Dns1123Subdomain,
            &root(),
        );
        assert!(has(&errs, ErrorType::Invalid, "metadata.namespace"));
        let errs = validate_object_meta(
            &meta("a", Some("x")),
            false,
            NameRule::Dns1123Subdomain,
            &root(),
        );
        assert!(has(&errs, ErrorType::Forbidden, "metadata.namespace"));
        assert!(validate_object_meta(
            &meta("a", Some("x")),
            true,
            NameRule::Dns1123Subdomain,
            &root()
        )
        .is_empty());
    }

    #[test]
    fn labels() {
        let p = Path::new("metadata").child("labels");
        assert!(
            validate_labels(Some(&map(&[("app", "web"), ("example.com/tier", "")])), &p).is_empty()
        );
        let errs = validate_labels(Some(&map(&[("bad key", "v")])), &p);
        assert_eq!(errs.len(), 1);
        assert!(has(&errs, ErrorType::Invalid, "metadata.labels"));
        assert_eq!(errs[0].value.as_deref(), Some("\"bad key\""));
        let long = "a".repeat(64);
        let errs = validate_labels(Some(&map(&[("app", &long)])), &p);
        assert_eq!(errs[0].detail, "must be no more than 63 characters");
        let errs = validate_labels(Some(&map(&[(&format!("x/{long}"), "v")])), &p);
        assert_eq!(
            errs[0].detail,
            "name part must be no more than 63 characters"
        );
        let errs = validate_labels(Some(&map(&[("Bad.Prefix/app", "v")])), &p);
        assert!(errs[0].detail.starts_with("prefix part"));
    }

    #[test]
    fn annotations() {
        let p = Path::new("metadata").child("annotations");
        assert!(validate_annotations(
            Some(&map(&[("Example.com/Note", "any value at all: ok")])),
            &p
        )
        .is_empty());
        let errs = validate_annotations(Some(&map(&[("a b", "v")])), &p);
        assert!(has(&errs, ErrorType::Invalid, "metadata.annotations"));
        let big = "x".repeat(TOTAL_ANNOTATION_SIZE_LIMIT);
        let errs = validate_annotations(Some(&map(&[("note", &big)])), &p);
        assert!(has(&errs, ErrorType::TooLong, "metadata.annotations"));
        let fits = "x".repeat(TOTAL_ANNOTATION_SIZE_LIMIT - 4);
        assert!(validate_annotations(Some(&map(&[("note", &fits)])), &p).is_empty());
    }

    #[test]
    fn owner_references_and_finalizers() {
        let owner = |name: &str, controller| OwnerReference {
            api_version: "apps/v1".into(),
            kind: "ReplicaSet".into(),
            name: name.into(),
            uid: "u1".into(),
            controller: Some(controller),
            ..Default::default()
        };
        let mut m = meta("a", Some("default"));
        m.owner_references = Some(vec![owner("rs1", true)]);
        m.finalizers = Some(vec!["example.com/cleanup".into()]);
        assert!(validate_object_meta(&m, true, NameRule::Dns1123Subdomain, &root()).is_empty());
        m.owner_references = Some(vec![owner("rs1", true), owner("", true)]);
        m.finalizers = Some(vec!["bad finalizer".into()]);
        let errs = validate_object_meta(&m, true, NameRule::Dns1123Subdomain, &root());
        assert!(has(
            &errs,
            ErrorType::Invalid,
            "metadata.ownerReferences[1].name"
        ));
        assert!(has(&errs, ErrorType::Invalid, "metadata.ownerReferences"));
        assert!(has(&errs, ErrorType::Invalid, "metadata.finalizers"));
    }

    fn requirement(key: &str, op: &str, values: &[&str]) -> LabelSelectorRequirement {
        LabelSelectorRequirement {
            key: key.into(),
            operator: op.into(),
            values: Some(values.iter().map(|v| v.to_string()).collect()),
        }
    }

    #[test]
    fn label_selectors() {
        let p = Path::new("spec").child("selector");
        let good = LabelSelector {
            match_labels: Some(map(&[("app", "web")])),
            match_expressions: Some(vec![
                requirement("tier", "In", &["a", "b"]),
                requirement("env", "NotIn", &["dev"]),
                requirement("canary", "Exists", &[]),
                requirement("old", "DoesNotExist", &[]),
            ]),
        };
        assert!(validate_label_selector(&good, &p).is_empty());
        let bad = LabelSelector {
            match_labels: Some(map(&[("app", "-web")])),
            match_expressions: Some(vec![
                requirement("tier", "In", &[]),
                requirement("env", "Exists", &["x"]),
                requirement("x", "Equals", &["y"]),
                requirement("bad key", "NotIn", &["ok", "bad value"]),
            ]),
        };
        let errs = validate_label_selector(&bad, &p);
        assert!(has(&errs, ErrorType::Invalid, "spec.selector.matchLabels"));
        assert!(has(
            &errs,
            ErrorType::Required,
            "spec.selector.matchExpressions[0].values"
        ));
        assert!(has(
            &errs,
            ErrorType::Forbidden,
            "spec.selector.matchExpressions[1].values"
        ));
        assert!(has(
            &errs,
            ErrorType::NotSupported,
            "spec.selector.matchExpressions[2].operator"
        ));
        assert!(has(
            &errs,
            ErrorType::Invalid,
            "spec.selector.matchExpressions[3].key"
        ));
        assert!(has(
            &errs,
            ErrorType::Invalid,
            "spec.selector.matchExpressions[3].values[1]"
        ));
        assert_eq!(errs.len(), 6);
        assert!(selector_is_empty(&LabelSelector::default()));
        assert!(!selector_is_empty(&good));
    }

    #[test]
    fn numeric_helpers() {
        let p = Path::new("spec").child("replicas");
        assert!(nonnegative(Some(0), &p).is_none());
        assert!(nonnegative(None::<i32>, &p).is_none());
        assert_eq!(
            nonnegative(Some(-1), &p).unwrap().to_string(),
            "spec.replicas: Invalid value: -1: must be greater than or equal to 0"
        );
        assert!(positive(Some(1), &p).is_none());
        assert!(positive(Some(0), &p).is_some());
        assert!(one_of(Some("a"), &["a"], &p).is_none());
        assert!(one_of(None, &["a"], &p).is_none());
        assert_eq!(
            one_of(Some("b"), &["a"], &p).unwrap().error_type,
            ErrorType::NotSupported
        );
    }
}
