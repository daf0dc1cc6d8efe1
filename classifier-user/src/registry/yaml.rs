//! A YAML tree that remembers where each node was written, built with limits.
//!
//! The streaming parser (saphyr-parser) gives events with positions; this module turns each
//! document into a [`Node`] tree, resolving plain scalars with the YAML 1.2 core schema,
//! expanding aliases and merge keys, and refusing input that exceeds [`Limits`].

use std::{
    collections::{HashMap, HashSet},
    fmt,
};

use saphyr_parser::{Event, Parser, ScalarStyle, Span};

/// A position in a file: line and column, both counted from 1.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Mark {
    pub line: u32,
    pub col: u32,
}

impl Mark {
    fn from_span(span: &Span, line_offset: u32) -> Self {
        let line = u32::try_from(span.start.line()).unwrap_or(u32::MAX);
        let col = u32::try_from(span.start.col()).unwrap_or(u32::MAX - 1);
        Mark {
            line: line.saturating_add(line_offset),
            col: col.saturating_add(1),
        }
    }
}

impl fmt::Display for Mark {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.line, self.col)
    }
}

/// Bounds that protect the reader from hostile or accidental huge input.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Largest file read, in bytes.
    pub max_file_bytes: u64,
    /// Deepest nesting of sequences and mappings in one document.
    pub max_depth: usize,
    /// Most nodes in one document, counting every node an alias or merge key copies.
    pub max_nodes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_file_bytes: 512 * 1024 * 1024,
            max_depth: 64,
            max_nodes: 1_000_000,
        }
    }
}

/// Why a YAML stream could not be read.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum YamlError {
    #[error("YAML syntax: {info}")]
    Syntax { info: String },
    #[error("nesting deeper than the limit of {limit} levels")]
    TooDeep { limit: usize },
    #[error(
        "document larger than the limit of {limit} nodes (aliases and merge keys count every copy)"
    )]
    TooManyNodes { limit: usize },
    #[error("duplicate key {key:?}")]
    DuplicateKey { key: String },
    #[error("alias to an unknown anchor")]
    UnknownAnchor,
    #[error("file of {size} bytes is larger than the limit of {limit} bytes")]
    FileTooLarge { size: u64, limit: u64 },
    #[error("file is not UTF-8 text")]
    NotUtf8,
    #[error("the YAML parser failed on this input")]
    ParserFailure,
}

/// A scalar or collection value.
#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    Null,
    Bool(bool),
    Int(i128),
    Float(f64),
    Str(String),
    Seq(Vec<Node>),
    Map(Vec<(Node, Node)>),
}

/// A value and where it starts in the file.
#[derive(Clone, Debug, PartialEq)]
pub struct Node {
    pub value: Value,
    pub mark: Mark,
    /// Number of nodes in this subtree, itself included.
    size: usize,
}

impl Node {
    /// A node with no children.
    pub fn leaf(value: Value, mark: Mark) -> Self {
        Node {
            value,
            mark,
            size: 1,
        }
    }

    /// The value of `key` when this node is a mapping with a string key `key`.
    pub fn get(&self, key: &str) -> Option<&Node> {
        match &self.value {
            Value::Map(entries) => entries
                .iter()
                .find(|(k, _)| matches!(&k.value, Value::Str(s) if s == key))
                .map(|(_, v)| v),
            _ => None,
        }
    }

    /// The key node of entry `key` when this node is a mapping.
    pub fn get_key(&self, key: &str) -> Option<&Node> {
        match &self.value {
            Value::Map(entries) => entries
                .iter()
                .find(|(k, _)| matches!(&k.value, Value::Str(s) if s == key))
                .map(|(k, _)| k),
            _ => None,
        }
    }

    /// The string when this node is a string scalar.
    pub fn as_str(&self) -> Option<&str> {
        match &self.value {
            Value::Str(s) => Some(s),
            _ => None,
        }
    }

    /// Short name of the node's type, for messages.
    pub fn type_name(&self) -> &'static str {
        match self.value {
            Value::Null => "null",
            Value::Bool(_) => "a boolean",
            Value::Int(_) => "an integer",
            Value::Float(_) => "a float",
            Value::Str(_) => "a string",
            Value::Seq(_) => "a sequence",
            Value::Map(_) => "a mapping",
        }
    }
}

