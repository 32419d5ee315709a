//! When a plan is due: pure functions of its schedule, its last run and a clock the caller
//! passes in, so every rule is tested without sleeping.
//!
//! A plan is due when an occurrence of its schedule lies in `(last, now]`; the run is for
//! the *latest* such occurrence. After downtime that spanned several occurrences, the plan
//! therefore runs once (catching up), not once per missed occurrence. A plan that never
//! ran is due at once (its latest past occurrence), since a plan without a snapshot already
//! misses its RPO.
//!
//! Expressions: five fields are standard cron (`minute hour day-of-month month
//! day-of-week`, day-of-week 0–7 with 0 and 7 = Sunday); six or seven fields are the `cron`
//! crate's form (a leading seconds field, an optional trailing year, day-of-week 1–7 with
//! 1 = Sunday). Times are UTC unless the plan names a zone (IANA name, e.g.
//! `Europe/Paris`); occurrences in a DST gap are skipped, ambiguous ones run once.

use std::str::FromStr;

use anyhow::{Context, Result};
use chrono::{DateTime, TimeZone, Utc};
use chrono_tz::Tz;

/// A parsed schedule with its time zone.
#[derive(Debug, Clone)]
pub struct Schedule {
    cron: cron::Schedule,
    zone: Tz,
    /// As written in the config.
    pub expression: String,
}

impl Schedule {
    /// Parse `expression` (5, 6 or 7 fields) in `zone` (UTC when `None`).
    pub fn parse(expression: &str, zone: Option<&str>) -> Result<Schedule> {
        let fields: Vec<&str> = expression.split_whitespace().collect();
        let crate_form = match fields.len() {
            5 => {
                let dow = standard_dow(fields[4])
                    .with_context(|| format!("schedule {expression:?}: day-of-week"))?;
                format!(
                    "0 {} {} {} {} {dow}",
                    fields[0], fields[1], fields[2], fields[3]
                )
            }
            6 | 7 => fields.join(" "),
            n => anyhow::bail!("schedule {expression:?}: {n} fields, expected 5 to 7"),
        };
        let cron = cron::Schedule::from_str(&crate_form)
            .map_err(|e| anyhow::anyhow!("invalid schedule {expression:?}: {e}"))?;
        let zone = match zone {
            None => Tz::UTC,
            Some(name) => name.parse::<Tz>().map_err(|_| {
                anyhow::anyhow!(
                    "unknown time zone {name:?} (expected an IANA name such as \"Europe/Paris\")"
                )
            })?,
        };
        Ok(Schedule {
            cron,
            zone,
            expression: expression.to_string(),
        })
    }

    /// The latest occurrence at or before `now` (epoch seconds).
    pub fn latest_at_or_before(&self, now: i64) -> Option<i64> {
        let after = self.at(now.checked_add(1)?)?;
        self.cron.after(&after).next_back().map(|t| t.timestamp())
    }

    /// The first occurrence strictly after `t`.
    pub fn next_after(&self, t: i64) -> Option<i64> {
        let t = self.at(t)?;
        self.cron.after(&t).next().map(|t| t.timestamp())
    }

    fn at(&self, epoch: i64) -> Option<DateTime<Tz>> {
        let utc: DateTime<Utc> = DateTime::from_timestamp(epoch, 0)?;
        Some(self.zone.from_utc_datetime(&utc.naive_utc()))
    }
}

/// Translate a standard-cron day-of-week field (0–7, 0 and 7 = Sunday) to the cron
/// crate's numbering (1–7, 1 = Sunday). Names (`Mon`, `mon-fri`) pass through.
fn standard_dow(field: &str) -> Result<String> {
    let mut parts = Vec::new();
    for item in field.split(',') {
        let (range, step) = match item.split_once('/') {
            Some((r, s)) => (r, Some(s)),
            None => (item, None),
        };
        let shift = |s: &str| -> Result<Option<u32>> {
            if s.chars().all(|c| c.is_ascii_digit()) && !s.is_empty() {
                let n: u32 = s.parse()?;
                anyhow::ensure!(n <= 7, "{n} is not a day of the week (0-7)");
                Ok(Some(n))
            } else {
                Ok(None)
            }
        };
        let translated = match range.split_once('-') {
            Some((a, b)) => match (shift(a)?, shift(b)?) {
                (Some(a), Some(7)) if a > 0 => format!("{}-7,1", a + 1),
                (Some(a), Some(b)) => format!("{}-{}", a + 1, b + 1),
                _ => range.to_string(),
            },
            None => match shift(range)? {
                Some(n) => ((n % 7) + 1).to_string(),
                None => range.to_string(),
            },
        };
        match step {
            // A stepped list stays one item; the "7 → 1" split above never has a step.
            Some(s) => parts.push(format!("{translated}/{s}")),
            None => parts.push(translated),
        }
    }
    Ok(parts.join(","))
}

