//! Writer signatures and the trust a host places in them: who may have written a manifest
//! or an index file, and the pins (`lifeboat.toml`) that decide it.
//!
//! Every writer (backup host) has an Ed25519 signing key **derived from its writer key**
//! (BLAKE3 `derive_key` of the key's text, used as the Ed25519 seed), so a writer host holds
//! one secret file, as before. Writers sign the exact bytes they store inside the
//! encryption: a manifest's `signed` JSON ([`seal_manifest_plain`]), an index file's body
//! before its signature. The signed message binds the object kind and the repository id,
//! so a signature cannot be replayed into another repository or onto another kind of
//! object. Signatures live inside the age payload / AEAD plaintext: `keys rewrap`, which
//! re-wraps age headers and keeps payloads, keeps them (and ids) intact.
//!
//! [`Trust`] is what a host believes, fixed when the repository is opened:
//! * **pinned** (`[keys] repository_id` and `[keys.writers]` in `lifeboat.toml`): only the
//!   pinned writers' keys are trusted, whatever `config` says; a writer `config` marks
//!   revoked is revoked here too (revocation only ever narrows trust). Unsigned objects are
//!   refused unless `allow_unsigned` (repositories upgraded from v1 still hold unsigned
//!   ones).
//! * **unpinned**: the writers `config` lists are trusted (this catches revoked writers and
//!   accidents, not a bucket attacker, who can rewrite `config`), unsigned objects accepted;
//!   the opener warns once per run with the lines to pin.
//!
//! A refusal is [`RepoError::Untrusted`] (exit 5) naming the object and the region.

use std::collections::BTreeMap;
use std::fmt;

use ed25519_dalek::{Signature, Signer as _, SigningKey, Verifier, VerifyingKey};
use serde::{Deserialize, Serialize};

use crate::error::{RepoError, Result};
use crate::keys::WriterKey;

/// What a signature covers: `CONTEXT || kind || 0 || repository id || 0 || bytes`.
const CONTEXT: &[u8] = b"lifeboat signature v1\0";
const SIGNING_KEY_CONTEXT: &str = "lifeboat v2 writer signing key";
/// The writer every repository starts with: the key `init` ran with.
pub const DEFAULT_WRITER: &str = "default";
/// Prefix of a writer's public key as `config` and `lifeboat.toml` spell it.
pub const PUBLIC_PREFIX: &str = "ed25519:";

/// The kinds of signed object.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SignedKind {
    Manifest,
    Index,
}

impl SignedKind {
    fn tag(self) -> &'static [u8] {
        match self {
            SignedKind::Manifest => b"manifest",
            SignedKind::Index => b"index",
        }
    }
}

fn message(kind: SignedKind, repo_id: &str, bytes: &[u8]) -> Vec<u8> {
    let mut m = Vec::with_capacity(CONTEXT.len() + 48 + bytes.len());
    m.extend_from_slice(CONTEXT);
    m.extend_from_slice(kind.tag());
    m.push(0);
    m.extend_from_slice(repo_id.as_bytes());
    m.push(0);
    m.extend_from_slice(bytes);
    m
}

/// A writer name: 1–64 of `[A-Za-z0-9_-]` (it is written into JSON and object names
/// unescaped).
pub fn check_writer_name(name: &str) -> Result<()> {
    if name.is_empty()
        || name.len() > 64
        || !name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    {
        return Err(RepoError::Invalid(format!(
            "writer name {name:?}: use 1 to 64 letters, digits, '-' or '_'"
        )));
    }
    Ok(())
}

/// `ed25519:<64 hex>`.
pub fn format_public(key: &VerifyingKey) -> String {
    format!("{PUBLIC_PREFIX}{}", hex::encode(key.as_bytes()))
}

/// Parse `ed25519:<64 hex>`.
pub fn parse_public(s: &str) -> Result<VerifyingKey> {
    let bad = || {
        RepoError::Key(format!(
            "writer public key {s:?} is not \"ed25519:\" followed by 64 hex digits"
        ))
    };
    let hex_part = s.trim().strip_prefix(PUBLIC_PREFIX).ok_or_else(bad)?;
    let mut b = [0u8; 32];
    hex::decode_to_slice(hex_part, &mut b).map_err(|_| bad())?;
    VerifyingKey::from_bytes(&b).map_err(|_| bad())
}