/// One document of a stream, or the error that ended the stream.
pub type DocResult = Result<Node, (Mark, YamlError)>;

/// Parses every document of `text` (lines shifted by `line_offset`) into `on_doc`, up to the first syntax error.
pub fn parse_documents(
    text: &str,
    limits: &Limits,
    line_offset: u32,
    mut on_doc: impl FnMut(DocResult),
) {
    // The parser is third-party code run on untrusted bytes: a panic inside it becomes an error.
    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let mut builder = Builder::new(limits, line_offset);
        let mut parser = Parser::new_from_str(text);
        loop {
            let next = parser.next_event();
            match next {
                None => break,
                Some(Err(err)) => {
                    let marker = err.marker();
                    let mark = Mark {
                        line: u32::try_from(marker.line())
                            .unwrap_or(u32::MAX)
                            .saturating_add(line_offset),
                        col: u32::try_from(marker.col())
                            .unwrap_or(u32::MAX - 1)
                            .saturating_add(1),
                    };
                    on_doc(Err((
                        mark,
                        YamlError::Syntax {
                            info: err.info().to_owned(),
                        },
                    )));
                    return;
                }
                Some(Ok((event, span))) => {
                    let mark = Mark::from_span(&span, line_offset);
                    match builder.event(event, mark) {
                        Ok(Some(doc)) => on_doc(Ok(doc)),
                        Ok(None) => {}
                        Err(e) => {
                            on_doc(Err(e));
                            // Skip the rest of this document, then carry on with the next one.
                            if !builder.skip_document(&mut parser, &mut on_doc) {
                                return;
                            }
                        }
                    }
                }
            }
        }
    }));
    if outcome.is_err() {
        on_doc(Err((Mark::default(), YamlError::ParserFailure)));
    }
}

/// The entries of a mapping.
type Entries = Vec<(Node, Node)>;

enum Frame {
    Seq {
        items: Vec<Node>,
        mark: Mark,
        anchor: usize,
        size: usize,
    },
    Map {
        entries: Vec<(Node, Node)>,
        key: Option<Node>,
        mark: Mark,
        anchor: usize,
        size: usize,
    },
}

struct Builder<'l> {
    limits: &'l Limits,
    stack: Vec<Frame>,
    anchors: HashMap<usize, Node>,
    nodes: usize,
    line_offset: u32,
}

impl<'l> Builder<'l> {
    fn new(limits: &'l Limits, line_offset: u32) -> Self {
        Builder {
            limits,
            stack: Vec::new(),
            anchors: HashMap::new(),
            nodes: 0,
            line_offset,
        }
    }

    fn reset(&mut self) {
        self.stack.clear();
        self.anchors.clear();
        self.nodes = 0;
    }

    /// Drops events up to the end of the current document; false when the stream ended.
    fn skip_document(
        &mut self,
        parser: &mut Parser<'_, saphyr_parser::StrInput<'_>>,
        on_doc: &mut impl FnMut(DocResult),
    ) -> bool {
        self.reset();
        loop {
            match parser.next_event() {
                None => return false,
                Some(Err(err)) => {
                    let marker = err.marker();
                    let mark = Mark {
                        line: u32::try_from(marker.line())
                            .unwrap_or(u32::MAX)
                            .saturating_add(self.line_offset),
                        col: u32::try_from(marker.col())
                            .unwrap_or(u32::MAX - 1)
                            .saturating_add(1),
                    };
                    on_doc(Err((
                        mark,
                        YamlError::Syntax {
                            info: err.info().to_owned(),
                        },
                    )));
                    return false;
                }
                Some(Ok((Event::DocumentEnd, _))) => return true,
                Some(Ok((Event::StreamEnd, _))) => return false,
                Some(Ok(_)) => {}
            }
        }
    }

    fn count(&mut self, n: usize, mark: Mark) -> Result<(), (Mark, YamlError)> {
        self.nodes = self.nodes.saturating_add(n);
        if self.nodes > self.limits.max_nodes {
            return Err((
                mark,
                YamlError::TooManyNodes {
                    limit: self.limits.max_nodes,
                },
            ));
        }
        Ok(())
    }

