//! Runbooks: `runbooks/*.toml`, parsed in two stages like `lifeboat.toml` — [`raw`] mirrors
//! the file (spans, unknown keys refused), then [`parse`] checks it against a [`Config`]
//! and produces the resolved [`Runbook`] the drill runs: plans and regions known to exist,
//! defaults filled in, every `after` naming a step, no cycles, every `${step.field}` naming
//! a step. Errors are [`ConfigError::Invalid`]: `file:line:col: key: problem`.
//!
//! The format is documented field by field in `docs/runbooks.md`; keep the two in step.

mod raw;
mod step;
#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, BTreeSet};
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::time::Duration;

use toml::Spanned;

use self::raw::{RawHeader, RawRunbook, RawStep, Text, TextList};
use crate::config::{unknown_key_problem, Config, ConfigError, Locator, SourceConfig};

type Result<T> = std::result::Result<T, ConfigError>;

/// A validated runbook, resolved against one config.
#[derive(Debug, Clone)]
pub struct Runbook {
    /// As given (absolute when read through [`load`]).
    pub path: PathBuf,
    /// SHA-256 of the file's bytes, hex.
    pub sha256: String,
    pub id: String,
    pub version: i64,
    pub owner: String,
    pub scenario: String,
    pub frequency: Frequency,
    /// The plans covered, in config order.
    pub plans: Vec<String>,
    /// The file covered every plan (`plans` absent or `["*"]`).
    pub all_plans: bool,
    /// The regions the drill involves, in config order.
    pub regions: Vec<String>,
    pub controls: Vec<String>,
    /// Targets; `None`: each plan's own objectives.
    pub rto: Option<Duration>,
    pub rpo: Option<Duration>,
    pub max_duration: Duration,
    pub deny_production_writes: bool,
    pub steps: Vec<Step>,
    /// Run after the steps whatever happened, in file order, before the created things are
    /// removed in reverse order of creation.
    pub cleanup: Vec<Step>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frequency {
    Every(Duration),
    /// A cron expression (checked at load).
    Cron(String),
}

impl Frequency {
    /// The next time a drill is due after one at `last` (epoch seconds).
    pub fn next_after(&self, last: i64) -> Option<i64> {
        match self {
            Frequency::Every(d) => Some(last + d.as_secs() as i64),
            Frequency::Cron(expr) => crate::daemon::Schedule::parse(expr, None)
                .ok()?
                .next_after(last),
        }
    }

