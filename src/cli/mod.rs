//! The command line: clap definitions, dispatch to the engine, output and exit codes.
//! Commands stay thin; every decision lives in the library.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand, ValueEnum};

use crate::config::Config;

mod audit;
pub mod catalog;
mod commands;
pub mod daemon;
pub mod drill;
mod forget;
#[cfg(test)]
mod help_tests;
mod history;
mod keys;
mod output;
mod progress;
mod prune;
mod rds;
mod regions;
mod render;
mod restore_stream;
mod status;
pub mod verify_restore;
mod writers;

/// The exit codes, under the name the CLI uses (they live below, in [`crate::outcome`]).
pub use crate::outcome as exit;

#[derive(Debug, Parser)]
#[command(
    name = "lifeboat",
    version,
    about = "Encrypted, deduplicated backups in two regions, with restores that are proven and timed",
    long_about = "lifeboat backs up directories into a repository kept in every configured region \
(age-encrypted, deduplicated), restores them from either region, and verifies what it stored.\n\n\
Configuration comes from --config, $LIFEBOAT_CONFIG, ./lifeboat.toml or /etc/lifeboat/lifeboat.toml \
(first found). Start with `lifeboat keys generate --dir keys` and `lifeboat config example`.",
    after_help = "Exit codes: 0 ok, 1 failure, 2 usage or config error, 3 backup degraded (not in every region), \
4 verification failed (also: audit chain broken), 5 key problem (missing identity, wrong key), \
10 status warning, 11 status breach (objectives not met), 130 interrupted. \
`replicate` exits 3 while some region still lacks a snapshot."
)]
pub struct Cli {
    /// Path to lifeboat.toml.
    #[arg(
        long,
        short = 'c',
        global = true,
        env = "LIFEBOAT_CONFIG",
        value_name = "PATH"
    )]
    pub config: Option<PathBuf>,
    /// Restore from nothing: a region given here instead of a config file, as
    /// NAME=s3://BUCKET[/PREFIX][?region=AWS_REGION&endpoint=URL] or NAME=local:/PATH
    /// (repeat for each region; the first is read first). With it no config file is read,
    /// no catalog is written, and plans are found in the repository. S3 credentials come
    /// from the standard AWS chain (environment, profile, instance role).
    #[arg(long = "region", global = true, value_name = "NAME=URL")]
    pub regions: Vec<String>,
    /// The age identity file that decrypts the repository (overrides keys.identity_file).
    #[arg(long, global = true, value_name = "FILE")]
    pub identity: Option<PathBuf>,
    /// Log format on stderr.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
    /// More log output (-v info, -vv debug).
    #[arg(long, short = 'v', global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Key material and the repository's keys: create an identity and a writer key, list the
    /// recipient epochs, rotate to a new one, rewrap older objects to it.
    #[command(subcommand)]
    Keys(KeysCommand),
    /// Print an example lifeboat.toml.
    #[command(subcommand)]
    Config(ConfigCommand),
    /// Create the repository in every region that lacks it (never overwrites one).
    Init {
        /// Print the result as JSON on stdout (for scripts; exit codes are the same).
        #[arg(long)]
        json: bool,
    },
    /// Convert a format v1 repository to format v2 in place, in every region: the repository
    /// secrets (v1 derived them from the writer key) are wrapped into keys/secrets-0001.age
    /// first, config flips to v2 last, so a crash at any point leaves a valid repository and
    /// running it again finishes. Nothing is re-uploaded; chunk ids stay the same. Needs every
    /// region, and the writer key (or the identity). With the identity it also adds a details
    /// key to a v2 repository that lacks one (manifests' root, location and probes are then
    /// sealed from writers) and prints the new `repository_secrets` pin for every host.
    Upgrade {
        /// Print the result as JSON on stdout (for scripts; exit codes are the same).
        #[arg(long)]
        json: bool,
    },
    /// Back up a plan now: one snapshot into every region of the plan.
    Backup {
        /// The plan's name in lifeboat.toml.
        plan: String,
        /// Print the result as JSON on stdout.
        #[arg(long)]
        json: bool,
    },
    /// List snapshots with their regions and sizes.
    Snapshots {
        /// Only this plan's snapshots.
        #[arg(long)]
        plan: Option<String>,
        /// Print the result as JSON on stdout (for scripts; exit codes are the same).
        #[arg(long)]
        json: bool,
    },
    /// Restore a snapshot: a directory plan into a directory, a postgres plan into a
    /// database, a command plan into its restore_command (every chunk is verified on the
    /// way); an rds plan into a new DB instance (--to-instance).
    Restore {
        /// The plan's name.
        plan: String,
        /// Snapshot id, unique id prefix, or "latest".
        #[arg(long, default_value = "latest")]
        snapshot: String,
        /// Region to read from first (falls back per object to the others).
        #[arg(long, value_name = "REGION")]
        from: Option<String>,
        /// Directory plans: the target directory (empty or absent unless --overwrite).
        /// Postgres plans: postgres://USER@HOST:PORT/DB, an existing empty database. Postgres
        /// and command plans: "-" writes the raw stream to stdout, a path writes it to a new
        /// file. Command plans without --to: the plan's restore_command reads the stream.
        #[arg(long, value_name = "DIR|URL|-")]
        to: Option<String>,
        /// Restore only this path of the snapshot (relative to the backed-up directory).
        #[arg(long, value_name = "PATH")]
        include: Option<PathBuf>,
        /// Restore into a non-empty directory or over an existing file, replacing entries
        /// with the same names.
        #[arg(long)]
        overwrite: bool,
        /// Postgres: restore into a non-empty database (pg_restore --clean --if-exists).
        #[arg(long)]
        force: bool,
        /// Postgres: parallel pg_restore with N jobs; the dump is first written to a file in
        /// --scratch (default: the cache directory), which needs room for the whole dump.
        #[arg(long, value_name = "N")]
        jobs: Option<u32>,
        /// Postgres --jobs: where the temporary dump file goes.
        #[arg(long, value_name = "DIR")]
        scratch: Option<PathBuf>,
        /// rds plans: the new DB instance to create from the snapshot (it must not exist);
        /// --from picks the AWS region (default: the source's). Prints its endpoint.
        #[arg(long, value_name = "NAME")]
        to_instance: Option<String>,
        /// rds plans: instance class of the new instance (default: the plan's, else the snapshot's).
        #[arg(long, value_name = "CLASS", requires = "to_instance")]
        instance_class: Option<String>,
        /// rds plans: DB subnet group of the new instance (default: the plan's).
        #[arg(long, value_name = "NAME", requires = "to_instance")]
        subnet_group: Option<String>,
        /// rds plans: VPC security group id of the new instance; repeat for several.
        #[arg(long = "security-group", value_name = "SG", requires = "to_instance")]
        security_groups: Vec<String>,
        /// Directory plans: drop setuid and setgid bits (and file capabilities,
        /// security.capability) from restored files and directories.
        #[arg(long)]
        no_setuid: bool,
        /// Directory plans: do not restore owners and groups. Otherwise, as root, they are
        /// restored by id (the names recorded at backup are for reading only).
        /// Postgres plans: objects are owned by the connecting role (pg_restore --no-owner).
        /// With --no-privileges too, no role is created on the target.
        #[arg(long)]
        no_owner: bool,
        /// Postgres plans: restore no GRANT or REVOKE (pg_restore --no-privileges). Without
        /// both --no-owner and --no-privileges, the snapshot's roles that the target server
        /// lacks are created first (existing roles are never changed).
        #[arg(long)]
        no_privileges: bool,
        /// Directory plans: do not restore extended attributes (user.*, trusted.*,
        /// security.*, POSIX ACLs, file capabilities). Without it, those this user may not
        /// set (trusted.* and security.* need root) are skipped with one warning.
        #[arg(long)]
        no_xattrs: bool,
        /// Print the result as JSON on stdout (for scripts; exit codes are the same).
        #[arg(long)]
        json: bool,
    },
    /// Check every region: structure always; with --read-data, download and check packs;
    /// with --restore, restore into scratch space, compare and time it (a restore test).
    Verify {
        /// Read and check all packs, or PERCENT of them chosen at random (needs the identity).
        #[arg(long, value_name = "PERCENT", num_args = 0..=1, default_missing_value = "100")]
        read_data: Option<f64>,
        /// Restore test: restore each plan's newest snapshot into scratch space (a temporary
        /// directory, a scratch database, the verify_command), compare it with what the
        /// backup recorded, record duration and outcome in the catalog. Exit 4 on a difference.
        #[arg(long)]
        restore: bool,
        /// Restore test of this plan only.
        #[arg(long, requires = "restore")]
        plan: Option<String>,
        /// Restore test of this snapshot (id, prefix or "latest"; needs --plan).
        #[arg(long, requires = "plan")]
        snapshot: Option<String>,
        /// Restore test: region to read first.
        #[arg(long, value_name = "REGION", requires = "restore")]
        from: Option<String>,
        /// Restore test: parent of the scratch directories (default: the cache directory).
        #[arg(long, value_name = "DIR", requires = "restore")]
        scratch: Option<PathBuf>,
        /// Print the result as JSON on stdout (for scripts; exit codes are the same).
        #[arg(long)]
        json: bool,
    },
    /// Per plan: RPO age, RTO evidence, drill age and region health. Exit 0 healthy,
    /// 10 warning, 11 breach.
    Status {
        /// Print the result as JSON on stdout (for scripts; exit codes are the same).
        #[arg(long)]
        json: bool,
    },
    /// Run scheduled plans as they come due; serve /metrics; send alerts. Stops cleanly on
    /// SIGTERM.
    Daemon(daemon::DaemonArgs),
    /// Run every plan that is due now, once, and exit (for system cron or a Kubernetes CronJob).
    RunDue(daemon::RunDueArgs),
    /// The catalog database: rebuild it from a region, list what it knows.
    #[command(subcommand)]
    Catalog(catalog::CatalogCommand),
    /// The audit trail of commands that read, restored or changed backups: an intent entry
    /// before each command and an outcome entry after, chained under a keyed MAC and
    /// checkpointed into every region (`audit/`).
    Audit {
        /// Check the chain and compare it with the regions' checkpoints; exit 4 naming the
        /// first entry that was modified, rewritten or deleted, or the range a truncated
        /// catalog lost (`catalog sync` brings it back). Needs the writer key or identity.
        #[arg(long)]
        verify: bool,
        /// Only the newest N entries (the chain is always verified whole).
        #[arg(long, value_name = "N")]
        limit: Option<i64>,
        /// Print the result as JSON on stdout (for scripts; exit codes are the same).
        #[arg(long)]
        json: bool,
    },
    /// Apply retention policies (delete manifests), or erase paths with --path; see --help.
    Forget(forget::ForgetArgs),
    /// Remove data no snapshot needs: mark, wait the grace period, delete; see --help.
    Prune(prune::PruneArgs),
    /// Copy to every region what it lacks (degraded snapshots, a new region): packs, then
    /// index, then snapshots, each object verified. Idempotent; safe to interrupt and rerun.
    Replicate {
        /// Print the result as JSON on stdout (for scripts; exit codes are the same).
        #[arg(long)]
        json: bool,
    },
    /// The regions themselves: reachability, permissions, versioning, Object Lock.
    #[command(subcommand)]
    Regions(RegionsCommand),
    /// DR drills from runbooks (runbooks/*.toml): validate, plan (dry run), run, list, report.
    #[command(subcommand)]
    Drill(drill::DrillCommand),
}

