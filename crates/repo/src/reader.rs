//! Reading blobs back: find a chunk's pack in the index, fetch the pack (preferred region
//! first, falling back per object when missing or corrupt), decrypt it and verify every blob.
//! A chunk stored in several packs falls back to its other packs when one is bad everywhere.
//!
//! Two ways to read a pack: [`fetch_pack`] decrypts all of it ([`OpenPack`], the plaintext
//! beside the table; the [`BlobReader`] caches a few of those, bounded in bytes), and
//! [`fetch_stream`] keeps only the ciphertext and decrypts the 64 KiB age chunks under each
//! blob as it is read ([`PackStream`]): a restore's data packs are read that way, so a pack
//! in flight costs its ciphertext, not its ciphertext and its plaintext.
//!
//! Where chunks are comes from a [`ChunkLookup`]: the full [`Index`] (backup, prune,
//! verify) or the restore's compact [`LookupIndex`], whose candidates for an id may include
//! other chunks sharing its key. Every blob read is verified against the wanted id, so the
//! reader tries candidates until one matches.

use std::collections::VecDeque;
use std::io::{Read, Seek, SeekFrom};
use std::sync::{Arc, Mutex};

use bytes::Bytes;

use crate::error::{RepoError, Result};
use crate::index_lookup::LookupIndex;
use crate::pack::{check_chunk, decompress, OpenPack, PackEntry};
use crate::regions::RegionSet;
use crate::repo::{check_stored_id, pack_name, Repository};
use crate::{Id, Index};

/// Bytes of decrypted packs a [`BlobReader`] keeps by default: two full 16 MiB packs.
pub const DEFAULT_CACHE_BYTES: usize = 32 << 20;

/// Fetch and open one pack. Needs the identity.
pub async fn fetch_pack(repo: &Arc<Repository>, id: Id) -> Result<Arc<OpenPack>> {
    let name = pack_name(&id);
    let identity = repo.identity("reading backup data")?.keys().to_vec();
    let (bytes, _) = repo
        .get_checked(&name, |b| check_stored_id(b, &id, &name))
        .await?;
    let pack = tokio::task::spawn_blocking(move || OpenPack::open(&identity, id, &bytes))
        .await
        .map_err(|e| RepoError::Invalid(format!("decrypt task: {e}")))??;
    Ok(Arc::new(pack))
}

/// Fetch one pack (its stored bytes checked against its id) for reading blob by blob with
/// [`PackStream`]. Needs the identity.
pub async fn fetch_stream(repo: &Arc<Repository>, id: Id) -> Result<PackStream> {
    let name = pack_name(&id);
    let identity = repo.identity("reading backup data")?.keys().to_vec();
    let (bytes, _) = repo
        .get_checked(&name, |b| check_stored_id(b, &id, &name))
        .await?;
    PackStream::open(&identity, id, bytes)
}

/// One pack's ciphertext, decrypted only where a blob is read: seeking to a blob decrypts
/// (and authenticates) the age chunks it spans, nothing else. Blobs read in offset order
/// decrypt each chunk once. The pack's own table is not read: the index says where each
/// blob is, and every blob is verified by its keyed hash and length.
pub struct PackStream {
    pub id: Id,
    /// Stored bytes of the pack (its ciphertext).
    pub stored_len: usize,
    reader: age::stream::StreamReader<std::io::Cursor<Bytes>>,
    pos: u64,
    buf: Vec<u8>,
}

impl PackStream {
    pub fn open(identity: &[age::x25519::Identity], id: Id, stored: Bytes) -> Result<PackStream> {
        let what = || format!("pack {}", id.short());
        let stored_len = stored.len();
        let dec = age::Decryptor::new(std::io::Cursor::new(stored))
            .map_err(|e| RepoError::Corrupt(format!("{}: not a valid age file: {e}", what())))?;
        let reader = dec
            .decrypt(identity.iter().map(|i| i as &dyn age::Identity))
            .map_err(|e| match e {
                age::DecryptError::NoMatchingKeys => RepoError::WrongKey(format!(
                    "{}: the identity does not match any recipient of this repository",
                    what()
                )),
                e => RepoError::Corrupt(format!("{}: {e}", what())),
            })?;
        Ok(PackStream {
            id,
            stored_len,
            reader,
            pos: 0,
            buf: Vec::new(),
        })
    }

    /// Decrypt, decompress and verify one blob.
    pub fn blob(&mut self, chunk_key: &[u8; 32], e: &PackEntry) -> Result<Vec<u8>> {
        let bad = |m: String| RepoError::Corrupt(format!("pack {}: {m}", self.id.short()));
        let offset = u64::from(e.offset);
        if offset != self.pos {
            self.reader
                .seek(SeekFrom::Start(offset))
                .map_err(|err| bad(format!("blob {}: {err}", e.id.short())))?;
        }
        self.buf.resize(e.length as usize, 0);
        // A blob past the end, or a chunk that fails authentication, is an error here.
        self.reader.read_exact(&mut self.buf).map_err(|err| {
            bad(format!(
                "blob {} unreadable (out of bounds or not authentic): {err}",
                e.id.short()
            ))
        })?;
        self.pos = offset + u64::from(e.length);
        let raw = decompress(e, &self.buf)?;
        check_chunk(chunk_key, e, &raw)?;
        Ok(raw)
    }
}

/// Where a chunk may be stored: every candidate location as (pack, entry naming the wanted
/// id, regions holding the pack), best first (the pack in the most regions, then one in
/// `preferred`). A candidate may hold another chunk (the compact index keys on part of the
/// id): whoever reads it verifies the blob against the id.
pub trait ChunkLookup: Send + Sync + std::fmt::Debug {
    fn candidates(&self, id: &Id, preferred: Option<usize>) -> Vec<(Id, PackEntry, RegionSet)>;
    /// Heap bytes the structure holds (for the restore's memory trace).
    fn heap_bytes(&self) -> usize;
}

