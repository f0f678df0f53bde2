//! Deployments, ReplicaSets, DaemonSets and Jobs: their selectors, templates and strategies.

use k8s_openapi::api::apps::v1::{
    DaemonSet, DaemonSetSpec, Deployment, DeploymentSpec, ReplicaSet, ReplicaSetSpec, StatefulSet,
    StatefulSetSpec,
};
use k8s_openapi::api::batch::v1::{Job, JobSpec};
use k8s_openapi::api::core::v1::PodTemplateSpec;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::field::{ErrorList, FieldError, Path};
use super::meta::{
    nonnegative, one_of, selector_is_empty, validate_label_selector, validate_object_meta, NameRule,
};
use super::pod::validate_pod_template_spec;
use crate::labels::Selector;

fn meta_errs(meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta) -> ErrorList {
    validate_object_meta(
        meta,
        true,
        NameRule::Dns1123Subdomain,
        &Path::new("metadata"),
    )
}

pub fn validate_deployment(d: &Deployment) -> ErrorList {
    let mut errs = meta_errs(&d.metadata);
    let empty = DeploymentSpec::default();
    errs.extend(validate_deployment_spec(
        d.spec.as_ref().unwrap_or(&empty),
        &Path::new("spec"),
    ));
    errs
}

fn validate_deployment_spec(spec: &DeploymentSpec, path: &Path) -> ErrorList {
    let mut errs = ErrorList::new();
    errs.extend(nonnegative(spec.replicas, &path.child("replicas")));
    let selector = validate_required_selector(&spec.selector, "deployment", path, &mut errs);
    errs.extend(validate_controller_template(
        Some(&spec.template),
        selector.as_ref(),
        &path.child("template"),
    ));
    errs.extend(validate_deployment_strategy(spec, &path.child("strategy")));
    errs.extend(nonnegative(
        spec.min_ready_seconds,
        &path.child("minReadySeconds"),
    ));
    errs.extend(nonnegative(
        spec.revision_history_limit,
        &path.child("revisionHistoryLimit"),
    ));
    if let Some(deadline) = spec.progress_deadline_seconds {
        let p = path.child("progressDeadlineSeconds");
        if let Some(err) = nonnegative(Some(deadline), &p) {
            errs.push(err);
        } else if deadline <= spec.min_ready_seconds.unwrap_or(0) {
            errs.push(FieldError::invalid(
                &p,
                deadline,
                "must be greater than minReadySeconds",
            ));
        }
    }
    errs
}

fn validate_deployment_strategy(spec: &DeploymentSpec, path: &Path) -> ErrorList {
    let mut errs = ErrorList::new();
    let Some(strategy) = &spec.strategy else {
        return errs;
    };
    match strategy.type_.as_deref().unwrap_or("RollingUpdate") {
        "Recreate" => {
            if strategy.rolling_update.is_some() {
                errs.push(FieldError::forbidden(
                    &path.child("rollingUpdate"),
                    "may not be specified when strategy `type` is 'Recreate'",
                ));
            }
        }
        "RollingUpdate" => {
            let rolling = strategy.rolling_update.clone().unwrap_or_default();
            let quarter = IntOrString::String("25%".into());
            errs.extend(validate_rolling_update(
                rolling.max_unavailable.as_ref().unwrap_or(&quarter),
                rolling.max_surge.as_ref().unwrap_or(&quarter),
                &path.child("rollingUpdate"),
                "may not be 0 when `maxSurge` is 0",
            ));
        }
        other => errs.push(FieldError::not_supported(
            &path.child("type"),
            other,
            &["Recreate", "RollingUpdate"],
        )),
    }
    errs
}

