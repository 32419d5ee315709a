//! The index: chunk id → (pack, offset, length). A cache of the pack tables that lets a
//! backup host deduplicate without decrypting packs and a restore find a chunk's pack.
//!
//! Index files (`index/<id>`) are sealed with the index key derived from the writer key.
//! Plaintext (zstd-compressed) layout, little-endian:
//!
//! ```text
//! "LBIDX002" | plan name length u16 | plan name (UTF-8) | pack count u32 |
//!   per pack: pack id [32] | entry count u32 |
//!   per entry: chunk id [32] | kind u8 | compression u8 | offset u32 | length u32 | raw length u32
//! ```
//!
//! (`LBIDX001` files, written before index files named their plan, have no plan fields.)
//!
//! An index file only ever names packs that were completely stored in that region before it
//! was written (the write order), so loading any subset of index files is safe.
//!
//! A chunk can live in more than one pack: a degraded backup stores it in a pack that only the
//! regions then reachable hold, and a later backup stores it again, only in the regions that
//! lacked it. The in-memory index keeps every location: the first one inline (the common case
//! costs what a single location does) and any further ones in a small side table. A chunk is
//! stored in a region when any of its locations is; readers take the location that covers
//! the most regions (the preferred region first) and fall back to the others. That
//! structure is [`crate::index_mem`]; this module is the file codec.

use crate::error::{RepoError, Result};
pub use crate::index_mem::{Index, Location};
use crate::keys::{open, seal};
use crate::pack::{BlobKind, Compression, PackEntry};
use crate::Id;

const INDEX_MAGIC: &[u8; 8] = b"LBIDX002";
/// Index files written before they named their plan.
const LEGACY_MAGIC: &[u8; 8] = b"LBIDX001";
const ENTRY_LEN: usize = 46;

/// One decoded index file: the plan whose backup wrote it (`None` for files written before
/// index files named their plan) and the packs it names.
#[derive(Debug, Clone)]
pub struct IndexFile {
    pub plan: Option<String>,
    pub packs: Vec<(Id, Vec<PackEntry>)>,
}

/// Serialize and seal an index file naming `packs`, written by a backup of `plan`.
pub fn encode(index_key: &[u8; 32], plan: &str, packs: &[(Id, Vec<PackEntry>)]) -> Result<Vec<u8>> {
    let n: usize = packs.iter().map(|(_, e)| e.len()).sum();
    let plan = plan.as_bytes();
    let plan_len = u16::try_from(plan.len())
        .map_err(|_| RepoError::Invalid("plan name longer than 65535 bytes".into()))?;
    let mut buf = Vec::with_capacity(14 + plan.len() + packs.len() * 36 + n * ENTRY_LEN);
    buf.extend_from_slice(INDEX_MAGIC);
    buf.extend_from_slice(&plan_len.to_le_bytes());
    buf.extend_from_slice(plan);
    buf.extend_from_slice(&(packs.len() as u32).to_le_bytes());
    for (id, entries) in packs {
        buf.extend_from_slice(&id.0);
        buf.extend_from_slice(&(entries.len() as u32).to_le_bytes());
        for e in entries {
            buf.extend_from_slice(&e.id.0);
            buf.push(e.kind as u8);
            buf.push(e.compression as u8);
            buf.extend_from_slice(&e.offset.to_le_bytes());
            buf.extend_from_slice(&e.length.to_le_bytes());
            buf.extend_from_slice(&e.raw_length.to_le_bytes());
        }
    }
    let z = zstd::bulk::compress(&buf, 3)?;
    seal(index_key, &z)
}

/// Check a stored index file `name` against the id in its name, then open and parse it: the
/// one way every reader (open, verify, replicate) loads an index file.
pub fn open_file(index_key: &[u8; 32], name: &str, sealed: &[u8]) -> Result<IndexFile> {
    let id = Id::from_object_name(name)?;
    crate::id::check_stored_id(sealed, &id, name)?;
    decode(index_key, sealed, name)
}

/// Open and parse an index file.
pub fn decode(index_key: &[u8; 32], sealed: &[u8], what: &str) -> Result<IndexFile> {
    let z = open(index_key, sealed, what)?;
    let bad = |m: &str| RepoError::Corrupt(format!("{what}: {m}"));
    let buf = zstd::stream::decode_all(&z[..]).map_err(|e| bad(&format!("zstd: {e}")))?;
    let mut r = Reader { buf: &buf, pos: 0 };
    let plan = match r.take(8).ok_or_else(|| bad("truncated"))? {
        m if m == LEGACY_MAGIC => None,
        m if m == INDEX_MAGIC => {
            let len = r.u16().ok_or_else(|| bad("truncated"))?;
            let name = r.take(len as usize).ok_or_else(|| bad("truncated"))?;
            Some(String::from_utf8(name.to_vec()).map_err(|_| bad("plan name is not UTF-8"))?)
        }
        _ => return Err(bad("not an index file")),
    };
    let packs = r.u32().ok_or_else(|| bad("truncated"))?;
    let mut out = Vec::new();
    for _ in 0..packs {
        let id = r.id().ok_or_else(|| bad("truncated"))?;
        let n = r.u32().ok_or_else(|| bad("truncated"))?;
        let mut entries = Vec::with_capacity((n as usize).min(1 << 16));
        for _ in 0..n {
            let e = (|| {
                let id = r.id()?;
                let kind = match r.u8()? {
                    0 => BlobKind::Data,
                    1 => BlobKind::Tree,
                    _ => return None,
                };
                let compression = match r.u8()? {
                    0 => Compression::None,
                    1 => Compression::Zstd,
                    _ => return None,
                };
                Some(PackEntry {
                    id,
                    kind,
                    compression,
                    offset: r.u32()?,
                    length: r.u32()?,
                    raw_length: r.u32()?,
                })
            })()
            .ok_or_else(|| bad("malformed entry"))?;
            entries.push(e);
        }
        out.push((id, entries));
    }
    Ok(IndexFile { plan, packs: out })
}

struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let s = self.buf.get(self.pos..self.pos + n)?;
        self.pos += n;
        Some(s)
    }
    fn u8(&mut self) -> Option<u8> {
        self.take(1).map(|b| b[0])
    }
    fn u16(&mut self) -> Option<u16> {
        self.take(2)
            .map(|b| u16::from_le_bytes(b.try_into().expect("2 bytes")))
    }
    fn u32(&mut self) -> Option<u32> {
        self.take(4)
            .map(|b| u32::from_le_bytes(b.try_into().expect("4 bytes")))
    }
    fn id(&mut self) -> Option<Id> {
        self.take(32).map(|b| Id(b.try_into().expect("32 bytes")))
    }
}
