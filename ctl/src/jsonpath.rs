//! kubectl's JSONPath templates, the subset people type: `{.a.b}`, `{.items[*].metadata.name}`,
//! `{.items[0]}`, `{.a['key.with.dots']}`, `{..name}`, slices `[1:3]`, string literals
//! `{"\n"}`, and `{range .items[*]}...{end}`. Several results of one expression are joined by
//! spaces; a missing key prints nothing, as `kubectl get -o jsonpath` does.

use serde_json::Value;
use thiserror::Error;

#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum Error {
    #[error("jsonpath {template:?}: unclosed '{{'")]
    Unclosed { template: String },
    #[error("jsonpath {template:?}: {{end}} without {{range}}")]
    EndWithoutRange { template: String },
    #[error("jsonpath {template:?}: {{range}} without {{end}}")]
    RangeWithoutEnd { template: String },
    #[error("jsonpath {template:?}: cannot parse {expression:?}: {message}")]
    Syntax {
        template: String,
        expression: String,
        message: String,
    },
}

#[derive(Debug, Clone, PartialEq)]
enum Step {
    Field(String),
    Index(i64),
    Wildcard,
    Slice(Option<i64>, Option<i64>),
    /// `..name`: every `name` at any depth.
    Descend(String),
}

#[derive(Debug, Clone, PartialEq)]
enum Node {
    Text(String),
    Path(Vec<Step>),
    Range(Vec<Step>, Vec<Node>),
}

/// A parsed template.
#[derive(Debug, Clone, PartialEq)]
pub struct Template {
    nodes: Vec<Node>,
}

impl Template {
    pub fn parse(template: &str) -> Result<Template, Error> {
        let mut stack: Vec<(Vec<Step>, Vec<Node>)> = Vec::new();
        let mut nodes: Vec<Node> = Vec::new();
        let mut rest = template;
        while !rest.is_empty() {
            let Some(open) = rest.find('{') else {
                nodes.push(Node::Text(rest.to_string()));
                break;
            };
            if open > 0 {
                nodes.push(Node::Text(rest[..open].to_string()));
            }
            let after = &rest[open + 1..];
            let close = find_close(after).ok_or_else(|| Error::Unclosed {
                template: template.to_string(),
            })?;
            let expression = after[..close].trim();
            rest = &after[close + 1..];
            let syntax = |message: &str| Error::Syntax {
                template: template.to_string(),
                expression: expression.to_string(),
                message: message.to_string(),
            };
            if let Some(path) = expression.strip_prefix("range ") {
                let steps = parse_path(path.trim()).map_err(|m| syntax(&m))?;
                stack.push((steps, std::mem::take(&mut nodes)));
            } else if expression == "end" {
                let (steps, outer) = stack.pop().ok_or_else(|| Error::EndWithoutRange {
                    template: template.to_string(),
                })?;
                let body = std::mem::replace(&mut nodes, outer);
                nodes.push(Node::Range(steps, body));
            } else if expression.starts_with('"') || expression.starts_with('\'') {
                nodes.push(Node::Text(unquote(expression).map_err(|m| syntax(&m))?));
            } else {
                nodes.push(Node::Path(parse_path(expression).map_err(|m| syntax(&m))?));
            }
        }
        if !stack.is_empty() {
            return Err(Error::RangeWithoutEnd {
                template: template.to_string(),
            });
        }
        Ok(Template { nodes })
    }

    /// Renders the template against a value.
    pub fn render(&self, value: &Value) -> String {
        let mut out = String::new();
        render_nodes(&self.nodes, value, &mut out);
        out
    }
}

/// The `}` closing an expression, skipping those inside quotes.
fn find_close(s: &str) -> Option<usize> {
    let mut quote: Option<char> = None;
    let mut escaped = false;
    for (i, c) in s.char_indices() {
        match quote {
            Some(q) => {
                if escaped {
                    escaped = false;
                } else if c == '\\' {
                    escaped = true;
                } else if c == q {
                    quote = None;
                }
            }
            None => match c {
                '"' | '\'' => quote = Some(c),
                '}' => return Some(i),
                _ => {}
            },
        }
    }
    None
}

