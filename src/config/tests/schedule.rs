//! Plans' `schedule` and `zone`: checked when the config loads, in cron's own terms.

use super::{error_at, minimal, parse};

#[test]
fn schedules_and_zones_are_checked_at_load_in_cron_terms() {
    let plan = |schedule: &str, zone: &str| {
        format!(
            "{}\n[[plans]]\nname = \"etc\"\nschedule = \"{schedule}\"\n{zone}source = {{ kind = \"dir\", path = \"/etc\" }}\n",
            minimal()
        )
    };
    for ok in [
        "0 3 * * *",
        "*/15 0-6,22-23 1 jan-jun mon-fri",
        "0 0 * * 7",
        "0 0 3 * * * 2030",
    ] {
        parse(&plan(ok, "")).unwrap_or_else(|e| panic!("{ok}: {e}"));
    }
    let message = error_at(&plan("61 3 * * *", ""), 12, "plans[0].schedule");
    assert!(
        message.contains("minute 61 is out of range (0-59)"),
        "{message}"
    );
    assert!(
        !message.contains("less than"),
        "the cron crate's words: {message}"
    );
    let message = error_at(&plan("0 3 32 * *", ""), 12, "plans[0].schedule");
    assert!(
        message.contains("day-of-month 32 is out of range (1-31)"),
        "{message}"
    );
    let message = error_at(&plan("0 3 * * fry", ""), 12, "plans[0].schedule");
    assert!(message.contains("not a number or a name"), "{message}");
    let message = error_at(&plan("0 9-3 * * *", ""), 12, "plans[0].schedule");
    assert!(message.contains("runs backwards"), "{message}");
    let message = error_at(&plan("*/0 3 * * *", ""), 12, "plans[0].schedule");
    assert!(message.contains("step"), "{message}");
    let message = error_at(&plan("0 3 * *", ""), 12, "plans[0].schedule");
    assert!(message.contains("4 fields, expected 5"), "{message}");
    let message = error_at(
        &plan("0 3 * * *", "zone = \"Europe/Pariss\"\n"),
        13,
        "plans[0].zone",
    );
    assert!(
        message.contains("unknown time zone \"Europe/Pariss\""),
        "{message}"
    );
}
