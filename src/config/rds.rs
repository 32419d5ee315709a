//! Resolving a plan's `source = { kind = "rds", … }`: the instance, its region, the regions
//! its snapshots are copied to (each with its KMS key), what restores use, and how lifeboat
//! waits. Names follow AWS's own rules, so a typo fails at load with `file:line:col`
//! instead of minutes later in an API error. The resolved form is [`RdsSource`].

use std::collections::BTreeMap;
use std::ops::Range;
use std::time::Duration;

use toml::Spanned;

use super::raw::RawSource;
use super::resolve::{Resolver, Result};
use super::{SecretRef, SourceConfig, SqlProbe};

/// How long one step (snapshot, one copy, a restore becoming available) may take.
pub const DEFAULT_RDS_TIMEOUT: Duration = Duration::from_secs(4 * 3600);
/// How often lifeboat asks RDS how a step is going.
pub const DEFAULT_RDS_POLL: Duration = Duration::from_secs(5);

/// How an instance restored from a snapshot is placed and configured: the plan's settings
/// (a restore's command line may override the first three) and what RDS is asked for.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct InstanceSettings {
    pub instance_class: Option<String>,
    pub subnet_group: Option<String>,
    pub security_groups: Vec<String>,
    pub option_group: Option<String>,
    pub parameter_group: Option<String>,
}

/// A native RDS snapshot source.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RdsSource {
    /// The DB instance identifier.
    pub instance: String,
    /// The AWS region of the instance, where snapshots are created.
    pub region: String,
    /// Where each snapshot is copied, in file order; regions distinct and not `region`.
    pub copy_to: Vec<RdsCopy>,
    /// Restores: instance class (default: the snapshot's), groups.
    pub restore: InstanceSettings,
    /// Extra tags on every snapshot and scratch instance (keys never `lifeboat:` or `aws:`).
    pub tags: BTreeMap<String, String>,
    /// An RDS-compatible endpoint (test servers) instead of AWS.
    pub endpoint: Option<String>,
    /// Restore tests: `postgres://USER@[HOST[:PORT]]/DB`; without a host, the restored
    /// instance's endpoint is used. Needs `password`.
    pub probe_url: Option<String>,
    pub password: Option<SecretRef>,
    /// Queries run against the restored instance; each must succeed.
    pub probes: Vec<SqlProbe>,
    /// Per step: the longest a snapshot, a copy or a restore may take.
    pub timeout: Duration,
    /// Polling cadence.
    pub poll_interval: Duration,
}

/// A destination region of an rds plan.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RdsCopy {
    pub region: String,
    /// The destination region's key (ARN, key id or alias) the copy is encrypted with.
    pub kms_key_id: String,
}

impl RdsSource {
    /// The regions a snapshot must be `available` in to count: the source region first.
    pub fn regions(&self) -> Vec<String> {
        std::iter::once(self.region.clone())
            .chain(self.copy_to.iter().map(|c| c.region.clone()))
            .collect()
    }
}

const RDS_KEYS: &[&str] = &[
    "instance",
    "cluster",
    "region",
    "copy_to",
    "instance_class",
    "subnet_group",
    "security_groups",
    "option_group",
    "parameter_group",
    "tags",
    "endpoint",
    "allow_insecure",
    "probe_url",
    "password_env",
    "password_file",
    "probes",
    "timeout",
    "poll_interval",
];

/// AWS's rule for DB instance identifiers: 1–63 letters, digits or hyphens, starting with
/// a letter, no two hyphens in a row, no hyphen at the end.
pub fn valid_identifier(s: &str) -> bool {
    (1..=63).contains(&s.len())
        && s.starts_with(|c: char| c.is_ascii_alphabetic())
        && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        && !s.ends_with('-')
        && !s.contains("--")
}

/// `us-west-2`, `eu-central-1`, `us-gov-west-1`: lowercase words and a number.
pub fn valid_region(s: &str) -> bool {
    let parts: Vec<&str> = s.split('-').collect();
    parts.len() >= 3
        && parts[..parts.len() - 1]
            .iter()
            .all(|p| !p.is_empty() && p.chars().all(|c| c.is_ascii_lowercase()))
        && parts[parts.len() - 1].chars().all(|c| c.is_ascii_digit())
        && !parts[parts.len() - 1].is_empty()
}

