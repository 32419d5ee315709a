//! How an operation ended, as a number: the exit codes (documented in the README, "Exit
//! codes", relied on by cron and monitoring) and the classification of an error chain into
//! one. Below the catalog, engine and daemon so each can classify an error without asking
//! the CLI; `cli::exit` is this module under the name the CLI uses.

use lifeboat_repo::RepoError;

use crate::config::ConfigError;

pub const OK: u8 = 0;
/// Any failure not listed below.
pub const FAILURE: u8 = 1;
/// Bad command line or invalid lifeboat.toml.
pub const USAGE: u8 = 2;
/// The backup is committed, but not in every region of the plan (degraded).
pub const DEGRADED: u8 = 3;
/// Verification found damaged, missing or mismatching data.
pub const VERIFY_FAILED: u8 = 4;
/// Key problem: the identity is missing on this host, or a key does not fit the repository.
pub const KEYS: u8 = 5;
/// `status`: some objective is at risk (warning), none is breached.
pub const STATUS_WARNING: u8 = 10;
/// `status`: an objective is breached (RPO, RTO projection, or drill overdue).
pub const STATUS_BREACH: u8 = 11;
/// Interrupted (SIGINT/SIGTERM); nothing partial is visible.
pub const INTERRUPTED: u8 = 130;

/// The exit code for an error, from the most specific cause in its chain.
pub fn code_for(e: &anyhow::Error) -> u8 {
    for cause in e.chain() {
        if let Some(c) = cause.downcast_ref::<ConfigError>() {
            return match c {
                ConfigError::Secret { .. } => KEYS,
                _ => USAGE,
            };
        }
        if let Some(r) = cause.downcast_ref::<RepoError>() {
            return match r {
                RepoError::NeedIdentity(_)
                | RepoError::WrongKey(_)
                | RepoError::Key(_)
                | RepoError::Untrusted(_) => KEYS,
                // A failed hash or authentication is damage; an outage or timeout
                // (`Unavailable`, `Backend`) is a failure naming the region and cause.
                RepoError::Corrupt(_) => VERIFY_FAILED,
                RepoError::Unavailable(_) | RepoError::Backend(_) => FAILURE,
                RepoError::Cancelled => INTERRUPTED,
                _ => FAILURE,
            };
        }
    }
    FAILURE
}

#[cfg(test)]
mod tests {
    use super::*;
    use lifeboat_repo::backend::BackendError;

    #[test]
    fn an_outage_is_a_failure_and_damage_is_a_verification_failure() {
        let outage = anyhow::Error::new(RepoError::Unavailable(
            "data/ab/ab…: no region could serve it (us-west-2: get: timeout (transient))".into(),
        ))
        .context("restore snapshot 1234");
        assert_eq!(code_for(&outage), FAILURE);
        let refused = anyhow::Error::new(RepoError::Backend(BackendError::permanent(
            "get",
            "config",
            "AccessDenied",
        )));
        assert_eq!(code_for(&refused), FAILURE);
        let damaged = anyhow::Error::new(RepoError::Corrupt("bad hash".into())).context("restore");
        assert_eq!(code_for(&damaged), VERIFY_FAILED);
    }
}
