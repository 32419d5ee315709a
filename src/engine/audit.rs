//! The audit trail across the catalog and the regions: getting the chain key and the
//! repository that receives checkpoints ([`seal`]), comparing the catalog's trail with the
//! regions' `audit/` checkpoints ([`verify`]), and bringing lost entries back ([`sync`]).
//!
//! The chain key comes from the repository (its index key, which a backup host unwraps with
//! the writer key and a restore host with the identity); when the repository cannot be
//! opened (before `init`, every region down) from this host's writer key (the same key: a
//! repository's audit key is derived from its writer key, see `docs/FORMAT.md`), and the
//! entry is then keyed but not checkpointed. Comparing needs only listings: an object's name carries its entry's seq
//! and MAC prefix. Entries the regions hold and the catalog lacks are read, authenticated
//! with the key, and reported (verify) or inserted (sync); objects that do not authenticate
//! (someone with put rights in a bucket, not the key) are reported as forged and ignored.

use std::collections::BTreeMap;
use std::sync::Arc;

use anyhow::{Context, Result};
use lifeboat_repo::audit::{chain_key_from, Checkpoint};
use lifeboat_repo::Repository;
use serde::Serialize;

use crate::catalog::audit::{
    verify as verify_chain, AuditEvent, AuditSeal, ChainKey, ChainProblem,
};
use crate::catalog::Catalog;
use crate::config::Config;
use crate::engine::{keyring, KeyNeed};

/// Attach the chain key (and the repository, for checkpoints) to `catalog`. `repo`: an
/// already open repository, else it is opened here. Without any key material the catalog
/// stays unsealed and entries are written unkeyed (with a warning), never lost.
pub async fn seal(config: &Config, catalog: &Catalog, repo: Option<Arc<Repository>>) {
    match chain_seal(config, repo).await {
        Ok(seal) => catalog.set_audit_seal(seal),
        Err(e) => tracing::warn!(
            error = %format!("{e:#}"),
            "no audit chain key (needs the writer key or the identity): audit entries are written unkeyed"
        ),
    }
}

async fn chain_seal(config: &Config, repo: Option<Arc<Repository>>) -> Result<AuditSeal> {
    let repo = match repo {
        Some(r) => Ok(r),
        None => crate::engine::open(config, KeyNeed::Any, None).await,
    };
    match repo {
        Ok(repo) => Ok(AuditSeal {
            key: ChainKey::new(repo.audit_chain_key()),
            repo: Some(repo),
        }),
        Err(open_err) => {
            let keys = keyring(config, KeyNeed::Any)?;
            let writer = keys.writer.with_context(|| {
                format!("the repository could not be opened ({open_err:#}) and no writer key is installed")
            })?;
            tracing::debug!(error = %format!("{open_err:#}"), "audit entries keyed, not checkpointed");
            Ok(AuditSeal {
                key: ChainKey::new(chain_key_from(writer.v1_secrets().index_key())),
                repo: None,
            })
        }
    }
}

/// The catalog at `config`'s URL with the audit seal attached.
pub async fn open_catalog(config: &Config) -> Result<Catalog> {
    let catalog = Catalog::open(config.catalog_url()?).await?;
    seal(config, &catalog, None).await;
    Ok(catalog)
}

/// What `audit --verify` found.
#[derive(Debug, Clone, Default, Serialize)]
pub struct TrailCheck {
    pub chain: String,
    /// Breaks of the chain in the catalog, and differences from the regions, by seq.
    pub problems: Vec<ChainProblem>,
    /// Entries the regions hold (authentic) and the catalog lacks, as inclusive ranges.
    pub missing: Vec<(i64, i64)>,
    /// The newest entry any region holds.
    pub regions_head: Option<i64>,
    /// Catalog entries no region holds (written while every region was unreachable).
    pub not_checkpointed: usize,
    /// Objects that do not authenticate (ignored), by name.
    pub forged: Vec<String>,
    pub unreachable: Vec<(String, String)>,
}

