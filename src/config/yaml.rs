//! Config stage, YAML layer (pure): text in, a tree of nodes that remember where they were
//! written out. It knows YAML, not the pullsecretd schema, and never reads files.
//!
//! The tree is built from saphyr-parser's marked events rather than through serde, so that a
//! check made long after parsing (an unknown registry, a duplicate name) can still point at the
//! line and column of the offending node. Anchors and aliases are expanded (within a node budget
//! so a small file cannot blow up), duplicate keys and multiple documents are rejected, and
//! plain scalars are typed by the YAML 1.2 core schema (`true` is a boolean, `"true"` a string).

use std::collections::HashMap;
use std::fmt;

use saphyr_parser::{Event, Marker, Parser, ScalarStyle, ScanError, Span, Tag};

/// Deepest nesting accepted; the config schema needs five levels.
const MAX_DEPTH: usize = 64;
/// Most nodes a document may expand to, aliases included.
const MAX_NODES: usize = 100_000;
/// Longest map key or name shown back in a path or message.
const MAX_SHOWN_CHARS: usize = 64;

/// A 1-based line and column (columns count characters).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Mark {
    pub line: usize,
    pub column: usize,
}

impl Mark {
    fn from_marker(marker: &Marker) -> Self {
        Self {
            line: marker.line(),
            column: marker.col() + 1,
        }
    }
}

/// A YAML node and where it starts.
#[derive(Clone, Debug)]
pub struct Node {
    pub kind: NodeKind,
    pub mark: Mark,
}

#[derive(Clone, Debug)]
pub enum NodeKind {
    Scalar(Scalar),
    List(Vec<Node>),
    Map(Vec<Entry>),
}

#[derive(Clone, Debug)]
pub struct Entry {
    pub key: Node,
    pub value: Node,
}

#[derive(Clone, Debug)]
pub struct Scalar {
    pub text: String,
    /// What the YAML core schema makes of the scalar.
    pub kind: ScalarKind,
}

/// The core-schema type of a scalar: plain `~`, `true`, `12` are not strings.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ScalarKind {
    Null,
    Bool(bool),
    Number,
    String,
}

impl Node {
    /// What the node is, for "expected a string, found a list" messages.
    pub fn describe(&self) -> &'static str {
        match &self.kind {
            NodeKind::List(_) => "a list",
            NodeKind::Map(_) => "a mapping",
            NodeKind::Scalar(scalar) => match scalar.kind {
                ScalarKind::Null => "nothing (null)",
                ScalarKind::Bool(_) => "a boolean",
                ScalarKind::Number => "a number",
                ScalarKind::String => "a string",
            },
        }
    }

    pub fn is_null(&self) -> bool {
        matches!(&self.kind, NodeKind::Scalar(s) if s.kind == ScalarKind::Null)
    }

    /// The text of a scalar of any core type; `None` for lists, mappings and null.
    pub fn scalar_text(&self) -> Option<&str> {
        match &self.kind {
            NodeKind::Scalar(s) if s.kind != ScalarKind::Null => Some(&s.text),
            _ => None,
        }
    }

    /// The text of a scalar the core schema types as a string.
    pub fn as_str(&self) -> Option<&str> {
        match &self.kind {
            NodeKind::Scalar(s) if s.kind == ScalarKind::String => Some(&s.text),
            _ => None,
        }
    }
}

/// Where in the document a node is: `pullSecrets[0].registries[1]`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FieldPath(Vec<Segment>);

#[derive(Clone, Debug, PartialEq, Eq)]
enum Segment {
    Key(String),
    Index(usize),
}

impl FieldPath {
    pub fn root() -> Self {
        Self::default()
    }

    pub fn key(&self, key: &str) -> Self {
        let mut path = self.clone();
        path.0.push(Segment::Key(key.to_string()));
        path
    }

    pub fn index(&self, index: usize) -> Self {
        let mut path = self.clone();
        path.0.push(Segment::Index(index));
        path
    }
}

