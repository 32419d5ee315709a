//! Keys: who can add snapshots and who can read them.
//!
//! * **Recipients** (age X25519 public keys, `age1…`) — every pack and manifest is encrypted
//!   to them. Public; a backup host holds them.
//! * **Identity** (age X25519 secret, `AGE-SECRET-KEY-1…`) — decrypts packs and manifests.
//!   Only restore operators (or escrow) hold it.
//! * **Writer key** — also an age X25519 identity, kept on backup hosts. From it derive
//!   (BLAKE3 `derive_key`) the chunk-id key and the index key, so a backup host can
//!   deduplicate without being able to decrypt data or file names. Manifests are encrypted to
//!   the recipients *and* the writer's recipient, so a backup host can list snapshots (plan,
//!   time, sizes) but never read a file tree. The repository stores the writer key encrypted
//!   to the recipients (`keys/writer.age`), so an identity holder can derive it too.
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

/// The writer secret and the keys derived from it.
pub struct WriterKey {
    identity: x25519::Identity,
    chunk_key: [u8; 32],
    index_key: [u8; 32],
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
        let secret = identity.to_string();
        let bytes = secret.expose_secret().as_bytes();
        WriterKey {
            chunk_key: blake3::derive_key(CHUNK_ID_CONTEXT, bytes),
            index_key: blake3::derive_key(INDEX_KEY_CONTEXT, bytes),
            identity,
        }
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

    pub fn chunk_key(&self) -> &[u8; 32] {
        &self.chunk_key
    }

    pub fn index_key(&self) -> &[u8; 32] {
        &self.index_key
    }

    /// As an age identity, to decrypt manifests.
    pub fn as_identity(&self) -> &x25519::Identity {
        &self.identity
    }
}

/// An age identity that can decrypt everything in the repository.
pub struct Identity(x25519::Identity);

impl fmt::Debug for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Identity(recipient {}, <redacted>)", self.0.to_public())
    }
}

impl Identity {
    pub fn generate() -> Identity {
        Identity(x25519::Identity::generate())
    }

    /// Parse an age identity file (as written by `age-keygen` or `lifeboat keys generate`).
    pub fn parse(text: &str) -> Result<Identity> {
        parse_identity_line(text, "identity").map(Identity)
    }

    pub fn to_file_text(&self) -> String {
        identity_file_text(&self.0, "lifeboat identity")
    }

    pub fn recipient(&self) -> x25519::Recipient {
        self.0.to_public()
    }

    pub fn inner(&self) -> &x25519::Identity {
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

fn parse_identity_line(text: &str, what: &str) -> Result<x25519::Identity> {
    let mut lines = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'));
    let line = lines
        .next()
        .ok_or_else(|| RepoError::Key(format!("{what}: no AGE-SECRET-KEY-1… line found")))?;
    if lines.next().is_some() {
        return Err(RepoError::Key(format!(
            "{what}: more than one key line; lifeboat expects exactly one"
        )));
    }
    // Never echo the line: it is a secret.
    x25519::Identity::from_str(line).map_err(|_| {
        RepoError::Key(format!(
            "{what}: not a valid age X25519 identity (AGE-SECRET-KEY-1…)"
        ))
    })
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
/// their writer key comes from the repository's `keys/writer.age`.
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

/// A streaming age encryptor to `recipients` over `out`.
pub fn age_writer<W: Write>(
    recipients: &[&x25519::Recipient],
    out: W,
) -> Result<age::stream::StreamWriter<W>> {
    let enc = age::Encryptor::with_recipients(recipients.iter().map(|r| *r as &dyn age::Recipient))
        .map_err(|e| RepoError::Key(format!("age encryption setup failed: {e}")))?;
    Ok(enc.wrap_output(out)?)
}

/// Decrypt one age file with `identity`. `what` names the object for errors.
pub fn age_decrypt(identity: &x25519::Identity, ciphertext: &[u8], what: &str) -> Result<Vec<u8>> {
    let dec = age::Decryptor::new_buffered(ciphertext)
        .map_err(|e| RepoError::Corrupt(format!("{what}: not a valid age file: {e}")))?;
    let mut reader = dec
        .decrypt(std::iter::once(identity as &dyn age::Identity))
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
