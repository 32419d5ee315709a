//! The bottom layer: what every other module may ask of the host it runs on — its name, the
//! clock (now as epoch seconds, from `lifeboat_repo::clock`), fresh sortable ids, and URLs
//! as messages may show them (password removed). Imports nothing from this crate.

pub use lifeboat_repo::clock::{now_nanos, now_secs};

/// This host's name, for manifests, run rows, audit events and lease holders.
pub fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .or_else(|_| std::fs::read_to_string("/etc/hostname"))
        .map(|s| s.trim().to_string())
        .ok()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "unknown".into())
}

/// A new id: 32 hex digits, the creation time in nanoseconds then 64 random bits, so ids
/// sort by creation time (runs started within the same second keep their order).
pub fn new_id() -> String {
    let nanos = now_nanos() as u64;
    format!("{nanos:016x}{}", hex::encode(rand::random::<[u8; 8]>()))
}

/// The URL without a password, for messages.
pub fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_string();
    };
    let authority_end = rest.find(['/', '?']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(authority_end);
    match authority.rsplit_once('@') {
        Some((userinfo, host)) => {
            let user = userinfo.split(':').next().unwrap_or_default();
            format!("{scheme}://{user}@{host}{tail}")
        }
        None => url.to_string(),
    }
}
