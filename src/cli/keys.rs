//! `lifeboat upgrade` and the repository-key commands (`keys list`, `keys rotate`,
//! `keys rewrap`): the CLI over `lifeboat_repo::{upgrade, epochs}`. Key material itself is
//! created by `keys generate` (`commands.rs`).

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use anyhow::{Context, Result};
use serde_json::json;

use super::output::{cancel_on_signals, print_json};
use super::progress::Bar;
use super::{exit, load_config, Cli};
use crate::engine::{self, KeyNeed};
use lifeboat_repo::clock::now_secs;
use lifeboat_repo::keys::{parse_recipient, Identity};
use lifeboat_repo::rewrap::{self, RewrapOptions};
use lifeboat_repo::upgrade::{upgrade as upgrade_repo, UpgradeStep};
use lifeboat_repo::{epochs, Progress};

/// Convert a format v1 repository to v2 in every region (key objects first, config last).
pub async fn upgrade(cli: &Cli, json: bool) -> Result<u8> {
    let config = load_config(cli)?;
    let keys = engine::keyring(&config, KeyNeed::Any)?;
    let regions = crate::storage::regions(&config)?;
    let report = upgrade_repo(&regions, keys, UpgradeStep::Complete).await?;
    if json {
        print_json(&json!(report));
        return Ok(exit::OK);
    }
    if report.flipped.is_empty() {
        println!(
            "repository {} is already format v2 in {}",
            report.repository,
            report.already.join(", ")
        );
    } else {
        println!(
            "repository {} upgraded to format v2 in {} (key objects written first, config last; nothing re-uploaded, chunk ids unchanged)",
            report.repository,
            report.flipped.join(", ")
        );
    }
    if let Some(r) = &report.details_key_added {
        println!(
            "details key {r} added: new manifests seal their root, location, probes and unreadable paths to it (existing manifests are not rewritten)"
        );
    }
    if let Some(note) = &report.details_note {
        eprintln!("lifeboat: {note}");
    }
    if let Some(pins) = &report.pin_lines {
        println!("the repository secrets fingerprint changed; pin it on every host:\n{pins}");
    }
    Ok(exit::OK)
}

/// `keys list`: epochs with their age, the writer recipient, and (with the identity) how
/// many objects of each region still depend on each epoch.
pub async fn list(cli: &Cli, json: bool) -> Result<u8> {
    let config = load_config(cli)?;
    let repo = engine::open(&config, KeyNeed::Any, None).await?;
    let list = epochs::list(&repo, now_secs());
    let census = if repo.has_identity() {
        Some(rewrap::census(&repo).await?)
    } else {
        None
    };
    let depends = |epoch: u32| -> Option<BTreeMap<String, u64>> {
        census.as_ref().map(|c| {
            c.iter()
                .map(|r| {
                    (
                        r.region.clone(),
                        r.per_epoch.get(&epoch).copied().unwrap_or(0),
                    )
                })
                .collect()
        })
    };
    // Objects still of an older epoch need its identity until a rewrap (`None`: unknown
    // on this host, which holds no identity).
    let rewrap_needed = |epoch: u32, current: bool| -> Option<bool> {
        depends(epoch).map(|d| !current && d.values().any(|&n| n > 0))
    };
    if json {
        let mut value = json!(list);
        if let Some(epochs) = value["epochs"].as_array_mut() {
            for (v, e) in epochs.iter_mut().zip(&list.epochs) {
                v["objects"] = json!(depends(e.epoch));
                v["rewrap_needed"] = json!(rewrap_needed(e.epoch, e.current));
            }
        }
        value["regions"] = json!(census);
        print_json(&value);
        return Ok(exit::OK);
    }
    println!(
        "repository {} (format v{}), writer {}",
        list.repository, list.format, list.writer_recipient
    );
    for e in &list.epochs {
        println!(
            "epoch {}{}: created {}, {} days old, recipients {}",
            e.epoch,
            if e.current { " (current)" } else { "" },
            super::render::time(e.created),
            e.age_days,
            e.recipients.join(", ")
        );
        match (depends(e.epoch), rewrap_needed(e.epoch, e.current)) {
            (Some(d), needed) => {
                let counts: Vec<String> = d.iter().map(|(r, n)| format!("{r} {n}")).collect();
                println!(
                    "  objects: {}{}",
                    counts.join(", "),
                    match needed {
                        Some(true) => " — rewrap needed (`lifeboat keys rewrap`)",
                        _ if e.current => "",
                        _ => " — nothing depends on it any more",
                    }
                );
            }
            (None, _) if !e.current => println!(
                "  objects: unknown here (run `keys list` where the identity is); until a rewrap, its identity is still needed"
            ),
            (None, _) => {}
        }
    }
    match (&list.details_recipient, &list.details_note) {
        (Some(r), _) => println!(
            "details key {r} (manifest details sealed to it; {})",
            if list.details_readable_here {
                "opened here"
            } else {
                "not readable on this host"
            }
        ),
        (None, Some(note)) => println!("{note}"),
        (None, None) => {}
    }
    for r in census.iter().flatten() {
        if r.unknown > 0 {
            println!(
                "region {}: {} objects no identity here opens",
                r.region, r.unknown
            );
        }
        if let Some(e) = &r.error {
            println!("region {}: counts incomplete: {e}", r.region);
        }
    }
    Ok(exit::OK)
}

