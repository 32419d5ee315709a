//! Tests of the restore's lookup index: the same locations as the full index, key
//! collisions kept as candidates, multi-location order, and the bytes per chunk.

use super::*;
use crate::Index;

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
        raw_length: (n as u32).wrapping_mul(2_654_435_761) % 9_000_000 + 1,
    }
}

/// An id sharing its first 8 bytes with `of` (and differing after them).
fn twin(of: &Id, salt: u8) -> Id {
    let mut t = *of;
    t.0[8] ^= 0x80 | salt;
    t.0[31] ^= salt.wrapping_add(1);
    t
}

#[test]
fn every_chunk_has_the_full_indexs_locations_and_no_others() {
    let (mut full, mut lookup) = (Index::new(), LookupBuilder::new());
    let mut n = 0u64;
    for p in 0..40u64 {
        let entries: Vec<PackEntry> = (0..500)
            .map(|i| {
                n += 1;
                entry(n, (i * 70_001) as u32)
            })
            .collect();
        let pack = id(u64::MAX - p);
        for region in [0, (p % 3) as usize] {
            full.add_pack(pack, &entries, region).unwrap();
            lookup.add_pack(pack, &entries, region).unwrap();
        }
    }
    // Chunks 1..=50 stored again in a pack only region 2 holds.
    let healing: Vec<PackEntry> = (1..=50).map(|k| entry(k, (k * 10) as u32)).collect();
    full.add_pack(id(7), &healing, 2).unwrap();
    lookup.add_pack(id(7), &healing, 2).unwrap();
    full.compact();
    let lookup = lookup.finish();
    assert_eq!(lookup.len(), 20_050);
    assert_eq!(lookup.pack_count(), 41);
    for k in 1..=n {
        for preferred in [None, Some(2)] {
            let want = full.locations(&id(k), preferred);
            let got = lookup.candidates(&id(k), preferred);
            assert_eq!(got, want, "chunk {k}, preferred {preferred:?}");
        }
    }
    assert_eq!(lookup.candidates(&id(k_absent()), None), Vec::new());
}

fn k_absent() -> u64 {
    1 << 40
}

#[test]
fn ids_sharing_eight_bytes_are_all_candidates_each_naming_the_wanted_id() {
    let a = entry(1, 100);
    let b = PackEntry {
        id: twin(&a.id, 1),
        offset: 5,
        raw_length: 77,
        ..entry(2, 0)
    };
    let c = PackEntry {
        id: twin(&a.id, 2),
        offset: 900,
        ..entry(3, 0)
    };
    let mut builder = LookupBuilder::new();
    builder
        .add_pack(id(1000), &[a, entry(4, 50), b], 0)
        .unwrap();
    builder.add_pack(id(1001), &[c, entry(5, 0)], 0).unwrap();
    let lookup = builder.finish();
    for wanted in [a.id, b.id, c.id] {
        let got = lookup.candidates(&wanted, None);
        // Tied on regions: by pack number, then offset.
        let places: Vec<(Id, u32)> = got.iter().map(|(p, e, _)| (*p, e.offset)).collect();
        assert_eq!(
            places,
            vec![(id(1000), 5), (id(1000), 100), (id(1001), 900)]
        );
        assert!(got.iter().all(|(_, e, _)| e.id == wanted));
        assert_eq!(got[0].1.raw_length, 77);
        assert_eq!(got[1].1.raw_length, a.raw_length);
        assert_eq!(got[1].1.kind, a.kind);
        assert_eq!(got[1].1.compression, a.compression);
    }
    assert_eq!(lookup.candidates(&entry(4, 0).id, None).len(), 1);
}

#[test]
fn the_pack_in_most_regions_then_the_preferred_region_comes_first() {
    let e = entry(9, 0);
    let mut builder = LookupBuilder::new();
    builder.add_pack(id(2000), &[entry(9, 40)], 3).unwrap();
    builder.add_pack(id(2001), &[entry(9, 10)], 1).unwrap();
    builder.add_pack(id(2002), &[e], 0).unwrap();
    builder.add_pack(id(2002), &[e], 2).unwrap();
    let lookup = builder.finish();
    let order = |pref| -> Vec<Id> {
        lookup
            .candidates(&e.id, pref)
            .into_iter()
            .map(|(p, _, _)| p)
            .collect()
    };
    assert_eq!(order(None), vec![id(2002), id(2000), id(2001)]);
    assert_eq!(order(Some(1)), vec![id(2002), id(2001), id(2000)]);
    assert_eq!(order(Some(3)), vec![id(2002), id(2000), id(2001)]);
}

#[test]
fn field_widths_follow_the_values_up_to_full_u32() {
    let big = PackEntry {
        offset: u32::MAX,
        length: u32::MAX,
        raw_length: u32::MAX,
        ..entry(11, 0)
    };
    let mut builder = LookupBuilder::new();
    builder.add_pack(id(1), &[big, entry(12, 0)], 0).unwrap();
    let lookup = builder.finish();
    assert_eq!(lookup.candidates(&big.id, None)[0].1, big);
    assert_eq!(lookup.candidates(&id(12), None)[0].1, entry(12, 0));
    assert_eq!(
        lookup.record_bytes(),
        (32 + 2 + 1 + 32 * 3usize).div_ceil(8)
    );
}

fn rss_kib() -> Option<u64> {
    let s = std::fs::read_to_string("/proc/self/status").ok()?;
    s.lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

#[test]
fn lookup_bytes_per_chunk_at_one_million_chunks() {
    // The full index's test shape: 1000 packs of 1000 chunks 1000 bytes apart (a 1 MB
    // stretch of each pack), raw lengths up to 9 MB.
    const CHUNKS: u64 = 1_000_000;
    const PER_PACK: u64 = 1000;
    let before = rss_kib();
    let mut builder = LookupBuilder::new();
    let mut entries = Vec::with_capacity(PER_PACK as usize);
    for p in 0..CHUNKS / PER_PACK {
        entries.clear();
        entries.extend((0..PER_PACK).map(|i| entry(p * PER_PACK + i, (i * 1000) as u32)));
        builder.add_pack(id(u64::MAX - p), &entries, 0).unwrap();
    }
    drop(entries);
    let lookup = builder.finish();
    let after = rss_kib();
    assert_eq!(lookup.len(), CHUNKS as usize);
    let per_chunk = lookup.heap_bytes() as f64 / CHUNKS as f64;
    let rss = match (before, after) {
        (Some(b), Some(a)) => format!("{:.1}", (a.saturating_sub(b) * 1024) as f64 / CHUNKS as f64),
        _ => "unknown".into(),
    };
    println!(
        "lookup index: {CHUNKS} chunks in {} packs: {per_chunk:.2} B/chunk by capacity ({} B record), RSS delta {rss} B/chunk",
        lookup.pack_count(),
        lookup.record_bytes()
    );
    assert!(per_chunk <= 16.0, "{per_chunk} bytes per chunk");
    assert_eq!(
        lookup.candidates(&id(999_999), None)[0].1,
        entry(999_999, 999_000)
    );
}