    pub fn describe(&self) -> String {
        match self {
            Frequency::Every(d) if d.as_secs() % 86_400 == 0 => {
                format!("every {}d", d.as_secs() / 86_400)
            }
            Frequency::Every(d) => format!("every {}", humantime::format_duration(*d)),
            Frequency::Cron(e) => format!("cron {e}"),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnFailure {
    Abort,
    Continue,
}

#[derive(Debug, Clone)]
pub struct Step {
    pub id: String,
    pub kind: StepKind,
    /// Steps that must be done first (default: the step before it in the file).
    pub after: Vec<String>,
    pub timeout: Duration,
    /// Further attempts after a failed one (1 s apart).
    pub retries: u32,
    pub on_failure: OnFailure,
}

/// Which snapshot a restore step takes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Selector {
    Latest,
    /// The newest snapshot whose restore test passed (catalog), else an error.
    LatestVerified,
    /// An id or unique id prefix.
    Id(String),
}

/// Where a restore step writes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// A temporary directory, a scratch database, the verify_command (removed by cleanup).
    Scratch,
    /// A named directory (dir plans; created, must not exist or be empty) or an existing,
    /// empty database `postgres://…` (postgres plans). Never a plan's production target.
    Named(String),
}

#[derive(Debug, Clone)]
pub enum StepKind {
    /// Starts the disaster clock (T0); may take a region down in-process.
    Declare {
        region_down: Option<String>,
    },
    Restore {
        plans: Vec<String>,
        snapshot: Selector,
        /// Read this region first (default: the config's preferred one).
        region: Option<String>,
        into: Target,
        /// Done by a fresh `lifeboat` child with only the identity and the regions.
        bare_host: bool,
    },
    /// Compare what restore step `on` produced with what the backups recorded.
    Verify {
        on: String,
    },
    Sql {
        on: String,
        plan: Option<String>,
        query: String,
        expect: String,
    },
    Command {
        run: Vec<String>,
        expect_exit: i32,
        stdout_contains: Option<String>,
    },
    Approve {
        prompt: String,
    },
    Assert {
        rto: bool,
        rpo: bool,
        rpo_regions: Vec<String>,
        that: Vec<String>,
    },
    Wait {
        duration: Duration,
    },
    Notify {
        message: String,
    },
    /// rds plans: restore the newest (or a named) RDS snapshot in `region` into a scratch
    /// instance, wait, probe, always delete it (`crate::rds::restore_test`).
    RdsRestore {
        plans: Vec<String>,
        /// `latest` or a snapshot identifier.
        snapshot: String,
        /// AWS region to restore in (default: each plan's source region).
        region: Option<String>,
    },
}

impl StepKind {
    pub fn name(&self) -> &'static str {
        match self {
            StepKind::Declare { .. } => "declare",
            StepKind::Restore { .. } => "restore",
            StepKind::Verify { .. } => "verify",
            StepKind::Sql { .. } => "sql",
            StepKind::Command { .. } => "command",
            StepKind::Approve { .. } => "approve",
            StepKind::Assert { .. } => "assert",
            StepKind::Wait { .. } => "wait",
            StepKind::Notify { .. } => "notify",
            StepKind::RdsRestore { .. } => "rds_restore",
        }
    }
}

/// Step kinds and the keys each allows beyond the common ones.
const KINDS: &[(&str, &[&str])] = &[
    ("declare", &["simulate"]),
    (
        "restore",
        &["plans", "snapshot", "region", "into", "process"],
    ),
    ("verify", &["on"]),
    ("sql", &["on", "plan", "query", "expect"]),
    ("command", &["run", "expect_exit", "stdout_contains"]),
    ("approve", &["prompt"]),
    ("assert", &["rto", "rpo", "rpo_regions", "that"]),
    ("wait", &["duration"]),
    ("notify", &["message"]),
    ("rds_restore", &["plans", "snapshot", "region"]),
];
/// Kinds a `[[cleanup]]` step may have: nothing there may need a gate or create things.
const CLEANUP_KINDS: &[&str] = &["command", "notify", "wait"];
/// Names `${drill.NAME}` provides.
pub const BUILTINS: &[&str] = &["id", "scratch", "lifeboat", "runbook", "t0"];

/// Read and resolve the runbook at `path`.
pub fn load(path: &Path, config: &Config) -> Result<Runbook> {
    let bytes = std::fs::read(path).map_err(|io| ConfigError::Read {
        path: path.to_path_buf(),
        io,
        hint: "runbooks live in runbooks/*.toml; see docs/runbooks.md".into(),
    })?;
    let text = String::from_utf8(bytes).map_err(|_| ConfigError::Invalid {
        file: path.to_path_buf(),
        at: None,
        key: String::new(),
        problem: "not UTF-8 text".into(),
    })?;
    let abs = std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf());
    parse(&text, &abs, config)
}

/// Resolve runbook `text` read from `origin`.
pub fn parse(text: &str, origin: &Path, config: &Config) -> Result<Runbook> {
    let loc = Locator { text, file: origin };
    let raw: RawRunbook = loc.deserialize()?;
    let r = Resolver { loc, config };
    let mut book = r.runbook(raw)?;
    book.path = origin.to_path_buf();
    use sha2::Digest;
    book.sha256 = hex::encode(sha2::Sha256::digest(text.as_bytes()));
    Ok(book)
}

