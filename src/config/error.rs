//! Config errors and where they point.
//!
//! Owns [`ConfigError`], the conversion of byte offsets into `line:column`, and the
//! mapping of a `toml` deserialization error back to the dotted key it concerns
//! (`plans[1].objectives.rpo`). toml's serde errors carry a byte span but no key
//! path, so on such an error the text is parsed a second time into a tree that keeps
//! the span of every key and value, and the innermost node containing the span
//! names the key. That second parse only happens on the error path.

use std::fmt;
use std::ops::Range;
use std::path::{Path, PathBuf};

use serde::de::{Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use toml::Spanned;

/// A 1-based position in a text file; the column counts characters, not bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Position {
    pub line: usize,
    pub column: usize,
}

impl Position {
    /// The position of byte `offset` in `text` (clamped to the text's end and
    /// moved back to a character boundary, so any offset is accepted).
    pub fn of_offset(text: &str, offset: usize) -> Position {
        let mut offset = offset.min(text.len());
        while !text.is_char_boundary(offset) {
            offset -= 1;
        }
        let before = &text[..offset];
        let line = before.matches('\n').count() + 1;
        let line_start = before.rfind('\n').map_or(0, |i| i + 1);
        let column = before[line_start..].chars().count() + 1;
        Position { line, column }
    }
}

/// Everything that can go wrong loading a config or something it references.
///
/// Variants are the cases a caller may branch on; each one's `Display` is a
/// complete, user-facing message (no need to print the `source()` chain).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The config file (or a file it references, such as `keys.recipients_file`
    /// outside of a parse) could not be read.
    Read {
        path: PathBuf,
        io: std::io::Error,
        hint: String,
    },
    /// The text is not a valid config: `file:line:column: key: problem`.
    Invalid {
        file: PathBuf,
        at: Option<Position>,
        /// Dotted key path such as `plans[0].source.path`; empty for a TOML syntax error.
        key: String,
        problem: String,
    },
    /// [`Config::plan`](super::Config::plan) was asked for a plan the file does not define.
    UnknownPlan { name: String, known: Vec<String> },
    /// [`Config::region`](super::Config::region) was asked for a region the file does not define.
    UnknownRegion { name: String, known: Vec<String> },
    /// A referenced secret (writer key, identity) could not be loaded.
    Secret {
        /// What and where, e.g. `writer key file /etc/lifeboat/writer.key`.
        secret: String,
        problem: String,
    },
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConfigError::Read { path, io, hint } => {
                write!(f, "{}: {io}", path.display())?;
                if !hint.is_empty() {
                    write!(f, " ({hint})")?;
                }
                Ok(())
            }
            ConfigError::Invalid {
                file,
                at,
                key,
                problem,
            } => {
                write!(f, "{}", file.display())?;
                if let Some(at) = at {
                    write!(f, ":{}:{}", at.line, at.column)?;
                }
                if !key.is_empty() {
                    write!(f, ": {key}")?;
                }
                write!(f, ": {problem}")
            }
            ConfigError::UnknownPlan { name, known } => {
                write!(f, "unknown plan {name:?} ")?;
                write_known(f, "plans", known)
            }
            ConfigError::UnknownRegion { name, known } => {
                write!(f, "unknown region {name:?} ")?;
                write_known(f, "regions", known)
            }
            ConfigError::Secret { secret, problem } => write!(f, "{secret}: {problem}"),
        }
    }
}

fn write_known(f: &mut fmt::Formatter<'_>, what: &str, known: &[String]) -> fmt::Result {
    if known.is_empty() {
        write!(f, "(the config defines no {what})")
    } else {
        write!(f, "(the config defines {what}: {})", known.join(", "))
    }
}

/// Builds [`ConfigError::Invalid`] for one config text: knows the file name to
/// print and the text to turn spans into positions.
pub(crate) struct Locator<'a> {
    pub text: &'a str,
    pub file: &'a Path,
}

