//! Stream snapshots: one byte stream (a database dump, a command's stdout) stored as an
//! ordinary snapshot whose root tree holds a single file node, and read back in order.
//!
//! Writing chunks the stream as it arrives ([`store_stream`]); nothing is spooled to disk.
//! Reading ([`copy_stream`]) fetches the node's chunks in stream order through a small window
//! of open packs (prefetched ahead, dropped after their last use), verifies every chunk
//! (age authentication, keyed hash, length) before a byte of it reaches the sink, and checks
//! the whole stream's length and BLAKE3 at the end. A pack that cannot be read from any
//! region (or a damaged blob in it) is not the end: the chunk is read from its other
//! locations in the index, as a file restore does. Memory is bounded by the window
//! ([`PACK_WINDOW`] packs of ~16 MiB), never by the size of the stream.

use std::collections::{HashMap, HashSet, VecDeque};
use std::ffi::OsStr;
use std::io::Read;
use std::sync::Arc;

use tokio::io::{AsyncWrite, AsyncWriteExt};

use crate::chunker::chunk_stream;
use crate::error::{RepoError, Result};
use crate::pack::{BlobKind, OpenPack, PackEntry};
use crate::progress::{Cancel, Progress};
use crate::reader::{fetch_pack, BlobReader};
use crate::repo::{ChunkerParams, Repository};
use crate::tree::{Node, NodeKind, Tree};
use crate::writer::BackupWriter;
use crate::{Id, Index};

/// Open packs held at once while reading a stream (prefetched ones included).
pub const PACK_WINDOW: usize = 4;
/// Beyond this many open packs (a stream whose chunks alternate between many old packs),
/// the one needed last is dropped and fetched again when its turn comes.
const MAX_OPEN_PACKS: usize = 8;

/// Chunk `reader` into `writer` and return the file node `name` describing it (size, BLAKE3,
/// chunks in order). Bytes read are counted in the writer's progress as they arrive.
pub fn store_stream<R: Read>(
    writer: &mut BackupWriter,
    name: &str,
    reader: R,
    params: &ChunkerParams,
    seed: u64,
) -> Result<Node> {
    let progress = writer.progress().clone();
    let mut chunks = Vec::new();
    let (size, hash) = chunk_stream(reader, params, seed, |chunk| {
        progress.add_done(chunk.len() as u64);
        chunks.push(writer.add(BlobKind::Data, chunk)?);
        Ok(())
    })?;
    let mut node = Node::new(OsStr::new(name), NodeKind::File);
    node.mode = 0o600;
    node.mtime_ns = crate::clock::now_nanos();
    node.size = size;
    node.hash = Some(hash.to_hex().to_string());
    node.chunks = chunks;
    Ok(node)
}

/// Store the root tree of a stream snapshot: one directory holding `node`.
pub fn store_root(writer: &mut BackupWriter, node: Node) -> Result<Id> {
    store_root_files(writer, vec![node])
}

/// Store the root tree of a stream snapshot whose stream has small files beside it (a
/// database dump and the cluster's globals): one directory holding `nodes`.
pub fn store_root_files(writer: &mut BackupWriter, nodes: Vec<Node>) -> Result<Id> {
    writer.add_tree(&mut Tree { nodes })
}

/// The file node of a stream snapshot's root tree; an error if the tree is not one file.
pub async fn stream_node(reader: &BlobReader, root: Id) -> Result<Node> {
    let mut files = stream_files(reader, root).await?.into_iter();
    match (files.next(), files.next()) {
        (Some(node), None) => Ok(node),
        _ => Err(RepoError::Invalid(format!(
            "snapshot root {} is not a stream snapshot (one file); restore it into a directory",
            root.short()
        ))),
    }
}

/// The file nodes of a stream snapshot's root tree (the stream, and any files stored
/// beside it), in name order; an error if it holds anything but files, or none.
pub async fn stream_files(reader: &BlobReader, root: Id) -> Result<Vec<Node>> {
    let bytes = reader.read(&root).await?;
    let tree = Tree::parse(&bytes, &format!("root tree {}", root.short()))?;
    if tree.nodes.is_empty() || tree.nodes.iter().any(|n| n.kind != NodeKind::File) {
        return Err(RepoError::Invalid(format!(
            "snapshot root {} is not a stream snapshot (files only); restore it into a directory",
            root.short()
        )));
    }
    Ok(tree.nodes)
}

