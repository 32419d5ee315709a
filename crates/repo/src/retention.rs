//! Retention policies: which snapshots of one plan to keep, as a pure function of the
//! snapshots, the policy, the time and a calendar.
//!
//! The semantics are restic's (`restic forget --keep-*`): snapshots are walked newest first;
//! `keep_last N` keeps the N newest; each calendar rule (`keep_hourly/daily/weekly/monthly/
//! yearly N`) keeps the newest snapshot of each of the N most recent hours/days/ISO weeks/
//! months/years that have one; `keep_within D` keeps everything newer than D. A snapshot is
//! kept if any rule (or a safety rule) keeps it, and each survivor carries every reason.
//!
//! Two deliberate differences from restic, both against forged snapshots: `keep_within` counts
//! back from *now*, not from the newest snapshot (a snapshot dated in the future cannot push
//! the window forward), and callers pass a floor (the plan's RPO) that `keep_within` never goes
//! below. Calendar buckets are computed in the plan's zone by the [`Calendar`] the caller
//! passes in: this crate has no time-zone database.

use std::collections::HashMap;

use crate::Id;

/// A plan's retention rules. `None` = the rule is not used. No rule at all keeps everything.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Policy {
    pub keep_last: Option<u32>,
    pub keep_hourly: Option<u32>,
    pub keep_daily: Option<u32>,
    pub keep_weekly: Option<u32>,
    pub keep_monthly: Option<u32>,
    pub keep_yearly: Option<u32>,
    /// Seconds.
    pub keep_within: Option<i64>,
}

impl Policy {
    /// True when no rule is set (then nothing is forgotten).
    pub fn is_empty(&self) -> bool {
        *self == Policy::default()
    }
}

/// A moment in local civil time, as the calendar rules need it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Civil {
    pub year: i32,
    pub month: u32,
    pub day: u32,
    pub hour: u32,
    /// ISO 8601 week-numbering year and week (weeks start on Monday).
    pub iso_year: i32,
    pub iso_week: u32,
}

/// Epoch seconds → local civil time in the plan's zone.
pub type Calendar<'a> = &'a dyn Fn(i64) -> Civil;

/// One snapshot as retention sees it.
#[derive(Debug, Clone)]
pub struct Candidate {
    pub id: Id,
    /// Start of the backup, epoch seconds.
    pub time: i64,
    /// Breaks ties between snapshots of the same second (newest committed wins).
    pub committed_ns: i64,
    /// Safety rules that keep this snapshot whatever the policy says (e.g. "newest snapshot
    /// complete in every region", "used by restore test …").
    pub protected: Vec<String>,
}

/// The verdict for one snapshot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    pub id: Id,
    pub time: i64,
    pub keep: bool,
    /// Every rule that keeps it (empty when forgotten).
    pub reasons: Vec<String>,
}

/// Apply `policy` to `snapshots` (any order) at `now`. `within_floor` (seconds) is the least
/// `keep_within` may be (the RPO): applied even when the policy has no `keep_within`, but
/// only when the policy has some rule (an empty policy keeps everything anyway). Result:
/// newest first.
pub fn apply(
    policy: &Policy,
    snapshots: &[Candidate],
    now: i64,
    within_floor: i64,
    calendar: Calendar<'_>,
) -> Vec<Decision> {
    let mut order: Vec<&Candidate> = snapshots.iter().collect();
    order.sort_by_key(|c| std::cmp::Reverse((c.time, c.committed_ns)));
    let within = policy.keep_within.unwrap_or(0).max(within_floor);
    type Bucket = fn(&Civil) -> i64;
    let rules: [(&str, Option<u32>, Bucket); 5] = [
        ("hourly", policy.keep_hourly, |c| {
            ((c.year as i64 * 100 + c.month as i64) * 100 + c.day as i64) * 100 + c.hour as i64
        }),
        ("daily", policy.keep_daily, |c| {
            (c.year as i64 * 100 + c.month as i64) * 100 + c.day as i64
        }),
        ("weekly", policy.keep_weekly, |c| {
            c.iso_year as i64 * 100 + c.iso_week as i64
        }),
        ("monthly", policy.keep_monthly, |c| {
            c.year as i64 * 100 + c.month as i64
        }),
        ("yearly", policy.keep_yearly, |c| c.year as i64),
    ];
    let mut remaining: Vec<u32> = rules.iter().map(|r| r.1.unwrap_or(0)).collect();
    let mut last: Vec<Option<i64>> = vec![None; rules.len()];
    let mut last_left = policy.keep_last.unwrap_or(0);
    let mut out = Vec::with_capacity(order.len());
    for c in order {
        let mut reasons: Vec<String> = c.protected.clone();
        if policy.is_empty() {
            reasons.push("no retention policy: everything is kept".into());
        } else {
            if last_left > 0 {
                last_left -= 1;
                reasons.push("keep_last".into());
            }
            if within > 0 && c.time > now - within {
                reasons.push(if policy.keep_within.unwrap_or(0) >= within_floor {
                    "keep_within".to_string()
                } else {
                    "within the RPO (keep_within floor)".to_string()
                });
            }
            let civil = calendar(c.time);
            for (i, (name, _, bucket)) in rules.iter().enumerate() {
                let key = bucket(&civil);
                if remaining[i] > 0 && last[i] != Some(key) {
                    remaining[i] -= 1;
                    last[i] = Some(key);
                    reasons.push(format!("keep_{name}"));
                }
            }
        }
        out.push(Decision {
            id: c.id,
            time: c.time,
            keep: !reasons.is_empty(),
            reasons,
        });
    }
    out
}

