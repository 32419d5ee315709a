//! `lifeboat upgrade` and the repository-key commands (`keys list`, `keys rotate`,
//! `keys rewrap`): the CLI over `lifeboat_repo::{upgrade, epochs}`. Key material itself is
//! created by `keys generate` (`commands.rs`).

use std::path::Path;

use anyhow::{Context, Result};
use serde_json::json;

use super::output::print_json;
use super::{exit, load_config, Cli};
use crate::engine::{self, KeyNeed};
use lifeboat_repo::clock::now_secs;
use lifeboat_repo::epochs;
use lifeboat_repo::keys::{parse_recipient, Identity};
use lifeboat_repo::upgrade::{upgrade as upgrade_repo, UpgradeStep};

/// Convert a format v1 repository to v2 in every region (key objects first, config last).
pub async fn upgrade(cli: &Cli, json: bool) -> Result<u8> {
    let config = load_config(cli)?;
    let keys = engine::keyring(&config, KeyNeed::Any)?;
    let regions = crate::storage::regions(&config)?;
    let report = upgrade_repo(&regions, keys, UpgradeStep::Complete).await?;
    if json {
        print_json(&json!(report));
    } else if report.flipped.is_empty() {
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
    Ok(exit::OK)
}

/// `keys list`: epochs with their age, the writer recipient.
pub async fn list(cli: &Cli, json: bool) -> Result<u8> {
    let config = load_config(cli)?;
    let repo = engine::open(&config, KeyNeed::Any, None).await?;
    let list = epochs::list(&repo, now_secs());
    if json {
        print_json(&json!(list));
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
    }
    Ok(exit::OK)
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