/// The chain key and repository of a sealed `catalog`, or why there are none.
fn sealed(catalog: &Catalog) -> Result<(Arc<AuditSeal>, Arc<Repository>)> {
    let seal = catalog.audit_seal().ok_or_else(|| {
        lifeboat_repo::RepoError::NeedIdentity(
            "verify the audit chain (its key comes from the writer key)".into(),
        )
    })?;
    let repo = seal.repo.clone().context(
        "the repository could not be opened, so the regions' audit checkpoints cannot be read",
    )?;
    Ok((seal, repo))
}

/// The entries the regions hold that the catalog lacks or holds differently, authenticated:
/// `(authentic entries by seq, forged object names)`.
async fn region_entries(
    repo: &Repository,
    key: &ChainKey,
    chain: &str,
    wanted: &[Checkpoint],
) -> (BTreeMap<i64, AuditEvent>, Vec<String>) {
    let mut found = BTreeMap::new();
    let mut forged = Vec::new();
    for cp in wanted {
        let name = format!("audit/{chain}/{:012}.{}", cp.seq, cp.mac_prefix);
        let ev = repo
            .get_audit_checkpoint(chain, cp)
            .await
            .map_err(anyhow::Error::from)
            .and_then(|doc| Ok(serde_json::from_slice::<AuditEvent>(&doc)?));
        match ev {
            Ok(ev)
                if ev.keyed
                    && ev.seq.unsigned_abs() == cp.seq
                    && ev.hash.starts_with(&cp.mac_prefix)
                    && ev.authentic(Some(key)) == Some(true) =>
            {
                found.insert(ev.seq, ev);
            }
            Ok(_) => forged.push(name),
            Err(e) => {
                tracing::warn!(object = %name, error = %format!("{e:#}"), "audit checkpoint unreadable");
                forged.push(name);
            }
        }
    }
    (found, forged)
}

/// Compare the catalog's trail with the regions'. The catalog must be sealed.
pub async fn verify(catalog: &Catalog) -> Result<TrailCheck> {
    let (seal, repo) = sealed(catalog)?;
    let chain = catalog.audit_chain();
    let events = catalog.audit_events(None).await?;
    let mut check = TrailCheck {
        chain: chain.clone(),
        problems: verify_chain(&events, Some(&seal.key)),
        ..Default::default()
    };
    let (checkpoints, unreachable) = repo
        .list_audit_checkpoints(&chain)
        .await
        .context("list the audit checkpoints")?;
    check.unreachable = unreachable;
    let (odd, held) = differences(&events, &checkpoints);
    check.not_checkpointed = events
        .iter()
        .filter(|e| e.keyed && !held.contains_key(&e.seq))
        .count();
    let (authentic, forged) = region_entries(&repo, &seal.key, &chain, &odd).await;
    check.forged = forged;
    check.regions_head = authentic.keys().chain(held.keys()).max().copied();
    let by_seq: BTreeMap<i64, &AuditEvent> = events.iter().map(|e| (e.seq, e)).collect();
    let mut missing: Vec<i64> = Vec::new();
    for (seq, ev) in &authentic {
        match by_seq.get(seq) {
            None => missing.push(*seq),
            Some(mine) => check.problems.push(ChainProblem {
                seq: *seq,
                message: format!(
                    "differs from the entry the regions hold ({:?} by {} at {}): the catalog's entry was rewritten{}",
                    ev.command,
                    ev.os_user,
                    ev.at,
                    if mine.keyed { "" } else { " as an unkeyed one" }
                ),
            }),
        }
    }
    check.missing = ranges(&missing);
    for (from, to) in &check.missing {
        check.problems.push(ChainProblem {
            seq: *from,
            message: format!(
                "entries {from}..{to} are in the regions but missing from the catalog (deleted or truncated): `lifeboat catalog sync` brings them back"
            ),
        });
    }
    check.problems.sort_by_key(|p| p.seq);
    Ok(check)
}

