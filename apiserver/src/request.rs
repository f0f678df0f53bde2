//! Reading a request: the path (which resource, namespace, name, subresource), the query
//! string, the body's media type, and the response format the client accepts.

use berth_api::registry::{self, ResourceInfo};
use serde_json::Value;

use crate::error::{ApiError, ApiResult};

/// The query string, keeping repeated keys (`command=a&command=b`).
#[derive(Debug, Default, Clone)]
pub struct Query {
    pairs: Vec<(String, String)>,
}

impl Query {
    pub fn parse(q: Option<&str>) -> Self {
        Self {
            pairs: form_urlencoded::parse(q.unwrap_or("").as_bytes())
                .map(|(k, v)| (k.into_owned(), v.into_owned()))
                .collect(),
        }
    }

    /// A query from key/value pairs; empty values are left out.
    pub fn from_pairs<I, K>(pairs: I) -> Self
    where
        I: IntoIterator<Item = (K, String)>,
        K: Into<String>,
    {
        Self {
            pairs: pairs
                .into_iter()
                .filter(|(_, v)| !v.is_empty())
                .map(|(k, v)| (k.into(), v))
                .collect(),
        }
    }

    pub fn get(&self, key: &str) -> Option<&str> {
        self.pairs
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    pub fn all(&self, key: &str) -> Vec<&str> {
        self.pairs
            .iter()
            .filter(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
            .collect()
    }

    pub fn flag(&self, key: &str) -> bool {
        matches!(self.get(key), Some("true" | "1" | "True"))
    }

    pub fn int(&self, key: &str) -> ApiResult<Option<i64>> {
        match self.get(key) {
            None | Some("") => Ok(None),
            Some(v) => v.parse().map(Some).map_err(|_| {
                ApiError::bad_request(format!("invalid value {v:?} for query parameter {key}"))
            }),
        }
    }
}

/// The object (or collection) a resource request addresses.
#[derive(Debug, Clone)]
pub struct Target {
    pub info: &'static ResourceInfo,
    pub namespace: Option<String>,
    pub name: Option<String>,
    pub subresource: Option<String>,
}

impl Target {
    /// Parses the segments after `/api/v1` or `/apis/<group>/<version>`.
    pub fn parse(group: &str, version: &str, segs: &[&str]) -> ApiResult<Self> {
        let not_found = ApiError::path_not_found;
        let namespaced_form = segs.len() >= 3
            && segs[0] == "namespaces"
            && registry::by_resource(group, version, segs[2]).is_some_and(|r| r.namespaced());
        let (namespace, rest) = if namespaced_form {
            (Some(segs[1].to_string()), &segs[2..])
        } else {
            (None, segs)
        };
        if rest.is_empty() || rest.len() > 3 {
            return Err(not_found());
        }
        let info = registry::by_resource(group, version, rest[0]).ok_or_else(not_found)?;
        let name = rest.get(1).map(|s| s.to_string());
        let subresource = rest.get(2).map(|s| s.to_string());
        if let Some(sub) = &subresource {
            if !info.has_subresource(sub) {
                return Err(not_found());
            }
        }
        // A namespaced kind's objects are only addressed through their namespace.
        if info.namespaced() && namespace.is_none() && name.is_some() {
            return Err(not_found());
        }
        if name.as_deref() == Some("") {
            return Err(not_found());
        }
        Ok(Self {
            info,
            namespace,
            name,
            subresource,
        })
    }

    /// The store key of the named object.
    pub fn key(&self) -> ApiResult<String> {
        let name = self.name.as_deref().unwrap_or("");
        self.info
            .store_key(self.namespace.as_deref(), name)
            .map_err(|e| ApiError::bad_request(e.to_string()))
    }

    /// The prefix of the collection (one namespace or all).
    pub fn prefix(&self) -> ApiResult<String> {
        self.info
            .store_prefix(self.namespace.as_deref())
            .map_err(|e| ApiError::bad_request(e.to_string()))
    }

    pub fn name(&self) -> &str {
        self.name.as_deref().unwrap_or("")
    }
}

/// How the response body is encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Json,
    Yaml,
    /// `meta.k8s.io/v1` Table (from `application/json;as=Table;v=v1;g=meta.k8s.io`).
    Table,
}

/// Picks the first acceptable media type the client lists.
pub fn response_format(accept: Option<&str>) -> ApiResult<Format> {
    let accept = accept.unwrap_or("").trim();
    if accept.is_empty() {
        return Ok(Format::Json);
    }
    for part in accept.split(',') {
        let mut params = part.split(';').map(str::trim);
        let media = params.next().unwrap_or("").to_ascii_lowercase();
        let params: Vec<(&str, &str)> = params.filter_map(|p| p.split_once('=')).collect();
        let param = |k: &str| params.iter().find(|(pk, _)| *pk == k).map(|(_, v)| *v);
        match media.as_str() {
            "application/json" => match param("as") {
                None => return Ok(Format::Json),
                Some("Table") if param("g") == Some("meta.k8s.io") => {
                    if matches!(param("v"), Some("v1") | Some("v1beta1")) {
                        return Ok(Format::Table);
                    }
                }
                // Other conversions (PartialObjectMetadata...) are not served: try the next.
                Some(_) => {}
            },
            "application/yaml" => return Ok(Format::Yaml),
            "*/*" | "application/*" => return Ok(Format::Json),
            _ => {}
        }
    }
    Err(ApiError::not_acceptable(accept))
}

/// Body media types.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyType {
    Json,
    Yaml,
    Protobuf,
    JsonPatch,
    MergePatch,
    StrategicMergePatch,
    ApplyPatch,
}