/// maxUnavailable and maxSurge: non-negative integers or percentages, maxUnavailable at most
/// 100%, and not both zero.
fn validate_rolling_update(
    max_unavailable: &IntOrString,
    max_surge: &IntOrString,
    path: &Path,
    both_zero_msg: &str,
) -> ErrorList {
    let mut errs = ErrorList::new();
    let unavailable_path = path.child("maxUnavailable");
    let unavailable = int_or_percent(max_unavailable, &unavailable_path, &mut errs);
    let surge = int_or_percent(max_surge, &path.child("maxSurge"), &mut errs);
    if unavailable == Some(0) && surge == Some(0) {
        errs.push(FieldError::invalid(
            &unavailable_path,
            render(max_unavailable),
            both_zero_msg,
        ));
    }
    if let IntOrString::String(s) = max_unavailable {
        if unavailable.is_some_and(|v| v > 100) {
            errs.push(FieldError::invalid(
                &unavailable_path,
                s,
                "must not be greater than 100%",
            ));
        }
    }
    errs
}

fn render(v: &IntOrString) -> String {
    match v {
        IntOrString::Int(n) => n.to_string(),
        IntOrString::String(s) => s.clone(),
    }
}

/// Parses a non-negative integer or `N%`, recording an error and returning `None` when invalid.
fn int_or_percent(v: &IntOrString, path: &Path, errs: &mut ErrorList) -> Option<i64> {
    match v {
        IntOrString::Int(n) if *n < 0 => {
            errs.push(FieldError::invalid(
                path,
                n,
                "must be greater than or equal to 0",
            ));
            None
        }
        IntOrString::Int(n) => Some(i64::from(*n)),
        IntOrString::String(s) => {
            let digits = s.strip_suffix('%').unwrap_or("");
            match digits.parse::<i64>() {
                Ok(n) if !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()) => {
                    Some(n)
                }
                _ => {
                    errs.push(FieldError::invalid(
                        path,
                        s,
                        "must be an integer or percentage (e.g '5%')",
                    ));
                    None
                }
            }
        }
    }
}

/// The selector of an apps/v1 controller: present, non-empty and well formed. Returns it parsed
/// for matching the template when it is.
fn validate_required_selector(
    selector: &LabelSelector,
    what: &str,
    spec_path: &Path,
    errs: &mut ErrorList,
) -> Option<Selector> {
    let path = spec_path.child("selector");
    if selector_is_empty(selector) {
        errs.push(FieldError::required(
            &path,
            format!("empty selector is invalid for {what}"),
        ));
        return None;
    }
    let selector_errs = validate_label_selector(selector, &path);
    let ok = selector_errs.is_empty();
    errs.extend(selector_errs);
    ok.then(|| Selector::from_label_selector(selector).ok())
        .flatten()
}

/// The template of a controller whose pods run forever: present, valid, labelled so that the
/// selector picks its pods, restartPolicy Always, no activeDeadlineSeconds.
fn validate_controller_template(
    template: Option<&PodTemplateSpec>,
    selector: Option<&Selector>,
    path: &Path,
) -> ErrorList {
    let mut errs = ErrorList::new();
    let Some(template) = template else {
        errs.push(FieldError::required(path, ""));
        return errs;
    };
    errs.extend(check_template_labels(template, selector, path));
    errs.extend(validate_pod_template_spec(template, path));
    let spec = template.spec.as_ref();
    let policy = spec
        .and_then(|s| s.restart_policy.as_deref())
        .unwrap_or("Always");
    if policy != "Always" {
        errs.push(FieldError::not_supported(
            &path.child("spec").child("restartPolicy"),
            policy,
            &["Always"],
        ));
    }
    if spec.and_then(|s| s.active_deadline_seconds).is_some() {
        errs.push(FieldError::forbidden(
            &path.child("spec").child("activeDeadlineSeconds"),
            "activeDeadlineSeconds in a controller's pod template is not supported",
        ));
    }
    errs
}

fn check_template_labels(
    template: &PodTemplateSpec,
    selector: Option<&Selector>,
    path: &Path,
) -> Option<FieldError> {
    let selector = selector?;
    let empty = Default::default();
    let labels = template
        .metadata
        .as_ref()
        .and_then(|m| m.labels.as_ref())
        .unwrap_or(&empty);
    (!selector.matches(labels)).then(|| {
        FieldError::invalid(
            &path.child("metadata").child("labels"),
            labels,
            "`selector` does not match template `labels`",
        )
    })
}

