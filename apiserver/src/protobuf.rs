//! Kubernetes protobuf request bodies (`application/vnd.kubernetes.protobuf`), decoded into the
//! object's Kubernetes JSON form. kubectl's `create` generators (namespace, configmap, secret,
//! serviceaccount, deployment, service, job, role, rolebinding, ...) send nothing else, and do
//! not retry as JSON on 415.
//!
//! A body is `"k8s\0"` then a `runtime.Unknown` envelope: `{1: TypeMeta{1: apiVersion, 2: kind},
//! 2: raw, 3: contentEncoding, 4: contentType}`, where `raw` is the object's own message. The
//! schemas are Kubernetes 1.32's, under `proto/` (regenerated from kubectl by
//! `proto/regenerate.py`); `build.rs` compiles them into a descriptor set, and the object is
//! decoded with prost-reflect as the message the envelope names (`apps/v1` `Deployment` is
//! `k8s.io.api.apps.v1.Deployment`).
//!
//! The JSON is what Go's encoder writes for the same Kubernetes struct, not the proto3 JSON
//! mapping. Field names are the proto names, which Kubernetes keeps equal to the JSON names.
//! Go serialises every value field, so a zero on the wire says nothing: zero scalars, empty lists
//! and maps, and value structs that come out empty are left out. Pointer fields (the
//! `berth.pointer` option) are on the wire only when set, so they are kept even when zero
//! (`replicas: 0`, `emptyDir: {}`). Embedded fields (`berth.inline`) are flattened into their
//! parent. `Time` and `MicroTime` become RFC 3339 strings (an empty one is Go's zero time and is
//! left out), `Quantity` its string, `IntOrString` a number or a string, `bytes` base64, and
//! `RawExtension` / `FieldsV1` the JSON they carry.

use std::{collections::HashSet, sync::LazyLock};

use base64::{engine::general_purpose::STANDARD, Engine as _};
use prost_reflect::{
    DescriptorPool, DynamicMessage, MapKey, MessageDescriptor, ReflectMessage, Value as Proto,
};
use serde_json::{Map, Value};

/// The first bytes of every Kubernetes protobuf body.
const MAGIC: &[u8] = b"k8s\0";

const UNKNOWN: &str = "k8s.io.apimachinery.pkg.runtime.Unknown";
const TIME: &str = "k8s.io.apimachinery.pkg.apis.meta.v1.Time";
const MICRO_TIME: &str = "k8s.io.apimachinery.pkg.apis.meta.v1.MicroTime";
const FIELDS_V1: &str = "k8s.io.apimachinery.pkg.apis.meta.v1.FieldsV1";
const QUANTITY: &str = "k8s.io.apimachinery.pkg.api.resource.Quantity";
const INT_OR_STRING: &str = "k8s.io.apimachinery.pkg.util.intstr.IntOrString";
const RAW_EXTENSION: &str = "k8s.io.apimachinery.pkg.runtime.RawExtension";

/// API group (as in `apiVersion`) to proto package prefix, for the groups Berth serves.
const GROUPS: &[(&str, &str)] = &[
    ("", "k8s.io.api.core"),
    ("apps", "k8s.io.api.apps"),
    ("batch", "k8s.io.api.batch"),
    ("discovery.k8s.io", "k8s.io.api.discovery"),
    ("coordination.k8s.io", "k8s.io.api.coordination"),
    ("rbac.authorization.k8s.io", "k8s.io.api.rbac"),
    ("certificates.k8s.io", "k8s.io.api.certificates"),
];

static DESCRIPTORS: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/k8s.fds"));

static SCHEMA: LazyLock<Schema> = LazyLock::new(Schema::load);

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum Error {
    #[error("protobuf body does not start with the k8s envelope magic")]
    Magic,
    #[error("malformed protobuf body: {0}")]
    Malformed(String),
    #[error("protobuf body has content encoding {0:?}; only unencoded bodies are supported")]
    ContentEncoding(String),
    #[error("no protobuf schema for kind {kind:?} in {api_version:?}")]
    UnknownKind { api_version: String, kind: String },
}