impl fmt::Display for FieldPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_empty() {
            return f.write_str("(top level)");
        }
        for (i, segment) in self.0.iter().enumerate() {
            match segment {
                Segment::Index(index) => write!(f, "[{index}]")?,
                Segment::Key(key) if is_plain_key(key) => {
                    if i > 0 {
                        f.write_str(".")?;
                    }
                    f.write_str(key)?;
                }
                Segment::Key(key) => write!(f, "[{}]", quoted(key))?,
            }
        }
        Ok(())
    }
}

fn is_plain_key(key: &str) -> bool {
    !key.is_empty()
        && key.chars().count() <= MAX_SHOWN_CHARS
        && key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
}

/// A name quoted for a message, cut short so a pasted secret is not shown whole.
pub fn quoted(name: &str) -> String {
    if name.chars().count() <= MAX_SHOWN_CHARS {
        format!("{name:?}")
    } else {
        let head: String = name.chars().take(MAX_SHOWN_CHARS).collect();
        format!("{head:?}…")
    }
}

/// A syntax or structure error, with the path of the innermost node being read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SyntaxError {
    pub mark: Mark,
    pub path: FieldPath,
    pub message: String,
}

/// Parses one YAML document. `Ok(None)` for a stream with no document or an empty one.
pub fn parse_document(text: &str) -> Result<Option<Node>, SyntaxError> {
    let mut builder = TreeBuilder {
        parser: Parser::new_from_str(text),
        anchors: HashMap::new(),
        nodes: 0,
        path: FieldPath::root(),
    };
    builder.document()
}

struct TreeBuilder<'input> {
    parser: Parser<'input, saphyr_parser::StrInput<'input>>,
    /// Anchored nodes by the parser's anchor id, for aliases.
    anchors: HashMap<usize, Node>,
    /// Nodes built so far, aliases counted at their expanded size.
    nodes: usize,
    /// Path of the node being built, so syntax errors can name a field too.
    path: FieldPath,
}

impl<'input> TreeBuilder<'input> {
    fn next_event(&mut self) -> Result<(Event<'input>, Span), SyntaxError> {
        match self.parser.next_event() {
            Some(Ok(event)) => Ok(event),
            Some(Err(error)) => Err(self.scan_error(&error)),
            None => Err(SyntaxError {
                mark: Mark { line: 1, column: 1 },
                path: self.path.clone(),
                message: "unexpected end of the YAML stream".to_string(),
            }),
        }
    }

    fn scan_error(&self, error: &ScanError) -> SyntaxError {
        SyntaxError {
            mark: Mark::from_marker(error.marker()),
            path: self.path.clone(),
            message: format!("YAML syntax error: {}", error.info()),
        }
    }

    fn error(&self, span: &Span, message: impl Into<String>) -> SyntaxError {
        SyntaxError {
            mark: Mark::from_marker(&span.start),
            path: self.path.clone(),
            message: message.into(),
        }
    }

    fn document(&mut self) -> Result<Option<Node>, SyntaxError> {
        let (event, span) = self.next_event()?;
        if event != Event::StreamStart {
            return Err(self.error(&span, "expected the start of a YAML stream"));
        }
        let (event, span) = self.next_event()?;
        match event {
            Event::StreamEnd => return Ok(None),
            Event::DocumentStart(_) => {}
            _ => return Err(self.error(&span, "expected a YAML document")),
        }
        let (event, span) = self.next_event()?;
        let root = self.node(event, span, 0)?;
        let (event, span) = self.next_event()?;
        if event != Event::DocumentEnd {
            return Err(self.error(&span, "expected the end of the YAML document"));
        }
        let (event, span) = self.next_event()?;
        if event != Event::StreamEnd {
            return Err(self.error(
                &span,
                "a second YAML document; the config must be a single document",
            ));
        }
        Ok((!root.is_null()).then_some(root))
    }

