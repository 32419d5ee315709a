//! `lifeboat upgrade` and the repository-key commands (`keys list`, `keys rotate`,
//! `keys rewrap`): the CLI over `lifeboat_repo::{upgrade, epochs}`. Key material itself is
//! created by `keys generate` (`commands.rs`).

use anyhow::Result;
use serde_json::json;

use super::output::print_json;
use super::{exit, load_config, Cli};
use crate::engine::{self, KeyNeed};
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
