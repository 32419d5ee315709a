//! The configuration file, `lifeboat.toml`: reading it, validating it, and the
//! resolved form every other module runs on.
//!
//! Parsing has two stages. `raw` mirrors what the user wrote (every field spanned,
//! unknown keys rejected); `resolve` (with `region` and `plan`) checks it and
//! produces [`Config`], in which
//! relative paths are absolute (resolved against the config file's directory),
//! defaults are filled in, and cross-references (a plan's regions) are known to
//! exist. Every error names the file, line, column and key, and says what to do
//! where that is not obvious. Secrets are never in the file: `[keys]` references
//! them by file or environment variable ([`SecretRef`]), loaded only when needed.
//!
//! The keys are documented for users in `docs/config.md`; keep the two in step.

mod error;
mod example;
mod keys;
mod plan;
mod postgres;
mod raw;
mod rds;
mod region;
mod resolve;
#[cfg(test)]
mod tests;
pub mod transport;

use std::path::{Path, PathBuf};
use std::time::Duration;

/// For other files parsed the same way (runbooks): located errors and key paths.
pub(crate) use error::{unknown_key_problem, Locator};
pub use error::{ConfigError, Position};
pub use example::example;
pub use keys::{KeysConfig, SecretRef, SecretString, SLACK_WEBHOOK_ENV, WEBHOOK_ENV};
pub use postgres::same_server;
pub use rds::{
    valid_identifier, InstanceSettings, RdsCopy, RdsSource, DEFAULT_RDS_POLL, DEFAULT_RDS_TIMEOUT,
};
pub use region::parse_region_arg;

/// A loaded, validated configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// The config file, made absolute.
    pub path: PathBuf,
    pub cache_dir: PathBuf,
    /// `sqlite://…` (a relative file made absolute) or `postgres://…`. `None` for a
    /// configuration given on the command line (`--region`, `--identity`): nothing is
    /// recorded, no catalog file is created. Read it through [`Config::catalog_url`].
    pub catalog_url: Option<String>,
    pub keys: KeysConfig,
    /// At least one, names unique, in file order.
    pub regions: Vec<RegionConfig>,
    /// Names unique, in file order.
    pub plans: Vec<PlanConfig>,
}

/// A named place where a copy of the repository lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegionConfig {
    pub name: String,
    pub kind: RegionKind,
    /// Restores read this region first. Exactly one region of a [`Config`] is
    /// preferred: the one marked so, else the first.
    pub preferred: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RegionKind {
    /// A directory (absolute).
    Local { path: PathBuf },
    S3 {
        bucket: String,
        /// The AWS region (or the name an S3-compatible server expects).
        region: String,
        /// Key prefix inside the bucket, without leading or trailing `/`; may be empty.
        prefix: String,
        /// An S3-compatible server's URL instead of AWS.
        endpoint: Option<String>,
        object_lock: Option<ObjectLock>,
        /// The longest one S3 request may take, retries included: a region that accepts
        /// connections but never answers fails after this, not never.
        timeout: Duration,
    },
}

/// `timeout` of an s3 region when the file does not set it: room for a 16 MiB pack on a
/// slow link, short enough that a frozen region fails a nightly backup over to the other.
pub const DEFAULT_S3_TIMEOUT: Duration = Duration::from_secs(120);

/// S3 Object Lock retention put on every uploaded object.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ObjectLock {
    /// At least 1.
    pub days: u32,
    pub mode: LockMode,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LockMode {
    Governance,
    Compliance,
}