    fn node(
        &mut self,
        event: Event<'input>,
        span: Span,
        depth: usize,
    ) -> Result<Node, SyntaxError> {
        if depth > MAX_DEPTH {
            return Err(self.error(&span, format!("nested deeper than {MAX_DEPTH} levels")));
        }
        self.count_nodes(&span, 1)?;
        let mark = Mark::from_marker(&span.start);
        let (node, anchor) = match event {
            Event::Scalar(text, style, anchor, tag) => {
                let kind = scalar_kind(&text, style, tag.as_deref())
                    .map_err(|message| self.error(&span, message))?;
                let scalar = Scalar {
                    text: text.into_owned(),
                    kind,
                };
                let node = Node {
                    kind: NodeKind::Scalar(scalar),
                    mark,
                };
                (node, anchor)
            }
            Event::SequenceStart(anchor, tag) => {
                check_collection_tag(tag.as_deref(), "seq").map_err(|m| self.error(&span, m))?;
                let items = self.list_items(depth)?;
                let node = Node {
                    kind: NodeKind::List(items),
                    mark,
                };
                (node, anchor)
            }
            Event::MappingStart(anchor, tag) => {
                check_collection_tag(tag.as_deref(), "map").map_err(|m| self.error(&span, m))?;
                let entries = self.map_entries(depth)?;
                let node = Node {
                    kind: NodeKind::Map(entries),
                    mark,
                };
                (node, anchor)
            }
            Event::Alias(anchor) => return self.alias(anchor, &span),
            _ => return Err(self.error(&span, "expected a value")),
        };
        if anchor != 0 {
            self.anchors.insert(anchor, node.clone());
        }
        Ok(node)
    }

    fn alias(&mut self, anchor: usize, span: &Span) -> Result<Node, SyntaxError> {
        let Some(node) = self.anchors.get(&anchor).cloned() else {
            return Err(self.error(span, "alias to an unknown anchor"));
        };
        self.count_nodes(span, count_nodes(&node))?;
        Ok(node)
    }

    fn count_nodes(&mut self, span: &Span, added: usize) -> Result<(), SyntaxError> {
        self.nodes = self.nodes.saturating_add(added);
        if self.nodes > MAX_NODES {
            return Err(self.error(
                span,
                format!("the document expands to more than {MAX_NODES} nodes"),
            ));
        }
        Ok(())
    }

    fn list_items(&mut self, depth: usize) -> Result<Vec<Node>, SyntaxError> {
        let mut items = Vec::new();
        loop {
            let (event, span) = self.next_event()?;
            if event == Event::SequenceEnd {
                return Ok(items);
            }
            let parent = std::mem::replace(&mut self.path, FieldPath::root());
            self.path = parent.index(items.len());
            let item = self.node(event, span, depth + 1);
            self.path = parent;
            items.push(item?);
        }
    }

    fn map_entries(&mut self, depth: usize) -> Result<Vec<Entry>, SyntaxError> {
        let mut entries: Vec<Entry> = Vec::new();
        loop {
            let (event, span) = self.next_event()?;
            if event == Event::MappingEnd {
                return Ok(entries);
            }
            let key = self.node(event, span, depth + 1)?;
            let key_text = key.scalar_text().unwrap_or_default().to_string();
            if let Some(first) = duplicate_of(&entries, &key) {
                return Err(SyntaxError {
                    mark: key.mark,
                    path: self.path.key(&key_text),
                    message: format!("duplicate key; it is already set on line {}", first.line),
                });
            }
            let (event, span) = self.next_event()?;
            let parent = self.path.clone();
            self.path = parent.key(&key_text);
            let value = self.node(event, span, depth + 1);
            self.path = parent;
            entries.push(Entry { key, value: value? });
        }
    }
}

fn duplicate_of(entries: &[Entry], key: &Node) -> Option<Mark> {
    let text = key.scalar_text()?;
    entries
        .iter()
        .find(|entry| entry.key.scalar_text() == Some(text))
        .map(|entry| entry.key.mark)
}

fn count_nodes(node: &Node) -> usize {
    match &node.kind {
        NodeKind::Scalar(_) => 1,
        NodeKind::List(items) => 1 + items.iter().map(count_nodes).sum::<usize>(),
        NodeKind::Map(entries) => {
            1 + entries
                .iter()
                .map(|e| count_nodes(&e.key) + count_nodes(&e.value))
                .sum::<usize>()
        }
    }
}

