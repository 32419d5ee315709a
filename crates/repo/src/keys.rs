//! Keys: who can add snapshots and who can read them.
//!
//! * **Recipients** (age X25519 public keys, `age1…`) — every pack and manifest is encrypted
//!   to them. Public; a backup host holds them.
//! * **Identity** (age X25519 secret, `AGE-SECRET-KEY-1…`) — decrypts packs and manifests.
//!   Only restore operators (or escrow) hold it.
//! * **Writer key** — also an age X25519 identity, kept on backup hosts. It unwraps the
//!   repository secrets ([`crate::secrets`]: chunk-id key, index key, chunker seed), so a
//!   backup host can deduplicate without being able to decrypt data or file names. Manifests
//!   are encrypted to the recipients *and* the writer's recipient, so a backup host can list
//!   snapshots (plan, time, sizes) but never read a file tree.
//!
//! In format v1 the repository secrets were derived from the writer key's text (BLAKE3
//! `derive_key`, [`WriterKey::v1_secrets`]) and the repository stored the writer key itself
//! encrypted to the recipients (`keys/writer.age`); format v2 draws them at random and wraps
//! them (see `docs/FORMAT.md`).
//!
//! Secret material lives in types without `Debug` output of their contents.

use std::fmt;
use std::io::{Read, Write};
use std::str::FromStr;

use age::secrecy::ExposeSecret;
use age::x25519;

use crate::error::{RepoError, Result};

const CHUNK_ID_CONTEXT: &str = "lifeboat v1 chunk id";
const INDEX_KEY_CONTEXT: &str = "lifeboat v1 index key";
const CHUNKER_SEED_CONTEXT: &str = "lifeboat v1 chunker seed";

/// The writer secret: an age identity that unwraps the repository secrets and reads
/// manifests, never data.
pub struct WriterKey {
    identity: x25519::Identity,
}

impl fmt::Debug for WriterKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "WriterKey(recipient {}, <redacted>)", self.recipient())
    }
}

impl WriterKey {
    pub fn generate() -> WriterKey {
        Self::from_identity(x25519::Identity::generate())
    }

    fn from_identity(identity: x25519::Identity) -> WriterKey {
        WriterKey { identity }
    }

    /// Format v1's chunk-id key, index key and chunker seed, derived from this key's text
    /// ([`crate::secrets`] makes them `RepoSecrets` through `WriterKey::v1_secrets`).
    pub(crate) fn v1_derivation(&self) -> ([u8; 32], [u8; 32], u64) {
        let secret = self.identity.to_string();
        let bytes = secret.expose_secret().as_bytes();
        let chunk_key = blake3::derive_key(CHUNK_ID_CONTEXT, bytes);
        let index_key = blake3::derive_key(INDEX_KEY_CONTEXT, bytes);
        let k = blake3::derive_key(CHUNKER_SEED_CONTEXT, &chunk_key);
        let seed = u64::from_le_bytes(k[..8].try_into().expect("8 bytes"));
        (chunk_key, index_key, seed)
    }

    /// BLAKE3 `derive_key(context, key text)`: the writer's signing seed ([`crate::sign`]).
    pub(crate) fn derive(&self, context: &str) -> [u8; 32] {
        let secret = self.identity.to_string();
        blake3::derive_key(context, secret.expose_secret().as_bytes())
    }

    /// Parse a writer key file (age identity file format; `#` comments allowed).
    pub fn parse(text: &str) -> Result<WriterKey> {
        parse_identity_line(text, "writer key").map(Self::from_identity)
    }

    /// The key file's text: comments and the secret line. Contains the secret.
    pub fn to_file_text(&self) -> String {
        identity_file_text(&self.identity, "lifeboat writer key")
    }

    pub fn recipient(&self) -> x25519::Recipient {
        self.identity.to_public()
    }

    /// As age identities, to decrypt manifests and the repository secrets.
    pub fn keys(&self) -> &[x25519::Identity] {
        std::slice::from_ref(&self.identity)
    }
}

/// One or more age identities that decrypt the repository: the current recipient epoch's
/// and, after a rotation, older epochs' (an identity file may hold several key lines, one
/// per epoch; `age -d -i` reads such a file the same way).
pub struct Identity(Vec<x25519::Identity>);

