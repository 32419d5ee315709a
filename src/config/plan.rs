//! Resolving `[[plans]]`: names, schedules, region subsets, sources, objectives
//! and retention.

use std::collections::HashMap;
use std::ops::Range;
use std::time::Duration;

use lifeboat_repo::retention::Policy;
use toml::Spanned;

use super::error::unknown_key_problem;
use super::raw::{RawObjectives, RawPlan, RawSource, TextList};
use super::resolve::{Resolver, Result};
use super::{Objectives, PlanConfig, RegionConfig, Retention, SecretRef, SourceConfig, SqlProbe};

/// The source kinds this build supports, for error messages.
const SOURCE_KINDS: &str = "dir, postgres, command, rds";
const DURATION_EXAMPLES: &str = "expected e.g. \"24h\", \"90m\", \"365d\"";

impl Resolver<'_> {
    pub(super) fn plans(
        &self,
        raw: Option<Spanned<Vec<Spanned<RawPlan>>>>,
        regions: &[RegionConfig],
    ) -> Result<Vec<PlanConfig>> {
        let mut plans = Vec::new();
        let mut first_line: HashMap<String, usize> = HashMap::new();
        for (i, raw) in raw
            .map(Spanned::into_inner)
            .unwrap_or_default()
            .into_iter()
            .enumerate()
        {
            let key = format!("plans[{i}]");
            let span = raw.span();
            let raw = raw.into_inner();
            let name_value = self.required(
                raw.name.as_ref(),
                span.clone(),
                &key,
                "name",
                "every plan needs a name, e.g. name = \"app-data\"",
            )?;
            let name = self.unique_name(name_value, &key, "plan", &mut first_line)?;
            plans.push(self.plan(raw, name, span, &key, regions)?);
        }
        Ok(plans)
    }

    fn plan(
        &self,
        raw: RawPlan,
        name: String,
        span: Range<usize>,
        key: &str,
        regions: &[RegionConfig],
    ) -> Result<PlanConfig> {
        let schedule = self.cron(raw.schedule.as_ref(), &format!("{key}.schedule"))?;
        let verify_schedule = self.cron(
            raw.verify_schedule.as_ref(),
            &format!("{key}.verify_schedule"),
        )?;
        let zone = match &raw.zone {
            Some(zone) if zone.get_ref().is_empty() || zone.get_ref().contains(char::is_whitespace) => {
                return Err(self.err(
                    zone.span(),
                    &format!("{key}.zone"),
                    format!("invalid time zone {:?} (expected a name such as \"Europe/Paris\"; omit it for UTC)", zone.get_ref()),
                ))
            }
            Some(zone) => {
                if zone.get_ref().parse::<chrono_tz::Tz>().is_err() {
                    return Err(self.err(
                        zone.span(),
                        &format!("{key}.zone"),
                        format!("unknown time zone {:?} (expected an IANA name such as \"Europe/Paris\" or \"America/New_York\"; omit it for UTC)", zone.get_ref()),
                    ));
                }
                Some(zone.get_ref().clone())
            }
            None => None,
        };
        let is_rds = raw
            .source
            .as_ref()
            .and_then(|s| s.get_ref().kind.as_ref())
            .is_some_and(|k| k.get_ref() == "rds");
        let plan_regions = match raw.regions {
            Some(list) if is_rds => {
                return Err(self.err(list.span(), &format!("{key}.regions"), "an rds plan's regions are its source's `region` and `copy_to` regions (AWS regions, not repository regions): remove `regions`"))
            }
            None => regions.iter().map(|r| r.name.clone()).collect(),
            Some(list) => self.plan_regions(list, key, regions)?,
        };
        let Some(source) = raw.source else {
            return Err(self.err(
                span,
                &format!("{key}.source"),
                format!("missing: plan {name:?} needs a source, e.g. source = {{ kind = \"dir\", path = \"/srv/app\" }}"),
            ));
        };
        let source_span = source.span();
        let source = self.source(source, &format!("{key}.source"), &name)?;
        if let (
            SourceConfig::Postgres {
                scratch_url: None,
                allow_scratch_on_source: false,
                ..
            },
            Some(_),
        ) = (&source, &raw.verify_schedule)
        {
            return Err(self.err(
                source_span,
                &format!("{key}.source.scratch_url"),
                format!("missing: plan {name:?} has a verify_schedule, and its restore tests need a scratch server other than the source: {}", super::postgres::SCRATCH_HINT),
            ));
        }
        let plan_regions = match &source {
            SourceConfig::Rds(rds) => {
                // Snapshots are named lifeboat-<plan>-<time>, scratch instances
                // lifeboat-drill-<plan>-<time>: the plan name must fit RDS identifiers.
                let ok = name.len() <= 30
                    && super::valid_identifier(&name)
                    && !name.contains(|c: char| c.is_ascii_uppercase());
                if !ok {
                    return Err(self.err(
                        raw.name.as_ref().map_or(span, |n| n.span()),
                        &format!("{key}.name"),
                        format!("{name:?}: an rds plan's name goes into snapshot and instance identifiers: at most 30 lowercase letters, digits or hyphens, starting with a letter"),
                    ));
                }
                rds.regions()
            }
            _ => plan_regions,
        };
        let compression = match &raw.compression {
            None => None,
            Some(_) if matches!(source, SourceConfig::Rds(_)) => return Err(self.err(
                raw.compression.as_ref().map_or(span, |c| c.span()),
                &format!("{key}.compression"),
                "an rds plan stores no chunks (RDS keeps its own snapshots): remove `compression`",
            )),
            Some(c) => Some(
                lifeboat_repo::pack::Codec::parse(c.get_ref())
                    .map_err(|why| self.err(c.span(), &format!("{key}.compression"), why))?,
            ),
        };
        let objectives = match raw.objectives {
            Some(objectives) => {
                self.objectives(objectives.into_inner(), &format!("{key}.objectives"))?
            }
            None => Objectives::default(),
        };
        let prune_schedule = self.cron(
            raw.prune_schedule.as_ref(),
            &format!("{key}.prune_schedule"),
        )?;
        let retention = match raw.retention.map(Spanned::into_inner) {
            None => Retention::default(),
            Some(r) => {
                let optional = |v: Option<&Spanned<String>>, k: &str| -> Result<Option<Duration>> {
                    match v {
                        None => Ok(None),
                        Some(v) => self
                            .duration(Some(v), &format!("{key}.retention.{k}"), Duration::ZERO)
                            .map(Some),
                    }
                };
                Retention {
                    policy: Policy {
                        keep_last: r.keep_last,
                        keep_hourly: r.keep_hourly,
                        keep_daily: r.keep_daily,
                        keep_weekly: r.keep_weekly,
                        keep_monthly: r.keep_monthly,
                        keep_yearly: r.keep_yearly,
                        keep_within: optional(r.keep_within.as_ref(), "keep_within")?
                            .map(|d| d.as_secs() as i64),
                    },
                    grace: optional(r.grace.as_ref(), "grace")?,
                }
            }
        };
        Ok(PlanConfig {
            name,
            schedule,
            zone,
            regions: plan_regions,
            source,
            objectives,
            retention,
            verify_schedule,
            prune_schedule,
            compression,
        })
    }

    fn plan_regions(
        &self,
        list: Spanned<Vec<Spanned<String>>>,
        key: &str,
        regions: &[RegionConfig],
    ) -> Result<Vec<String>> {
        if list.get_ref().is_empty() {
            return Err(self.err(
                list.span(),
                &format!("{key}.regions"),
                "empty: list at least one region, or omit `regions` to store to every region",
            ));
        }
        let mut names: Vec<String> = Vec::new();
        for (j, region) in list.into_inner().into_iter().enumerate() {
            let element = format!("{key}.regions[{j}]");
            let name = region.get_ref();
            if !regions.iter().any(|r| &r.name == name) {
                let known: Vec<&str> = regions.iter().map(|r| r.name.as_str()).collect();
                return Err(self.err(
                    region.span(),
                    &element,
                    format!(
                        "unknown region {name:?} (the config defines regions: {})",
                        known.join(", ")
                    ),
                ));
            }
            if names.contains(name) {
                return Err(self.err(
                    region.span(),
                    &element,
                    format!("region {name:?} is listed twice"),
                ));
            }
            names.push(region.into_inner());
        }
        Ok(names)
    }

    fn source(&self, raw: Spanned<RawSource>, key: &str, plan: &str) -> Result<SourceConfig> {
        let span = raw.span();
        let raw = raw.into_inner();
        let kind = self.required(
            raw.kind.as_ref(),
            span.clone(),
            key,
            "kind",
            &format!("plan {plan:?}: supported kinds: {SOURCE_KINDS}"),
        )?;
        match kind.get_ref().as_str() {
            "dir" => {
                self.source_keys(&raw, key, "dir", &["path", "exclude", "one_file_system", "read_threads"])?;
                let path = self.required(raw.path.as_ref(), span, key, "path", "a dir source needs path = \"DIR\"")?;
                let path = self.path(path, &format!("{key}.path"))?;
                let mut exclude = Vec::new();
                if let Some(list) = raw.exclude {
                    for (j, pattern) in list.into_inner().into_iter().enumerate() {
                        if pattern.get_ref().trim().is_empty() {
                            return Err(self.err(pattern.span(), &format!("{key}.exclude[{j}]"), "empty exclude pattern"));
                        }
                        exclude.push(pattern.into_inner());
                    }
                }
                let read_threads = match raw.read_threads {
                    None => None,
                    Some(n) if (1..=64).contains(n.get_ref()) => Some(*n.get_ref() as usize),
                    Some(n) => {
                        return Err(self.err(n.span(), &format!("{key}.read_threads"), format!(
                            "{} reader threads: give 1 (read on the walking thread) to 64, or leave it out for one per core (at most 4)",
                            n.get_ref()
                        )))
                    }
                };
                Ok(SourceConfig::Dir {
                    path,
                    exclude,
                    one_file_system: raw.one_file_system.is_some_and(|v| v.into_inner()),
                    read_threads,
                })
            }
            "postgres" => {
                self.source_keys(&raw, key, "postgres", &["url", "password_env", "password_file", "probes", "scratch_url", "allow_scratch_on_source", "globals_with_passwords"])?;
                let url = self.required(raw.url.as_ref(), span, key, "url", "a postgres source needs url = \"postgres://USER@HOST:5432/DB\"")?;
                let url = self.pg_url(url, &format!("{key}.url"))?;
                let allow_scratch_on_source = raw.allow_scratch_on_source.as_ref().is_some_and(|v| *v.get_ref());
                let scratch_url = match &raw.scratch_url {
                    Some(v) => {
                        let scratch = self.pg_url(v, &format!("{key}.scratch_url"))?;
                        if !allow_scratch_on_source && super::postgres::same_server(&url, &scratch) {
                            return Err(self.err(v.span(), &format!("{key}.scratch_url"), format!(
                                "{} is the source's server ({}): a restore test restores a snapshot from the bucket there, so a forged snapshot would run on production; {}",
                                crate::host::redact_url(&scratch), crate::host::redact_url(&url), super::postgres::SCRATCH_HINT
                            )));
                        }
                        Some(scratch)
                    }
                    None => None,
                };
                let password = self.password(&raw, key)?;
                let probes = self.sql_probes(raw.probes, key)?;
                let globals_with_passwords = raw.globals_with_passwords.as_ref().is_some_and(|v| *v.get_ref());
                Ok(SourceConfig::Postgres { url, password, probes, scratch_url, allow_scratch_on_source, globals_with_passwords })
            }
            "command" => {
                self.source_keys(&raw, key, "command", &["command", "restore_command", "verify_command"])?;
                let command = self.argv(raw.command, span.clone(), key, "command", "the command whose stdout is backed up, e.g. command = [\"etcdctl\", \"snapshot\", \"save\", \"/dev/stdout\"]")?;
                let restore_command = self.argv(raw.restore_command, span.clone(), key, "restore_command", "the command that reads the stream on stdin when restoring, e.g. restore_command = [\"sh\", \"-c\", \"mysql app\"]")?;
                let verify_command = match raw.verify_command {
                    Some(list) => Some(self.argv(Some(list), span, key, "verify_command", "")?),
                    None => None,
                };
                Ok(SourceConfig::Command { command, restore_command, verify_command })
            }
            "rds" => self.rds_source(raw, span, key),
            other => Err(self.err(
                kind.span(),
                &format!("{key}.kind"),
                format!("plan {plan:?}: unsupported source kind {other:?} (supported kinds: {SOURCE_KINDS})"),
            )),
        }
    }

    /// `password_file` or `password_env` (at most one) of a source.
    pub(super) fn password(&self, raw: &RawSource, key: &str) -> Result<Option<SecretRef>> {
        Ok(match (&raw.password_file, &raw.password_env) {
            (Some(_), Some(env)) => {
                return Err(self.err(
                    env.span(),
                    &format!("{key}.password_env"),
                    "set only one of `password_file` and `password_env`",
                ))
            }
            (Some(file), None) => Some(SecretRef::File(
                self.path(file, &format!("{key}.password_file"))?,
            )),
            (None, Some(env)) => Some(SecretRef::Env(
                self.env_name(env, &format!("{key}.password_env"))?,
            )),
            (None, None) => None,
        })
    }

    /// A source's `probes`: names present, unique and non-empty, queries non-empty.
    pub(super) fn sql_probes(
        &self,
        raw: Option<Spanned<Vec<Spanned<super::raw::RawProbe>>>>,
        key: &str,
    ) -> Result<Vec<SqlProbe>> {
        let mut probes: Vec<SqlProbe> = Vec::new();
        for (j, probe) in raw
            .map(Spanned::into_inner)
            .unwrap_or_default()
            .into_iter()
            .enumerate()
        {
            let pkey = format!("{key}.probes[{j}]");
            let pspan = probe.span();
            let probe = probe.into_inner();
            let name = self.required(
                probe.name.as_ref(),
                pspan.clone(),
                &pkey,
                "name",
                "each probe needs a name, e.g. name = \"active users\"",
            )?;
            let sql = self.required(
                probe.sql.as_ref(),
                pspan,
                &pkey,
                "sql",
                "each probe needs the query, e.g. sql = \"select count(*) from users\"",
            )?;
            if name.get_ref().trim().is_empty() {
                return Err(self.err(name.span(), &format!("{pkey}.name"), "empty probe name"));
            }
            if probes.iter().any(|p| &p.name == name.get_ref()) {
                return Err(self.err(
                    name.span(),
                    &format!("{pkey}.name"),
                    format!("duplicate probe name {:?}", name.get_ref()),
                ));
            }
            let text = sql.get_ref().trim().trim_end_matches(';').trim();
            if text.is_empty() {
                return Err(self.err(sql.span(), &format!("{pkey}.sql"), "empty query"));
            }
            probes.push(SqlProbe {
                name: name.get_ref().clone(),
                sql: text.to_string(),
            });
        }
        Ok(probes)
    }

    /// A command line given as a list: present, non-empty, no empty program name.
    fn argv(
        &self,
        list: TextList,
        span: Range<usize>,
        table: &str,
        name: &str,
        hint: &str,
    ) -> Result<Vec<String>> {
        let list = self.required(list.as_ref(), span, table, name, hint)?;
        let key = format!("{table}.{name}");
        if list.get_ref().is_empty() {
            return Err(self.err(list.span(), &key, "empty: give the program and its arguments as a list, e.g. [\"pg_dumpall\", \"--globals-only\"]"));
        }
        if list.get_ref()[0].get_ref().trim().is_empty() {
            return Err(self.err(
                list.get_ref()[0].span(),
                &format!("{key}[0]"),
                "empty program name",
            ));
        }
        Ok(list.get_ref().iter().map(|a| a.get_ref().clone()).collect())
    }

    /// A `postgres://` URL without a password (secrets never live in the config).
    pub(super) fn pg_url(&self, value: &Spanned<String>, key: &str) -> Result<String> {
        let url = value.get_ref();
        if !(url.starts_with("postgres://") || url.starts_with("postgresql://")) {
            return Err(self.err(
                value.span(),
                key,
                format!(
                    "{url:?} is not a PostgreSQL URL (expected \"postgres://USER@HOST:5432/DB\")"
                ),
            ));
        }
        let parsed = url::Url::parse(url).map_err(|e| {
            self.err(
                value.span(),
                key,
                format!(
                    "{url:?} is not a valid URL ({e}); expected \"postgres://USER@HOST:5432/DB\""
                ),
            )
        })?;
        if crate::host::url_has_password(&parsed) {
            let plan_key = key.rsplit_once('.').map_or(key, |(table, _)| table);
            return Err(self.err(value.span(), key, format!("the URL contains a password; secrets are never written in the config: remove it and set {plan_key}.password_env (an environment variable's name) or {plan_key}.password_file, or use ~/.pgpass")));
        }
        Ok(url.clone())
    }

    /// Rejects keys no source kind has, then keys of another kind than `kind`.
    pub(super) fn source_keys(
        &self,
        raw: &RawSource,
        key: &str,
        kind: &str,
        allowed: &[&str],
    ) -> Result<()> {
        if let Some(unknown) = raw.unknown.first() {
            return Err(self.err(
                unknown.span(),
                &format!("{key}.{}", unknown.get_ref()),
                unknown_key_problem(
                    unknown.get_ref(),
                    &format!("a {kind} source has: kind, {}", allowed.join(", ")),
                ),
            ));
        }
        if let Some((name, span)) = raw
            .present()
            .into_iter()
            .find(|(name, _)| !allowed.contains(name))
        {
            return Err(self.err(
                span,
                &format!("{key}.{name}"),
                format!(
                    "`{name}` does not apply to a {kind} source (a {kind} source has: kind, {})",
                    allowed.join(", ")
                ),
            ));
        }
        Ok(())
    }

    fn objectives(&self, raw: RawObjectives, key: &str) -> Result<Objectives> {
        let defaults = Objectives::default();
        Ok(Objectives {
            rpo: self.duration(raw.rpo.as_ref(), &format!("{key}.rpo"), defaults.rpo)?,
            rto: self.duration(raw.rto.as_ref(), &format!("{key}.rto"), defaults.rto)?,
            drill_every: self.duration(
                raw.drill_every.as_ref(),
                &format!("{key}.drill_every"),
                defaults.drill_every,
            )?,
        })
    }

    pub(super) fn duration(
        &self,
        value: Option<&Spanned<String>>,
        key: &str,
        default: Duration,
    ) -> Result<Duration> {
        let Some(value) = value else {
            return Ok(default);
        };
        let text = value.get_ref();
        match humantime::parse_duration(text) {
            Ok(duration) if duration.is_zero() => Err(self.err(
                value.span(),
                key,
                format!("{text:?}: must be longer than zero"),
            )),
            Ok(duration) => Ok(duration),
            Err(err) => Err(self.err(
                value.span(),
                key,
                format!("invalid duration {text:?}: {err} ({DURATION_EXAMPLES})"),
            )),
        }
    }

    /// A cron expression, checked only for its field count (5 to 7); the
    /// scheduler parses it.
    fn cron(&self, value: Option<&Spanned<String>>, key: &str) -> Result<Option<String>> {
        let Some(value) = value else {
            return Ok(None);
        };
        check_cron(value.get_ref()).map_err(|problem| {
            self.err(
                value.span(),
                key,
                format!("invalid cron schedule {:?}: {problem}", value.get_ref()),
            )
        })?;
        Ok(Some(value.get_ref().clone()))
    }
}