/// Core-schema tags (`!!str`, `!!map`…) are honoured; application tags mean nothing here.
fn core_tag_suffix(tag: Option<&Tag>) -> Result<Option<&str>, String> {
    match tag {
        None => Ok(None),
        Some(tag) if tag.is_yaml_core_schema() => Ok(Some(tag.suffix.as_str())),
        Some(_) => Err(
            "YAML tags other than the core ones (!!str, !!int…) are not used in this config".into(),
        ),
    }
}

fn check_collection_tag(tag: Option<&Tag>, expected: &str) -> Result<(), String> {
    match core_tag_suffix(tag)? {
        None => Ok(()),
        Some(suffix) if suffix == expected => Ok(()),
        Some(_) => Err("the YAML tag does not fit this node".to_string()),
    }
}

fn scalar_kind(text: &str, style: ScalarStyle, tag: Option<&Tag>) -> Result<ScalarKind, String> {
    match core_tag_suffix(tag)? {
        Some("str") => return Ok(ScalarKind::String),
        Some("null" | "bool" | "int" | "float") | None => {}
        Some(_) => return Err("the YAML tag does not fit a scalar".to_string()),
    }
    if style != ScalarStyle::Plain {
        return Ok(ScalarKind::String);
    }
    Ok(resolve_plain(text))
}

/// YAML 1.2 core schema resolution of an untagged plain scalar.
fn resolve_plain(text: &str) -> ScalarKind {
    match text {
        "" | "~" | "null" | "Null" | "NULL" => ScalarKind::Null,
        "true" | "True" | "TRUE" => ScalarKind::Bool(true),
        "false" | "False" | "FALSE" => ScalarKind::Bool(false),
        _ if is_core_number(text) => ScalarKind::Number,
        _ => ScalarKind::String,
    }
}

