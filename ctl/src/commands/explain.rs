//! `kctl explain TYPE[.field...]`: a kind's or a field's documentation from the server's
//! OpenAPI v3 documents (`/openapi/v3`, then the group-version's document).

use serde_json::Value;

use crate::client::{self, Cluster};
use crate::error::{Error, Result};
use crate::output::Output;
use crate::GlobalArgs;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// `TYPE` or `TYPE.field.field`, e.g. `pod.spec.containers`.
    pub path: String,
    /// Print every field below, recursively, names and types only.
    #[arg(long)]
    pub recursive: bool,
}

pub async fn run(args: Args, global: &GlobalArgs, out: &mut Output) -> Result<()> {
    let (kind_name, fields) = match args.path.split_once('.') {
        Some((kind, rest)) => (kind, rest.split('.').collect::<Vec<_>>()),
        None => (args.path.as_str(), Vec::new()),
    };
    let info = client::resolve(kind_name)?;
    let cluster = global.cluster().await?;
    let document = group_version_document(&cluster, info).await?;
    let text = explain(
        &document,
        info.group,
        info.version,
        info.kind,
        &fields,
        args.recursive,
    )?;
    out.text(&text)
}

async fn group_version_document(
    cluster: &Cluster,
    info: &berth_api::ResourceInfo,
) -> Result<Value> {
    let root = cluster.get("/openapi/v3").await?;
    let key = client::group_version_path(info)
        .trim_start_matches('/')
        .to_string();
    let url = root["paths"][&key]["serverRelativeURL"]
        .as_str()
        .ok_or_else(|| Error::Decode {
            what: "/openapi/v3".into(),
            message: format!("no document for {key}"),
        })?
        .to_string();
    cluster.get(&url).await
}

/// The text kubectl prints for `explain`, from a group-version's OpenAPI v3 document.
pub fn explain(
    document: &Value,
    group: &str,
    version: &str,
    kind: &str,
    fields: &[&str],
    recursive: bool,
) -> Result<String> {
    let schemas = &document["components"]["schemas"];
    let root = schemas
        .as_object()
        .and_then(|all| {
            all.values().find(|schema| {
                schema["x-kubernetes-group-version-kind"]
                    .as_array()
                    .is_some_and(|gvks| {
                        gvks.iter().any(|g| {
                            g["group"].as_str().unwrap_or_default() == group
                                && g["version"] == version
                                && g["kind"] == kind
                        })
                    })
            })
        })
        .ok_or_else(|| Error::Decode {
            what: "openapi".into(),
            message: format!("no schema for kind {kind}"),
        })?;
    let mut schema = root.clone();
    let mut type_name = kind.to_string();
    let mut walked = Vec::new();
    for field in fields {
        let element = element_schema(&schema, schemas);
        let property = element["properties"][*field].clone();
        if property.is_null() {
            walked.push(*field);
            return Err(Error::Usage(format!(
                "field \"{}\" does not exist",
                walked.join(".")
            )));
        }
        walked.push(field);
        type_name = type_of(&property);
        schema = property;
    }
    let mut out = format!(
        "KIND:       {kind}\nVERSION:    {}\n\n",
        if group.is_empty() {
            version.to_string()
        } else {
            format!("{group}/{version}")
        }
    );
    if let Some(last) = fields.last() {
        out.push_str(&format!("FIELD: {last} <{type_name}>\n\n"));
    }
    let description = description_of(&schema, schemas);
    out.push_str("DESCRIPTION:\n");
    out.push_str(&wrap(
        if description.is_empty() {
            "<empty>"
        } else {
            &description
        },
        4,
    ));
    let element = element_schema(&schema, schemas);
    if let Some(properties) = element["properties"].as_object() {
        out.push_str("\nFIELDS:\n");
        if recursive {
            recurse(&element, schemas, 1, &mut out, &mut Vec::new());
        } else {
            let required = required_of(&element);
            for (name, property) in properties {
                let flag = if required.contains(name) {
                    " -required-"
                } else {
                    ""
                };
                out.push_str(&format!("  {name}\t<{}>{flag}\n", type_of(property)));
                let d = description_of(property, schemas);
                if !d.is_empty() {
                    out.push_str(&wrap(&d, 4));
                }
                out.push('\n');
            }
        }
    }
    Ok(out)
}

