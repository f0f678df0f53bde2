//! Server-side printing: the `meta.k8s.io/v1` `Table` kube-apiserver 1.32 returns when a client
//! asks for `Accept: application/json;as=Table;v=v1;g=meta.k8s.io`, as `kubectl get` does.
//!
//! kubectl prints the cells as given, so every column of `kubectl get` (and of `-o wide`, the
//! columns of priority 1) is computed here, following Kubernetes' printers
//! (`pkg/printers/internalversion/printers.go`; one function per kind in `table/printers.rs`).
//! As in kube-apiserver, the wide columns are always filled and kubectl hides them unless
//! `-o wide`.
//!
//! Start with [`to_table`] for a list or a single object, and [`table_event`] for the one-row
//! Table each event of a `kubectl get -w` watch carries.

mod printers;

use berth_api::ResourceInfo;
use jiff::{SignedDuration, Timestamp};
use serde_json::{json, Map, Value};
use thiserror::Error;

/// Errors reading table options from a request.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum Error {
    #[error("includeObject {value:?} is not one of None, Metadata, Object")]
    InvalidIncludeObject { value: String },
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What each row's `object` holds: `?includeObject=` of `meta.k8s.io/v1` `TableOptions`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum IncludeObject {
    /// `null`.
    None,
    /// A `PartialObjectMetadata` with the object's `metadata` (the default, and what kubectl
    /// needs for `-A`'s NAMESPACE column and `--show-labels`).
    #[default]
    Metadata,
    /// The whole object, `apiVersion` and `kind` included.
    Object,
}

impl IncludeObject {
    /// Parses the `includeObject` query parameter; an empty value is the default.
    pub fn from_query(value: &str) -> Result<Self> {
        match value {
            "" | "Metadata" => Ok(IncludeObject::Metadata),
            "None" => Ok(IncludeObject::None),
            "Object" => Ok(IncludeObject::Object),
            other => Err(Error::InvalidIncludeObject {
                value: other.to_string(),
            }),
        }
    }
}

/// A `meta.k8s.io/v1` `Table` of `objects`, all of the kind `info`, as kube-apiserver prints
/// them at time `now`.
///
/// `list_resource_version` becomes `metadata.resourceVersion` (the list's, from which a
/// `?watch=true` follows on); when it is `None` and there is exactly one object (a GET of one
/// name), the object's own `resourceVersion` is used, as Kubernetes does. A paginated list sets
/// `metadata.continue` on the returned value itself.
pub fn to_table(
    info: &ResourceInfo,
    objects: &[&Value],
    list_resource_version: Option<&str>,
    now: Timestamp,
    include_object: IncludeObject,
) -> Value {
    let printer = printers::for_kind(info);
    let rows: Vec<Value> = objects
        .iter()
        .map(|obj| row(info, printer, obj, now, include_object))
        .collect();
    let resource_version = match (list_resource_version, objects) {
        (Some(rv), _) => Some(rv.to_string()),
        (None, [only]) => resource_version(only).map(str::to_string),
        (None, _) => None,
    };
    table(resource_version, Some(column_definitions_of(printer)), rows)
}

/// The one-row Table of a watch event for `object` (the `object` of
/// `{"type": "MODIFIED", "object": <Table>}`), its `metadata.resourceVersion` the object's.
/// `columnDefinitions` is `null` unless `with_columns`: kubectl reads them from the first event
/// of a stream and ignores them after.
pub fn table_event(
    info: &ResourceInfo,
    object: &Value,
    with_columns: bool,
    now: Timestamp,
    include_object: IncludeObject,
) -> Value {
    let printer = printers::for_kind(info);
    let columns = with_columns.then(|| column_definitions_of(printer));
    let rows = vec![row(info, printer, object, now, include_object)];
    table(resource_version(object).map(str::to_string), columns, rows)
}

/// The `columnDefinitions` of a kind's Table.
pub fn column_definitions(info: &ResourceInfo) -> Value {
    column_definitions_of(printers::for_kind(info))
}

/// Kubernetes' `duration.HumanDuration`: about two significant figures (`45s`, `3m2s`, `12m`,
/// `5h3m`, `2d3h`, `400d`, `2y10d`), `0s` for up to two seconds in the future (clock skew), and
/// `<invalid>` beyond.
pub fn human_duration(d: SignedDuration) -> String {
    let seconds = d.as_secs();
    if seconds < -1 {
        return "<invalid>".to_string();
    } else if seconds < 0 {
        return "0s".to_string();
    } else if seconds < 60 * 2 {
        return format!("{seconds}s");
    }
    let minutes = seconds / 60;
    if minutes < 10 {
        let s = seconds % 60;
        if s == 0 {
            return format!("{minutes}m");
        }
        return format!("{minutes}m{s}s");
    } else if minutes < 60 * 3 {
        return format!("{minutes}m");
    }
    let hours = seconds / 3600;
    if hours < 8 {
        let m = minutes % 60;
        if m == 0 {
            return format!("{hours}h");
        }
        return format!("{hours}h{m}m");
    } else if hours < 48 {
        return format!("{hours}h");
    } else if hours < 24 * 8 {
        let h = hours % 24;
        if h == 0 {
            return format!("{}d", hours / 24);
        }
        return format!("{}d{h}h", hours / 24);
    } else if hours < 24 * 365 * 2 {
        return format!("{}d", hours / 24);
    } else if hours < 24 * 365 * 8 {
        let days = (hours / 24) % 365;
        if days == 0 {
            return format!("{}y", hours / 24 / 365);
        }
        return format!("{}y{days}d", hours / 24 / 365);
    }
    format!("{}y", hours / 24 / 365)
}

