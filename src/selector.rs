//! Label selectors (pure): the `key=v,key in (a,b),!key` syntax of apimachinery `pkg/labels`
//! (docs/api-server.md), parsed once at config load and matched against namespace labels.
//!
//! No I/O and no cluster access: a selector is parsed from a string and matched against a label
//! map. Error messages point at a character position and never quote label values back.
//!
//! Grammar, as in apimachinery `labels.Parse`:
//!
//! ```text
//! selector    ::= "" | requirement ("," requirement)*
//! requirement ::= ["!"] KEY [ ("=" | "==" | "!=") VALUE | ("in" | "notin") "(" VALUE ("," VALUE)* ")" ]
//! ```
//!
//! Like Kubernetes, `key=` means "equal to the empty value", `in ()` is the set holding only the
//! empty value, and `!=`/`notin` also match when the key is absent. The numeric `<`/`>`
//! operators of apimachinery are rejected: namespace selection has no use for them.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

/// Longest label value, and longest name part of a key (apimachinery `validation`).
const MAX_NAME_LEN: usize = 63;
/// Longest key prefix, a DNS-1123 subdomain.
const MAX_PREFIX_LEN: usize = 253;

/// A parsed label selector. An empty selector matches everything.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LabelSelector {
    /// The selector as written, for display and for `kubectl -l`.
    source: String,
    /// All must hold (AND), in the order written.
    requirements: Vec<Requirement>,
}

/// One `key op values` term.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Requirement {
    key: String,
    operator: Operator,
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Operator {
    Exists,
    DoesNotExist,
    /// `=`, `==` and `in`: the key is present with one of the values.
    In(BTreeSet<String>),
    /// `!=` and `notin`: the key is absent, or present with none of the values.
    NotIn(BTreeSet<String>),
}

/// Why a string is not a label selector. `at` is the 1-based character position.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SelectorError {
    #[error("character {at}: expected a label key or `!key`")]
    ExpectedKey { at: usize },
    #[error("character {at}: invalid label key: {reason}")]
    InvalidKey { at: usize, reason: &'static str },
    #[error("character {at}: invalid label value: {reason}")]
    InvalidValue { at: usize, reason: &'static str },
    #[error("character {at}: expected an operator (=, ==, !=, in, notin), `,` or the end")]
    ExpectedOperator { at: usize },
    #[error("character {at}: expected `(` after in/notin")]
    ExpectedOpenParen { at: usize },
    #[error("character {at}: expected a value, `,` or `)` in the value list")]
    ExpectedListItem { at: usize },
    #[error("character {at}: expected a value")]
    ExpectedValue { at: usize },
    #[error("character {at}: expected `,` or the end of the selector")]
    ExpectedCommaOrEnd { at: usize },
    #[error("character {at}: the `{operator}` operator is not supported here")]
    UnsupportedOperator { at: usize, operator: &'static str },
}

impl LabelSelector {
    /// Parses a selector in apimachinery syntax. Whitespace around tokens is ignored.
    pub fn parse(source: &str) -> Result<Self, SelectorError> {
        let tokens = lex(source);
        let requirements = Parser { tokens, next: 0 }.selector()?;
        Ok(Self {
            source: source.to_string(),
            requirements,
        })
    }

    /// The selector as written in the config.
    pub fn as_str(&self) -> &str {
        &self.source
    }

    /// True for a selector with no requirements, which matches every label set.
    pub fn is_empty(&self) -> bool {
        self.requirements.is_empty()
    }

    /// True when every requirement holds for `labels`.
    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        self.requirements.iter().all(|r| r.matches(labels))
    }
}

impl fmt::Display for LabelSelector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.source)
    }
}

impl Requirement {
    fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        let value = labels.get(&self.key);
        match &self.operator {
            Operator::Exists => value.is_some(),
            Operator::DoesNotExist => value.is_none(),
            Operator::In(values) => value.is_some_and(|v| values.contains(v)),
            Operator::NotIn(values) => value.is_none_or(|v| !values.contains(v)),
        }
    }
}

/// A token and the 1-based character position it starts at.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Token {
    kind: TokenKind,
    at: usize,
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum TokenKind {
    /// Any run of characters that are neither whitespace nor special; `in`/`notin` included,
    /// since whether they are operators depends on where they stand.
    Word(String),
    Bang,
    Equals,
    DoubleEquals,
    NotEquals,
    OpenParen,
    CloseParen,
    Comma,
    GreaterThan,
    LessThan,
    End,
}

fn is_special(c: char) -> bool {
    matches!(c, '!' | '=' | '(' | ')' | ',' | '<' | '>')
}

/// apimachinery's lexer treats these four as blanks.
fn is_blank(c: char) -> bool {
    matches!(c, ' ' | '\t' | '\r' | '\n')
}

