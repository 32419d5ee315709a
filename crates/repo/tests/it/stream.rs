//! Stream snapshots through the real writer and reader: a stream spanning many packs comes
//! back byte for byte; a second stream made of the first one's blocks shuffled
//! (chunks from old packs, far out of order: the pack window's eviction and refetch path) too; a pack damaged
//! in every region stops the stream at the chunk it holds, naming it, after only verified
//! bytes; a chunk whose first pack is damaged everywhere is read from its other pack; a
//! wrong whole-stream hash is refused.

use std::sync::Arc;

use lifeboat_repo::backend::Fault;
use lifeboat_repo::reader::BlobReader;
use lifeboat_repo::repo::pack_name;
use lifeboat_repo::stream::{copy_stream, store_root, store_stream, stream_node};
use lifeboat_repo::{Cancel, Id, Progress, RepoError, Repository};

use crate::fixture::{backup, Chunking, TestRepo};

fn noise(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

async fn store(repo: &Arc<Repository>, data: Vec<u8>) -> Id {
    let c = Chunking::of(repo);
    let out = backup(repo, &[0, 1], move |w| {
        let node = store_stream(w, "stream.bin", &data[..], &c.params, c.seed)?;
        store_root(w, node)
    })
    .await
    .expect("backup");
    out.manifest.root
}

async fn read(repo: &Arc<Repository>, root: Id) -> (Result<u64, RepoError>, Vec<u8>) {
    let index = Arc::new(repo.load_index().await.unwrap());
    let reader = BlobReader::new(repo.clone(), index.clone());
    let node = stream_node(&reader, root).await.unwrap();
    let mut sink = Vec::new();
    let progress = Progress::default();
    let res = copy_stream(repo, &index, &node, &mut sink, &progress, &Cancel::new()).await;
    (res, sink)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_round_trip_across_many_packs_and_out_of_order_old_chunks() {
    let t = TestRepo::new(2).await;
    let repo = t.open().await;
    let data = noise(12 << 20, 1);
    let root = store(&repo, data.clone()).await;
    assert!(
        t.names(0, "data/").len() >= 10,
        "the stream should span many packs"
    );
    let (res, got) = read(&repo, root).await;
    assert_eq!(res.unwrap(), data.len() as u64);
    assert!(got == data, "round trip differs");

    // The same 256 KiB blocks, every fourth first: mostly old chunks, each old pack needed
    // again and again across the whole stream (more packs than the window holds open).
    let blocks: Vec<&[u8]> = data.chunks(256 << 10).collect();
    let mut order: Vec<usize> = (0..blocks.len()).collect();
    order.sort_by_key(|i| (i % 4, *i));
    let shuffled: Vec<u8> = order
        .iter()
        .flat_map(|&i| blocks[i].iter().copied())
        .collect();
    let repo = t.open().await;
    let root = store(&repo, shuffled.clone()).await;
    let (res, got) = read(&repo, root).await;
    assert_eq!(res.unwrap(), shuffled.len() as u64);
    assert!(got == shuffled, "reordered stream differs");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pack_damaged_everywhere_stops_the_stream_at_its_chunk() {
    let t = TestRepo::new(2).await;
    let repo = t.open().await;
    let data = noise(4 << 20, 2);
    let root = store(&repo, data.clone()).await;
    // Damage the biggest pack (data only) in both regions.
    let mut packs = t.names(0, "data/");
    packs.sort_by_key(|n| t.stores[0].raw(n).unwrap().len());
    let victim = packs.last().unwrap().clone();
    for store in &t.stores {
        let mut bytes = store.raw(&victim).unwrap().to_vec();
        let mid = bytes.len() / 2;
        bytes[mid] ^= 1;
        store.set_raw(victim.clone(), bytes);
    }
    let repo = t.open().await;
    let (res, got) = read(&repo, root).await;
    let err = res.unwrap_err().to_string();
    assert!(err.contains("stream.bin: chunk"), "{err}");
    assert!(err.contains("no region has a good copy"), "{err}");
    assert!(got.len() < data.len());
    assert!(
        got[..] == data[..got.len()],
        "unverified bytes reached the sink"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_reads_around_a_damaged_pack_from_the_chunks_other_location() {
    let t = TestRepo::new(2).await;
    // A degraded backup (r1 down) stores the chunks in r0 only; the next, healthy one
    // stores them again in r1, in other packs: every chunk then has two locations.
    t.faults[1].inject(Fault::Down);
    let data = noise(4 << 20, 3);
    store(&t.open().await, data.clone()).await;
    t.clear_faults();
    let repo = t.open().await;
    let root = store(&repo, data.clone()).await;
    let index = Arc::new(repo.load_index().await.unwrap());
    let node = stream_node(&BlobReader::new(repo.clone(), index.clone()), root)
        .await
        .unwrap();
    // Damage, in every region that has it, the pack each chunk would be read from first.
    let mut firsts: Vec<String> = node
        .chunks
        .iter()
        .map(|c| pack_name(&index.get(c).expect("indexed").0))
        .collect();
    firsts.sort();
    firsts.dedup();
    let mut damaged = 0;
    for store in &t.stores {
        for name in firsts.iter().filter(|n| store.raw(n).is_some()).cloned() {
            let mut bytes = store.raw(&name).unwrap().to_vec();
            let mid = bytes.len() / 2;
            bytes[mid] ^= 1;
            store.set_raw(name, bytes);
            damaged += 1;
        }
    }
    assert!(
        damaged > 0,
        "no first-location pack found to damage: {firsts:?}"
    );
    let (res, got) = read(&t.open().await, root).await;
    assert_eq!(
        res.expect("the stream falls back to the other packs"),
        data.len() as u64
    );
    assert!(got == data, "stream read around the damage differs");
}