/// The occurrence a run is due for, if any: the latest occurrence in `(last, now]`.
/// `last` is the newest occurrence already run, or the start of the last successful run,
/// whichever is later (a manual backup after an occurrence satisfies it).
pub fn due(schedule: &Schedule, last: Option<i64>, now: i64) -> Option<i64> {
    let occurrence = schedule.latest_at_or_before(now)?;
    match last {
        Some(last) if last >= occurrence => None,
        _ => Some(occurrence),
    }
}

/// When the plan should next run: `now` if it is due, else its next occurrence.
pub fn next_run(schedule: &Schedule, last: Option<i64>, now: i64) -> Option<i64> {
    match due(schedule, last, now) {
        Some(_) => Some(now),
        None => schedule.next_after(now),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: &str) -> i64 {
        DateTime::parse_from_rfc3339(s).unwrap().timestamp()
    }

    #[test]
    fn nightly_schedule_is_due_after_its_time_once() {
        let s = Schedule::parse("0 3 * * *", None).unwrap();
        let last = Some(t("2026-11-20T03:00:00Z"));
        assert_eq!(due(&s, last, t("2026-11-21T02:59:59Z")), None);
        assert_eq!(
            due(&s, last, t("2026-11-21T03:00:00Z")),
            Some(t("2026-11-21T03:00:00Z"))
        );
        // Once run, the same occurrence is not due again.
        assert_eq!(
            due(
                &s,
                Some(t("2026-11-21T03:00:00Z")),
                t("2026-11-21T09:00:00Z")
            ),
            None
        );
        assert_eq!(
            next_run(
                &s,
                Some(t("2026-11-21T03:00:00Z")),
                t("2026-11-21T09:00:00Z")
            ),
            Some(t("2026-11-22T03:00:00Z"))
        );
    }

    #[test]
    fn downtime_catches_up_once_not_replayed() {
        let s = Schedule::parse("0 * * * *", None).unwrap();
        let last = Some(t("2026-11-20T00:00:00Z"));
        // Down for 5 hours: one run, for the latest missed occurrence.
        let now = t("2026-11-20T05:20:00Z");
        let occ = due(&s, last, now).unwrap();
        assert_eq!(occ, t("2026-11-20T05:00:00Z"));
        assert_eq!(due(&s, Some(occ), now), None);
    }

    #[test]
    fn never_run_plan_is_due_now() {
        let s = Schedule::parse("0 3 * * *", None).unwrap();
        let now = t("2026-11-21T10:00:00Z");
        assert_eq!(due(&s, None, now), Some(t("2026-11-21T03:00:00Z")));
        assert_eq!(next_run(&s, None, now), Some(now));
    }

    #[test]
    fn manual_run_after_occurrence_satisfies_it() {
        let s = Schedule::parse("0 3 * * *", None).unwrap();
        assert_eq!(
            due(
                &s,
                Some(t("2026-11-21T04:00:00Z")),
                t("2026-11-21T05:00:00Z")
            ),
            None
        );
    }

    #[test]
    fn zone_shifts_occurrences() {
        let s = Schedule::parse("0 3 * * *", Some("Europe/Paris")).unwrap();
        // 03:00 in Paris in November (CET, UTC+1) is 02:00 UTC.
        assert_eq!(
            s.next_after(t("2026-11-21T00:00:00Z")),
            Some(t("2026-11-21T02:00:00Z"))
        );
        // In July (CEST, UTC+2) it is 01:00 UTC.
        assert_eq!(
            s.next_after(t("2026-07-01T00:00:00Z")),
            Some(t("2026-07-01T01:00:00Z"))
        );
        assert!(Schedule::parse("0 3 * * *", Some("Mars/Olympus")).is_err());
    }

    #[test]
    fn standard_day_of_week_numbering() {
        // 2026-11-21 is a Saturday; "1-5" is Monday to Friday in standard cron.
        let s = Schedule::parse("0 3 * * 1-5", None).unwrap();
        assert_eq!(
            s.next_after(t("2026-11-21T00:00:00Z")),
            Some(t("2026-11-23T03:00:00Z"))
        );
        let sunday = Schedule::parse("0 3 * * 0", None).unwrap();
        assert_eq!(
            sunday.next_after(t("2026-11-21T00:00:00Z")),
            Some(t("2026-11-22T03:00:00Z"))
        );
        let seven = Schedule::parse("0 3 * * 7", None).unwrap();
        assert_eq!(
            seven.next_after(t("2026-11-21T00:00:00Z")),
            Some(t("2026-11-22T03:00:00Z"))
        );
        let weekend = Schedule::parse("0 3 * * 6-7", None).unwrap();
        assert_eq!(
            weekend.next_after(t("2026-11-22T04:00:00Z")),
            Some(t("2026-11-28T03:00:00Z"))
        );
        assert!(Schedule::parse("0 3 * * 8", None).is_err());
    }

    #[test]
    fn seconds_field_form() {
        let s = Schedule::parse("*/2 * * * * *", None).unwrap();
        assert_eq!(
            s.latest_at_or_before(t("2026-11-21T00:00:03Z")),
            Some(t("2026-11-21T00:00:02Z"))
        );
        assert_eq!(
            s.latest_at_or_before(t("2026-11-21T00:00:04Z")),
            Some(t("2026-11-21T00:00:04Z"))
        );
    }
}