/// The five fields of standard cron: name, range, and names allowed instead of numbers.
const CRON_FIELDS: [(&str, u32, u32, &[&str]); 5] = [
    ("minute", 0, 59, &[]),
    ("hour", 0, 23, &[]),
    ("day-of-month", 1, 31, &[]),
    (
        "month",
        1,
        12,
        &[
            "jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec",
        ],
    ),
    (
        "day-of-week",
        0,
        7,
        &["sun", "mon", "tue", "wed", "thu", "fri", "sat"],
    ),
];

/// Checks a schedule as the daemon will read it, and says what is wrong in cron's own terms:
/// five fields are standard cron (each `*`, `N`, `N-M`, lists with `,`, steps with `/`,
/// month and day names); six or seven fields are the `cron` crate's form with seconds first.
pub(super) fn check_cron(expression: &str) -> std::result::Result<(), String> {
    let fields: Vec<&str> = expression.split_whitespace().collect();
    match fields.len() {
        5 => {}
        6 | 7 => {
            return <cron::Schedule as std::str::FromStr>::from_str(expression)
                .map(|_| ())
                .map_err(|e| format!("{e} (6 or 7 fields: seconds minute hour day-of-month month day-of-week [year])"));
        }
        n => {
            return Err(format!(
                "{n} field{}, expected 5 (e.g. \"0 3 * * *\": minute hour day-of-month month day-of-week)",
                if n == 1 { "" } else { "s" }
            ))
        }
    }
    for (field, (name, low, high, names)) in fields.iter().zip(CRON_FIELDS) {
        let value = |text: &str| -> std::result::Result<u32, String> {
            if let Some(i) = names.iter().position(|n| n.eq_ignore_ascii_case(text)) {
                return Ok(i as u32 + low);
            }
            let n: u32 = text.parse().map_err(|_| {
                format!(
                    "{name} {text:?} is not a number{}",
                    if names.is_empty() {
                        String::new()
                    } else {
                        format!(" or a name ({})", names.join(", "))
                    }
                )
            })?;
            if n < low || n > high {
                return Err(format!("{name} {n} is out of range ({low}-{high})"));
            }
            Ok(n)
        };
        for item in field.split(',') {
            let (range, step) = match item.split_once('/') {
                Some((range, step)) => (range, Some(step)),
                None => (item, None),
            };
            if let Some(step) = step {
                if step.parse::<u32>().map_or(true, |s| s == 0) {
                    return Err(format!("{name} step {step:?} must be a number above 0"));
                }
            }
            if range == "*" {
                continue;
            }
            match range.split_once('-') {
                Some((a, b)) => {
                    let (a, b) = (value(a)?, value(b)?);
                    if a > b {
                        return Err(format!("{name} range {range} runs backwards"));
                    }
                }
                None if range.is_empty() => return Err(format!("{name}: empty item in {field:?}")),
                None => {
                    value(range)?;
                }
            }
        }
    }
    Ok(())
}
