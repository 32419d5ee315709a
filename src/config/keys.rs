//! Keys in the config: age recipients, and references to the two secrets.
//!
//! Owns [`KeysConfig`], [`SecretRef`] (where a secret lives: a file or an
//! environment variable — never the config text itself), [`SecretString`] (a loaded
//! secret that is redacted in `Debug` and zeroed on drop, through `secrecy`), and the
//! check of an age X25519 recipient: the common mistakes (a pasted secret key, an SSH key,
//! upper case, a cut copy, a character bech32 does not use) get a message of their own,
//! then age's own parse (`lifeboat_repo::keys::parse_recipient`) decides, so a checksum
//! typo is caught at load time. A secret file that its group or others can access is
//! refused with the `chmod 600` that fixes it, and
//! [`Config::secret_env_names`](super::Config::secret_env_names) lists the variables
//! that children must not inherit.

use std::fmt;
use std::path::PathBuf;

use super::ConfigError;

/// The `[keys]` table, resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeysConfig {
    /// age X25519 recipients (`age1…`), from `recipients` or `recipients_file`. Empty on a
    /// restore host: the repository's own recipients are used (backups and `init` need them).
    pub recipients: Vec<String>,
    /// Lets this host add snapshots; cannot decrypt them. `None` on a restore host, which
    /// reads it from the repository with the identity.
    pub writer_key: Option<SecretRef>,
    /// Decrypts snapshots; configured only where restores run.
    pub identity: Option<SecretRef>,
    /// The repository id, secrets fingerprint and writers this host trusts
    /// (`repository_id`, `repository_secrets`, `[keys.writers]`, `allow_unsigned`); empty
    /// when the host pins nothing (then it warns once per run).
    pub pins: lifeboat_repo::sign::Pins,
}

impl KeysConfig {
    /// Loads the writer key, with an error that says which key and how to get one.
    pub fn load_writer_key(&self) -> Result<SecretString, ConfigError> {
        match &self.writer_key {
            Some(writer) => writer.load_as(Role::WriterKey),
            None => Err(ConfigError::Secret {
                secret: "writer key".to_string(),
                problem: "none configured on this host (backups need it: set keys.writer_key_file or keys.writer_key_env; `lifeboat keys generate --dir DIR` creates DIR/writer.key)".to_string(),
            }),
        }
    }

    /// Loads the identity; an error if this host has none configured.
    pub fn load_identity(&self) -> Result<SecretString, ConfigError> {
        match &self.identity {
            Some(identity) => identity.load_as(Role::Identity),
            None => Err(ConfigError::Secret {
                secret: "identity".to_string(),
                problem: "none configured on this host (restores need it: set keys.identity_file or keys.identity_env to the identity kept by restore operators)".to_string(),
            }),
        }
    }
}

/// Where a secret lives. Relative files were resolved against the config's directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SecretRef {
    File(PathBuf),
    /// The name of an environment variable.
    Env(String),
}

#[derive(Debug, Clone, Copy)]
enum Role {
    Secret,
    WriterKey,
    Identity,
}

impl Role {
    fn name(self) -> &'static str {
        match self {
            Role::Secret => "secret",
            Role::WriterKey => "writer key",
            Role::Identity => "identity",
        }
    }

    fn missing_file_hint(self) -> &'static str {
        match self {
            Role::Secret => "check the path in [keys]; `lifeboat keys generate --dir DIR` writes DIR/writer.key and DIR/identity.txt",
            Role::WriterKey => "run `lifeboat keys generate --dir DIR` and point keys.writer_key_file at DIR/writer.key",
            Role::Identity => "copy the identity from where restore operators keep it, or point keys.identity_file at it; only restore hosts need one",
        }
    }

    /// The config key that references the secret by file instead.
    fn file_key(self) -> &'static str {
        match self {
            Role::Secret => "the matching *_file key",
            Role::WriterKey => "keys.writer_key_file",
            Role::Identity => "keys.identity_file",
        }
    }
}

impl SecretRef {
    /// Reads the secret: the file's content or the variable's value, trimmed of
    /// surrounding whitespace; empty is an error.
    pub fn load(&self) -> Result<SecretString, ConfigError> {
        self.load_as(Role::Secret)
    }

    /// `file /etc/lifeboat/writer.key` or `env LIFEBOAT_WRITER_KEY`.
    pub fn describe(&self) -> String {
        match self {
            SecretRef::File(path) => format!("file {}", path.display()),
            SecretRef::Env(name) => format!("env {name}"),
        }
    }