    fn event(&mut self, event: Event<'_>, mark: Mark) -> Result<Option<Node>, (Mark, YamlError)> {
        match event {
            Event::Nothing | Event::StreamStart | Event::StreamEnd => Ok(None),
            Event::DocumentStart(_) => {
                self.reset();
                Ok(None)
            }
            Event::DocumentEnd => {
                self.reset();
                Ok(None)
            }
            Event::Alias(id) => {
                let size = match self.anchors.get(&id) {
                    Some(n) => n.size,
                    None => return Err((mark, YamlError::UnknownAnchor)),
                };
                self.count(size, mark)?;
                let mut node = match self.anchors.get(&id) {
                    Some(n) => n.clone(),
                    None => return Err((mark, YamlError::UnknownAnchor)),
                };
                node.mark = mark;
                self.push(node)
            }
            Event::Scalar(text, style, anchor, tag) => {
                self.count(1, mark)?;
                let forced_str = tag
                    .as_ref()
                    .map(|t| t.suffix == "str" || t.suffix.ends_with(":str"))
                    .unwrap_or(false);
                let value = if style == ScalarStyle::Plain && !forced_str {
                    resolve_plain(&text)
                } else {
                    Value::Str(text.into_owned())
                };
                let node = Node::leaf(value, mark);
                if anchor != 0 {
                    self.anchors.insert(anchor, node.clone());
                }
                self.push(node)
            }
            Event::SequenceStart(anchor, _) => {
                self.count(1, mark)?;
                self.open(Frame::Seq {
                    items: Vec::new(),
                    mark,
                    anchor,
                    size: 1,
                })
            }
            Event::MappingStart(anchor, _) => {
                self.count(1, mark)?;
                self.open(Frame::Map {
                    entries: Vec::new(),
                    key: None,
                    mark,
                    anchor,
                    size: 1,
                })
            }
            Event::SequenceEnd | Event::MappingEnd => {
                let frame = match self.stack.pop() {
                    Some(f) => f,
                    None => return Ok(None),
                };
                let (node, anchor) = match frame {
                    Frame::Seq {
                        items,
                        mark,
                        anchor,
                        size,
                    } => (
                        Node {
                            value: Value::Seq(items),
                            mark,
                            size,
                        },
                        anchor,
                    ),
                    Frame::Map {
                        entries,
                        mark,
                        anchor,
                        size,
                        ..
                    } => {
                        let (entries, size) = self.finish_map(entries, size, mark)?;
                        (
                            Node {
                                value: Value::Map(entries),
                                mark,
                                size,
                            },
                            anchor,
                        )
                    }
                };
                if anchor != 0 {
                    self.anchors.insert(anchor, node.clone());
                }
                self.push(node)
            }
        }
    }

    fn open(&mut self, frame: Frame) -> Result<Option<Node>, (Mark, YamlError)> {
        if self.stack.len() >= self.limits.max_depth {
            let mark = match &frame {
                Frame::Seq { mark, .. } | Frame::Map { mark, .. } => *mark,
            };
            return Err((
                mark,
                YamlError::TooDeep {
                    limit: self.limits.max_depth,
                },
            ));
        }
        self.stack.push(frame);
        Ok(None)
    }

    /// Adds a finished node to the open collection, or returns it when it is a whole document.
    fn push(&mut self, node: Node) -> Result<Option<Node>, (Mark, YamlError)> {
        match self.stack.last_mut() {
            None => Ok(Some(node)),
            Some(Frame::Seq { items, size, .. }) => {
                *size = size.saturating_add(node.size);
                items.push(node);
                Ok(None)
            }
            Some(Frame::Map {
                entries, key, size, ..
            }) => {
                *size = size.saturating_add(node.size);
                match key.take() {
                    None => *key = Some(node),
                    Some(k) => entries.push((k, node)),
                }
                Ok(None)
            }
        }
    }