impl fmt::Debug for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let public: Vec<String> = self.0.iter().map(|i| i.to_public().to_string()).collect();
        write!(
            f,
            "Identity(recipients [{}], <redacted>)",
            public.join(", ")
        )
    }
}

impl Identity {
    pub fn generate() -> Identity {
        Identity(vec![x25519::Identity::generate()])
    }

    /// Parse an age identity file (as written by `age-keygen` or `lifeboat keys generate`):
    /// one or more `AGE-SECRET-KEY-1…` lines, `#` comments allowed.
    pub fn parse(text: &str) -> Result<Identity> {
        parse_identity_lines(text, "identity").map(Identity)
    }

    /// Several identity files (or `--identity` given more than once) as one.
    pub fn merge(parts: Vec<Identity>) -> Option<Identity> {
        let all: Vec<x25519::Identity> = parts.into_iter().flat_map(|i| i.0).collect();
        (!all.is_empty()).then_some(Identity(all))
    }

    /// The file text of the first (for a generated identity, the only) key.
    pub fn to_file_text(&self) -> String {
        identity_file_text(&self.0[0], "lifeboat identity")
    }

    /// The public key of the first key line (the one `keys generate` wrote).
    pub fn recipient(&self) -> x25519::Recipient {
        self.0[0].to_public()
    }

    /// Every key's public key.
    pub fn recipients(&self) -> Vec<x25519::Recipient> {
        self.0.iter().map(|i| i.to_public()).collect()
    }

    pub fn keys(&self) -> &[x25519::Identity] {
        &self.0
    }
}

fn identity_file_text(identity: &x25519::Identity, what: &str) -> String {
    format!(
        "# {what}\n# public key: {}\n{}\n",
        identity.to_public(),
        identity.to_string().expose_secret()
    )
}

fn parse_identity_lines(text: &str, what: &str) -> Result<Vec<x25519::Identity>> {
    let lines: Vec<&str> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .collect();
    if lines.is_empty() {
        return Err(RepoError::Key(format!(
            "{what}: no AGE-SECRET-KEY-1… line found"
        )));
    }
    lines
        .iter()
        .enumerate()
        .map(|(n, line)| {
            // Never echo the line: it is a secret.
            x25519::Identity::from_str(line).map_err(|_| {
                RepoError::Key(format!(
                    "{what}: key line {} is not a valid age X25519 identity (AGE-SECRET-KEY-1…)",
                    n + 1
                ))
            })
        })
        .collect()
}

fn parse_identity_line(text: &str, what: &str) -> Result<x25519::Identity> {
    let mut keys = parse_identity_lines(text, what)?;
    if keys.len() > 1 {
        return Err(RepoError::Key(format!(
            "{what}: more than one key line; lifeboat expects exactly one"
        )));
    }
    Ok(keys.remove(0))
}

/// Parse an `age1…` recipient.
pub fn parse_recipient(s: &str) -> Result<x25519::Recipient> {
    x25519::Recipient::from_str(s.trim()).map_err(|e| {
        RepoError::Key(format!(
            "recipient {s:?} is not a valid age X25519 recipient: {e}"
        ))
    })
}

/// What a host holds. Backup hosts: recipients + writer. Restore hosts: identity (+ recipients);
/// the repository secrets come from the repository's `keys/` objects either way.
#[derive(Debug)]
pub struct Keyring {
    pub recipients: Vec<x25519::Recipient>,
    pub writer: Option<WriterKey>,
    pub identity: Option<Identity>,
}

impl Keyring {
    pub fn can_decrypt(&self) -> bool {
        self.identity.is_some()
    }
}

/// Encrypt `plaintext` to `recipients` as one standard age file.
pub fn age_encrypt(recipients: &[&x25519::Recipient], plaintext: &[u8]) -> Result<Vec<u8>> {
    let mut out = Vec::with_capacity(plaintext.len() + 256 + plaintext.len() / 4096);
    let mut w = age_writer(recipients, &mut out)?;
    w.write_all(plaintext)?;
    w.finish()?;
    Ok(out)
}

