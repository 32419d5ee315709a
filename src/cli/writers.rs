//! `lifeboat keys add-writer` and `keys revoke-writer`: the CLI over
//! `lifeboat_repo::writers` (one writer per backup host, each signing what it writes), and
//! the pins they print for every host's `lifeboat.toml`.

use std::path::Path;

use anyhow::Result;
use serde_json::json;

use super::output::print_json;
use super::{exit, load_config, Cli};
use crate::engine::{self, KeyNeed};
use lifeboat_repo::clock::now_secs;
use lifeboat_repo::writers;

/// `keys add-writer NAME --dir DIR`.
pub async fn add(cli: &Cli, name: &str, dir: &Path, json: bool) -> Result<u8> {
    let config = load_config(cli)?;
    lifeboat_repo::sign::check_writer_name(name)?;
    let path = dir.join(format!("writer-{name}.key"));
    anyhow::ensure!(
        !path.exists(),
        "{} already exists; refusing to overwrite key material",
        path.display()
    );
    let repo = engine::open(&config, KeyNeed::Read, None).await?;
    let added = writers::add_writer(&repo, name, now_secs()).await?;
    std::fs::create_dir_all(dir).map_err(|e| anyhow::anyhow!("create {}: {e}", dir.display()))?;
    super::commands::write_secret_file(&path, &added.key.to_file_text(), 0o600)?;
    let r = &added.report;
    if json {
        print_json(&json!({ "writer": r, "key_file": path }));
        return Ok(exit::OK);
    }
    println!(
        "writer {} added to repository {} in {} (signing key {})",
        r.writer.name,
        r.repository,
        r.regions.join(", "),
        r.writer.signing_key
    );
    println!(
        "wrote {}: install it on the backup host as keys.writer_key_file (mode 0600), and set there `recipients` as on the other backup hosts",
        path.display()
    );
    println!(
        "\npaste these lines into lifeboat.toml on every host (hosts that pin writers refuse this writer's snapshots until they do):\n{}",
        r.pin_lines
    );
    Ok(exit::OK)
}

/// `keys revoke-writer NAME`.
pub async fn revoke(cli: &Cli, name: &str, json: bool) -> Result<u8> {
    let config = load_config(cli)?;
    let repo = engine::open(&config, KeyNeed::Read, None).await?;
    let r = writers::revoke_writer(&repo, name, now_secs()).await?;
    if json {
        print_json(&json!({ "writer": r }));
        return Ok(exit::OK);
    }
    println!(
        "writer {} of repository {} revoked in {}: its snapshots are refused from now on and its index entries no longer count for deduplication",
        r.writer.name,
        r.repository,
        r.regions.join(", ")
    );
    println!(
        "\nremove its line from [keys.writers] on every host; the pins are now:\n{}",
        r.pin_lines
    );
    Ok(exit::OK)
}