    fn load_as(&self, role: Role) -> Result<SecretString, ConfigError> {
        let fail = |problem: String| ConfigError::Secret {
            secret: format!("{} {}", role.name(), self.describe()),
            problem,
        };
        let raw = match self {
            SecretRef::File(path) => {
                let bytes = read_private(path).map_err(|err| {
                    fail(match err.kind() {
                        std::io::ErrorKind::NotFound => {
                            format!("no such file ({})", role.missing_file_hint())
                        }
                        std::io::ErrorKind::PermissionDenied => "permission denied (run lifeboat as the user that owns the file; keep it readable by that user only)".to_string(),
                        _ => err.to_string(),
                    })
                })?;
                let bytes = match bytes {
                    Ok(bytes) => bytes,
                    Err(mode) => {
                        return Err(fail(format!(
                            "readable by others than its owner (mode {mode:04o}); a secret must be private: run `chmod 600 {}`",
                            path.display()
                        )))
                    }
                };
                match String::from_utf8(bytes) {
                    Ok(text) => SecretString::new(text),
                    Err(err) => {
                        zeroize::Zeroize::zeroize(&mut err.into_bytes());
                        return Err(fail("not UTF-8 text (expected the key as written by `lifeboat keys generate`)".to_string()));
                    }
                }
            }
            SecretRef::Env(name) => match std::env::var(name) {
                Ok(value) => SecretString::new(value),
                Err(std::env::VarError::NotPresent) => {
                    return Err(fail(format!(
                        "not set (export {name}, or use {} instead)",
                        role.file_key()
                    )))
                }
                Err(std::env::VarError::NotUnicode(_)) => {
                    return Err(fail("not valid UTF-8".to_string()))
                }
            },
        };
        let trimmed = raw.expose().trim();
        if trimmed.is_empty() {
            return Err(fail("is empty".to_string()));
        }
        if trimmed.len() == raw.expose().len() {
            Ok(raw)
        } else {
            Ok(SecretString::new(trimmed.to_string()))
        }
    }
}

/// The content of a secret file, or `Err(mode)` without reading it when its group or
/// others have any access (checked on the open file, so a swap after the check is moot).
fn read_private(path: &std::path::Path) -> std::io::Result<Result<Vec<u8>, u32>> {
    use std::io::Read;
    use std::os::unix::fs::PermissionsExt;
    let mut file = std::fs::File::open(path)?;
    let mode = file.metadata()?.permissions().mode() & 0o7777;
    if mode & 0o077 != 0 {
        return Ok(Err(mode));
    }
    let mut bytes = Vec::new();
    file.read_to_end(&mut bytes)?;
    Ok(Ok(bytes))
}

impl super::Config {
    /// Environment variables that hold lifeboat's secrets: the key references given by
    /// variable, every plan's database password variable, the webhook URLs and
    /// `PGPASSWORD` (lifeboat's own catalog password, if given that way). Children
    /// (`pg_dump`, command sources, restore, verify and drill commands) never see them;
    /// `pg_dump`/`pg_restore` keep `PGPASSWORD` when no password is configured (see
    /// `source::postgres::libpq_scrub`).
    pub fn secret_env_names(&self) -> Vec<String> {
        let mut names: Vec<String> = [WEBHOOK_ENV, SLACK_WEBHOOK_ENV, "PGPASSWORD"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let refs = [self.keys.writer_key.as_ref(), self.keys.identity.as_ref()]
            .into_iter()
            .flatten()
            .chain(self.plans.iter().filter_map(|p| match &p.source {
                super::SourceConfig::Postgres { password, .. } => password.as_ref(),
                _ => None,
            }));
        for r in refs {
            if let SecretRef::Env(name) = r {
                if !names.contains(name) {
                    names.push(name.clone());
                }
            }
        }
        names
    }
}

/// The variable `daemon` and `run-due` read the generic alert webhook from.
pub const WEBHOOK_ENV: &str = "LIFEBOAT_WEBHOOK_URL";
/// The variable `daemon` and `run-due` read the Slack webhook from.
pub const SLACK_WEBHOOK_ENV: &str = "LIFEBOAT_SLACK_WEBHOOK_URL";

/// A loaded secret. `Debug` is redacted, there is no `Display`, `Clone` or
/// `Serialize`, and the bytes are overwritten with zeros when it is dropped
/// (`secrecy::SecretString`, which zeroes through `zeroize`).
pub struct SecretString(secrecy::SecretString);

impl SecretString {
    pub fn new(secret: String) -> SecretString {
        SecretString(secret.into())
    }