fn required_of(schema: &Value) -> Vec<String> {
    schema["required"]
        .as_array()
        .map(|r| {
            r.iter()
                .filter_map(|s| s.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

fn recurse(
    schema: &Value,
    schemas: &Value,
    depth: usize,
    out: &mut String,
    seen: &mut Vec<String>,
) {
    let Some(properties) = schema["properties"].as_object() else {
        return;
    };
    for (name, property) in properties {
        out.push_str(&format!(
            "{}{name}\t<{}>\n",
            "  ".repeat(depth),
            type_of(property)
        ));
        let reference = reference_of(property);
        if let Some(r) = &reference {
            if seen.contains(r) {
                continue;
            }
            seen.push(r.clone());
        }
        recurse(
            &element_schema(property, schemas),
            schemas,
            depth + 1,
            out,
            seen,
        );
        if reference.is_some() {
            seen.pop();
        }
    }
}

/// The schema name a property refers to, through `allOf`, `items` and
/// `additionalProperties`.
fn reference_of(schema: &Value) -> Option<String> {
    if let Some(r) = schema["$ref"].as_str() {
        return Some(r.rsplit('/').next().unwrap_or(r).to_string());
    }
    if let Some(first) = schema["allOf"].get(0) {
        return reference_of(first);
    }
    if schema["items"].is_object() {
        return reference_of(&schema["items"]);
    }
    if schema["additionalProperties"].is_object() {
        return reference_of(&schema["additionalProperties"]);
    }
    None
}

/// The object schema fields are looked up in: the referred schema, an array's items' or a
/// map's values'.
fn element_schema(schema: &Value, schemas: &Value) -> Value {
    match reference_of(schema) {
        Some(name) => schemas[&name].clone(),
        None => schema.clone(),
    }
}

fn description_of(schema: &Value, schemas: &Value) -> String {
    match schema["description"].as_str() {
        Some(d) => d.to_string(),
        None => element_schema(schema, schemas)["description"]
            .as_str()
            .unwrap_or_default()
            .to_string(),
    }
}

/// kubectl's type names: `string`, `integer`, `[]Container`, `map[string]string`, `Object`.
fn type_of(schema: &Value) -> String {
    if let Some(r) = schema["$ref"]
        .as_str()
        .or_else(|| schema["allOf"][0]["$ref"].as_str())
    {
        let name = r.rsplit('/').next().unwrap_or(r);
        return name.rsplit('.').next().unwrap_or(name).to_string();
    }
    match schema["type"].as_str() {
        Some("array") => format!("[]{}", type_of(&schema["items"])),
        Some("object") if schema["additionalProperties"].is_object() => {
            format!("map[string]{}", type_of(&schema["additionalProperties"]))
        }
        Some("object") | None => "Object".to_string(),
        Some(t) => t.to_string(),
    }
}

/// Wraps text at 80 columns, each line indented.
fn wrap(text: &str, indent: usize) -> String {
    let pad = " ".repeat(indent);
    let mut out = String::new();
    for paragraph in text.split('\n') {
        let mut line = String::new();
        for word in paragraph.split_whitespace() {
            if !line.is_empty() && pad.len() + line.len() + 1 + word.len() > 80 {
                out.push_str(&format!("{pad}{line}\n"));
                line.clear();
            }
            if !line.is_empty() {
                line.push(' ');
            }
            line.push_str(word);
        }
        out.push_str(format!("{pad}{line}").trim_end());
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn document() -> Value {
        json!({"components": {"schemas": {
            "io.k8s.api.core.v1.Pod": {
                "description": "Pod is a collection of containers.",
                "type": "object",
                "x-kubernetes-group-version-kind": [{"group": "", "version": "v1", "kind": "Pod"}],
                "properties": {
                    "spec": {"allOf": [{"$ref": "#/components/schemas/io.k8s.api.core.v1.PodSpec"}],
                             "description": "Specification of the desired behavior of the pod."}
                }
            },
            "io.k8s.api.core.v1.PodSpec": {
                "type": "object",
                "required": ["containers"],
                "properties": {
                    "containers": {"type": "array", "description": "List of containers.",
                                   "items": {"allOf": [{"$ref": "#/components/schemas/io.k8s.api.core.v1.Container"}]}},
                    "nodeSelector": {"type": "object", "additionalProperties": {"type": "string"}}
                }
            },
            "io.k8s.api.core.v1.Container": {
                "type": "object", "required": ["name"],
                "description": "A single application container.",
                "properties": {
                    "name": {"type": "string", "description": "Name of the container."},
                    "args": {"type": "array", "items": {"type": "string"}}
                }
            }
        }}})
    }

    #[test]
    fn explains_a_nested_field() {
        let text = explain(&document(), "", "v1", "Pod", &["spec", "containers"], false).unwrap();
        assert!(
            text.starts_with(
                "KIND:       Pod\nVERSION:    v1\n\nFIELD: containers <[]Container>\n"
            ),
            "{text}"
        );
        assert!(
            text.contains("DESCRIPTION:\n    List of containers.\n"),
            "{text}"
        );
        assert!(
            text.contains("  name\t<string> -required-\n    Name of the container.\n"),
            "{text}"
        );
        assert!(text.contains("  args\t<[]string>\n"), "{text}");
        let spec = explain(&document(), "", "v1", "Pod", &["spec"], false).unwrap();
        assert!(
            spec.contains("  nodeSelector\t<map[string]string>"),
            "{spec}"
        );
        let all = explain(&document(), "", "v1", "Pod", &[], true).unwrap();
        assert!(
            all.contains(
                "  spec\t<PodSpec>\n    containers\t<[]Container>\n      args\t<[]string>\n"
            ),
            "{all}"
        );
        let err = explain(&document(), "", "v1", "Pod", &["spec", "nope"], false).unwrap_err();
        assert_eq!(err.to_string(), "field \"spec.nope\" does not exist");
    }
}