impl Locator<'_> {
    pub fn error(
        &self,
        span: Range<usize>,
        key: impl Into<String>,
        problem: impl Into<String>,
    ) -> ConfigError {
        ConfigError::Invalid {
            file: self.file.to_path_buf(),
            at: Some(Position::of_offset(self.text, span.start)),
            key: key.into(),
            problem: problem.into(),
        }
    }

    /// Turns a toml error into a located one, naming the key it concerns and
    /// rephrasing serde's wording where a better one is known.
    pub fn toml_error(&self, err: &toml::de::Error) -> ConfigError {
        let message = plain_words(err.message());
        let Some(span) = err.span() else {
            return ConfigError::Invalid {
                file: self.file.to_path_buf(),
                at: None,
                key: String::new(),
                problem: message,
            };
        };
        let unknown = unknown_field(&message);
        // Should the tree walk fail, an unknown key still names itself.
        let key = key_path_at(self.text, span.start)
            .or_else(|| unknown.map(|(name, _)| name.to_string()))
            .unwrap_or_default();
        let problem = match unknown {
            Some((name, expected)) => {
                let mut problem = unknown_key_problem(name, expected);
                if key.contains('.') && TOP_LEVEL_KEYS.contains(&name) {
                    problem.push_str(&format!(
                        "; `{name}` is a top-level key: move it above the first [table] header"
                    ));
                }
                problem
            }
            None => message,
        };
        self.error(span, key, problem)
    }
}

/// serde's message in the user's terms: no Rust type names, on one line.
fn plain_words(message: &str) -> String {
    let mut message = message.trim_end().replace('\n', "; ");
    if let Some(at) = message.find("expected struct Raw") {
        message.replace_range(at.., "expected a table");
    }
    message
        .replace(
            "expected u32",
            "expected a whole number from 0 to 4294967295",
        )
        .replace("expected a boolean", "expected true or false")
}

/// The keys of the file's top level, which TOML assigns to the last table
/// header above them.
const TOP_LEVEL_KEYS: &[&str] = &["cache_dir", "catalog", "keys", "regions", "plans"];

/// Splits serde's "unknown field `x`, expected ..." into the name and the rest.
fn unknown_field(message: &str) -> Option<(&str, &str)> {
    let rest = message.strip_prefix("unknown field `")?;
    let (name, rest) = rest.split_once('`')?;
    Some((name, rest.trim_start_matches(',').trim()))
}

/// The message for a key that the schema does not have, with a pointed hint when
/// the key looks like an attempt to write a secret inline.
pub(crate) fn unknown_key_problem(name: &str, expected: &str) -> String {
    let mut problem = format!("unknown key `{name}`");
    if !expected.is_empty() {
        problem.push_str(&format!(" ({expected})"));
    }
    if let Some(hint) = inline_secret_hint(name) {
        problem.push_str("; ");
        problem.push_str(hint);
    }
    problem
}

fn inline_secret_hint(name: &str) -> Option<&'static str> {
    let lower = name.to_ascii_lowercase();
    if lower.ends_with("_file") || lower.ends_with("_env") {
        return None;
    }
    if lower.contains("writer") {
        Some("secrets are never written in the config: use `writer_key_file = \"PATH\"` or `writer_key_env = \"VAR\"`")
    } else if lower.contains("identity") || lower.contains("secret_key") {
        Some("secrets are never written in the config: use `identity_file = \"PATH\"` or `identity_env = \"VAR\"`")
    } else if ["password", "passphrase", "secret", "token", "private"]
        .iter()
        .any(|word| lower.contains(word))
    {
        Some("secrets are never written in the config: reference them with a `*_file` or `*_env` key")
    } else {
        None
    }
}

/// The dotted path (`plans[0].source.path`) of the innermost key or value whose
/// span contains `offset`, or `None` if the text does not parse as TOML.
pub(crate) fn key_path_at(text: &str, offset: usize) -> Option<String> {
    let root: Node = toml::from_str(text).ok()?;
    let mut best: Option<(usize, String)> = None;
    if let Node::Table(entries) = &root {
        search_table(entries, "", offset, &mut best);
    }
    best.map(|(_, path)| path)
}

fn consider(span: Range<usize>, path: &str, offset: usize, best: &mut Option<(usize, String)>) {
    if span.start <= offset && offset < span.end.max(span.start + 1) {
        let width = span.end - span.start;
        if best.as_ref().is_none_or(|(w, _)| width <= *w) {
            *best = Some((width, path.to_string()));
        }
    }
}

