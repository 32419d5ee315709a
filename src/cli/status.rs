//! `lifeboat status`: every plan's objectives and the repository's key age, as a table or
//! JSON; the exit code says the worst level (0 ok, 10 warning, 11 breach) so monitoring can
//! call it.

use anyhow::Result;
use serde_json::json;

use super::render::{table, time};
use super::{exit, load_config, Cli};
use crate::catalog::Catalog;
use crate::objectives::{human, Level, PlanStatus};

pub async fn run(cli: &Cli, json: bool) -> Result<u8> {
    let config = load_config(cli)?;
    let catalog = Catalog::open(config.catalog_url()?).await?;
    let now = crate::host::now_secs();
    let statuses = crate::objectives::status(&config, &catalog, now).await?;
    let keys = crate::objectives::key_age::key_age(&config, now).await;
    let worst = statuses
        .iter()
        .map(|s| s.level)
        .chain([keys.level])
        .max()
        .unwrap_or(Level::Ok);
    if json {
        super::output::print_json(&json!({
            "at": now,
            "level": worst,
            "plans": statuses,
            "keys": keys,
        }));
    } else {
        print!("{}", render(&statuses));
        print!("{}", render_keys(&keys));
    }
    Ok(match worst {
        Level::Ok => exit::OK,
        Level::Warning => exit::STATUS_WARNING,
        Level::Breach => exit::STATUS_BREACH,
    })
}

fn render(statuses: &[PlanStatus]) -> String {
    if statuses.is_empty() {
        return "no plans configured\n".into();
    }
    let rows: Vec<Vec<String>> = statuses
        .iter()
        .map(|s| {
            let rpo = match s.rpo.age_seconds {
                Some(age) => format!("{} / {}", human(age), human(s.rpo.target_seconds as i64)),
                None => format!("none / {}", human(s.rpo.target_seconds as i64)),
            };
            let rto = match (s.rto.last_test_seconds, s.rto.projected_seconds) {
                (Some(last), Some(proj)) => format!(
                    "{} -> {} / {}",
                    human(last.round() as i64),
                    human(proj.round() as i64),
                    human(s.rto.target_seconds as i64)
                ),
                (Some(last), None) => format!(
                    "{} (failed) / {}",
                    human(last.round() as i64),
                    human(s.rto.target_seconds as i64)
                ),
                _ => format!("no test / {}", human(s.rto.target_seconds as i64)),
            };
            let drill = match s.drill.age_seconds {
                Some(age) => format!("{} / {}", human(age), human(s.drill.every_seconds as i64)),
                None => format!("never / {}", human(s.drill.every_seconds as i64)),
            };
            let regions = s
                .regions
                .iter()
                .map(|r| format!("{} {}", r.region, r.health))
                .collect::<Vec<_>>()
                .join(", ");
            vec![
                s.plan.clone(),
                s.level.as_str().to_uppercase(),
                format!("{} {rpo}", mark(s.rpo.level)),
                format!("{} {rto}", mark(s.rto.level)),
                format!("{} {drill}", mark(s.drill.level)),
                regions,
            ]
        })
        .collect();
    let mut out = table(
        &[
            "PLAN",
            "STATUS",
            "RPO AGE / TARGET",
            "RESTORE TEST -> PROJECTED / RTO",
            "DRILL AGE / EVERY",
            "REGIONS",
        ],
        &rows,
    );
    for s in statuses {
        for (what, level, note) in [
            ("RPO", s.rpo.level, &s.rpo.note),
            ("RTO", s.rto.level, &s.rto.note),
            ("drill", s.drill.level, &s.drill.note),
        ] {
            if let Some(note) = note {
                out.push_str(&format!("{} {}: {what}: {note}\n", level.as_str(), s.plan));
            }
        }
        for r in s.regions.iter().filter(|r| r.health != "ok") {
            out.push_str(&format!(
                "warning {}: region {}: {}\n",
                s.plan,
                r.region,
                r.detail.as_deref().unwrap_or(&r.health)
            ));
        }
        if let Some(d) = &s.drill.last {
            out.push_str(&format!(
                "{}: last drill {} ({}) {} {}{}\n",
                s.plan,
                d.id,
                d.runbook,
                time(d.started_at),
                d.result.to_uppercase(),
                d.rto_achieved_ms
                    .map(|ms| format!(", achieved RTO {}", crate::drill::report::dur(ms)))
                    .unwrap_or_default()
            ));
        }
        if let Some(t) = s.rpo.snapshot_time {
            out.push_str(&format!(
                "{}: newest complete snapshot {} taken {}\n",
                s.plan,
                s.rpo
                    .snapshot
                    .as_deref()
                    .map(|i| &i[..i.len().min(12)])
                    .unwrap_or("?"),
                time(t)
            ));
        }
    }
    out
}

/// The key-age line: epoch, age against the year, and what to do.
fn render_keys(k: &crate::objectives::key_age::KeyAge) -> String {
    let mut out = match (&k.repository, k.epoch, k.age_seconds) {
        (Some(repo), Some(epoch), Some(age)) => format!(
            "{} keys: repository {repo}, recipient epoch {epoch} is {} old / rotate every {}\n",
            mark(k.level),
            human(age),
            human(k.breach_seconds)
        ),
        _ => String::new(),
    };
    if let Some(note) = &k.note {
        out.push_str(&format!("{} keys: {note}\n", k.level.as_str()));
    }
    if let Some(note) = &k.details {
        out.push_str(&format!("note keys: {note}\n"));
    }
    out
}

fn mark(level: Level) -> &'static str {
    match level {
        Level::Ok => "ok",
        Level::Warning => "WARN",
        Level::Breach => "BREACH",
    }
}
