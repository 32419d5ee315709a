//! What the user wrote: the first stage of parsing `lifeboat.toml`.
//!
//! These structs mirror the file one to one. Every field is optional and spanned
//! so that `resolve` can report a missing or invalid value at its line with a
//! message of our own; unknown keys are rejected here (`deny_unknown_fields`).
//! Nothing outside `config` sees these types.
//!
//! Kinds (`[[regions]] kind`, a plan's `source.kind`) are kept as strings and the
//! fields of all kinds sit side by side: which fields a kind allows is checked in
//! `resolve`, which can then name the kind in the error.

use std::fmt;

use serde::de::{Deserializer, IgnoredAny, MapAccess, Visitor};
use serde::Deserialize;
use toml::Spanned;

pub(super) type Text = Option<Spanned<String>>;
pub(super) type TextList = Option<Spanned<Vec<Spanned<String>>>>;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawConfig {
    pub cache_dir: Text,
    pub catalog: Option<Spanned<RawCatalog>>,
    pub keys: Option<Spanned<RawKeys>>,
    pub regions: Option<Spanned<Vec<Spanned<RawRegion>>>>,
    pub plans: Option<Spanned<Vec<Spanned<RawPlan>>>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawCatalog {
    pub url: Text,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawKeys {
    pub recipients: TextList,
    pub recipients_file: Text,
    pub writer_key_file: Text,
    pub writer_key_env: Text,
    pub identity_file: Text,
    pub identity_env: Text,
    /// Pins (`docs/config.md`, "Pinning"): what this host trusts whatever the bucket says.
    pub repository_id: Text,
    pub repository_secrets: Text,
    pub allow_unsigned: Option<Spanned<bool>>,
    pub writers: Option<Spanned<std::collections::BTreeMap<String, Spanned<String>>>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawRegion {
    pub name: Text,
    pub kind: Text,
    pub preferred: Option<Spanned<bool>>,
    // kind = "local"
    pub path: Text,
    // kind = "s3"
    pub bucket: Text,
    pub region: Text,
    pub prefix: Text,
    pub endpoint: Text,
    /// Accept a plain `http://` endpoint that is not a loopback address.
    pub allow_insecure: Option<Spanned<bool>>,
    pub object_lock_days: Option<Spanned<u32>>,
    pub object_lock_mode: Text,
    pub timeout: Text,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawPlan {
    pub name: Text,
    pub schedule: Text,
    pub zone: Text,
    pub regions: TextList,
    pub source: Option<Spanned<RawSource>>,
    pub objectives: Option<Spanned<RawObjectives>>,
    pub retention: Option<Spanned<RawRetention>>,
    pub verify_schedule: Text,
    pub prune_schedule: Text,
    pub compression: Text,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawObjectives {
    pub rpo: Text,
    pub rto: Text,
    pub drill_every: Text,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawRetention {
    pub keep_last: Option<u32>,
    pub keep_hourly: Option<u32>,
    pub keep_daily: Option<u32>,
    pub keep_weekly: Option<u32>,
    pub keep_monthly: Option<u32>,
    pub keep_yearly: Option<u32>,
    pub keep_within: Text,
    /// Time between prune's mark and delete.
    pub grace: Text,
}

/// One `probes` entry of a postgres source.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawProbe {
    pub name: Text,
    pub sql: Text,
}

/// One `copy_to` entry of an rds source: a destination region and its KMS key.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawRdsCopy {
    pub region: Text,
    pub kms_key_id: Text,
}

/// A plan's `source` table.
///
/// Deserialized by hand rather than with `deny_unknown_fields`: keys no kind knows
/// are collected in `unknown`, so that `resolve` can first say "unsupported source
/// kind" for `{ kind = "postgres", database = "app" }` instead of complaining
/// about `database`. To add a kind: add its fields here, in the visitor and in
/// [`Self::present`], then a variant to `SourceConfig` and an arm in `resolve`.
#[derive(Debug, Default)]
pub(super) struct RawSource {
    pub kind: Text,
    // kind = "dir"
    pub path: Text,
    pub exclude: TextList,
    pub one_file_system: Option<Spanned<bool>>,
    pub read_threads: Option<Spanned<i64>>,
    // kind = "postgres"
    pub url: Text,
    pub password_env: Text,
    pub password_file: Text,
    pub probes: Option<Spanned<Vec<Spanned<RawProbe>>>>,
    pub scratch_url: Text,
    pub allow_scratch_on_source: Option<Spanned<bool>>,
    pub globals_with_passwords: Option<Spanned<bool>>,
    // kind = "command"
    pub command: TextList,
    pub restore_command: TextList,
    pub verify_command: TextList,
    // kind = "rds" (also password_env, password_file, probes)
    pub instance: Text,
    pub cluster: Text,
    pub region: Text,
    pub copy_to: Option<Spanned<Vec<Spanned<RawRdsCopy>>>>,
    pub instance_class: Text,
    pub subnet_group: Text,
    pub security_groups: TextList,
    pub option_group: Text,
    pub parameter_group: Text,
    pub tags: Option<Spanned<std::collections::BTreeMap<String, Spanned<String>>>>,
    pub endpoint: Text,
    pub allow_insecure: Option<Spanned<bool>>,
    pub probe_url: Text,
    pub timeout: Text,
    pub poll_interval: Text,
    /// Keys that no source kind has, in file order.
    pub unknown: Vec<Spanned<String>>,
}

impl RawSource {
    /// The keys present in the table other than `kind`, with their spans.
    pub fn present(&self) -> Vec<(&'static str, std::ops::Range<usize>)> {
        let mut present = Vec::new();
        if let Some(v) = &self.path {
            present.push(("path", v.span()));
        }
        if let Some(v) = &self.exclude {
            present.push(("exclude", v.span()));
        }
        if let Some(v) = &self.read_threads {
            present.push(("read_threads", v.span()));
        }
        let flags = [
            ("one_file_system", &self.one_file_system),
            ("allow_scratch_on_source", &self.allow_scratch_on_source),
            ("globals_with_passwords", &self.globals_with_passwords),
            ("allow_insecure", &self.allow_insecure),
        ];
        for (name, v) in flags {
            if let Some(v) = v {
                present.push((name, v.span()));
            }
        }
        let texts = [
            ("url", &self.url),
            ("password_env", &self.password_env),
            ("password_file", &self.password_file),
            ("scratch_url", &self.scratch_url),
            ("instance", &self.instance),
            ("cluster", &self.cluster),
            ("region", &self.region),
            ("instance_class", &self.instance_class),
            ("subnet_group", &self.subnet_group),
            ("option_group", &self.option_group),
            ("parameter_group", &self.parameter_group),
            ("endpoint", &self.endpoint),
            ("probe_url", &self.probe_url),
            ("timeout", &self.timeout),
            ("poll_interval", &self.poll_interval),
        ];
        for (name, v) in texts {
            if let Some(v) = v {
                present.push((name, v.span()));
            }
        }
        if let Some(v) = &self.probes {
            present.push(("probes", v.span()));
        }
        if let Some(v) = &self.copy_to {
            present.push(("copy_to", v.span()));
        }
        if let Some(v) = &self.tags {
            present.push(("tags", v.span()));
        }
        let lists = [
            ("command", &self.command),
            ("restore_command", &self.restore_command),
            ("verify_command", &self.verify_command),
            ("security_groups", &self.security_groups),
        ];
        for (name, v) in lists {
            if let Some(v) = v {
                present.push((name, v.span()));
            }
        }
        present
    }
}

impl<'de> Deserialize<'de> for RawSource {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_map(RawSourceVisitor)
    }
}

struct RawSourceVisitor;

impl<'de> Visitor<'de> for RawSourceVisitor {
    type Value = RawSource;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a table such as { kind = \"dir\", path = \"/srv/app\" }")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<RawSource, A::Error> {
        let mut source = RawSource::default();
        while let Some(key) = map.next_key::<Spanned<String>>()? {
            match key.get_ref().as_str() {
                "kind" => source.kind = Some(map.next_value()?),
                "path" => source.path = Some(map.next_value()?),
                "exclude" => source.exclude = Some(map.next_value()?),
                "one_file_system" => source.one_file_system = Some(map.next_value()?),
                "read_threads" => source.read_threads = Some(map.next_value()?),
                "url" => source.url = Some(map.next_value()?),
                "password_env" => source.password_env = Some(map.next_value()?),
                "password_file" => source.password_file = Some(map.next_value()?),
                "probes" => source.probes = Some(map.next_value()?),
                "scratch_url" => source.scratch_url = Some(map.next_value()?),
                "allow_scratch_on_source" => {
                    source.allow_scratch_on_source = Some(map.next_value()?)
                }
                "globals_with_passwords" => source.globals_with_passwords = Some(map.next_value()?),
                "command" => source.command = Some(map.next_value()?),
                "restore_command" => source.restore_command = Some(map.next_value()?),
                "verify_command" => source.verify_command = Some(map.next_value()?),
                "instance" => source.instance = Some(map.next_value()?),
                "cluster" => source.cluster = Some(map.next_value()?),
                "region" => source.region = Some(map.next_value()?),
                "copy_to" => source.copy_to = Some(map.next_value()?),
                "instance_class" => source.instance_class = Some(map.next_value()?),
                "subnet_group" => source.subnet_group = Some(map.next_value()?),
                "security_groups" => source.security_groups = Some(map.next_value()?),
                "option_group" => source.option_group = Some(map.next_value()?),
                "parameter_group" => source.parameter_group = Some(map.next_value()?),
                "tags" => source.tags = Some(map.next_value()?),
                "endpoint" => source.endpoint = Some(map.next_value()?),
                "allow_insecure" => source.allow_insecure = Some(map.next_value()?),
                "probe_url" => source.probe_url = Some(map.next_value()?),
                "timeout" => source.timeout = Some(map.next_value()?),
                "poll_interval" => source.poll_interval = Some(map.next_value()?),
                _ => {
                    map.next_value::<IgnoredAny>()?;
                    source.unknown.push(key);
                }
            }
        }
        Ok(source)
    }
}