struct Resolver<'a> {
    loc: Locator<'a>,
    config: &'a Config,
}

impl Resolver<'_> {
    fn err(&self, span: Range<usize>, key: &str, problem: impl Into<String>) -> ConfigError {
        self.loc.error(span, key, problem)
    }

    fn whole(&self, key: &str, problem: impl Into<String>) -> ConfigError {
        self.err(0..0, key, problem)
    }

    fn runbook(&self, raw: RawRunbook) -> Result<Runbook> {
        let header = raw.runbook.ok_or_else(|| {
            self.whole(
                "runbook",
                "missing: add a [runbook] table with id, scenario and frequency",
            )
        })?;
        let hspan = header.span();
        let h: RawHeader = header.into_inner();
        let id = self.name(
            self.required(&h.id, hspan.clone(), "runbook.id")?,
            "runbook.id",
        )?;
        let version = match &h.version {
            Some(v) if *v.get_ref() < 1 => {
                return Err(self.err(v.span(), "runbook.version", "must be 1 or more"))
            }
            Some(v) => *v.get_ref(),
            None => 1,
        };
        let scenario = self
            .required(&h.scenario, hspan.clone(), "runbook.scenario")?
            .get_ref()
            .clone();
        let frequency =
            self.frequency(self.required(&h.frequency, hspan, "runbook.frequency")?)?;
        let (plans, all_plans) = self.plans(&h.plans)?;
        let regions = self.regions(&h.regions, "runbook.regions")?;
        let controls = list(&h.controls)
            .into_iter()
            .map(|s| s.into_inner())
            .collect();
        let (mut rto, mut rpo) = (None, None);
        if let Some(o) = raw.objectives {
            let o = o.into_inner();
            rto = o
                .rto
                .as_ref()
                .map(|v| self.duration(v, "objectives.rto"))
                .transpose()?;
            rpo = o
                .rpo
                .as_ref()
                .map(|v| self.duration(v, "objectives.rpo"))
                .transpose()?;
        }
        let (mut max_duration, mut deny) = (Duration::from_secs(4 * 3600), true);
        if let Some(g) = raw.guards {
            let g = g.into_inner();
            if let Some(v) = &g.max_duration {
                max_duration = self.duration(v, "guards.max_duration")?;
            }
            if let Some(v) = &g.deny_production_writes {
                deny = *v.get_ref();
            }
        }
        let mut book = Runbook {
            path: PathBuf::new(),
            sha256: String::new(),
            id,
            version,
            owner: h.owner.map(|s| s.into_inner()).unwrap_or_default(),
            scenario,
            frequency,
            plans,
            all_plans,
            regions,
            controls,
            rto,
            rpo,
            max_duration,
            deny_production_writes: deny,
            steps: Vec::new(),
            cleanup: Vec::new(),
        };
        let steps = raw
            .step
            .ok_or_else(|| self.whole("step", "missing: a runbook needs at least one [[step]]"))?
            .into_inner();
        let mut seen: BTreeMap<String, Range<usize>> = BTreeMap::new();
        let mut previous: Option<String> = None;
        let mut spans = Vec::new();
        for (i, s) in steps.into_iter().enumerate() {
            let key = format!("step[{i}]");
            let span = s.span();
            let step = self.step(
                s.into_inner(),
                span.clone(),
                &key,
                &book,
                &mut seen,
                previous.as_deref(),
                false,
            )?;
            previous = Some(step.id.clone());
            spans.push(span);
            book.steps.push(step);
        }
        for (i, s) in raw
            .cleanup
            .map(|c| c.into_inner())
            .unwrap_or_default()
            .into_iter()
            .enumerate()
        {
            let key = format!("cleanup[{i}]");
            let span = s.span();
            let step = self.step(s.into_inner(), span, &key, &book, &mut seen, None, true)?;
            book.cleanup.push(step);
        }
        self.check_graph(&book, &spans)?;
        if book
            .steps
            .iter()
            .filter(|s| matches!(s.kind, StepKind::Declare { .. }))
            .count()
            > 1
        {
            return Err(self.whole(
                "step",
                "more than one declare step: the disaster clock starts once",
            ));
        }
        Ok(book)
    }

    /// Every `after` and `on` names a step, every `${step.field}` too, and `after` has no
    /// cycle.
    fn check_graph(&self, book: &Runbook, spans: &[Range<usize>]) -> Result<()> {
        let ids: BTreeSet<&str> = book.steps.iter().map(|s| s.id.as_str()).collect();
        let all: BTreeSet<&str> = ids
            .iter()
            .copied()
            .chain(book.cleanup.iter().map(|s| s.id.as_str()))
            .collect();
        for (i, s) in book.steps.iter().enumerate() {
            for a in &s.after {
                if !ids.contains(a.as_str()) {
                    return Err(self.err(
                        spans[i].clone(),
                        &format!("step[{i}].after"),
                        format!("unknown step {a:?}"),
                    ));
                }
                if a == &s.id {
                    return Err(self.err(
                        spans[i].clone(),
                        &format!("step[{i}].after"),
                        format!("step {a:?} cannot come after itself"),
                    ));
                }
            }
            if let StepKind::Verify { on } | StepKind::Sql { on, .. } = &s.kind {
                let target = book.steps.iter().find(|t| &t.id == on);
                match target.map(|t| &t.kind) {
                    Some(StepKind::Restore { plans, .. }) => {
                        if let StepKind::Sql { plan: Some(p), .. } = &s.kind {
                            if !plans.contains(p) {
                                return Err(self.err(
                                    spans[i].clone(),
                                    &format!("step[{i}].plan"),
                                    format!("restore step {on:?} does not restore plan {p:?}"),
                                ));
                            }
                        }
                    }
                    _ => {
                        return Err(self.err(
                            spans[i].clone(),
                            &format!("step[{i}].on"),
                            format!("{on:?} is not a restore step of this runbook"),
                        ))
                    }
                }
                if !ancestors(book, &s.id).contains(on.as_str()) {
                    return Err(self.err(spans[i].clone(), &format!("step[{i}].on"), format!("step {on:?} must come before this one (list it in `after`, or through a step there)")));
                }
            }
        }
        if let Some(cycle) = find_cycle(book) {
            let i = book
                .steps
                .iter()
                .position(|s| s.id == cycle[0])
                .unwrap_or(0);
            return Err(self.err(
                spans.get(i).cloned().unwrap_or_default(),
                &format!("step[{i}].after"),
                format!("cycle: {}", cycle.join(" -> ")),
            ));
        }
        for (i, s) in book.steps.iter().chain(&book.cleanup).enumerate() {
            for text in step_texts(&s.kind) {
                for (step, field) in super::compare::references(text) {
                    if step == "drill" {
                        if !BUILTINS.contains(&field.as_str()) {
                            return Err(self.whole(
                                &format!("step {}", s.id),
                                format!(
                                    "unknown ${{drill.{field}}} (known: {})",
                                    BUILTINS.join(", ")
                                ),
                            ));
                        }
                    } else if !all.contains(step.as_str()) {
                        let _ = i;
                        return Err(self.whole(
                            &format!("step {}", s.id),
                            format!("${{{step}.{field}}} names no step of this runbook"),
                        ));
                    }
                }
            }
        }
        Ok(())
    }

    fn plans(&self, v: &TextList) -> Result<(Vec<String>, bool)> {
        let items = list(v);
        if items.is_empty() || (items.len() == 1 && items[0].get_ref() == "*") {
            return Ok((
                self.config.plans.iter().map(|p| p.name.clone()).collect(),
                true,
            ));
        }
        let mut out = Vec::new();
        for item in &items {
            if let Some(kind) = item.get_ref().strip_prefix("kind:") {
                if !["dir", "postgres", "command", "rds"].contains(&kind) {
                    return Err(self.err(
                        item.span(),
                        "runbook.plans",
                        format!("unknown plan kind {kind:?} (dir, postgres, command, rds)"),
                    ));
                }
                // No plan of the kind: the runbook is valid and covers nothing here.
                out.extend(
                    self.config
                        .plans
                        .iter()
                        .filter(|p| p.source.kind() == kind)
                        .map(|p| p.name.clone()),
                );
            } else {
                self.config
                    .plan(item.get_ref())
                    .map_err(|e| self.err(item.span(), "runbook.plans", e.to_string()))?;
                out.push(item.get_ref().clone());
            }
        }
        let mut ordered: Vec<String> = self
            .config
            .plans
            .iter()
            .map(|p| p.name.clone())
            .filter(|n| out.contains(n))
            .collect();
        ordered.dedup();
        Ok((ordered, false))
    }

    fn regions(&self, v: &TextList, key: &str) -> Result<Vec<String>> {
        let items = list(v);
        if items.is_empty() || (items.len() == 1 && items[0].get_ref() == "*") {
            return Ok(self.config.regions.iter().map(|r| r.name.clone()).collect());
        }
        for item in &items {
            self.config
                .region(item.get_ref())
                .map_err(|e| self.err(item.span(), key, e.to_string()))?;
        }
        Ok(self
            .config
            .regions
            .iter()
            .map(|r| r.name.clone())
            .filter(|n| items.iter().any(|i| i.get_ref() == n))
            .collect())
    }

    fn known_plan(&self, v: &Spanned<String>, key: &str, book: &Runbook) -> Result<()> {
        if !book.plans.contains(v.get_ref()) {
            return Err(self.err(
                v.span(),
                key,
                format!(
                    "plan {:?} is not one the runbook covers ({})",
                    v.get_ref(),
                    book.plans.join(", ")
                ),
            ));
        }
        Ok(())
    }

    fn required<'v>(
        &self,
        v: &'v Text,
        span: Range<usize>,
        key: &str,
    ) -> Result<&'v Spanned<String>> {
        v.as_ref()
            .ok_or_else(|| self.err(span.start..span.start, key, "missing"))
    }

    fn name(&self, v: &Spanned<String>, key: &str) -> Result<String> {
        let s = v.get_ref();
        if s.is_empty()
            || s.len() > 64
            || !s
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            return Err(self.err(
                v.span(),
                key,
                format!("{s:?}: use 1 to 64 letters, digits, '-' or '_'"),
            ));
        }
        Ok(s.clone())
    }

    fn duration(&self, v: &Spanned<String>, key: &str) -> Result<Duration> {
        match humantime::parse_duration(v.get_ref()) {
            Ok(d) if !d.is_zero() => Ok(d),
            Ok(_) => Err(self.err(v.span(), key, "must be longer than zero")),
            Err(e) => Err(self.err(
                v.span(),
                key,
                format!(
                    "invalid duration {:?}: {e} (e.g. \"90s\", \"2h\", \"365d\")",
                    v.get_ref()
                ),
            )),
        }
    }

    fn frequency(&self, v: &Spanned<String>) -> Result<Frequency> {
        let text = v.get_ref().trim();
        if text.contains(' ') {
            crate::daemon::Schedule::parse(text, None)
                .map_err(|e| self.err(v.span(), "runbook.frequency", format!("{e:#}")))?;
            return Ok(Frequency::Cron(text.to_string()));
        }
        Ok(Frequency::Every(self.duration(v, "runbook.frequency")?))
    }
}