/// What to back up, when, where to, and the objectives it is held to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlanConfig {
    pub name: String,
    /// A cron expression of 5 to 7 fields, not yet parsed.
    pub schedule: Option<String>,
    /// A time zone name for `schedule` (UTC when absent), not yet checked.
    pub zone: Option<String>,
    /// The regions this plan stores to: the plan's list, else every region in
    /// config order. Each name is a region of the config.
    pub regions: Vec<String>,
    pub source: SourceConfig,
    pub objectives: Objectives,
    pub retention: Retention,
    /// A cron expression for restore tests, not yet parsed.
    pub verify_schedule: Option<String>,
    /// A cron expression for forget + prune, not yet parsed.
    pub prune_schedule: Option<String>,
    /// How new chunks are stored (`compression = "zstd:N"` or `"none"`); `None`: the
    /// repository's zstd level (`lifeboat init` sets 2).
    pub compression: Option<lifeboat_repo::pack::Codec>,
}

/// Where a plan's data comes from. New kinds add a variant here and an arm in
/// `resolve` (with their fields in `raw::RawSource`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SourceConfig {
    Dir {
        /// Absolute.
        path: PathBuf,
        /// Glob patterns, non-empty; compiled by the source.
        exclude: Vec<String>,
        /// Do not cross into other mounted file systems.
        one_file_system: bool,
        /// Threads reading files (1: on the walking thread); `None`: one per core, ≤ 4.
        read_threads: Option<usize>,
    },
    /// `pg_dump` of one database, streamed into the repository.
    Postgres {
        /// `postgres://user@host:port/db[?params]`, never with a password in it.
        url: String,
        /// The password, given to `pg_dump` only through `PGPASSWORD`; `None`: libpq's own
        /// lookup (`~/.pgpass`, `PGPASSWORD`, `PGPASSFILE`).
        password: Option<SecretRef>,
        /// SQL probes recorded at backup time and compared after a test restore; names unique.
        probes: Vec<SqlProbe>,
        /// Where restore tests and drills create scratch databases (a maintenance database
        /// URL), never the source's server unless `allow_scratch_on_source`; `None`: no
        /// restore test unless `allow_scratch_on_source` (then the source's `postgres`
        /// database). See [`Config::scratch_admin_url`].
        scratch_url: Option<String>,
        /// Restore tests may run on the source's server (set explicitly in the file).
        allow_scratch_on_source: bool,
        /// `pg_dumpall --globals-only` keeps the roles' password hashes (needs a superuser);
        /// off: `--no-role-passwords`.
        globals_with_passwords: bool,
    },
    /// The stdout of a command, restored by piping it into another.
    Command {
        /// argv, non-empty; run without a shell.
        command: Vec<String>,
        /// argv of the command that reads the stream on stdin; non-empty.
        restore_command: Vec<String>,
        /// argv of the restore test's command: stream on stdin, `LIFEBOAT_SCRATCH_DIR` set.
        verify_command: Option<Vec<String>>,
    },
    /// Native RDS snapshots of one DB instance, copied to other AWS regions; no repository.
    Rds(Box<RdsSource>),
}

/// A query whose result is recorded at backup time and must match after a restore.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SqlProbe {
    pub name: String,
    pub sql: String,
}

impl SourceConfig {
    /// The rds source, for the code that runs rds plans (`crate::rds`).
    pub fn as_rds(&self) -> Option<&RdsSource> {
        match self {
            SourceConfig::Rds(s) => Some(s),
            _ => None,
        }
    }

    /// The kind's name as written in the config (`dir`, `postgres`, `command`, `rds`).
    pub fn kind(&self) -> &'static str {
        match self {
            SourceConfig::Dir { .. } => "dir",
            SourceConfig::Postgres { .. } => "postgres",
            SourceConfig::Command { .. } => "command",
            SourceConfig::Rds(_) => "rds",
        }
    }
}

/// Recovery objectives; every duration is greater than zero.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Objectives {
    /// Most data a restore may lose: the age of the newest complete snapshot.
    pub rpo: Duration,
    /// Longest a restore may take.
    pub rto: Duration,
    /// Longest time between passed DR drills.
    pub drill_every: Duration,
}