impl Resolver<'_> {
    pub(super) fn rds_source(
        &self,
        raw: RawSource,
        span: Range<usize>,
        key: &str,
    ) -> Result<SourceConfig> {
        self.source_keys(&raw, key, "rds", RDS_KEYS)?;
        let password = self.password(&raw, key)?;
        if let Some(cluster) = &raw.cluster {
            return Err(self.err(
                cluster.span(),
                &format!("{key}.cluster"),
                "Aurora clusters are not supported by this build yet (cluster snapshots, copies and restores are other RDS calls): snapshot a DB instance with `instance = \"NAME\"`",
            ));
        }
        let instance = self.required(
            raw.instance.as_ref(),
            span.clone(),
            key,
            "instance",
            "an rds source needs instance = \"DB-INSTANCE-IDENTIFIER\"",
        )?;
        self.identifier(
            instance,
            &format!("{key}.instance"),
            "DB instance identifier",
        )?;
        let region = self.required(
            raw.region.as_ref(),
            span.clone(),
            key,
            "region",
            "the AWS region of the instance, e.g. region = \"us-west-2\"",
        )?;
        self.aws_region(region, &format!("{key}.region"))?;
        let mut copy_to: Vec<RdsCopy> = Vec::new();
        for (j, copy) in raw
            .copy_to
            .map(Spanned::into_inner)
            .unwrap_or_default()
            .into_iter()
            .enumerate()
        {
            let ckey = format!("{key}.copy_to[{j}]");
            let cspan = copy.span();
            let copy = copy.into_inner();
            let dest = self.required(
                copy.region.as_ref(),
                cspan.clone(),
                &ckey,
                "region",
                "the destination AWS region, e.g. region = \"us-east-2\"",
            )?;
            self.aws_region(dest, &format!("{ckey}.region"))?;
            if dest.get_ref() == region.get_ref()
                || copy_to.iter().any(|c| &c.region == dest.get_ref())
            {
                return Err(self.err(dest.span(), &format!("{ckey}.region"), format!("region {:?} is listed twice (the source region holds the snapshot already)", dest.get_ref())));
            }
            let kms = self.required(copy.kms_key_id.as_ref(), cspan, &ckey, "kms_key_id", "KMS keys are regional: a cross-region copy needs the destination region's key, e.g. terraform's rds_copy_kms_key_arns entry")?;
            let text = kms.get_ref();
            if text.trim().is_empty() {
                return Err(self.err(
                    kms.span(),
                    &format!("{ckey}.kms_key_id"),
                    "empty KMS key id",
                ));
            }
            if text.starts_with("arn:") && !text.contains(&format!(":kms:{}:", dest.get_ref())) {
                return Err(self.err(kms.span(), &format!("{ckey}.kms_key_id"), format!("this key is not in {:?}: KMS keys are regional and a copy into {} must be encrypted with a key of that region", dest.get_ref(), dest.get_ref())));
            }
            copy_to.push(RdsCopy {
                region: dest.get_ref().clone(),
                kms_key_id: text.clone(),
            });
        }
        let opt = |v: &Option<Spanned<String>>, name: &str| -> Result<Option<String>> {
            match v {
                Some(v) if v.get_ref().trim().is_empty() => Err(self.err(
                    v.span(),
                    &format!("{key}.{name}"),
                    "empty: give a name or leave the key out",
                )),
                Some(v) => Ok(Some(v.get_ref().clone())),
                None => Ok(None),
            }
        };
        let instance_class = opt(&raw.instance_class, "instance_class")?;
        if let (Some(class), Some(v)) = (&instance_class, &raw.instance_class) {
            if !class.starts_with("db.") {
                return Err(self.err(
                    v.span(),
                    &format!("{key}.instance_class"),
                    format!(
                        "{class:?} is not an RDS instance class (expected e.g. \"db.t4g.micro\")"
                    ),
                ));
            }
        }
        let mut security_groups = Vec::new();
        for (j, sg) in raw
            .security_groups
            .map(Spanned::into_inner)
            .unwrap_or_default()
            .into_iter()
            .enumerate()
        {
            if !sg.get_ref().starts_with("sg-") || sg.get_ref().len() < 4 {
                return Err(self.err(
                    sg.span(),
                    &format!("{key}.security_groups[{j}]"),
                    format!(
                        "{:?} is not a VPC security group id (expected \"sg-…\")",
                        sg.get_ref()
                    ),
                ));
            }
            security_groups.push(sg.into_inner());
        }
        let mut tags = BTreeMap::new();
        if let Some(table) = raw.tags {
            for (name, value) in table.into_inner() {
                let lower = name.to_ascii_lowercase();
                if lower.starts_with("lifeboat:")
                    || lower.starts_with("aws:")
                    || name.is_empty()
                    || name.len() > 128
                {
                    return Err(self.err(value.span(), &format!("{key}.tags.{name}"), "tag keys are 1–128 characters and never start with `lifeboat:` (lifeboat's own, which IAM relies on) or `aws:`"));
                }
                if value.get_ref().len() > 256 {
                    return Err(self.err(
                        value.span(),
                        &format!("{key}.tags.{name}"),
                        "tag values are at most 256 characters",
                    ));
                }
                tags.insert(name, value.into_inner());
            }
        }
        let endpoint = match &raw.endpoint {
            Some(v) if !(v.get_ref().starts_with("http://") || v.get_ref().starts_with("https://")) => {
                return Err(self.err(v.span(), &format!("{key}.endpoint"), format!("{:?} is not a URL (expected e.g. \"http://127.0.0.1:5000\"; leave it out for AWS)", v.get_ref())))
            }
            Some(v) => {
                let allow = raw.allow_insecure.as_ref().is_some_and(|a| *a.get_ref());
                if let Some(problem) =
                    super::transport::plain_http_refusal(v.get_ref(), allow, "endpoint")
                {
                    return Err(self.err(v.span(), &format!("{key}.endpoint"), problem));
                }
                Some(v.get_ref().clone())
            }
            None => None,
        };
        let probe_url = match &raw.probe_url {
            Some(v) => {
                if password.is_none() {
                    return Err(self.err(v.span(), &format!("{key}.probe_url"), "a probe_url needs the password's reference: set password_env or password_file"));
                }
                // `postgres://user@/db` names no host: the restored instance's endpoint is
                // filled in at probe time. The rest is checked with a stand-in host.
                let stand_in = with_stand_in_host(v.get_ref());
                self.pg_url(
                    &Spanned::new(v.span(), stand_in),
                    &format!("{key}.probe_url"),
                )?;
                Some(v.get_ref().clone())
            }
            None => None,
        };
        if let (None, Some(v)) = (&probe_url, &raw.probes) {
            return Err(self.err(v.span(), &format!("{key}.probes"), "probes run against the restored instance: set probe_url (and password_env or password_file)"));
        }
        let probes = self.sql_probes(raw.probes, key)?;
        let timeout = self.duration(
            raw.timeout.as_ref(),
            &format!("{key}.timeout"),
            DEFAULT_RDS_TIMEOUT,
        )?;
        let poll_interval = self.duration(
            raw.poll_interval.as_ref(),
            &format!("{key}.poll_interval"),
            DEFAULT_RDS_POLL,
        )?;
        if poll_interval >= timeout {
            let span = raw.poll_interval.as_ref().map_or(span, |v| v.span());
            return Err(self.err(
                span,
                &format!("{key}.poll_interval"),
                "must be shorter than `timeout`",
            ));
        }
        Ok(SourceConfig::Rds(Box::new(RdsSource {
            instance: instance.get_ref().clone(),
            region: region.get_ref().clone(),
            copy_to,
            restore: InstanceSettings {
                instance_class,
                subnet_group: opt(&raw.subnet_group, "subnet_group")?,
                security_groups,
                option_group: opt(&raw.option_group, "option_group")?,
                parameter_group: opt(&raw.parameter_group, "parameter_group")?,
            },
            tags,
            endpoint,
            probe_url,
            password,
            probes,
            timeout,
            poll_interval,
        })))
    }

    fn identifier(&self, v: &Spanned<String>, key: &str, what: &str) -> Result<()> {
        if valid_identifier(v.get_ref()) {
            return Ok(());
        }
        Err(self.err(v.span(), key, format!("{:?} is not a valid {what} (1–63 letters, digits or hyphens, starting with a letter, no \"--\", no hyphen at the end)", v.get_ref())))
    }

    fn aws_region(&self, v: &Spanned<String>, key: &str) -> Result<()> {
        if valid_region(v.get_ref()) {
            return Ok(());
        }
        Err(self.err(
            v.span(),
            key,
            format!(
                "{:?} is not an AWS region name (expected e.g. \"us-west-2\")",
                v.get_ref()
            ),
        ))
    }
}

/// `scheme://[user@]/rest` with an empty host → the same URL with a stand-in host, for
/// validation only; a URL that names a host comes back unchanged.
fn with_stand_in_host(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_string();
    };
    let end = rest.find(['/', '?']).unwrap_or(rest.len());
    let authority = &rest[..end];
    if authority.is_empty() || authority.ends_with('@') {
        format!("{scheme}://{authority}rds-endpoint.invalid{}", &rest[end..])
    } else {
        url.to_string()
    }
}
