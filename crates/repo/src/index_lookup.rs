//! The restore's index: chunk id → candidate (pack, offset, lengths), at about 14–16 bytes
//! per chunk instead of the full [`Index`](crate::Index)'s 47 (docs/bench.md "Restore
//! memory"). A restore only reads, and every blob it reads is verified against the full id it
//! wants (keyed BLAKE3, [`crate::pack::check_chunk`]), so it does not need the full id in
//! memory: a key made of the id's first 48 bits is enough to find the few entries that may be
//! it. Backup, prune, verify and replicate keep the exact [`Index`](crate::Index).
//!
//! Layout: the records sorted by their 64-bit key (the id's first 8 bytes, big-endian),
//! bucketed by its top 16 bits (a 65,537-entry table of bucket starts, 256 KiB), each record
//! the next 32 bits of the key, then the blob kind, the compression, the pack number, the
//! offset, the stored length and the raw length, each field as many bits wide as the largest
//! value this repository has (so a record is as wide as the repository needs, rounded up to
//! bytes: 14 bytes for 100 packs of 16 MiB holding blobs under 2 MiB). Nothing is lost: the
//! widths come from the values, not from assumptions about them.
//!
//! Keys are not unique, and that is correct by construction: ids are keyed BLAKE3 (uniform,
//! unforgeable without the repository's chunk key), so two chunks share a 48-bit key only by
//! chance (≈ n² / 2⁴⁹: 0.003 pairs among 1.2 million chunks), and a chunk stored in several
//! packs (the multi-location rule of [`crate::index`]) has one record per pack. Every record
//! under a key is a candidate; [`candidates`](LookupIndex::candidates) returns them all, best
//! first, and the reader tries them until the blob's keyed hash matches the wanted id.
//!
//! Built directly from the index files as they load ([`LookupBuilder`]): 24-byte records
//! appended, sorted once, then re-encoded in place in the same allocation — the load never
//! holds a full [`Index`](crate::Index) and this one at once.

use std::collections::HashMap;

use crate::error::{RepoError, Result};
use crate::pack::{BlobKind, Compression, PackEntry};
use crate::regions::RegionSet;
use crate::Id;

/// Pack numbers below this fit (as in the full index: 8 EiB of 16 MiB packs).
const MAX_PACKS: usize = 1 << 29;
const TREE: u32 = 1 << 31;
const ZSTD: u32 = 1 << 30;
const PACK_MASK: u32 = (1 << 29) - 1;
/// Bits of the key that pick the bucket; the record stores the next [`TAIL_BITS`].
const BUCKET_BITS: u32 = 16;
const TAIL_BITS: u32 = 32;
/// A build record: key (8, big-endian) | pack and flags (4, big-endian) | offset (4, BE) |
/// length (4) | raw length (4).
const REC: usize = 24;

/// The first 8 bytes of an id as a number (big-endian, so numeric order is byte order).
fn key_of(id: &Id) -> u64 {
    u64::from_be_bytes(id.0[..8].try_into().expect("8 bytes"))
}

/// Bits needed for `v`.
fn bits(v: u32) -> u32 {
    32 - v.leading_zeros()
}

/// The field widths of this index's records (bits), in record order after the key tail.
#[derive(Debug, Clone, Copy, Default)]
struct Layout {
    pack: u32,
    offset: u32,
    length: u32,
    raw: u32,
    /// Bytes per record.
    width: usize,
}

impl Layout {
    fn new(pack: u32, offset: u32, length: u32, raw: u32) -> Layout {
        let total = TAIL_BITS + 2 + pack + offset + length + raw;
        Layout {
            pack,
            offset,
            length,
            raw,
            width: total.div_ceil(8) as usize,
        }
    }
}

/// Read `width` (≤ 32) bits at bit `bit` of `buf` (which has 8 readable bytes from there).
fn get_bits(buf: &[u8], bit: u32, width: u32) -> u32 {
    let at = (bit / 8) as usize;
    let word = u64::from_le_bytes(buf[at..at + 8].try_into().expect("8 bytes"));
    ((word >> (bit % 8)) & ((1u64 << width) - 1)) as u32
}

/// OR `v` (fitting `width` ≤ 32 bits) in at bit `bit` of `buf` (zeroed there).
fn put_bits(buf: &mut [u8], bit: u32, width: u32, v: u32) {
    let at = (bit / 8) as usize;
    let mut word = u64::from_le_bytes(buf[at..at + 8].try_into().expect("8 bytes"));
    word |= (u64::from(v) & ((1u64 << width) - 1)) << (bit % 8);
    buf[at..at + 8].copy_from_slice(&word.to_le_bytes());
}