/// Write the content of `node` into `sink` in order, verifying every chunk before it is
/// written and the whole stream (length and BLAKE3) at the end. On a verification error the
/// sink has received only verified bytes, but not all of them: a consumer must treat the
/// error as "the stream is incomplete". Needs the identity. Returns the bytes written.
pub async fn copy_stream<W: AsyncWrite + Unpin>(
    repo: &Arc<Repository>,
    index: &Index,
    node: &Node,
    sink: &mut W,
    progress: &Progress,
    cancel: &Cancel,
) -> Result<u64> {
    repo.identity("restore")?;
    let name = node.name.clone().unwrap_or_else(|| "stream".to_string());
    let mut plan: Vec<(Id, PackEntry)> = Vec::with_capacity(node.chunks.len());
    for (i, c) in node.chunks.iter().enumerate() {
        plan.push(index.get(c).ok_or_else(|| {
            RepoError::Corrupt(format!(
                "{name}: chunk {i} ({}) is in no region's index (run `lifeboat verify`)",
                c.short()
            ))
        })?);
    }
    let mut last_use: HashMap<Id, usize> = HashMap::new();
    let mut order: Vec<Id> = Vec::new();
    for (i, (pack, _)) in plan.iter().enumerate() {
        if last_use.insert(*pack, i).is_none() {
            order.push(*pack);
        }
    }
    let chunk_key = *repo.secrets().chunk_key();
    let mut next_fetch = 0usize;
    let mut inflight: VecDeque<(Id, tokio::task::JoinHandle<Result<Arc<OpenPack>>>)> =
        VecDeque::new();
    let mut open: HashMap<Id, Arc<OpenPack>> = HashMap::new();
    let mut bad: HashSet<Id> = HashSet::new();
    let mut hasher = blake3::Hasher::new();
    let mut written = 0u64;
    let mut failed_at: Option<usize> = None;
    let result = async {
        for (i, (pack_id, entry)) in plan.iter().enumerate() {
            cancel.check()?;
            failed_at = Some(i);
            while next_fetch < order.len() && inflight.len() + open.len() < PACK_WINDOW {
                let id = order[next_fetch];
                next_fetch += 1;
                let repo = repo.clone();
                inflight.push_back((id, tokio::spawn(async move { fetch_pack(&repo, id).await })));
            }
            let pack: Result<Arc<OpenPack>> = if bad.contains(pack_id) {
                Err(RepoError::Corrupt(format!(
                    "pack {} could not be read earlier in this stream",
                    pack_id.short()
                )))
            } else if let Some(p) = open.get(pack_id) {
                Ok(p.clone())
            } else {
                loop {
                    let (id, fetched) = match inflight.pop_front() {
                        Some((id, task)) => (
                            id,
                            task.await
                                .map_err(|e| RepoError::Invalid(format!("fetch task: {e}")))
                                .and_then(|r| r),
                        ),
                        None => (*pack_id, fetch_pack(repo, *pack_id).await),
                    };
                    match fetched {
                        Ok(p) => {
                            progress.add_transferred(p.plain.len() as u64);
                            open.insert(id, p.clone());
                            if id == *pack_id {
                                break Ok(p);
                            }
                        }
                        Err(RepoError::Cancelled) => return Err(RepoError::Cancelled),
                        Err(e) => {
                            bad.insert(id);
                            if id == *pack_id {
                                break Err(e);
                            }
                        }
                    }
                }
            };
            let raw = match pack.and_then(|p| p.blob(&chunk_key, entry)) {
                Ok(raw) => raw,
                Err(RepoError::Cancelled) => return Err(RepoError::Cancelled),
                Err(e) => {
                    // This pack is unreadable in every region (or this blob in it is
                    // damaged): the chunk's other locations, as a file restore does.
                    bad.insert(*pack_id);
                    match from_other_packs(repo, index, &node.chunks[i], &bad, &chunk_key).await {
                        Some(raw) => raw,
                        None => {
                            return Err(match e {
                                RepoError::Corrupt(m) => {
                                    RepoError::Corrupt(format!("{name}: chunk {i}: {m}"))
                                }
                                other => other,
                            })
                        }
                    }
                }
            };
            hasher.update(&raw);
            sink.write_all(&raw).await?;
            written += raw.len() as u64;
            progress.add_done(raw.len() as u64);
            if last_use.get(pack_id) == Some(&i) {
                open.remove(pack_id);
            }
            while open.len() > MAX_OPEN_PACKS {
                let furthest = open
                    .keys()
                    .filter(|k| *k != pack_id)
                    .max_by_key(|k| last_use.get(*k).copied().unwrap_or(0))
                    .copied();
                match furthest {
                    Some(k) => open.remove(&k),
                    None => break,
                };
            }
        }
        sink.flush().await?;
        Ok::<(), RepoError>(())
    }
    .await;
    for (_, task) in inflight {
        task.abort();
    }
    result.map_err(|e| match e {
        RepoError::Corrupt(m) if !m.starts_with(&name) => {
            RepoError::Corrupt(format!("{name}: chunk {}: {m}", failed_at.unwrap_or(0)))
        }
        other => other,
    })?;
    if written != node.size {
        return Err(RepoError::Corrupt(format!(
            "{name}: {written} bytes restored, the snapshot says {}",
            node.size
        )));
    }
    let got = hasher.finalize().to_hex().to_string();
    if node.hash.as_deref() != Some(got.as_str()) {
        return Err(RepoError::Corrupt(format!(
            "{name}: restored content hash {got} differs from the snapshot's {}",
            node.hash.as_deref().unwrap_or("(none)")
        )));
    }
    Ok(written)
}

/// Chunk `id` from one of its locations other than the packs in `bad`, verified; `None`
/// when no other location holds a readable copy (each failure is logged).
async fn from_other_packs(
    repo: &Arc<Repository>,
    index: &Index,
    id: &Id,
    bad: &HashSet<Id>,
    chunk_key: &[u8; 32],
) -> Option<Vec<u8>> {
    let preferred = repo.read_order().first().copied();
    for (pack_id, entry, _) in index.locations(id, preferred) {
        if bad.contains(&pack_id) {
            continue;
        }
        match fetch_pack(repo, pack_id)
            .await
            .and_then(|p| p.blob(chunk_key, &entry))
        {
            Ok(raw) => {
                tracing::warn!(chunk = %id.short(), pack = %pack_id.short(), "stream chunk read from another pack after its first location failed");
                return Some(raw);
            }
            Err(e) => {
                tracing::warn!(chunk = %id.short(), pack = %pack_id.short(), error = %e, "chunk unreadable in this pack too")
            }
        }
    }
    None
}
