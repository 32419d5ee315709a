//! The in-memory index: chunk id → every (pack, offset, length) it is stored at, and the
//! regions holding each pack. What a backup deduplicates against and prune, verify and
//! replicate work from; a restore plans with the compact [`LookupIndex`](crate::index_lookup::LookupIndex)
//! instead, which keys chunks by part of their id.
//!
//! Compact (see `docs/bench.md` for the measured figure): one 47-byte [`Entry`] per chunk in
//! a sorted array, no hash table and no duplicated id. The array is split into 256 buckets
//! by the id's first byte (a 257-entry table of bucket starts), so an entry stores only the
//! other 31 bytes of its id; a lookup is a binary search inside one bucket. The pack field
//! packs the blob kind, the compression and a "has more locations" flag above a 29-bit pack
//! number. Packs (id, regions) live in a table of their own.
//!
//! The multi-location rule (see the [`index`](crate::index) module): a chunk's first
//! location is its entry; further ones (a chunk stored again after a degraded backup) go to
//! a small side table, so the common case costs nothing extra.
//!
//! Inserts ([`Index::add_pack`]) go to a small hashed delta that lookups also consult; when
//! it grows past an eighth of the sorted array it is sorted and merged in place from the
//! back (the array grows by exactly the delta, never doubles). [`Index::compact`] merges
//! what is left once loading is done.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

use crate::error::{RepoError, Result};
use crate::pack::{BlobKind, Compression, PackEntry};
use crate::regions::RegionSet;
use crate::Id;

/// Pack numbers below this fit the pack field (8 EiB of 16 MiB packs).
const MAX_PACKS: usize = 1 << 29;
const PACK_MASK: u32 = (1 << 29) - 1;
const HAS_MORE: u32 = 1 << 29;
const ZSTD: u32 = 1 << 30;
const TREE: u32 = 1 << 31;
/// The delta is merged when it holds at least this many entries and an eighth of the array.
const MIN_MERGE: usize = 1 << 14;

/// Where one chunk lives: a pack (by its number in this index) and the blob's place in it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Location {
    pub pack: u32,
    pub entry: PackEntry,
}

/// One location without its chunk id: pack field (number and flags), offset, lengths.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Slot {
    pack: u32,
    offset: u32,
    length: u32,
    raw: u32,
}

impl Slot {
    fn of(pack: u32, e: &PackEntry) -> Slot {
        let mut word = pack;
        if e.kind == BlobKind::Tree {
            word |= TREE;
        }
        if e.compression == Compression::Zstd {
            word |= ZSTD;
        }
        Slot {
            pack: word,
            offset: e.offset,
            length: e.length,
            raw: e.raw_length,
        }
    }

    fn pack(self) -> u32 {
        self.pack & PACK_MASK
    }

    fn has_more(self) -> bool {
        self.pack & HAS_MORE != 0
    }

    fn entry(self, id: Id) -> PackEntry {
        PackEntry {
            id,
            kind: if self.pack & TREE != 0 {
                BlobKind::Tree
            } else {
                BlobKind::Data
            },
            compression: if self.pack & ZSTD != 0 {
                Compression::Zstd
            } else {
                Compression::None
            },
            offset: self.offset,
            length: self.length,
            raw_length: self.raw,
        }
    }
}

/// One chunk in the sorted array: its id without the first byte (the bucket says it) and its
/// first location. Byte arrays only, so the entry is 47 bytes with no padding.
#[derive(Debug, Clone, Copy)]
struct Entry {
    tail: [u8; 31],
    pack: [u8; 4],
    offset: [u8; 4],
    length: [u8; 4],
    raw: [u8; 4],
}

/// Bytes one chunk costs in the sorted array.
pub const ENTRY_BYTES: usize = std::mem::size_of::<Entry>();

impl Entry {
    const EMPTY: Entry = Entry {
        tail: [0; 31],
        pack: [0; 4],
        offset: [0; 4],
        length: [0; 4],
        raw: [0; 4],
    };

    fn new(id: &Id, s: Slot) -> Entry {
        let mut tail = [0u8; 31];
        tail.copy_from_slice(&id.0[1..]);
        Entry {
            tail,
            pack: s.pack.to_le_bytes(),
            offset: s.offset.to_le_bytes(),
            length: s.length.to_le_bytes(),
            raw: s.raw.to_le_bytes(),
        }
    }

