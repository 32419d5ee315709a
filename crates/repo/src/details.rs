//! The details key and sealed manifest details: what of a manifest only the recipients read.
//!
//! A manifest's outer age file goes to the recipients *and* every writer, because backup
//! hosts list snapshots (scheduling, status, RPO, retention). What they do not need — the
//! root tree id, the source location, the probe results and the unreadable paths — is
//! sealed inside it, in `details`: base64 of a standard age file to the repository's
//! **details key**, an X25519 identity drawn at `init` (or added by `upgrade`) and never
//! rotated with the recipient epochs, like the chunk-id key. Its secret is stored once per
//! epoch as `keys/details-NNNN.age`, encrypted to that epoch's recipients only (never to a
//! writer); its recipient is carried in the secrets objects writers read, and covered by the
//! secrets fingerprint hosts pin ([`crate::secrets::RepoSecrets::fingerprint`]), so a stolen
//! writer cannot make other writers seal to a key of its own. The writer's signature covers
//! the whole manifest JSON, `details` included: another snapshot's details cannot be swapped
//! in. `keys rewrap` re-wraps the *outer* header only, so manifest ids never change.
//!
//! In memory a [`Manifest`] opened without the details key is marked [`Manifest::sealed`]:
//! its location reads [`SEALED`], its probes are empty, its unreadable list holds the right
//! *number* of [`SEALED`] entries (so "partial" still shows) and [`Manifest::tree_root`]
//! refuses with `NeedIdentity`.

use std::fmt;
use std::str::FromStr;

use age::secrecy::ExposeSecret;
use age::x25519;
use base64::Engine as _;
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use crate::error::{RepoError, Result};
use crate::keys::{age_decrypt, age_encrypt, seal_json};
use crate::snapshot::{Manifest, SourceInfo, Stats, SEALED};
use crate::Id;

/// `format` of a details key object's plaintext.
pub const DETAILS_KEY_FORMAT: &str = "lifeboat-details-key";
/// `version` of a manifest whose details are sealed.
pub const SEALED_MANIFEST_VERSION: u32 = 2;

/// Object name of epoch `epoch`'s copy of the details key.
pub fn details_object(epoch: u32) -> String {
    format!("keys/details-{epoch:04}.age")
}

/// The details key's secret half (restore hosts, where the identity is).
#[derive(Clone)]
pub struct DetailsKey(x25519::Identity);

impl fmt::Debug for DetailsKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "DetailsKey({}, <redacted>)", self.0.to_public())
    }
}

/// A details key object's plaintext (JSON).
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct DetailsKeyFile {
    format: String,
    repository: String,
    epoch: u32,
    recipient: String,
    identity: String,
}

impl Drop for DetailsKeyFile {
    fn drop(&mut self) {
        zeroize::Zeroize::zeroize(&mut self.identity);
    }
}

impl DetailsKey {
    pub fn generate() -> DetailsKey {
        DetailsKey(x25519::Identity::generate())
    }

    pub fn recipient(&self) -> x25519::Recipient {
        self.0.to_public()
    }

    /// Epoch `epoch`'s key object, encrypted to that epoch's `recipients` (never a writer).
    pub fn seal(
        &self,
        repo_id: &str,
        epoch: u32,
        recipients: &[&x25519::Recipient],
    ) -> Result<Vec<u8>> {
        let file = DetailsKeyFile {
            format: DETAILS_KEY_FORMAT.into(),
            repository: repo_id.into(),
            epoch,
            recipient: self.recipient().to_string(),
            identity: self.0.to_string().expose_secret().to_string(),
        };
        seal_json(recipients, &file)
    }

    /// Open epoch `epoch`'s key object with any of `keys`; it must belong to `repo_id` and
    /// hold the key whose recipient is `expected` (from the pinned secrets): anything else
    /// is a substituted object (`Untrusted`). No matching key: `WrongKey`.
    pub fn unseal(
        bytes: &[u8],
        keys: &[x25519::Identity],
        repo_id: &str,
        epoch: u32,
        expected: &str,
    ) -> Result<DetailsKey> {
        let what = details_object(epoch);
        let plain = Zeroizing::new(age_decrypt(keys, bytes, &what)?);
        let file: DetailsKeyFile = serde_json::from_slice(&plain)
            .map_err(|_| RepoError::Corrupt(format!("{what}: not a lifeboat details key")))?;
        if file.format != DETAILS_KEY_FORMAT {
            return Err(RepoError::Corrupt(format!(
                "{what}: not a lifeboat details key"
            )));
        }
        let key = x25519::Identity::from_str(file.identity.trim())
            .map_err(|_| RepoError::Corrupt(format!("{what}: malformed key material")))?;
        let public = key.to_public().to_string();
        if file.repository != repo_id || file.epoch != epoch || public != expected {
            return Err(RepoError::Untrusted(format!(
                "{what}: holds details key {public} of repository {} epoch {}, but the repository secrets name {expected} of {repo_id} epoch {epoch}: a substituted key object",
                file.repository, file.epoch
            )));
        }
        Ok(DetailsKey(key))
    }
}

