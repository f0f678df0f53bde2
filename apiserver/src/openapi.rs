//! OpenAPI v3 documents: `GET /openapi/v3` ([`root_document`]) and one document per served
//! group-version, `GET /openapi/v3/api/v1` and `/openapi/v3/apis/<group>/<version>`
//! ([`group_version_document`], [`document_for_path`]).
//!
//! kubectl reads them for three things: `apply`'s strict validation needs, per kind, a `patch`
//! operation carrying `x-kubernetes-group-version-kind` and a `fieldValidation` query parameter
//! (see `openapi/paths.rs`); `apply` computes strategic merge patches from the schema whose
//! `x-kubernetes-group-version-kind` names the kind, so those schemas are complete and carry the
//! patch strategies (see `openapi/schemas.rs`); and `kubectl explain` prints the schemas'
//! descriptions.
//!
//! Schemas come from k8s-openapi's schemars implementations, which carry the Kubernetes names
//! (`io.k8s.api.core.v1.Pod`) and the field documentation. The documents never change while the
//! server runs: each is built on first use, serialized once, and hashed; the hash is the
//! `?hash=` of its URL in the root document, which kubectl uses as an HTTP cache key.

mod paths;
mod schemas;

use std::collections::BTreeMap;
use std::sync::OnceLock;

use berth_api::registry::{self, ResourceInfo};
use serde_json::{json, Map, Value};
use thiserror::Error;

/// Errors looking up a document.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum Error {
    /// Not `api/<version>` or `apis/<group>/<version>` of a served group-version.
    #[error("no OpenAPI v3 document at {path:?}")]
    NotFound { path: String },
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// One group-version's document, serialized once. Only the JSON is kept: the documents
/// decoded would hold about 9 MiB for the life of the server (measured with heaptrack).
#[derive(Debug)]
pub struct GroupVersionDocument {
    group: &'static str,
    version: &'static str,
    json: Vec<u8>,
    hash: String,
}

impl GroupVersionDocument {
    pub fn group(&self) -> &'static str {
        self.group
    }

    pub fn version(&self) -> &'static str {
        self.version
    }

    /// The path under `/openapi/v3/`: `api/v1`, `apis/apps/v1`.
    pub fn path(&self) -> String {
        gv_path(self.group, self.version)
    }

    /// The document decoded, again on each call.
    pub fn document(&self) -> Value {
        serde_json::from_slice(&self.json).expect("the document was serialized from a Value")
    }

    /// The document as compact JSON, the body to send.
    pub fn json(&self) -> &[u8] {
        &self.json
    }

    /// A digest of [`json`](Self::json) (uppercase hex), changing whenever the document does.
    pub fn hash(&self) -> &str {
        &self.hash
    }

    /// `/openapi/v3/apis/apps/v1?hash=<hash>`, as the root document lists it.
    pub fn server_relative_url(&self) -> String {
        format!("/openapi/v3/{}?hash={}", self.path(), self.hash)
    }
}

struct Documents {
    root: Value,
    by_path: BTreeMap<String, GroupVersionDocument>,
}

fn documents() -> &'static Documents {
    static DOCUMENTS: OnceLock<Documents> = OnceLock::new();
    DOCUMENTS.get_or_init(|| {
        let mut by_path = BTreeMap::new();
        let mut root_paths = Map::new();
        for (group, version) in registry::group_versions() {
            let resources: Vec<&ResourceInfo> = registry::all()
                .iter()
                .filter(|r| r.group == group && r.version == version)
                .collect();
            let document = build_document(group, version, &resources);
            let json = serde_json::to_vec(&document).expect("a JSON value always serializes");
            let doc = GroupVersionDocument {
                group,
                version,
                hash: fnv1a_hex(&json),
                json,
            };
            root_paths.insert(
                doc.path(),
                json!({ "serverRelativeURL": doc.server_relative_url() }),
            );
            by_path.insert(doc.path(), doc);
        }
        Documents {
            root: json!({ "paths": root_paths }),
            by_path,
        }
    })
}