pub fn validate_replica_set(rs: &ReplicaSet) -> ErrorList {
    let mut errs = meta_errs(&rs.metadata);
    let empty = ReplicaSetSpec::default();
    let spec = rs.spec.as_ref().unwrap_or(&empty);
    let path = Path::new("spec");
    errs.extend(nonnegative(spec.replicas, &path.child("replicas")));
    errs.extend(nonnegative(
        spec.min_ready_seconds,
        &path.child("minReadySeconds"),
    ));
    let selector = validate_required_selector(&spec.selector, "replicaset", &path, &mut errs);
    errs.extend(validate_controller_template(
        spec.template.as_ref(),
        selector.as_ref(),
        &path.child("template"),
    ));
    errs
}

pub fn validate_daemon_set(ds: &DaemonSet) -> ErrorList {
    let mut errs = meta_errs(&ds.metadata);
    let empty = DaemonSetSpec::default();
    let spec = ds.spec.as_ref().unwrap_or(&empty);
    let path = Path::new("spec");
    let selector = validate_required_selector(&spec.selector, "daemonset", &path, &mut errs);
    errs.extend(validate_controller_template(
        Some(&spec.template),
        selector.as_ref(),
        &path.child("template"),
    ));
    errs.extend(nonnegative(
        spec.min_ready_seconds,
        &path.child("minReadySeconds"),
    ));
    errs.extend(nonnegative(
        spec.revision_history_limit,
        &path.child("revisionHistoryLimit"),
    ));
    if let Some(strategy) = &spec.update_strategy {
        let sp = path.child("updateStrategy");
        match strategy.type_.as_deref().unwrap_or("RollingUpdate") {
            "OnDelete" => {}
            "RollingUpdate" => {
                let rolling = strategy.rolling_update.clone().unwrap_or_default();
                errs.extend(validate_rolling_update(
                    rolling
                        .max_unavailable
                        .as_ref()
                        .unwrap_or(&IntOrString::Int(1)),
                    rolling.max_surge.as_ref().unwrap_or(&IntOrString::Int(0)),
                    &sp.child("rollingUpdate"),
                    "cannot be 0 when maxSurge is 0",
                ));
            }
            other => errs.push(FieldError::not_supported(
                &sp.child("type"),
                other,
                &["RollingUpdate", "OnDelete"],
            )),
        }
    }
    errs
}

pub fn validate_stateful_set(ss: &StatefulSet) -> ErrorList {
    let mut errs = meta_errs(&ss.metadata);
    let empty = StatefulSetSpec::default();
    let spec = ss.spec.as_ref().unwrap_or(&empty);
    let path = Path::new("spec");
    errs.extend(nonnegative(spec.replicas, &path.child("replicas")));
    errs.extend(nonnegative(
        spec.min_ready_seconds,
        &path.child("minReadySeconds"),
    ));
    let selector = validate_required_selector(&spec.selector, "statefulset", &path, &mut errs);
    errs.extend(validate_controller_template(
        Some(&spec.template),
        selector.as_ref(),
        &path.child("template"),
    ));
    errs.extend(one_of(
        spec.pod_management_policy.as_deref(),
        &["OrderedReady", "Parallel"],
        &path.child("podManagementPolicy"),
    ));
    if let Some(strategy) = &spec.update_strategy {
        let sp = path.child("updateStrategy");
        errs.extend(one_of(
            strategy.type_.as_deref(),
            &["RollingUpdate", "OnDelete"],
            &sp.child("type"),
        ));
        if let Some(rolling) = &strategy.rolling_update {
            errs.extend(nonnegative(
                rolling.partition,
                &sp.child("rollingUpdate").child("partition"),
            ));
        }
    }
    errs
}

pub fn validate_job(job: &Job) -> ErrorList {
    let mut errs = meta_errs(&job.metadata);
    let empty = JobSpec::default();
    errs.extend(validate_job_spec(
        job.spec.as_ref().unwrap_or(&empty),
        &Path::new("spec"),
    ));
    errs
}

