//! DR drill reports in the repository: `drills/<id>` objects, so that drill history survives
//! the loss of the catalog like snapshots do.
//!
//! A report is an opaque document to this crate (the drill module owns its JSON schema); it
//! is sealed like a manifest, one age file to the recipients and the writer recipient, so
//! every host that can list snapshots can read drill history, and only key holders can.
//! A report references no other object and nothing references it, so it can be written at
//! any time and in any order: a crash between two regions leaves a report in one region,
//! which readers accept (they read each report from whichever region has a good copy), and
//! the next write of the same id is an idempotent overwrite of identical bytes' meaning.
//! Ids are chosen by the caller and must be safe object-name components.

use std::collections::BTreeMap;

use bytes::Bytes;

use crate::keys::{age_decrypt, age_encrypt};
use crate::{RepoError, Repository, Result};

/// The object prefix of drill reports.
pub const PREFIX: &str = "drills/";

/// One stored report and the regions that list it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DrillObject {
    pub id: String,
    pub regions: Vec<String>,
}

/// Where a report was written.
#[derive(Debug, Clone, Default)]
pub struct DrillWrite {
    pub written: Vec<String>,
    /// Regions that were unavailable or refused the write, with the reason.
    pub failed: Vec<(String, String)>,
}

/// A drill id is an object-name component: 1 to 64 of `[0-9a-zA-Z_-]`.
pub fn check_id(id: &str) -> Result<()> {
    let ok = !id.is_empty()
        && id.len() <= 64
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if ok {
        Ok(())
    } else {
        Err(RepoError::Invalid(format!(
            "drill id {id:?}: use 1 to 64 letters, digits, '-' or '_'"
        )))
    }
}

impl Repository {
    /// Seal `report` and put it as `drills/<id>` in every available region. Fails only when
    /// no region took it.
    pub async fn put_drill_report(&self, id: &str, report: &[u8]) -> Result<DrillWrite> {
        check_id(id)?;
        let sealed = self.seal_for_readers(report)?;
        self.put_everywhere(&format!("{PREFIX}{id}"), sealed).await
    }

    /// `plaintext` as one age file to the recipients and the writer recipient: readable by
    /// every host that can list snapshots, and only by key holders.
    pub(crate) fn seal_for_readers(&self, plaintext: &[u8]) -> Result<Bytes> {
        let mut rcpts = self.recipients();
        rcpts.push(self.writer_recipient());
        Ok(Bytes::from(age_encrypt(&rcpts, plaintext)?))
    }

    /// The age keys that open [`Repository::seal_for_readers`] files here: the identity's
    /// (every epoch it holds) and the writer key's.
    pub(crate) fn reader_identity(&self) -> Result<&[age::x25519::Identity]> {
        Ok(self.metadata_keys().age_keys)
    }

    /// Put `data` as `name` in every available region, concurrently. Fails only when no
    /// region took it; the regions that refused are in [`DrillWrite::failed`]. For objects
    /// that reference nothing and are referenced by nothing (drill reports, audit
    /// checkpoints), which may therefore be written in any order.
    pub(crate) async fn put_everywhere(&self, name: &str, data: Bytes) -> Result<DrillWrite> {
        let mut out = DrillWrite::default();
        let mut set = tokio::task::JoinSet::new();
        for (i, region) in self.regions.iter().enumerate() {
            if !self.is_available(i) {
                out.failed
                    .push((region.name.clone(), "region unavailable".into()));
                continue;
            }
            let (backend, name, data, region) = (
                region.backend.clone(),
                name.to_string(),
                data.clone(),
                region.name.clone(),
            );
            set.spawn(async move { (region, backend.put(&name, data).await) });
        }
        while let Some(joined) = set.join_next().await {
            match joined {
                Ok((region, Ok(()))) => out.written.push(region),
                Ok((region, Err(e))) => out.failed.push((region, e.to_string())),
                Err(e) => return Err(RepoError::Invalid(format!("upload of {name}: {e}"))),
            }
        }
        out.written.sort_by_key(|r| self.region_index(r));
        if out.written.is_empty() {
            let detail: Vec<String> = out
                .failed
                .iter()
                .map(|(r, e)| format!("{r}: {e}"))
                .collect();
            return Err(RepoError::Invalid(format!(
                "could not write {name} to any region: {}",
                detail.join("; ")
            )));
        }
        Ok(out)
    }

    /// Every drill report listed by any region that answers, by id, with the regions
    /// holding it; and the regions whose listing failed.
    pub async fn list_drill_reports(&self) -> Result<(Vec<DrillObject>, Vec<(String, String)>)> {
        let (listed, failed) = self.list_everywhere(PREFIX).await?;
        let mut ids: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for (i, objects) in listed {
            for o in objects {
                let id = o.name.trim_start_matches(PREFIX);
                if check_id(id).is_err() {
                    tracing::warn!(object = %o.name, "ignoring an unexpected object under drills/");
                    continue;
                }
                ids.entry(id.to_string())
                    .or_default()
                    .push(self.regions[i].name.clone());
            }
        }
        let mut out: Vec<DrillObject> = ids
            .into_iter()
            .map(|(id, mut regions)| {
                regions.sort_by_key(|r| self.region_index(r));
                DrillObject { id, regions }
            })
            .collect();
        out.sort_by(|a, b| a.id.cmp(&b.id));
        Ok((out, failed))
    }

    /// The decrypted report `drills/<id>`, from the first region with a copy that decrypts.
    pub async fn get_drill_report(&self, id: &str) -> Result<Vec<u8>> {
        check_id(id)?;
        let name = format!("{PREFIX}{id}");
        let ident = self.reader_identity()?;
        let (bytes, _) = self
            .get_checked(&name, |b| age_decrypt(ident, b, &name).map(|_| ()))
            .await?;
        age_decrypt(ident, &bytes, &name)
    }
}