fn table(resource_version: Option<String>, columns: Option<Value>, rows: Vec<Value>) -> Value {
    let mut metadata = Map::new();
    if let Some(rv) = resource_version.filter(|rv| !rv.is_empty()) {
        metadata.insert("resourceVersion".into(), Value::String(rv));
    }
    json!({
        "kind": "Table",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": metadata,
        "columnDefinitions": columns,
        "rows": rows,
    })
}

fn column_definitions_of(printer: &printers::Printer) -> Value {
    printer
        .columns
        .iter()
        .map(|c| {
            json!({
                "name": c.name,
                "type": c.type_,
                "format": c.format,
                "description": c.description.text(),
                "priority": c.priority,
            })
        })
        .collect()
}

fn row(
    info: &ResourceInfo,
    printer: &printers::Printer,
    obj: &Value,
    now: Timestamp,
    include_object: IncludeObject,
) -> Value {
    let printed = (printer.print)(obj, now);
    let mut row = Map::new();
    row.insert("cells".into(), Value::Array(printed.cells));
    if let Some(conditions) = printed.conditions {
        row.insert("conditions".into(), conditions);
    }
    let object = match include_object {
        IncludeObject::None => Value::Null,
        IncludeObject::Metadata => json!({
            "kind": "PartialObjectMetadata",
            "apiVersion": "meta.k8s.io/v1",
            "metadata": obj.get("metadata").cloned().unwrap_or_else(|| json!({})),
        }),
        IncludeObject::Object => {
            let mut full = obj.clone();
            if let Some(map) = full.as_object_mut() {
                map.entry("apiVersion")
                    .or_insert_with(|| Value::String(info.api_version()));
                map.entry("kind")
                    .or_insert_with(|| Value::String(info.kind.to_string()));
            }
            full
        }
    };
    row.insert("object".into(), object);
    Value::Object(row)
}

fn resource_version(obj: &Value) -> Option<&str> {
    obj.pointer("/metadata/resourceVersion")?.as_str()
}

#[cfg(test)]
mod tests {
    use berth_api::registry;

    use super::*;

