//! Label selectors: the string form of `?labelSelector=` and `kubectl -l`
//! (`a=b,c!=d,e in (x,y),f notin (z),g,!h`, also `==`, `>` and `<`), and the structured
//! `LabelSelector` of Deployments, ReplicaSets and Services. Both become a [`Selector`], a list
//! of [`Requirement`]s that must all hold.
//!
//! Matching follows Kubernetes: `!=` and `notin` also match objects without the label; `=`,
//! `in`, `>` and `<` need it. An empty selector matches everything. (A missing `LabelSelector`
//! on an object matches nothing; that choice is the caller's, since it has no selector to
//! convert.)

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::str::FromStr;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use thiserror::Error;

use crate::validation::names;

#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum Error {
    #[error("invalid label selector {selector:?}: {reason} at character {position}")]
    Syntax {
        selector: String,
        /// 1-based character position in the selector.
        position: usize,
        reason: String,
    },
    #[error("invalid label selector: key {key:?}: {reason}")]
    InvalidKey { key: String, reason: String },
    #[error("invalid label selector: value {value:?} for key {key:?}: {reason}")]
    InvalidValue {
        key: String,
        value: String,
        reason: String,
    },
    #[error(
        "invalid label selector: operator {operator:?} for key {key:?} is not one of In, \
         NotIn, Exists, DoesNotExist"
    )]
    UnknownOperator { key: String, operator: String },
    #[error("invalid label selector: key {key:?}: operator {operator} needs {needs}")]
    WrongValueCount {
        key: String,
        operator: Operator,
        needs: &'static str,
    },
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Operator {
    /// `=`
    Equals,
    /// `==`
    DoubleEquals,
    /// `!=`
    NotEquals,
    /// `in (...)`
    In,
    /// `notin (...)`
    NotIn,
    /// a bare key
    Exists,
    /// `!key`
    DoesNotExist,
    /// `>`: the label is an integer greater than the value
    GreaterThan,
    /// `<`: the label is an integer less than the value
    LessThan,
}

impl fmt::Display for Operator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Operator::Equals => "=",
            Operator::DoubleEquals => "==",
            Operator::NotEquals => "!=",
            Operator::In => "in",
            Operator::NotIn => "notin",
            Operator::Exists => "exists",
            Operator::DoesNotExist => "!",
            Operator::GreaterThan => ">",
            Operator::LessThan => "<",
        })
    }
}

/// One condition on one label.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Requirement {
    key: String,
    operator: Operator,
    /// Sorted, without duplicates.
    values: Vec<String>,
}

impl Requirement {
    /// Builds a requirement, checking the key, the values and their number for the operator.
    pub fn new<I, S>(key: &str, operator: Operator, values: I) -> Result<Self>
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        if let Some(reason) = names::is_qualified_name(key).into_iter().next() {
            return Err(Error::InvalidKey {
                key: key.to_string(),
                reason,
            });
        }
        let values: BTreeSet<String> = values.into_iter().map(Into::into).collect();
        let count_error = |needs| Error::WrongValueCount {
            key: key.to_string(),
            operator,
            needs,
        };
        match operator {
            Operator::In | Operator::NotIn if values.is_empty() => {
                return Err(count_error("at least one value"))
            }
            Operator::Equals | Operator::DoubleEquals | Operator::NotEquals
                if values.len() != 1 =>
            {
                return Err(count_error("exactly one value"))
            }
            Operator::Exists | Operator::DoesNotExist if !values.is_empty() => {
                return Err(count_error("no values"))
            }
            Operator::GreaterThan | Operator::LessThan => {
                let one_integer =
                    values.len() == 1 && values.iter().all(|v| v.parse::<i64>().is_ok());
                if !one_integer {
                    return Err(count_error("exactly one integer value"));
                }
            }
            _ => {
                for value in &values {
                    if let Some(reason) = names::is_valid_label_value(value).into_iter().next() {
                        return Err(Error::InvalidValue {
                            key: key.to_string(),
                            value: value.clone(),
                            reason,
                        });
                    }
                }
            }
        }
        Ok(Requirement {
            key: key.to_string(),
            operator,
            values: values.into_iter().collect(),
        })
    }

    pub fn key(&self) -> &str {
        &self.key
    }

    pub fn operator(&self) -> Operator {
        self.operator
    }

    pub fn values(&self) -> &[String] {
        &self.values
    }

    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        let value = labels.get(&self.key);
        let listed = |v: &String| self.values.binary_search(v).is_ok();
        match self.operator {
            Operator::Equals | Operator::DoubleEquals | Operator::In => value.is_some_and(listed),
            Operator::NotEquals | Operator::NotIn => !value.is_some_and(listed),
            Operator::Exists => value.is_some(),
            Operator::DoesNotExist => value.is_none(),
            Operator::GreaterThan | Operator::LessThan => {
                let (Some(have), Some(want)) = (
                    value.and_then(|v| v.parse::<i64>().ok()),
                    self.values.first().and_then(|v| v.parse::<i64>().ok()),
                ) else {
                    return false;
                };
                if self.operator == Operator::GreaterThan {
                    have > want
                } else {
                    have < want
                }
            }
        }
    }
}