/// What `details` seals (JSON inside the age file).
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct DetailsPlain {
    root: Id,
    location: String,
    #[serde(default, skip_serializing_if = "serde_json::Map::is_empty")]
    probes: serde_json::Map<String, serde_json::Value>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    unreadable: Vec<String>,
}

/// A sealed manifest as stored (inside the signature envelope).
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct SealedWire {
    version: u32,
    plan: String,
    host: String,
    time: i64,
    end_time: i64,
    committed_ns: i64,
    source: KindOnly,
    stats: Stats,
    #[serde(default, skip_serializing_if = "is_zero")]
    unreadable_count: u64,
    details: String,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct KindOnly {
    kind: String,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// The manifest JSON to sign and store. With a details recipient the details are sealed to
/// it; without one (a repository made before the details key, until `upgrade`) the manifest
/// is written in the clear as before. A manifest opened without the details key cannot be
/// written again (`NeedIdentity`): its details are not known here.
pub fn encode(m: &Manifest, details: Option<&x25519::Recipient>) -> Result<Vec<u8>> {
    if m.sealed {
        return Err(RepoError::NeedIdentity(
            "writing a manifest whose details are sealed".into(),
        ));
    }
    let invalid = |e: serde_json::Error| RepoError::Invalid(e.to_string());
    let Some(to) = details else {
        return serde_json::to_vec(m).map_err(invalid);
    };
    let plain = DetailsPlain {
        root: m.root,
        location: m.source.location.clone(),
        probes: m.probes.clone(),
        unreadable: m.unreadable.clone(),
    };
    let sealed = age_encrypt(&[to], &serde_json::to_vec(&plain).map_err(invalid)?)?;
    let wire = SealedWire {
        version: SEALED_MANIFEST_VERSION,
        plan: m.plan.clone(),
        host: m.host.clone(),
        time: m.time,
        end_time: m.end_time,
        committed_ns: m.committed_ns,
        source: KindOnly {
            kind: m.source.kind.clone(),
        },
        stats: m.stats.clone(),
        unreadable_count: m.unreadable.len() as u64,
        details: base64::engine::general_purpose::STANDARD.encode(sealed),
    };
    serde_json::to_vec(&wire).map_err(invalid)
}

/// Parse a manifest's JSON (`what` names it in errors): a clear one (v1, or v2 before the
/// details key) as is; a sealed one opened with `key` when this host has it, else marked
/// sealed (see the module documentation).
pub fn decode(json: &[u8], key: Option<&DetailsKey>, what: &str) -> Result<Manifest> {
    let corrupt = |e: String| RepoError::Corrupt(format!("{what}: {e}"));
    let value: serde_json::Value =
        serde_json::from_slice(json).map_err(|e| corrupt(e.to_string()))?;
    if value.get("details").is_none() {
        return serde_json::from_value(value).map_err(|e| corrupt(e.to_string()));
    }
    let wire: SealedWire = serde_json::from_value(value).map_err(|e| corrupt(e.to_string()))?;
    let count = usize::try_from(wire.unreadable_count)
        .ok()
        .filter(|&n| n <= 1 << 24)
        .ok_or_else(|| corrupt("unreadable_count out of range".into()))?;
    let mut m = Manifest {
        version: wire.version,
        plan: wire.plan,
        host: wire.host,
        time: wire.time,
        end_time: wire.end_time,
        committed_ns: wire.committed_ns,
        source: SourceInfo {
            kind: wire.source.kind,
            location: SEALED.into(),
        },
        root: Id([0; 32]),
        stats: wire.stats,
        probes: serde_json::Map::new(),
        unreadable: vec![SEALED.to_string(); count],
        sealed: true,
        details_error: None,
    };
    let Some(key) = key else {
        return Ok(m);
    };
    // The manifest itself is sound (and signed, when the caller judged it): details that do
    // not open leave it listed but unrestorable, so one bad snapshot never hides the others.
    let d = match open_details(&wire.details, key, what, count) {
        Ok(d) => d,
        Err(e) => {
            tracing::warn!(object = %what, error = %e, "snapshot details do not open with this repository's details key: listed, not restorable");
            m.details_error = Some(e.to_string());
            return Ok(m);
        }
    };
    m.source.location = d.location;
    m.root = d.root;
    m.probes = d.probes;
    m.unreadable = d.unreadable;
    m.sealed = false;
    Ok(m)
}

/// Open a sealed manifest's `details` (base64 age file) with the details key.
fn open_details(b64: &str, key: &DetailsKey, what: &str, count: usize) -> Result<DetailsPlain> {
    let corrupt = |e: String| RepoError::Corrupt(format!("{what}: {e}"));
    let blob = base64::engine::general_purpose::STANDARD
        .decode(b64.as_bytes())
        .map_err(|_| corrupt("details are not base64".into()))?;
    let plain = age_decrypt(
        std::slice::from_ref(&key.0),
        &blob,
        &format!("{what} details"),
    )
    .map_err(|e| corrupt(format!("details: {e}")))?;
    let d: DetailsPlain =
        serde_json::from_slice(&plain).map_err(|e| corrupt(format!("details: {e}")))?;
    if d.unreadable.len() != count {
        return Err(corrupt(format!(
            "details list {} unreadable entries, the manifest says {count}",
            d.unreadable.len()
        )));
    }
    Ok(d)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn manifest() -> Manifest {
        Manifest {
            version: 1,
            plan: "db".into(),
            host: "h1".into(),
            time: 10,
            end_time: 11,
            committed_ns: 12,
            source: SourceInfo {
                kind: "postgres".into(),
                location: "postgres://db.internal/orders".into(),
            },
            root: Id::of_stored(b"root"),
            stats: Stats::default(),
            probes: serde_json::json!({"rows.customers": 42})
                .as_object()
                .unwrap()
                .clone(),
            unreadable: vec!["/x: permission denied".into()],
            sealed: false,
            details_error: None,
        }
    }

    #[test]
    fn sealed_details_open_with_the_key_only_and_say_nothing_in_the_clear() {
        let key = DetailsKey::generate();
        let m = manifest();
        let json = encode(&m, Some(&key.recipient())).unwrap();
        let text = String::from_utf8_lossy(&json);
        for secret in ["db.internal", "customers", &m.root.to_hex(), "permission"] {
            assert!(!text.contains(secret), "{secret} in {text}");
        }
        let opened = decode(&json, Some(&key), "m").unwrap();
        assert_eq!(opened.root, m.root);
        assert_eq!(opened.probes, m.probes);
        assert_eq!(opened.source, m.source);
        assert!(!opened.sealed);
        let view = decode(&json, None, "m").unwrap();
        assert!(view.sealed && view.is_partial());
        assert_eq!(view.source.location, SEALED);
        assert!(matches!(view.tree_root(), Err(RepoError::NeedIdentity(_))));
        assert!(matches!(
            encode(&view, None),
            Err(RepoError::NeedIdentity(_))
        ));
        // Details sealed to another key: the manifest stays listed, sealed, and its root
        // is refused as damage (not "need the identity": this host has it).
        let other = DetailsKey::generate();
        let wrong = decode(&json, Some(&other), "m").unwrap();
        assert!(wrong.sealed && wrong.details_error.is_some());
        assert!(matches!(wrong.tree_root(), Err(RepoError::Corrupt(e)) if e.contains("details")));
        // Without a details recipient: the clear layout of before, read as before.
        let clear = encode(&m, None).unwrap();
        assert_eq!(decode(&clear, Some(&key), "m").unwrap(), m);
    }

    #[test]
    fn a_key_object_opens_for_its_epoch_and_recipient_only() {
        let key = DetailsKey::generate();
        let id = x25519::Identity::generate();
        let bytes = key.seal("r1", 2, &[&id.to_public()]).unwrap();
        let want = key.recipient().to_string();
        let ids = std::slice::from_ref(&id);
        assert!(DetailsKey::unseal(&bytes, ids, "r1", 2, &want).is_ok());
        let wrong = |r: Result<DetailsKey>| matches!(r, Err(RepoError::Untrusted(_)));
        assert!(wrong(DetailsKey::unseal(&bytes, ids, "r1", 3, &want)));
        assert!(wrong(DetailsKey::unseal(&bytes, ids, "r2", 2, &want)));
        let stranger = DetailsKey::generate().recipient().to_string();
        assert!(wrong(DetailsKey::unseal(&bytes, ids, "r1", 2, &stranger)));
        let writer = x25519::Identity::generate();
        assert!(matches!(
            DetailsKey::unseal(&bytes, &[writer], "r1", 2, &want),
            Err(RepoError::WrongKey(_))
        ));
    }
}