fn lex(source: &str) -> Vec<Token> {
    let chars: Vec<char> = source.chars().collect();
    let mut tokens = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        let at = i + 1;
        if is_blank(c) {
            i += 1;
            continue;
        }
        let next = chars.get(i + 1).copied();
        let (kind, len) = match (c, next) {
            ('!', Some('=')) => (TokenKind::NotEquals, 2),
            ('=', Some('=')) => (TokenKind::DoubleEquals, 2),
            ('!', _) => (TokenKind::Bang, 1),
            ('=', _) => (TokenKind::Equals, 1),
            ('(', _) => (TokenKind::OpenParen, 1),
            (')', _) => (TokenKind::CloseParen, 1),
            (',', _) => (TokenKind::Comma, 1),
            ('>', _) => (TokenKind::GreaterThan, 1),
            ('<', _) => (TokenKind::LessThan, 1),
            _ => {
                let len = chars[i..]
                    .iter()
                    .take_while(|&&c| !is_special(c) && !is_blank(c))
                    .count();
                (TokenKind::Word(chars[i..i + len].iter().collect()), len)
            }
        };
        tokens.push(Token { kind, at });
        i += len;
    }
    tokens.push(Token {
        kind: TokenKind::End,
        at: chars.len() + 1,
    });
    tokens
}

struct Parser {
    /// Always ends with [`TokenKind::End`].
    tokens: Vec<Token>,
    next: usize,
}

impl Parser {
    fn peek(&self) -> &Token {
        let last = self.tokens.len().saturating_sub(1);
        &self.tokens[self.next.min(last)]
    }

    fn advance(&mut self) -> Token {
        let token = self.peek().clone();
        if token.kind != TokenKind::End {
            self.next += 1;
        }
        token
    }

    fn selector(&mut self) -> Result<Vec<Requirement>, SelectorError> {
        let mut requirements = Vec::new();
        if self.peek().kind == TokenKind::End {
            return Ok(requirements);
        }
        loop {
            requirements.push(self.requirement()?);
            let token = self.advance();
            match token.kind {
                TokenKind::End => return Ok(requirements),
                TokenKind::Comma => {}
                _ => return Err(SelectorError::ExpectedCommaOrEnd { at: token.at }),
            }
        }
    }

    fn requirement(&mut self) -> Result<Requirement, SelectorError> {
        let negated = self.peek().kind == TokenKind::Bang;
        if negated {
            self.advance();
        }
        let key = self.key()?;
        if negated {
            return Ok(Requirement {
                key,
                operator: Operator::DoesNotExist,
            });
        }
        let operator = self.operator_and_values()?;
        Ok(Requirement { key, operator })
    }

    fn key(&mut self) -> Result<String, SelectorError> {
        let token = self.advance();
        let TokenKind::Word(key) = token.kind else {
            return Err(SelectorError::ExpectedKey { at: token.at });
        };
        if let Err(reason) = check_key(&key) {
            return Err(SelectorError::InvalidKey {
                at: token.at,
                reason,
            });
        }
        Ok(key)
    }

    fn operator_and_values(&mut self) -> Result<Operator, SelectorError> {
        let token = self.peek().clone();
        match &token.kind {
            TokenKind::End | TokenKind::Comma => Ok(Operator::Exists),
            TokenKind::Equals | TokenKind::DoubleEquals => {
                self.advance();
                Ok(Operator::In(BTreeSet::from([self.exact_value()?])))
            }
            TokenKind::NotEquals => {
                self.advance();
                Ok(Operator::NotIn(BTreeSet::from([self.exact_value()?])))
            }
            TokenKind::Word(word) if word == "in" => {
                self.advance();
                Ok(Operator::In(self.value_list()?))
            }
            TokenKind::Word(word) if word == "notin" => {
                self.advance();
                Ok(Operator::NotIn(self.value_list()?))
            }
            TokenKind::GreaterThan => Err(SelectorError::UnsupportedOperator {
                at: token.at,
                operator: ">",
            }),
            TokenKind::LessThan => Err(SelectorError::UnsupportedOperator {
                at: token.at,
                operator: "<",
            }),
            _ => Err(SelectorError::ExpectedOperator { at: token.at }),
        }
    }

    /// The value after `=`, `==` or `!=`; nothing before `,` or the end is the empty value.
    fn exact_value(&mut self) -> Result<String, SelectorError> {
        let token = self.peek().clone();
        match token.kind {
            TokenKind::End | TokenKind::Comma => Ok(String::new()),
            TokenKind::Word(value) => {
                self.advance();
                checked_value(value, token.at)
            }
            _ => Err(SelectorError::ExpectedValue { at: token.at }),
        }
    }