fn validate_job_spec(spec: &JobSpec, path: &Path) -> ErrorList {
    let mut errs = ErrorList::new();
    errs.extend(nonnegative(spec.parallelism, &path.child("parallelism")));
    errs.extend(nonnegative(spec.completions, &path.child("completions")));
    errs.extend(nonnegative(spec.backoff_limit, &path.child("backoffLimit")));
    errs.extend(nonnegative(
        spec.active_deadline_seconds,
        &path.child("activeDeadlineSeconds"),
    ));
    errs.extend(nonnegative(
        spec.ttl_seconds_after_finished,
        &path.child("ttlSecondsAfterFinished"),
    ));
    let mode = spec.completion_mode.as_deref();
    errs.extend(one_of(
        mode,
        &["NonIndexed", "Indexed"],
        &path.child("completionMode"),
    ));
    if mode == Some("Indexed") && spec.completions.is_none() {
        errs.push(FieldError::required(
            &path.child("completions"),
            "when completion mode is Indexed",
        ));
    }

    // The server generates a selector unless the user asks for a manual one; a given selector
    // must be well formed and select the template's pods.
    let mut selector = None;
    match &spec.selector {
        Some(s) if !selector_is_empty(s) => {
            let sel_errs = validate_label_selector(s, &path.child("selector"));
            if sel_errs.is_empty() {
                selector = Selector::from_label_selector(s).ok();
            }
            errs.extend(sel_errs);
        }
        _ if spec.manual_selector == Some(true) => {
            errs.push(FieldError::required(
                &path.child("selector"),
                "when `manualSelector` is true",
            ));
        }
        _ => {}
    }
    let template_path = path.child("template");
    errs.extend(check_template_labels(
        &spec.template,
        selector.as_ref(),
        &template_path,
    ));
    errs.extend(validate_pod_template_spec(&spec.template, &template_path));
    // An absent restartPolicy defaults to Always, which a Job may not use.
    let policy = spec
        .template
        .spec
        .as_ref()
        .and_then(|s| s.restart_policy.as_deref())
        .unwrap_or("Always");
    if policy != "OnFailure" && policy != "Never" {
        errs.push(FieldError::not_supported(
            &template_path.child("spec").child("restartPolicy"),
            policy,
            &["OnFailure", "Never"],
        ));
    }
    errs
}