impl fmt::Display for Requirement {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.operator {
            Operator::Exists => write!(f, "{}", self.key),
            Operator::DoesNotExist => write!(f, "!{}", self.key),
            Operator::In | Operator::NotIn => {
                write!(
                    f,
                    "{} {} ({})",
                    self.key,
                    self.operator,
                    self.values.join(",")
                )
            }
            op => write!(f, "{}{op}{}", self.key, self.values[0]),
        }
    }
}

/// A conjunction of requirements; empty selects everything.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub struct Selector {
    requirements: Vec<Requirement>,
}

impl Selector {
    /// The selector that matches every object.
    pub fn everything() -> Self {
        Selector::default()
    }

    /// Builds a selector, ordering the requirements by key as Kubernetes does.
    pub fn new(mut requirements: Vec<Requirement>) -> Self {
        requirements.sort_by(|a, b| a.key.cmp(&b.key));
        Selector { requirements }
    }

    /// Parses the string form, e.g. `app=web,tier in (fe,be),!canary`.
    pub fn parse(s: &str) -> Result<Self> {
        Parser::new(s).parse()
    }

    /// Converts a structured `LabelSelector`: `matchLabels` become `=` requirements and
    /// `matchExpressions` their operator's.
    pub fn from_label_selector(ls: &LabelSelector) -> Result<Self> {
        let mut requirements = Vec::new();
        for (key, value) in ls.match_labels.iter().flatten() {
            requirements.push(Requirement::new(key, Operator::Equals, [value.as_str()])?);
        }
        for expr in ls.match_expressions.iter().flatten() {
            let operator = match expr.operator.as_str() {
                "In" => Operator::In,
                "NotIn" => Operator::NotIn,
                "Exists" => Operator::Exists,
                "DoesNotExist" => Operator::DoesNotExist,
                other => {
                    return Err(Error::UnknownOperator {
                        key: expr.key.clone(),
                        operator: other.to_string(),
                    })
                }
            };
            let values = expr.values.iter().flatten().map(String::as_str);
            requirements.push(Requirement::new(&expr.key, operator, values)?);
        }
        Ok(Selector::new(requirements))
    }

    pub fn requirements(&self) -> &[Requirement] {
        &self.requirements
    }

    pub fn is_empty(&self) -> bool {
        self.requirements.is_empty()
    }

    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        self.requirements.iter().all(|r| r.matches(labels))
    }

    /// Matches an object's optional labels (absent labels are no labels).
    pub fn matches_opt(&self, labels: Option<&BTreeMap<String, String>>) -> bool {
        match labels {
            Some(labels) => self.matches(labels),
            None => self.matches(&BTreeMap::new()),
        }
    }
}

impl FromStr for Selector {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        Selector::parse(s)
    }
}

impl fmt::Display for Selector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, r) in self.requirements.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            write!(f, "{r}")?;
        }
        Ok(())
    }
}

/// Whether a structured selector matches a set of labels; errors when the selector is malformed.
pub fn matches(selector: &LabelSelector, labels: &BTreeMap<String, String>) -> Result<bool> {
    Ok(Selector::from_label_selector(selector)?.matches(labels))
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Token {
    Ident(String),
    In,
    NotIn,
    Equals,
    DoubleEquals,
    NotEquals,
    Bang,
    Open,
    Close,
    Comma,
    Greater,
    Less,
    End,
}

impl fmt::Display for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Token::Ident(s) => write!(f, "{s:?}"),
            Token::In => f.write_str("'in'"),
            Token::NotIn => f.write_str("'notin'"),
            Token::Equals => f.write_str("'='"),
            Token::DoubleEquals => f.write_str("'=='"),
            Token::NotEquals => f.write_str("'!='"),
            Token::Bang => f.write_str("'!'"),
            Token::Open => f.write_str("'('"),
            Token::Close => f.write_str("')'"),
            Token::Comma => f.write_str("','"),
            Token::Greater => f.write_str("'>'"),
            Token::Less => f.write_str("'<'"),
            Token::End => f.write_str("end of selector"),
        }
    }
}