    /// `( v1, v2 )`; empty items are the empty value, as apimachinery reads `(a,,b)` and `()`.
    fn value_list(&mut self) -> Result<BTreeSet<String>, SelectorError> {
        let open = self.advance();
        if open.kind != TokenKind::OpenParen {
            return Err(SelectorError::ExpectedOpenParen { at: open.at });
        }
        let mut values = BTreeSet::new();
        let mut expecting_value = true;
        loop {
            let token = self.advance();
            match token.kind {
                TokenKind::Word(value) if expecting_value => {
                    values.insert(checked_value(value, token.at)?);
                    expecting_value = false;
                }
                TokenKind::Comma => {
                    if expecting_value {
                        values.insert(String::new());
                    }
                    expecting_value = true;
                }
                TokenKind::CloseParen => {
                    if expecting_value {
                        values.insert(String::new());
                    }
                    return Ok(values);
                }
                _ => return Err(SelectorError::ExpectedListItem { at: token.at }),
            }
        }
    }
}

fn checked_value(value: String, at: usize) -> Result<String, SelectorError> {
    match check_value(&value) {
        Ok(()) => Ok(value),
        Err(reason) => Err(SelectorError::InvalidValue { at, reason }),
    }
}

/// apimachinery `IsQualifiedName`: `[prefix/]name`, prefix a DNS-1123 subdomain.
fn check_key(key: &str) -> Result<(), &'static str> {
    let (prefix, name) = match key.split_once('/') {
        Some((prefix, name)) => (Some(prefix), name),
        None => (None, key),
    };
    if let Some(prefix) = prefix {
        check_dns1123_subdomain(prefix)?;
    }
    if name.is_empty() {
        return Err("the name part must not be empty");
    }
    if name.contains('/') {
        return Err("a key has at most one `/`, between prefix and name");
    }
    check_name(name)
}

/// apimachinery `IsValidLabelValue`: empty, or a name of at most 63 characters.
fn check_value(value: &str) -> Result<(), &'static str> {
    if value.is_empty() {
        return Ok(());
    }
    check_name(value)
}

/// `([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]`, at most 63 characters.
fn check_name(name: &str) -> Result<(), &'static str> {
    if name.len() > MAX_NAME_LEN {
        return Err("must be at most 63 characters");
    }
    if !name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
    {
        return Err("may contain only letters, digits, '-', '_' and '.'");
    }
    let starts_and_ends_alphanumeric = name.starts_with(|c: char| c.is_ascii_alphanumeric())
        && name.ends_with(|c: char| c.is_ascii_alphanumeric());
    if !starts_and_ends_alphanumeric {
        return Err("must start and end with a letter or digit");
    }
    Ok(())
}

