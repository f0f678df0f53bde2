//! [`Object`]: one typed enum over every served kind, so an API server that receives JSON for any
//! registered kind can decode it once ([`Object::from_value`]) and hand it to defaulting and
//! validation ([`Object::prepare_create`] runs the three).

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::{Metadata, Resource};
use serde::{Serialize, Serializer};
use serde_json::Value;
use thiserror::Error;

use crate::registry::{self, ResourceInfo};
use crate::types::{
    CertificateSigningRequest, ClusterRole, ClusterRoleBinding, ConfigMap, DaemonSet, Deployment,
    EndpointSlice, Endpoints, Event, HorizontalPodAutoscaler, Job, Lease, Namespace, Node, Pod,
    ReplicaSet, Role, RoleBinding, Secret, Service, ServiceAccount, StatefulSet,
};
use crate::{defaults, validation};

#[derive(Debug, Error)]
pub enum Error {
    #[error("expected an object, found {found}")]
    NotAnObject { found: &'static str },
    #[error("missing field \"{field}\"")]
    MissingField { field: &'static str },
    #[error("field \"{field}\" must be a non-empty string")]
    InvalidField { field: &'static str },
    #[error("no kind {kind:?} is registered")]
    UnknownKind { kind: String },
    #[error("no kind {kind:?} is registered for version {api_version:?}: {kind} is served as {served:?}")]
    UnsupportedVersion {
        kind: String,
        api_version: String,
        served: String,
    },
    #[error("{field} {found:?} does not match the expected {field} {expected:?}")]
    Mismatch {
        field: &'static str,
        expected: String,
        found: String,
    },
    #[error("decoding {kind}: {source}")]
    Decode {
        kind: &'static str,
        source: serde_json::Error,
    },
    #[error("encoding {kind}: {source}")]
    Encode {
        kind: &'static str,
        source: serde_json::Error,
    },
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Why a create request body was refused: it does not decode, or it decodes and is invalid.
#[derive(Debug, Error)]
pub enum CreateError {
    #[error(transparent)]
    Decode(#[from] Error),
    #[error(transparent)]
    Invalid(#[from] validation::Invalid),
}

/// A JSON type's name, for messages.
pub(crate) fn json_type(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// Reads a required string field (`kind`, `apiVersion`) of a JSON object.
pub(crate) fn required_str<'a>(
    obj: &'a serde_json::Map<String, Value>,
    field: &'static str,
) -> Result<&'a str> {
    match obj.get(field) {
        None | Some(Value::Null) => Err(Error::MissingField { field }),
        Some(Value::String(s)) if !s.is_empty() => Ok(s),
        Some(_) => Err(Error::InvalidField { field }),
    }
}

macro_rules! objects {
    ($($kind:ident),* $(,)?) => {
        /// An object of any served kind.
        // Variants differ in size (a Pod is far larger than a Lease); objects are built once per
        // request and matched on, so the simplicity of unboxed variants wins.
        #[allow(clippy::large_enum_variant)]
        #[derive(Debug, Clone, PartialEq)]
        pub enum Object {
            $($kind($kind),)*
        }

        impl Object {
            /// The object's kind, e.g. `Pod`.
            pub fn kind(&self) -> &'static str {
                match self {
                    $(Object::$kind(_) => <$kind as Resource>::KIND,)*
                }
            }

            pub fn meta(&self) -> &ObjectMeta {
                match self {
                    $(Object::$kind(o) => o.metadata(),)*
                }
            }

            pub fn meta_mut(&mut self) -> &mut ObjectMeta {
                match self {
                    $(Object::$kind(o) => o.metadata_mut(),)*
                }
            }

            /// The object as Kubernetes JSON, `apiVersion` and `kind` included.
            pub fn to_value(&self) -> Result<Value> {
                let kind = self.kind();
                match self {
                    $(Object::$kind(o) => serde_json::to_value(o),)*
                }
                .map_err(|source| Error::Encode { kind, source })
            }

            fn decode(info: &ResourceInfo, value: Value) -> Result<Self> {
                $(
                    if info.kind == <$kind as Resource>::KIND {
                        return serde_json::from_value(value)
                            .map(Object::$kind)
                            .map_err(|source| Error::Decode {
                                kind: <$kind as Resource>::KIND,
                                source,
                            });
                    }
                )*
                Err(Error::UnknownKind { kind: info.kind.to_string() })
            }
        }

        impl Serialize for Object {
            fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                match self {
                    $(Object::$kind(o) => o.serialize(serializer),)*
                }
            }
        }

        $(
            impl From<$kind> for Object {
                fn from(o: $kind) -> Self {
                    Object::$kind(o)
                }
            }
        )*
    };
}

objects!(
    Pod,
    Node,
    Service,
    Endpoints,
    Namespace,
    ConfigMap,
    Secret,
    Event,
    ServiceAccount,
    Deployment,
    ReplicaSet,
    DaemonSet,
    StatefulSet,
    Job,
    HorizontalPodAutoscaler,
    EndpointSlice,
    Lease,
    Role,
    ClusterRole,
    RoleBinding,
    ClusterRoleBinding,
    CertificateSigningRequest,
);

impl Object {
    /// Decodes a JSON object of any served kind, chosen by its `apiVersion` and `kind`.
    pub fn from_value(value: Value) -> Result<Self> {
        let obj = value.as_object().ok_or(Error::NotAnObject {
            found: json_type(&value),
        })?;
        let kind = required_str(obj, "kind")?;
        let api_version = required_str(obj, "apiVersion")?;
        let info =
            registry::by_api_version_kind(api_version, kind).ok_or_else(
                || match registry::by_kind(kind) {
                    Some(served) => Error::UnsupportedVersion {
                        kind: kind.to_string(),
                        api_version: api_version.to_string(),
                        served: served.api_version(),
                    },
                    None => Error::UnknownKind {
                        kind: kind.to_string(),
                    },
                },
            )?;
        Self::decode(info, value)
    }

    /// Decodes a request body sent to the endpoint of `info` (e.g. `POST /api/v1/.../pods`):
    /// a missing `apiVersion` or `kind` is taken from the endpoint, a different one is an error.
    pub fn from_value_as(info: &ResourceInfo, mut value: Value) -> Result<Self> {
        let found = json_type(&value);
        let Some(obj) = value.as_object_mut() else {
            return Err(Error::NotAnObject { found });
        };
        let expected = [
            ("apiVersion", info.api_version()),
            ("kind", info.kind.to_string()),
        ];
        for (field, want) in expected {
            match obj.get(field) {
                None | Some(Value::Null) => {
                    obj.insert(field.to_string(), Value::String(want));
                }
                Some(Value::String(have)) if *have == want => {}
                Some(Value::String(have)) => {
                    return Err(Error::Mismatch {
                        field,
                        expected: want,
                        found: have.clone(),
                    })
                }
                Some(_) => return Err(Error::InvalidField { field }),
            }
        }
        Self::from_value(value)
    }

    /// The whole create path for a request body: decode, default, validate. The namespace must
    /// already be set for namespaced kinds (the API server takes it from the request path).
    pub fn prepare_create(value: Value) -> Result<Self, CreateError> {
        let mut obj = Self::from_value(value)?;
        defaults::apply(&mut obj);
        validation::validate_create(&obj)?;
        Ok(obj)
    }

    /// The registry entry of the object's kind.
    pub fn info(&self) -> &'static ResourceInfo {
        registry::by_kind(self.kind()).expect("every Object variant is a registered kind")
    }

    pub fn name(&self) -> Option<&str> {
        self.meta().name.as_deref()
    }

    pub fn namespace(&self) -> Option<&str> {
        self.meta().namespace.as_deref()
    }

    /// The object's store key, from its registry entry, namespace and name.
    pub fn store_key(&self) -> Result<String, registry::Error> {
        let info = self.info();
        let namespace = if info.namespaced() {
            self.namespace()
        } else {
            None
        };
        info.store_key(namespace, self.name().unwrap_or(""))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn every_registered_kind_decodes_to_its_variant() {
        for info in registry::all() {
            let mut v = json!({
                "apiVersion": info.api_version(),
                "kind": info.kind,
                "metadata": {"name": "x"}
            });
            if info.kind == "EndpointSlice" {
                v["addressType"] = json!("IPv4");
                v["endpoints"] = json!([]);
            }
            let obj = Object::from_value(v).unwrap_or_else(|e| panic!("{}: {e}", info.kind));
            assert_eq!(obj.kind(), info.kind);
            assert_eq!(obj.info(), info);
            assert_eq!(obj.name(), Some("x"));
            let back = obj.to_value().unwrap();
            assert_eq!(back["kind"], info.kind);
            assert_eq!(back["apiVersion"], info.api_version());
        }
    }

    #[test]
    fn decode_errors_name_the_problem() {
        let err = |v: Value| Object::from_value(v).unwrap_err().to_string();
        assert_eq!(err(json!([1])), "expected an object, found an array");
        assert_eq!(err(json!({"apiVersion": "v1"})), "missing field \"kind\"");
        assert_eq!(err(json!({"kind": "Pod"})), "missing field \"apiVersion\"");
        assert_eq!(
            err(json!({"kind": 3, "apiVersion": "v1"})),
            "field \"kind\" must be a non-empty string"
        );
        assert_eq!(
            err(json!({"kind": "Widget", "apiVersion": "v1"})),
            "no kind \"Widget\" is registered"
        );
        assert_eq!(
            err(json!({"kind": "Deployment", "apiVersion": "apps/v1beta1"})),
            "no kind \"Deployment\" is registered for version \"apps/v1beta1\": Deployment is \
             served as \"apps/v1\""
        );
        let msg = err(json!({
            "kind": "Pod", "apiVersion": "v1",
            "spec": {"containers": [{"name": "a", "ports": [{"containerPort": "eighty"}]}]}
        }));
        assert!(
            msg.starts_with("decoding Pod: invalid type: string \"eighty\""),
            "{msg}"
        );
    }

    #[test]
    fn decoding_for_an_endpoint() {
        let pods = registry::by_resource("", "v1", "pods").unwrap();
        let obj = Object::from_value_as(pods, json!({"metadata": {"name": "a"}})).unwrap();
        assert_eq!(obj.kind(), "Pod");
        assert_eq!(obj.to_value().unwrap()["apiVersion"], "v1");
        let err = Object::from_value_as(pods, json!({"apiVersion": "apps/v1", "kind": "Pod"}));
        assert_eq!(
            err.unwrap_err().to_string(),
            "apiVersion \"apps/v1\" does not match the expected apiVersion \"v1\""
        );
        let err = Object::from_value_as(pods, json!({"apiVersion": "v1", "kind": "Node"}));
        assert!(matches!(err, Err(Error::Mismatch { field: "kind", .. })));
        assert!(matches!(
            Object::from_value_as(pods, json!("pod")),
            Err(Error::NotAnObject { found: "a string" })
        ));
    }

    #[test]
    fn prepare_create_defaults_then_validates() {
        let obj = Object::prepare_create(json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "web", "namespace": "default"},
            "spec": {"containers": [{"name": "app", "image": "nginx"}]}
        }))
        .unwrap();
        let Object::Pod(pod) = &obj else {
            panic!("not a pod: {obj:?}")
        };
        let spec = pod.spec.as_ref().unwrap();
        assert_eq!(spec.restart_policy.as_deref(), Some("Always"));
        assert_eq!(
            spec.containers[0].image_pull_policy.as_deref(),
            Some("Always")
        );

        let err = Object::prepare_create(json!({
            "apiVersion": "batch/v1", "kind": "Job",
            "metadata": {"name": "pi", "namespace": "default"},
            "spec": {"template": {"spec": {"containers": [{"name": "pi", "image": "perl"}]}}}
        }))
        .unwrap_err();
        let CreateError::Invalid(invalid) = err else {
            panic!("expected invalid, got {err}")
        };
        assert_eq!(invalid.errors[0].field, "spec.template.spec.restartPolicy");

        let err = Object::prepare_create(json!({"kind": "Pod"})).unwrap_err();
        assert!(matches!(
            err,
            CreateError::Decode(Error::MissingField {
                field: "apiVersion"
            })
        ));
    }

    #[test]
    fn store_keys_from_objects() {
        let pod = Object::from_value(json!({
            "apiVersion": "v1", "kind": "Pod", "metadata": {"name": "web", "namespace": "prod"}
        }))
        .unwrap();
        assert_eq!(pod.store_key().unwrap(), "/registry/core/pods/prod/web");
        let node = Object::from_value(json!({
            "apiVersion": "v1", "kind": "Node", "metadata": {"name": "n1"}
        }))
        .unwrap();
        assert_eq!(node.store_key().unwrap(), "/registry/core/nodes/n1");
        let no_ns = Object::from_value(json!({
            "apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}
        }))
        .unwrap();
        assert!(no_ns.store_key().is_err());
    }

    #[test]
    fn from_typed_values() {
        let obj: Object = Lease::default().into();
        assert_eq!(obj.kind(), "Lease");
        assert_eq!(
            serde_json::to_value(&obj).unwrap()["apiVersion"],
            "coordination.k8s.io/v1"
        );
    }
}
