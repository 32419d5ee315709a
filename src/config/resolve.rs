//! The second stage of parsing: checks what the user wrote (`raw`) and builds the
//! resolved [`Config`].
//!
//! Owns the resolver shared with `region` and `plan`, the rules of the top level
//! and `[keys]` (required keys, one-of pairs, recipients), names, and the
//! resolution of relative paths against the config file's directory. Errors
//! point at the offending value (or, for a missing key, at the table that lacks
//! it).

use std::ops::Range;
use std::path::{Path, PathBuf};

use toml::Spanned;

use super::error::Locator;
use super::keys::{check_recipient, parse_recipients_file};
use super::raw::{RawConfig, RawKeys, Text};
use super::{Config, ConfigError, KeysConfig, Position, SecretRef};

pub(super) type Result<T> = std::result::Result<T, ConfigError>;

pub(super) fn parse(text: &str, origin: &Path) -> Result<Config> {
    let loc = Locator { text, file: origin };
    let raw: RawConfig = loc.deserialize()?;
    let path = absolute(origin);
    let dir = path.parent().map(Path::to_path_buf).unwrap_or_default();
    Resolver { loc, dir }.config(raw, path)
}

/// `path` made absolute against the current directory, without touching the
/// file system (the file need not exist for `parse`).
fn absolute(path: &Path) -> PathBuf {
    if path.is_absolute() {
        return path.components().collect();
    }
    match std::env::current_dir() {
        Ok(cwd) => cwd.join(path).components().collect(),
        Err(_) => path.to_path_buf(),
    }
}

/// The cache directory when `cache_dir` is not set: `/var/cache/lifeboat` for
/// root, else `$XDG_CACHE_HOME/lifeboat`, else `~/.cache/lifeboat`. Relative
/// XDG/HOME values are ignored, as the XDG spec says.
fn default_cache_dir(
    euid: Option<u32>,
    xdg_cache_home: Option<PathBuf>,
    home: Option<PathBuf>,
) -> Option<PathBuf> {
    if euid == Some(0) {
        return Some(PathBuf::from("/var/cache/lifeboat"));
    }
    if let Some(xdg) = xdg_cache_home.filter(|p| p.is_absolute()) {
        return Some(xdg.join("lifeboat"));
    }
    home.filter(|p| p.is_absolute())
        .map(|home| home.join(".cache").join("lifeboat"))
}

/// The default cache directory for this process (see [`default_cache_dir`]).
pub(super) fn default_cache() -> Option<PathBuf> {
    default_cache_dir(
        effective_uid(),
        std::env::var_os("XDG_CACHE_HOME").map(PathBuf::from),
        std::env::var_os("HOME").map(PathBuf::from),
    )
}

/// The effective user id, read without `unsafe` from the owner of `/proc/self`.
fn effective_uid() -> Option<u32> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        std::fs::metadata("/proc/self").ok().map(|m| m.uid())
    }
    #[cfg(not(unix))]
    {
        None
    }
}

/// The state shared by the resolving code here and in `region` and `plan`.
pub(super) struct Resolver<'a> {
    pub loc: Locator<'a>,
    /// The config file's directory: the anchor of relative paths.
    pub dir: PathBuf,
}

