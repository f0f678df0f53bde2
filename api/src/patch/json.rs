//! JSON Patch (RFC 6902, `application/json-patch+json`) and JSON Merge Patch (RFC 7386,
//! `application/merge-patch+json`).
//!
//! Both take the document by reference and return a new one, so a patch that fails half-way
//! leaves nothing changed.

use std::io;

use serde_json::{Map, Value};
use thiserror::Error;

/// The most bytes (as compact JSON) the `copy` operations of one JSON patch may copy in all, as
/// Kubernetes' `JSONPatchMaxCopyBytes` (3 MiB). Without it a patch of a few dozen operations,
/// each copying the whole document into itself, doubles the document each time and exhausts
/// the server's memory.
pub const MAX_COPY_BYTES: usize = 3 * 1024 * 1024;

/// Why a JSON patch could not be applied.
///
/// Kubernetes answers [`Error::NotAList`] with 400 Bad Request (the body does not decode as a
/// patch) and every other variant with 422 Unprocessable Entity (the patch does not apply).
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum Error {
    #[error("json patch must be a list of operations")]
    NotAList,
    #[error("json patch operation {index}: {reason}")]
    Malformed { index: usize, reason: String },
    #[error("json patch operation {index} ({op} {path:?}): {reason}")]
    Failed {
        index: usize,
        op: &'static str,
        path: String,
        reason: String,
    },
    #[error("json patch operation {index} (test {path:?}): value is {actual}, not {expected}")]
    TestFailed {
        index: usize,
        path: String,
        expected: String,
        actual: String,
    },
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Applies a JSON patch (a list of `add`, `remove`, `replace`, `move`, `copy` and `test`
/// operations) to `doc`.
pub fn json_patch(doc: &Value, patch: &Value) -> Result<Value> {
    let ops = patch.as_array().ok_or(Error::NotAList)?;
    let mut doc = doc.clone();
    let mut copied = 0;
    for (index, op) in ops.iter().enumerate() {
        let op = Op::parse(index, op)?;
        op.apply(index, &mut doc, &mut copied)?;
    }
    Ok(doc)
}

/// Applies a JSON merge patch: objects merge key by key, `null` deletes a key, anything else
/// (lists included) replaces.
pub fn merge_patch(doc: &Value, patch: &Value) -> Value {
    match patch {
        Value::Object(patch) => {
            let mut target = match doc {
                Value::Object(map) => map.clone(),
                _ => Map::new(),
            };
            for (key, value) in patch {
                if value.is_null() {
                    target.remove(key);
                } else {
                    let merged = merge_patch(target.get(key).unwrap_or(&Value::Null), value);
                    target.insert(key.clone(), merged);
                }
            }
            Value::Object(target)
        }
        other => other.clone(),
    }
}

/// Whether two JSON values are equal, numbers compared by value (`1` equals `1.0`), as
/// RFC 6902 `test` requires.
pub(crate) fn json_equal(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => match (x.as_i64(), y.as_i64()) {
            (Some(x), Some(y)) => x == y,
            _ => match (x.as_u64(), y.as_u64()) {
                (Some(x), Some(y)) => x == y,
                _ => x.as_f64() == y.as_f64(),
            },
        },
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(x, y)| json_equal(x, y))
        }
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len()
                && x.iter()
                    .all(|(k, v)| y.get(k).is_some_and(|w| json_equal(v, w)))
        }
        _ => a == b,
    }
}

enum Kind {
    Add(Value),
    Remove,
    Replace(Value),
    Move(Pointer),
    Copy(Pointer),
    Test(Value),
}

struct Op {
    kind: Kind,
    path: Pointer,
}

/// A parsed JSON pointer (RFC 6901): its text and its unescaped tokens.
#[derive(Clone)]
struct Pointer {
    text: String,
    tokens: Vec<String>,
}