/// The runaway-snapshot guard: `Some(explanation)` when more snapshots fall in
/// `(now - window, now]` than `limit`, or any is dated after `now + slack`. Forged or runaway
/// snapshots would otherwise push real ones out of every calendar bucket.
pub fn runaway(times: &[i64], now: i64, window: i64, limit: usize, slack: i64) -> Option<String> {
    if let Some(&future) = times.iter().filter(|&&t| t > now + slack).max() {
        return Some(format!(
            "a snapshot is dated {}s in the future: its clock is wrong or it was forged",
            future - now
        ));
    }
    let recent = times
        .iter()
        .filter(|&&t| t > now - window && t <= now + slack)
        .count();
    (recent > limit).then(|| {
        format!(
            "{recent} snapshots in the last {}h, but the schedule allows at most {limit}: forged or runaway snapshots could push the real ones out of the keep_* windows",
            window / 3600
        )
    })
}

/// A calendar for a fixed offset from UTC (seconds east), e.g. `fixed_offset(0)` for UTC.
/// Hosts with a time-zone database pass their own [`Calendar`] instead.
pub fn fixed_offset(offset: i64) -> impl Fn(i64) -> Civil {
    move |t| civil_of(t + offset)
}

/// `YYYY-MM-DD HH:MM` of epoch seconds in UTC, for messages and receipts.
pub fn utc_text(t: i64) -> String {
    let c = civil_of(t);
    let minute = t.rem_euclid(3600) / 60;
    format!(
        "{:04}-{:02}-{:02} {:02}:{minute:02}",
        c.year, c.month, c.day, c.hour
    )
}

fn civil_of(t: i64) -> Civil {
    let days = t.div_euclid(86_400);
    let hour = (t.rem_euclid(86_400) / 3600) as u32;
    let (year, month, day) = civil_from_days(days);
    // ISO week: the week's Thursday decides the year.
    let weekday = (days + 3).rem_euclid(7); // 0 = Monday (1970-01-01 was a Thursday)
    let thursday = days - weekday + 3;
    let (iso_year, _, _) = civil_from_days(thursday);
    let jan1 = days_from_civil(iso_year, 1, 1);
    let iso_week = ((thursday - jan1) / 7 + 1) as u32;
    Civil {
        year,
        month,
        day,
        hour,
        iso_year,
        iso_week,
    }
}

/// Howard Hinnant's `civil_from_days`: days since 1970-01-01 → (year, month, day).
fn civil_from_days(z: i64) -> (i32, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    ((if m <= 2 { y + 1 } else { y }) as i32, m, d)
}

fn days_from_civil(y: i32, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y as i64 - 1 } else { y as i64 };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let mp = if m > 2 { m - 3 } else { m + 9 } as i64;
    let doy = (153 * mp + 2) / 5 + d as i64 - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// Count decisions by verdict, for summaries.