/// `keys rewrap`: older epochs' objects re-wrapped to the current epoch, in place.
pub async fn rewrap(cli: &Cli, epoch: Option<u32>, json: bool) -> Result<u8> {
    let config = load_config(cli)?;
    let repo = engine::open(&config, KeyNeed::Read, None).await?;
    let progress = Arc::new(Progress::default());
    let bar = Bar::start("rewrap", progress.clone(), !json);
    let cancel = cancel_on_signals();
    let opts = RewrapOptions {
        epoch,
        holder: format!("{} pid {}", crate::host::hostname(), std::process::id()),
        now: now_secs(),
    };
    let report = rewrap::rewrap(&repo, &opts, progress, &cancel).await;
    bar.finish();
    let report = report?;
    let code = if report.complete() {
        exit::OK
    } else {
        exit::DEGRADED
    };
    if json {
        print_json(&json!(report));
        return Ok(code);
    }
    let per_region: Vec<String> = report
        .regions
        .iter()
        .map(|r| match &r.unavailable {
            Some(why) => format!("{} not done ({why})", r.region),
            None => format!(
                "{} {} rewrapped, {} skipped",
                r.region, r.rewrapped, r.skipped
            ),
        })
        .collect();
    println!(
        "repository {}: {} objects rewrapped to epoch {}, {} already current or not selected ({})",
        report.repository,
        report.rewrapped,
        report.epoch,
        report.skipped,
        per_region.join("; ")
    );
    for l in &report.locked {
        println!(
            "locked: {} in {}: its previous version (old header) is kept by Object Lock until {}",
            l.object,
            l.region,
            super::render::time(l.retain_until)
        );
    }
    for k in &report.kept {
        println!("kept: {} in {}: {}", k.object, k.region, k.reason);
    }
    for f in &report.failed {
        println!("FAILED: {} in {}: {}", f.object, f.region, f.reason);
    }
    if !report.complete() {
        println!("not complete: run `lifeboat keys rewrap` again once the problems above are fixed (objects done are skipped)");
    }
    Ok(code)
}

/// `keys rotate`: a new recipient epoch, with a generated identity (`--dir`) or the
/// operator's recipient (`--recipient`).
pub async fn rotate(
    cli: &Cli,
    dir: Option<&Path>,
    recipient: Option<&str>,
    json: bool,
) -> Result<u8> {
    let config = load_config(cli)?;
    let repo = engine::open(&config, KeyNeed::Any, None).await?;
    let epoch = repo.config.current_epoch() + 1;
    let (new_recipient, written) = match (dir, recipient) {
        (_, Some(r)) => (
            parse_recipient(r).with_context(|| format!("--recipient {r:?}"))?,
            None,
        ),
        (Some(dir), None) => {
            let path = dir.join(format!("identity-epoch-{epoch}.txt"));
            anyhow::ensure!(
                !path.exists(),
                "{} already exists; refusing to overwrite key material",
                path.display()
            );
            std::fs::create_dir_all(dir).with_context(|| format!("create {}", dir.display()))?;
            let identity = Identity::generate();
            super::commands::write_secret_file(&path, &identity.to_file_text(), 0o600)?;
            (identity.recipient(), Some(path))
        }
        (None, None) => anyhow::bail!("keys rotate needs --dir DIR or --recipient age1…"),
    };
    let report = epochs::rotate(&repo, &[new_recipient], now_secs()).await?;
    if json {
        print_json(&json!({ "rotation": report, "identity_file": written }));
        return Ok(exit::OK);
    }
    println!(
        "repository {}: recipient epoch {} started in {}; new objects are encrypted to {}",
        report.repository,
        report.epoch,
        report.regions.join(", "),
        report.recipients.join(", ")
    );
    if let Some(path) = written {
        println!(
            "wrote {} (the new identity): escrow it now, and add its key line to the identity file of restore hosts — keep the old identity there too, it still decrypts older objects",
            path.display()
        );
    }
    println!(
        "on every backup host, set in lifeboat.toml: recipients = [\"{}\"]",
        report.recipients.join("\", \"")
    );
    Ok(exit::OK)
}