/// A key prefix: lowercase DNS-1123 labels joined by dots, at most 253 characters.
fn check_dns1123_subdomain(prefix: &str) -> Result<(), &'static str> {
    if prefix.is_empty() {
        return Err("the prefix before `/` must not be empty");
    }
    if prefix.len() > MAX_PREFIX_LEN {
        return Err("the prefix must be at most 253 characters");
    }
    let labels_ok = prefix.split('.').all(|label| {
        !label.is_empty()
            && label
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
            && !label.starts_with('-')
            && !label.ends_with('-')
    });
    if labels_ok {
        Ok(())
    } else {
        Err("the prefix must be a lowercase DNS subdomain such as example.com")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn matching_table() {
        let env = labels(&[("env", "prod"), ("example.com/team", "a"), ("empty", "")]);
        let none = labels(&[]);
        // (selector, matches `env`, matches no labels)
        let cases: &[(&str, bool, bool)] = &[
            ("", true, true),
            ("   ", true, true),
            ("env", true, false),
            ("!env", false, true),
            ("env=prod", true, false),
            ("env==prod", true, false),
            ("env = prod", true, false),
            ("env=dev", false, false),
            ("env!=dev", true, true),
            ("env!=prod", false, true),
            ("env in (dev,prod)", true, false),
            ("env in ( dev , prod )", true, false),
            ("env in (dev)", false, false),
            ("env notin (dev,qa)", true, true),
            ("env notin (prod)", false, true),
            ("example.com/team=a", true, false),
            ("example.com/team=a,env=prod", true, false),
            ("example.com/team=a, env=dev", false, false),
            ("env,!missing", true, false),
            ("empty=", true, false),
            ("empty", true, false),
            ("empty in ()", true, false),
            ("empty in (a,)", true, false),
            ("env in (prod,,x)", true, false),
            ("missing=", false, false),
            ("missing!=", true, true),
            ("in in (in)", false, false),
            ("env in (in,notin,prod)", true, false),
            ("\tenv\n=\rprod ", true, false),
        ];
        for (source, on_env, on_none) in cases {
            let selector = LabelSelector::parse(source)
                .unwrap_or_else(|e| panic!("{source:?} should parse: {e}"));
            assert_eq!(selector.matches(&env), *on_env, "{source:?} on env labels");
            assert_eq!(selector.matches(&none), *on_none, "{source:?} on no labels");
            assert_eq!(selector.as_str(), *source);
        }
    }

    #[test]
    fn invalid_table() {
        use SelectorError as E;
        let long_value = format!("k={}", "v".repeat(64));
        let long_name = format!("{}=v", "k".repeat(64));
        let cases: Vec<(&str, SelectorError)> = vec![
            (",", E::ExpectedKey { at: 1 }),
            ("a,", E::ExpectedKey { at: 3 }),
            ("a,,b", E::ExpectedKey { at: 3 }),
            ("=a", E::ExpectedKey { at: 1 }),
            ("!", E::ExpectedKey { at: 2 }),
            ("!!a", E::ExpectedKey { at: 2 }),
            ("!a=b", E::ExpectedCommaOrEnd { at: 3 }),
            ("a b", E::ExpectedOperator { at: 3 }),
            ("a=b c", E::ExpectedCommaOrEnd { at: 5 }),
            ("a=b=c", E::ExpectedCommaOrEnd { at: 4 }),
            ("a in b", E::ExpectedOpenParen { at: 6 }),
            ("a in (b", E::ExpectedListItem { at: 8 }),
            ("a in (b c)", E::ExpectedListItem { at: 9 }),
            ("a in (=)", E::ExpectedListItem { at: 7 }),
            ("a notin", E::ExpectedOpenParen { at: 8 }),
            ("a=(", E::ExpectedValue { at: 3 }),
            (
                "a>1",
                E::UnsupportedOperator {
                    at: 2,
                    operator: ">",
                },
            ),
            (
                "a<1",
                E::UnsupportedOperator {
                    at: 2,
                    operator: "<",
                },
            ),
            ("a=b!", E::ExpectedCommaOrEnd { at: 4 }),
            ("a=-b", E::InvalidValue { at: 3, reason: "" }),
            ("a=b_", E::InvalidValue { at: 3, reason: "" }),
            ("a=b%c", E::InvalidValue { at: 3, reason: "" }),
            (&long_value, E::InvalidValue { at: 3, reason: "" }),
            (&long_name, E::InvalidKey { at: 1, reason: "" }),
            ("-a", E::InvalidKey { at: 1, reason: "" }),
            ("a/b/c", E::InvalidKey { at: 1, reason: "" }),
            ("/a", E::InvalidKey { at: 1, reason: "" }),
            ("a/", E::InvalidKey { at: 1, reason: "" }),
            ("Example.com/a", E::InvalidKey { at: 1, reason: "" }),
            ("ex_ample.com/a", E::InvalidKey { at: 1, reason: "" }),
            ("a..b/c", E::InvalidKey { at: 1, reason: "" }),
        ];
        for (source, want) in &cases {
            let got = LabelSelector::parse(source).expect_err(source);
            assert_eq!(without_reason(&got), *want, "{source:?}: {got}");
        }
    }

    #[test]
    fn double_equals_after_key_is_an_empty_exact_value() {
        // apimachinery reads `a==` as key `a`, `==`, empty value; kept so as not to diverge.
        let selector = LabelSelector::parse("a==").expect("`a==` is valid in apimachinery");
        assert!(selector.matches(&labels(&[("a", "")])));
        assert!(!selector.matches(&labels(&[("a", "x")])));
    }

    #[test]
    fn errors_do_not_quote_values() {
        let secret = "hunter2hunter2hunter2";
        let got = LabelSelector::parse(&format!("a={secret}%")).expect_err("bad value");
        assert!(!got.to_string().contains(secret), "{got}");
    }

    #[test]
    fn prefix_may_be_long_but_name_may_not() {
        let prefix = ["a".repeat(63), "b".repeat(63), "c".repeat(63)].join(".");
        assert!(LabelSelector::parse(&format!("{prefix}/name")).is_ok());
    }

    /// Compares kind and position; the reason text is checked by `errors_name_reasons`.
    fn without_reason(error: &SelectorError) -> SelectorError {
        match error {
            SelectorError::InvalidKey { at, .. } => SelectorError::InvalidKey {
                at: *at,
                reason: "",
            },
            SelectorError::InvalidValue { at, .. } => SelectorError::InvalidValue {
                at: *at,
                reason: "",
            },
            other => other.clone(),
        }
    }

    #[test]
    fn errors_name_reasons() {
        let cases: &[(&str, &str)] = &[
            (
                "a=-b",
                "character 3: invalid label value: must start and end with a letter or digit",
            ),
            (
                "Ex.com/a",
                "character 1: invalid label key: the prefix must be a lowercase DNS subdomain such as example.com",
            ),
            ("a,", "character 3: expected a label key or `!key`"),
        ];
        for (source, want) in cases {
            let got = LabelSelector::parse(source).expect_err(source);
            assert_eq!(got.to_string(), *want);
        }
    }
}