    fn slot(&self) -> Slot {
        Slot {
            pack: u32::from_le_bytes(self.pack),
            offset: u32::from_le_bytes(self.offset),
            length: u32::from_le_bytes(self.length),
            raw: u32::from_le_bytes(self.raw),
        }
    }

    fn id(&self, first: u8) -> Id {
        let mut id = [0u8; 32];
        id[0] = first;
        id[1..].copy_from_slice(&self.tail);
        Id(id)
    }
}

/// Chunk ids are keyed hashes: their first 8 bytes are already a good hash.
#[derive(Default)]
struct IdHasher(u64);

impl Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for chunk in bytes.chunks(8).take(1) {
            let mut b = [0u8; 8];
            b[..chunk.len()].copy_from_slice(chunk);
            self.0 ^= u64::from_le_bytes(b);
        }
    }
    fn write_usize(&mut self, _: usize) {}
}

type IdMap<V> = HashMap<Id, V, BuildHasherDefault<IdHasher>>;

/// Where a chunk's first location is.
#[derive(Debug, Clone, Copy)]
enum Pos {
    Sorted(usize),
    Delta(usize),
}

/// The in-memory index of one or more regions. Packs carry the set of regions whose index
/// files name them, so a backup only deduplicates against chunks present everywhere it
/// writes.
#[derive(Debug)]
pub struct Index {
    packs: Vec<Id>,
    pack_regions: Vec<RegionSet>,
    pack_pos: IdMap<u32>,
    /// Every chunk's first location, sorted by id; bucket `b` (first id byte) is
    /// `sorted[starts[b]..starts[b + 1]]`.
    sorted: Vec<Entry>,
    starts: Box<[u32; 257]>,
    /// Chunks added since the last merge (ids unique, none in `sorted`), and their positions.
    delta: Vec<(Id, Slot)>,
    delta_pos: IdMap<u32>,
    /// Further locations, for the few chunks stored in more than one pack.
    extra: IdMap<Vec<Slot>>,
    /// Regions whose `index/` could not be listed, and why: nothing is known to be stored
    /// there, so a backup must not write to them as if they were empty.
    unlisted: Vec<(usize, String)>,
}

impl Default for Index {
    fn default() -> Self {
        Index {
            packs: Vec::new(),
            pack_regions: Vec::new(),
            pack_pos: IdMap::default(),
            sorted: Vec::new(),
            starts: Box::new([0; 257]),
            delta: Vec::new(),
            delta_pos: IdMap::default(),
            extra: IdMap::default(),
            unlisted: Vec::new(),
        }
    }
}

impl Index {
    pub fn new() -> Index {
        Index::default()
    }

    /// Record that `pack` holding `entries` is present in `region` (a position in the
    /// repository's region list). Fails only past 2^29 packs.
    pub fn add_pack(&mut self, pack: Id, entries: &[PackEntry], region: usize) -> Result<()> {
        let (pos, new_pack) = match self.pack_pos.get(&pack) {
            Some(&p) => (p, false),
            None => {
                if self.packs.len() >= MAX_PACKS {
                    return Err(RepoError::Invalid(format!(
                        "the index names more than {MAX_PACKS} packs; this lifeboat cannot hold it"
                    )));
                }
                let p = self.packs.len() as u32;
                self.packs.push(pack);
                self.pack_regions.push(RegionSet::EMPTY);
                self.pack_pos.insert(pack, p);
                (p, true)
            }
        };
        self.pack_regions[pos as usize].insert(region);
        if !new_pack {
            // Its chunks were recorded when the pack was first seen (in another region).
            return Ok(());
        }
        for e in entries {
            let slot = Slot::of(pos, e);
            match self.find(&e.id) {
                None => {
                    self.delta_pos.insert(e.id, self.delta.len() as u32);
                    self.delta.push((e.id, slot));
                }
                Some((_, first)) if first.pack() == pos => {}
                Some((at, _)) => {
                    let more = self.extra.entry(e.id).or_default();
                    if more.iter().all(|l| l.pack() != pos) {
                        more.push(slot);
                    }
                    self.set_has_more(at);
                }
            }
        }
        if self.delta.len() >= MIN_MERGE.max(self.sorted.len() / 8) {
            self.compact();
        }
        Ok(())
    }

