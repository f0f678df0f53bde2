//! Non-resource endpoints: `/version`, discovery (aggregated `apidiscovery.k8s.io` v2 and
//! v2beta1, chosen by the Accept header, and the legacy documents), OpenAPI v3, and health.

use axum::http::{header, HeaderMap, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use berth_api::registry::{self, ResourceInfo};
use serde_json::{json, Value};

use crate::error::{ApiError, ApiResult};

/// The Kubernetes version Berth speaks. kubectl's dispatcher picks its binary from `minor`.
pub fn version() -> Value {
    json!({
        "major": "1",
        "minor": "32",
        "gitVersion": concat!("v1.32.0-berth.", env!("CARGO_PKG_VERSION")),
        "gitCommit": "berth",
        "gitTreeState": "clean",
        "buildDate": "2026-01-01T00:00:00Z",
        "goVersion": "n/a (rust)",
        "compiler": "rustc",
        "platform": "linux/amd64",
    })
}

fn json_response(v: &Value, content_type: &'static str) -> Response {
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, content_type)],
        v.to_string(),
    )
        .into_response()
}

/// The aggregated discovery version the client asked for, if any.
fn aggregated(headers: &HeaderMap) -> Option<&'static str> {
    let accept = headers.get(header::ACCEPT)?.to_str().ok()?;
    for part in accept.split(',') {
        let part = part.replace(' ', "");
        if part.contains("g=apidiscovery.k8s.io") && part.contains("as=APIGroupDiscoveryList") {
            if part.contains("v=v2beta1") {
                return Some("v2beta1");
            }
            if part.contains("v=v2") {
                return Some("v2");
            }
        }
        if part.starts_with("application/json") && !part.contains("as=") {
            return None;
        }
    }
    None
}

/// Every served resource: the registry's, and those served without storage
/// ([`crate::metrics`]).
fn served() -> impl Iterator<Item = &'static ResourceInfo> {
    registry::all().iter().chain(crate::metrics::RESOURCES)
}

fn group_versions() -> Vec<(&'static str, &'static str)> {
    let mut out = registry::group_versions();
    out.push((crate::metrics::GROUP, crate::metrics::VERSION));
    out
}

fn resources_of(group: &str, version: &str) -> Vec<&'static ResourceInfo> {
    served()
        .filter(|r| r.group == group && r.version == version)
        .collect()
}

fn aggregated_resource(r: &ResourceInfo) -> Value {
    let subs: Vec<Value> = r
        .subresources
        .iter()
        .map(|s| {
            json!({"subresource": s.name,
                "responseKind": {"group": s.group, "version": s.version, "kind": s.kind},
                "verbs": s.verbs})
        })
        .collect();
    let mut v = json!({
        "resource": r.plural,
        "responseKind": {"group": r.group, "version": r.version, "kind": r.kind},
        "scope": if r.namespaced() { "Namespaced" } else { "Cluster" },
        "singularResource": r.singular,
        "verbs": r.verbs,
    });
    if !r.short_names.is_empty() {
        v["shortNames"] = json!(r.short_names);
    }
    if !r.categories.is_empty() {
        v["categories"] = json!(r.categories);
    }
    if !subs.is_empty() {
        v["subresources"] = json!(subs);
    }
    v
}

fn aggregated_group(group: &str) -> Value {
    let versions: Vec<Value> = group_versions()
        .into_iter()
        .filter(|(g, _)| *g == group)
        .map(|(g, v)| {
            let rs: Vec<Value> = resources_of(g, v)
                .into_iter()
                .map(aggregated_resource)
                .collect();
            json!({"version": v, "resources": rs, "freshness": "Current"})
        })
        .collect();
    let mut meta = json!({"creationTimestamp": null});
    if !group.is_empty() {
        meta["name"] = json!(group);
    }
    json!({"metadata": meta, "versions": versions})
}

fn groups() -> Vec<&'static str> {
    let mut out: Vec<&str> = Vec::new();
    for (g, _) in group_versions() {
        if !g.is_empty() && !out.contains(&g) {
            out.push(g);
        }
    }
    out
}

fn discovery_list(version: &str, items: Vec<Value>) -> Response {
    let ct = if version == "v2" {
        "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList"
    } else {
        "application/json;g=apidiscovery.k8s.io;v=v2beta1;as=APIGroupDiscoveryList"
    };
    json_response(
        &json!({"kind": "APIGroupDiscoveryList",
            "apiVersion": format!("apidiscovery.k8s.io/{version}"),
            "metadata": {}, "items": items}),
        ct,
    )
}

fn legacy_resource_list(group: &str, version: &str) -> Value {
    let mut resources = Vec::new();
    for r in resources_of(group, version) {
        let mut v = json!({"name": r.plural, "singularName": r.singular,
            "namespaced": r.namespaced(), "kind": r.kind, "verbs": r.verbs});
        if !r.short_names.is_empty() {
            v["shortNames"] = json!(r.short_names);
        }
        if !r.categories.is_empty() {
            v["categories"] = json!(r.categories);
        }
        resources.push(v);
        for s in r.subresources {
            let mut sv = json!({"name": format!("{}/{}", r.plural, s.name), "singularName": "",
                "namespaced": r.namespaced(), "kind": s.kind, "verbs": s.verbs});
            if s.group != group || s.version != version {
                sv["group"] = json!(s.group);
                sv["version"] = json!(s.version);
            }
            resources.push(sv);
        }
    }
    let gv = if group.is_empty() {
        version.to_string()
    } else {
        format!("{group}/{version}")
    };
    json!({"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": gv,
        "resources": resources})
}