#[derive(Debug, Subcommand)]
pub enum RegionsCommand {
    /// Per region: reachable, can list/put/get, can this identity delete (a warning for a
    /// writer), versioning and Object Lock state, round-trip latency.
    Check {
        /// Print the result as JSON on stdout (for scripts; exit codes are the same).
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum KeysCommand {
    /// Write DIR/identity.txt and DIR/writer.key (mode 0600); print the recipient.
    Generate {
        /// Directory to write identity.txt and writer.key into (created if missing).
        #[arg(long, value_name = "DIR")]
        dir: PathBuf,
        /// Print the result as JSON on stdout (for scripts; exit codes are the same).
        #[arg(long)]
        json: bool,
    },
    /// The repository's recipient epochs (creation date, age, recipients), its writer, and
    /// what still depends on each epoch: on a host with the identity, the number of objects
    /// per epoch in each region (one ranged read of each object's header); elsewhere, which
    /// older epochs may still be needed. Epochs other than the current one that objects
    /// still depend on say "rewrap needed".
    List {
        /// Print the epochs, writers and per-epoch object counts as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Start a new recipient epoch: new packs, trees and manifests are encrypted to the new
    /// recipient; old objects stay readable with the old identity (keep it in escrow, and
    /// keep its line in the identity file of restore hosts until a rewrap). Chunk ids and
    /// the repository secrets do not change, nothing is re-uploaded. Needs every region, and
    /// the identity when the repository has a details key (the new epoch gets its copy).
    #[command(group(clap::ArgGroup::new("new_key").required(true).args(["dir", "recipient"])))]
    Rotate {
        /// Generate the new identity into DIR/identity-epoch-N.txt (mode 0600).
        #[arg(long, value_name = "DIR")]
        dir: Option<PathBuf>,
        /// Use this recipient (age1…); its identity is kept elsewhere by the operator.
        #[arg(long, value_name = "AGE1…")]
        recipient: Option<String>,
        /// Print the rotation report and the identity file written as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Add a writer (one backup host): run where the identity is. Generates the host's
    /// writer key (it signs the host's manifests and index files with an Ed25519 key derived
    /// from it), stores the repository secrets wrapped to it as keys/writer-NAME.age in every
    /// region, lists it in config, and prints the lines every host's lifeboat.toml must pin.
    /// Install DIR/writer-NAME.key on the host as keys.writer_key_file (mode 0600).
    AddWriter {
        /// The writer's name: 1-64 letters, digits, '-' or '_' (the host's name, say).
        name: String,
        /// Write the new writer key to DIR/writer-NAME.key (mode 0600).
        #[arg(long, value_name = "DIR")]
        dir: PathBuf,
        /// Print the new writer and its key file as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Revoke a writer: run where the identity is. Nothing it signed is trusted any more:
    /// its snapshots are refused (exit 5) and left out of listings, its index files no
    /// longer count for deduplication (honest writers store those chunks again). Remove its
    /// line from [keys.writers] on every host too.
    RevokeWriter {
        /// The writer's name, as `keys list` and [keys.writers] show it.
        name: String,
        /// Print the result as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Re-encrypt the age headers of older epochs' objects (packs, manifests, drill reports,
    /// audit checkpoints, erasure receipts) to the current epoch's recipients, in every
    /// region: the file key and payload stay, so ids, names and chunk ids stay and nothing is
    /// re-uploaded. Afterwards the current identity alone reads everything. Each object is
    /// decrypted with the current identity before it is put and again after it is read back;
    /// objects already at the current epoch are skipped, so an interrupted run finishes when
    /// run again. In buckets with Object Lock the previous version (old header) stays until
    /// its retain-until: those objects are listed. Needs the identities of the current epoch
    /// and of the epochs being rewrapped (one identity file with several key lines). Exit 0
    /// when done, 3 when a region was unavailable or an object failed (run again), 5 when
    /// an identity is missing.
    Rewrap {
        /// Only objects of this older epoch (default: every epoch older than the current).
        #[arg(long, value_name = "N")]
        epoch: Option<u32>,
        /// Print the report as JSON (rewrapped, skipped, locked with retain-until, kept,
        /// failed, per region).
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum ConfigCommand {
    /// Print a commented example config with two local regions under DIR.
    Example {
        /// The base directory the example's regions, keys and cache live under.
        #[arg(long, value_name = "DIR", default_value = "/var/lib/lifeboat")]
        dir: PathBuf,
    },
}

fn find_config(explicit: Option<&PathBuf>) -> Result<PathBuf> {
    if let Some(p) = explicit {
        return Ok(p.clone());
    }
    for p in ["lifeboat.toml", "/etc/lifeboat/lifeboat.toml"] {
        let p = PathBuf::from(p);
        if p.exists() {
            return Ok(p);
        }
    }
    anyhow::bail!(crate::config::ConfigError::Read {
        path: PathBuf::from("lifeboat.toml"),
        io: std::io::Error::from(std::io::ErrorKind::NotFound),
        hint: "no config found at --config, $LIFEBOAT_CONFIG, ./lifeboat.toml or /etc/lifeboat/lifeboat.toml; create one with `lifeboat config example`".into(),
    })
}

/// The configuration: from `--region`/`--identity` alone when regions are given on the
/// command line, else the config file (with `--identity` overriding its identity).
pub fn load_config(cli: &Cli) -> Result<Config> {
    let identity = cli.identity.as_ref().map(|path| {
        crate::config::SecretRef::File(if path.is_absolute() {
            path.clone()
        } else {
            std::env::current_dir().unwrap_or_default().join(path)
        })
    });
    if !cli.regions.is_empty() {
        anyhow::ensure!(
            cli.config.is_none(),
            "--region replaces the config file: give either --config (or LIFEBOAT_CONFIG) or --region, not both"
        );
        let regions = cli
            .regions
            .iter()
            .map(|arg| crate::config::parse_region_arg(arg))
            .collect::<Result<Vec<_>, _>>()?;
        let mut seen = std::collections::HashSet::new();
        for r in &regions {
            anyhow::ensure!(
                seen.insert(r.name.clone()),
                "--region: region {} is given twice",
                r.name
            );
        }
        return Ok(Config::bare(regions, identity));
    }
    let path = find_config(cli.config.as_ref())?;
    let mut config = Config::load(&path)?;
    if identity.is_some() {
        config.keys.identity = identity;
    }
    Ok(config)
}

fn init_logging(cli: &Cli) {
    let level = match cli.verbose {
        0 => "warn",
        1 => "info",
        _ => "debug",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_env("LIFEBOAT_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(level));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(colour_on_stderr(
            std::io::IsTerminal::is_terminal(&std::io::stderr()),
            std::env::var_os("NO_COLOR"),
        ))
        .with_writer(std::io::stderr);
    match cli.log_format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Text => builder.with_target(false).init(),
    }
}

/// Colour codes only for a person at a terminal: never into a file, a pipe or journald, and
/// never when `NO_COLOR` is set to anything but the empty string (no-color.org).
fn colour_on_stderr(is_terminal: bool, no_color: Option<std::ffi::OsString>) -> bool {
    is_terminal && no_color.is_none_or(|v| v.is_empty())
}

/// Parse arguments, run, and map the outcome to an exit code.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(&cli);
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("start runtime")
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("lifeboat: {e:#}");
            return ExitCode::from(exit::FAILURE);
        }
    };
    let outcome = rt.block_on(async {
        let trail = audit::Trail::start(&cli).await;
        let outcome = commands::run(&cli).await;
        if let Some(trail) = trail {
            trail.finish(&outcome).await;
        }
        outcome
    });
    match outcome {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            eprintln!("lifeboat: error: {e:#}");
            ExitCode::from(exit::code_for(&e))
        }
    }
}