/// One decoded record.
#[derive(Debug, Clone, Copy)]
struct Rec {
    tail: u32,
    /// Pack number with the kind and compression flags.
    pack: u32,
    offset: u32,
    length: u32,
    raw: u32,
}

/// The compact, read-only index a restore plans and reads with (see the module docs).
#[derive(Debug)]
pub struct LookupIndex {
    packs: Vec<Id>,
    pack_regions: Vec<RegionSet>,
    /// Bucket `b` (top [`BUCKET_BITS`] of the key) is records `starts[b]..starts[b + 1]`.
    starts: Vec<u32>,
    /// `len` records of `layout.width` bytes, then 8 bytes of padding.
    data: Vec<u8>,
    layout: Layout,
    len: usize,
}

impl LookupIndex {
    fn rec(&self, i: usize) -> Rec {
        let r = &self.data[i * self.layout.width..];
        let l = &self.layout;
        let mut bit = 0;
        let mut field = |w: u32| {
            let v = get_bits(r, bit, w);
            bit += w;
            v
        };
        let tail = field(TAIL_BITS);
        let tree = field(1);
        let zstd = field(1);
        let pack = field(l.pack);
        Rec {
            tail,
            pack: pack | if tree != 0 { TREE } else { 0 } | if zstd != 0 { ZSTD } else { 0 },
            offset: field(l.offset),
            length: field(l.length),
            raw: field(l.raw),
        }
    }

    /// Every stored location whose key is `id`'s, as (pack, entry naming `id`, regions
    /// holding the pack), best first: the pack held in the most regions, then one held in
    /// `preferred`, then by pack number and offset. All but one may be another chunk (a key
    /// collision): the reader verifies each blob against `id`.
    pub fn candidates(&self, id: &Id, preferred: Option<usize>) -> Vec<(Id, PackEntry, RegionSet)> {
        let key = key_of(id);
        let b = (key >> (64 - BUCKET_BITS)) as usize;
        let tail = (key >> (64 - BUCKET_BITS - TAIL_BITS)) as u32;
        let (lo, hi) = (self.starts[b] as usize, self.starts[b + 1] as usize);
        // First record of the bucket whose tail is not below `tail`.
        let (mut l, mut h) = (lo, hi);
        while l < h {
            let mid = l + (h - l) / 2;
            if self.rec(mid).tail < tail {
                l = mid + 1;
            } else {
                h = mid;
            }
        }
        let mut found: Vec<(usize, PackEntry)> = Vec::new();
        for i in l..hi {
            let r = self.rec(i);
            if r.tail != tail {
                break;
            }
            let entry = PackEntry {
                id: *id,
                kind: if r.pack & TREE != 0 {
                    BlobKind::Tree
                } else {
                    BlobKind::Data
                },
                compression: if r.pack & ZSTD != 0 {
                    Compression::Zstd
                } else {
                    Compression::None
                },
                offset: r.offset,
                length: r.length,
                raw_length: r.raw,
            };
            found.push(((r.pack & PACK_MASK) as usize, entry));
        }
        if found.len() > 1 {
            found.sort_by_key(|(p, e)| {
                let r = self.pack_regions[*p];
                (
                    std::cmp::Reverse(r.len()),
                    !preferred.is_some_and(|x| r.contains(x)),
                    *p,
                    e.offset,
                )
            });
        }
        found
            .into_iter()
            .map(|(p, e)| (self.packs[p], e, self.pack_regions[p]))
            .collect()
    }

    /// Records held (one per chunk and pack, plus any exact duplicates removed).
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn pack_count(&self) -> usize {
        self.packs.len()
    }

    /// Bytes per record.
    pub fn record_bytes(&self) -> usize {
        self.layout.width
    }

    /// Heap bytes held, by capacity: records, bucket table, pack table.
    pub fn heap_bytes(&self) -> usize {
        self.data.capacity()
            + self.starts.capacity() * std::mem::size_of::<u32>()
            + self.packs.capacity() * std::mem::size_of::<Id>()
            + self.pack_regions.capacity() * std::mem::size_of::<RegionSet>()
    }
}

