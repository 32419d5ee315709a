//! The repository engine's error type: a small enum for the cases callers branch on.

use crate::backend::BackendError;

#[derive(Debug, thiserror::Error)]
pub enum RepoError {
    #[error(transparent)]
    Backend(#[from] BackendError),
    /// An object failed authentication, a hash check or parsing.
    #[error("corrupt: {0}")]
    Corrupt(String),
    /// The key material does not fit this repository.
    #[error("wrong key: {0}")]
    WrongKey(String),
    /// Key material is missing or malformed.
    #[error("{0}")]
    Key(String),
    /// The operation needs the age identity, which this host does not hold.
    #[error("{0} needs the age identity, which this host does not have: set keys.identity_file (or keys.identity_env) in lifeboat.toml on a host allowed to decrypt; backup hosts deliberately hold only recipients and the writer key")]
    NeedIdentity(String),
    /// An object this host must not trust: signed by an unknown or revoked writer, unsigned
    /// where writers are pinned, or a `config`/`keys/` object that does not match the pins.
    /// The message names the object and the region.
    #[error("untrusted: {0}")]
    Untrusted(String),
    /// No region holding an object answered (outage, timeout, refused request): not damage.
    #[error("unavailable: {0}")]
    Unavailable(String),
    #[error("repository: {0}")]
    Invalid(String),
    #[error("cancelled")]
    Cancelled,
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

pub type Result<T, E = RepoError> = std::result::Result<T, E>;