impl Pointer {
    fn parse(text: &str) -> std::result::Result<Pointer, String> {
        if text.is_empty() {
            return Ok(Pointer {
                text: String::new(),
                tokens: Vec::new(),
            });
        }
        let Some(rest) = text.strip_prefix('/') else {
            return Err(format!("path {text:?} must be empty or start with \"/\""));
        };
        let tokens = rest
            .split('/')
            .map(|token| unescape(token).ok_or_else(|| format!("path {text:?} has a bad ~ escape")))
            .collect::<std::result::Result<_, _>>()?;
        Ok(Pointer {
            text: text.to_string(),
            tokens,
        })
    }
}

/// `~1` is `/` and `~0` is `~`; any other `~` sequence is an error.
fn unescape(token: &str) -> Option<String> {
    let mut out = String::with_capacity(token.len());
    let mut chars = token.chars();
    while let Some(c) = chars.next() {
        if c == '~' {
            match chars.next() {
                Some('0') => out.push('~'),
                Some('1') => out.push('/'),
                _ => return None,
            }
        } else {
            out.push(c);
        }
    }
    Some(out)
}

impl Op {
    fn parse(index: usize, value: &Value) -> Result<Op> {
        let malformed = |reason: String| Error::Malformed { index, reason };
        let obj = value
            .as_object()
            .ok_or_else(|| malformed("operation must be a json object".to_string()))?;
        let string = |name: &str| -> Result<&str> {
            match obj.get(name) {
                Some(Value::String(s)) => Ok(s),
                Some(_) => Err(malformed(format!("{name:?} must be a string"))),
                None => Err(malformed(format!("missing {name:?}"))),
            }
        };
        let pointer =
            |name: &str| -> Result<Pointer> { Pointer::parse(string(name)?).map_err(&malformed) };
        let value = || {
            obj.get("value")
                .cloned()
                .ok_or_else(|| malformed("missing \"value\"".to_string()))
        };
        let op = string("op")?;
        let path = pointer("path")?;
        let kind = match op {
            "add" => Kind::Add(value()?),
            "remove" => Kind::Remove,
            "replace" => Kind::Replace(value()?),
            "move" => Kind::Move(pointer("from")?),
            "copy" => Kind::Copy(pointer("from")?),
            "test" => Kind::Test(value()?),
            other => return Err(malformed(format!("unknown op {other:?}"))),
        };
        Ok(Op { kind, path })
    }

    fn name(&self) -> &'static str {
        match self.kind {
            Kind::Add(_) => "add",
            Kind::Remove => "remove",
            Kind::Replace(_) => "replace",
            Kind::Move(_) => "move",
            Kind::Copy(_) => "copy",
            Kind::Test(_) => "test",
        }
    }

    /// Applies the operation; `copied` is what the patch's copies so far have copied, in bytes.
    fn apply(self, index: usize, doc: &mut Value, copied: &mut usize) -> Result<()> {
        let op = self.name();
        let fail = |path: &Pointer, reason: String| Error::Failed {
            index,
            op,
            path: path.text.clone(),
            reason,
        };
        let path = &self.path;
        match self.kind {
            Kind::Add(value) => add(doc, &path.tokens, value).map_err(|r| fail(path, r)),
            Kind::Remove => remove(doc, &path.tokens)
                .map(drop)
                .map_err(|r| fail(path, r)),
            Kind::Replace(value) => {
                let target = get_mut(doc, &path.tokens).map_err(|r| fail(path, r))?;
                *target = value;
                Ok(())
            }
            Kind::Move(from) => {
                if from.tokens == path.tokens {
                    return get(doc, &from.tokens).map(drop).map_err(|r| fail(&from, r));
                }
                if path.tokens.starts_with(&from.tokens) {
                    return Err(fail(
                        path,
                        format!("cannot move {:?} into one of its own children", from.text),
                    ));
                }
                let value = remove(doc, &from.tokens).map_err(|r| fail(&from, r))?;
                add(doc, &path.tokens, value).map_err(|r| fail(path, r))
            }
            Kind::Copy(from) => {
                let value = get(doc, &from.tokens).map_err(|r| fail(&from, r))?;
                let budget = MAX_COPY_BYTES - *copied;
                let size = json_len_up_to(value, budget);
                if size > budget {
                    return Err(fail(
                        &from,
                        format!(
                            "the patch's copies exceed the limit of {MAX_COPY_BYTES} bytes copied"
                        ),
                    ));
                }
                *copied += size;
                let value = value.clone();
                add(doc, &path.tokens, value).map_err(|r| fail(path, r))
            }
            Kind::Test(expected) => {
                let actual = get(doc, &path.tokens).map_err(|r| fail(path, r))?;
                if json_equal(actual, &expected) {
                    Ok(())
                } else {
                    Err(Error::TestFailed {
                        index,
                        path: path.text.clone(),
                        expected: expected.to_string(),
                        actual: actual.to_string(),
                    })
                }
            }
        }
    }
}

