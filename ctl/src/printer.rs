//! Turning API answers into text: server-side Tables aligned as kubectl's tabwriter aligns
//! them, and the `-o` formats (`wide`, `yaml`, `json`, `name`, `jsonpath=...`).

use std::collections::BTreeMap;
use std::str::FromStr;

use berth_api::ResourceInfo;
use serde_json::{json, Value};

use crate::client::kind_group;
use crate::error::{Error, Result};
use crate::jsonpath::Template;

/// What `-o` asked for.
#[derive(Debug, Clone, PartialEq)]
pub enum Format {
    Table,
    Wide,
    Json,
    Yaml,
    Name,
    JsonPath(Template),
}

impl Format {
    /// Whether rows come from a server-side Table.
    pub fn is_table(&self) -> bool {
        matches!(self, Format::Table | Format::Wide)
    }
}

impl FromStr for Format {
    type Err = Error;

    fn from_str(s: &str) -> Result<Format> {
        match s {
            "" => Ok(Format::Table),
            "wide" => Ok(Format::Wide),
            "json" => Ok(Format::Json),
            "yaml" => Ok(Format::Yaml),
            "name" => Ok(Format::Name),
            _ => {
                if let Some(template) = s
                    .strip_prefix("jsonpath=")
                    .or_else(|| s.strip_prefix("jsonpath-as-text="))
                {
                    let template = strip_quotes(template);
                    Ok(Format::JsonPath(Template::parse(template)?))
                } else {
                    Err(Error::Usage(format!(
                        "unable to match a printer suitable for the output format {s:?}, allowed formats are: json, jsonpath, name, wide, yaml"
                    )))
                }
            }
        }
    }
}

fn strip_quotes(s: &str) -> &str {
    for q in ['\'', '"'] {
        if let Some(inner) = s.strip_prefix(q).and_then(|s| s.strip_suffix(q)) {
            return inner;
        }
    }
    s
}

/// How to lay out a Table.
#[derive(Debug, Clone, Default)]
pub struct TableOptions {
    /// Show priority-1 columns (`-o wide`).
    pub wide: bool,
    /// Prepend a NAMESPACE column (`-A`).
    pub namespace: bool,
    /// Append a LABELS column (`--show-labels`).
    pub labels: bool,
    /// Prefix names with `kind.group/` (several kinds listed).
    pub kind_prefix: Option<String>,
}

/// The columns of a Table that are shown, and how rows map onto them.
#[derive(Debug, Clone)]
pub struct TableLayout {
    /// Indexes into each row's `cells`.
    shown: Vec<usize>,
    /// Which of the shown columns holds the name.
    name_column: Option<usize>,
    headers: Vec<String>,
    options: TableOptions,
}

impl TableLayout {
    /// The layout of a Table's `columnDefinitions`.
    pub fn new(column_definitions: &Value, options: TableOptions) -> TableLayout {
        let mut shown = Vec::new();
        let mut headers = Vec::new();
        let mut name_column = None;
        for (i, column) in column_definitions
            .as_array()
            .map(Vec::as_slice)
            .unwrap_or_default()
            .iter()
            .enumerate()
        {
            let priority = column["priority"].as_i64().unwrap_or(0);
            if priority > 0 && !options.wide {
                continue;
            }
            if column["format"] == "name" && name_column.is_none() {
                name_column = Some(shown.len());
            }
            shown.push(i);
            headers.push(
                column["name"]
                    .as_str()
                    .unwrap_or_default()
                    .to_ascii_uppercase(),
            );
        }
        let name_column = name_column.or((!shown.is_empty()).then_some(0));
        let mut all_headers = Vec::new();
        if options.namespace {
            all_headers.push("NAMESPACE".to_string());
        }
        all_headers.extend(headers);
        if options.labels {
            all_headers.push("LABELS".to_string());
        }
        TableLayout {
            shown,
            name_column,
            headers: all_headers,
            options,
        }
    }

    pub fn headers(&self) -> &[String] {
        &self.headers
    }

    /// The printed cells of one Table row.
    pub fn cells(&self, row: &Value) -> Vec<String> {
        let metadata = &row["object"]["metadata"];
        let mut out = Vec::new();
        if self.options.namespace {
            out.push(
                metadata["namespace"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string(),
            );
        }
        for (position, index) in self.shown.iter().enumerate() {
            let mut text = cell_text(&row["cells"][*index]);
            if Some(position) == self.name_column {
                if let Some(prefix) = &self.options.kind_prefix {
                    text = format!("{prefix}/{text}");
                }
            }
            out.push(text);
        }
        if self.options.labels {
            out.push(labels_text(&metadata["labels"]));
        }
        out
    }

    /// The printed rows of a whole Table.
    pub fn rows(&self, table: &Value) -> Vec<Vec<String>> {
        table["rows"]
            .as_array()
            .map(|rows| rows.iter().map(|r| self.cells(r)).collect())
            .unwrap_or_default()
    }
}

fn cell_text(cell: &Value) -> String {
    match cell {
        Value::String(s) => s.clone(),
        Value::Null => "<none>".to_string(),
        other => other.to_string(),
    }
}

/// `a=1,b=2`, sorted by key, or `<none>`.
pub fn labels_text(labels: &Value) -> String {
    match labels.as_object() {
        Some(map) if !map.is_empty() => {
            let sorted: BTreeMap<&String, &Value> = map.iter().collect();
            sorted
                .iter()
                .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or_default()))
                .collect::<Vec<_>>()
                .join(",")
        }
        _ => "<none>".to_string(),
    }
}