    /// The secret itself; keep the borrow short and never log it.
    pub fn expose(&self) -> &str {
        secrecy::ExposeSecret::expose_secret(&self.0)
    }
}

impl From<String> for SecretString {
    fn from(secret: String) -> SecretString {
        SecretString::new(secret)
    }
}

impl fmt::Debug for SecretString {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SecretString(<redacted>)")
    }
}

/// The characters of bech32's data part (BIP-173).
const BECH32_ALPHABET: &str = "qpzry9x8gf2tvdw0s3jn54khce6mua7l";
/// `age1` + 52 characters of data (32 bytes) + 6 of checksum.
const RECIPIENT_LEN: usize = 62;

/// Checks that `recipient` is an age X25519 recipient; the error is the problem, phrased
/// for the user.
pub(crate) fn check_recipient(recipient: &str) -> Result<(), String> {
    if recipient.starts_with("AGE-SECRET-KEY-") {
        return Err("this is an age identity (a secret key), not a recipient: put its public key here (`age-keygen -y FILE` prints it) and keep the identity out of the config".to_string());
    }
    if recipient.starts_with("ssh-") {
        return Err(
            "SSH keys are not supported as recipients: use an age X25519 recipient (age1…)"
                .to_string(),
        );
    }
    if recipient.to_ascii_lowercase().starts_with("age1")
        && recipient != recipient.to_ascii_lowercase()
    {
        return Err(format!(
            "invalid age recipient {recipient:?}: must be lowercase"
        ));
    }
    let Some(data) = recipient.strip_prefix("age1") else {
        return Err(format!(
            "invalid age recipient {recipient:?}: expected an age X25519 recipient starting with \"age1\" (`age-keygen` prints one as \"Public key: age1…\")"
        ));
    };
    if recipient.len() != RECIPIENT_LEN {
        return Err(format!(
            "invalid age recipient {recipient:?}: expected {RECIPIENT_LEN} characters, found {} (was it cut when copied?)",
            recipient.chars().count()
        ));
    }
    if let Some((i, c)) = data
        .chars()
        .enumerate()
        .find(|(_, c)| !BECH32_ALPHABET.contains(*c))
    {
        return Err(format!(
            "invalid age recipient {recipient:?}: character {c:?} at position {} is not allowed in bech32",
            i + 5
        ));
    }
    // Shape and alphabet are right: what age still rejects is the checksum (or padding).
    if lifeboat_repo::keys::parse_recipient(recipient).is_err() {
        return Err(format!(
            "invalid age recipient {recipient:?}: checksum mismatch (a typo? copy the recipient again)"
        ));
    }
    Ok(())
}

