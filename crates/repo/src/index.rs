//! The index: chunk id → (pack, offset, length). A cache of the pack tables that lets a
//! backup host deduplicate without decrypting packs and a restore find a chunk's pack.
//!
//! Index files (`index/<id>`) are sealed with the index key derived from the writer key.
//! Plaintext (zstd-compressed) layout, little-endian:
//!
//! ```text
//! "LBIDX001" | pack count u32 | per pack: pack id [32] | entry count u32 |
//!   per entry: chunk id [32] | kind u8 | compression u8 | offset u32 | length u32 | raw length u32
//! ```
//!
//! An index file only ever names packs that were completely stored in that region before it
//! was written (the write order), so loading any subset of index files is safe.

use std::collections::HashMap;

use crate::error::{RepoError, Result};
use crate::keys::{open, seal};
use crate::pack::{BlobKind, Compression, PackEntry};
use crate::Id;

const INDEX_MAGIC: &[u8; 8] = b"LBIDX001";
const ENTRY_LEN: usize = 46;

/// Where one chunk lives.
#[derive(Debug, Clone, Copy)]
pub struct Location {
    pub pack: u32,
    pub entry: PackEntry,
}

/// The in-memory index of one or more regions. Packs carry a bitmask of the regions whose
/// index files name them, so a backup only deduplicates against chunks present everywhere
/// it writes.
#[derive(Debug, Default)]
pub struct Index {
    packs: Vec<Id>,
    pack_regions: Vec<u64>,
    pack_pos: HashMap<Id, u32>,
    chunks: HashMap<Id, Location>,
}

impl Index {
    pub fn new() -> Index {
        Index::default()
    }

    /// Record that `pack` holding `entries` is present in `region` (bit index).
    pub fn add_pack(&mut self, pack: Id, entries: &[PackEntry], region: usize) {
        let pos = match self.pack_pos.get(&pack) {
            Some(&p) => p,
            None => {
                let p = self.packs.len() as u32;
                self.packs.push(pack);
                self.pack_regions.push(0);
                self.pack_pos.insert(pack, p);
                p
            }
        };
        self.pack_regions[pos as usize] |= 1 << region;
        for e in entries {
            self.chunks.entry(e.id).or_insert(Location {
                pack: pos,
                entry: *e,
            });
        }
    }

    pub fn get(&self, id: &Id) -> Option<(Id, PackEntry)> {
        self.chunks
            .get(id)
            .map(|l| (self.packs[l.pack as usize], l.entry))
    }

    /// Is the chunk stored in every region of `mask`?
    pub fn has_in_all(&self, id: &Id, mask: u64) -> bool {
        self.chunks
            .get(id)
            .is_some_and(|l| self.pack_regions[l.pack as usize] & mask == mask)
    }

    pub fn pack_regions(&self, pack: &Id) -> u64 {
        self.pack_pos
            .get(pack)
            .map_or(0, |&p| self.pack_regions[p as usize])
    }

    pub fn packs(&self) -> impl Iterator<Item = (&Id, u64)> {
        self.packs.iter().zip(self.pack_regions.iter().copied())
    }

    pub fn chunk_count(&self) -> usize {
        self.chunks.len()
    }

    pub fn pack_count(&self) -> usize {
        self.packs.len()
    }
}

/// Serialize and seal an index file naming `packs`.
pub fn encode(index_key: &[u8; 32], packs: &[(Id, Vec<PackEntry>)]) -> Result<Vec<u8>> {
    let n: usize = packs.iter().map(|(_, e)| e.len()).sum();
    let mut buf = Vec::with_capacity(12 + packs.len() * 36 + n * ENTRY_LEN);
    buf.extend_from_slice(INDEX_MAGIC);
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

/// Open and parse an index file.
pub fn decode(
    index_key: &[u8; 32],
    sealed: &[u8],
    what: &str,
) -> Result<Vec<(Id, Vec<PackEntry>)>> {
    let z = open(index_key, sealed, what)?;
    let bad = |m: &str| RepoError::Corrupt(format!("{what}: {m}"));
    let buf = zstd::stream::decode_all(&z[..]).map_err(|e| bad(&format!("zstd: {e}")))?;
    let mut r = Reader { buf: &buf, pos: 0 };
    if r.take(8).ok_or_else(|| bad("truncated"))? != INDEX_MAGIC {
        return Err(bad("not an index file"));
    }
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
    Ok(out)
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
    fn u32(&mut self) -> Option<u32> {
        self.take(4)
            .map(|b| u32::from_le_bytes(b.try_into().expect("4 bytes")))
    }
    fn id(&mut self) -> Option<Id> {
        self.take(32).map(|b| Id(b.try_into().expect("32 bytes")))
    }
}