/// Decodes a protobuf request body into the object's JSON form, `apiVersion` and `kind`
/// included.
pub fn decode(body: &[u8]) -> Result<Value> {
    let rest = body.strip_prefix(MAGIC).ok_or(Error::Magic)?;
    let schema = &*SCHEMA;
    let envelope = DynamicMessage::decode(schema.unknown.clone(), rest)
        .map_err(|e| Error::Malformed(format!("envelope: {e}")))?;
    let type_meta = envelope.get_field_by_name("typeMeta");
    let type_meta = type_meta.as_deref().and_then(Proto::as_message);
    let api_version = string_field(type_meta, "apiVersion");
    let kind = string_field(type_meta, "kind");
    let encoding = string_field(Some(&envelope), "contentEncoding");
    if !encoding.is_empty() {
        return Err(Error::ContentEncoding(encoding));
    }
    let descriptor = schema
        .object(&api_version, &kind)
        .ok_or_else(|| Error::UnknownKind {
            api_version: api_version.clone(),
            kind: kind.clone(),
        })?;
    let raw = envelope.get_field_by_name("raw");
    let raw = raw
        .as_deref()
        .and_then(Proto::as_bytes)
        .map_or(&[][..], |b| &b[..]);
    let object = DynamicMessage::decode(descriptor, raw)
        .map_err(|e| Error::Malformed(format!("{kind}: {e}")))?;

    let mut json = Map::new();
    json.insert("apiVersion".into(), Value::String(api_version));
    json.insert("kind".into(), Value::String(kind));
    schema.write_fields(&object, &mut json)?;
    Ok(Value::Object(json))
}

fn string_field(message: Option<&DynamicMessage>, name: &str) -> String {
    message
        .and_then(|m| m.get_field_by_name(name))
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_default()
}

/// The compiled schemas plus what the `berth.*` field options say, looked up once.
struct Schema {
    pool: DescriptorPool,
    unknown: MessageDescriptor,
    /// Full names of the fields that are Go pointers.
    pointer: HashSet<String>,
    /// Full names of the fields that are embedded Go structs.
    inline: HashSet<String>,
}

impl Schema {
    /// Loads what build.rs compiled; a failure here is a build bug, which every test catches.
    fn load() -> Self {
        let pool = DescriptorPool::decode(DESCRIPTORS).expect("build.rs wrote a descriptor set");
        let unknown = pool
            .get_message_by_name(UNKNOWN)
            .expect("runtime.Unknown is compiled");
        let option = |name| {
            pool.get_extension_by_name(name)
                .expect("berth/options.proto is compiled")
        };
        let (pointer_option, inline_option) = (option("berth.pointer"), option("berth.inline"));
        let mut pointer = HashSet::new();
        let mut inline = HashSet::new();
        for message in pool.all_messages() {
            for field in message.fields() {
                let options = field.options();
                let set = |ext| options.get_extension(ext).as_bool() == Some(true);
                if set(&pointer_option) {
                    pointer.insert(field.full_name().to_owned());
                }
                if set(&inline_option) {
                    inline.insert(field.full_name().to_owned());
                }
            }
        }
        Schema {
            pool,
            unknown,
            pointer,
            inline,
        }
    }