/// Recipients from a recipients file: one per line, blank lines and lines
/// starting with `#` ignored. Errors carry the 1-based line and the problem.
pub(crate) fn parse_recipients_file(text: &str) -> Result<Vec<String>, (usize, String)> {
    let mut recipients = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        check_recipient(line).map_err(|problem| (i + 1, problem))?;
        recipients.push(line.to_string());
    }
    Ok(recipients)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Public keys printed by `age-keygen` (age 1.1.1).
    const RECIPIENT_A: &str = "age153dvxhe4ztwcf97ft5qf0jthzrzm7namyxvx625x0cn6e952qu3qq4y0hq";
    const RECIPIENT_B: &str = "age1vru6qhm2mw52p7hham20ys8m4esx5hpzj0fy0s0ganq3mvlktfds8hc7ru";

    #[test]
    fn real_recipients_pass_the_shape_check() {
        assert_eq!(check_recipient(RECIPIENT_A), Ok(()));
        assert_eq!(check_recipient(RECIPIENT_B), Ok(()));
    }

    #[test]
    fn malformed_recipients_are_explained() {
        let typo = RECIPIENT_A.replace("qq4y0hq", "qq4y0hp");
        assert!(check_recipient(&typo).unwrap_err().contains("checksum"));
        assert!(check_recipient(&RECIPIENT_A[..40])
            .unwrap_err()
            .contains("62 characters"));
        assert!(check_recipient(&RECIPIENT_A.to_uppercase())
            .unwrap_err()
            .contains("lowercase"));
        assert!(check_recipient(
            "AGE-SECRET-KEY-1Z00Q2DU2XQ58UYTUKNPPHGVP8KAAMXLZEKXY76FDMA0YMP4GTZHQEKSKD8"
        )
        .unwrap_err()
        .contains("secret key"));
        assert!(check_recipient("ssh-ed25519 AAAA")
            .unwrap_err()
            .contains("SSH"));
        assert!(check_recipient("").unwrap_err().contains("\"age1\""));
        let bad_char = format!("{}b{}", &RECIPIENT_A[..10], &RECIPIENT_A[11..]);
        assert!(check_recipient(&bad_char)
            .unwrap_err()
            .contains("position 11"));
    }

    #[test]
    fn recipients_files_skip_comments_and_report_lines() {
        let text = format!("# ops team\n\n{RECIPIENT_A}\n  {RECIPIENT_B}  \n");
        assert_eq!(
            parse_recipients_file(&text),
            Ok(vec![RECIPIENT_A.to_string(), RECIPIENT_B.to_string()])
        );
        let (line, problem) = parse_recipients_file("# x\nage1nope\n").unwrap_err();
        assert_eq!(line, 2);
        assert!(problem.contains("age1nope"));
    }

    #[test]
    fn secret_string_debug_is_redacted() {
        let secret = SecretString::new("AGE-SECRET-KEY-1HUNTER2".to_string());
        let debug = format!("{secret:?}");
        assert_eq!(debug, "SecretString(<redacted>)");
        assert!(!debug.contains("HUNTER2"));
        assert_eq!(secret.expose(), "AGE-SECRET-KEY-1HUNTER2");
        let keys_debug = format!(
            "{:?}",
            Some(SecretString::new("AGE-SECRET-KEY-1HUNTER2".to_string()))
        );
        assert!(!keys_debug.contains("HUNTER2"));
    }

    fn keys_of(path: &std::path::Path) -> KeysConfig {
        KeysConfig {
            recipients: vec![RECIPIENT_A.to_string()],
            writer_key: Some(SecretRef::File(path.to_path_buf())),
            identity: None,
            pins: Default::default(),
        }
    }

    #[test]
    fn secret_files_are_trimmed_and_failures_say_what_to_do() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("writer.key");
        std::fs::write(&path, "  s3cret\n").unwrap();
        // Written 0644 by `fs::write` (umask 022): refused, with the fix.
        let err = keys_of(&path).load_writer_key().unwrap_err().to_string();
        assert!(err.contains("mode 0644"), "{err}");
        assert!(
            err.contains(&format!("chmod 600 {}", path.display())),
            "{err}"
        );
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o640)).unwrap();
        let err = SecretRef::File(path.clone())
            .load()
            .unwrap_err()
            .to_string();
        assert!(err.contains("mode 0640"), "{err}");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        let secret = SecretRef::File(path.clone()).load().unwrap();
        assert_eq!(secret.expose(), "s3cret");

        std::fs::write(&path, "\n").unwrap();
        let err = SecretRef::File(path.clone())
            .load()
            .unwrap_err()
            .to_string();
        assert!(err.contains("is empty"), "{err}");

        let keys = KeysConfig {
            recipients: vec![RECIPIENT_A.to_string()],
            writer_key: Some(SecretRef::File(dir.path().join("missing.key"))),
            identity: None,
            pins: Default::default(),
        };
        let err = keys.load_writer_key().unwrap_err().to_string();
        assert!(err.starts_with("writer key file "), "{err}");
        assert!(err.contains("missing.key: no such file"), "{err}");
        assert!(err.contains("lifeboat keys generate --dir DIR"), "{err}");
        let err = keys.load_identity().unwrap_err().to_string();
        assert!(err.contains("keys.identity_file"), "{err}");
    }

    #[test]
    fn secret_env_vars_are_read_and_described() {
        let name = "LIFEBOAT_CONFIG_TEST_SECRET_ENV";
        let secret_ref = SecretRef::Env(name.to_string());
        assert_eq!(secret_ref.describe(), format!("env {name}"));
        let err = secret_ref.load().unwrap_err().to_string();
        assert!(err.contains("not set"), "{err}");
        // Only this test touches this variable.
        std::env::set_var(name, "value\n");
        assert_eq!(secret_ref.load().unwrap().expose(), "value");
        std::env::remove_var(name);
    }
}
