//! Audit checkpoints in the repository: `audit/<chain>/<seq>.<mac>` objects, one per entry
//! of a catalog's audit trail, so that the trail survives the catalog and a truncated or
//! rewritten catalog can be told from the regions.
//!
//! The audit trail lives in the catalog (the `lifeboat` crate owns its fields and the MAC
//! chain over them); to this crate an entry is an opaque document. Every entry is put to
//! every available region, sealed like a drill report (one age file to the recipients and
//! the writer recipient). Its name carries the chain, the sequence number and the first
//! 32 hex digits of the entry's MAC, so a listing alone says which entries the regions hold
//! and whether the catalog's copy is the same entry: comparing needs no reads. Object Lock
//! retention applies to these objects like to packs (the S3 backend puts every object with
//! the bucket's retention), so an attacker who holds only the catalog, or only delete
//! rights in one region, cannot make the trail disappear.
//!
//! The MAC key is [`Repository::audit_chain_key`]: derived from key material a catalog-only
//! attacker does not have, and that every host which can open the repository does
//! (it is derived from the index key, one of the repository secrets, which the writer key
//! and the identity both unwrap).
//!
//! An object references nothing and nothing references it: it may be written at any time,
//! in any order, and a crash between two regions leaves it in one region, which readers
//! accept. A chain name is 1 to 32 lowercase hex digits chosen by the caller.

use std::collections::BTreeMap;

use crate::drills::DrillWrite;
use crate::keys::age_decrypt;
pub use crate::keys::chain_key_from;
use crate::{RepoError, Repository, Result};

/// The object prefix of audit checkpoints.
pub const PREFIX: &str = "audit/";

/// Hex digits of the MAC kept in an object's name.
pub const NAME_MAC_LEN: usize = 32;

/// One entry as the regions list it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checkpoint {
    pub seq: u64,
    /// The first [`NAME_MAC_LEN`] hex digits of the entry's MAC.
    pub mac_prefix: String,
    /// The regions holding it, in configuration order.
    pub regions: Vec<String>,
}