fn list(v: &TextList) -> Vec<Spanned<String>> {
    v.as_ref().map(|l| l.get_ref().clone()).unwrap_or_default()
}

/// A named restore target must fit the plan's kind and never be its production target.
fn named_target_fits(
    target: &str,
    source: &SourceConfig,
    deny: bool,
) -> std::result::Result<(), String> {
    match source {
        SourceConfig::Dir { path, .. } => {
            let t = Path::new(target);
            if !t.is_absolute() {
                return Err(format!(
                    "{target:?}: a directory plan restores into an absolute directory path"
                ));
            }
            if deny && (t.starts_with(path) || path.starts_with(t)) {
                return Err(format!("{target:?} overlaps the plan's production directory {}: a drill never writes to a production target", path.display()));
            }
            Ok(())
        }
        SourceConfig::Postgres { url, .. } => {
            if !(target.starts_with("postgres://") || target.starts_with("postgresql://")) {
                return Err(format!(
                    "{target:?}: a postgres plan restores into postgres://USER@HOST:PORT/DB"
                ));
            }
            let same_server = |u: &str| {
                u.split('/')
                    .nth(2)
                    .map(|a| a.rsplit('@').next().unwrap_or(a).to_string())
            };
            if deny
                && crate::source::postgres::database_of(target)
                    == crate::source::postgres::database_of(url)
                && same_server(target) == same_server(url)
            {
                return Err("this is the plan's production database: a drill never writes to a production target".into());
            }
            Ok(())
        }
        SourceConfig::Command { .. } => {
            Err("command plans restore into scratch space only (into = \"scratch\")".into())
        }
        SourceConfig::Rds(_) => Err(format!(
            "{target:?}: an rds plan is restored by an rds_restore step, into a scratch instance"
        )),
    }
}