fn is_core_number(text: &str) -> bool {
    let digits = |s: &str, radix: u32| !s.is_empty() && s.chars().all(|c| c.is_digit(radix));
    if let Some(octal) = text.strip_prefix("0o") {
        return digits(octal, 8);
    }
    if let Some(hex) = text.strip_prefix("0x") {
        return digits(hex, 16);
    }
    let unsigned = text.strip_prefix(['-', '+']).unwrap_or(text);
    if matches!(unsigned, ".inf" | ".Inf" | ".INF") || matches!(text, ".nan" | ".NaN" | ".NAN") {
        return true;
    }
    let (mantissa, exponent) = match unsigned.split_once(['e', 'E']) {
        Some((m, e)) => (m, Some(e)),
        None => (unsigned, None),
    };
    let mantissa_ok = match mantissa.split_once('.') {
        Some((whole, fraction)) => {
            (whole.is_empty() || digits(whole, 10))
                && (fraction.is_empty() || digits(fraction, 10))
                && !(whole.is_empty() && fraction.is_empty())
        }
        None => digits(mantissa, 10),
    };
    let exponent_ok = exponent.is_none_or(|e| digits(e.strip_prefix(['-', '+']).unwrap_or(e), 10));
    mantissa_ok && exponent_ok
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Node {
        parse_document(text)
            .expect("valid YAML")
            .expect("a non-empty document")
    }

    fn parse_err(text: &str) -> SyntaxError {
        parse_document(text).expect_err("invalid YAML")
    }

    fn mark(line: usize, column: usize) -> Mark {
        Mark { line, column }
    }

    #[test]
    fn nodes_carry_one_based_marks() {
        let root = parse("a:\n  b: [x, 'y']\n");
        assert_eq!(root.mark, mark(1, 1));
        let NodeKind::Map(entries) = &root.kind else {
            panic!("root is a map")
        };
        let NodeKind::Map(inner) = &entries[0].value.kind else {
            panic!("a is a map")
        };
        assert_eq!(inner[0].key.mark, mark(2, 3));
        let NodeKind::List(items) = &inner[0].value.kind else {
            panic!("b is a list")
        };
        assert_eq!(items[0].mark, mark(2, 7));
        assert_eq!(items[1].mark, mark(2, 10));
    }

    #[test]
    fn plain_scalars_follow_the_core_schema() {
        let cases: &[(&str, ScalarKind)] = &[
            ("x: ~", ScalarKind::Null),
            ("x:", ScalarKind::Null),
            ("x: null", ScalarKind::Null),
            ("x: true", ScalarKind::Bool(true)),
            ("x: FALSE", ScalarKind::Bool(false)),
            ("x: yes", ScalarKind::String),
            ("x: 12", ScalarKind::Number),
            ("x: -1.5e3", ScalarKind::Number),
            ("x: 0x1F", ScalarKind::Number),
            ("x: .inf", ScalarKind::Number),
            ("x: 5m", ScalarKind::String),
            ("x: 1.2.3", ScalarKind::String),
            ("x: '12'", ScalarKind::String),
            ("x: \"true\"", ScalarKind::String),
            ("x: !!str 12", ScalarKind::String),
            ("x: |\n  12\n", ScalarKind::String),
        ];
        for (text, want) in cases {
            let root = parse(text);
            let NodeKind::Map(entries) = &root.kind else {
                panic!("map")
            };
            let NodeKind::Scalar(scalar) = &entries[0].value.kind else {
                panic!("{text}: scalar")
            };
            assert_eq!(scalar.kind, *want, "{text}");
        }
    }

    #[test]
    fn aliases_expand_and_count_against_the_budget() {
        let root = parse("a: &x [1, 2]\nb: *x\n");
        let NodeKind::Map(entries) = &root.kind else {
            panic!("map")
        };
        assert!(matches!(&entries[1].value.kind, NodeKind::List(items) if items.len() == 2));

        let mut bomb = String::from("a: &a0 [x, x, x, x, x, x, x, x, x, x]\n");
        for level in 1..8 {
            let prev = level - 1;
            bomb.push_str(&format!(
                "a{level}: &a{level} [*a{prev}, *a{prev}, *a{prev}, *a{prev}, *a{prev}, *a{prev}, *a{prev}, *a{prev}, *a{prev}, *a{prev}]\n"
            ));
        }
        assert!(parse_err(&bomb).message.contains("more than"));
    }

    #[test]
    fn structural_errors_name_line_column_and_path() {
        let error = parse_err("a:\n  b: 1\n  b: 2\n");
        assert_eq!(error.mark, mark(3, 3));
        assert_eq!(error.path.to_string(), "a.b");
        assert!(
            error.message.starts_with("duplicate key"),
            "{}",
            error.message
        );

        let error = parse_err("a:\n  - [x\n");
        assert_eq!(error.path.to_string(), "a[0]");
        assert!(
            error.message.starts_with("YAML syntax error"),
            "{}",
            error.message
        );

        let error = parse_err("a: 1\n---\nb: 2\n");
        assert_eq!(error.mark, mark(2, 1));
        assert!(error.message.contains("second YAML document"));

        let error = parse_err("a: !custom x\n");
        assert_eq!(error.path.to_string(), "a");

        let deep = format!("{}{}", "[".repeat(100), "]".repeat(100));
        assert!(parse_err(&deep).message.contains("nested deeper"));
    }

    #[test]
    fn empty_documents_are_none() {
        for text in ["", "# only a comment\n", "---\n", "~\n"] {
            assert!(parse_document(text).expect("valid").is_none(), "{text:?}");
        }
    }

    #[test]
    fn paths_quote_unusual_keys() {
        let path = FieldPath::root()
            .key("registries")
            .key("quay.io")
            .key("server");
        assert_eq!(path.to_string(), "registries[\"quay.io\"].server");
        let path = FieldPath::root().key("pullSecrets").index(2).key("name");
        assert_eq!(path.to_string(), "pullSecrets[2].name");
        assert_eq!(FieldPath::root().to_string(), "(top level)");
        assert!(quoted(&"x".repeat(100)).ends_with('…'));
    }
}