impl Default for Objectives {
    fn default() -> Objectives {
        Objectives {
            rpo: Duration::from_secs(24 * 3600),
            rto: Duration::from_secs(2 * 3600),
            drill_every: Duration::from_secs(365 * 24 * 3600),
        }
    }
}

/// A plan's retention: which snapshots forget keeps, and prune's grace.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Retention {
    /// The `keep_*` rules, as the repository's retention function takes them (`keep_within`
    /// in seconds; never less than the plan's RPO when applied).
    pub policy: lifeboat_repo::retention::Policy,
    /// Prune's grace between marking and deleting (default 24 h; the repository uses the
    /// longest any plan asks for).
    pub grace: Option<Duration>,
}

impl Config {
    /// Reads and parses the config file at `path`.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|io| {
            let hint = if io.kind() == std::io::ErrorKind::NotFound {
                "choose the config with --config PATH or LIFEBOAT_CONFIG, or start from `lifeboat config example --dir DIR`"
            } else {
                ""
            };
            ConfigError::Read {
                path: path.to_path_buf(),
                io,
                hint: hint.to_string(),
            }
        })?;
        Config::parse(&text, path)
    }

    /// Parses config text that was read from `origin`. `origin` appears in error
    /// messages as given, and its directory anchors relative paths. A
    /// `keys.recipients_file` is read here; secrets are not.
    pub fn parse(text: &str, origin: &Path) -> Result<Config, ConfigError> {
        resolve::parse(text, origin)
    }

    /// A configuration from the command line alone, for a host that has nothing but the
    /// identity and the bucket names: `regions` (the first preferred), an identity, no
    /// plans, no catalog. Recipients and the writer key come from the repository.
    pub fn bare(regions: Vec<RegionConfig>, identity: Option<SecretRef>) -> Config {
        let mut regions = regions;
        if !regions.iter().any(|r| r.preferred) {
            if let Some(first) = regions.first_mut() {
                first.preferred = true;
            }
        }
        let cwd = std::env::current_dir().unwrap_or_default();
        Config {
            path: PathBuf::from("(command line)"),
            cache_dir: resolve::default_cache().unwrap_or_else(|| cwd.join("lifeboat-cache")),
            catalog_url: None,
            keys: KeysConfig {
                recipients: Vec::new(),
                writer_key: None,
                identity,
                pins: Default::default(),
            },
            regions,
            plans: Vec::new(),
        }
    }

    /// The catalog's URL; an error for a configuration given on the command line.
    pub fn catalog_url(&self) -> Result<&str, ConfigError> {
        self.catalog_url.as_deref().ok_or_else(|| ConfigError::Invalid {
            file: self.path.clone(),
            at: None,
            key: "catalog".to_string(),
            problem: "none with --region: this command works on the catalog; give a config file with --config".to_string(),
        })
    }

    /// The plan called `name`; the error lists the plans there are.
    pub fn plan(&self, name: &str) -> Result<&PlanConfig, ConfigError> {
        self.plans
            .iter()
            .find(|plan| plan.name == name)
            .ok_or_else(|| ConfigError::UnknownPlan {
                name: name.to_string(),
                known: self.plans.iter().map(|plan| plan.name.clone()).collect(),
            })
    }

    /// The region called `name`; the error lists the regions there are.
    pub fn region(&self, name: &str) -> Result<&RegionConfig, ConfigError> {
        self.regions
            .iter()
            .find(|region| region.name == name)
            .ok_or_else(|| ConfigError::UnknownRegion {
                name: name.to_string(),
                known: self.regions.iter().map(|r| r.name.clone()).collect(),
            })
    }

    /// The region restores read first.
    ///
    /// Panics if `regions` is empty, which a parsed config never is.
    pub fn preferred_region(&self) -> &RegionConfig {
        // `resolve` guarantees at least one region and exactly one preferred.
        self.regions
            .iter()
            .find(|region| region.preferred)
            .unwrap_or(&self.regions[0])
    }
}