/// The length of `value` as compact JSON, or `limit + 1` when it is longer than `limit` (the
/// value is written out only that far).
fn json_len_up_to(value: &Value, limit: usize) -> usize {
    struct Counter {
        len: usize,
        limit: usize,
    }
    impl io::Write for Counter {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.len += buf.len();
            if self.len > self.limit {
                return Err(io::Error::other("too long"));
            }
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }
    let mut counter = Counter { len: 0, limit };
    let _ = serde_json::to_writer(&mut counter, value);
    counter.len.min(limit.saturating_add(1))
}

/// An array index as RFC 6901 spells it: `0` or digits without a leading zero.
fn parse_index(token: &str) -> Option<usize> {
    let digits = !token.is_empty() && token.bytes().all(|b| b.is_ascii_digit());
    if !digits || (token.len() > 1 && token.starts_with('0')) {
        return None;
    }
    token.parse().ok()
}

fn child<'a>(value: &'a Value, token: &str) -> std::result::Result<&'a Value, String> {
    match value {
        Value::Object(map) => map
            .get(token)
            .ok_or_else(|| format!("key {token:?} not found")),
        Value::Array(items) => {
            let i = parse_index(token).ok_or_else(|| format!("{token:?} is not an array index"))?;
            items
                .get(i)
                .ok_or_else(|| format!("index {i} is out of range (length {})", items.len()))
        }
        _ => Err(format!("cannot look up {token:?} in a scalar")),
    }
}

fn child_mut<'a>(value: &'a mut Value, token: &str) -> std::result::Result<&'a mut Value, String> {
    match value {
        Value::Object(map) => map
            .get_mut(token)
            .ok_or_else(|| format!("key {token:?} not found")),
        Value::Array(items) => {
            let len = items.len();
            let i = parse_index(token).ok_or_else(|| format!("{token:?} is not an array index"))?;
            items
                .get_mut(i)
                .ok_or_else(|| format!("index {i} is out of range (length {len})"))
        }
        _ => Err(format!("cannot look up {token:?} in a scalar")),
    }
}

fn get<'a>(doc: &'a Value, tokens: &[String]) -> std::result::Result<&'a Value, String> {
    tokens
        .iter()
        .try_fold(doc, |value, token| child(value, token))
}

fn get_mut<'a>(
    doc: &'a mut Value,
    tokens: &[String],
) -> std::result::Result<&'a mut Value, String> {
    tokens
        .iter()
        .try_fold(doc, |value, token| child_mut(value, token))
}

fn add(doc: &mut Value, tokens: &[String], value: Value) -> std::result::Result<(), String> {
    let Some((last, parent)) = tokens.split_last() else {
        *doc = value;
        return Ok(());
    };
    match get_mut(doc, parent)? {
        Value::Object(map) => {
            map.insert(last.clone(), value);
            Ok(())
        }
        Value::Array(items) => {
            let i = if last == "-" {
                items.len()
            } else {
                parse_index(last).ok_or_else(|| format!("{last:?} is not an array index"))?
            };
            if i > items.len() {
                return Err(format!(
                    "index {i} is out of range (length {})",
                    items.len()
                ));
            }
            items.insert(i, value);
            Ok(())
        }
        _ => Err("the parent is not an object or a list".to_string()),
    }
}

