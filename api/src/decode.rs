//! Manifests: multi-document YAML (`---` separated) and JSON (one object, a stream of objects,
//! or a `List` with `items`) decoded into [`Manifest`]s, each an object with its `apiVersion`
//! and `kind` and where it came from.
//!
//! Errors name the document (1-based, counted as YAML counts them: a `---` starts one, and text
//! before the first `---` is one only if it holds more than comments) and the line within the
//! whole input, with the column when the parser knows it:
//! `document 2 (line 14): missing field "kind"`. Empty documents are skipped.
//!
//! Decoding checks shape only (an object with a kind and an apiVersion); whether the kind is
//! served is [`crate::object::Object::from_value`]'s question.

use std::fmt;

use serde_json::Value;
use thiserror::Error;

use crate::object::{self, json_type, required_str};

/// Where in the input something is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Location {
    /// 1-based document number.
    pub document: usize,
    /// 1-based line in the whole input.
    pub line: usize,
    /// 1-based column, when the parser reports one.
    pub column: Option<usize>,
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.column {
            Some(column) => write!(
                f,
                "document {} (line {}, column {column})",
                self.document, self.line
            ),
            None => write!(f, "document {} (line {})", self.document, self.line),
        }
    }
}

#[derive(Debug, Error)]
pub enum Error {
    /// The text is not YAML or JSON.
    #[error("{at}: {message}")]
    Syntax { at: Location, message: String },
    /// A document is not an object with a kind and an apiVersion.
    #[error("{at}: {source}")]
    Object { at: Location, source: object::Error },
    /// An item of a `List` document is not an object with a kind and an apiVersion.
    #[error("{at}: items[{index}]: {source}")]
    ListItem {
        at: Location,
        index: usize,
        source: object::Error,
    },
}