    pub(crate) fn at(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    fn d(secs: i64, nanos: i32) -> SignedDuration {
        SignedDuration::new(secs, nanos)
    }

    #[test]
    fn human_duration_matches_kubernetes() {
        let cases = [
            (d(1, 0), "1s"),
            (d(70, 0), "70s"),
            (d(190, 0), "3m10s"),
            (d(70 * 60, 0), "70m"),
            (d(47 * 3600, 0), "47h"),
            (d(49 * 3600, 0), "2d1h"),
            (d((8 * 24 + 2) * 3600, 0), "8d"),
            (d(367 * 24 * 3600, 0), "367d"),
            (d((365 * 2 * 24 + 25) * 3600, 0), "2y1d"),
            (d((365 * 8 * 24 + 2) * 3600, 0), "8y"),
        ];
        for (duration, want) in cases {
            assert_eq!(human_duration(duration), want, "{duration:?}");
        }
    }

    #[test]
    fn human_duration_boundaries() {
        let ms = |n: i64| SignedDuration::from_millis(n);
        let s = |n: i64| SignedDuration::from_secs(n);
        let cases = [
            (s(-2), "<invalid>"),
            (s(-2) + SignedDuration::from_nanos(1), "0s"),
            (s(0), "0s"),
            (ms(999), "0s"),
            (s(120) - ms(1), "119s"),
            (s(120), "2m"),
            (s(121), "2m1s"),
            (s(600) - ms(1), "9m59s"),
            (s(600), "10m"),
            (s(601), "10m"),
            (s(3 * 3600) - ms(1), "179m"),
            (s(3 * 3600), "3h"),
            (s(3 * 3600 + 60), "3h1m"),
            (s(8 * 3600) - ms(1), "7h59m"),
            (s(8 * 3600), "8h"),
            (s(8 * 3600 + 59 * 60), "8h"),
            (s(48 * 3600) - ms(1), "47h"),
            (s(48 * 3600), "2d"),
            (s(49 * 3600), "2d1h"),
            (s(8 * 24 * 3600) - ms(1), "7d23h"),
            (s(8 * 24 * 3600), "8d"),
            (s(2 * 365 * 24 * 3600) - ms(1), "729d"),
            (s(2 * 365 * 24 * 3600), "2y"),
            (s(2 * 365 * 24 * 3600 + 24 * 3600), "2y1d"),
            (s(8 * 365 * 24 * 3600) - ms(1), "7y364d"),
            (s(8 * 365 * 24 * 3600), "8y"),
            (s(9 * 365 * 24 * 3600), "9y"),
        ];
        for (duration, want) in cases {
            assert_eq!(human_duration(duration), want, "{duration:?}");
        }
    }

    #[test]
    fn include_object_parses_the_query() {
        assert_eq!(IncludeObject::from_query(""), Ok(IncludeObject::Metadata));
        assert_eq!(IncludeObject::from_query("None"), Ok(IncludeObject::None));
        assert_eq!(
            IncludeObject::from_query("Object"),
            Ok(IncludeObject::Object)
        );
        assert_eq!(
            IncludeObject::from_query("all").unwrap_err().to_string(),
            "includeObject \"all\" is not one of None, Metadata, Object"
        );
    }

    fn namespace(name: &str, rv: &str) -> Value {
        json!({
            "metadata": {"name": name, "resourceVersion": rv, "uid": "u-1",
                         "creationTimestamp": "2024-05-01T10:00:00Z", "labels": {"team": "a"}},
            "status": {"phase": "Active"},
        })
    }

    #[test]
    fn a_list_table_has_the_list_resource_version_and_partial_metadata_rows() {
        let info = registry::by_kind("Namespace").unwrap();
        let (a, b) = (namespace("a", "5"), namespace("b", "7"));
        let table = to_table(
            info,
            &[&a, &b],
            Some("1011"),
            at("2024-05-01T10:05:00Z"),
            IncludeObject::default(),
        );
        assert_eq!(table["kind"], "Table");
        assert_eq!(table["apiVersion"], "meta.k8s.io/v1");
        assert_eq!(table["metadata"], json!({"resourceVersion": "1011"}));
        let columns = table["columnDefinitions"].as_array().unwrap();
        let names: Vec<_> = columns
            .iter()
            .map(|c| c["name"].as_str().unwrap())
            .collect();
        assert_eq!(names, ["Name", "Status", "Age"]);
        assert_eq!(columns[0]["format"], "name");
        assert_eq!(columns[0]["priority"], 0);
        assert!(columns[0]["description"]
            .as_str()
            .unwrap()
            .starts_with("Name must be unique within a namespace."));
        assert_eq!(columns[1]["format"], "");
        let rows = table["rows"].as_array().unwrap();
        assert_eq!(rows[0]["cells"], json!(["a", "Active", "5m"]));
        assert_eq!(
            rows[1]["object"],
            json!({
                "kind": "PartialObjectMetadata",
                "apiVersion": "meta.k8s.io/v1",
                "metadata": b["metadata"],
            })
        );
        assert!(rows[0].get("conditions").is_none());
    }

    #[test]
    fn a_single_object_table_takes_its_resource_version() {
        let info = registry::by_kind("Namespace").unwrap();
        let a = namespace("a", "5");
        let now = at("2024-05-01T10:00:30Z");
        let table = to_table(info, &[&a], None, now, IncludeObject::None);
        assert_eq!(table["metadata"]["resourceVersion"], "5");
        assert_eq!(table["rows"][0]["object"], Value::Null);
        let empty = to_table(info, &[], None, now, IncludeObject::None);
        assert_eq!(empty["metadata"], json!({}));
        assert_eq!(empty["rows"], json!([]));
    }

    #[test]
    fn include_object_puts_the_whole_object_with_its_type() {
        let info = registry::by_kind("Namespace").unwrap();
        let a = namespace("a", "5");
        let table = to_table(
            info,
            &[&a],
            None,
            at("2024-05-01T10:00:30Z"),
            IncludeObject::Object,
        );
        let object = &table["rows"][0]["object"];
        assert_eq!(object["kind"], "Namespace");
        assert_eq!(object["apiVersion"], "v1");
        assert_eq!(object["status"]["phase"], "Active");
    }

    #[test]
    fn watch_events_carry_one_row_and_columns_only_when_asked() {
        let info = registry::by_kind("Namespace").unwrap();
        let a = namespace("a", "42");
        let now = at("2024-05-01T10:00:03Z");
        let first = table_event(info, &a, true, now, IncludeObject::Metadata);
        assert_eq!(first["metadata"]["resourceVersion"], "42");
        assert_eq!(first["columnDefinitions"], column_definitions(info));
        assert_eq!(first["rows"].as_array().unwrap().len(), 1);
        let next = table_event(info, &a, false, now, IncludeObject::Metadata);
        assert_eq!(next["columnDefinitions"], Value::Null);
        assert_eq!(next["rows"][0]["cells"], json!(["a", "Active", "3s"]));
    }
}