fn remove(doc: &mut Value, tokens: &[String]) -> std::result::Result<Value, String> {
    let Some((last, parent)) = tokens.split_last() else {
        return Err("cannot remove the whole document".to_string());
    };
    match get_mut(doc, parent)? {
        Value::Object(map) => map
            .remove(last)
            .ok_or_else(|| format!("key {last:?} not found")),
        Value::Array(items) => {
            let i = parse_index(last).ok_or_else(|| format!("{last:?} is not an array index"))?;
            if i >= items.len() {
                return Err(format!(
                    "index {i} is out of range (length {})",
                    items.len()
                ));
            }
            Ok(items.remove(i))
        }
        _ => Err("the parent is not an object or a list".to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn patch(doc: Value, ops: Value) -> Value {
        json_patch(&doc, &ops).unwrap_or_else(|e| panic!("{e}"))
    }

    fn patch_err(doc: Value, ops: Value) -> Error {
        json_patch(&doc, &ops).expect_err("patch should fail")
    }

    #[test]
    fn add_to_objects_and_lists() {
        let doc = json!({"a": {"b": [1, 2]}});
        assert_eq!(
            patch(
                doc.clone(),
                json!([{"op": "add", "path": "/a/c", "value": "x"}])
            ),
            json!({"a": {"b": [1, 2], "c": "x"}})
        );
        assert_eq!(
            patch(
                doc.clone(),
                json!([{"op": "add", "path": "/a/b/1", "value": 9}])
            ),
            json!({"a": {"b": [1, 9, 2]}})
        );
        assert_eq!(
            patch(
                doc.clone(),
                json!([{"op": "add", "path": "/a/b/-", "value": 3}])
            ),
            json!({"a": {"b": [1, 2, 3]}})
        );
        assert_eq!(
            patch(
                doc.clone(),
                json!([{"op": "add", "path": "/a/b/2", "value": 3}])
            ),
            json!({"a": {"b": [1, 2, 3]}})
        );
        // Adding an existing member replaces it.
        assert_eq!(
            patch(doc, json!([{"op": "add", "path": "/a", "value": null}])),
            json!({"a": null})
        );
    }

    #[test]
    fn add_at_the_root_replaces_the_document() {
        assert_eq!(
            patch(
                json!({"a": 1}),
                json!([{"op": "add", "path": "", "value": [1]}])
            ),
            json!([1])
        );
    }

    #[test]
    fn remove_replace_move_copy() {
        let doc = json!({"a": {"b": 1, "c": [1, 2, 3]}, "d": "x"});
        assert_eq!(
            patch(doc.clone(), json!([{"op": "remove", "path": "/a/c/1"}])),
            json!({"a": {"b": 1, "c": [1, 3]}, "d": "x"})
        );
        assert_eq!(
            patch(
                doc.clone(),
                json!([{"op": "replace", "path": "/a/b", "value": {"z": 0}}])
            ),
            json!({"a": {"b": {"z": 0}, "c": [1, 2, 3]}, "d": "x"})
        );
        assert_eq!(
            patch(
                doc.clone(),
                json!([{"op": "move", "from": "/d", "path": "/a/e"}])
            ),
            json!({"a": {"b": 1, "c": [1, 2, 3], "e": "x"}})
        );
        assert_eq!(
            patch(
                doc.clone(),
                json!([{"op": "move", "from": "/a/c/0", "path": "/a/c/-"}])
            ),
            json!({"a": {"b": 1, "c": [2, 3, 1]}, "d": "x"})
        );
        assert_eq!(
            patch(
                doc.clone(),
                json!([{"op": "copy", "from": "/a/c", "path": "/f"}])
            ),
            json!({"a": {"b": 1, "c": [1, 2, 3]}, "d": "x", "f": [1, 2, 3]})
        );
        assert_eq!(
            patch(
                doc.clone(),
                json!([{"op": "move", "from": "/d", "path": "/d"}])
            ),
            doc
        );
    }

    /// Found by the `patch` fuzz target: copying the whole document into itself doubles it, and
    /// 40 such operations (under 2 KB of patch) ran the process out of memory.
    #[test]
    fn copies_are_limited_in_total() {
        let doc = json!({"a": "0123456789abcdef"});
        let ops: Vec<Value> = (0..40)
            .map(|i| json!({"op": "copy", "from": "", "path": format!("/x{i}")}))
            .collect();
        let err = patch_err(doc.clone(), Value::Array(ops));
        let Error::Failed {
            index,
            op,
            path,
            reason,
        } = &err
        else {
            panic!("{err:?}");
        };
        assert_eq!((*op, path.as_str()), ("copy", ""));
        assert!((16..24).contains(index), "{err}");
        assert!(
            reason.contains("exceed the limit of 3145728 bytes"),
            "{reason}"
        );

        // The limit is on the patch's copies in all, not on each one.
        let big = "x".repeat(MAX_COPY_BYTES / 2);
        let ops = json!([
            {"op": "copy", "from": "/big", "path": "/b"},
            {"op": "copy", "from": "/big", "path": "/c"},
        ]);
        let err = patch_err(json!({"big": big}), ops);
        assert!(matches!(err, Error::Failed { index: 1, .. }), "{err}");

        // Copies within the limit work as before.
        let ops: Vec<Value> = (0..10)
            .map(|i| json!({"op": "copy", "from": "", "path": format!("/x{i}")}))
            .collect();
        let out = patch(doc, Value::Array(ops));
        assert_eq!(
            out.pointer("/x9/x8/x7/x0/a"),
            Some(&json!("0123456789abcdef"))
        );
    }

    #[test]
    fn pointer_escapes() {
        let doc = json!({"metadata": {"labels": {"app.kubernetes.io/name": "x", "a~b": "y"}}});
        assert_eq!(
            patch(
                doc,
                json!([
                    {"op": "remove", "path": "/metadata/labels/app.kubernetes.io~1name"},
                    {"op": "replace", "path": "/metadata/labels/a~0b", "value": "z"},
                ])
            ),
            json!({"metadata": {"labels": {"a~b": "z"}}})
        );
        let err = patch_err(
            json!({}),
            json!([{"op": "add", "path": "/a~2", "value": 1}]),
        );
        assert!(matches!(err, Error::Malformed { index: 0, .. }), "{err}");
    }

    #[test]
    fn test_op_compares_numbers_by_value() {
        let doc = json!({"replicas": 3, "spec": {"x": [1, {"y": 2.0}]}});
        patch(
            doc.clone(),
            json!([
                {"op": "test", "path": "/replicas", "value": 3.0},
                {"op": "test", "path": "/spec", "value": {"x": [1, {"y": 2}]}},
            ]),
        );
        let err = patch_err(
            doc,
            json!([{"op": "test", "path": "/replicas", "value": 4}]),
        );
        assert_eq!(
            err.to_string(),
            "json patch operation 0 (test \"/replicas\"): value is 3, not 4"
        );
    }

    #[test]
    fn errors_name_the_operation_and_path() {
        let doc = json!({"a": [1]});
        let err = patch_err(
            doc.clone(),
            json!([
                {"op": "add", "path": "/b", "value": 1},
                {"op": "remove", "path": "/c"},
            ]),
        );
        assert_eq!(
            err.to_string(),
            "json patch operation 1 (remove \"/c\"): key \"c\" not found"
        );
        let err = patch_err(
            doc.clone(),
            json!([{"op": "add", "path": "/a/5", "value": 1}]),
        );
        assert!(err.to_string().contains("index 5 is out of range"), "{err}");
        let err = patch_err(
            doc.clone(),
            json!([{"op": "replace", "path": "/a/01", "value": 1}]),
        );
        assert!(err.to_string().contains("not an array index"), "{err}");
        let err = patch_err(doc.clone(), json!([{"op": "remove", "path": "/a/-"}]));
        assert!(matches!(err, Error::Failed { op: "remove", .. }), "{err}");
        let err = patch_err(
            doc.clone(),
            json!([{"op": "add", "path": "/x/y", "value": 1}]),
        );
        assert!(matches!(err, Error::Failed { index: 0, .. }), "{err}");
        let err = patch_err(
            doc.clone(),
            json!([{"op": "move", "from": "/a", "path": "/a/0"}]),
        );
        assert!(err.to_string().contains("own children"), "{err}");
    }

    #[test]
    fn malformed_operations() {
        let doc = json!({});
        assert_eq!(
            patch_err(doc.clone(), json!({"op": "add"})),
            Error::NotAList
        );
        for (op, reason) in [
            (json!({"path": "/a"}), "missing \"op\""),
            (json!({"op": "frob", "path": "/a"}), "unknown op \"frob\""),
            (json!({"op": "add", "path": "/a"}), "missing \"value\""),
            (json!({"op": "move", "path": "/a"}), "missing \"from\""),
            (
                json!({"op": "add", "path": "a", "value": 1}),
                "must be empty or start",
            ),
            (
                json!({"op": "add", "path": 3, "value": 1}),
                "\"path\" must be a string",
            ),
            (json!("add"), "must be a json object"),
        ] {
            let err = patch_err(doc.clone(), json!([op]));
            assert!(
                matches!(&err, Error::Malformed { index: 0, reason: r } if r.contains(reason)),
                "{err}"
            );
        }
    }

    #[test]
    fn a_failed_patch_leaves_the_input_alone() {
        let doc = json!({"a": 1});
        let ops = json!([
            {"op": "replace", "path": "/a", "value": 2},
            {"op": "test", "path": "/a", "value": 1},
        ]);
        assert!(json_patch(&doc, &ops).is_err());
        assert_eq!(doc, json!({"a": 1}));
    }

    #[test]
    fn merge_patch_follows_rfc_7386() {
        // The examples of RFC 7386 appendix A.
        for (doc, patch, want) in [
            (json!({"a": "b"}), json!({"a": "c"}), json!({"a": "c"})),
            (
                json!({"a": "b"}),
                json!({"b": "c"}),
                json!({"a": "b", "b": "c"}),
            ),
            (json!({"a": "b"}), json!({"a": null}), json!({})),
            (
                json!({"a": "b", "b": "c"}),
                json!({"a": null}),
                json!({"b": "c"}),
            ),
            (json!({"a": ["b"]}), json!({"a": "c"}), json!({"a": "c"})),
            (json!({"a": "c"}), json!({"a": ["b"]}), json!({"a": ["b"]})),
            (
                json!({"a": {"b": "c"}}),
                json!({"a": {"b": "d", "c": null}}),
                json!({"a": {"b": "d"}}),
            ),
            (
                json!({"a": [{"b": "c"}]}),
                json!({"a": [1]}),
                json!({"a": [1]}),
            ),
            (json!(["a", "b"]), json!(["c", "d"]), json!(["c", "d"])),
            (json!({"a": "b"}), json!(["c"]), json!(["c"])),
            (json!({"a": "foo"}), json!(null), json!(null)),
            (json!({"a": "foo"}), json!("bar"), json!("bar")),
            (
                json!({"e": null}),
                json!({"a": 1}),
                json!({"e": null, "a": 1}),
            ),
            (
                json!([1, 2]),
                json!({"a": "b", "c": null}),
                json!({"a": "b"}),
            ),
            (
                json!({}),
                json!({"a": {"bb": {"ccc": null}}}),
                json!({"a": {"bb": {}}}),
            ),
        ] {
            assert_eq!(merge_patch(&doc, &patch), want, "{doc} + {patch}");
        }
    }
}
