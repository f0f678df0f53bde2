//! `kctl describe`: an object's fields as an indented outline (kubectl's generic describer),
//! then its Events, fetched by `involvedObject` name, namespace and uid.

use jiff::Timestamp;
use serde_json::Value;

use crate::client::{self, Cluster};
use crate::commands::parse_targets;
use crate::error::Result;
use crate::output::Output;
use crate::printer::{self, render_table};
use crate::GlobalArgs;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// `TYPE [NAME...]` or `TYPE/NAME...`.
    #[arg(required = true, value_name = "RESOURCE")]
    pub resources: Vec<String>,
    /// Label selector, when no name is given.
    #[arg(short = 'l', long)]
    pub selector: Option<String>,
    /// Across all namespaces, when no name is given.
    #[arg(short = 'A', long)]
    pub all_namespaces: bool,
}

pub async fn run(args: Args, global: &GlobalArgs, out: &mut Output) -> Result<()> {
    let targets = parse_targets(&args.resources)?;
    let cluster = global.cluster().await?;
    let mut first = true;
    for target in targets {
        let namespace = client::scoped(target.info, &cluster.namespace);
        let mut objects = Vec::new();
        if target.names.is_empty() {
            let ns = if args.all_namespaces { None } else { namespace };
            let uri = client::with_query(
                &client::collection_path(target.info, ns),
                &[(
                    "labelSelector",
                    args.selector.as_deref().unwrap_or_default(),
                )],
            );
            let list = cluster.get(&uri).await?;
            objects.extend(list["items"].as_array().cloned().unwrap_or_default());
        } else {
            for name in &target.names {
                objects.push(
                    cluster
                        .get(&client::object_path(target.info, namespace, name))
                        .await?,
                );
            }
        }
        for object in objects {
            let object = printer::with_type(object, target.info);
            let events = events_for(&cluster, target.info.namespaced(), &object).await?;
            if !first {
                out.line("")?;
                out.line("")?;
            }
            first = false;
            out.text(&describe(&object, &events, Timestamp::now()))?;
        }
    }
    Ok(())
}

async fn events_for(cluster: &Cluster, namespaced: bool, object: &Value) -> Result<Vec<Value>> {
    let metadata = &object["metadata"];
    let text = |v: &Value| v.as_str().unwrap_or_default().to_string();
    let namespace = text(&metadata["namespace"]);
    let mut selector = format!(
        "involvedObject.name={},involvedObject.namespace={}",
        text(&metadata["name"]),
        namespace
    );
    if let Some(uid) = metadata["uid"].as_str() {
        selector.push_str(&format!(",involvedObject.uid={uid}"));
    }
    let path = if namespaced {
        format!("/api/v1/namespaces/{namespace}/events")
    } else {
        "/api/v1/events".to_string()
    };
    let list = cluster
        .get(&client::with_query(&path, &[("fieldSelector", &selector)]))
        .await?;
    Ok(list["items"].as_array().cloned().unwrap_or_default())
}

/// The whole description of an object and its events at time `now`.
pub fn describe(object: &Value, events: &[Value], now: Timestamp) -> String {
    let metadata = &object["metadata"];
    let mut out = String::new();
    let mut field = |label: &str, value: String| {
        out.push_str(&format!("{:<14}{value}\n", format!("{label}:")));
    };
    let text = |v: &Value| v.as_str().unwrap_or_default().to_string();
    field("Name", text(&metadata["name"]));
    if let Some(ns) = metadata["namespace"].as_str() {
        field("Namespace", ns.to_string());
    }
    field("Kind", text(&object["kind"]));
    field("API Version", text(&object["apiVersion"]));
    field("Labels", map_lines(&metadata["labels"]));
    field("Annotations", map_lines(&metadata["annotations"]));
    if let Some(created) = metadata["creationTimestamp"].as_str() {
        field("Created", created.to_string());
    }
    if let Some(uid) = metadata["uid"].as_str() {
        field("UID", uid.to_string());
    }
    if let Some(owners) = metadata["ownerReferences"].as_array() {
        let owners: Vec<String> = owners
            .iter()
            .map(|o| format!("{}/{}", text(&o["kind"]), text(&o["name"])))
            .collect();
        field("Controlled By", owners.join(", "));
    }
    if let Some(deleting) = metadata["deletionTimestamp"].as_str() {
        field("Deleting", deleting.to_string());
    }
    if let Value::Object(map) = object {
        for (key, value) in map {
            if matches!(key.as_str(), "apiVersion" | "kind" | "metadata") || is_empty(value) {
                continue;
            }
            outline(&title(key), value, 0, 0, &mut out);
        }
    }
    out.push_str(&events_section(events, now));
    out
}