fn search_table(
    entries: &[(Spanned<String>, Spanned<Node>)],
    prefix: &str,
    offset: usize,
    best: &mut Option<(usize, String)>,
) {
    for (key, value) in entries {
        let path = if prefix.is_empty() {
            key.get_ref().clone()
        } else {
            format!("{prefix}.{}", key.get_ref())
        };
        consider(value.span(), &path, offset, best);
        // A key's own span beats its value's: errors about a key point at the key.
        consider(key.span(), &path, offset, best);
        search_node(value.get_ref(), &path, offset, best);
    }
}

fn search_node(node: &Node, path: &str, offset: usize, best: &mut Option<(usize, String)>) {
    match node {
        Node::Table(entries) => search_table(entries, path, offset, best),
        Node::Array(items) => {
            for (i, item) in items.iter().enumerate() {
                let path = format!("{path}[{i}]");
                consider(item.span(), &path, offset, best);
                search_node(item.get_ref(), &path, offset, best);
            }
        }
        Node::Leaf => {}
    }
}

/// A TOML document reduced to its shape and spans.
enum Node {
    Table(Vec<(Spanned<String>, Spanned<Node>)>),
    Array(Vec<Spanned<Node>>),
    Leaf,
}

impl<'de> Deserialize<'de> for Node {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(NodeVisitor)
    }
}

struct NodeVisitor;

impl<'de> Visitor<'de> for NodeVisitor {
    type Value = Node;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any TOML value")
    }

    fn visit_bool<E>(self, _: bool) -> Result<Node, E> {
        Ok(Node::Leaf)
    }
    fn visit_i64<E>(self, _: i64) -> Result<Node, E> {
        Ok(Node::Leaf)
    }
    fn visit_u64<E>(self, _: u64) -> Result<Node, E> {
        Ok(Node::Leaf)
    }
    fn visit_f64<E>(self, _: f64) -> Result<Node, E> {
        Ok(Node::Leaf)
    }
    fn visit_str<E>(self, _: &str) -> Result<Node, E> {
        Ok(Node::Leaf)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Node, A::Error> {
        let mut items = Vec::new();
        while let Some(item) = seq.next_element::<Spanned<Node>>()? {
            items.push(item);
        }
        Ok(Node::Array(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Node, A::Error> {
        let mut entries = Vec::new();
        loop {
            // A TOML datetime reaches us as a one-entry map whose key is no
            // spanned string; it is a leaf like any other scalar.
            let key = match map.next_key::<Spanned<String>>() {
                Ok(Some(key)) => key,
                Ok(None) => break,
                Err(_) => return Ok(Node::Leaf),
            };
            let value = map.next_value::<Spanned<Node>>()?;
            entries.push((key, value));
        }
        Ok(Node::Table(entries))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_count_lines_and_characters() {
        let text = "a = 1\nbé = 2\n";
        assert_eq!(
            Position::of_offset(text, 0),
            Position { line: 1, column: 1 }
        );
        // "bé" is 3 bytes; the '=' after it is the 4th character of line 2.
        let eq = text.rfind('=').unwrap();
        assert_eq!(
            Position::of_offset(text, eq),
            Position { line: 2, column: 4 }
        );
        assert_eq!(Position::of_offset(text, 999).line, 3);
    }

    #[test]
    fn key_paths_name_nested_keys_and_array_elements() {
        let text = "[[plans]]\nname = \"a\"\n[[plans]]\nname = \"b\"\nobjectives = { rpo = \"x\" }\n[plans.source]\npath = \"/p\"\n";
        let at = |needle: &str| key_path_at(text, text.find(needle).unwrap());
        assert_eq!(at("\"x\"").as_deref(), Some("plans[1].objectives.rpo"));
        assert_eq!(at("rpo").as_deref(), Some("plans[1].objectives.rpo"));
        assert_eq!(at("\"/p\"").as_deref(), Some("plans[1].source.path"));
        assert_eq!(at("\"b\"").as_deref(), Some("plans[1].name"));
    }

    #[test]
    fn inline_secret_names_get_a_hint() {
        assert!(unknown_key_problem("writer_key", "").contains("writer_key_file"));
        assert!(unknown_key_problem("identity", "").contains("identity_env"));
        assert!(unknown_key_problem("password", "").contains("*_file"));
        assert!(!unknown_key_problem("naem", "").contains("secret"));
    }
}