/// Serialize a key file (pretty JSON, kept in zeroized memory) and encrypt it to
/// `recipients`: how every key object that holds a secret is written.
pub fn seal_json<T: serde::Serialize>(
    recipients: &[&x25519::Recipient],
    file: &T,
) -> Result<Vec<u8>> {
    let plain = zeroize::Zeroizing::new(
        serde_json::to_vec_pretty(file).map_err(|e| RepoError::Invalid(e.to_string()))?,
    );
    age_encrypt(recipients, &plain)
}

/// A streaming age encryptor to `recipients` over `out`.
pub fn age_writer<W: Write>(
    recipients: &[&x25519::Recipient],
    out: W,
) -> Result<age::stream::StreamWriter<W>> {
    let enc = age::Encryptor::with_recipients(recipients.iter().map(|r| *r as &dyn age::Recipient))
        .map_err(|e| RepoError::Key(format!("age encryption setup failed: {e}")))?;
    Ok(enc.wrap_output(out)?)
}

/// Decrypt one age file with any of `identities`. `what` names the object for errors.
pub fn age_decrypt(
    identities: &[x25519::Identity],
    ciphertext: &[u8],
    what: &str,
) -> Result<Vec<u8>> {
    let dec = age::Decryptor::new_buffered(ciphertext)
        .map_err(|e| RepoError::Corrupt(format!("{what}: not a valid age file: {e}")))?;
    let mut reader = dec
        .decrypt(identities.iter().map(|i| i as &dyn age::Identity))
        .map_err(|e| match e {
            age::DecryptError::NoMatchingKeys => RepoError::WrongKey(format!(
                "{what}: the identity does not match any recipient of this repository"
            )),
            e => RepoError::Corrupt(format!("{what}: {e}")),
        })?;
    let mut out = Vec::with_capacity(ciphertext.len());
    reader
        .read_to_end(&mut out)
        .map_err(|e| RepoError::Corrupt(format!("{what}: authentication failed ({e})")))?;
    Ok(out)
}

/// Encrypt with the index key (ChaCha20-Poly1305, random 96-bit nonce): `nonce || ct || tag`.
pub fn seal(key: &[u8; 32], plaintext: &[u8]) -> Result<Vec<u8>> {
    use chacha20poly1305::aead::{Aead, KeyInit};
    use chacha20poly1305::{ChaCha20Poly1305, Nonce};
    let cipher = ChaCha20Poly1305::new(key.into());
    let nonce: [u8; 12] = rand::random();
    let ct = cipher
        .encrypt(Nonce::from_slice(&nonce), plaintext)
        .map_err(|_| RepoError::Corrupt("index encryption failed".into()))?;
    let mut out = Vec::with_capacity(12 + ct.len());
    out.extend_from_slice(&nonce);
    out.extend_from_slice(&ct);
    Ok(out)
}

/// Inverse of [`seal`]. A wrong key and tampering are indistinguishable: both are reported.
pub fn open(key: &[u8; 32], sealed: &[u8], what: &str) -> Result<Vec<u8>> {
    use chacha20poly1305::aead::{Aead, KeyInit};
    use chacha20poly1305::{ChaCha20Poly1305, Nonce};
    if sealed.len() < 12 + 16 {
        return Err(RepoError::Corrupt(format!(
            "{what}: too short ({} bytes)",
            sealed.len()
        )));
    }
    let cipher = ChaCha20Poly1305::new(key.into());
    cipher.decrypt(Nonce::from_slice(&sealed[..12]), &sealed[12..]).map_err(|_| {
        RepoError::Corrupt(format!(
            "{what}: authentication failed (corrupt object, or a writer key from another repository)"
        ))
    })
}

/// Keyed BLAKE3 of a chunk's plaintext: its id.
pub fn chunk_id(key: &[u8; 32], data: &[u8]) -> crate::Id {
    crate::Id(*blake3::keyed_hash(key, data).as_bytes())
}

/// The BLAKE3 key-derivation context of the audit chain key.
pub const CHAIN_KEY_CONTEXT: &str = "lifeboat audit chain v1";

/// The chain key from the bytes it is derived from (see `Repository::audit_chain_key`);
/// for hosts that hold the writer key but cannot open the repository (`init`, all regions
/// down).
pub fn chain_key_from(index_key: &[u8; 32]) -> [u8; 32] {
    blake3::derive_key(CHAIN_KEY_CONTEXT, index_key)
}