/// Builds a [`LookupIndex`] pack by pack, as index files load.
#[derive(Debug, Default)]
pub struct LookupBuilder {
    packs: Vec<Id>,
    pack_regions: Vec<RegionSet>,
    pack_pos: HashMap<Id, u32>,
    recs: Vec<[u8; REC]>,
}

impl LookupBuilder {
    pub fn new() -> LookupBuilder {
        LookupBuilder::default()
    }

    /// Record that `pack` holding `entries` is present in `region`. A pack already seen
    /// (listed by another region) only gains the region. Fails only past 2^29 packs.
    pub fn add_pack(&mut self, pack: Id, entries: &[PackEntry], region: usize) -> Result<()> {
        if let Some(&p) = self.pack_pos.get(&pack) {
            self.pack_regions[p as usize].insert(region);
            return Ok(());
        }
        if self.packs.len() >= MAX_PACKS {
            return Err(RepoError::Invalid(format!(
                "the index names more than {MAX_PACKS} packs; this lifeboat cannot hold it"
            )));
        }
        let p = self.packs.len() as u32;
        self.packs.push(pack);
        self.pack_regions.push(RegionSet::only(region));
        self.pack_pos.insert(pack, p);
        self.recs.reserve(entries.len());
        for e in entries {
            let mut word = p;
            if e.kind == BlobKind::Tree {
                word |= TREE;
            }
            if e.compression == Compression::Zstd {
                word |= ZSTD;
            }
            let mut r = [0u8; REC];
            r[..8].copy_from_slice(&e.id.0[..8]);
            r[8..12].copy_from_slice(&word.to_be_bytes());
            r[12..16].copy_from_slice(&e.offset.to_be_bytes());
            r[16..20].copy_from_slice(&e.length.to_le_bytes());
            r[20..24].copy_from_slice(&e.raw_length.to_le_bytes());
            self.recs.push(r);
        }
        Ok(())
    }

    /// Sort the records and pack them at their final width, in place.
    pub fn finish(self) -> LookupIndex {
        let LookupBuilder {
            packs,
            pack_regions,
            mut recs,
            ..
        } = self;
        recs.sort_unstable();
        recs.dedup();
        let word = |r: &[u8], at: usize| u32::from_be_bytes(r[at..at + 4].try_into().expect("4"));
        let le = |r: &[u8], at: usize| u32::from_le_bytes(r[at..at + 4].try_into().expect("4"));
        let (mut mp, mut mo, mut ml, mut mr) = (0u32, 0u32, 0u32, 0u32);
        for r in &recs {
            mp = mp.max(word(r, 8) & PACK_MASK);
            mo = mo.max(word(r, 12));
            ml = ml.max(le(r, 16));
            mr = mr.max(le(r, 20));
        }
        let layout = Layout::new(bits(mp), bits(mo), bits(ml), bits(mr));
        let len = recs.len();
        let mut starts = vec![0u32; (1 << BUCKET_BITS) + 1];
        // The same allocation, re-encoded front to back: record i's `width` (< 24) bytes go
        // where no record not yet read lies.
        let mut data = recs.into_flattened();
        for i in 0..len {
            let r: [u8; REC] = data[i * REC..(i + 1) * REC].try_into().expect("24 bytes");
            let key = u64::from_be_bytes(r[..8].try_into().expect("8 bytes"));
            starts[(key >> (64 - BUCKET_BITS)) as usize + 1] += 1;
            let pack = word(&r, 8);
            let mut out = [0u8; 32];
            let mut bit = 0;
            let mut field = |w: u32, v: u32| {
                put_bits(&mut out, bit, w, v);
                bit += w;
            };
            field(TAIL_BITS, (key >> (64 - BUCKET_BITS - TAIL_BITS)) as u32);
            field(1, u32::from(pack & TREE != 0));
            field(1, u32::from(pack & ZSTD != 0));
            field(layout.pack, pack & PACK_MASK);
            field(layout.offset, word(&r, 12));
            field(layout.length, le(&r, 16));
            field(layout.raw, le(&r, 20));
            data[i * layout.width..(i + 1) * layout.width].copy_from_slice(&out[..layout.width]);
        }
        for b in 1..starts.len() {
            starts[b] += starts[b - 1];
        }
        data.truncate(len * layout.width);
        data.extend_from_slice(&[0u8; 8]);
        data.shrink_to_fit();
        LookupIndex {
            packs,
            pack_regions,
            starts,
            data,
            layout,
            len,
        }
    }
}

#[cfg(test)]
#[path = "index_lookup_tests.rs"]
mod tests;
