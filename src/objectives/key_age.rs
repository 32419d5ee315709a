//! The yearly key-rotation objective: how old the repository's current recipient epoch is
//! (`RepoConfig::current_epoch_created`, read from the plaintext `config` object, so no key
//! is needed), held against a year. Warning from [`WARNING_SECONDS`] (335 days: a month's
//! notice), breach past [`BREACH_SECONDS`] (365 days). `status` shows it and counts it in
//! its exit code, the daemon exports it as `lifeboat_key_age_seconds` and alerts on it, like
//! the plans' objectives in [`crate::objectives`].

use serde::Serialize;

use super::{human, Level};
use crate::config::Config;

/// Key age from which `status` warns (335 days).
pub const WARNING_SECONDS: i64 = 335 * 86_400;
/// Key age past which the rotation objective is breached (365 days).
pub const BREACH_SECONDS: i64 = 365 * 86_400;

/// Longest `status` waits for a region's `config` (a frozen region must not hang it).
const READ_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// The repository's key age and its level.
#[derive(Debug, Clone, Serialize)]
pub struct KeyAge {
    pub level: Level,
    /// The repository's id; `None` when no region could say.
    pub repository: Option<String>,
    pub epoch: Option<u32>,
    /// When the current epoch started (epoch seconds).
    pub created: Option<i64>,
    pub age_seconds: Option<i64>,
    pub warning_seconds: i64,
    pub breach_seconds: i64,
    pub note: Option<String>,
    /// Set when the repository has no details key (a v2 repository made before it), so any
    /// writer reads every plan's manifest details: what to do about it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub details: Option<String>,
}

/// `status`'s note for a repository without a details key.
pub const DETAILS_NOTE: &str = lifeboat_repo::epochs::NO_DETAILS_KEY;

/// The level of a key `age` seconds old. Pure.
pub fn evaluate(repository: &str, epoch: u32, created: i64, now: i64) -> KeyAge {
    let age = (now - created).max(0);
    let (level, note) = if age > BREACH_SECONDS {
        (
            Level::Breach,
            Some(format!(
                "the current recipient epoch {epoch} is {} old, past the yearly rotation: run `lifeboat keys rotate`, then `lifeboat keys rewrap`",
                human(age)
            )),
        )
    } else if age >= WARNING_SECONDS {
        (
            Level::Warning,
            Some(format!(
                "the current recipient epoch {epoch} is {} old: rotate within {} (`lifeboat keys rotate`)",
                human(age),
                human(BREACH_SECONDS - age)
            )),
        )
    } else {
        (Level::Ok, None)
    };
    KeyAge {
        level,
        repository: Some(repository.to_string()),
        epoch: Some(epoch),
        created: Some(created),
        age_seconds: Some(age),
        warning_seconds: WARNING_SECONDS,
        breach_seconds: BREACH_SECONDS,
        note,
        details: None,
    }
}

fn unknown(level: Level, note: String) -> KeyAge {
    KeyAge {
        level,
        repository: None,
        epoch: None,
        created: None,
        age_seconds: None,
        warning_seconds: WARNING_SECONDS,
        breach_seconds: BREACH_SECONDS,
        note: Some(note),
        details: None,
    }
}

/// The key age of `config`'s repository at `now`, from the first region that answers. No
/// repository yet is not a problem (ok, with a note); no region answering is a warning.
pub async fn key_age(config: &Config, now: i64) -> KeyAge {
    let regions = match crate::storage::regions(config) {
        Ok(r) => r,
        Err(e) => return unknown(Level::Warning, format!("key age unknown: {e:#}")),
    };
    let read = tokio::time::timeout(READ_TIMEOUT, lifeboat_repo::epochs::read_config(&regions));
    let Ok(read) = read.await else {
        return unknown(
            Level::Warning,
            format!(
                "key age unknown: no region returned the repository's config within {}",
                human(READ_TIMEOUT.as_secs() as i64)
            ),
        );
    };
    match read {
        Ok(Some(c)) => KeyAge {
            details: (c.version >= 2 && c.details_recipient.is_none())
                .then(|| DETAILS_NOTE.to_string()),
            ..evaluate(&c.id, c.current_epoch(), c.current_epoch_created(), now)
        },
        Ok(None) => unknown(
            Level::Ok,
            "no repository yet (`lifeboat init`): no key to age".into(),
        ),
        Err(e) => unknown(Level::Warning, format!("key age unknown: {e}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn warning_from_335_days_breach_past_365() {
        let now = 1_000_000_000;
        let day = 86_400;
        assert_eq!(evaluate("r", 1, now - 334 * day, now).level, Level::Ok);
        let w = evaluate("r", 2, now - 335 * day, now);
        assert_eq!(w.level, Level::Warning);
        assert!(w.note.unwrap().contains("epoch 2"));
        assert_eq!(evaluate("r", 1, now - 365 * day, now).level, Level::Warning);
        let b = evaluate("r", 1, now - 365 * day - 1, now);
        assert_eq!(b.level, Level::Breach);
        assert!(b.note.unwrap().contains("keys rotate"));
        // An epoch dated in the future (a clock that ran fast at rotation) is age 0.
        assert_eq!(evaluate("r", 1, now + day, now).age_seconds, Some(0));
    }
}
