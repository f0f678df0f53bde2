//! RBAC kinds: Roles and ClusterRoles (policy rules), RoleBindings and ClusterRoleBindings
//! (a role reference and subjects), as `rbac.authorization.k8s.io/v1` validates them.

use k8s_openapi::api::rbac::v1::{
    ClusterRole, ClusterRoleBinding, PolicyRule, Role, RoleBinding, RoleRef, Subject,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use super::field::{ErrorList, FieldError, Path};
use super::meta::{validate_object_meta, NameRule};

const RBAC_GROUP: &str = "rbac.authorization.k8s.io";

fn meta_errs(meta: &ObjectMeta, namespaced: bool) -> ErrorList {
    validate_object_meta(
        meta,
        namespaced,
        NameRule::PathSegment,
        &Path::new("metadata"),
    )
}

fn validate_rules(rules: Option<&Vec<PolicyRule>>, cluster: bool, path: &Path) -> ErrorList {
    let mut errs = ErrorList::new();
    for (i, rule) in rules.into_iter().flatten().enumerate() {
        let p = path.index(i);
        if rule.verbs.is_empty() {
            errs.push(FieldError::required(
                &p.child("verbs"),
                "verbs must contain at least one value",
            ));
        }
        let urls = rule.non_resource_urls.as_deref().unwrap_or_default();
        if !urls.is_empty() {
            if !cluster {
                errs.push(FieldError::invalid(
                    &p.child("nonResourceURLs"),
                    urls,
                    "namespaced rules cannot apply to non-resource URLs",
                ));
            }
            let has_resources = rule.api_groups.as_ref().is_some_and(|g| !g.is_empty())
                || rule.resources.as_ref().is_some_and(|r| !r.is_empty());
            if has_resources {
                errs.push(FieldError::invalid(
                    &p.child("nonResourceURLs"),
                    urls,
                    "rules cannot apply to both regular resources and non-resource URLs",
                ));
            }
            continue;
        }
        if rule.api_groups.as_ref().is_none_or(|g| g.is_empty()) {
            errs.push(FieldError::required(
                &p.child("apiGroups"),
                "resource rules must supply at least one api group",
            ));
        }
        if rule.resources.as_ref().is_none_or(|r| r.is_empty()) {
            errs.push(FieldError::required(
                &p.child("resources"),
                "resource rules must supply at least one resource",
            ));
        }
    }
    errs
}

pub fn validate_role(role: &Role) -> ErrorList {
    let mut errs = meta_errs(&role.metadata, true);
    errs.extend(validate_rules(
        role.rules.as_ref(),
        false,
        &Path::new("rules"),
    ));
    errs
}

pub fn validate_cluster_role(role: &ClusterRole) -> ErrorList {
    let mut errs = meta_errs(&role.metadata, false);
    errs.extend(validate_rules(
        role.rules.as_ref(),
        true,
        &Path::new("rules"),
    ));
    errs
}

fn validate_role_ref(role_ref: &RoleRef, cluster: bool, path: &Path) -> ErrorList {
    let mut errs = ErrorList::new();
    if role_ref.api_group != RBAC_GROUP {
        errs.push(FieldError::not_supported(
            &path.child("apiGroup"),
            &role_ref.api_group,
            &[RBAC_GROUP],
        ));
    }
    let kinds: &[&str] = if cluster {
        &["ClusterRole"]
    } else {
        &["Role", "ClusterRole"]
    };
    if !kinds.contains(&role_ref.kind.as_str()) {
        errs.push(FieldError::not_supported(
            &path.child("kind"),
            &role_ref.kind,
            kinds,
        ));
    }
    if role_ref.name.is_empty() {
        errs.push(FieldError::required(&path.child("name"), ""));
    } else {
        for msg in NameRule::PathSegment.check(&role_ref.name) {
            errs.push(FieldError::invalid(
                &path.child("name"),
                &role_ref.name,
                msg,
            ));
        }
    }
    errs
}

fn validate_subjects(subjects: Option<&Vec<Subject>>, cluster: bool, path: &Path) -> ErrorList {
    let mut errs = ErrorList::new();
    for (i, s) in subjects.into_iter().flatten().enumerate() {
        let p = path.index(i);
        if s.name.is_empty() {
            errs.push(FieldError::required(&p.child("name"), ""));
        }
        let group = s.api_group.as_deref().unwrap_or("");
        match s.kind.as_str() {
            "ServiceAccount" => {
                if !group.is_empty() {
                    errs.push(FieldError::not_supported(
                        &p.child("apiGroup"),
                        group,
                        &[""],
                    ));
                }
                if cluster && s.namespace.as_deref().unwrap_or("").is_empty() {
                    errs.push(FieldError::required(&p.child("namespace"), ""));
                }
            }
            "User" | "Group" => {
                if group != RBAC_GROUP {
                    errs.push(FieldError::not_supported(
                        &p.child("apiGroup"),
                        group,
                        &[RBAC_GROUP],
                    ));
                }
            }
            other => errs.push(FieldError::not_supported(
                &p.child("kind"),
                other,
                &["ServiceAccount", "User", "Group"],
            )),
        }
    }
    errs
}

pub fn validate_role_binding(rb: &RoleBinding) -> ErrorList {
    let mut errs = meta_errs(&rb.metadata, true);
    errs.extend(validate_role_ref(
        &rb.role_ref,
        false,
        &Path::new("roleRef"),
    ));
    errs.extend(validate_subjects(
        rb.subjects.as_ref(),
        false,
        &Path::new("subjects"),
    ));
    errs
}

pub fn validate_cluster_role_binding(crb: &ClusterRoleBinding) -> ErrorList {
    let mut errs = meta_errs(&crb.metadata, false);
    errs.extend(validate_role_ref(
        &crb.role_ref,
        true,
        &Path::new("roleRef"),
    ));
    errs.extend(validate_subjects(
        crb.subjects.as_ref(),
        true,
        &Path::new("subjects"),
    ));
    errs
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::validation::testing::{assert_clean, assert_has, typed};
    use crate::validation::ErrorType::*;

    #[test]
    fn role_rules_need_verbs_groups_and_resources() {
        let ok: Role = typed(
            json!({"metadata": {"name": "system:reader", "namespace": "a"},
            "rules": [{"apiGroups": [""], "resources": ["pods"], "verbs": ["get"]}]}),
        );
        assert_clean(&validate_role(&ok));
        let bad: Role = typed(json!({"metadata": {"name": "r/x", "namespace": "a"},
            "rules": [{"verbs": []}, {"nonResourceURLs": ["/healthz"], "verbs": ["get"]}]}));
        let errs = validate_role(&bad);
        assert_has(&errs, Invalid, "metadata.name");
        assert_has(&errs, Required, "rules[0].verbs");
        assert_has(&errs, Required, "rules[0].apiGroups");
        assert_has(&errs, Required, "rules[0].resources");
        assert_has(&errs, Invalid, "rules[1].nonResourceURLs");
    }

    #[test]
    fn cluster_roles_may_use_non_resource_urls() {
        let ok: ClusterRole = typed(json!({"metadata": {"name": "health"},
            "rules": [{"nonResourceURLs": ["/healthz"], "verbs": ["get"]}]}));
        assert_clean(&validate_cluster_role(&ok));
    }

    #[test]
    fn bindings_check_role_ref_and_subjects() {
        let ok: ClusterRoleBinding = typed(json!({"metadata": {"name": "b"},
            "roleRef": {"apiGroup": RBAC_GROUP, "kind": "ClusterRole", "name": "view"},
            "subjects": [{"kind": "User", "apiGroup": RBAC_GROUP, "name": "alice"},
                         {"kind": "ServiceAccount", "name": "sa", "namespace": "default"}]}));
        assert_clean(&validate_cluster_role_binding(&ok));
        let bad: ClusterRoleBinding = typed(json!({"metadata": {"name": "b"},
            "roleRef": {"apiGroup": "x", "kind": "Role", "name": ""},
            "subjects": [{"kind": "ServiceAccount", "name": "sa"}, {"kind": "Robot", "name": "r"}]}));
        let errs = validate_cluster_role_binding(&bad);
        assert_has(&errs, NotSupported, "roleRef.apiGroup");
        assert_has(&errs, NotSupported, "roleRef.kind");
        assert_has(&errs, Required, "roleRef.name");
        assert_has(&errs, Required, "subjects[0].namespace");
        assert_has(&errs, NotSupported, "subjects[1].kind");
    }
}