    /// Applies merge keys (`<<`) and rejects duplicate keys.
    fn finish_map(
        &mut self,
        entries: Vec<(Node, Node)>,
        mut size: usize,
        mark: Mark,
    ) -> Result<(Entries, usize), (Mark, YamlError)> {
        let has_merge = entries
            .iter()
            .any(|(k, _)| matches!(&k.value, Value::Str(s) if s == "<<"));
        let mut own = Vec::with_capacity(entries.len());
        let mut merged: Vec<(Node, Node)> = Vec::new();
        for (k, v) in entries {
            if has_merge && matches!(&k.value, Value::Str(s) if s == "<<") {
                let sources: Vec<Node> = match v.value {
                    Value::Map(_) => vec![v],
                    Value::Seq(items) => items,
                    _ => {
                        own.push((k, v));
                        continue;
                    }
                };
                for src in sources {
                    if let Value::Map(src_entries) = src.value {
                        for (sk, sv) in src_entries {
                            let extra = sk.size.saturating_add(sv.size);
                            self.count(extra, mark)?;
                            size = size.saturating_add(extra);
                            merged.push((sk, sv));
                        }
                    }
                }
            } else {
                own.push((k, v));
            }
        }
        check_duplicates(&own)?;
        if !merged.is_empty() {
            // Own keys win over merged ones; among merged maps, the first one listed wins.
            let mut seen: HashSet<String> = own.iter().filter_map(|(k, _)| key_text(k)).collect();
            for (k, v) in merged {
                let fresh = match key_text(&k) {
                    Some(t) => seen.insert(t),
                    None => true,
                };
                if fresh {
                    own.push((k, v));
                }
            }
        }
        Ok((own, size))
    }
}