fn unquote(s: &str) -> Result<String, String> {
    let quote = s.chars().next().unwrap_or('"');
    let inner = s
        .strip_prefix(quote)
        .and_then(|s| s.strip_suffix(quote))
        .ok_or_else(|| "unterminated string".to_string())?;
    let mut out = String::new();
    let mut chars = inner.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('n') => out.push('\n'),
            Some('t') => out.push('\t'),
            Some('r') => out.push('\r'),
            Some(other) => out.push(other),
            None => out.push('\\'),
        }
    }
    Ok(out)
}

fn parse_path(s: &str) -> Result<Vec<Step>, String> {
    let mut steps = Vec::new();
    let s = s
        .strip_prefix('$')
        .or_else(|| s.strip_prefix('@'))
        .unwrap_or(s);
    let bytes = s.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'.' if bytes.get(i + 1) == Some(&b'.') => {
                let (name, next) = identifier(s, i + 2);
                if name.is_empty() {
                    return Err("expected a field name after '..'".into());
                }
                steps.push(Step::Descend(name));
                i = next;
            }
            b'.' => {
                let (name, next) = identifier(s, i + 1);
                if !name.is_empty() {
                    steps.push(if name == "*" {
                        Step::Wildcard
                    } else {
                        Step::Field(name)
                    });
                }
                i = next;
            }
            b'[' => {
                let close = s[i..]
                    .find(']')
                    .map(|c| c + i)
                    .ok_or_else(|| "unclosed '['".to_string())?;
                steps.push(parse_bracket(s[i + 1..close].trim())?);
                i = close + 1;
            }
            _ if i == 0 => {
                // `{metadata.name}`: kubectl accepts a path without the leading dot.
                let (name, next) = identifier(s, 0);
                steps.push(Step::Field(name));
                i = next;
            }
            other => return Err(format!("unexpected {:?}", other as char)),
        }
    }
    Ok(steps)
}

fn identifier(s: &str, from: usize) -> (String, usize) {
    let end = s[from..]
        .find(['.', '['])
        .map(|e| e + from)
        .unwrap_or(s.len());
    (s[from..end].trim().to_string(), end)
}

fn parse_bracket(inner: &str) -> Result<Step, String> {
    if inner == "*" {
        return Ok(Step::Wildcard);
    }
    if inner.starts_with('\'') || inner.starts_with('"') {
        return Ok(Step::Field(unquote(inner)?));
    }
    if inner.starts_with('?') {
        return Err("filters are not supported".into());
    }
    let number = |t: &str| -> Result<Option<i64>, String> {
        let t = t.trim();
        if t.is_empty() {
            Ok(None)
        } else {
            t.parse()
                .map(Some)
                .map_err(|_| format!("invalid array index {t:?}"))
        }
    };
    match inner.split_once(':') {
        Some((from, to)) => {
            let to = to.split(':').next().unwrap_or("");
            Ok(Step::Slice(number(from)?, number(to)?))
        }
        None => Ok(Step::Index(
            number(inner)?.ok_or_else(|| "empty index".to_string())?,
        )),
    }
}

fn render_nodes(nodes: &[Node], value: &Value, out: &mut String) {
    for node in nodes {
        match node {
            Node::Text(text) => out.push_str(text),
            Node::Path(steps) => {
                let results = evaluate(steps, value);
                let printed: Vec<String> = results.iter().map(|v| print(v)).collect();
                out.push_str(&printed.join(" "));
            }
            Node::Range(steps, body) => {
                let mut results = evaluate(steps, value);
                // `{range .items}` walks the list's elements, as `{range .items[*]}` does.
                if let ([Value::Array(items)], Some(Step::Field(_)) | None) =
                    (results.as_slice(), steps.last())
                {
                    results = items.iter().collect();
                }
                for item in results {
                    render_nodes(body, item, out);
                }
            }
        }
    }
}