/// Checkpoints that the catalog does not match (a seq it lacks, or another MAC), and the
/// seqs whose catalog entry some region holds.
fn differences(
    events: &[AuditEvent],
    checkpoints: &[Checkpoint],
) -> (Vec<Checkpoint>, BTreeMap<i64, Vec<String>>) {
    let by_seq: BTreeMap<i64, &AuditEvent> = events.iter().map(|e| (e.seq, e)).collect();
    let mut held: BTreeMap<i64, Vec<String>> = BTreeMap::new();
    for cp in checkpoints {
        let seq = i64::try_from(cp.seq).unwrap_or(i64::MAX);
        if by_seq
            .get(&seq)
            .is_some_and(|e| e.hash.starts_with(&cp.mac_prefix))
        {
            held.insert(seq, cp.regions.clone());
        }
    }
    let odd = checkpoints
        .iter()
        .filter(|cp| !held.contains_key(&i64::try_from(cp.seq).unwrap_or(i64::MAX)))
        .cloned()
        .collect();
    (odd, held)
}

/// `[1, 2, 3, 7]` → `[(1, 3), (7, 7)]` (input sorted).
fn ranges(seqs: &[i64]) -> Vec<(i64, i64)> {
    let mut out: Vec<(i64, i64)> = Vec::new();
    for &s in seqs {
        match out.last_mut() {
            Some((_, to)) if *to + 1 == s => *to = s,
            _ => out.push((s, s)),
        }
    }
    out
}

/// What `catalog sync` did to the audit trail.
#[derive(Debug, Clone, Default, Serialize)]
pub struct TrailSync {
    pub chain: String,
    /// Entries brought back (missing from the catalog) and replaced (rewritten in it).
    pub restored: usize,
    pub replaced: usize,
    pub forged: Vec<String>,
}

/// Bring back every authentic entry the regions hold that the catalog lacks or holds
/// differently. Needs the chain key: without it nothing is changed and the reason is given.
pub async fn sync(config: &Config, catalog: &Catalog, repo: Arc<Repository>) -> Result<TrailSync> {
    if catalog.audit_seal().is_none_or(|s| s.repo.is_none()) {
        seal(config, catalog, Some(repo)).await;
    }
    let (seal, repo) = sealed(catalog)?;
    let chain = catalog.audit_chain();
    let events = catalog.audit_events(None).await?;
    let (checkpoints, _) = repo.list_audit_checkpoints(&chain).await?;
    let (mut odd, held) = differences(&events, &checkpoints);
    // Entries whose name still matches but whose content was changed: the regions' copy.
    let changed: std::collections::BTreeSet<i64> = events
        .iter()
        .filter(|e| held.contains_key(&e.seq) && e.authentic(Some(&seal.key)) != Some(true))
        .map(|e| e.seq)
        .collect();
    odd.extend(
        checkpoints
            .iter()
            .filter(|cp| changed.contains(&i64::try_from(cp.seq).unwrap_or(i64::MAX)))
            .cloned(),
    );
    let (authentic, forged) = region_entries(&repo, &seal.key, &chain, &odd).await;
    let mut out = TrailSync {
        chain,
        forged,
        ..Default::default()
    };
    let have: std::collections::BTreeSet<i64> = events.iter().map(|e| e.seq).collect();
    for (seq, ev) in &authentic {
        catalog.restore_audit_event(ev).await?;
        if have.contains(seq) {
            out.replaced += 1;
        } else {
            out.restored += 1;
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::ranges;

    #[test]
    fn ranges_group_consecutive_seqs() {
        assert_eq!(ranges(&[]), vec![]);
        assert_eq!(ranges(&[1, 2, 3, 7, 9, 10]), vec![(1, 3), (7, 7), (9, 10)]);
    }
}
