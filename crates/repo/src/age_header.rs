//! age v1 headers, read and written here so `keys rewrap` can give an object new recipient
//! stanzas while its payload stays byte for byte (and so its id, see [`crate::id`]).
//!
//! The age crate has no API to replace a header, so this module implements the header part
//! of the age v1 format (c2sp.org/age) itself, and only that: a header is the line
//! `age-encryption.org/v1`, one or more stanzas (`-> TAG ARG…` followed by the body in
//! canonical unpadded base64, wrapped at 64 columns, the last line shorter than 64, possibly
//! empty), and the line `--- MAC`, MAC being the unpadded base64 of HMAC-SHA-256 under
//! `HKDF-SHA-256(ikm = file key, salt = empty, info = "header")` over the header up to and
//! including `---`. The file key is unwrapped and wrapped by the age crate's own
//! `Identity::unwrap_stanza` and `Recipient::wrap_file_key`; the payload (nonce and STREAM
//! chunks) is never touched, since its key derives from the file key and its own nonce.

use age::secrecy::ExposeSecret;
use age_core::format::{FileKey, Stanza};
use base64::prelude::{Engine, BASE64_STANDARD_NO_PAD};
use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::error::{RepoError, Result};

const MAGIC: &[u8] = b"age-encryption.org/v1\n";
const COLUMNS: usize = 64;
/// Length of the base64 MAC on the `---` line.
const MAC_CHARS: usize = 43;

/// A parsed header.
pub struct Header {
    pub stanzas: Vec<Stanza>,
    /// Header bytes, through the newline after the MAC: the payload starts here.
    pub len: usize,
    mac: [u8; 32],
    /// Bytes the MAC covers (through `---`).
    mac_input: usize,
}

/// Why bytes are not a header.
#[derive(Debug)]
pub enum HeaderError {
    /// The bytes end before the header does: read more of the object.
    Truncated,
    Invalid(String),
}

fn line_at(bytes: &[u8], at: usize) -> std::result::Result<(&[u8], usize), HeaderError> {
    let rest = &bytes[at..];
    let end = rest
        .iter()
        .position(|&b| b == b'\n')
        .ok_or(HeaderError::Truncated)?;
    Ok((&rest[..end], at + end + 1))
}

fn invalid(what: &str) -> HeaderError {
    HeaderError::Invalid(format!("age header: {what}"))
}

fn decode(b64: &[u8], what: &str) -> std::result::Result<Vec<u8>, HeaderError> {
    // base64's decoder rejects non-canonical trailing bits and padding, as the spec asks.
    BASE64_STANDARD_NO_PAD
        .decode(b64)
        .map_err(|_| invalid(&format!("{what} is not canonical unpadded base64")))
}

/// Parse the header at the start of `bytes` (a whole object, or a prefix of one).
pub fn parse(bytes: &[u8]) -> std::result::Result<Header, HeaderError> {
    if bytes.len() < MAGIC.len() {
        return Err(if MAGIC.starts_with(bytes) {
            HeaderError::Truncated
        } else {
            invalid("no age-encryption.org/v1 line")
        });
    }
    if !bytes.starts_with(MAGIC) {
        return Err(invalid("no age-encryption.org/v1 line"));
    }
    let mut at = MAGIC.len();
    let mut stanzas = Vec::new();
    loop {
        let start = at;
        let (line, next) = line_at(bytes, at)?;
        if let Some(rest) = line.strip_prefix(b"--- ") {
            if stanzas.is_empty() {
                return Err(invalid("no recipient stanza"));
            }
            if rest.len() != MAC_CHARS {
                return Err(invalid("MAC line of the wrong length"));
            }
            let mac: [u8; 32] = decode(rest, "the MAC")?
                .try_into()
                .map_err(|_| invalid("MAC of the wrong length"))?;
            return Ok(Header {
                stanzas,
                len: next,
                mac,
                mac_input: start + 3,
            });
        }
        let args = line
            .strip_prefix(b"-> ")
            .ok_or_else(|| invalid("a line that is neither a stanza nor the MAC"))?;
        let args = std::str::from_utf8(args).map_err(|_| invalid("stanza line not ASCII"))?;
        let mut parts = args.split(' ');
        let tag = parts.next().unwrap_or_default();
        let args: Vec<String> = parts.map(str::to_string).collect();
        if tag.is_empty() || args.iter().any(|a| a.is_empty()) || !args_ok(tag, &args) {
            return Err(invalid("stanza with an empty or non-printable argument"));
        }
        at = next;
        let mut body = Vec::new();
        loop {
            let (line, next) = line_at(bytes, at)?;
            if line.len() > COLUMNS {
                return Err(invalid("stanza body line longer than 64 columns"));
            }
            body.extend_from_slice(line);
            at = next;
            if line.len() < COLUMNS {
                break;
            }
        }
        stanzas.push(Stanza {
            tag: tag.to_string(),
            args,
            body: decode(&body, "a stanza body")?,
        });
    }
}

fn args_ok(tag: &str, args: &[String]) -> bool {
    std::iter::once(tag)
        .chain(args.iter().map(String::as_str))
        .all(|a| a.bytes().all(|b| (0x21..=0x7e).contains(&b)))
}

fn header_key(file_key: &FileKey) -> [u8; 32] {
    let mut key = [0u8; 32];
    let salt: &[u8] = &[];
    hkdf::Hkdf::<Sha256>::new(Some(salt), file_key.expose_secret())
        .expand(b"header", &mut key)
        .expect("32 bytes is a valid HKDF-SHA-256 output length");
    key
}