impl ChunkLookup for Index {
    fn candidates(&self, id: &Id, preferred: Option<usize>) -> Vec<(Id, PackEntry, RegionSet)> {
        self.locations(id, preferred)
    }
    fn heap_bytes(&self) -> usize {
        Index::heap_bytes(self)
    }
}

impl ChunkLookup for LookupIndex {
    fn candidates(&self, id: &Id, preferred: Option<usize>) -> Vec<(Id, PackEntry, RegionSet)> {
        LookupIndex::candidates(self, id, preferred)
    }
    fn heap_bytes(&self) -> usize {
        LookupIndex::heap_bytes(self)
    }
}

/// Reads individual blobs (trees, small files) through a small cache of open packs,
/// least recently used first out, bounded in bytes of plaintext.
pub struct BlobReader {
    repo: Arc<Repository>,
    index: Arc<dyn ChunkLookup>,
    cache: Mutex<VecDeque<Arc<OpenPack>>>,
    capacity_bytes: usize,
}

impl BlobReader {
    pub fn new(repo: Arc<Repository>, index: Arc<dyn ChunkLookup>) -> BlobReader {
        BlobReader::with_cache_bytes(repo, index, DEFAULT_CACHE_BYTES)
    }

    /// A reader whose cache holds at most `bytes` of decrypted packs (always the last pack
    /// read, even one larger than that).
    pub fn with_cache_bytes(
        repo: Arc<Repository>,
        index: Arc<dyn ChunkLookup>,
        bytes: usize,
    ) -> BlobReader {
        BlobReader {
            repo,
            index,
            cache: Mutex::new(VecDeque::new()),
            capacity_bytes: bytes,
        }
    }

    /// Bytes of plaintext the cache holds now, and how many packs.
    pub fn cached(&self) -> (usize, usize) {
        let cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        (cache.iter().map(|p| p.plain.len()).sum(), cache.len())
    }

    /// Read and verify one blob from its best location, falling back to its other
    /// locations (other packs) when that pack cannot be read from any region.
    pub async fn read(&self, id: &Id) -> Result<Vec<u8>> {
        self.read_avoiding(id, None).await
    }

    /// [`read`](Self::read), never from pack `avoid` (one that already failed).
    pub async fn read_avoiding(&self, id: &Id, avoid: Option<Id>) -> Result<Vec<u8>> {
        self.read_except(id, |p, _| Some(*p) == avoid)
            .await
            .map(|(raw, _, _)| raw)
    }

    /// Read and verify chunk `id` from the first of its candidate locations that holds it,
    /// skipping those `skip` names; also say which location that was. A location that
    /// cannot be read, or holds another chunk, is passed over for the next.
    pub async fn read_except(
        &self,
        id: &Id,
        skip: impl Fn(&Id, &PackEntry) -> bool,
    ) -> Result<(Vec<u8>, Id, PackEntry)> {
        let preferred = self.repo.read_order().first().copied();
        let locations = self.index.candidates(id, preferred);
        let mut last: Option<RepoError> = None;
        for (pack_id, entry, _) in locations.into_iter().filter(|(p, e, _)| !skip(p, e)) {
            match self.read_at(pack_id, &entry).await {
                Ok(b) => return Ok((b, pack_id, entry)),
                Err(e) => {
                    tracing::warn!(chunk = %id.short(), pack = %pack_id.short(), offset = entry.offset, error = %e, "chunk unreadable at this location; trying its other locations");
                    last = Some(e);
                }
            }
        }
        Err(last.unwrap_or_else(|| {
            RepoError::Corrupt(format!(
                "chunk {} is not in the index of any region (run `lifeboat verify`)",
                id.short()
            ))
        }))
    }

    /// The location chunk `id` is read from: found by reading it (through the cache), for
    /// a chunk whose candidates disagree on its length (another chunk shares its key).
    pub async fn locate(&self, id: &Id) -> Result<(Id, PackEntry)> {
        self.read_except(id, |_, _| false)
            .await
            .map(|(_, p, e)| (p, e))
    }

    async fn read_at(&self, pack_id: Id, entry: &crate::pack::PackEntry) -> Result<Vec<u8>> {
        let cached = {
            let mut cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
            let hit = cache.iter().position(|p| p.id == pack_id);
            // Most recently used at the back.
            hit.and_then(|i| cache.remove(i))
                .inspect(|p| cache.push_back(p.clone()))
        };
        let pack = match cached {
            Some(p) => p,
            None => {
                let p = fetch_pack(&self.repo, pack_id).await?;
                let mut cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
                if !cache.iter().any(|c| c.id == pack_id) {
                    cache.push_back(p.clone());
                }
                let mut held: usize = cache.iter().map(|c| c.plain.len()).sum();
                while held > self.capacity_bytes && cache.len() > 1 {
                    let out = cache.pop_front().expect("more than one pack cached");
                    held -= out.plain.len();
                }
                p
            }
        };
        pack.blob(self.repo.secrets().chunk_key(), entry)
    }

    /// Drop every cached pack (their plaintext can be 16 MiB each).
    pub fn clear_cache(&self) {
        self.cache.lock().unwrap_or_else(|p| p.into_inner()).clear();
    }

    pub fn index(&self) -> &Arc<dyn ChunkLookup> {
        &self.index
    }

    pub fn repo(&self) -> &Arc<Repository> {
        &self.repo
    }
}
