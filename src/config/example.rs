//! A commented example `lifeboat.toml`, for the demo, `docs/config.md` and users
//! starting out. It must always parse: a test round-trips it through
//! [`Config::parse`](super::Config::parse).

use std::path::Path;

/// A complete, commented config rooted at `dir`: two local regions
/// (`dir/us-west-2`, `dir/us-east-2`), keys in `dir/keys/` (`recipients.txt`,
/// `writer.key`, `identity.txt`, as `lifeboat keys generate --dir DIR/keys`
/// writes them), the catalog and cache under `dir`, and one plan backing up
/// `dir/data`.
///
/// `keys/recipients.txt` must exist for the result to parse (the recipients are
/// read at load time); the secrets are read only when used.
pub fn example(dir: &Path) -> String {
    let at = |rel: &str| quote(&dir.join(rel).display().to_string());
    let catalog = quote(&format!("sqlite://{}", dir.join("lifeboat.db").display()));
    format!(
        r#"# lifeboat configuration. Every key is described in docs/config.md.
# Relative paths are relative to this file's directory.

# Local working space: the files cache and staging for uploads.
cache_dir = {cache}

[catalog]
# Run history and a cache of what each region holds. It can be rebuilt from
# either region (`lifeboat catalog sync`); use postgres://… to share it.
url = {catalog}

[keys]
# Who can decrypt backups: age recipients (public keys), one per line.
recipients_file = {recipients}
# Lets this host add snapshots; it cannot decrypt them.
writer_key_file = {writer}
# Decrypts backups: keep it only where restores run. Secrets are never written
# in this file, only referenced (`*_file`, or `*_env` for an environment variable).
identity_file = {identity}

# Every snapshot is stored in each region a plan names (all by default).
[[regions]]
name = "us-west-2"
kind = "local"
path = {west}
preferred = true        # restores read this region first

[[regions]]
name = "us-east-2"
kind = "local"
path = {east}
# An S3 region instead:
# kind = "s3"
# bucket = "acme-lifeboat-use2"
# region = "us-east-2"
# object_lock_days = 30

[[plans]]
name = "app-data"
schedule = "0 3 * * *"  # cron, daily at 03:00 UTC; zone = "Europe/Paris" for local time
regions = ["us-west-2", "us-east-2"]
source = {{ kind = "dir", path = {data}, exclude = ["*.tmp", "cache/"] }}
objectives = {{ rpo = "24h", rto = "2h", drill_every = "365d" }}
retention = {{ keep_last = 7, keep_daily = 7, keep_weekly = 4, keep_monthly = 12, keep_yearly = 3 }}
verify_schedule = "0 5 * * 0"  # restore test every Sunday at 05:00
"#,
        cache = at("cache"),
        recipients = at("keys/recipients.txt"),
        writer = at("keys/writer.key"),
        identity = at("keys/identity.txt"),
        west = at("us-west-2"),
        east = at("us-east-2"),
        data = at("data"),
    )
}

/// `text` as a TOML string literal, escaped as needed.
fn quote(text: &str) -> String {
    toml::Value::String(text.to_string()).to_string()
}