fn is_hex(s: &str, max: usize) -> bool {
    !s.is_empty()
        && s.len() <= max
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

fn check_chain(chain: &str) -> Result<()> {
    if is_hex(chain, 32) {
        Ok(())
    } else {
        Err(RepoError::Invalid(format!(
            "audit chain {chain:?}: expected 1 to 32 lowercase hex digits"
        )))
    }
}

/// The object name of entry `seq` of `chain` whose MAC is `mac` (hex).
pub fn object_name(chain: &str, seq: u64, mac: &str) -> Result<String> {
    check_chain(chain)?;
    let prefix = mac.get(..NAME_MAC_LEN).unwrap_or(mac);
    if !is_hex(prefix, NAME_MAC_LEN) {
        return Err(RepoError::Invalid(format!(
            "audit entry {seq}: MAC {mac:?} is not hex"
        )));
    }
    Ok(format!("{PREFIX}{chain}/{seq:012}.{prefix}"))
}

/// `(seq, mac prefix)` of an object name under `audit/<chain>/`; `None` for anything else.
fn parse_name(chain: &str, name: &str) -> Option<(u64, String)> {
    let rest = name
        .strip_prefix(PREFIX)?
        .strip_prefix(chain)?
        .strip_prefix('/')?;
    let (seq, mac) = rest.split_once('.')?;
    if seq.len() != 12 || !seq.bytes().all(|b| b.is_ascii_digit()) || !is_hex(mac, NAME_MAC_LEN) {
        return None;
    }
    Some((seq.parse().ok()?, mac.to_string()))
}

impl Repository {
    /// The key of the audit chain's MAC. The one place it is derived: from the writer key's
    /// index key, which only key holders have (never the catalog).
    pub fn audit_chain_key(&self) -> [u8; 32] {
        *self.secrets().audit_key()
    }

    /// Seal `entry` and put it as entry `seq` of `chain` (MAC `mac`, hex) in every
    /// available region. Fails only when no region took it.
    pub async fn put_audit_checkpoint(
        &self,
        chain: &str,
        seq: u64,
        mac: &str,
        entry: &[u8],
    ) -> Result<DrillWrite> {
        let name = object_name(chain, seq, mac)?;
        let sealed = self.seal_for_readers(entry)?;
        self.put_everywhere(&name, sealed).await
    }

    /// Every entry of `chain` that any answering region lists, by sequence number; and the
    /// regions whose listing failed. Two objects for one `seq` with different MACs (a
    /// forged or a rewritten entry) are both returned.
    pub async fn list_audit_checkpoints(
        &self,
        chain: &str,
    ) -> Result<(Vec<Checkpoint>, Vec<(String, String)>)> {
        check_chain(chain)?;
        self.list_audit(chain, format!("{PREFIX}{chain}/")).await
    }

    /// The objects the regions hold for entry `seq` of `chain` (normally none before it is
    /// written: one there means the catalog is behind the regions). One small listing.
    pub async fn audit_checkpoints_at(&self, chain: &str, seq: u64) -> Result<Vec<Checkpoint>> {
        check_chain(chain)?;
        let (found, _) = self
            .list_audit(chain, format!("{PREFIX}{chain}/{seq:012}."))
            .await?;
        Ok(found)
    }

    async fn list_audit(
        &self,
        chain: &str,
        prefix: String,
    ) -> Result<(Vec<Checkpoint>, Vec<(String, String)>)> {
        let (listed, failed) = self.list_everywhere(&prefix).await?;
        let mut found: BTreeMap<(u64, String), Vec<String>> = BTreeMap::new();
        for (i, objects) in listed {
            for o in objects {
                let Some(key) = parse_name(chain, &o.name) else {
                    tracing::warn!(object = %o.name, "ignoring an unexpected object under audit/");
                    continue;
                };
                found
                    .entry(key)
                    .or_default()
                    .push(self.regions[i].name.clone());
            }
        }
        let out = found
            .into_iter()
            .map(|((seq, mac_prefix), mut regions)| {
                regions.sort_by_key(|r| self.region_index(r));
                Checkpoint {
                    seq,
                    mac_prefix,
                    regions,
                }
            })
            .collect();
        Ok((out, failed))
    }

    /// The decrypted entry `checkpoint` of `chain`, from the first region with a copy that
    /// decrypts. The caller checks its MAC.
    pub async fn get_audit_checkpoint(
        &self,
        chain: &str,
        checkpoint: &Checkpoint,
    ) -> Result<Vec<u8>> {
        let name = object_name(chain, checkpoint.seq, &checkpoint.mac_prefix)?;
        let ident = self.reader_identity()?;
        let (bytes, _) = self
            .get_checked(&name, |b| age_decrypt(ident, b, &name).map(|_| ()))
            .await?;
        age_decrypt(ident, &bytes, &name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_reject_strangers() {
        let mac = "ab".repeat(32);
        let name = object_name("0123abcd", 7, &mac).unwrap();
        assert_eq!(name, format!("audit/0123abcd/000000000007.{}", &mac[..32]));
        assert_eq!(
            parse_name("0123abcd", &name),
            Some((7, mac[..32].to_string()))
        );
        assert_eq!(parse_name("0123abce", &name), None);
        assert_eq!(parse_name("0123abcd", "audit/0123abcd/7.ab"), None);
        assert_eq!(
            parse_name("0123abcd", "audit/0123abcd/000000000007.XY"),
            None
        );
        assert!(object_name("../x", 1, &mac).is_err());
        assert!(object_name("ab", 1, "not hex").is_err());
    }

    #[test]
    fn the_chain_key_depends_on_the_key_material() {
        assert_ne!(chain_key_from(&[1; 32]), chain_key_from(&[2; 32]));
        assert_ne!(chain_key_from(&[1; 32]), [1; 32]);
    }
}