fn is_special(c: char) -> bool {
    matches!(c, '=' | '!' | '(' | ')' | ',' | '<' | '>')
}

/// Splits a selector into tokens, each with its 1-based character position.
fn lex(s: &str) -> Vec<(Token, usize)> {
    let chars: Vec<char> = s.chars().collect();
    let mut tokens = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        let pos = i + 1;
        if c.is_whitespace() {
            i += 1;
            continue;
        }
        let next = chars.get(i + 1).copied();
        let (token, len) = match (c, next) {
            ('=', Some('=')) => (Token::DoubleEquals, 2),
            ('=', _) => (Token::Equals, 1),
            ('!', Some('=')) => (Token::NotEquals, 2),
            ('!', _) => (Token::Bang, 1),
            ('(', _) => (Token::Open, 1),
            (')', _) => (Token::Close, 1),
            (',', _) => (Token::Comma, 1),
            ('>', _) => (Token::Greater, 1),
            ('<', _) => (Token::Less, 1),
            _ => {
                let start = i;
                while i < chars.len() && !chars[i].is_whitespace() && !is_special(chars[i]) {
                    i += 1;
                }
                let word: String = chars[start..i].iter().collect();
                let token = match word.as_str() {
                    "in" => Token::In,
                    "notin" => Token::NotIn,
                    _ => Token::Ident(word),
                };
                tokens.push((token, pos));
                continue;
            }
        };
        tokens.push((token, pos));
        i += len;
    }
    tokens.push((Token::End, chars.len() + 1));
    tokens
}

struct Parser<'a> {
    input: &'a str,
    tokens: Vec<(Token, usize)>,
    next: usize,
}

impl<'a> Parser<'a> {
    fn new(input: &'a str) -> Self {
        Parser {
            input,
            tokens: lex(input),
            next: 0,
        }
    }

    fn peek(&self) -> &Token {
        &self.tokens[self.next].0
    }

    fn bump(&mut self) -> (Token, usize) {
        let t = self.tokens[self.next].clone();
        if t.0 != Token::End {
            self.next += 1;
        }
        t
    }

    fn error(&self, position: usize, reason: String) -> Error {
        Error::Syntax {
            selector: self.input.to_string(),
            position,
            reason,
        }
    }

    fn parse(mut self) -> Result<Selector> {
        let mut requirements = Vec::new();
        if *self.peek() == Token::End {
            return Ok(Selector::everything());
        }
        loop {
            requirements.push(self.requirement()?);
            match self.bump() {
                (Token::Comma, _) => continue,
                (Token::End, _) => break,
                (t, pos) => {
                    return Err(
                        self.error(pos, format!("expected ',' or end of selector, found {t}"))
                    )
                }
            }
        }
        Ok(Selector::new(requirements))
    }

    fn key(&mut self, after: &str) -> Result<String> {
        match self.bump() {
            (Token::Ident(key), _) => Ok(key),
            (t, pos) => Err(self.error(pos, format!("expected a label key{after}, found {t}"))),
        }
    }

    fn requirement(&mut self) -> Result<Requirement> {
        if *self.peek() == Token::Bang {
            self.bump();
            let key = self.key(" after '!'")?;
            return Requirement::new(&key, Operator::DoesNotExist, Vec::<String>::new());
        }
        let key = self.key("")?;
        let (token, pos) = self.bump();
        let operator = match token {
            Token::Comma | Token::End => {
                // A bare key: put the separator back for the caller.
                self.next -= usize::from(token == Token::Comma);
                return Requirement::new(&key, Operator::Exists, Vec::<String>::new());
            }
            Token::Equals => Operator::Equals,
            Token::DoubleEquals => Operator::DoubleEquals,
            Token::NotEquals => Operator::NotEquals,
            Token::Greater => Operator::GreaterThan,
            Token::Less => Operator::LessThan,
            Token::In => Operator::In,
            Token::NotIn => Operator::NotIn,
            t => {
                return Err(self.error(
                    pos,
                    format!(
                        "expected one of '=', '==', '!=', 'in', 'notin', '>', '<' or ',' after \
                         key {key:?}, found {t}"
                    ),
                ))
            }
        };
        let values = match operator {
            Operator::In | Operator::NotIn => self.value_set()?,
            _ => vec![self.single_value(operator)?],
        };
        Requirement::new(&key, operator, values)
    }