/// The texts of a step where `${…}` may appear.
fn step_texts(kind: &StepKind) -> Vec<&str> {
    match kind {
        StepKind::Command {
            run,
            stdout_contains,
            ..
        } => {
            let mut v: Vec<&str> = run.iter().map(String::as_str).collect();
            v.extend(stdout_contains.as_deref());
            v
        }
        StepKind::Assert { that, .. } => that.iter().map(String::as_str).collect(),
        StepKind::Sql { query, expect, .. } => vec![query, expect],
        StepKind::Notify { message } => vec![message],
        StepKind::Approve { prompt } => vec![prompt],
        _ => Vec::new(),
    }
}

/// Every step `id` depends on, directly or not.
pub fn ancestors<'a>(book: &'a Runbook, id: &str) -> BTreeSet<&'a str> {
    let mut out = BTreeSet::new();
    let mut todo: Vec<&str> = vec![id];
    while let Some(cur) = todo.pop() {
        if let Some(s) = book.steps.iter().find(|s| s.id == cur) {
            for a in &s.after {
                if out.insert(a.as_str()) {
                    todo.push(a.as_str());
                }
            }
        }
    }
    out
}

/// A cycle in `after`, as the ids along it (first repeated at the end), if there is one.
fn find_cycle(book: &Runbook) -> Option<Vec<String>> {
    // 0 unvisited, 1 on the current path, 2 done.
    let mut state: BTreeMap<&str, u8> = BTreeMap::new();
    fn visit<'a>(
        book: &'a Runbook,
        id: &'a str,
        state: &mut BTreeMap<&'a str, u8>,
        path: &mut Vec<&'a str>,
    ) -> Option<Vec<String>> {
        match state.get(id) {
            Some(2) => return None,
            Some(1) => {
                let start = path.iter().position(|p| *p == id).unwrap_or(0);
                let mut cycle: Vec<String> = path[start..].iter().map(|s| s.to_string()).collect();
                cycle.push(id.to_string());
                return Some(cycle);
            }
            _ => {}
        }
        state.insert(id, 1);
        path.push(id);
        if let Some(s) = book.steps.iter().find(|s| s.id == id) {
            for a in &s.after {
                if let Some(c) = visit(book, a, state, path) {
                    return Some(c);
                }
            }
        }
        path.pop();
        state.insert(id, 2);
        None
    }
    for s in &book.steps {
        if let Some(c) = visit(book, &s.id, &mut state, &mut Vec::new()) {
            return Some(c);
        }
    }
    None
}