fn print(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

fn evaluate<'a>(steps: &[Step], root: &'a Value) -> Vec<&'a Value> {
    let mut current = vec![root];
    for step in steps {
        let mut next = Vec::new();
        for value in current {
            match step {
                Step::Field(name) => {
                    if let Some(v) = value.get(name) {
                        next.push(v);
                    }
                }
                Step::Index(i) => {
                    if let Value::Array(items) = value {
                        let len = items.len() as i64;
                        let at = if *i < 0 { len + i } else { *i };
                        if (0..len).contains(&at) {
                            next.push(&items[at as usize]);
                        }
                    }
                }
                Step::Wildcard => match value {
                    Value::Array(items) => next.extend(items.iter()),
                    Value::Object(map) => next.extend(map.values()),
                    _ => {}
                },
                Step::Slice(from, to) => {
                    if let Value::Array(items) = value {
                        let len = items.len() as i64;
                        let clamp = |x: i64| (if x < 0 { len + x } else { x }).clamp(0, len);
                        let from = clamp(from.unwrap_or(0));
                        let to = clamp(to.unwrap_or(len));
                        if from < to {
                            next.extend(items[from as usize..to as usize].iter());
                        }
                    }
                }
                Step::Descend(name) => descend(value, name, &mut next),
            }
        }
        current = next;
    }
    current
}

fn descend<'a>(value: &'a Value, name: &str, out: &mut Vec<&'a Value>) {
    match value {
        Value::Object(map) => {
            if let Some(v) = map.get(name) {
                out.push(v);
            }
            for v in map.values() {
                descend(v, name, out);
            }
        }
        Value::Array(items) => {
            for v in items {
                descend(v, name, out);
            }
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn render(template: &str, value: &Value) -> String {
        Template::parse(template).unwrap().render(value)
    }

    fn list() -> Value {
        json!({"kind": "List", "items": [
            {"metadata": {"name": "a", "labels": {"app.kubernetes.io/name": "x"}},
             "spec": {"replicas": 2, "ports": [{"port": 80}, {"port": 443}]}},
            {"metadata": {"name": "b"}, "spec": {"replicas": 3}}
        ]})
    }

    #[test]
    fn fields_indexes_and_wildcards() {
        let v = list();
        assert_eq!(render("{.items[0].metadata.name}", &v), "a");
        assert_eq!(render("{.items[*].metadata.name}", &v), "a b");
        assert_eq!(render("{.items[-1].spec.replicas}", &v), "3");
        assert_eq!(render("{$.kind}", &v), "List");
        assert_eq!(render("{.items[0].spec.ports[*].port}", &v), "80 443");
        assert_eq!(render("{.items[0:1].metadata.name}", &v), "a");
        assert_eq!(
            render("{.items[0].metadata.labels['app.kubernetes.io/name']}", &v),
            "x"
        );
        assert_eq!(render("{..port}", &v), "80 443");
        assert_eq!(render("{.items[0].spec.ports[1]}", &v), r#"{"port":443}"#);
        assert_eq!(render("{.nothing.here}", &v), "");
        assert_eq!(render("{kind}", &v), "List");
    }

    #[test]
    fn text_literals_and_range() {
        let v = list();
        assert_eq!(
            render("replicas={.items[1].spec.replicas}", &v),
            "replicas=3"
        );
        assert_eq!(
            render(
                r#"{range .items[*]}{.metadata.name}{"\t"}{.spec.replicas}{"\n"}{end}"#,
                &v
            ),
            "a\t2\nb\t3\n"
        );
        assert_eq!(
            render("{range .items}[{.metadata.name}]{end}", &v),
            "[a][b]"
        );
    }

    #[test]
    fn errors_name_the_template() {
        assert!(matches!(
            Template::parse("{.a"),
            Err(Error::Unclosed { .. })
        ));
        assert!(matches!(
            Template::parse("{end}"),
            Err(Error::EndWithoutRange { .. })
        ));
        assert!(matches!(
            Template::parse("{range .items[*]}{.a}"),
            Err(Error::RangeWithoutEnd { .. })
        ));
        let err = Template::parse("{.items[x]}").unwrap_err();
        assert_eq!(
            err.to_string(),
            "jsonpath \"{.items[x]}\": cannot parse \".items[x]\": invalid array index \"x\""
        );
    }
}