pub fn summary(decisions: &[Decision]) -> HashMap<bool, usize> {
    let mut m = HashMap::new();
    for d in decisions {
        *m.entry(d.keep).or_default() += 1;
    }
    m
}

#[cfg(test)]
mod tests {
    use super::*;

    const DAY: i64 = 86_400;
    // 2025-01-01T02:00:00Z, a Wednesday.
    const START: i64 = 1_735_696_800;

    fn id(n: u32) -> Id {
        let mut b = [0u8; 32];
        b[..4].copy_from_slice(&n.to_le_bytes());
        Id(b)
    }

    fn daily_year() -> Vec<Candidate> {
        (0..365)
            .map(|i| Candidate {
                id: id(i),
                time: START + i as i64 * DAY,
                committed_ns: 0,
                protected: Vec::new(),
            })
            .collect()
    }

    fn kept(d: &[Decision]) -> Vec<i64> {
        let mut t: Vec<i64> = d.iter().filter(|d| d.keep).map(|d| d.time).collect();
        t.sort();
        t
    }

    #[test]
    fn utc_text_names_the_minute() {
        assert_eq!(utc_text(0), "1970-01-01 00:00");
        assert_eq!(utc_text(1_798_761_599), "2026-12-31 23:59");
    }

    #[test]
    fn civil_time_matches_known_dates() {
        let utc = fixed_offset(0);
        let c = utc(START);
        assert_eq!((c.year, c.month, c.day, c.hour), (2025, 1, 1, 2));
        assert_eq!((c.iso_year, c.iso_week), (2025, 1));
        // 2024-12-30 (Monday) belongs to ISO week 1 of 2025; 2024-12-29 (Sunday) to 2024-W52.
        assert_eq!(
            (utc(START - 2 * DAY).iso_year, utc(START - 2 * DAY).iso_week),
            (2025, 1)
        );
        assert_eq!(
            (utc(START - 3 * DAY).iso_year, utc(START - 3 * DAY).iso_week),
            (2024, 52)
        );
        // 2020-12-31 is in 2020-W53.
        let c = utc(1_609_372_800);
        assert_eq!(
            (c.year, c.month, c.day, c.iso_year, c.iso_week),
            (2020, 12, 31, 2020, 53)
        );
        // An offset moves the day: 23:30 UTC is the next day at +01:00.
        let paris = fixed_offset(3600);
        assert_eq!(paris(START - 2 * 3600 - 1800 + DAY).day, 2);
    }

    #[test]
    fn a_year_of_daily_snapshots_keeps_exactly_what_the_policy_says() {
        let snaps = daily_year();
        let last = START + 364 * DAY; // 2025-12-31T02:00Z, a Wednesday
        let now = last + 3600;
        let policy = Policy {
            keep_last: Some(3),
            keep_daily: Some(7),
            keep_weekly: Some(4),
            keep_monthly: Some(12),
            keep_yearly: Some(3),
            ..Policy::default()
        };
        let d = apply(&policy, &snaps, now, 0, &fixed_offset(0));
        let k = kept(&d);
        // Daily: the last 7 days (covers keep_last 3).
        let mut want: Vec<i64> = (0..7).map(|i| last - i * DAY).collect();
        // Weekly: the newest of each of the last 4 ISO weeks. The week of 2025-12-29 (Mon)
        // is already kept (Wednesday 31st); then the Sundays 28th, 21st, 14th.
        want.extend([last - 3 * DAY, last - 10 * DAY, last - 17 * DAY]);
        // Monthly: the last day of each month Jan..Nov 2025 (December: the 31st, kept).
        let month_ends = [
            (1, 31),
            (2, 28),
            (3, 31),
            (4, 30),
            (5, 31),
            (6, 30),
            (7, 31),
            (8, 31),
            (9, 30),
            (10, 31),
            (11, 30),
        ];
        for (m, d) in month_ends {
            want.push(days_from_civil(2025, m, d) * DAY + 2 * 3600);
        }
        // Yearly: only 2025 exists, and its newest is kept already.
        want.sort();
        want.dedup();
        assert_eq!(k, want, "kept {} snapshots", k.len());
        assert_eq!(summary(&d)[&true], 7 + 2 + 11);
        assert_eq!(summary(&d)[&false], 365 - 20);
        // Every survivor says which rules keep it; the newest is kept by all five.
        let newest = d.iter().find(|d| d.time == last).expect("newest");
        assert_eq!(
            newest.reasons,
            [
                "keep_last",
                "keep_daily",
                "keep_weekly",
                "keep_monthly",
                "keep_yearly"
            ]
        );
        assert!(d.iter().filter(|d| !d.keep).all(|d| d.reasons.is_empty()));
    }