impl WriterKey {
    /// This writer's Ed25519 signing key, derived from the key's text.
    pub fn signing_key(&self) -> SigningKey {
        let mut seed = self.derive(SIGNING_KEY_CONTEXT);
        let key = SigningKey::from_bytes(&seed);
        zeroize::Zeroize::zeroize(&mut seed);
        key
    }

    /// `ed25519:…`: what `config` and the pins name this writer by.
    pub fn signing_public(&self) -> String {
        format_public(&self.signing_key().verifying_key())
    }
}

/// One writer as `config` lists it (public keys only).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WriterEntry {
    pub name: String,
    /// Its age recipient: manifests are also encrypted to it; `keys/writer-NAME.age` is.
    pub recipient: String,
    /// `ed25519:…`.
    pub signing_key: String,
    pub created: i64,
    /// When it was revoked (Unix seconds): nothing it signed is trusted any more.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revoked: Option<i64>,
}

impl WriterEntry {
    /// The entry of writer `name` holding `key`, added at `created`.
    pub fn of(name: &str, key: &WriterKey, created: i64) -> WriterEntry {
        WriterEntry {
            name: name.to_string(),
            recipient: key.recipient().to_string(),
            signing_key: key.signing_public(),
            created,
            revoked: None,
        }
    }
}

/// The pins of `lifeboat.toml`'s `[keys]`: what this host trusts regardless of the bucket.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Pins {
    /// The repository's `config` id.
    pub repository_id: Option<String>,
    /// The secrets' [`fingerprint`].
    pub secrets: Option<String>,
    /// Trusted writers: name → `ed25519:…`.
    pub writers: BTreeMap<String, String>,
    /// Accept unsigned manifests and index files (repositories upgraded from v1).
    pub allow_unsigned: bool,
}

impl Pins {
    pub fn is_pinned(&self) -> bool {
        self.repository_id.is_some()
    }
}

/// This host's signing identity: its writer name and key.
pub struct Signer {
    name: String,
    key: SigningKey,
}

impl fmt::Debug for Signer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Signer({}, <redacted>)", self.name)
    }
}

impl Signer {
    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn sign(&self, kind: SignedKind, repo_id: &str, bytes: &[u8]) -> [u8; 64] {
        self.key.sign(&message(kind, repo_id, bytes)).to_bytes()
    }
}

/// A trusted (or revoked) writer.
#[derive(Debug, Clone)]
struct KnownWriter {
    name: String,
    key: VerifyingKey,
    revoked: bool,
}

/// How a signed object was judged.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Signed by this trusted writer.
    Trusted(String),
    /// Unsigned, and this host accepts unsigned objects.
    Unsigned,
    /// Validly signed by a writer that has been revoked: not trusted for dedup or restore.
    Revoked(String),
}

/// What this host trusts (see the module documentation).
#[derive(Debug)]
pub struct Trust {
    repo_id: String,
    pinned: bool,
    allow_unsigned: bool,
    writers: Vec<KnownWriter>,
    signer: Option<Signer>,
}

