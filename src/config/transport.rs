//! Which URLs lifeboat may talk to without TLS: S3 endpoints and webhooks must be
//! `https://`, except a loopback address (a test server on 127.0.0.1, `::1`, `localhost`)
//! or where the operator set `allow_insecure = true` for that one endpoint. Plain HTTP
//! elsewhere would send SigV4-signed requests, object names and alert tokens over the wire
//! in the clear. TLS itself is rustls (aws-lc provider), TLS 1.3 and 1.2 only.

/// Whether `url` names a loopback host.
pub fn is_loopback(url: &url::Url) -> bool {
    match url.host() {
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        Some(url::Host::Domain(d)) => d.eq_ignore_ascii_case("localhost"),
        None => false,
    }
}

/// Why `url` is refused, or `None` when it may be used: `https://`, or `http://` to a
/// loopback host, or `http://` with `allow_insecure`. `what` names the setting.
pub fn plain_http_refusal(url: &str, allow_insecure: bool, what: &str) -> Option<String> {
    let parsed = url::Url::parse(url).ok()?; // malformed URLs are refused by their parser
    if parsed.scheme() != "http" || allow_insecure || is_loopback(&parsed) {
        return None;
    }
    Some(format!(
        "plain http:// to {} sends {what} unencrypted: use https://, or set `allow_insecure = true` \
         on this {what} to accept that (loopback addresses are always allowed)",
        parsed.host_str().unwrap_or("?")
    ))
}

#[cfg(test)]
mod tests {
    use super::plain_http_refusal;

    #[test]
    fn plain_http_only_to_loopback_or_when_allowed() {
        for ok in [
            "https://s3.example.com",
            "http://127.0.0.1:9000",
            "http://127.5.0.1",
            "http://[::1]:9000/x",
            "http://localhost:9000",
        ] {
            assert_eq!(plain_http_refusal(ok, false, "endpoint"), None, "{ok}");
        }
        let refused = plain_http_refusal("http://minio.internal:9000", false, "endpoint").unwrap();
        assert!(refused.contains("minio.internal"), "{refused}");
        assert!(refused.contains("allow_insecure = true"), "{refused}");
        assert!(plain_http_refusal("http://10.0.0.5", false, "webhook").is_some());
        assert!(plain_http_refusal("http://127.0.0.1.evil.com", false, "webhook").is_some());
        assert_eq!(plain_http_refusal("http://10.0.0.5", true, "webhook"), None);
    }
}
