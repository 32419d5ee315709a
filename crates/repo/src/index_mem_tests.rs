//! Tests of the in-memory index: the multi-location rule, merges against a plain map, and
//! the bytes per chunk (printed for `docs/bench.md`).

use std::collections::HashMap;

use super::*;

fn id(n: u64) -> Id {
    Id(*blake3::hash(&n.to_le_bytes()).as_bytes())
}

fn entry(n: u64, offset: u32) -> PackEntry {
    PackEntry {
        id: id(n),
        kind: if n % 7 == 0 {
            BlobKind::Tree
        } else {
            BlobKind::Data
        },
        compression: if n % 3 == 0 {
            Compression::None
        } else {
            Compression::Zstd
        },
        offset,
        length: (n as u32) % 5000 + 1,
        raw_length: (n as u32) % 9000 + 1,
    }
}

#[test]
fn every_location_is_kept_and_the_best_comes_first() {
    let mut index = Index::new();
    let (p1, p2) = (id(1_000_001), id(1_000_002));
    index.add_pack(p1, &[entry(1, 0), entry(2, 10)], 0).unwrap();
    // The same pack seen in region 1 adds the region, not a second location.
    index.add_pack(p1, &[entry(1, 0), entry(2, 10)], 1).unwrap();
    // Chunk 1 stored again (healing) in a pack that only region 2 holds.
    index.add_pack(p2, &[entry(1, 99)], 2).unwrap();
    assert_eq!(index.chunk_count(), 2);
    assert_eq!(index.multi_location_count(), 1);
    assert_eq!(index.regions_of(&id(1)), RegionSet::of([0, 1, 2]));
    assert_eq!(index.regions_of(&id(2)), RegionSet::of([0, 1]));
    assert!(index.has_in_all(&id(1), RegionSet::of([0, 2])));
    assert!(!index.has_in_all(&id(2), RegionSet::of([0, 2])));
    let locs = index.locations(&id(1), Some(2));
    assert_eq!(locs.len(), 2);
    assert_eq!(locs[0].0, p1, "the pack in the most regions first");
    assert_eq!(locs[1].1.offset, 99);
    assert_eq!(index.get(&id(1)).unwrap().0, p1);
    assert_eq!(index.get(&id(2)).unwrap().1, entry(2, 10));
    assert!(index.get(&id(3)).is_none());
    assert!(!index.contains(&id(3)));
    assert_eq!(index.pack_regions(&p2), RegionSet::only(2));
    // The same after merging the delta into the sorted array.
    index.compact();
    assert_eq!(index.locations(&id(1), Some(2)), locs);
    assert_eq!(index.regions_of(&id(1)), RegionSet::of([0, 1, 2]));
    // A chunk added again after the merge gets its extra location too.
    index.add_pack(id(1_000_003), &[entry(2, 5)], 3).unwrap();
    assert_eq!(index.regions_of(&id(2)), RegionSet::of([0, 1, 3]));
    assert_eq!(index.multi_location_count(), 2);
}

/// Many packs, several merges (the delta is merged every MIN_MERGE entries), repeated and
/// multi-location chunks: every answer equals a plain map's.
#[test]
fn merges_agree_with_a_plain_map() {
    let mut index = Index::new();
    let mut model: HashMap<Id, Vec<(u32, PackEntry, usize)>> = HashMap::new();
    let mut pack_regions: Vec<RegionSet> = Vec::new();
    let mut n = 0u64;
    for p in 0..120u64 {
        let region = (p % 3) as usize;
        // Every tenth pack repeats older chunks (further locations).
        let entries: Vec<PackEntry> = (0..500)
            .map(|i| {
                if p % 10 == 9 && i % 2 == 0 {
                    entry(n / 2 + i, i as u32)
                } else {
                    n += 1;
                    entry(n, i as u32)
                }
            })
            .collect();
        index
            .add_pack(id(10_000_000 + p), &entries, region)
            .unwrap();
        pack_regions.push(RegionSet::only(region));
        for e in &entries {
            let v = model.entry(e.id).or_default();
            if v.iter().all(|(q, _, _)| *q != p as u32) {
                v.push((p as u32, *e, region));
            }
        }
    }
    assert!(index.sorted.len() > MIN_MERGE, "merged at least once");
    for round in 0..2 {
        assert_eq!(index.chunk_count(), model.len(), "round {round}");
        for (cid, locs) in &model {
            let want = locs.iter().fold(RegionSet::EMPTY, |s, (_, _, r)| {
                s.union(RegionSet::only(*r))
            });
            assert_eq!(index.regions_of(cid), want);
            let got = index.locations(cid, None);
            assert_eq!(got.len(), locs.len());
            for (q, e, _) in locs {
                assert!(got
                    .iter()
                    .any(|(pid, ge, _)| *pid == id(10_000_000 + *q as u64) && ge == e));
            }
        }
        let listed: HashMap<Id, Location> = index.chunks().collect();
        assert_eq!(listed.len(), model.len());
        for (cid, l) in &listed {
            assert_eq!(
                l.entry, model[cid][0].1,
                "the first location is the first seen"
            );
        }
        for k in 0..2000 {
            assert!(!index.contains(&id(u64::MAX - k)));
        }
        index.compact();
    }
}

fn rss_kib() -> Option<u64> {
    let s = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = s.lines().find(|l| l.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// 1M synthetic chunks in 1000-chunk packs: prints the index's own bytes per chunk and the
/// process's RSS growth (the figures in `docs/bench.md`). Only the structure's computed
/// capacity is asserted, never a time or the RSS.
#[test]
fn index_bytes_per_chunk_at_one_million_chunks() {
    const CHUNKS: u64 = 1_000_000;
    const PER_PACK: u64 = 1000;
    let before = rss_kib();
    let mut index = Index::new();
    let mut entries = Vec::with_capacity(PER_PACK as usize);
    for p in 0..CHUNKS / PER_PACK {
        entries.clear();
        entries.extend((0..PER_PACK).map(|i| entry(p * PER_PACK + i, (i * 1000) as u32)));
        index.add_pack(id(u64::MAX - p), &entries, 0).unwrap();
    }
    drop(entries);
    index.compact();
    let after = rss_kib();
    assert_eq!(index.chunk_count(), CHUNKS as usize);
    let per_chunk = index.heap_bytes() as f64 / CHUNKS as f64;
    let rss = match (before, after) {
        (Some(b), Some(a)) => format!("{:.1}", (a.saturating_sub(b) * 1024) as f64 / CHUNKS as f64),
        _ => "unknown".into(),
    };
    println!(
        "index: {CHUNKS} chunks in {} packs: {per_chunk:.2} B/chunk by capacity ({ENTRY_BYTES} B entry), RSS delta {rss} B/chunk",
        index.pack_count()
    );
    assert!(per_chunk <= 48.0, "{per_chunk} bytes per chunk");
    assert!(index.contains(&id(123_456)));
    assert_eq!(index.get(&id(999_999)).unwrap().1, entry(999_999, 999_000));
}