    /// The value after `=`, `==`, `!=`, `>` or `<`; empty when the requirement ends there.
    fn single_value(&mut self, operator: Operator) -> Result<String> {
        match self.peek().clone() {
            Token::Ident(v) => {
                self.bump();
                Ok(v)
            }
            Token::Comma | Token::End => Ok(String::new()),
            t => {
                let pos = self.tokens[self.next].1;
                Err(self.error(
                    pos,
                    format!("expected a value after '{operator}', found {t}"),
                ))
            }
        }
    }

    /// `( v1, v2, ... )`; an empty entry stands for the empty value.
    fn value_set(&mut self) -> Result<Vec<String>> {
        match self.bump() {
            (Token::Open, _) => {}
            (t, pos) => return Err(self.error(pos, format!("expected '(', found {t}"))),
        }
        let mut values = Vec::new();
        if *self.peek() == Token::Close {
            self.bump();
            return Ok(values);
        }
        loop {
            match self.peek().clone() {
                Token::Ident(v) => {
                    self.bump();
                    values.push(v);
                }
                Token::Comma | Token::Close => values.push(String::new()),
                t => {
                    let pos = self.tokens[self.next].1;
                    return Err(self.error(pos, format!("expected a value, found {t}")));
                }
            }
            match self.bump() {
                (Token::Comma, _) => continue,
                (Token::Close, _) => return Ok(values),
                (t, pos) => return Err(self.error(pos, format!("expected ',' or ')', found {t}"))),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelectorRequirement;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn sel(s: &str) -> Selector {
        Selector::parse(s).unwrap_or_else(|e| panic!("{s}: {e}"))
    }

    #[test]
    fn parses_every_form() {
        let s = sel("a=b,c!=d,e in (x,y),f notin (z),g,!h");
        let ops: Vec<_> = s
            .requirements()
            .iter()
            .map(|r| (r.key(), r.operator()))
            .collect();
        assert_eq!(
            ops,
            [
                ("a", Operator::Equals),
                ("c", Operator::NotEquals),
                ("e", Operator::In),
                ("f", Operator::NotIn),
                ("g", Operator::Exists),
                ("h", Operator::DoesNotExist),
            ]
        );
        assert_eq!(s.requirements()[2].values(), ["x", "y"]);
        assert_eq!(s.to_string(), "a=b,c!=d,e in (x,y),f notin (z),g,!h");
        assert_eq!(
            sel("x==1").requirements()[0].operator(),
            Operator::DoubleEquals
        );
        assert_eq!(
            sel("x>1").requirements()[0].operator(),
            Operator::GreaterThan
        );
        assert_eq!(sel("x < 10").requirements()[0].values(), ["10"]);
    }

    #[test]
    fn whitespace_order_and_empty_values() {
        let s = sel("  tier in ( b , a ) ,  app = web ");
        assert_eq!(s.to_string(), "app=web,tier in (a,b)");
        assert_eq!(sel("a=").requirements()[0].values(), [""]);
        assert_eq!(sel("a=,b").requirements()[0].values(), [""]);
        assert_eq!(sel("a in (x,)").requirements()[0].values(), ["", "x"]);
        assert!(sel("").is_empty());
        assert!(sel("   ").is_empty());
        assert_eq!(
            sel("example.com/app=web").requirements()[0].key(),
            "example.com/app"
        );
    }

    #[test]
    fn syntax_errors_say_where() {
        let err = |s: &str| Selector::parse(s).unwrap_err().to_string();
        assert_eq!(
            err("a in (x"),
            "invalid label selector \"a in (x\": expected ',' or ')', found end of selector at \
             character 8"
        );
        assert_eq!(
            err("a=b c=d"),
            "invalid label selector \"a=b c=d\": expected ',' or end of selector, found \"c\" \
             at character 5"
        );
        assert_eq!(
            err("!"),
            "invalid label selector \"!\": expected a label key after '!', found end of \
             selector at character 2"
        );
        assert_eq!(
            err("a,"),
            "invalid label selector \"a,\": expected a label key, found end of selector at \
             character 3"
        );
        assert!(err("a in x").contains("expected '(', found \"x\" at character 6"));
        assert!(err("a=(b)").contains("expected a value after '=', found '('"));
        assert!(err("a b").contains("after key \"a\", found \"b\""));
        assert!(err("=b").contains("expected a label key, found '=' at character 1"));
        assert!(err("a=b=c").contains("found '='"));
        assert!(err("a in (x y)").contains("expected ',' or ')', found \"y\""));
        assert!(err("a in ((x))").contains("expected a value, found '('"));
    }

    #[test]
    fn semantic_errors() {
        assert!(matches!(
            Selector::parse("a in ()"),
            Err(Error::WrongValueCount { .. })
        ));
        assert_eq!(
            Selector::parse("a notin ()").unwrap_err().to_string(),
            "invalid label selector: key \"a\": operator notin needs at least one value"
        );
        assert!(matches!(
            Selector::parse("a>b"),
            Err(Error::WrongValueCount { .. })
        ));
        assert!(matches!(
            Selector::parse("bad/key/x=1"),
            Err(Error::InvalidKey { .. })
        ));
        assert!(matches!(
            Selector::parse("a=-b"),
            Err(Error::InvalidValue { .. })
        ));
        let long = format!("a={}", "x".repeat(64));
        assert!(matches!(
            Selector::parse(&long),
            Err(Error::InvalidValue { .. })
        ));
    }

    #[test]
    fn matching() {
        let l = labels(&[("app", "web"), ("tier", "fe"), ("rank", "5")]);
        for (s, expect) in [
            ("app=web", true),
            ("app==web", true),
            ("app=db", false),
            ("app!=db", true),
            ("app!=web", false),
            ("missing!=x", true),
            ("tier in (fe,be)", true),
            ("tier in (be)", false),
            ("missing in (x)", false),
            ("tier notin (be)", true),
            ("tier notin (fe)", false),
            ("missing notin (x)", true),
            ("app", true),
            ("missing", false),
            ("!missing", true),
            ("!app", false),
            ("rank>3", true),
            ("rank>5", false),
            ("rank<6", true),
            ("app>1", false),
            ("missing<1", false),
            ("app=web,tier=fe", true),
            ("app=web,tier=be", false),
            ("", true),
        ] {
            assert_eq!(sel(s).matches(&l), expect, "{s}");
        }
        assert!(sel("!a").matches_opt(None));
        assert!(!sel("a").matches_opt(None));
    }

    #[test]
    fn structured_selectors() {
        let ls = LabelSelector {
            match_labels: Some(labels(&[("app", "web")])),
            match_expressions: Some(vec![
                LabelSelectorRequirement {
                    key: "tier".into(),
                    operator: "In".into(),
                    values: Some(vec!["fe".into(), "be".into()]),
                },
                LabelSelectorRequirement {
                    key: "canary".into(),
                    operator: "DoesNotExist".into(),
                    values: None,
                },
            ]),
        };
        assert!(matches(&ls, &labels(&[("app", "web"), ("tier", "be")])).unwrap());
        assert!(!matches(
            &ls,
            &labels(&[("app", "web"), ("tier", "be"), ("canary", "")])
        )
        .unwrap());
        assert!(!matches(&ls, &labels(&[("app", "web")])).unwrap());
        assert_eq!(
            Selector::from_label_selector(&ls).unwrap().to_string(),
            "app=web,!canary,tier in (be,fe)"
        );
        assert!(matches(&LabelSelector::default(), &labels(&[])).unwrap());

        let bad = LabelSelector {
            match_expressions: Some(vec![LabelSelectorRequirement {
                key: "tier".into(),
                operator: "Like".into(),
                values: None,
            }]),
            ..Default::default()
        };
        assert_eq!(
            matches(&bad, &labels(&[])).unwrap_err(),
            Error::UnknownOperator {
                key: "tier".into(),
                operator: "Like".into()
            }
        );
        let empty_in = LabelSelector {
            match_expressions: Some(vec![LabelSelectorRequirement {
                key: "tier".into(),
                operator: "In".into(),
                values: Some(vec![]),
            }]),
            ..Default::default()
        };
        assert!(matches!(
            Selector::from_label_selector(&empty_in),
            Err(Error::WrongValueCount { .. })
        ));
    }

    #[test]
    fn display_round_trips() {
        for s in [
            "a=b",
            "a!=b",
            "a==b",
            "a in (x,y)",
            "!a",
            "a",
            "a>3",
            "a<3",
            "a=,b notin (c)",
        ] {
            let parsed = sel(s);
            assert_eq!(sel(&parsed.to_string()), parsed, "{s}");
        }
    }
}