    /// The message for an object of `kind` in `api_version` (`group/version`, or `version`
    /// for the core group).
    fn object(&self, api_version: &str, kind: &str) -> Option<MessageDescriptor> {
        let (group, version) = api_version.rsplit_once('/').unwrap_or(("", api_version));
        let package = GROUPS.iter().find(|(g, _)| *g == group)?.1;
        let word = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_alphanumeric());
        if !word(version) || !word(kind) {
            return None;
        }
        self.pool
            .get_message_by_name(&format!("{package}.{version}.{kind}"))
    }

    /// Writes the JSON members of `message` into `out`.
    fn write_fields(&self, message: &DynamicMessage, out: &mut Map<String, Value>) -> Result<()> {
        for field in message.descriptor().fields() {
            if !message.has_field(&field) {
                continue;
            }
            let value = message.get_field(&field);
            if self.inline.contains(field.full_name()) {
                if let Some(embedded) = value.as_message() {
                    self.write_fields(embedded, out)?;
                }
                continue;
            }
            let keep_zero = self.pointer.contains(field.full_name());
            if let Some(json) = self.value(&value, keep_zero)? {
                out.insert(field.name().to_owned(), json);
            }
        }
        Ok(())
    }

    /// The JSON for a field's value, or `None` when Go's encoder would leave it out (or write
    /// `null`). `keep_zero` is set for pointer fields, list items and map values.
    fn value(&self, value: &Proto, keep_zero: bool) -> Result<Option<Value>> {
        let json = match value {
            Proto::List(items) if items.is_empty() => return Ok(None),
            Proto::List(items) => Value::Array(
                items
                    .iter()
                    .map(|item| Ok(self.value(item, true)?.unwrap_or(Value::Null)))
                    .collect::<Result<_>>()?,
            ),
            Proto::Map(entries) if entries.is_empty() => return Ok(None),
            Proto::Map(entries) => {
                let mut object = Map::new();
                for (key, item) in entries {
                    let item = self.value(item, true)?.unwrap_or(Value::Null);
                    object.insert(map_key(key), item);
                }
                Value::Object(object)
            }
            Proto::Message(message) => return self.message(message, keep_zero),
            scalar if !keep_zero && is_zero(scalar) => return Ok(None),
            Proto::Bool(b) => Value::Bool(*b),
            Proto::I32(n) | Proto::EnumNumber(n) => Value::from(*n),
            Proto::I64(n) => Value::from(*n),
            Proto::U32(n) => Value::from(*n),
            Proto::U64(n) => Value::from(*n),
            Proto::F32(n) => Value::from(f64::from(*n)),
            Proto::F64(n) => Value::from(*n),
            Proto::String(s) => Value::String(s.clone()),
            Proto::Bytes(b) => Value::String(STANDARD.encode(b)),
        };
        Ok(Some(json))
    }

    /// The JSON for a message value: the apimachinery types that serialise as scalars, or an
    /// object of its fields.
    fn message(&self, message: &DynamicMessage, keep_zero: bool) -> Result<Option<Value>> {
        let descriptor = message.descriptor();
        let name = descriptor.full_name();
        let json = match name {
            TIME | MICRO_TIME => {
                // Go writes nothing for the zero time, and always both fields otherwise.
                if !message.has_field_by_name("seconds") && !message.has_field_by_name("nanos") {
                    return Ok(None);
                }
                let seconds = int_field(message, "seconds");
                let nanos = (name == MICRO_TIME).then(|| int_field(message, "nanos"));
                Value::String(rfc3339(seconds, nanos)?)
            }
            QUANTITY => {
                let s = string_field(Some(message), "string");
                // Go's zero Quantity prints as "0".
                Value::String(if s.is_empty() { "0".into() } else { s })
            }
            INT_OR_STRING => {
                let string = int_field(message, "type") == 1;
                let int = int_field(message, "intVal");
                let s = string_field(Some(message), "strVal");
                // A zero IntOrString value means "not set" to Kubernetes (a targetPort of 0 is
                // defaulted to the port), so it goes like any other zero value.
                if !keep_zero && (if string { s.is_empty() } else { int == 0 }) {
                    return Ok(None);
                }
                if string {
                    Value::String(s)
                } else {
                    Value::from(int)
                }
            }
            RAW_EXTENSION | FIELDS_V1 => {
                let raw = message
                    .get_field_by_name(if name == FIELDS_V1 { "Raw" } else { "raw" })
                    .and_then(|v| v.as_bytes().cloned())
                    .unwrap_or_default();
                if raw.is_empty() {
                    return Ok(None);
                }
                serde_json::from_slice(&raw)
                    .map_err(|e| Error::Malformed(format!("{name} does not hold JSON: {e}")))?
            }
            _ => {
                let mut object = Map::new();
                self.write_fields(message, &mut object)?;
                if object.is_empty() && !keep_zero {
                    return Ok(None);
                }
                Value::Object(object)
            }
        };
        Ok(Some(json))
    }
}

fn int_field(message: &DynamicMessage, name: &str) -> i64 {
    match message.get_field_by_name(name).as_deref() {
        Some(Proto::I64(n)) => *n,
        Some(Proto::I32(n)) => i64::from(*n),
        _ => 0,
    }
}

fn map_key(key: &MapKey) -> String {
    match key {
        MapKey::String(s) => s.clone(),
        MapKey::Bool(b) => b.to_string(),
        MapKey::I32(n) => n.to_string(),
        MapKey::I64(n) => n.to_string(),
        MapKey::U32(n) => n.to_string(),
        MapKey::U64(n) => n.to_string(),
    }
}

fn is_zero(value: &Proto) -> bool {
    match value {
        Proto::Bool(b) => !b,
        Proto::I32(n) | Proto::EnumNumber(n) => *n == 0,
        Proto::I64(n) => *n == 0,
        Proto::U32(n) => *n == 0,
        Proto::U64(n) => *n == 0,
        Proto::F32(n) => *n == 0.0,
        Proto::F64(n) => *n == 0.0,
        Proto::String(s) => s.is_empty(),
        Proto::Bytes(b) => b.is_empty(),
        Proto::Message(_) | Proto::List(_) | Proto::Map(_) => false,
    }
}

/// Formats Unix `seconds` in UTC as Go's `time.RFC3339`, or with `nanos` given as
/// `RFC3339Micro` (microseconds, always six digits), the forms `metav1.Time` and
/// `metav1.MicroTime` use in JSON.
fn rfc3339(seconds: i64, nanos: Option<i64>) -> Result<String> {
    let days = seconds.div_euclid(86_400);
    let secs = seconds.rem_euclid(86_400);
    let (year, month, day) = civil_from_days(days);
    if !(0..=9999).contains(&year) {
        return Err(Error::Malformed(format!(
            "timestamp {seconds}s is outside years 0 to 9999"
        )));
    }
    let (h, m, s) = (secs / 3600, secs / 60 % 60, secs % 60);
    let fraction = match nanos {
        Some(n) => format!(".{:06}", n.clamp(0, 999_999_999) / 1000),
        None => String::new(),
    };
    Ok(format!(
        "{year:04}-{month:02}-{day:02}T{h:02}:{m:02}:{s:02}{fraction}Z"
    ))
}