fn legacy_group(group: &str) -> Value {
    let versions: Vec<Value> = group_versions()
        .into_iter()
        .filter(|(g, _)| *g == group)
        .map(|(g, v)| json!({"groupVersion": format!("{g}/{v}"), "version": v}))
        .collect();
    json!({"kind": "APIGroup", "apiVersion": "v1", "name": group,
        "versions": versions.clone(), "preferredVersion": versions[0]})
}

/// Serves a non-resource path.
pub fn serve(method: &Method, path: &str, headers: &HeaderMap) -> ApiResult<Response> {
    if method != Method::GET && method != Method::HEAD {
        return Err(ApiError::method_not_allowed(format!(
            "{method} is not supported on {path}"
        )));
    }
    let path = path.trim_end_matches('/');
    match path {
        "/version" => Ok(json_response(&version(), "application/json")),
        "/healthz" | "/livez" | "/readyz" => {
            Ok((StatusCode::OK, [(header::CONTENT_TYPE, "text/plain")], "ok").into_response())
        }
        "/api" => Ok(match aggregated(headers) {
            Some(v) => discovery_list(v, vec![aggregated_group("")]),
            None => json_response(
                &json!({"kind": "APIVersions", "versions": ["v1"],
                    "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": ""}]}),
                "application/json",
            ),
        }),
        "/apis" => Ok(match aggregated(headers) {
            Some(v) => discovery_list(v, groups().into_iter().map(aggregated_group).collect()),
            None => json_response(
                &json!({"kind": "APIGroupList", "apiVersion": "v1",
                    "groups": groups().into_iter().map(legacy_group).collect::<Vec<_>>()}),
                "application/json",
            ),
        }),
        "/api/v1" => Ok(json_response(
            &legacy_resource_list("", "v1"),
            "application/json",
        )),
        "/openapi/v3" => Ok(json_response(
            crate::openapi::root_document(),
            "application/json",
        )),
        "/openapi/v2" => Err(ApiError::path_not_found()),
        _ => {
            if let Some(gv) = path.strip_prefix("/openapi/v3/") {
                let doc = crate::openapi::document_for_path(gv)
                    .map_err(|_| ApiError::path_not_found())?;
                let mut resp = (
                    StatusCode::OK,
                    [(header::CONTENT_TYPE, "application/json")],
                    doc.json().to_vec(),
                )
                    .into_response();
                resp.headers_mut().insert(
                    header::CACHE_CONTROL,
                    header::HeaderValue::from_static("public, immutable"),
                );
                return Ok(resp);
            }
            let segs: Vec<&str> = path.trim_start_matches('/').split('/').collect();
            match segs.as_slice() {
                ["apis", g] if groups().contains(g) => {
                    Ok(json_response(&legacy_group(g), "application/json"))
                }
                ["apis", g, v] if !resources_of(g, v).is_empty() => Ok(json_response(
                    &legacy_resource_list(g, v),
                    "application/json",
                )),
                _ => Err(ApiError::path_not_found()),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aggregated_discovery_follows_accept() {
        let mut h = HeaderMap::new();
        h.insert(header::ACCEPT, "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList,application/json;g=apidiscovery.k8s.io;v=v2beta1;as=APIGroupDiscoveryList,application/json".parse().unwrap());
        assert_eq!(aggregated(&h), Some("v2"));
        h.insert(header::ACCEPT, "application/json;g=apidiscovery.k8s.io;v=v2beta1;as=APIGroupDiscoveryList,application/json".parse().unwrap());
        assert_eq!(aggregated(&h), Some("v2beta1"));
        h.insert(header::ACCEPT, "application/json, */*".parse().unwrap());
        assert_eq!(aggregated(&h), None);
    }

    #[test]
    fn metrics_are_discovered() {
        assert!(groups().contains(&"metrics.k8s.io"));
        let agg = aggregated_group("metrics.k8s.io");
        assert_eq!(agg["versions"][0]["version"], "v1beta1");
        let names: Vec<&str> = agg["versions"][0]["resources"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["resource"].as_str().unwrap())
            .collect();
        assert_eq!(names, ["nodes", "pods"]);
        let legacy = legacy_resource_list("metrics.k8s.io", "v1beta1");
        assert_eq!(legacy["resources"][1]["kind"], "PodMetrics");
        assert_eq!(legacy["resources"][1]["namespaced"], true);
    }

    #[test]
    fn legacy_lists_name_subresources() {
        let apps = legacy_resource_list("apps", "v1");
        let names: Vec<&str> = apps["resources"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["name"].as_str().unwrap())
            .collect();
        assert!(names.contains(&"deployments/scale"));
        let scale = apps["resources"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["name"] == "deployments/scale")
            .unwrap();
        assert_eq!(scale["group"], "autoscaling");
        assert_eq!(scale["kind"], "Scale");
    }
}