    #[test]
    fn keep_within_counts_from_now_and_the_rpo_is_a_floor() {
        let snaps = daily_year();
        let last = START + 364 * DAY;
        let now = last + 3600;
        let policy = Policy {
            keep_last: Some(1),
            keep_within: Some(2 * DAY),
            ..Policy::default()
        };
        let d = apply(&policy, &snaps, now, 0, &fixed_offset(0));
        assert_eq!(kept(&d), [last - DAY, last]);
        // The RPO (10 days) raises the floor.
        let d = apply(&policy, &snaps, now, 10 * DAY, &fixed_offset(0));
        assert_eq!(kept(&d).len(), 10);
        assert!(d.iter().any(|d| d
            .reasons
            .contains(&"within the RPO (keep_within floor)".to_string())));
        // Counting from now: a month later with no new snapshot, only keep_last survives.
        let d = apply(&policy, &snaps, now + 30 * DAY, 0, &fixed_offset(0));
        assert_eq!(kept(&d), [last]);
    }

    #[test]
    fn hourly_rules_and_zones_bucket_in_local_time() {
        // Snapshots every 20 minutes for 3 hours.
        let snaps: Vec<Candidate> = (0..9)
            .map(|i| Candidate {
                id: id(i),
                time: START + i as i64 * 1200,
                committed_ns: 0,
                protected: Vec::new(),
            })
            .collect();
        let policy = Policy {
            keep_hourly: Some(2),
            ..Policy::default()
        };
        let d = apply(&policy, &snaps, START + 4 * 3600, 0, &fixed_offset(0));
        assert_eq!(kept(&d), [START + 5 * 1200, START + 8 * 1200]);
        // Daily around midnight: in UTC 23:50 and 00:10 are two days, at +01:00 one.
        let late = 1_735_689_000; // 2024-12-31T23:50Z
        let snaps = vec![
            Candidate {
                id: id(1),
                time: late,
                committed_ns: 0,
                protected: vec![],
            },
            Candidate {
                id: id(2),
                time: late + 1200,
                committed_ns: 0,
                protected: vec![],
            },
        ];
        let policy = Policy {
            keep_daily: Some(5),
            ..Policy::default()
        };
        assert_eq!(
            kept(&apply(&policy, &snaps, late + DAY, 0, &fixed_offset(0))).len(),
            2
        );
        assert_eq!(
            kept(&apply(&policy, &snaps, late + DAY, 0, &fixed_offset(3600))).len(),
            1
        );
    }

    #[test]
    fn protected_snapshots_survive_and_an_empty_policy_keeps_everything() {
        let mut snaps = daily_year();
        snaps[10].protected.push("used by restore test rt-1".into());
        let policy = Policy {
            keep_last: Some(1),
            ..Policy::default()
        };
        let d = apply(&policy, &snaps, START + 400 * DAY, 0, &fixed_offset(0));
        assert_eq!(kept(&d), [START + 10 * DAY, START + 364 * DAY]);
        let d = apply(
            &Policy::default(),
            &snaps,
            START + 400 * DAY,
            0,
            &fixed_offset(0),
        );
        assert!(d.iter().all(|d| d.keep));
    }

    #[test]
    fn the_runaway_guard_refuses_floods_and_future_dates() {
        let now = START + 30 * DAY;
        let daily: Vec<i64> = (0..30).map(|i| START + i * DAY).collect();
        assert_eq!(runaway(&daily, now, 7 * DAY, 17, 3600), None);
        let mut flood = daily.clone();
        flood.extend((0..40).map(|i| now - 3600 - i * 60));
        let why = runaway(&flood, now, 7 * DAY, 17, 3600).expect("refused");
        assert!(why.contains("46 snapshots"), "{why}");
        let mut future = daily;
        future.push(now + 10 * DAY);
        assert!(runaway(&future, now, 7 * DAY, 17, 3600)
            .expect("refused")
            .contains("future"));
    }
}