/// The proleptic Gregorian date of a count of days since 1970-01-01 (Howard Hinnant's
/// `civil_from_days`).
fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;
    use prost::Message as _;
    use serde_json::json;

    /// The exact body kubectl 1.32 sent for `kubectl create namespace demo`.
    const CREATE_NS: &[u8] = b"k8s\x00\n\x0f\n\x02v1\x12\tNamespace\x12\x1c\n\x14\n\x04demo\x12\x00\x1a\x00\"\x00*\x002\x008\x00B\x00\x12\x00\x1a\x02\n\x00\x1a\x00\"\x00";

    /// Bodies kubectl 1.32.4 sent to a logging server, one per `kubectl create` generator
    /// (commands in testdata/kubectl/README.md).
    macro_rules! fixture {
        ($name:literal) => {
            include_bytes!(concat!("../testdata/kubectl/", $name, ".pb")).as_slice()
        };
    }

    /// A body as kubectl frames one: `object` is the message in proto3 JSON mapping (so
    /// `Quantity` is `{"string": ..}` and bytes are base64), encoded with prost-reflect.
    fn body(api_version: &str, kind: &str, object: Value) -> Vec<u8> {
        let descriptor = SCHEMA.object(api_version, kind).expect("a known kind");
        let message = DynamicMessage::deserialize(descriptor, object).expect("valid test object");
        envelope(api_version, kind, &message.encode_to_vec(), "")
    }

    fn envelope(api_version: &str, kind: &str, raw: &[u8], encoding: &str) -> Vec<u8> {
        let unknown = json!({
            "typeMeta": {"apiVersion": api_version, "kind": kind},
            "raw": STANDARD.encode(raw),
            "contentEncoding": encoding,
            "contentType": "",
        });
        let unknown = DynamicMessage::deserialize(SCHEMA.unknown.clone(), unknown).unwrap();
        [MAGIC, &unknown.encode_to_vec()].concat()
    }

    #[test]
    fn decodes_kubectl_create_namespace() {
        let v = decode(CREATE_NS).unwrap();
        assert_eq!(
            v,
            json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "demo"}})
        );
        assert_eq!(fixture!("namespace"), CREATE_NS);
    }

    #[test]
    fn refuses_garbage() {
        assert_eq!(decode(b"{}"), Err(Error::Magic));
        assert!(matches!(decode(b"k8s\x00\n\xff"), Err(Error::Malformed(_))));
    }

    #[test]
    fn decodes_what_kubectl_create_sends() {
        let rbac = "rbac.authorization.k8s.io/v1";
        let cases = [
            (
                fixture!("configmap"),
                json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "x"},
                    "data": {"a": "b"}}),
            ),
            (
                // --from-literal=user=admin --from-literal=empty=
                fixture!("secret-generic"),
                json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "s"},
                    "data": {"user": "YWRtaW4=", "empty": ""}}),
            ),
            (
                fixture!("secret-docker-registry"),
                json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "r"},
                "type": "kubernetes.io/dockerconfigjson",
                "data": {".dockerconfigjson": STANDARD.encode(
                    concat!(r#"{"auths":{"reg.example":{"username":"u","password":"p","#,
                        r#""email":"e@example.com","auth":"dTpw"}}}"#)
                )}}),
            ),
            (
                fixture!("serviceaccount"),
                json!({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "sa"}}),
            ),
            (
                // --image=nginx:1.27 --port=80 --replicas=3
                fixture!("deployment"),
                json!({"apiVersion": "apps/v1", "kind": "Deployment",
                    "metadata": {"name": "web", "labels": {"app": "web"}},
                    "spec": {"replicas": 3, "selector": {"matchLabels": {"app": "web"}},
                        "template": {"metadata": {"labels": {"app": "web"}}, "spec": {
                            "containers": [{"name": "nginx", "image": "nginx:1.27",
                                "ports": [{"containerPort": 80}]}]}}}}),
            ),
            (
                // --replicas=0: a pointer, so the zero stays
                fixture!("deployment-zero-replicas"),
                json!({"apiVersion": "apps/v1", "kind": "Deployment",
                    "metadata": {"name": "zero", "labels": {"app": "zero"}},
                    "spec": {"replicas": 0, "selector": {"matchLabels": {"app": "zero"}},
                        "template": {"metadata": {"labels": {"app": "zero"}}, "spec": {
                            "containers": [{"name": "nginx", "image": "nginx"}]}}}}),
            ),
            (
                // --tcp=80:8080
                fixture!("service-clusterip"),
                json!({"apiVersion": "v1", "kind": "Service",
                    "metadata": {"name": "web", "labels": {"app": "web"}},
                    "spec": {"type": "ClusterIP", "selector": {"app": "web"}, "ports": [
                        {"name": "80-8080", "port": 80, "protocol": "TCP", "targetPort": 8080}]}}),
            ),
            (
                // --tcp=443:https --node-port=30443
                fixture!("service-nodeport"),
                json!({"apiVersion": "v1", "kind": "Service",
                    "metadata": {"name": "np", "labels": {"app": "np"}},
                    "spec": {"type": "NodePort", "selector": {"app": "np"}, "ports": [
                        {"name": "443-https", "port": 443, "protocol": "TCP",
                            "targetPort": "https", "nodePort": 30443}]}}),
            ),
            (
                fixture!("job"),
                json!({"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": "once"},
                    "spec": {"template": {"spec": {"restartPolicy": "Never", "containers": [
                        {"name": "once", "image": "busybox", "command": ["echo", "hi"]}]}}}}),
            ),
            (
                fixture!("cronjob"),
                json!({"apiVersion": "batch/v1", "kind": "CronJob", "metadata": {"name": "cj"},
                    "spec": {"schedule": "*/1 * * * *", "jobTemplate": {
                        "metadata": {"name": "cj"},
                        "spec": {"template": {"spec": {"restartPolicy": "OnFailure",
                            "containers": [{"name": "cj", "image": "busybox"}]}}}}}}),
            ),
            (
                // --verb=get,list --resource=pods,deployments.apps --resource-name=a
                fixture!("role"),
                json!({"apiVersion": rbac, "kind": "Role", "metadata": {"name": "reader"},
                    "rules": [
                        {"apiGroups": [""], "resources": ["pods"], "resourceNames": ["a"],
                            "verbs": ["get", "list"]},
                        {"apiGroups": ["apps"], "resources": ["deployments"],
                            "resourceNames": ["a"], "verbs": ["get", "list"]}]}),
            ),
            (
                fixture!("clusterrole"),
                json!({"apiVersion": rbac, "kind": "ClusterRole", "metadata": {"name": "nodes"},
                    "rules": [
                        {"apiGroups": [""], "resources": ["nodes"], "verbs": ["get"]},
                        {"nonResourceURLs": ["/healthz"], "verbs": ["get"]}]}),
            ),
            (
                // --role=reader --user=alice --serviceaccount=default:sa --group=devs
                fixture!("rolebinding"),
                json!({"apiVersion": rbac, "kind": "RoleBinding", "metadata": {"name": "rb"},
                    "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role",
                        "name": "reader"},
                    "subjects": [
                        {"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": "alice"},
                        {"apiGroup": "rbac.authorization.k8s.io", "kind": "Group", "name": "devs"},
                        {"kind": "ServiceAccount", "name": "sa", "namespace": "default"}]}),
            ),
            (
                fixture!("clusterrolebinding"),
                json!({"apiVersion": rbac, "kind": "ClusterRoleBinding",
                    "metadata": {"name": "crb"},
                    "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole",
                        "name": "nodes"},
                    "subjects": [
                        {"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": "bob"}]}),
            ),
            (
                // --hard=cpu=1,pods=2: a map of Quantity
                fixture!("quota"),
                json!({"apiVersion": "v1", "kind": "ResourceQuota", "metadata": {"name": "q"},
                    "spec": {"hard": {"cpu": "1", "pods": "2"}}}),
            ),
        ];
        for (body, want) in cases {
            assert_eq!(decode(body).unwrap(), want);
        }
    }

    #[test]
    fn names_the_kind_it_has_no_schema_for() {
        let err = decode(fixture!("priorityclass")).unwrap_err();
        assert_eq!(
            err,
            Error::UnknownKind {
                api_version: "scheduling.k8s.io/v1".into(),
                kind: "PriorityClass".into()
            }
        );
        assert_eq!(
            err.to_string(),
            r#"no protobuf schema for kind "PriorityClass" in "scheduling.k8s.io/v1""#
        );
        for (api_version, kind) in [
            ("v1", "Frobnicator"),
            ("v2", "Pod"),
            ("", "Pod"),
            ("example.com/v1", "Pod"),
            ("v1", "v1.Pod"),
            ("apps/v1", ""),
        ] {
            assert_eq!(
                decode(&envelope(api_version, kind, b"", "")),
                Err(Error::UnknownKind {
                    api_version: api_version.into(),
                    kind: kind.into()
                })
            );
        }
    }

    #[test]
    fn has_a_schema_for_every_kind_berth_serves() {
        let kinds = [
            ("v1", "Pod"),
            ("v1", "Node"),
            ("v1", "Service"),
            ("v1", "Endpoints"),
            ("v1", "Namespace"),
            ("v1", "ConfigMap"),
            ("v1", "Secret"),
            ("v1", "Event"),
            ("v1", "ServiceAccount"),
            ("apps/v1", "Deployment"),
            ("apps/v1", "ReplicaSet"),
            ("apps/v1", "DaemonSet"),
            ("apps/v1", "StatefulSet"),
            ("batch/v1", "Job"),
            ("discovery.k8s.io/v1", "EndpointSlice"),
            ("coordination.k8s.io/v1", "Lease"),
            ("rbac.authorization.k8s.io/v1", "Role"),
            ("rbac.authorization.k8s.io/v1", "ClusterRole"),
            ("rbac.authorization.k8s.io/v1", "RoleBinding"),
            ("rbac.authorization.k8s.io/v1", "ClusterRoleBinding"),
            ("certificates.k8s.io/v1", "CertificateSigningRequest"),
        ];
        for (api_version, kind) in kinds {
            let b = body(api_version, kind, json!({"metadata": {"name": "x"}}));
            assert_eq!(
                decode(&b).unwrap(),
                json!({"apiVersion": api_version, "kind": kind, "metadata": {"name": "x"}})
            );
        }
        assert_eq!(SCHEMA.inline.len(), 12);
        assert!(SCHEMA
            .pointer
            .contains("k8s.io.api.apps.v1.DeploymentSpec.replicas"));
    }

    #[test]
    fn decodes_a_configmap_with_data_and_binary_data() {
        let b = body(
            "v1",
            "ConfigMap",
            json!({"metadata": {"name": "cfg", "namespace": "ns", "annotations": {"note": ""}},
                "data": {"k": "v", "blank": ""}, "binaryData": {"b": "AQI="}, "immutable": false}),
        );
        assert_eq!(
            decode(&b).unwrap(),
            json!({"apiVersion": "v1", "kind": "ConfigMap",
                "metadata": {"name": "cfg", "namespace": "ns", "annotations": {"note": ""}},
                "data": {"k": "v", "blank": ""}, "binaryData": {"b": "AQI="}, "immutable": false})
        );
    }

    #[test]
    fn decodes_a_secret_with_binary_data() {
        let bin = STANDARD.encode([0u8, 159, 255, 10]);
        let b = body(
            "v1",
            "Secret",
            json!({"metadata": {"name": "blob"}, "type": "Opaque",
                "data": {"bin": bin, "empty": ""}, "stringData": {"s": "plain"}}),
        );
        assert_eq!(
            decode(&b).unwrap(),
            json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "blob"},
                "type": "Opaque", "data": {"bin": "AJ//Cg==", "empty": ""},
                "stringData": {"s": "plain"}})
        );
    }

    #[test]
    fn decodes_a_deployment_with_containers_ports_resources_and_volumes() {
        let b = body(
            "apps/v1",
            "Deployment",
            json!({
                "metadata": {"name": "web", "namespace": "default", "labels": {"app": "web"},
                    "generation": 0, "creationTimestamp": {}},
                "spec": {
                    "replicas": 0,
                    "minReadySeconds": 0,
                    "selector": {"matchLabels": {"app": "web"}},
                    "strategy": {"type": "RollingUpdate", "rollingUpdate": {
                        "maxUnavailable": {"type": 0, "intVal": 0},
                        "maxSurge": {"type": 1, "strVal": "25%"}}},
                    "template": {
                        "metadata": {"labels": {"app": "web"}},
                        "spec": {
                            "automountServiceAccountToken": false,
                            "terminationGracePeriodSeconds": 0,
                            "containers": [{
                                "name": "nginx",
                                "image": "nginx:1.27",
                                "args": ["-g", ""],
                                "ports": [{"name": "http", "containerPort": 80, "protocol": "TCP"}],
                                "resources": {
                                    "limits": {"cpu": {"string": "500m"},
                                        "memory": {"string": "128Mi"}},
                                    "requests": {"cpu": {"string": "250m"}}},
                                "readinessProbe": {"handler": {"httpGet": {"path": "/",
                                    "port": {"type": 1, "strVal": "http"}}}, "periodSeconds": 5},
                                "env": [{"name": "A", "valueFrom": {"configMapKeyRef": {
                                    "localObjectReference": {"name": "cm"}, "key": "a"}}}],
                                "volumeMounts": [{"name": "cache", "mountPath": "/cache",
                                    "readOnly": false}],
                                "securityContext": {"runAsUser": 0, "privileged": false}
                            }],
                            "volumes": [
                                {"name": "cache", "volumeSource": {"emptyDir": {}}},
                                {"name": "conf", "volumeSource": {"configMap": {
                                    "localObjectReference": {"name": "cm"}, "defaultMode": 420}}}]
                        }
                    }
                },
                "status": {}
            }),
        );
        assert_eq!(
            decode(&b).unwrap(),
            json!({"apiVersion": "apps/v1", "kind": "Deployment",
                "metadata": {"name": "web", "namespace": "default", "labels": {"app": "web"}},
                "spec": {
                    "replicas": 0,
                    "selector": {"matchLabels": {"app": "web"}},
                    "strategy": {"type": "RollingUpdate",
                        "rollingUpdate": {"maxUnavailable": 0, "maxSurge": "25%"}},
                    "template": {
                        "metadata": {"labels": {"app": "web"}},
                        "spec": {
                            "automountServiceAccountToken": false,
                            "terminationGracePeriodSeconds": 0,
                            "containers": [{
                                "name": "nginx",
                                "image": "nginx:1.27",
                                "args": ["-g", ""],
                                "ports": [{"name": "http", "containerPort": 80, "protocol": "TCP"}],
                                "resources": {"limits": {"cpu": "500m", "memory": "128Mi"},
                                    "requests": {"cpu": "250m"}},
                                "readinessProbe": {"httpGet": {"path": "/", "port": "http"},
                                    "periodSeconds": 5},
                                "env": [{"name": "A", "valueFrom": {"configMapKeyRef": {
                                    "name": "cm", "key": "a"}}}],
                                "volumeMounts": [{"name": "cache", "mountPath": "/cache"}],
                                "securityContext": {"runAsUser": 0, "privileged": false}
                            }],
                            "volumes": [
                                {"name": "cache", "emptyDir": {}},
                                {"name": "conf", "configMap": {"name": "cm", "defaultMode": 420}}]
                        }
                    }
                }
            })
        );
    }

    #[test]
    fn decodes_service_target_ports_as_numbers_or_names() {
        let b = body(
            "v1",
            "Service",
            json!({"metadata": {"name": "web"}, "spec": {
                "type": "ClusterIP", "clusterIP": "", "selector": {"app": "web"},
                "ports": [
                    {"name": "http", "port": 80, "protocol": "TCP",
                        "targetPort": {"type": 0, "intVal": 8080}},
                    {"name": "metrics", "port": 9090,
                        "targetPort": {"type": 1, "strVal": "metrics"}},
                    {"name": "dns", "port": 53, "protocol": "UDP",
                        "targetPort": {"type": 0, "intVal": 0}}
                ]}, "status": {"loadBalancer": {}}}),
        );
        assert_eq!(
            decode(&b).unwrap(),
            json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "web"}, "spec": {
            "type": "ClusterIP", "selector": {"app": "web"},
            "ports": [
                {"name": "http", "port": 80, "protocol": "TCP", "targetPort": 8080},
                {"name": "metrics", "port": 9090, "targetPort": "metrics"},
                // Go's zero IntOrString: Kubernetes defaults it to the port.
                {"name": "dns", "port": 53, "protocol": "UDP"}
            ]}})
        );
    }

    #[test]
    fn decodes_a_rolebinding() {
        let b = body(
            "rbac.authorization.k8s.io/v1",
            "RoleBinding",
            json!({"metadata": {"name": "read-pods", "namespace": "dev"},
                "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role",
                    "name": "reader"},
                "subjects": [
                    {"kind": "User", "apiGroup": "rbac.authorization.k8s.io", "name": "jane"},
                    {"kind": "ServiceAccount", "apiGroup": "", "name": "default",
                        "namespace": "dev"}]}),
        );
        assert_eq!(
            decode(&b).unwrap(),
            json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
                "metadata": {"name": "read-pods", "namespace": "dev"},
                "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role",
                    "name": "reader"},
                "subjects": [
                    {"kind": "User", "apiGroup": "rbac.authorization.k8s.io", "name": "jane"},
                    {"kind": "ServiceAccount", "name": "default", "namespace": "dev"}]})
        );
    }

    #[test]
    fn decodes_times_micro_times_and_managed_fields() {
        let b = body(
            "coordination.k8s.io/v1",
            "Lease",
            json!({"metadata": {
                    "name": "node1", "namespace": "kube-node-lease",
                    "creationTimestamp": {"seconds": 1_700_000_000, "nanos": 999},
                    "deletionTimestamp": {"seconds": 0, "nanos": 0},
                    "deletionGracePeriodSeconds": 0,
                    "finalizers": ["f"],
                    "ownerReferences": [{"apiVersion": "v1", "kind": "Node", "name": "node1",
                        "uid": "u-1", "controller": false}],
                    "managedFields": [{"manager": "kubelet", "operation": "Update",
                        "time": {"seconds": 1_700_000_000},
                        "fieldsType": "FieldsV1",
                        "fieldsV1": {"Raw": STANDARD.encode(r#"{"f:spec":{}}"#)}}]},
                "spec": {"holderIdentity": "node1", "leaseDurationSeconds": 40,
                    "renewTime": {"seconds": 1_700_000_000, "nanos": 123_456_789},
                    "acquireTime": {}}}),
        );
        assert_eq!(
            decode(&b).unwrap(),
            json!({"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
                "metadata": {
                    "name": "node1", "namespace": "kube-node-lease",
                    "creationTimestamp": "2023-11-14T22:13:20Z",
                    "deletionTimestamp": "1970-01-01T00:00:00Z",
                    "deletionGracePeriodSeconds": 0,
                    "finalizers": ["f"],
                    "ownerReferences": [{"apiVersion": "v1", "kind": "Node", "name": "node1",
                        "uid": "u-1", "controller": false}],
                    "managedFields": [{"manager": "kubelet", "operation": "Update",
                        "time": "2023-11-14T22:13:20Z", "fieldsType": "FieldsV1",
                        "fieldsV1": {"f:spec": {}}}]},
                "spec": {"holderIdentity": "node1", "leaseDurationSeconds": 40,
                    "renewTime": "2023-11-14T22:13:20.123456Z"}})
        );
    }

    #[test]
    fn decodes_an_endpointslice_and_a_node() {
        let b = body(
            "discovery.k8s.io/v1",
            "EndpointSlice",
            json!({"metadata": {"name": "web-abc", "labels": {"kubernetes.io/service-name": "web"}},
                "addressType": "IPv4",
                "endpoints": [{"addresses": ["10.0.0.1"], "conditions": {"ready": false},
                    "nodeName": "n1"}],
                "ports": [{"name": "", "port": 8080, "protocol": "TCP"}]}),
        );
        assert_eq!(
            decode(&b).unwrap(),
            json!({"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
                "metadata": {"name": "web-abc", "labels": {"kubernetes.io/service-name": "web"}},
                "addressType": "IPv4",
                "endpoints": [{"addresses": ["10.0.0.1"], "conditions": {"ready": false},
                    "nodeName": "n1"}],
                "ports": [{"name": "", "port": 8080, "protocol": "TCP"}]})
        );
        let b = body(
            "v1",
            "Node",
            json!({"metadata": {"name": "n1"},
                "spec": {"podCIDR": "10.0.1.0/24", "unschedulable": false},
                "status": {"capacity": {"cpu": {"string": "4"}, "pods": {"string": "110"}},
                    "addresses": [{"type": "InternalIP", "address": "192.168.0.10"}],
                    "conditions": [{"type": "Ready", "status": "True",
                        "lastHeartbeatTime": {"seconds": 86_400}}]}}),
        );
        assert_eq!(
            decode(&b).unwrap(),
            json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": "n1"},
                "spec": {"podCIDR": "10.0.1.0/24"},
                "status": {"capacity": {"cpu": "4", "pods": "110"},
                    "addresses": [{"type": "InternalIP", "address": "192.168.0.10"}],
                    "conditions": [{"type": "Ready", "status": "True",
                        "lastHeartbeatTime": "1970-01-02T00:00:00Z"}]}})
        );
    }

    #[test]
    fn refuses_malformed_objects_with_the_kind_named() {
        let err = decode(&envelope("v1", "ConfigMap", b"\x0a\xff", "")).unwrap_err();
        assert!(
            matches!(&err, Error::Malformed(m) if m.starts_with("ConfigMap: ")),
            "{err}"
        );
        assert_eq!(
            decode(&envelope("v1", "ConfigMap", b"", "gzip")),
            Err(Error::ContentEncoding("gzip".into()))
        );
        // A RawExtension must hold JSON.
        let b = body(
            "apps/v1",
            "ControllerRevision",
            json!({"data": {"raw": "AQ=="}}),
        );
        assert!(matches!(decode(&b), Err(Error::Malformed(m)) if m.contains("RawExtension")));
        // A timestamp Go cannot print.
        let b = body(
            "v1",
            "Namespace",
            json!({"metadata": {"creationTimestamp": {"seconds": 1e15}}}),
        );
        assert!(matches!(decode(&b), Err(Error::Malformed(m)) if m.contains("timestamp")));
    }

    #[test]
    fn never_panics_on_truncated_or_corrupted_bodies() {
        let bodies = [
            fixture!("deployment"),
            fixture!("rolebinding"),
            fixture!("secret-docker-registry"),
        ];
        for body in bodies {
            for len in 0..body.len() {
                let _ = decode(&body[..len]);
            }
            for i in 0..body.len() {
                for flip in [0x01, 0x80, 0xff] {
                    let mut b = body.to_vec();
                    b[i] ^= flip;
                    let _ = decode(&b);
                }
            }
        }
        // Cut inside the object: the envelope's raw field runs past the end.
        let deployment = fixture!("deployment");
        assert!(matches!(
            decode(&deployment[..deployment.len() - 20]),
            Err(Error::Malformed(_))
        ));
    }

    #[test]
    fn formats_timestamps_like_go() {
        assert_eq!(rfc3339(0, None).unwrap(), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(951_782_400, None).unwrap(), "2000-02-29T00:00:00Z");
        assert_eq!(
            rfc3339(-1, Some(500_000)).unwrap(),
            "1969-12-31T23:59:59.000500Z"
        );
        assert_eq!(
            rfc3339(253_402_300_799, None).unwrap(),
            "9999-12-31T23:59:59Z"
        );
        assert!(rfc3339(253_402_300_800, None).is_err());
        assert!(rfc3339(i64::MIN, None).is_err());
        assert!(rfc3339(i64::MAX, Some(0)).is_err());
    }
}