/// `GET /openapi/v3`: `{"paths": {"api/v1": {"serverRelativeURL": "/openapi/v3/api/v1?hash=…"},
/// "apis/apps/v1": {…}}}`, one entry per served group-version.
pub fn root_document() -> &'static Value {
    &documents().root
}

/// The document of one served group-version (`""` for the core group), or `None`.
pub fn group_version_document(group: &str, version: &str) -> Option<Value> {
    let doc = documents().by_path.get(&gv_path(group, version))?;
    Some(doc.document())
}

/// The hash in the URL of a group-version's document, or `None` if it is not served.
pub fn document_hash(group: &str, version: &str) -> Option<&'static str> {
    let doc = documents().by_path.get(&gv_path(group, version))?;
    Some(&doc.hash)
}

/// The document served at `/openapi/v3/<path>`, for `path` `api/v1` or `apis/<group>/<version>`
/// (a leading or trailing `/` is ignored).
pub fn document_for_path(path: &str) -> Result<&'static GroupVersionDocument> {
    documents()
        .by_path
        .get(path.trim_matches('/'))
        .ok_or_else(|| Error::NotFound {
            path: path.to_string(),
        })
}

/// Every served group-version's document, sorted by path.
pub fn all_documents() -> impl Iterator<Item = &'static GroupVersionDocument> {
    documents().by_path.values()
}

/// The description of a property of a named schema, e.g. `("io.k8s.api.core.v1.PodStatus",
/// "podIP")`; the Table printers use these as column descriptions, as Kubernetes does.
pub fn field_description(schema: &str, field: &str) -> Option<&'static str> {
    schemas::field_description(schema, field)
}

fn gv_path(group: &str, version: &str) -> String {
    if group.is_empty() {
        format!("api/{version}")
    } else {
        format!("apis/{group}/{version}")
    }
}

/// A group-version document for some resources of it.
fn build_document(group: &str, version: &str, resources: &[&ResourceInfo]) -> Value {
    let (paths, roots) = paths::paths(group, version, resources);
    let defs = schemas::definitions();
    let mut components = Map::new();
    for name in schemas::closure(roots.iter().map(String::as_str)) {
        if let Some(schema) = defs.get(&name) {
            components.insert(name, schema.clone());
        }
    }
    json!({
        "openapi": "3.0.0",
        "info": { "title": "Kubernetes", "version": "unversioned" },
        "paths": paths,
        "components": {
            "schemas": components,
            "securitySchemes": {
                "BearerToken": {
                    "type": "apiKey",
                    "description": "Bearer Token authentication",
                    "name": "authorization",
                    "in": "header",
                },
            },
        },
        "security": [{ "BearerToken": [] }],
    })
}