impl Trust {
    /// The trust of a host holding `writer` (if any), with `pins`, in a repository whose
    /// `config` lists `listed` writers.
    pub(crate) fn new(
        repo_id: &str,
        pins: &Pins,
        listed: &[WriterEntry],
        writer: Option<&WriterKey>,
    ) -> Result<Trust> {
        let revoked_in_config = |name: &str, key: &str| {
            listed
                .iter()
                .any(|w| w.name == name && w.signing_key == key && w.revoked.is_some())
        };
        let mut writers = Vec::new();
        if pins.is_pinned() {
            for (name, key) in &pins.writers {
                writers.push(KnownWriter {
                    name: name.clone(),
                    key: parse_public(key)
                        .map_err(|e| RepoError::Key(format!("keys.writers.{name}: {e}")))?,
                    revoked: revoked_in_config(name, key),
                });
            }
        } else {
            for w in listed {
                writers.push(KnownWriter {
                    name: w.name.clone(),
                    key: parse_public(&w.signing_key).map_err(|e| {
                        RepoError::Untrusted(format!("config: writer {}: {e}", w.name))
                    })?,
                    revoked: w.revoked.is_some(),
                });
            }
        }
        let signer = match writer {
            None => None,
            Some(w) => {
                let key = w.signing_key();
                let public = key.verifying_key();
                match writers.iter().find(|k| k.key == public) {
                    Some(k) if k.revoked => {
                        return Err(RepoError::Untrusted(format!(
                            "this host's writer key is writer {} of repository {repo_id}, which has been revoked: it may not write (install a new writer from `lifeboat keys add-writer`)",
                            k.name
                        )))
                    }
                    Some(k) => Some(Signer {
                        name: k.name.clone(),
                        key,
                    }),
                    // A repository without writers (made before writers signed): unsigned.
                    None if writers.is_empty() && !pins.is_pinned() => None,
                    None => {
                        return Err(RepoError::Untrusted(format!(
                            "this host's writer key ({}) is not a trusted writer of repository {repo_id}{}: add it with `lifeboat keys add-writer` where the identity is, and pin it in [keys.writers]",
                            format_public(&public),
                            if pins.is_pinned() { " in lifeboat.toml's [keys.writers]" } else { "" }
                        )))
                    }
                }
            }
        };
        Ok(Trust {
            repo_id: repo_id.to_string(),
            pinned: pins.is_pinned(),
            allow_unsigned: !pins.is_pinned() || pins.allow_unsigned,
            writers,
            signer,
        })
    }

    pub fn is_pinned(&self) -> bool {
        self.pinned
    }

    /// This host's signer, when it holds a trusted writer key.
    pub fn signer(&self) -> Option<&Signer> {
        self.signer.as_ref()
    }

    /// Do objects written here have to be signed (the repository has writers)?
    pub fn wants_signatures(&self) -> bool {
        !self.writers.is_empty() || self.pinned
    }

    pub fn repo_id(&self) -> &str {
        &self.repo_id
    }

    /// Judge an object: `signed` is the writer name and signature it carries, `bytes` what
    /// the signature covers. `object` and `region` name it in a refusal.
    pub fn judge(
        &self,
        kind: SignedKind,
        object: &str,
        region: &str,
        signed: Option<(&str, &[u8; 64])>,
        bytes: &[u8],
    ) -> Result<Verdict> {
        let refuse = |why: String| {
            RepoError::Untrusted(format!(
                "{object} in region {region}: {why}; refusing it (a substituted or forged object: check who can write to this bucket)"
            ))
        };
        let Some((name, sig)) = signed else {
            if self.allow_unsigned {
                return Ok(Verdict::Unsigned);
            }
            return Err(refuse(
                "unsigned, but this host pins its writers (set keys.allow_unsigned = true only for a repository upgraded from format v1)".into(),
            ));
        };
        let Some(w) = self.writers.iter().find(|w| w.name == name) else {
            if self.writers.is_empty() && !self.pinned {
                // Unpinned host, repository without writers: nothing to check against.
                return Ok(Verdict::Unsigned);
            }
            return Err(refuse(format!(
                "signed by writer {name:?}, which is not a trusted writer{}",
                if self.pinned {
                    " (not in [keys.writers])"
                } else {
                    ""
                }
            )));
        };
        let sig = Signature::from_bytes(sig);
        if w.key
            .verify(&message(kind, &self.repo_id, bytes), &sig)
            .is_err()
        {
            return Err(refuse(format!(
                "the signature of writer {name} does not verify (a forgery, or a writer key that changed)"
            )));
        }
        Ok(if w.revoked {
            Verdict::Revoked(name.to_string())
        } else {
            Verdict::Trusted(name.to_string())
        })
    }
}