/// Aligns rows into columns as kubectl's tabwriter does (three spaces of padding, a minimum
/// cell width of six); widths only grow, so a watch keeps its columns steady.
#[derive(Debug, Clone, Default)]
pub struct Aligner {
    widths: Vec<usize>,
}

impl Aligner {
    /// Widens the columns to fit these rows.
    pub fn fit(&mut self, rows: &[Vec<String>]) {
        for row in rows {
            if self.widths.len() < row.len() {
                self.widths.resize(row.len(), 0);
            }
            for (i, cell) in row.iter().enumerate() {
                let width = (cell.chars().count() + 3).max(6);
                self.widths[i] = self.widths[i].max(width);
            }
        }
    }

    /// One aligned line (no trailing spaces).
    pub fn line(&mut self, row: &[String]) -> String {
        self.fit(std::slice::from_ref(&row.to_vec()));
        let mut out = String::new();
        for (i, cell) in row.iter().enumerate() {
            out.push_str(cell);
            if i + 1 < row.len() {
                let pad = self.widths[i] - cell.chars().count();
                out.extend(std::iter::repeat_n(' ', pad));
            }
        }
        out.trim_end().to_string()
    }
}

/// A whole table as text, one line per row, the header first.
pub fn render_table(headers: &[String], rows: &[Vec<String>]) -> String {
    let mut all = vec![headers.to_vec()];
    all.extend(rows.iter().cloned());
    let mut aligner = Aligner::default();
    aligner.fit(&all);
    let mut out = String::new();
    for row in &all {
        out.push_str(&aligner.line(row));
        out.push('\n');
    }
    out
}

/// Adds `apiVersion` and `kind` to an object read from a list (whose items may lack them).
pub fn with_type(mut object: Value, info: &ResourceInfo) -> Value {
    if let Value::Object(map) = &mut object {
        if !map.contains_key("apiVersion") || !map.contains_key("kind") {
            let mut typed = serde_json::Map::new();
            typed.insert("apiVersion".into(), Value::String(info.api_version()));
            typed.insert("kind".into(), Value::String(info.kind.to_string()));
            typed.extend(std::mem::take(map));
            *map = typed;
        }
    }
    object
}

/// kubectl's `List` of several objects.
pub fn list_of(items: Vec<Value>) -> Value {
    json!({"apiVersion": "v1", "kind": "List", "items": items, "metadata": {"resourceVersion": ""}})
}

/// `kind.group/name` of an object of a kind.
pub fn object_name(info: &ResourceInfo, object: &Value) -> String {
    format!(
        "{}/{}",
        kind_group(info),
        object["metadata"]["name"].as_str().unwrap_or_default()
    )
}

/// An object (or a `List`) in a non-table format.
pub fn render_object(format: &Format, value: &Value) -> Result<String> {
    Ok(match format {
        Format::Json => {
            let mut text = serde_json::to_string_pretty(value).map_err(|e| Error::Decode {
                what: "json output".into(),
                message: e.to_string(),
            })?;
            text.push('\n');
            text
        }
        Format::Yaml => to_yaml(value)?,
        Format::JsonPath(template) => template.render(value),
        Format::Name => {
            let items = match value["kind"].as_str() {
                Some("List") => value["items"].as_array().cloned().unwrap_or_default(),
                _ => vec![value.clone()],
            };
            let mut out = String::new();
            for item in items {
                let kind = item["kind"].as_str().unwrap_or_default();
                let api_version = item["apiVersion"].as_str().unwrap_or_default();
                let name = item["metadata"]["name"].as_str().unwrap_or_default();
                match berth_api::registry::by_api_version_kind(api_version, kind) {
                    Some(info) => out.push_str(&format!("{}/{name}\n", kind_group(info))),
                    None => out.push_str(&format!("{}/{name}\n", kind.to_ascii_lowercase())),
                }
            }
            out
        }
        Format::Table | Format::Wide => {
            return Err(Error::Usage("a table needs a server-side Table".into()))
        }
    })
}

/// How long ago `then` was, as Kubernetes prints ages: `45s`, `5m`, `3h`, `2d`.
pub fn human_age(now: jiff::Timestamp, then: jiff::Timestamp) -> String {
    let seconds = now.as_second().saturating_sub(then.as_second()).max(0);
    match seconds {
        s if s < 120 => format!("{s}s"),
        s if s < 3600 * 3 => format!("{}m", s / 60),
        s if s < 86400 * 2 => format!("{}h", s / 3600),
        s if s < 86400 * 365 => format!("{}d", s / 86400),
        s => format!("{}y", s / (86400 * 365)),
    }
}