    fn set_has_more(&mut self, at: Pos) {
        match at {
            Pos::Sorted(i) => {
                let mut s = self.sorted[i].slot();
                s.pack |= HAS_MORE;
                self.sorted[i].pack = s.pack.to_le_bytes();
            }
            Pos::Delta(i) => self.delta[i].1.pack |= HAS_MORE,
        }
    }

    fn bucket(&self, first: u8) -> std::ops::Range<usize> {
        self.starts[first as usize] as usize..self.starts[first as usize + 1] as usize
    }

    /// A chunk's first location and where it is kept.
    fn find(&self, id: &Id) -> Option<(Pos, Slot)> {
        let range = self.bucket(id.0[0]);
        let start = range.start;
        if let Ok(i) = self.sorted[range].binary_search_by(|e| e.tail[..].cmp(&id.0[1..])) {
            return Some((Pos::Sorted(start + i), self.sorted[start + i].slot()));
        }
        self.delta_pos
            .get(id)
            .map(|&i| (Pos::Delta(i as usize), self.delta[i as usize].1))
    }

    /// Merge the delta into the sorted array, in place from the back: the array grows by
    /// exactly the delta's length.
    pub fn compact(&mut self) {
        if self.delta.is_empty() {
            return;
        }
        let mut delta = std::mem::take(&mut self.delta);
        self.delta_pos = IdMap::default();
        delta.sort_unstable_by_key(|d| d.0);
        // The new bucket sizes: the old ones plus the delta's.
        let mut sizes = [0u32; 256];
        for (b, size) in sizes.iter_mut().enumerate() {
            *size = self.starts[b + 1] - self.starts[b];
        }
        for (id, _) in &delta {
            sizes[id.0[0] as usize] += 1;
        }
        let old = self.sorted.len();
        let total = old + delta.len();
        self.sorted.reserve_exact(delta.len());
        self.sorted.resize(total, Entry::EMPTY);
        // Walk both from the end; `b` is the bucket of sorted[i - 1] (old starts).
        let (mut i, mut k) = (old, total);
        let mut b: usize = 255;
        for (id, slot) in delta.into_iter().rev() {
            while i > 0 {
                while self.starts[b] as usize > i - 1 {
                    b -= 1;
                }
                let cur = self.sorted[i - 1];
                let bigger = match (b as u8).cmp(&id.0[0]) {
                    std::cmp::Ordering::Equal => cur.tail[..] > id.0[1..],
                    o => o == std::cmp::Ordering::Greater,
                };
                if !bigger {
                    break;
                }
                self.sorted[k - 1] = cur;
                i -= 1;
                k -= 1;
            }
            self.sorted[k - 1] = Entry::new(&id, slot);
            k -= 1;
        }
        debug_assert_eq!(i, k);
        let mut acc = 0u32;
        for (b, size) in sizes.iter().enumerate() {
            self.starts[b] = acc;
            acc += size;
        }
        self.starts[256] = acc;
    }

    /// Every location of a chunk, first seen first.
    fn all(&self, id: &Id) -> Vec<Slot> {
        match self.find(id) {
            None => Vec::new(),
            Some((_, first)) if !first.has_more() => vec![first],
            Some((_, first)) => std::iter::once(first)
                .chain(self.extra.get(id).into_iter().flatten().copied())
                .collect(),
        }
    }

    /// Every location of a chunk as (pack, entry, regions holding the pack), best first: the
    /// pack held in the most regions, then one held in `preferred`.
    pub fn locations(&self, id: &Id, preferred: Option<usize>) -> Vec<(Id, PackEntry, RegionSet)> {
        let mut out: Vec<(Id, PackEntry, RegionSet)> = self
            .all(id)
            .into_iter()
            .map(|s| {
                let p = s.pack() as usize;
                (self.packs[p], s.entry(*id), self.pack_regions[p])
            })
            .collect();
        if out.len() > 1 {
            out.sort_by_key(|(_, _, r)| {
                (
                    std::cmp::Reverse(r.len()),
                    !preferred.is_some_and(|p| r.contains(p)),
                )
            });
        }
        out
    }