fn key_text(k: &Node) -> Option<String> {
    match &k.value {
        Value::Str(s) => Some(s.clone()),
        Value::Int(i) => Some(i.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        Value::Null => Some("null".to_owned()),
        Value::Float(f) => Some(f.to_string()),
        Value::Seq(_) | Value::Map(_) => None,
    }
}

fn check_duplicates(entries: &[(Node, Node)]) -> Result<(), (Mark, YamlError)> {
    if entries.len() < 2 {
        return Ok(());
    }
    let mut seen: HashSet<String> = HashSet::with_capacity(entries.len());
    for (k, _) in entries {
        if let Some(t) = key_text(k) {
            if !seen.insert(t.clone()) {
                return Err((k.mark, YamlError::DuplicateKey { key: t }));
            }
        }
    }
    Ok(())
}

/// Resolves a plain scalar with the YAML 1.2 core schema.
fn resolve_plain(text: &str) -> Value {
    match text {
        "" | "~" | "null" | "Null" | "NULL" => return Value::Null,
        "true" | "True" | "TRUE" => return Value::Bool(true),
        "false" | "False" | "FALSE" => return Value::Bool(false),
        ".inf" | ".Inf" | ".INF" | "+.inf" | "+.Inf" | "+.INF" => {
            return Value::Float(f64::INFINITY)
        }
        "-.inf" | "-.Inf" | "-.INF" => return Value::Float(f64::NEG_INFINITY),
        ".nan" | ".NaN" | ".NAN" => return Value::Float(f64::NAN),
        _ => {}
    }
    if let Some(v) = parse_int(text) {
        return v;
    }
    if is_float(text) {
        if let Ok(f) = text.parse::<f64>() {
            return Value::Float(f);
        }
    }
    Value::Str(text.to_owned())
}

fn parse_int(text: &str) -> Option<Value> {
    let (radix, digits, negative) = if let Some(rest) = text.strip_prefix("0x") {
        (16, rest, false)
    } else if let Some(rest) = text.strip_prefix("0o") {
        (8, rest, false)
    } else if let Some(rest) = text.strip_prefix('-') {
        (10, rest, true)
    } else if let Some(rest) = text.strip_prefix('+') {
        (10, rest, false)
    } else {
        (10, text, false)
    };
    if digits.is_empty() || !digits.chars().all(|c| c.is_digit(radix)) {
        return None;
    }
    // Integers too large for i128 are kept as text: a typed field then rejects them.
    let magnitude = i128::from_str_radix(digits, radix).ok()?;
    Some(Value::Int(if negative { -magnitude } else { magnitude }))
}

fn is_float(text: &str) -> bool {
    let t = text.strip_prefix(['-', '+']).unwrap_or(text);
    let (mantissa, exponent) = match t.find(['e', 'E']) {
        Some(i) => (&t[..i], Some(&t[i + 1..])),
        None => (t, None),
    };
    let mantissa_ok = match mantissa.split_once('.') {
        Some((a, b)) => {
            (!a.is_empty() || !b.is_empty())
                && a.chars().all(|c| c.is_ascii_digit())
                && b.chars().all(|c| c.is_ascii_digit())
        }
        None => !mantissa.is_empty() && mantissa.chars().all(|c| c.is_ascii_digit()),
    };
    let exponent_ok = match exponent {
        None => true,
        Some(e) => {
            let e = e.strip_prefix(['-', '+']).unwrap_or(e);
            !e.is_empty() && e.chars().all(|c| c.is_ascii_digit())
        }
    };
    mantissa_ok && exponent_ok
}

#[cfg(test)]
mod tests {
    use super::*;

    fn docs(text: &str) -> Vec<DocResult> {
        let mut out = Vec::new();
        parse_documents(text, &Limits::default(), 0, |d| out.push(d));
        out
    }

    #[test]
    fn scalars_resolve_with_the_core_schema() {
        let d = docs("a: 80\nb: '80'\nc: true\nd: 1.5\ne: ~\nf: 10.0.0.1\ng: !!str 7\n");
        let n = d[0].as_ref().expect("parses");
        assert_eq!(n.get("a").map(|n| &n.value), Some(&Value::Int(80)));
        assert_eq!(n.get("b").and_then(Node::as_str), Some("80"));
        assert_eq!(n.get("c").map(|n| &n.value), Some(&Value::Bool(true)));
        assert_eq!(n.get("d").map(|n| &n.value), Some(&Value::Float(1.5)));
        assert_eq!(n.get("e").map(|n| &n.value), Some(&Value::Null));
        assert_eq!(n.get("f").and_then(Node::as_str), Some("10.0.0.1"));
        assert_eq!(n.get("g").and_then(Node::as_str), Some("7"));
    }

    #[test]
    fn marks_are_one_based() {
        let d = docs("a:\n  b: 1\n");
        let n = d[0].as_ref().expect("parses");
        let b = n.get("a").and_then(|a| a.get("b")).expect("b");
        assert_eq!(b.mark, Mark { line: 2, col: 6 });
    }

    #[test]
    fn alias_bomb_hits_the_node_limit() {
        let mut text = String::from("a0: &a0 [x, x, x, x, x, x, x, x, x, x]\n");
        for i in 1..12 {
            text.push_str(&format!(
                "a{i}: &a{i} [*a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}]\n",
                p = i - 1
            ));
        }
        let d = docs(&text);
        assert!(matches!(
            d.last(),
            Some(Err((_, YamlError::TooManyNodes { .. })))
        ));
    }

    #[test]
    fn deep_nesting_hits_the_depth_limit() {
        let text = "- ".repeat(10_000);
        let d = docs(&text);
        assert!(
            matches!(d[0], Err((_, YamlError::TooDeep { limit: 64 }))),
            "{:?}",
            d[0]
        );
        // Flow collections: the scanner refuses them first.
        let d = docs(&"[".repeat(10_000));
        assert!(d[0].is_err());
    }

    #[test]
    fn duplicate_keys_are_errors() {
        let d = docs("a: 1\nb: 2\na: 3\n");
        assert!(matches!(
            &d[0],
            Err((Mark { line: 3, col: 1 }, YamlError::DuplicateKey { key })) if key == "a"
        ));
    }

    #[test]
    fn merge_keys_copy_entries() {
        let d = docs("base: &b {x: 1, y: 2}\nm:\n  <<: *b\n  y: 3\n");
        let n = d[0].as_ref().expect("parses");
        let m = n.get("m").expect("m");
        assert_eq!(m.get("x").map(|n| &n.value), Some(&Value::Int(1)));
        assert_eq!(m.get("y").map(|n| &n.value), Some(&Value::Int(3)));
    }

    #[test]
    fn many_documents() {
        let d = docs("a: 1\n---\nb: 2\n---\n");
        assert_eq!(d.iter().filter(|d| d.is_ok()).count(), 3);
    }
}