pub fn body_type(content_type: Option<&str>) -> ApiResult<BodyType> {
    let ct = content_type.unwrap_or("application/json");
    let media = ct
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    Ok(match media.as_str() {
        "application/json" | "" => BodyType::Json,
        "application/yaml" | "application/x-yaml" | "text/yaml" => BodyType::Yaml,
        "application/vnd.kubernetes.protobuf" => BodyType::Protobuf,
        "application/json-patch+json" => BodyType::JsonPatch,
        "application/merge-patch+json" => BodyType::MergePatch,
        "application/strategic-merge-patch+json" => BodyType::StrategicMergePatch,
        "application/apply-patch+yaml" => BodyType::ApplyPatch,
        _ => return Err(ApiError::unsupported_media_type(ct)),
    })
}

/// Decodes a JSON or YAML body into a value.
pub fn decode_json_or_yaml(body: &[u8], yaml: bool) -> ApiResult<Value> {
    if yaml {
        let text = std::str::from_utf8(body)
            .map_err(|e| ApiError::bad_request(format!("body is not UTF-8: {e}")))?;
        serde_yaml_ng::from_str(text)
            .map_err(|e| ApiError::bad_request(format!("error decoding YAML: {e}")))
    } else {
        serde_json::from_slice(body).map_err(|e| {
            ApiError::bad_request(format!(
                "error decoding JSON: {e} (line {}, column {})",
                e.line(),
                e.column()
            ))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths() {
        let t = Target::parse(
            "",
            "v1",
            &["namespaces", "default", "pods", "web", "status"],
        )
        .unwrap();
        assert_eq!(t.info.kind, "Pod");
        assert_eq!(t.namespace.as_deref(), Some("default"));
        assert_eq!(t.name.as_deref(), Some("web"));
        assert_eq!(t.subresource.as_deref(), Some("status"));
        let ns = Target::parse("", "v1", &["namespaces", "default", "status"]).unwrap();
        assert_eq!(ns.info.kind, "Namespace");
        assert_eq!(ns.name.as_deref(), Some("default"));
        let all = Target::parse("", "v1", &["pods"]).unwrap();
        assert!(all.namespace.is_none() && all.name.is_none());
        assert!(Target::parse("", "v1", &["pods", "web"]).is_err());
        assert!(Target::parse("", "v1", &["widgets"]).is_err());
        assert!(Target::parse(
            "apps",
            "v1",
            &["namespaces", "d", "deployments", "w", "nope"]
        )
        .is_err());
        let scale = Target::parse(
            "apps",
            "v1",
            &["namespaces", "d", "deployments", "w", "scale"],
        )
        .unwrap();
        assert_eq!(scale.subresource.as_deref(), Some("scale"));
    }

    #[test]
    fn accept_headers() {
        let kubectl_get = "application/json;as=Table;v=v1;g=meta.k8s.io,application/json;as=Table;v=v1beta1;g=meta.k8s.io,application/json";
        assert_eq!(response_format(Some(kubectl_get)).unwrap(), Format::Table);
        assert_eq!(
            response_format(Some("application/vnd.kubernetes.protobuf,application/json")).unwrap(),
            Format::Json
        );
        assert_eq!(response_format(None).unwrap(), Format::Json);
        assert_eq!(
            response_format(Some("application/yaml")).unwrap(),
            Format::Yaml
        );
        assert_eq!(
            response_format(Some("application/vnd.kubernetes.protobuf"))
                .unwrap_err()
                .code,
            406
        );
    }

    #[test]
    fn query_keeps_repeats() {
        let q = Query::parse(Some("command=a&command=b&watch=1&limit=5"));
        assert_eq!(q.all("command"), vec!["a", "b"]);
        assert!(q.flag("watch"));
        assert_eq!(q.int("limit").unwrap(), Some(5));
        assert!(Query::parse(Some("limit=x")).int("limit").is_err());
    }
}