fn map_lines(value: &Value) -> String {
    match value.as_object() {
        Some(map) if !map.is_empty() => map
            .iter()
            .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or_default()))
            .collect::<Vec<_>>()
            .join(&format!("\n{:14}", "")),
        _ => "<none>".to_string(),
    }
}

fn is_empty(value: &Value) -> bool {
    match value {
        Value::Null => true,
        Value::Object(m) => m.is_empty(),
        Value::Array(a) => a.is_empty(),
        _ => false,
    }
}

/// `camelCase` keys become `Camel Case`, as kubectl's generic describer prints them; keys
/// that are not identifiers (labels, annotations, data keys) stay as they are.
fn title(key: &str) -> String {
    if !key.chars().all(|c| c.is_ascii_alphanumeric()) {
        return key.to_string();
    }
    let mut out = String::new();
    let mut previous: Option<char> = None;
    for c in key.chars() {
        match previous {
            None => out.push(c.to_ascii_uppercase()),
            Some(p) if c.is_ascii_uppercase() && !p.is_ascii_uppercase() => {
                out.push(' ');
                out.push(c);
            }
            Some(_) => out.push(c),
        }
        previous = Some(c);
    }
    out
}

fn scalar(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// The width of the widest scalar field label among an object's fields, for alignment.
fn label_width(map: &serde_json::Map<String, Value>) -> usize {
    map.iter()
        .filter(|(_, v)| !is_empty(v) && !v.is_object() && !v.is_array())
        .map(|(k, _)| title(k).len())
        .max()
        .unwrap_or(0)
}

fn outline(label: &str, value: &Value, depth: usize, width: usize, out: &mut String) {
    let indent = "  ".repeat(depth);
    match value {
        Value::Object(map) => {
            out.push_str(&format!("{indent}{label}:\n"));
            let width = label_width(map);
            for (k, v) in map {
                if !is_empty(v) {
                    outline(&title(k), v, depth + 1, width, out);
                }
            }
        }
        Value::Array(items) if items.iter().all(|i| !i.is_object() && !i.is_array()) => {
            let joined: Vec<String> = items.iter().map(scalar).collect();
            out.push_str(&format!("{indent}{label}:  {}\n", joined.join(", ")));
        }
        Value::Array(items) => {
            out.push_str(&format!("{indent}{label}:\n"));
            for item in items {
                let mut inner = String::new();
                match item {
                    Value::Object(map) => {
                        let width = label_width(map);
                        for (k, v) in map {
                            if !is_empty(v) {
                                outline(&title(k), v, depth + 2, width, &mut inner);
                            }
                        }
                    }
                    other => outline("-", other, depth + 2, 0, &mut inner),
                }
                // The first line of each item carries a dash.
                let dash_at = indent.len() + 2;
                if inner.len() > dash_at + 2 {
                    inner.replace_range(dash_at..dash_at + 2, "- ");
                }
                out.push_str(&inner);
            }
        }
        other => {
            let label = format!("{label}:");
            out.push_str(&format!(
                "{indent}{label:<width$}  {}\n",
                scalar(other),
                width = width + 1
            ));
        }
    }
}

fn events_section(events: &[Value], now: Timestamp) -> String {
    if events.is_empty() {
        return "Events:       <none>\n".to_string();
    }
    let mut sorted: Vec<&Value> = events.iter().collect();
    sorted.sort_by_key(|e| last_seen(e).map(|t| t.as_second()).unwrap_or(0));
    let text = |v: &Value| v.as_str().unwrap_or_default().to_string();
    let headers: Vec<String> = ["Type", "Reason", "Age", "From", "Message"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    let mut rows = vec![headers
        .iter()
        .map(|h| "-".repeat(h.len()))
        .collect::<Vec<_>>()];
    for event in sorted {
        let age = last_seen(event)
            .map(|t| printer::human_age(now, t))
            .unwrap_or_else(|| "<unknown>".to_string());
        let count = event["count"].as_i64().unwrap_or(1);
        let age = match (count > 1, first_seen(event)) {
            (true, Some(first)) => {
                format!("{age} (x{count} over {})", printer::human_age(now, first))
            }
            _ => age,
        };
        let from = event["source"]["component"]
            .as_str()
            .or(event["reportingComponent"].as_str())
            .unwrap_or_default()
            .to_string();
        rows.push(vec![
            text(&event["type"]),
            text(&event["reason"]),
            age,
            from,
            text(&event["message"]).trim().to_string(),
        ]);
    }
    let table = render_table(&headers, &rows);
    let mut out = "Events:\n".to_string();
    for line in table.lines() {
        out.push_str(&format!("  {line}\n"));
    }
    out
}

fn parse_time(value: &Value) -> Option<Timestamp> {
    value.as_str().and_then(|s| s.parse().ok())
}

fn last_seen(event: &Value) -> Option<Timestamp> {
    parse_time(&event["lastTimestamp"])
        .or_else(|| parse_time(&event["eventTime"]))
        .or_else(|| parse_time(&event["firstTimestamp"]))
}

fn first_seen(event: &Value) -> Option<Timestamp> {
    parse_time(&event["firstTimestamp"]).or_else(|| parse_time(&event["eventTime"]))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn describes_fields_and_events() {
        let object = json!({
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "web", "namespace": "default", "labels": {"app": "web"},
                         "uid": "u1", "creationTimestamp": "2024-05-01T10:00:00Z"},
            "spec": {"replicas": 2, "selector": {"matchLabels": {"app": "web"}},
                     "template": {"spec": {"containers": [{"name": "nginx", "image": "nginx:1.27",
                                                           "args": ["-g", "daemon off;"]}]}}},
            "status": {}
        });
        let events = vec![json!({
            "type": "Normal", "reason": "ScalingReplicaSet", "count": 3,
            "firstTimestamp": "2024-05-01T10:00:00Z", "lastTimestamp": "2024-05-01T10:04:00Z",
            "source": {"component": "deployment-controller"},
            "message": "Scaled up replica set web-1 to 2"
        })];
        let now: Timestamp = "2024-05-01T10:05:00Z".parse().unwrap();
        let text = describe(&object, &events, now);
        assert!(
            text.starts_with("Name:         web\nNamespace:    default\n"),
            "{text}"
        );
        assert!(text.contains("Labels:       app=web\n"), "{text}");
        assert!(
            text.contains(
                "Spec:\n  Replicas:  2\n  Selector:\n    Match Labels:\n      App:  web\n"
            ),
            "{text}"
        );
        assert!(text.contains("      Containers:\n        - Args:  -g, daemon off;\n          Image:  nginx:1.27\n          Name:   nginx\n"), "{text}");
        assert!(!text.contains("Status:"), "{text}");
        assert!(text.contains("Events:\n  Type     Reason"), "{text}");
        assert!(
            text.contains("60s (x3 over 5m)   deployment-controller   Scaled up"),
            "{text}"
        );
        let none = describe(&object, &[], now);
        assert!(none.ends_with("Events:       <none>\n"), "{none}");
    }
}
