//! Config errors and where they point.
//!
//! Owns [`ConfigError`], the conversion of byte offsets into `line:column`, and the
//! location of a `toml` deserialization error: toml's error carries the byte span
//! (`file:line:col`), `serde_path_to_error` the dotted key serde was in
//! (`plans[1].objectives.rpo`), in one parse.

use std::fmt;
use std::ops::Range;
use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;
use serde_path_to_error::{Path as KeyPath, Segment};

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

    /// Deserializes the config text, locating any error.
    pub fn from_toml<T: DeserializeOwned>(&self) -> Result<T, ConfigError> {
        serde_path_to_error::deserialize(toml::Deserializer::new(self.text))
            .map_err(|err| self.toml_error(err.inner(), err.path()))
    }

    /// Turns a toml error into a located one, naming the key it concerns and
    /// rephrasing serde's wording where a better one is known.
    fn toml_error(&self, err: &toml::de::Error, path: &KeyPath) -> ConfigError {
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
        let mut key = dotted(path);
        // An unknown key is named by the error, not yet by the path.
        if let Some((name, _)) = unknown {
            if !(key == name || key.ends_with(&format!(".{name}"))) {
                key = if key.is_empty() {
                    name.to_string()
                } else {
                    format!("{key}.{name}")
                };
            }
        }
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

/// The dotted key (`plans[0].source.path`) of a serde path, without the private keys
/// through which toml hands over spans and datetimes (`$__serde_spanned_private_value`).
fn dotted(path: &KeyPath) -> String {
    let mut out = String::new();
    for segment in path.iter() {
        match segment {
            Segment::Seq { index } => out.push_str(&format!("[{index}]")),
            Segment::Map { key } if key.starts_with("$__") => {}
            Segment::Map { key } | Segment::Enum { variant: key } => {
                if !out.is_empty() {
                    out.push('.');
                }
                out.push_str(key);
            }
            Segment::Unknown => {}
        }
    }
    out
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
        #[derive(Debug, serde::Deserialize)]
        #[allow(dead_code)]
        struct Plan {
            name: toml::Spanned<String>,
            objectives: Option<std::collections::BTreeMap<String, toml::Spanned<u32>>>,
        }
        #[derive(Debug, serde::Deserialize)]
        #[allow(dead_code)]
        struct Doc {
            plans: Vec<Plan>,
        }
        let file = std::path::Path::new("t.toml");
        let at = |text: &str| {
            let loc = Locator { text, file };
            match loc.from_toml::<Doc>().unwrap_err() {
                ConfigError::Invalid { key, at, .. } => (key, at.map(|p| p.line)),
                other => panic!("{other}"),
            }
        };
        let text =
            "[[plans]]\nname = \"a\"\n[[plans]]\nname = \"b\"\nobjectives = { rpo = \"x\" }\n";
        assert_eq!(at(text), ("plans[1].objectives.rpo".into(), Some(5)));
        let text = "[[plans]]\nname = \"a\"\n[[plans]]\nname = 7\n";
        assert_eq!(at(text), ("plans[1].name".into(), Some(4)));
    }

    #[test]
    fn inline_secret_names_get_a_hint() {
        assert!(unknown_key_problem("writer_key", "").contains("writer_key_file"));
        assert!(unknown_key_problem("identity", "").contains("identity_env"));
        assert!(unknown_key_problem("password", "").contains("*_file"));
        assert!(!unknown_key_problem("naem", "").contains("secret"));
    }
}
