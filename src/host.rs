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

/// The URL without a password, for messages. Text that does not parse as a URL is shown
/// only up to its scheme when it could hold a password (`…@…`), so nothing secret leaks.
pub fn redact_url(text: &str) -> String {
    match url::Url::parse(text) {
        Ok(mut url) if url.password().is_some() => {
            // Fails only for URLs that cannot have a password, which this one has.
            let _ = url.set_password(None);
            url.to_string()
        }
        Ok(_) => text.to_string(),
        Err(_) if text.contains('@') => match text.split_once("://") {
            Some((scheme, _)) => format!("{scheme}://<unparsable URL>"),
            None => "<unparsable URL>".to_string(),
        },
        Err(_) => text.to_string(),
    }
}

/// True when the URL carries a password: in its user info, or as a `password=` parameter
/// (libpq reads both).
pub fn url_has_password(url: &url::Url) -> bool {
    url.password().is_some() || url.query_pairs().any(|(k, _)| k == "password")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redacted_urls_keep_everything_but_the_password() {
        assert_eq!(
            redact_url("postgres://app:s3cret@db.example:5432/app?sslmode=disable"),
            "postgres://app@db.example:5432/app?sslmode=disable"
        );
        assert_eq!(
            redact_url("postgres://app@db.example/app"),
            "postgres://app@db.example/app"
        );
        assert_eq!(
            redact_url("sqlite:///var/lib/lifeboat/catalog.db?mode=rwc"),
            "sqlite:///var/lib/lifeboat/catalog.db?mode=rwc"
        );
        for with in [
            "postgres://app:x@h/db",
            "postgres://app@h/db?sslmode=require&password=x",
        ] {
            assert!(url_has_password(&url::Url::parse(with).unwrap()), "{with}");
        }
        assert!(!url_has_password(
            &url::Url::parse("postgres://app@h/db?passfile=/p").unwrap()
        ));
        let odd = redact_url("postgres://app:s3cret@[not-a-host/app");
        assert!(!odd.contains("s3cret"), "{odd}");
    }

    #[test]
    fn ids_are_unique_and_sort_by_creation() {
        let a = new_id();
        let b = new_id();
        assert_eq!(a.len(), 32);
        assert_ne!(a, b);
        assert!(a[..16] <= b[..16]);
    }
}