/// `autoscaling/v2` HorizontalPodAutoscaler: a target to scale, `1 <= minReplicas <=
/// maxReplicas`, and resource metrics naming a resource and a target.
pub fn validate_horizontal_pod_autoscaler(
    hpa: &crate::types::HorizontalPodAutoscaler,
) -> ErrorList {
    let mut errs = validate_object_meta(
        &hpa.metadata,
        true,
        NameRule::Dns1123Subdomain,
        &Path::new("metadata"),
    );
    let p = Path::new("spec");
    let Some(spec) = &hpa.spec else {
        errs.push(FieldError::required(&p, ""));
        return errs;
    };
    let target = &spec.scale_target_ref;
    if target.kind.is_empty() {
        errs.push(FieldError::required(
            &p.child("scaleTargetRef").child("kind"),
            "",
        ));
    }
    if target.name.is_empty() {
        errs.push(FieldError::required(
            &p.child("scaleTargetRef").child("name"),
            "",
        ));
    }
    let min = spec.min_replicas.unwrap_or(1);
    if min < 1 {
        errs.push(FieldError::invalid(
            &p.child("minReplicas"),
            min,
            "must be greater than or equal to 1",
        ));
    }
    if spec.max_replicas < 1 {
        errs.push(FieldError::invalid(
            &p.child("maxReplicas"),
            spec.max_replicas,
            "must be greater than or equal to 1",
        ));
    } else if spec.max_replicas < min {
        errs.push(FieldError::invalid(
            &p.child("maxReplicas"),
            spec.max_replicas,
            "must be greater than or equal to `minReplicas`",
        ));
    }
    for (i, m) in spec.metrics.iter().flatten().enumerate() {
        let mp = p.child("metrics").index(i);
        if m.type_ == "Resource" {
            match &m.resource {
                None => errs.push(FieldError::required(&mp.child("resource"), "")),
                Some(r) => {
                    if r.name.is_empty() {
                        errs.push(FieldError::required(
                            &mp.child("resource").child("name"),
                            "",
                        ));
                    }
                    if r.target.average_utilization.is_some_and(|u| u <= 0) {
                        errs.push(FieldError::invalid(
                            &mp.child("resource")
                                .child("target")
                                .child("averageUtilization"),
                            r.target.average_utilization,
                            "must be greater than 0",
                        ));
                    }
                }
            }
        }
    }
    errs
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::validation::testing::{assert_clean, assert_has, patched, typed};
    use crate::validation::ErrorType::*;
    use serde_json::{json, Value};

    fn template() -> Value {
        json!({
            "metadata": {"labels": {"app": "web"}},
            "spec": {"containers": [{"name": "app", "image": "nginx"}]}
        })
    }

    fn deployment() -> Value {
        json!({
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "web", "namespace": "default"},
            "spec": {
                "replicas": 3,
                "selector": {"matchLabels": {"app": "web"}},
                "template": template(),
                "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": "25%", "maxSurge": 1}}
            }
        })
    }

    fn deploy_errs(pointer: &str, value: Value) -> ErrorList {
        validate_deployment(&typed(patched(deployment(), pointer, value)))
    }

    #[test]
    fn a_valid_deployment_passes() {
        assert_clean(&validate_deployment(&typed(deployment())));
        let mut minimal = deployment();
        minimal["spec"].as_object_mut().unwrap().remove("strategy");
        assert_clean(&validate_deployment(&typed(minimal)));
        assert_clean(&deploy_errs("/spec/strategy", json!({"type": "Recreate"})));
    }

    #[test]
    fn deployment_selector() {
        let errs = deploy_errs("/spec/selector", json!({}));
        assert_has(&errs, Required, "spec.selector");
        assert_eq!(errs[0].detail, "empty selector is invalid for deployment");
        let errs = deploy_errs("/spec/selector", json!({"matchLabels": {"app": "db"}}));
        assert_has(&errs, Invalid, "spec.template.metadata.labels");
        let errs = deploy_errs(
            "/spec/selector",
            json!({"matchExpressions": [{"key": "app", "operator": "In", "values": ["web", "api"]}]}),
        );
        assert_clean(&errs);
        let errs = deploy_errs(
            "/spec/selector",
            json!({"matchExpressions": [{"key": "app", "operator": "In"}]}),
        );
        assert_has(&errs, Required, "spec.selector.matchExpressions[0].values");
    }

    #[test]
    fn deployment_numbers() {
        assert_has(
            &deploy_errs("/spec/replicas", json!(-1)),
            Invalid,
            "spec.replicas",
        );
        assert_clean(&deploy_errs("/spec/replicas", json!(0)));
        assert_has(
            &deploy_errs("/spec/revisionHistoryLimit", json!(-1)),
            Invalid,
            "spec.revisionHistoryLimit",
        );
        assert_has(
            &deploy_errs("/spec/minReadySeconds", json!(-5)),
            Invalid,
            "spec.minReadySeconds",
        );
        let mut v = patched(deployment(), "/spec/minReadySeconds", json!(60));
        v = patched(v, "/spec/progressDeadlineSeconds", json!(30));
        assert_has(
            &validate_deployment(&typed(v)),
            Invalid,
            "spec.progressDeadlineSeconds",
        );
        assert_clean(&deploy_errs("/spec/progressDeadlineSeconds", json!(600)));
    }

    #[test]
    fn deployment_strategy() {
        let s = "spec.strategy";
        assert_has(
            &deploy_errs("/spec/strategy/type", json!("BlueGreen")),
            NotSupported,
            &format!("{s}.type"),
        );
        assert_has(
            &deploy_errs("/spec/strategy/type", json!("Recreate")),
            Forbidden,
            &format!("{s}.rollingUpdate"),
        );
        let zero = json!({"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 0, "maxSurge": "0%"}});
        assert_has(
            &deploy_errs("/spec/strategy", zero),
            Invalid,
            &format!("{s}.rollingUpdate.maxUnavailable"),
        );
        assert_has(
            &deploy_errs("/spec/strategy/rollingUpdate/maxUnavailable", json!("150%")),
            Invalid,
            &format!("{s}.rollingUpdate.maxUnavailable"),
        );
        assert_has(
            &deploy_errs("/spec/strategy/rollingUpdate/maxSurge", json!("many")),
            Invalid,
            &format!("{s}.rollingUpdate.maxSurge"),
        );
        assert_has(
            &deploy_errs("/spec/strategy/rollingUpdate/maxSurge", json!(-1)),
            Invalid,
            &format!("{s}.rollingUpdate.maxSurge"),
        );
        assert_clean(&deploy_errs(
            "/spec/strategy/rollingUpdate/maxSurge",
            json!("200%"),
        ));
    }

    #[test]
    fn deployment_template() {
        assert_has(
            &deploy_errs("/spec/template/spec/restartPolicy", json!("Never")),
            NotSupported,
            "spec.template.spec.restartPolicy",
        );
        assert_has(
            &deploy_errs("/spec/template/spec/activeDeadlineSeconds", json!(10)),
            Forbidden,
            "spec.template.spec.activeDeadlineSeconds",
        );
        assert_has(
            &deploy_errs("/spec/template/spec/containers/0/image", json!("")),
            Required,
            "spec.template.spec.containers[0].image",
        );
        assert_has(
            &deploy_errs("/spec/template/metadata/labels/bad key", json!("x")),
            Invalid,
            "spec.template.metadata.labels",
        );
        let mut no_spec = deployment();
        no_spec["spec"]["template"]
            .as_object_mut()
            .unwrap()
            .remove("spec");
        assert_has(
            &validate_deployment(&typed(no_spec)),
            Required,
            "spec.template.spec.containers",
        );
    }

    fn replica_set() -> Value {
        json!({
            "apiVersion": "apps/v1", "kind": "ReplicaSet",
            "metadata": {"name": "web-abc", "namespace": "default"},
            "spec": {"replicas": 2, "selector": {"matchLabels": {"app": "web"}}, "template": template()}
        })
    }

    #[test]
    fn replica_set_rules() {
        let errs = |p: &str, v: Value| validate_replica_set(&typed(patched(replica_set(), p, v)));
        assert_clean(&validate_replica_set(&typed(replica_set())));
        assert_has(&errs("/spec/replicas", json!(-2)), Invalid, "spec.replicas");
        assert_has(
            &errs("/spec/selector", json!({})),
            Required,
            "spec.selector",
        );
        assert_has(
            &errs("/spec/selector/matchLabels/app", json!("db")),
            Invalid,
            "spec.template.metadata.labels",
        );
        assert_has(
            &errs("/spec/template/spec/restartPolicy", json!("OnFailure")),
            NotSupported,
            "spec.template.spec.restartPolicy",
        );
        let mut no_template = replica_set();
        no_template["spec"]
            .as_object_mut()
            .unwrap()
            .remove("template");
        assert_has(
            &validate_replica_set(&typed(no_template)),
            Required,
            "spec.template",
        );
    }

    fn daemon_set() -> Value {
        json!({
            "apiVersion": "apps/v1", "kind": "DaemonSet",
            "metadata": {"name": "proxy", "namespace": "kube-system"},
            "spec": {
                "selector": {"matchLabels": {"app": "web"}},
                "template": template(),
                "updateStrategy": {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 1}}
            }
        })
    }

    #[test]
    fn daemon_set_rules() {
        let errs = |p: &str, v: Value| validate_daemon_set(&typed(patched(daemon_set(), p, v)));
        assert_clean(&validate_daemon_set(&typed(daemon_set())));
        assert_clean(&errs("/spec/updateStrategy", json!({"type": "OnDelete"})));
        assert_has(
            &errs("/spec/selector", json!({})),
            Required,
            "spec.selector",
        );
        assert_has(
            &errs("/spec/selector/matchLabels/app", json!("db")),
            Invalid,
            "spec.template.metadata.labels",
        );
        assert_has(
            &errs("/spec/updateStrategy/type", json!("Never")),
            NotSupported,
            "spec.updateStrategy.type",
        );
        assert_has(
            &errs(
                "/spec/updateStrategy/rollingUpdate/maxUnavailable",
                json!(0),
            ),
            Invalid,
            "spec.updateStrategy.rollingUpdate.maxUnavailable",
        );
        assert_clean(&errs(
            "/spec/updateStrategy/rollingUpdate",
            json!({"maxUnavailable": 0, "maxSurge": 1}),
        ));
        assert_has(
            &errs("/spec/template/spec/restartPolicy", json!("Never")),
            NotSupported,
            "spec.template.spec.restartPolicy",
        );
    }

    fn job() -> Value {
        json!({
            "apiVersion": "batch/v1", "kind": "Job",
            "metadata": {"name": "pi", "namespace": "default"},
            "spec": {
                "completions": 3, "parallelism": 2, "backoffLimit": 4,
                "template": {
                    "metadata": {"labels": {"job": "pi"}},
                    "spec": {"containers": [{"name": "pi", "image": "perl"}], "restartPolicy": "Never"}
                }
            }
        })
    }

    #[test]
    fn job_rules() {
        let errs = |p: &str, v: Value| validate_job(&typed(patched(job(), p, v)));
        assert_clean(&validate_job(&typed(job())));
        assert_has(
            &errs("/spec/parallelism", json!(-1)),
            Invalid,
            "spec.parallelism",
        );
        assert_has(
            &errs("/spec/completions", json!(-1)),
            Invalid,
            "spec.completions",
        );
        assert_has(
            &errs("/spec/backoffLimit", json!(-1)),
            Invalid,
            "spec.backoffLimit",
        );
        assert_has(
            &errs("/spec/activeDeadlineSeconds", json!(-1)),
            Invalid,
            "spec.activeDeadlineSeconds",
        );
        assert_has(
            &errs("/spec/completionMode", json!("Sometimes")),
            NotSupported,
            "spec.completionMode",
        );
        assert_clean(&errs("/spec/completionMode", json!("Indexed")));
        let mut indexed = patched(job(), "/spec/completionMode", json!("Indexed"));
        indexed["spec"]
            .as_object_mut()
            .unwrap()
            .remove("completions");
        assert_has(&validate_job(&typed(indexed)), Required, "spec.completions");
        assert_has(
            &errs("/spec/template/spec/restartPolicy", json!("Always")),
            NotSupported,
            "spec.template.spec.restartPolicy",
        );
        let mut no_policy = job();
        no_policy["spec"]["template"]["spec"]
            .as_object_mut()
            .unwrap()
            .remove("restartPolicy");
        assert_has(
            &validate_job(&typed(no_policy)),
            NotSupported,
            "spec.template.spec.restartPolicy",
        );
        assert_clean(&errs(
            "/spec/template/spec/restartPolicy",
            json!("OnFailure"),
        ));
    }

    #[test]
    fn job_selector() {
        let errs = |p: &str, v: Value| validate_job(&typed(patched(job(), p, v)));
        assert_clean(&errs(
            "/spec/selector",
            json!({"matchLabels": {"job": "pi"}}),
        ));
        assert_has(
            &errs("/spec/selector", json!({"matchLabels": {"job": "other"}})),
            Invalid,
            "spec.template.metadata.labels",
        );
        assert_has(
            &errs("/spec/manualSelector", json!(true)),
            Required,
            "spec.selector",
        );
        assert_has(
            &errs(
                "/spec/selector",
                json!({"matchExpressions": [{"key": "job", "operator": "Exists", "values": ["x"]}]}),
            ),
            Forbidden,
            "spec.selector.matchExpressions[0].values",
        );
    }
}