/// The `lifeboat.toml` lines that pin repository `repo_id` with the secrets' `fingerprint`
/// and its active `writers` (what `init`, `keys add-writer` and the unpinned warning print).
pub fn pin_lines(repo_id: &str, fingerprint: &str, writers: &[WriterEntry]) -> String {
    let mut s = format!(
        "# in [keys]:\nrepository_id = \"{repo_id}\"\nrepository_secrets = \"{fingerprint}\"\n# a table of its own, after [keys]:\n[keys.writers]\n"
    );
    for w in writers.iter().filter(|w| w.revoked.is_none()) {
        s.push_str(&format!("{} = \"{}\"\n", w.name, w.signing_key));
    }
    s
}

/// A writer name and the signature it made.
pub type Signature64 = (String, [u8; 64]);

/// The `format` of a signed manifest's envelope.
pub const MANIFEST_ENVELOPE: &str = "lifeboat-manifest-v2";

/// A manifest's plaintext: `{"format":"lifeboat-manifest-v2","writer":"NAME",
/// "signature":"<128 hex>","signed":` + the manifest JSON + `}`, with the signature over
/// exactly the manifest JSON's bytes. Unsigned (no signer): the manifest JSON alone.
pub fn seal_manifest_plain(signer: Option<&Signer>, repo_id: &str, manifest: &[u8]) -> Vec<u8> {
    let Some(s) = signer else {
        return manifest.to_vec();
    };
    let sig = s.sign(SignedKind::Manifest, repo_id, manifest);
    let mut out = format!(
        "{{\"format\":\"{MANIFEST_ENVELOPE}\",\"writer\":\"{}\",\"signature\":\"{}\",\"signed\":",
        s.name,
        hex::encode(sig)
    )
    .into_bytes();
    out.extend_from_slice(manifest);
    out.push(b'}');
    out
}