/// 64-bit FNV-1a as 16 uppercase hex digits: a stable digest without a crypto dependency (the
/// hash only has to change when the document does).
fn fnv1a_hex(bytes: &[u8]) -> String {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in bytes {
        hash ^= u64::from(*byte);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    format!("{hash:016X}")
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use berth_api::{Scope, Subresource};

    use super::*;

    /// Follows `$ref` and single-element `allOf` to the schema they name, as kubectl does.
    fn resolve<'a>(doc: &'a Value, mut schema: &'a Value) -> &'a Value {
        loop {
            if let Some(inner) = schema.get("allOf").and_then(|a| a.get(0)) {
                schema = inner;
                continue;
            }
            if let Some(r) = schema.get("$ref").and_then(Value::as_str) {
                let name = r.strip_prefix(schemas::REF_PREFIX).expect("local ref");
                schema = &doc["components"]["schemas"][name];
                assert!(schema.is_object(), "unresolved {r}");
                continue;
            }
            return schema;
        }
    }

    fn every_patch_operation(doc: &Value) -> Vec<(&String, &Value)> {
        doc["paths"]
            .as_object()
            .unwrap()
            .iter()
            .filter_map(|(path, item)| item.get("patch").map(|op| (path, op)))
            .collect()
    }

    fn assert_refs_resolve(doc: &Value) {
        let schemas = doc["components"]["schemas"].as_object().unwrap();
        let mut refs = BTreeSet::new();
        schemas::collect_refs(doc, &mut |name| {
            refs.insert(name.to_string());
        });
        assert!(!refs.is_empty());
        for name in refs {
            assert!(schemas.contains_key(&name), "$ref {name} does not resolve");
        }
        // Nothing refers anywhere but components.schemas.
        let text = doc.to_string();
        assert_eq!(
            text.matches("\"$ref\"").count(),
            text.matches("\"$ref\":\"#/components/schemas/").count()
        );
    }

    #[test]
    fn every_ref_resolves_in_every_document() {
        let docs: Vec<_> = all_documents().collect();
        assert_eq!(docs.len(), registry::group_versions().len());
        for doc in docs {
            let doc = doc.document();
            assert_eq!(doc["openapi"], "3.0.0");
            assert_refs_resolve(&doc);
        }
    }

    #[test]
    fn pod_schema_reaches_container_image_with_a_description() {
        let doc = &group_version_document("", "v1").unwrap();
        let schemas = doc["components"]["schemas"].as_object().unwrap();
        let pod = &schemas["io.k8s.api.core.v1.Pod"];
        assert_eq!(
            pod["x-kubernetes-group-version-kind"],
            json!([{"group": "", "version": "v1", "kind": "Pod"}])
        );
        let spec_field = &pod["properties"]["spec"];
        assert!(spec_field["description"].is_string());
        let spec = resolve(doc, spec_field);
        let containers = &spec["properties"]["containers"];
        assert!(containers["description"]
            .as_str()
            .unwrap()
            .contains("containers"));
        assert_eq!(containers["x-kubernetes-patch-merge-key"], "name");
        let container = resolve(doc, &containers["items"]);
        let image = &container["properties"]["image"];
        assert_eq!(image["type"], "string");
        assert!(image["description"]
            .as_str()
            .unwrap()
            .starts_with("Container image name."));
        let metadata = resolve(doc, &pod["properties"]["metadata"]);
        assert!(metadata["properties"]["annotations"]["description"].is_string());
    }

    #[test]
    fn every_write_operation_has_field_validation() {
        for doc in all_documents() {
            let doc = &doc.document();
            let patches = every_patch_operation(doc);
            assert!(!patches.is_empty());
            for (path, op) in patches {
                let params = op["parameters"].as_array().unwrap();
                assert!(
                    params
                        .iter()
                        .any(|p| p["name"] == "fieldValidation" && p["in"] == "query"),
                    "PATCH {path} lacks fieldValidation"
                );
                let gvk = &op["x-kubernetes-group-version-kind"];
                assert!(
                    gvk["kind"].is_string() && gvk["version"].is_string(),
                    "{path}"
                );
            }
            for item in doc["paths"].as_object().unwrap().values() {
                for method in ["post", "put"] {
                    let Some(op) = item.get(method) else { continue };
                    if op["x-kubernetes-action"] == "connect" {
                        continue;
                    }
                    assert!(op["parameters"]
                        .as_array()
                        .unwrap()
                        .iter()
                        .any(|p| p["name"] == "fieldValidation"));
                }
            }
        }
    }

    #[test]
    fn each_served_kind_has_a_patch_operation_and_a_gvk_schema() {
        for info in registry::all() {
            let doc = &group_version_document(info.group, info.version).unwrap();
            let gvk = json!({"group": info.group, "version": info.version, "kind": info.kind});
            assert!(
                every_patch_operation(doc)
                    .iter()
                    .any(|(_, op)| op["x-kubernetes-group-version-kind"] == gvk),
                "{}",
                info.kind
            );
            let schemas = doc["components"]["schemas"].as_object().unwrap();
            assert!(
                schemas
                    .values()
                    .any(|s| s["x-kubernetes-group-version-kind"]
                        .as_array()
                        .is_some_and(|gvks| gvks.contains(&gvk))),
                "no schema with the GVK of {}",
                info.kind
            );
        }
    }

    #[test]
    fn root_lists_every_group_version_with_its_hash() {
        let root = root_document();
        let paths = root["paths"].as_object().unwrap();
        assert_eq!(paths.len(), registry::group_versions().len());
        let hash = document_hash("", "v1").unwrap();
        assert_eq!(hash.len(), 16);
        assert_eq!(
            paths["api/v1"]["serverRelativeURL"],
            format!("/openapi/v3/api/v1?hash={hash}")
        );
        let apps = &paths["apis/apps/v1"]["serverRelativeURL"];
        assert!(apps
            .as_str()
            .unwrap()
            .starts_with("/openapi/v3/apis/apps/v1?hash="));
        assert_ne!(document_hash("apps", "v1"), document_hash("", "v1"));
    }

    #[test]
    fn documents_by_path() {
        let doc = document_for_path("apis/apps/v1").unwrap();
        assert_eq!((doc.group(), doc.version()), ("apps", "v1"));
        assert_eq!(doc.hash(), fnv1a_hex(doc.json()));
        assert!(document_for_path("/api/v1").is_ok());
        assert_eq!(
            document_for_path("apis/widgets/v1").unwrap_err(),
            Error::NotFound {
                path: "apis/widgets/v1".into()
            }
        );
        assert!(group_version_document("apps", "v2").is_none());
        let document: Value = serde_json::from_slice(doc.json()).unwrap();
        let schemas = document["components"]["schemas"].as_object().unwrap();
        assert!(schemas.contains_key("io.k8s.api.apps.v1.Deployment"));
        assert!(schemas.contains_key("io.k8s.api.autoscaling.v1.Scale"));
        assert!(!schemas.contains_key("io.k8s.api.core.v1.Pod"));
    }

    #[test]
    fn kinds_not_yet_registered_get_documents_too() {
        const STATUS_VERBS: &[&str] = &["get", "patch", "update"];
        let role = ResourceInfo {
            group: "rbac.authorization.k8s.io",
            version: "v1",
            kind: "ClusterRole",
            plural: "clusterroles",
            singular: "clusterrole",
            short_names: &[],
            scope: Scope::Cluster,
            subresources: &[],
            categories: &[],
            verbs: registry::RESOURCE_VERBS,
        };
        let sts = ResourceInfo {
            group: "apps",
            version: "v1",
            kind: "StatefulSet",
            plural: "statefulsets",
            singular: "statefulset",
            short_names: &["sts"],
            scope: Scope::Namespaced,
            subresources: &[Subresource {
                name: "status",
                group: "apps",
                version: "v1",
                kind: "StatefulSet",
                verbs: STATUS_VERBS,
            }],
            categories: &["all"],
            verbs: registry::RESOURCE_VERBS,
        };
        let rbac = build_document("rbac.authorization.k8s.io", "v1", &[&role]);
        assert_refs_resolve(&rbac);
        assert_eq!(
            rbac["paths"]["/apis/rbac.authorization.k8s.io/v1/clusterroles/{name}"]["patch"]
                ["operationId"],
            "patchRbacAuthorizationV1ClusterRole"
        );
        assert!(rbac["components"]["schemas"]
            .get("io.k8s.api.rbac.v1.ClusterRoleList")
            .is_some());
        let apps = build_document("apps", "v1", &[&sts]);
        assert_refs_resolve(&apps);
        let sts_schema = &apps["components"]["schemas"]["io.k8s.api.apps.v1.StatefulSet"];
        assert_eq!(
            sts_schema["x-kubernetes-group-version-kind"][0]["kind"],
            "StatefulSet"
        );
    }

    #[test]
    fn unknown_kinds_get_paths_without_schemas() {
        let widget = ResourceInfo {
            group: "example.com",
            version: "v1",
            kind: "Widget",
            plural: "widgets",
            singular: "widget",
            short_names: &[],
            scope: Scope::Namespaced,
            subresources: &[],
            categories: &[],
            verbs: registry::RESOURCE_VERBS,
        };
        let doc = build_document("example.com", "v1", &[&widget]);
        assert_refs_resolve(&doc);
        let patch =
            &doc["paths"]["/apis/example.com/v1/namespaces/{namespace}/widgets/{name}"]["patch"];
        assert_eq!(patch["x-kubernetes-group-version-kind"]["kind"], "Widget");
        assert_eq!(
            patch["responses"]["200"]["content"]["application/json"]["schema"],
            json!({"type": "object"})
        );
    }
}
