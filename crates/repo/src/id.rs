//! 32-byte identifiers: chunk ids (keyed BLAKE3 of plaintext), pack, index and snapshot ids
//! (BLAKE3 of the stored ciphertext, so anyone can check a stored object without a key).
//!
//! Content-addressed age objects (packs, manifests, erasure receipts) follow the format's
//! [`IdRule`]: v1 hashes the whole object; v2 hashes the age *payload* (everything after
//! the header's `--- MAC` line), so re-wrapping the header to new recipients (`keys rewrap`)
//! keeps the name. Index files (not age files) are always hashed whole.

use std::fmt;
use std::str::FromStr;

#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Id(pub [u8; 32]);

impl Id {
    /// BLAKE3 of bytes as stored (the id of packs, index files and manifests).
    pub fn of_stored(bytes: &[u8]) -> Id {
        Id(*blake3::hash(bytes).as_bytes())
    }

    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }

    /// The id at the end of a content-addressed object name (`index/<id>`, `snapshots/<id>`,
    /// `data/ab/<id>`): the one parser of object names.
    pub fn from_object_name(name: &str) -> crate::Result<Id> {
        name.rsplit('/')
            .next()
            .and_then(|h| h.parse().ok())
            .ok_or_else(|| crate::RepoError::Corrupt(format!("unexpected object {name}")))
    }

    /// The first 8 hex digits, for humans.
    pub fn short(&self) -> String {
        hex::encode(&self.0[..4])
    }
}

impl fmt::Display for Id {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl fmt::Debug for Id {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Id({})", self.short())
    }
}

#[derive(Debug, thiserror::Error)]
#[error("invalid id {0:?}: expected 64 hex digits")]
pub struct ParseIdError(String);

impl FromStr for Id {
    type Err = ParseIdError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let mut out = [0u8; 32];
        hex::decode_to_slice(s, &mut out).map_err(|_| ParseIdError(s.to_string()))?;
        Ok(Id(out))
    }
}

impl serde::Serialize for Id {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_hex())
    }
}

impl<'de> serde::Deserialize<'de> for Id {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// How a content-addressed age object's id is computed from its stored bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IdRule {
    /// Format v1: BLAKE3 of the whole object.
    WholeObject,
    /// Format v2: BLAKE3 of the age payload (independent of the recipient stanzas).
    AgePayload,
}

impl IdRule {
    pub fn id_of(self, stored: &[u8]) -> crate::Result<Id> {
        match self {
            IdRule::WholeObject => Ok(Id::of_stored(stored)),
            IdRule::AgePayload => Ok(Id::of_stored(age_payload(stored)?)),
        }
    }
}

/// The payload of an age file: the bytes after the header's final `--- MAC` line.
pub fn age_payload(stored: &[u8]) -> crate::Result<&[u8]> {
    let bad = || crate::RepoError::Corrupt("not an age file (no header end)".into());
    if !stored.starts_with(b"age-encryption.org/v1\n") {
        return Err(bad());
    }
    // Stanza lines start with "-> " and bodies are base64, so the first "\n--- " is the
    // header's MAC line.
    let mac = stored
        .windows(5)
        .position(|w| w == b"\n--- ")
        .ok_or_else(bad)?;
    let end = stored[mac + 1..]
        .iter()
        .position(|&b| b == b'\n')
        .ok_or_else(bad)?;
    Ok(&stored[mac + 1 + end + 1..])
}

/// Check that stored bytes hash to the id in their name, under either [`IdRule`]: v1
/// objects stay readable in an upgraded repository, and a v2 object's id holds whatever its
/// header's stanzas are. The v2 rule is tried first: an object in today's format is hashed
/// once (a 16 MiB pack was hashed twice when the v1 rule came first).
pub fn check_stored_id(bytes: &[u8], id: &Id, name: &str) -> crate::Result<()> {
    let payload_matches = age_payload(bytes).is_ok_and(|p| Id::of_stored(p) == *id);
    if !payload_matches && Id::of_stored(bytes) != *id {
        return Err(crate::RepoError::Corrupt(format!(
            "{name}: stored bytes do not match their id"
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stored_object_matches_its_id_under_either_rule_and_nothing_else() {
        let key = age::x25519::Identity::generate();
        let stored = crate::keys::age_encrypt(&[&key.to_public()], b"a pack").unwrap();
        let v1 = IdRule::WholeObject.id_of(&stored).unwrap();
        let v2 = IdRule::AgePayload.id_of(&stored).unwrap();
        assert_ne!(v1, v2);
        check_stored_id(&stored, &v1, "v1 object").unwrap();
        check_stored_id(&stored, &v2, "v2 object").unwrap();
        let mut damaged = stored.clone();
        *damaged.last_mut().unwrap() ^= 1;
        for id in [v1, v2] {
            let e = check_stored_id(&damaged, &id, "packs/x").unwrap_err();
            assert!(
                e.to_string().contains("packs/x: stored bytes do not match"),
                "{e}"
            );
        }
        // Not an age file: only the whole-object rule can hold.
        check_stored_id(b"plain", &Id::of_stored(b"plain"), "v1").unwrap();
        assert!(check_stored_id(b"plain", &v2, "x").is_err());
    }
}