impl Error {
    pub fn location(&self) -> Location {
        match self {
            Error::Syntax { at, .. } | Error::Object { at, .. } | Error::ListItem { at, .. } => *at,
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// One object from a manifest.
#[derive(Debug, Clone, PartialEq)]
pub struct Manifest {
    pub api_version: String,
    pub kind: String,
    /// The whole object, `apiVersion` and `kind` included.
    pub object: Value,
    /// The 1-based document it came from.
    pub document: usize,
    /// The 1-based line its document starts on.
    pub line: usize,
}

impl Manifest {
    pub fn name(&self) -> Option<&str> {
        self.object
            .pointer("/metadata/name")
            .and_then(Value::as_str)
    }

    pub fn namespace(&self) -> Option<&str> {
        self.object
            .pointer("/metadata/namespace")
            .and_then(Value::as_str)
    }
}

/// Decodes YAML or JSON: input whose first character (after whitespace) is `{` is read as JSON
/// (falling back to YAML, whose flow style also starts with `{`), anything else as YAML.
pub fn decode(input: &str) -> Result<Vec<Manifest>> {
    let input = input.strip_prefix('\u{feff}').unwrap_or(input);
    if input.trim_start().starts_with('{') {
        match decode_json(input) {
            Ok(manifests) => Ok(manifests),
            Err(json_err @ Error::Syntax { .. }) => decode_yaml(input).map_err(|_| json_err),
            Err(other) => Err(other),
        }
    } else {
        decode_yaml(input)
    }
}

/// Decodes one or more JSON values, each a document.
pub fn decode_json(input: &str) -> Result<Vec<Manifest>> {
    let mut manifests = Vec::new();
    let mut stream = serde_json::Deserializer::from_str(input).into_iter::<Value>();
    let mut document = 0;
    loop {
        let offset = stream.byte_offset();
        let Some(next) = stream.next() else {
            break;
        };
        document += 1;
        match next {
            Ok(value) => {
                let rest = &input[offset..];
                let start = offset + (rest.len() - rest.trim_start().len());
                let line = input[..start].matches('\n').count() + 1;
                push_objects(value, document, line, &mut manifests)?;
            }
            Err(e) => {
                let message = e.to_string();
                let suffix = format!(" at line {} column {}", e.line(), e.column());
                let message = message.strip_suffix(&suffix).unwrap_or(&message);
                return Err(Error::Syntax {
                    at: Location {
                        document,
                        line: e.line(),
                        column: Some(e.column()).filter(|c| *c > 0),
                    },
                    message: message.to_string(),
                });
            }
        }
    }
    Ok(manifests)
}

/// One `---`-separated chunk of YAML.
struct Chunk {
    text: String,
    /// The input line its first text line is on.
    first_line: usize,
    /// The first line holding more than blanks and comments, if any.
    content_line: Option<usize>,
    /// Started by `---`: a document even when empty.
    explicit: bool,
}

impl Chunk {
    fn new(first_line: usize, explicit: bool) -> Self {
        Chunk {
            text: String::new(),
            first_line,
            content_line: None,
            explicit,
        }
    }

    fn is_document(&self) -> bool {
        self.explicit || self.content_line.is_some()
    }
}

fn is_content(line: &str) -> bool {
    let t = line.trim();
    !t.is_empty() && !t.starts_with('#')
}

/// `---` or `...` alone, or followed by a blank and more, at the start of a line.
fn is_marker(line: &str, marker: &str) -> bool {
    line.starts_with(marker) && (line.len() == 3 || line[3..].starts_with([' ', '\t']))
}

/// Splits YAML on document markers: `---` starts a document, `...` ends one. A `---` inside a
/// block scalar ends it too, as YAML says. Each chunk keeps one text line per input line, so a
/// line in a chunk maps back to the input by an offset.
fn split_yaml(input: &str) -> Vec<Chunk> {
    let mut chunks = Vec::new();
    let mut cur = Chunk::new(1, false);
    for (i, raw) in input.split('\n').enumerate() {
        let line_no = i + 1;
        let line = raw.strip_suffix('\r').unwrap_or(raw);
        let starts = is_marker(line, "---");
        if starts || is_marker(line, "...") {
            let done = std::mem::replace(&mut cur, Chunk::new(line_no + 1, starts));
            if done.is_document() {
                chunks.push(done);
            }
            let rest = line[3..].trim_start();
            if starts && is_content(rest) {
                // `--- {a: 1}`: the document starts on the marker's line.
                cur.text = format!("{rest}\n");
                cur.first_line = line_no;
                cur.content_line = Some(line_no);
            }
            continue;
        }
        if cur.content_line.is_none() && is_content(line) {
            cur.content_line = Some(line_no);
        }
        cur.text.push_str(line);
        cur.text.push('\n');
    }
    if cur.is_document() {
        chunks.push(cur);
    }
    chunks
}

/// Rewrites the positions libyaml puts in its messages from chunk lines to input lines, and
/// drops the one the error's location already gives.
fn relocate_yaml_message(message: &str, primary: Option<(usize, usize)>, offset: usize) -> String {
    let mut message = message.to_string();
    if let Some((line, column)) = primary {
        let own = format!(" at line {line} column {column}");
        if let Some(at) = message.find(&own) {
            message.replace_range(at..at + own.len(), "");
        }
    }
    let mut out = String::with_capacity(message.len());
    let mut rest = message.as_str();
    while let Some(at) = rest.find("line ") {
        out.push_str(&rest[..at + 5]);
        rest = &rest[at + 5..];
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        match rest[..digits].parse::<usize>() {
            Ok(n) if rest[digits..].starts_with(" column ") => {
                out.push_str(&(n + offset).to_string());
                rest = &rest[digits..];
            }
            _ => {}
        }
    }
    out.push_str(rest);
    out
}

/// Decodes `---`-separated YAML documents.
pub fn decode_yaml(input: &str) -> Result<Vec<Manifest>> {
    let mut manifests = Vec::new();
    for (i, chunk) in split_yaml(input).into_iter().enumerate() {
        let document = i + 1;
        let Some(content_line) = chunk.content_line else {
            continue;
        };
        let offset = chunk.first_line - 1;
        let syntax = |e: serde_yaml_ng::Error| {
            let local = e.location().map(|l| (l.line(), l.column()));
            let (line, column) = match local {
                Some((line, column)) => (line + offset, Some(column)),
                None => (content_line, None),
            };
            Error::Syntax {
                at: Location {
                    document,
                    line,
                    column,
                },
                message: relocate_yaml_message(&e.to_string(), local, offset),
            }
        };
        // Through YAML's own value first: it rejects duplicate keys and resolves `<<` merges.
        let mut yaml: serde_yaml_ng::Value =
            serde_yaml_ng::from_str(&chunk.text).map_err(syntax)?;
        yaml.apply_merge().map_err(syntax)?;
        let value = yaml_to_json(yaml).map_err(|message| Error::Syntax {
            at: Location {
                document,
                line: content_line,
                column: None,
            },
            message,
        })?;
        push_objects(value, document, content_line, &mut manifests)?;
    }
    Ok(manifests)
}

/// Converts a YAML value to JSON as Kubernetes does: scalar keys become strings, tags are
/// dropped, and numbers JSON cannot hold (`.nan`, `.inf`) are errors.
fn yaml_to_json(v: serde_yaml_ng::Value) -> Result<Value, String> {
    use serde_yaml_ng::Value as Yaml;
    Ok(match v {
        Yaml::Null => Value::Null,
        Yaml::Bool(b) => Value::Bool(b),
        Yaml::Number(n) => {
            if let Some(i) = n.as_i64() {
                Value::from(i)
            } else if let Some(u) = n.as_u64() {
                Value::from(u)
            } else {
                n.as_f64()
                    .and_then(serde_json::Number::from_f64)
                    .map(Value::Number)
                    .ok_or_else(|| format!("number {n} cannot be represented in JSON"))?
            }
        }
        Yaml::String(s) => Value::String(s),
        Yaml::Sequence(items) => Value::Array(
            items
                .into_iter()
                .map(yaml_to_json)
                .collect::<Result<_, _>>()?,
        ),
        Yaml::Mapping(map) => {
            let mut out = serde_json::Map::new();
            for (key, value) in map {
                let key = match key {
                    Yaml::String(s) => s,
                    Yaml::Number(n) => n.to_string(),
                    Yaml::Bool(b) => b.to_string(),
                    Yaml::Null => "null".to_string(),
                    Yaml::Sequence(_) | Yaml::Mapping(_) | Yaml::Tagged(_) => {
                        return Err("mapping keys must be strings, numbers or booleans".into())
                    }
                };
                out.insert(key, yaml_to_json(value)?);
            }
            Value::Object(out)
        }
        Yaml::Tagged(tagged) => yaml_to_json(tagged.value)?,
    })
}

fn manifest_of(value: Value, document: usize, line: usize) -> Result<Manifest, object::Error> {
    let obj = value.as_object().ok_or(object::Error::NotAnObject {
        found: json_type(&value),
    })?;
    let kind = required_str(obj, "kind")?.to_string();
    let api_version = required_str(obj, "apiVersion")?.to_string();
    Ok(Manifest {
        api_version,
        kind,
        object: value,
        document,
        line,
    })
}

/// Adds one document's objects: the object itself, or a list's items.
fn push_objects(value: Value, document: usize, line: usize, out: &mut Vec<Manifest>) -> Result<()> {
    let at = Location {
        document,
        line,
        column: None,
    };
    if value.is_null() {
        return Ok(());
    }
    let manifest =
        manifest_of(value, document, line).map_err(|source| Error::Object { at, source })?;
    let is_list = manifest.kind == "List"
        || (manifest.kind.ends_with("List") && manifest.object.get("items").is_some());
    if !is_list {
        out.push(manifest);
        return Ok(());
    }
    let items = match manifest.object.get("items") {
        None | Some(Value::Null) => return Ok(()),
        Some(Value::Array(items)) => items.clone(),
        Some(other) => {
            return Err(Error::Object {
                at,
                source: object::Error::NotAnObject {
                    found: json_type(other),
                },
            })
        }
    };
    for (index, item) in items.into_iter().enumerate() {
        let m = manifest_of(item, document, line).map_err(|source| Error::ListItem {
            at,
            index,
            source,
        })?;
        out.push(m);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kinds(ms: &[Manifest]) -> Vec<(&str, usize, usize)> {
        ms.iter()
            .map(|m| (m.kind.as_str(), m.document, m.line))
            .collect()
    }

    #[test]
    fn multi_document_yaml() {
        let input = "\
# web app
apiVersion: v1
kind: Service
metadata:
  name: web
---
---
# nothing here
---
apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
...
---
apiVersion: v1
kind: ConfigMap
metadata: {name: cfg}
";
        let ms = decode(input).unwrap();
        assert_eq!(
            kinds(&ms),
            [
                ("Service", 1, 2),
                ("Deployment", 4, 10),
                ("ConfigMap", 5, 16)
            ]
        );
        assert_eq!(ms[0].name(), Some("web"));
        assert_eq!(ms[1].api_version, "apps/v1");
        assert_eq!(ms[2].object["metadata"]["name"], "cfg");
    }

    #[test]
    fn leading_marker_and_comment_preamble_do_not_count() {
        let input = "---\napiVersion: v1\nkind: Pod\n";
        assert_eq!(kinds(&decode(input).unwrap()), [("Pod", 1, 2)]);
        let input = "# header\n\n---\napiVersion: v1\nkind: Pod\n---\n";
        assert_eq!(kinds(&decode(input).unwrap()), [("Pod", 1, 4)]);
        let input = "--- {apiVersion: v1, kind: Pod}\n";
        assert_eq!(kinds(&decode(input).unwrap()), [("Pod", 1, 1)]);
        assert!(decode("").unwrap().is_empty());
        assert!(decode("\n# only comments\n---\n").unwrap().is_empty());
    }

    #[test]
    fn crlf_input() {
        let input = "apiVersion: v1\r\nkind: Pod\r\n---\r\napiVersion: v1\r\nkind: Node\r\n";
        assert_eq!(
            kinds(&decode(input).unwrap()),
            [("Pod", 1, 1), ("Node", 2, 4)]
        );
    }

    #[test]
    fn missing_kind_names_document_and_line() {
        let mut input = String::from("apiVersion: v1\nkind: Namespace\nmetadata:\n  name: a\n");
        input.push_str("---\n");
        for i in 0..7 {
            input.push_str(&format!("# comment {i}\n"));
        }
        // Line 13 is blank, the object starts on line 14.
        input.push_str("\napiVersion: v1\nmetadata:\n  name: b\n");
        let err = decode(&input).unwrap_err();
        assert_eq!(
            err.to_string(),
            "document 2 (line 14): missing field \"kind\""
        );
        assert_eq!(err.location().line, 14);
        let err = decode("kind: Pod\n").unwrap_err();
        assert_eq!(
            err.to_string(),
            "document 1 (line 1): missing field \"apiVersion\""
        );
        let err = decode("apiVersion: v1\nkind: ''\n").unwrap_err();
        assert_eq!(
            err.to_string(),
            "document 1 (line 1): field \"kind\" must be a non-empty string"
        );
    }

    #[test]
    fn yaml_syntax_errors_have_global_line_and_column() {
        let input =
            "apiVersion: v1\nkind: Pod\n---\napiVersion: v1\nkind: Pod\nmetadata:\n  name: [a\n";
        let err = decode(input).unwrap_err();
        let at = err.location();
        assert_eq!(at.document, 2);
        assert!(at.line >= 7, "{err}");
        assert!(at.column.is_some(), "{err}");
        let msg = err.to_string();
        assert!(msg.starts_with("document 2 (line "), "{msg}");
        // Positions inside the message are in whole-input lines too.
        assert!(!msg.contains("at line 4 column"), "{msg}");

        let err = decode("apiVersion: v1\nkind: Pod\n  bad: indent\n").unwrap_err();
        let at = err.location();
        assert_eq!((at.document, at.line), (1, 3), "{err}");
    }

    #[test]
    fn non_objects_are_errors() {
        let err = decode("- a\n- b\n").unwrap_err();
        assert_eq!(
            err.to_string(),
            "document 1 (line 1): expected an object, found an array"
        );
        let err = decode("apiVersion: v1\nkind: Pod\n---\njust a string\n").unwrap_err();
        assert_eq!(
            err.to_string(),
            "document 2 (line 4): expected an object, found a string"
        );
        assert!(decode("~\n").unwrap().is_empty());
    }

    #[test]
    fn json_object_stream_and_list() {
        let one = r#"{"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "a"}}"#;
        assert_eq!(kinds(&decode(one).unwrap()), [("Pod", 1, 1)]);
        let stream = "{\"apiVersion\": \"v1\", \"kind\": \"Pod\"}\n\n{\"apiVersion\": \"v1\",\n \"kind\": \"Node\"}\n";
        assert_eq!(
            kinds(&decode(stream).unwrap()),
            [("Pod", 1, 1), ("Node", 2, 3)]
        );
        let list = r#"{
  "apiVersion": "v1",
  "kind": "List",
  "items": [
    {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "s"}},
    {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "d"}}
  ]
}"#;
        let ms = decode(list).unwrap();
        assert_eq!(kinds(&ms), [("Service", 1, 1), ("Deployment", 1, 1)]);
        assert_eq!(ms[1].name(), Some("d"));
        let typed_list = r#"{"apiVersion": "v1", "kind": "PodList", "items": [{"apiVersion": "v1", "kind": "Pod"}]}"#;
        assert_eq!(kinds(&decode(typed_list).unwrap()), [("Pod", 1, 1)]);
        let empty_list = r#"{"apiVersion": "v1", "kind": "List", "items": []}"#;
        assert!(decode(empty_list).unwrap().is_empty());
    }

    #[test]
    fn yaml_lists_expand_too() {
        let input = "apiVersion: v1\nkind: List\nitems:\n- apiVersion: v1\n  kind: Pod\n- apiVersion: v1\n  kind: Secret\n";
        assert_eq!(
            kinds(&decode(input).unwrap()),
            [("Pod", 1, 1), ("Secret", 1, 1)]
        );
    }

    #[test]
    fn list_item_errors_name_the_item() {
        let list = r#"{"apiVersion": "v1", "kind": "List", "items": [
            {"apiVersion": "v1", "kind": "Pod"},
            {"apiVersion": "v1"}
        ]}"#;
        let err = decode(list).unwrap_err();
        assert_eq!(
            err.to_string(),
            "document 1 (line 1): items[1]: missing field \"kind\""
        );
        let bad_items = r#"{"apiVersion": "v1", "kind": "List", "items": 3}"#;
        assert_eq!(
            decode(bad_items).unwrap_err().to_string(),
            "document 1 (line 1): expected an object, found a number"
        );
    }

    #[test]
    fn json_syntax_errors_have_line_and_column() {
        let input = "{\"apiVersion\": \"v1\", \"kind\": \"Pod\"}\n{\"apiVersion\": \"v1\",\n  \"kind\": \"Pod\",,\n}";
        let err = decode(input).unwrap_err();
        assert_eq!(
            err.location(),
            Location {
                document: 2,
                line: 3,
                column: Some(17)
            }
        );
        assert_eq!(
            err.to_string(),
            "document 2 (line 3, column 17): key must be a string"
        );
        let err = decode("{\"kind\": \"Pod\"").unwrap_err();
        assert!(
            err.to_string()
                .starts_with("document 1 (line 1, column 14): EOF"),
            "{err}"
        );
    }

    #[test]
    fn yaml_flow_mapping_is_not_mistaken_for_json() {
        let input = "{apiVersion: v1, kind: Pod}\n";
        assert_eq!(kinds(&decode(input).unwrap()), [("Pod", 1, 1)]);
    }

    #[test]
    fn json_missing_kind_in_second_document() {
        let input = "{\"apiVersion\": \"v1\", \"kind\": \"Pod\"}\n\n\n{\"apiVersion\": \"v1\"}";
        assert_eq!(
            decode(input).unwrap_err().to_string(),
            "document 2 (line 4): missing field \"kind\""
        );
    }

    #[test]
    fn yaml_duplicate_keys_merges_and_odd_keys() {
        let dup = "apiVersion: v1\nkind: Pod\n---\napiVersion: v1\nkind: Pod\nmetadata:\n  name: x\n  name: y\n";
        let err = decode(dup).unwrap_err();
        assert_eq!(err.location().document, 2);
        assert!(
            err.to_string()
                .contains("duplicate entry with key \"name\""),
            "{err}"
        );
        assert_eq!(err.location().line, 7, "{err}");

        let merge =
            "apiVersion: v1\nkind: ConfigMap\nbase: &base {a: '1'}\ndata:\n  <<: *base\n  b: '2'\n";
        let ms = decode(merge).unwrap();
        assert_eq!(
            ms[0].object["data"],
            serde_json::json!({"a": "1", "b": "2"})
        );

        let keys = "apiVersion: v1\nkind: ConfigMap\ndata:\n  1: one\n  true: yes\n";
        let ms = decode(keys).unwrap();
        assert_eq!(
            ms[0].object["data"],
            serde_json::json!({"1": "one", "true": "yes"})
        );

        let nan = "apiVersion: v1\nkind: Pod\nx: .nan\n";
        assert_eq!(
            decode(nan).unwrap_err().to_string(),
            "document 1 (line 1): number .nan cannot be represented in JSON"
        );
        let tagged = "apiVersion: v1\nkind: Pod\nx: !custom 3\n";
        assert_eq!(decode(tagged).unwrap()[0].object["x"], 3);
    }

    #[test]
    fn relocating_messages() {
        assert_eq!(
            relocate_yaml_message(
                "did not find expected key at line 3 column 5, while parsing a block mapping at line 1 column 1",
                Some((3, 5)),
                10
            ),
            "did not find expected key, while parsing a block mapping at line 11 column 1"
        );
        assert_eq!(relocate_yaml_message("a line 5 b", None, 3), "a line 5 b");
    }
}