fn mac_of(file_key: &FileKey, covered: &[u8]) -> Hmac<Sha256> {
    let mut mac =
        <Hmac<Sha256> as Mac>::new_from_slice(&header_key(file_key)).expect("HMAC takes any key");
    mac.update(covered);
    mac
}

impl Header {
    /// Check the header's MAC under `file_key`: the key was the file's, the header intact.
    pub fn verify_mac(&self, bytes: &[u8], file_key: &FileKey) -> bool {
        mac_of(file_key, &bytes[..self.mac_input])
            .verify_slice(&self.mac)
            .is_ok()
    }
}

/// Unwrap the file key with `identity`: `None` when no stanza is for it.
pub fn unwrap_file_key(
    stanzas: &[Stanza],
    identity: &age::x25519::Identity,
) -> Option<Result<FileKey>> {
    use age::Identity as _;
    stanzas.iter().find_map(|s| {
        identity.unwrap_stanza(s).map(|r| {
            r.map_err(|e| RepoError::Corrupt(format!("a recipient stanza does not unwrap: {e}")))
        })
    })
}

/// A header wrapping `file_key` to `recipients` (one fresh stanza each), MAC included.
pub fn write(file_key: &FileKey, recipients: &[&age::x25519::Recipient]) -> Result<Vec<u8>> {
    use age::Recipient as _;
    let mut out = MAGIC.to_vec();
    for r in recipients {
        let (stanzas, _labels) = r
            .wrap_file_key(file_key)
            .map_err(|e| RepoError::Key(format!("wrapping the file key to {r}: {e}")))?;
        for s in stanzas {
            out.extend_from_slice(b"-> ");
            out.extend_from_slice(s.tag.as_bytes());
            for a in &s.args {
                out.push(b' ');
                out.extend_from_slice(a.as_bytes());
            }
            out.push(b'\n');
            let body = BASE64_STANDARD_NO_PAD.encode(&s.body);
            let mut lines = body.as_bytes().chunks(COLUMNS).peekable();
            let mut last = 0;
            while let Some(l) = lines.next() {
                out.extend_from_slice(l);
                out.push(b'\n');
                last = l.len();
                if lines.peek().is_none() && last == COLUMNS {
                    // The last body line must be shorter than 64 columns: an empty one.
                    out.push(b'\n');
                }
            }
            if body.is_empty() && last == 0 {
                out.push(b'\n');
            }
        }
    }
    out.extend_from_slice(b"---");
    let mac = mac_of(file_key, &out).finalize().into_bytes();
    out.push(b' ');
    out.extend_from_slice(BASE64_STANDARD_NO_PAD.encode(mac).as_bytes());
    out.push(b'\n');
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::{age_decrypt, age_encrypt};

    #[test]
    fn a_rewrapped_header_opens_the_same_payload_for_the_new_recipient_only() {
        let old = age::x25519::Identity::generate();
        let new = age::x25519::Identity::generate();
        let plain = vec![7u8; 100_000];
        let file = age_encrypt(&[&old.to_public()], &plain).unwrap();
        let h = parse(&file).unwrap();
        // The age crate adds a random "grease" stanza beside the recipient's.
        assert_eq!(h.stanzas.iter().filter(|s| s.tag == "X25519").count(), 1);
        assert!(unwrap_file_key(&h.stanzas, &new).is_none());
        let key = unwrap_file_key(&h.stanzas, &old).unwrap().unwrap();
        assert!(h.verify_mac(&file, &key));
        let mut tampered = file.clone();
        tampered[30] ^= 1;
        if let Ok(t) = parse(&tampered) {
            assert!(!t.verify_mac(&tampered, &key), "the MAC covers the stanzas");
        }

        let other = age::x25519::Identity::generate();
        let mut out = write(&key, &[&new.to_public(), &other.to_public()]).unwrap();
        out.extend_from_slice(&file[h.len..]);
        assert_eq!(
            age_decrypt(std::slice::from_ref(&new), &out, "t").unwrap(),
            plain
        );
        assert_eq!(age_decrypt(&[other], &out, "t").unwrap(), plain);
        assert!(age_decrypt(&[old], &out, "t").is_err());
        let h2 = parse(&out).unwrap();
        assert_eq!(&out[h2.len..], &file[h.len..], "payload unchanged");
        assert!(h2.verify_mac(&out, &key));
    }

    #[test]
    fn truncated_and_malformed_headers_are_told_apart() {
        let id = age::x25519::Identity::generate();
        let file = age_encrypt(&[&id.to_public()], b"x").unwrap();
        let h = parse(&file).unwrap();
        for cut in [0, 5, 30, h.len - 1] {
            assert!(
                matches!(parse(&file[..cut]), Err(HeaderError::Truncated)),
                "cut at {cut}"
            );
        }
        for bad in [
            &b"age-encryption.org/v2\n"[..],
            &b"age-encryption.org/v1\n--- AAAA\n"[..],
            &b"age-encryption.org/v1\nhello\n"[..],
            &b"age-encryption.org/v1\n-> X25519  x\nAAAA\n--- x\n"[..],
        ] {
            assert!(
                matches!(parse(bad), Err(HeaderError::Invalid(_))),
                "{bad:?}"
            );
        }
    }
}
