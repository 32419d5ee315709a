//! The drill report: the evidence an auditor reads. One serde type ([`Report`], schema
//! version [`SCHEMA`], documented in docs/runbooks.md "Report schema"; fields are only ever
//! added), rendered as JSON, Markdown or HTML (`html`). Times are epoch milliseconds.

use std::collections::BTreeMap;
use std::fmt::Write;

use serde::{Deserialize, Serialize};

/// The report schema version. Bump only for an incompatible change (none so far).
pub const SCHEMA: u32 = 1;

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Report {
    pub schema: u32,
    pub id: String,
    /// `passed`, `failed` or `interrupted`.
    pub result: String,
    pub runbook: RunbookInfo,
    pub lifeboat_version: String,
    pub host: String,
    pub operator: String,
    pub started_ms: i64,
    pub ended_ms: i64,
    /// The declare step's start: the disaster clock.
    pub t0_ms: Option<i64>,
    /// When the last plan was restored and checked: data usable again.
    pub usable_ms: Option<i64>,
    /// Regions taken down in-process by the declare step.
    pub simulated_down: Vec<String>,
    pub plans: Vec<String>,
    pub regions: Vec<String>,
    pub approvals: Vec<Approval>,
    pub steps: Vec<StepRecord>,
    pub rto: Rto,
    pub rpo: Vec<PlanRpo>,
    pub throughput: Vec<Throughput>,
    /// Failed, retried, timed-out or skipped steps, a tripped guard, an interruption.
    pub deviations: Vec<String>,
    pub cleanup: Vec<LedgerEntry>,
    pub next_due_ms: Option<i64>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct RunbookInfo {
    pub id: String,
    pub version: i64,
    pub path: String,
    pub sha256: String,
    /// The commit of the work tree holding the file, when it is in one.
    pub git_commit: Option<String>,
    /// The file differs from that commit (uncommitted changes).
    pub git_dirty: Option<bool>,
    pub owner: String,
    pub scenario: String,
    pub frequency: String,
    pub controls: Vec<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Approval {
    pub step: String,
    pub approver: String,
    pub at_ms: i64,
    /// `flag` (--approve/--approve-all) or `terminal`.
    pub how: String,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct StepRecord {
    pub id: String,
    pub kind: String,
    pub after: Vec<String>,
    pub started_ms: Option<i64>,
    pub ended_ms: Option<i64>,
    pub duration_ms: Option<i64>,
    pub attempts: u32,
    /// `passed`, `failed`, `timed_out`, `cancelled` or `skipped`.
    pub result: String,
    pub error: Option<String>,
    /// What the step produced (`${id.field}`): snapshot ids, bytes, hashes, row counts,
    /// regions read, fallbacks, exit codes.
    pub outputs: BTreeMap<String, String>,
    /// `cleanup` for `[[cleanup]]` steps, else `step`.
    pub phase: String,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Rto {
    pub target_ms: i64,
    pub achieved_ms: Option<i64>,
    /// target − achieved (negative: missed).
    pub margin_ms: Option<i64>,
    pub met: Option<bool>,
    pub plans: Vec<PlanRto>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PlanRto {
    pub plan: String,
    pub target_ms: i64,
    pub achieved_ms: Option<i64>,
    pub margin_ms: Option<i64>,
    pub met: Option<bool>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PlanRpo {
    pub plan: String,
    pub target_s: i64,
    /// T0 − time of the snapshot restored (the data the disaster would have lost).
    pub restored_snapshot: Option<String>,
    pub achieved_s: Option<i64>,
    pub met: Option<bool>,
    pub regions: Vec<RegionRpo>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RegionRpo {
    pub region: String,
    pub snapshot: Option<String>,
    pub snapshot_time: Option<i64>,
    /// T0 − the newest snapshot this region holds.
    pub achieved_s: Option<i64>,
    pub met: bool,
    pub note: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Throughput {
    pub plan: String,
    pub bytes: u64,
    pub restore_ms: i64,
    pub bytes_per_second: f64,
    /// Size of the plan's newest snapshot now.
    pub current_bytes: u64,
    /// The restore time at that size, at this drill's throughput.
    pub projected_rto_ms: i64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LedgerEntry {
    /// What was created, e.g. `scratch directory /var/cache/…`.
    pub what: String,
    pub created_by: String,
    pub created_ms: i64,
    pub removed: bool,
    pub removed_ms: Option<i64>,
    pub error: Option<String>,
}

pub fn iso(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .map(|t| t.format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string())
        .unwrap_or_else(|| ms.to_string())
}

pub fn dur(ms: i64) -> String {
    let neg = ms < 0;
    let ms = ms.unsigned_abs();
    let text = if ms < 10_000 {
        format!("{:.2}s", ms as f64 / 1000.0)
    } else {
        humantime::format_duration(std::time::Duration::from_secs(ms / 1000)).to_string()
    };
    if neg {
        format!("-{text}")
    } else {
        text
    }
}

fn opt_dur(ms: Option<i64>) -> String {
    ms.map(dur).unwrap_or_else(|| "—".into())
}

fn met(m: Option<bool>) -> &'static str {
    match m {
        Some(true) => "met",
        Some(false) => "MISSED",
        None => "not measured",
    }
}

impl Report {
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).unwrap_or_default()
    }

    /// One line for the end of `drill run`.
    pub fn summary(&self) -> String {
        format!(
            "drill {} {}: runbook {} v{}, RTO {} / {} ({}), {} steps, {} deviation(s), cleanup {}/{} removed",
            self.id,
            self.result.to_uppercase(),
            self.runbook.id,
            self.runbook.version,
            opt_dur(self.rto.achieved_ms),
            dur(self.rto.target_ms),
            met(self.rto.met),
            self.steps.len(),
            self.deviations.len(),
            self.cleanup.iter().filter(|c| c.removed).count(),
            self.cleanup.len(),
        )
    }

    pub fn to_markdown(&self) -> String {
        let mut o = String::new();
        let r = &self.runbook;
        let _ = writeln!(
            o,
            "# DR drill {} — {}\n",
            self.id,
            self.result.to_uppercase()
        );
        let _ = writeln!(o, "| | |\n|---|---|");
        for (k, v) in [
            ("Runbook", format!("{} v{} ({})", r.id, r.version, r.path)),
            ("Runbook SHA-256", r.sha256.clone()),
            (
                "Git commit",
                match (&r.git_commit, r.git_dirty) {
                    (Some(c), Some(true)) => format!("{c} (file modified since)"),
                    (Some(c), _) => c.clone(),
                    (None, _) => "not in a git work tree".into(),
                },
            ),
            ("Scenario", r.scenario.clone()),
            ("Owner", r.owner.clone()),
            ("Controls", r.controls.join(", ")),
            ("Frequency", r.frequency.clone()),
            ("lifeboat", self.lifeboat_version.clone()),
            (
                "Host / operator",
                format!("{} / {}", self.host, self.operator),
            ),
            ("Plans", self.plans.join(", ")),
            ("Regions", self.regions.join(", ")),
            ("Simulated down", self.simulated_down.join(", ")),
            ("Started", iso(self.started_ms)),
            ("Ended", iso(self.ended_ms)),
            (
                "T0 (declared)",
                self.t0_ms.map(iso).unwrap_or_else(|| "—".into()),
            ),
            (
                "Usable",
                self.usable_ms.map(iso).unwrap_or_else(|| "—".into()),
            ),
            (
                "Next due",
                self.next_due_ms.map(iso).unwrap_or_else(|| "—".into()),
            ),
        ] {
            let _ = writeln!(o, "| {k} | {} |", cell(&v));
        }
        let _ = writeln!(o, "\n## Recovery time (RTO)\n");
        let _ = writeln!(
            o,
            "Total: **{}** against {} — margin {} — **{}**\n",
            opt_dur(self.rto.achieved_ms),
            dur(self.rto.target_ms),
            opt_dur(self.rto.margin_ms),
            met(self.rto.met)
        );
        let _ = writeln!(
            o,
            "| plan | achieved | target | margin | |\n|---|---|---|---|---|"
        );
        for p in &self.rto.plans {
            let _ = writeln!(
                o,
                "| {} | {} | {} | {} | {} |",
                p.plan,
                opt_dur(p.achieved_ms),
                dur(p.target_ms),
                opt_dur(p.margin_ms),
                met(p.met)
            );
        }
        let _ = writeln!(o, "\n## Data loss (RPO)\n");
        let _ = writeln!(
            o,
            "| plan | region | snapshot | achieved | target | |\n|---|---|---|---|---|---|"
        );
        for p in &self.rpo {
            let _ = writeln!(
                o,
                "| {} | (restored) | {} | {} | {} | {} |",
                p.plan,
                p.restored_snapshot.as_deref().unwrap_or("—"),
                opt_dur(p.achieved_s.map(|s| s * 1000)),
                dur(p.target_s * 1000),
                met(p.met)
            );
            for g in &p.regions {
                let _ = writeln!(
                    o,
                    "| {} | {} | {} | {} | {} | {}{} |",
                    p.plan,
                    g.region,
                    g.snapshot.as_deref().unwrap_or("—"),
                    opt_dur(g.achieved_s.map(|s| s * 1000)),
                    dur(p.target_s * 1000),
                    met(Some(g.met)),
                    g.note
                        .as_deref()
                        .map(|n| format!(" ({n})"))
                        .unwrap_or_default()
                );
            }
        }
        if !self.throughput.is_empty() {
            let _ = writeln!(o, "\n## Restore throughput\n");
            let _ = writeln!(o, "| plan | bytes | restore | throughput | size now | projected RTO |\n|---|---|---|---|---|---|");
            for t in &self.throughput {
                let _ = writeln!(
                    o,
                    "| {} | {} | {} | {:.1} MB/s | {} | {} |",
                    t.plan,
                    t.bytes,
                    dur(t.restore_ms),
                    t.bytes_per_second / 1e6,
                    t.current_bytes,
                    dur(t.projected_rto_ms)
                );
            }
        }
        let _ = writeln!(o, "\n## Approvals\n");
        if self.approvals.is_empty() {
            let _ = writeln!(o, "none (the runbook has no approve step)");
        }
        for a in &self.approvals {
            let _ = writeln!(
                o,
                "- step `{}`: approved by **{}** at {} ({})",
                a.step,
                a.approver,
                iso(a.at_ms),
                a.how
            );
        }
        let _ = writeln!(o, "\n## Timeline\n");
        let _ = writeln!(o, "| step | kind | start | duration | attempts | result | outputs |\n|---|---|---|---|---|---|---|");
        for s in &self.steps {
            let outputs: Vec<String> = s
                .outputs
                .iter()
                .map(|(k, v)| format!("{k}={}", short(v)))
                .chain(s.error.iter().map(|e| format!("error: {e}")))
                .collect();
            let _ = writeln!(
                o,
                "| {}{} | {} | {} | {} | {} | {} | {} |",
                s.id,
                if s.phase == "cleanup" {
                    " (cleanup)"
                } else {
                    ""
                },
                s.kind,
                s.started_ms.map(iso).unwrap_or_else(|| "—".into()),
                opt_dur(s.duration_ms),
                s.attempts,
                s.result,
                cell(&outputs.join("; "))
            );
        }
        let _ = writeln!(o, "\n## Deviations\n");
        if self.deviations.is_empty() {
            let _ = writeln!(o, "none");
        }
        for d in &self.deviations {
            let _ = writeln!(o, "- {d}");
        }
        let _ = writeln!(o, "\n## Cleanup ledger\n");
        if self.cleanup.is_empty() {
            let _ = writeln!(o, "nothing was created");
        } else {
            let _ = writeln!(
                o,
                "| created | by | at | removed | error |\n|---|---|---|---|---|"
            );
        }
        for c in &self.cleanup {
            let _ = writeln!(
                o,
                "| {} | {} | {} | {} | {} |",
                cell(&c.what),
                c.created_by,
                iso(c.created_ms),
                if c.removed { "yes" } else { "NO" },
                cell(c.error.as_deref().unwrap_or(""))
            );
        }
        o
    }
}

fn cell(s: &str) -> String {
    s.replace('|', "\\|").replace('\n', " ")
}

fn short(v: &str) -> String {
    if v.chars().count() > 80 {
        format!("{}…", v.chars().take(80).collect::<String>())
    } else {
        v.to_string()
    }
}