/// Split a manifest's plaintext into its signature (writer name and signature, when signed)
/// and the manifest JSON the signature covers. Anything that starts like an envelope but is
/// not exactly one is corrupt.
pub fn open_manifest_plain<'a>(
    plain: &'a [u8],
    what: &str,
) -> Result<(Option<Signature64>, &'a [u8])> {
    let head = format!("{{\"format\":\"{MANIFEST_ENVELOPE}\",\"writer\":\"");
    let Some(rest) = plain.strip_prefix(head.as_bytes()) else {
        return Ok((None, plain));
    };
    let bad = || RepoError::Corrupt(format!("{what}: malformed signed manifest"));
    let end = rest.iter().position(|&b| b == b'"').ok_or_else(bad)?;
    let name = std::str::from_utf8(&rest[..end]).map_err(|_| bad())?;
    check_writer_name(name).map_err(|_| bad())?;
    let rest = rest[end..]
        .strip_prefix(b"\",\"signature\":\"")
        .ok_or_else(bad)?;
    let sig_hex = rest.get(..128).ok_or_else(bad)?;
    let mut sig = [0u8; 64];
    hex::decode_to_slice(sig_hex, &mut sig).map_err(|_| bad())?;
    let body = rest[128..]
        .strip_prefix(b"\",\"signed\":")
        .and_then(|b| b.strip_suffix(b"}"))
        .ok_or_else(bad)?;
    Ok((Some((name.to_string(), sig)), body))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn trust_of(pins: &Pins, listed: &[WriterEntry], w: Option<&WriterKey>) -> Trust {
        Trust::new("repo1", pins, listed, w).unwrap()
    }

    fn entry(name: &str, w: &WriterKey, revoked: Option<i64>) -> WriterEntry {
        WriterEntry {
            name: name.into(),
            recipient: w.recipient().to_string(),
            signing_key: w.signing_public(),
            created: 1,
            revoked,
        }
    }

    #[test]
    fn a_signed_manifest_round_trips_and_tampering_is_refused() {
        let w = WriterKey::generate();
        let t = trust_of(&Pins::default(), &[entry("default", &w, None)], Some(&w));
        let body = br#"{"plan":"p"}"#;
        let plain = seal_manifest_plain(t.signer(), "repo1", body);
        let v: serde_json::Value = serde_json::from_slice(&plain).unwrap();
        assert_eq!(v["signed"]["plan"], "p");
        let (sig, got) = open_manifest_plain(&plain, "m").unwrap();
        assert_eq!(got, body);
        let (name, sig) = sig.unwrap();
        assert_eq!(
            t.judge(SignedKind::Manifest, "m", "r", Some((&name, &sig)), got)
                .unwrap(),
            Verdict::Trusted("default".into())
        );
        let e = t
            .judge(
                SignedKind::Manifest,
                "m",
                "r",
                Some((&name, &sig)),
                br#"{"plan":"q"}"#,
            )
            .unwrap_err();
        assert!(matches!(e, RepoError::Untrusted(_)), "{e}");
        // The same bytes as an index file, or in another repository: not valid.
        assert!(t
            .judge(SignedKind::Index, "m", "r", Some((&name, &sig)), got)
            .is_err());
        let other = Trust::new(
            "repo2",
            &Pins::default(),
            &[entry("default", &w, None)],
            None,
        )
        .unwrap();
        assert!(other
            .judge(SignedKind::Manifest, "m", "r", Some((&name, &sig)), got)
            .is_err());
    }

    #[test]
    fn pins_decide_and_revocation_narrows() {
        let honest = WriterKey::generate();
        let stranger = WriterKey::generate();
        let mut pins = Pins {
            repository_id: Some("repo1".into()),
            ..Pins::default()
        };
        pins.writers
            .insert("default".into(), honest.signing_public());
        // config lists the stranger under the honest name: pins win.
        let forged = [entry("default", &stranger, None)];
        let t = trust_of(&pins, &forged, None);
        let s = Trust::new("repo1", &Pins::default(), &forged, Some(&stranger)).unwrap();
        let sig = s.signer().unwrap().sign(SignedKind::Index, "repo1", b"x");
        let e = t
            .judge(
                SignedKind::Index,
                "index/ab",
                "eu",
                Some(("default", &sig)),
                b"x",
            )
            .unwrap_err()
            .to_string();
        assert!(e.contains("index/ab in region eu"), "{e}");
        // Unsigned is refused where pins exist, accepted with allow_unsigned.
        assert!(t.judge(SignedKind::Index, "i", "eu", None, b"x").is_err());
        pins.allow_unsigned = true;
        assert_eq!(
            trust_of(&pins, &[], None)
                .judge(SignedKind::Index, "i", "eu", None, b"x")
                .unwrap(),
            Verdict::Unsigned
        );
        // A pinned writer that config marks revoked is revoked.
        let t = trust_of(&pins, &[entry("default", &honest, Some(5))], None);
        let h = Trust::new(
            "repo1",
            &Pins::default(),
            &[entry("default", &honest, None)],
            Some(&honest),
        )
        .unwrap();
        let sig = h.signer().unwrap().sign(SignedKind::Index, "repo1", b"x");
        assert_eq!(
            t.judge(SignedKind::Index, "i", "eu", Some(("default", &sig)), b"x")
                .unwrap(),
            Verdict::Revoked("default".into())
        );
        // A revoked writer may not write, an unknown one neither.
        assert!(Trust::new(
            "repo1",
            &pins,
            &[entry("default", &honest, Some(5))],
            Some(&honest)
        )
        .is_err());
        assert!(Trust::new("repo1", &pins, &[], Some(&stranger)).is_err());
    }

    #[test]
    fn malformed_envelopes_are_corrupt_and_flat_manifests_pass_through() {
        let flat = br#"{"version":1}"#;
        assert!(open_manifest_plain(flat, "m").unwrap().0.is_none());
        let bad =
            br#"{"format":"lifeboat-manifest-v2","writer":"a b","signature":"00","signed":{}}"#;
        assert!(matches!(
            open_manifest_plain(bad, "m"),
            Err(RepoError::Corrupt(_))
        ));
        assert!(check_writer_name("db-1_a").is_ok());
        assert!(check_writer_name("../x").is_err());
        assert!(parse_public("ed25519:zz").is_err());
    }
}