pub fn to_yaml(value: &Value) -> Result<String> {
    serde_yaml_ng::to_string(value).map_err(|e| Error::Decode {
        what: "yaml output".into(),
        message: e.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A Table as the API server answers `GET /apis/apps/v1/deployments` with it.
    fn deployments_table() -> Value {
        serde_json::from_str(
            r#"{"kind":"Table","apiVersion":"meta.k8s.io/v1","metadata":{"resourceVersion":"41"},
            "columnDefinitions":[
              {"name":"Name","type":"string","format":"name","description":"","priority":0},
              {"name":"Ready","type":"string","format":"","description":"","priority":0},
              {"name":"Up-to-date","type":"integer","format":"","description":"","priority":0},
              {"name":"Available","type":"integer","format":"","description":"","priority":0},
              {"name":"Age","type":"string","format":"","description":"","priority":0},
              {"name":"Containers","type":"string","format":"","description":"","priority":1},
              {"name":"Images","type":"string","format":"","description":"","priority":1},
              {"name":"Selector","type":"string","format":"","description":"","priority":1}],
            "rows":[
              {"cells":["web","2/2",2,2,"5m","nginx","nginx:1.27","app=web"],
               "object":{"kind":"PartialObjectMetadata","apiVersion":"meta.k8s.io/v1",
                 "metadata":{"name":"web","namespace":"default","labels":{"tier":"front","app":"web"}}}},
              {"cells":["api-server","0/1",0,0,"12s","api","api:v2","app=api"],
               "object":{"kind":"PartialObjectMetadata","apiVersion":"meta.k8s.io/v1",
                 "metadata":{"name":"api-server","namespace":"prod"}}}]}"#,
        )
        .unwrap()
    }

    #[test]
    fn default_columns_hide_priority_one() {
        let table = deployments_table();
        let layout = TableLayout::new(&table["columnDefinitions"], TableOptions::default());
        let text = render_table(layout.headers(), &layout.rows(&table));
        assert_eq!(
            text,
            "NAME         READY   UP-TO-DATE   AVAILABLE   AGE\n\
             web          2/2     2            2           5m\n\
             api-server   0/1     0            0           12s\n"
        );
    }

    #[test]
    fn wide_namespace_labels_and_kind_prefix() {
        let table = deployments_table();
        let options = TableOptions {
            wide: true,
            namespace: true,
            labels: true,
            kind_prefix: Some("deployment.apps".into()),
        };
        let layout = TableLayout::new(&table["columnDefinitions"], options);
        assert_eq!(
            layout.headers(),
            [
                "NAMESPACE",
                "NAME",
                "READY",
                "UP-TO-DATE",
                "AVAILABLE",
                "AGE",
                "CONTAINERS",
                "IMAGES",
                "SELECTOR",
                "LABELS"
            ]
        );
        let rows = layout.rows(&table);
        assert_eq!(
            rows[0],
            [
                "default",
                "deployment.apps/web",
                "2/2",
                "2",
                "2",
                "5m",
                "nginx",
                "nginx:1.27",
                "app=web",
                "app=web,tier=front"
            ]
        );
        assert_eq!(rows[1][0], "prod");
        assert_eq!(rows[1][9], "<none>");
    }

    #[test]
    fn aligner_keeps_columns_for_later_rows() {
        let mut aligner = Aligner::default();
        let header = vec!["NAME".to_string(), "DATA".to_string(), "AGE".to_string()];
        aligner.fit(std::slice::from_ref(&header));
        assert_eq!(aligner.line(&header), "NAME   DATA   AGE");
        let row = vec!["first".to_string(), "1".to_string(), "2s".to_string()];
        assert_eq!(aligner.line(&row), "first   1      2s");
    }

    #[test]
    fn output_formats_parse() {
        assert_eq!("wide".parse::<Format>().unwrap(), Format::Wide);
        assert_eq!("yaml".parse::<Format>().unwrap(), Format::Yaml);
        assert!(matches!(
            "jsonpath='{.items[*].metadata.name}'".parse::<Format>(),
            Ok(Format::JsonPath(_))
        ));
        let err = "go-template={{.x}}".parse::<Format>().unwrap_err();
        assert!(err.to_string().contains("go-template"), "{err}");
    }

    #[test]
    fn name_format_uses_kind_and_group() {
        let info = berth_api::registry::resolve("deploy").unwrap();
        let item = with_type(json!({"metadata": {"name": "web"}}), info);
        assert_eq!(item["apiVersion"], "apps/v1");
        let text = render_object(&Format::Name, &list_of(vec![item])).unwrap();
        assert_eq!(text, "deployment.apps/web\n");
    }
}