impl Resolver<'_> {
    pub(super) fn err(
        &self,
        span: Range<usize>,
        key: &str,
        problem: impl Into<String>,
    ) -> ConfigError {
        self.loc.error(span, key, problem)
    }

    fn config(&self, raw: RawConfig, path: PathBuf) -> Result<Config> {
        let cache_dir = match &raw.cache_dir {
            Some(value) => self.path(value, "cache_dir")?,
            None => default_cache().unwrap_or_else(|| self.dir.join("cache")),
        };
        let catalog_url = match raw.catalog.and_then(|c| c.into_inner().url) {
            Some(url) => self.catalog_url(&url)?,
            None => format!("sqlite://{}", self.dir.join("lifeboat.db").display()),
        };
        let catalog_url = Some(catalog_url);
        let Some(keys) = raw.keys else {
            return Err(self.err(
                0..0,
                "keys",
                "missing [keys] table: a backup host needs `recipients` (or `recipients_file`) and `writer_key_file` (or `writer_key_env`), a restore host only `identity_file` (or `identity_env`); see docs/config.md",
            ));
        };
        let keys = self.keys(keys)?;
        let regions = self.regions(raw.regions)?;
        let plans = self.plans(raw.plans, &regions)?;
        Ok(Config {
            path,
            cache_dir,
            catalog_url,
            keys,
            regions,
            plans,
        })
    }

    /// A path value resolved against the config's directory; `.` components
    /// are dropped, `..` kept (it means something with symlinks).
    pub(super) fn path(&self, value: &Spanned<String>, key: &str) -> Result<PathBuf> {
        let text = value.get_ref();
        if text.trim().is_empty() {
            return Err(self.err(value.span(), key, "empty path"));
        }
        if text.starts_with('~') {
            return Err(self.err(
                value.span(),
                key,
                format!("{text:?}: `~` is not expanded; write the full path (relative paths are relative to the config file's directory)"),
            ));
        }
        let path = Path::new(text);
        let joined = if path.is_absolute() {
            path.to_path_buf()
        } else {
            self.dir.join(path)
        };
        Ok(joined.components().collect())
    }

    fn catalog_url(&self, value: &Spanned<String>) -> Result<String> {
        const KEY: &str = "catalog.url";
        let url = value.get_ref();
        if let Some(rest) = url
            .strip_prefix("sqlite://")
            .or_else(|| url.strip_prefix("sqlite:"))
        {
            let (file, query) = match rest.split_once('?') {
                Some((file, query)) => (file, format!("?{query}")),
                None => (rest, String::new()),
            };
            if file == ":memory:" {
                return Ok(url.clone());
            }
            if file.is_empty() {
                return Err(self.err(
                    value.span(),
                    KEY,
                    "sqlite URL without a file (e.g. \"sqlite://lifeboat.db\")",
                ));
            }
            let file = self.path(&Spanned::new(value.span(), file.to_string()), KEY)?;
            return Ok(format!("sqlite://{}{query}", file.display()));
        }
        if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            let parsed = url::Url::parse(url)
                .map_err(|e| self.err(value.span(), KEY, format!("not a valid URL ({e})")))?;
            if crate::host::url_has_password(&parsed) {
                return Err(self.err(
                    value.span(),
                    KEY,
                    "the URL contains a password; secrets are never written in the config: remove it and set PGPASSWORD or use a ~/.pgpass file",
                ));
            }
            return Ok(url.clone());
        }
        Err(self.err(
            value.span(),
            KEY,
            format!("unsupported catalog URL {url:?} (expected \"sqlite://FILE\" or \"postgres://HOST/DB\")"),
        ))
    }

    fn keys(&self, raw: Spanned<RawKeys>) -> Result<KeysConfig> {
        let span = raw.span();
        let keys = raw.into_inner();
        let recipients = match (keys.recipients, keys.recipients_file) {
            (Some(_), Some(file)) => {
                return Err(self.err(
                    file.span(),
                    "keys.recipients_file",
                    "set either `recipients` or `recipients_file`, not both",
                ))
            }
            (Some(list), None) => {
                if list.get_ref().is_empty() {
                    return Err(self.err(
                        list.span(),
                        "keys.recipients",
                        "empty: list at least one age recipient (\"age1…\")",
                    ));
                }
                let mut recipients = Vec::new();
                for (i, recipient) in list.into_inner().into_iter().enumerate() {
                    check_recipient(recipient.get_ref()).map_err(|problem| {
                        self.err(recipient.span(), &format!("keys.recipients[{i}]"), problem)
                    })?;
                    recipients.push(recipient.into_inner());
                }
                recipients
            }
            (None, Some(file)) => self.recipients_file(&file)?,
            // A restore host: the repository's recipients are used.
            (None, None) => Vec::new(),
        };
        let writer_key =
            self.secret_ref(keys.writer_key_file, keys.writer_key_env, "writer_key")?;
        let identity = self.secret_ref(keys.identity_file, keys.identity_env, "identity")?;
        if writer_key.is_none() && identity.is_none() {
            return Err(self.err(
                span,
                "keys",
                "neither a writer key nor an identity: a backup host sets `recipients` (or `recipients_file`) and `writer_key_file` (or `writer_key_env`); a restore host needs only `identity_file` (or `identity_env`); see docs/config.md",
            ));
        }
        let pins = self.pins(
            keys.repository_id,
            keys.repository_secrets,
            keys.allow_unsigned,
            keys.writers,
        )?;
        Ok(KeysConfig {
            recipients,
            writer_key,
            identity,
            pins,
        })
    }

    /// `repository_id`, `repository_secrets`, `allow_unsigned` and `[keys.writers]`: the
    /// pins. Writers or a fingerprint without the repository id pin nothing, so they are
    /// refused rather than silently ignored.
    fn pins(
        &self,
        id: Option<Spanned<String>>,
        secrets: Option<Spanned<String>>,
        allow_unsigned: Option<Spanned<bool>>,
        writers: Option<Spanned<std::collections::BTreeMap<String, Spanned<String>>>>,
    ) -> Result<lifeboat_repo::sign::Pins> {
        let mut pins = lifeboat_repo::sign::Pins::default();
        if let Some(id) = &id {
            let s = id.get_ref();
            if s.len() != 32 || !s.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(self.err(
                    id.span(),
                    "keys.repository_id",
                    format!("{s:?} is not a repository id (32 hex digits, as `lifeboat init` and `lifeboat keys list` print it)"),
                ));
            }
        }
        if let Some(f) = &secrets {
            let s = f.get_ref();
            let ok = s
                .strip_prefix("blake3:")
                .is_some_and(|h| h.len() == 64 && h.bytes().all(|b| b.is_ascii_hexdigit()));
            if !ok {
                return Err(self.err(
                    f.span(),
                    "keys.repository_secrets",
                    format!("{s:?} is not a secrets fingerprint (\"blake3:\" and 64 hex digits, as `lifeboat init` prints it)"),
                ));
            }
        }
        if let Some(w) = &writers {
            for (name, key) in w.get_ref() {
                lifeboat_repo::sign::check_writer_name(name)
                    .and_then(|_| lifeboat_repo::sign::parse_public(key.get_ref()).map(|_| ()))
                    .map_err(|e| {
                        self.err(key.span(), &format!("keys.writers.{name}"), e.to_string())
                    })?;
            }
        }
        let stray = secrets
            .as_ref()
            .map(|s| (s.span(), "keys.repository_secrets"))
            .or(writers.as_ref().map(|w| (w.span(), "keys.writers")))
            .or(allow_unsigned
                .as_ref()
                .map(|a| (a.span(), "keys.allow_unsigned")));
        match (id, stray) {
            (None, Some((span, key))) => {
                return Err(self.err(
                    span,
                    key,
                    "pins need keys.repository_id too (the lines `lifeboat init` and `lifeboat keys add-writer` print set both)",
                ))
            }
            (None, None) => return Ok(pins),
            (Some(id), _) => pins.repository_id = Some(id.into_inner()),
        }
        pins.secrets = secrets.map(|s| s.into_inner());
        pins.allow_unsigned = allow_unsigned.is_some_and(|a| *a.get_ref());
        pins.writers = writers
            .map(|w| {
                w.into_inner()
                    .into_iter()
                    .map(|(n, k)| (n, k.into_inner()))
                    .collect()
            })
            .unwrap_or_default();
        if pins.writers.is_empty() {
            tracing::debug!("keys.repository_id pinned without [keys.writers]: every signed object will be refused");
        }
        Ok(pins)
    }

    fn recipients_file(&self, value: &Spanned<String>) -> Result<Vec<String>> {
        const KEY: &str = "keys.recipients_file";
        let path = self.path(value, KEY)?;
        let text = std::fs::read_to_string(&path).map_err(|err| {
            let problem = match err.kind() {
                std::io::ErrorKind::NotFound => "no such file (list recipients in `keys.recipients`, or create the file: one age recipient per line)".to_string(),
                _ => err.to_string(),
            };
            self.err(
                value.span(),
                KEY,
                format!("cannot read {}: {problem}", path.display()),
            )
        })?;
        let recipients =
            parse_recipients_file(&text).map_err(|(line, problem)| ConfigError::Invalid {
                file: path.clone(),
                at: Some(Position { line, column: 1 }),
                key: KEY.to_string(),
                problem,
            })?;
        if recipients.is_empty() {
            return Err(self.err(
                value.span(),
                KEY,
                format!("{} lists no recipients", path.display()),
            ));
        }
        Ok(recipients)
    }

    /// A secret given by `<stem>_file` or `<stem>_env`, at most one of them.
    fn secret_ref(&self, file: Text, env: Text, stem: &str) -> Result<Option<SecretRef>> {
        match (file, env) {
            (Some(_), Some(env)) => Err(self.err(
                env.span(),
                &format!("keys.{stem}_env"),
                format!("set only one of `{stem}_file` and `{stem}_env`"),
            )),
            (Some(file), None) => Ok(Some(SecretRef::File(
                self.path(&file, &format!("keys.{stem}_file"))?,
            ))),
            (None, Some(env)) => Ok(Some(SecretRef::Env(
                self.env_name(&env, &format!("keys.{stem}_env"))?,
            ))),
            (None, None) => Ok(None),
        }
    }

    /// The name of an environment variable that holds a secret (not the secret itself).
    pub(super) fn env_name(&self, env: &Spanned<String>, key: &str) -> Result<String> {
        let name = env.get_ref();
        if name.starts_with("AGE-SECRET-KEY") || name.len() > 100 {
            return Err(self.err(env.span(), key, "this looks like the secret itself: put the *name* of an environment variable that holds it (e.g. \"LIFEBOAT_WRITER_KEY\")"));
        }
        if let Some(bare) = name.strip_prefix('$') {
            return Err(self.err(
                env.span(),
                key,
                format!("write the variable's name without `$`: {bare:?}"),
            ));
        }
        let valid = name
            .chars()
            .enumerate()
            .all(|(i, c)| c == '_' || c.is_ascii_alphabetic() || (i > 0 && c.is_ascii_digit()));
        if name.is_empty() || !valid {
            return Err(self.err(
                env.span(),
                key,
                format!("invalid environment variable name {name:?} (letters, digits and `_`, not starting with a digit)"),
            ));
        }
        Ok(name.clone())
    }

    /// A region or plan name: `[A-Za-z0-9._-]+`, starting with a letter or
    /// digit (so it never reads as a CLI flag or a hidden file).
    pub(super) fn name(&self, value: &Spanned<String>, key: &str) -> Result<String> {
        let name = value.get_ref();
        let charset_ok = name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
        let starts_ok = name
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphanumeric());
        if !charset_ok || !starts_ok {
            return Err(self.err(
                value.span(),
                key,
                format!("invalid name {name:?}: use letters, digits, `.`, `_` and `-`, starting with a letter or digit"),
            ));
        }
        Ok(name.clone())
    }

    /// The validated name of the `what` at `key` (`region`, `plan`), which must not repeat
    /// one already in `seen` (name → line of its first definition).
    pub(super) fn unique_name(
        &self,
        value: &Spanned<String>,
        key: &str,
        what: &str,
        seen: &mut std::collections::HashMap<String, usize>,
    ) -> Result<String> {
        let name = self.name(value, &format!("{key}.name"))?;
        let line = Position::of_offset(self.loc.text, value.span().start).line;
        if let Some(first) = seen.insert(name.clone(), line) {
            return Err(self.err(
                value.span(),
                &format!("{key}.name"),
                format!("duplicate {what} name {name:?} (first defined at line {first}); {what} names must be unique"),
            ));
        }
        Ok(name)
    }

    /// `value`, or an error at the enclosing table (`span`) saying the key is missing.
    pub(super) fn required<'v, T>(
        &self,
        value: Option<&'v Spanned<T>>,
        span: Range<usize>,
        table: &str,
        key: &str,
        hint: &str,
    ) -> Result<&'v Spanned<T>> {
        value.ok_or_else(|| self.err(span, &format!("{table}.{key}"), format!("missing ({hint})")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cache_dir_defaults_follow_root_then_xdg_then_home() {
        let p = |s: &str| Some(PathBuf::from(s));
        assert_eq!(
            default_cache_dir(Some(0), p("/x"), p("/root")),
            p("/var/cache/lifeboat")
        );
        assert_eq!(
            default_cache_dir(Some(1000), p("/x"), p("/home/a")),
            p("/x/lifeboat")
        );
        assert_eq!(
            default_cache_dir(Some(1000), p("rel"), p("/home/a")),
            p("/home/a/.cache/lifeboat")
        );
        assert_eq!(
            default_cache_dir(None, None, p("/home/a")),
            p("/home/a/.cache/lifeboat")
        );
        assert_eq!(default_cache_dir(Some(1000), None, None), None);
    }
}