    /// The best location of a chunk (see [`locations`](Self::locations)).
    pub fn get(&self, id: &Id) -> Option<(Id, PackEntry)> {
        let (_, first) = self.find(id)?;
        if !first.has_more() {
            return Some((self.packs[first.pack() as usize], first.entry(*id)));
        }
        self.locations(id, None)
            .into_iter()
            .next()
            .map(|(p, e, _)| (p, e))
    }

    /// Is the chunk in the index at all (in any pack, any region)?
    pub fn contains(&self, id: &Id) -> bool {
        self.find(id).is_some()
    }

    /// The regions holding the chunk in any of its packs.
    pub fn regions_of(&self, id: &Id) -> RegionSet {
        match self.find(id) {
            None => RegionSet::EMPTY,
            Some((_, first)) if !first.has_more() => self.pack_regions[first.pack() as usize],
            Some(_) => self.all(id).iter().fold(RegionSet::EMPTY, |s, l| {
                s.union(self.pack_regions[l.pack() as usize])
            }),
        }
    }

    /// Is the chunk stored in every region of `regions` (by one pack or several)?
    pub fn has_in_all(&self, id: &Id, regions: RegionSet) -> bool {
        self.regions_of(id).contains_all(regions)
    }

    pub fn pack_regions(&self, pack: &Id) -> RegionSet {
        self.pack_pos
            .get(pack)
            .map_or(RegionSet::EMPTY, |&p| self.pack_regions[p as usize])
    }

    pub fn packs(&self) -> impl Iterator<Item = (&Id, RegionSet)> {
        self.packs.iter().zip(self.pack_regions.iter().copied())
    }

    /// Every chunk id with its first location, in no particular order.
    pub fn chunks(&self) -> impl Iterator<Item = (Id, Location)> + '_ {
        let sorted = (0..256usize).flat_map(move |b| {
            self.sorted[self.bucket(b as u8)]
                .iter()
                .map(move |e| (e.id(b as u8), e.slot()))
        });
        sorted.chain(self.delta.iter().copied()).map(|(id, s)| {
            (
                id,
                Location {
                    pack: s.pack(),
                    entry: s.entry(id),
                },
            )
        })
    }

    pub fn chunk_count(&self) -> usize {
        self.sorted.len() + self.delta.len()
    }

    pub fn pack_count(&self) -> usize {
        self.packs.len()
    }

    /// Chunks with more than one location.
    pub fn multi_location_count(&self) -> usize {
        self.extra.len()
    }

    /// Record that `region`'s `index/` could not be listed.
    pub fn mark_unlisted(&mut self, region: usize, why: String) {
        self.unlisted.push((region, why));
    }

    /// Regions whose `index/` could not be listed when this index was loaded, and why.
    pub fn unlisted(&self) -> &[(usize, String)] {
        &self.unlisted
    }

    /// Heap bytes this index holds, by capacity (what the allocator gave it): the sorted
    /// array, the delta, the pack table and the side table of further locations. Hash tables
    /// are counted at their bucket arrays (key, value and one control byte per bucket).
    pub fn heap_bytes(&self) -> usize {
        fn map<K, V, S>(m: &HashMap<K, V, S>) -> usize {
            // hashbrown keeps capacity at 7/8 of its buckets.
            (m.capacity() * 8).div_ceil(7) * (std::mem::size_of::<(K, V)>() + 1)
        }
        self.sorted.capacity() * ENTRY_BYTES
            + std::mem::size_of::<[u32; 257]>()
            + self.delta.capacity() * std::mem::size_of::<(Id, Slot)>()
            + map(&self.delta_pos)
            + self.packs.capacity() * std::mem::size_of::<Id>()
            + self.pack_regions.capacity() * std::mem::size_of::<RegionSet>()
            + map(&self.pack_pos)
            + map(&self.extra)
            + self
                .extra
                .values()
                .map(|v| v.capacity() * std::mem::size_of::<Slot>())
                .sum::<usize>()
    }
}

#[cfg(test)]
#[path = "index_mem_tests.rs"]
mod tests;
