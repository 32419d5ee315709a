//! A repository for library-level tests: fresh keys, in-memory regions each behind a fault
//! injector, `init` with small packs and chunks (so a few MiB span several packs and index
//! files), and snapshots written through the real [`BackupWriter`] from trees built in the
//! test — including trees no honest source would produce.
#![allow(dead_code)]

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::sync::Arc;

use lifeboat_repo::backend::{DynBackend, FaultInjector, MemoryBackend};
use lifeboat_repo::chunker::chunk_stream;
use lifeboat_repo::keys::{Identity, Keyring, WriterKey};
use lifeboat_repo::pack::BlobKind;
use lifeboat_repo::reader::BlobReader;
use lifeboat_repo::repo::{init, ChunkerParams, InitOptions};
use lifeboat_repo::restore::{restore_tree, RestoreOptions, RestoreReport};
use lifeboat_repo::snapshot::{Manifest, SourceInfo, MANIFEST_VERSION};
use lifeboat_repo::tree::{Node, NodeKind, Tree};
use lifeboat_repo::writer::{BackupOutcome, BackupWriter};
use lifeboat_repo::{Cancel, Id, Index, Progress, Region, Repository, Result};

/// 1 MiB packs (the smallest a repository accepts) and 16–256 KiB chunks.
pub fn small_options() -> InitOptions {
    InitOptions {
        chunker: ChunkerParams {
            min: 16 * 1024,
            avg: 64 * 1024,
            max: 256 * 1024,
        },
        pack_size: 1 << 20,
        zstd_level: 3,
    }
}

pub struct TestRepo {
    identity: String,
    writer: String,
    /// What each region really holds, bypassing the injectors.
    pub stores: Vec<Arc<MemoryBackend>>,
    /// One per region: inject faults here.
    pub faults: Vec<FaultInjector>,
}

impl TestRepo {
    /// Regions `r0`, `r1`, … initialised with [`small_options`].
    pub async fn new(regions: usize) -> TestRepo {
        let stores: Vec<Arc<MemoryBackend>> = (0..regions)
            .map(|_| Arc::new(MemoryBackend::new()))
            .collect();
        let faults = stores
            .iter()
            .map(|s| FaultInjector::new(s.clone() as DynBackend))
            .collect();
        let t = TestRepo {
            identity: Identity::generate().to_file_text(),
            writer: WriterKey::generate().to_file_text(),
            stores,
            faults,
        };
        init(&t.regions(), &t.keyring(), small_options())
            .await
            .expect("init");
        t
    }

    pub fn regions(&self) -> Vec<Region> {
        self.faults
            .iter()
            .enumerate()
            .map(|(i, f)| Region {
                name: format!("r{i}"),
                backend: Arc::new(f.clone()) as DynBackend,
            })
            .collect()
    }

    /// Recipients, writer key and identity: a host that may do everything.
    pub fn keyring(&self) -> Keyring {
        let identity = Identity::parse(&self.identity).unwrap();
        Keyring {
            recipients: vec![identity.recipient()],
            writer: Some(WriterKey::parse(&self.writer).unwrap()),
            identity: Some(identity),
        }
    }

    /// A backup host: recipients and the writer key, no identity.
    pub fn writer_keyring(&self) -> Keyring {
        Keyring {
            recipients: vec![Identity::parse(&self.identity).unwrap().recipient()],
            writer: Some(WriterKey::parse(&self.writer).unwrap()),
            identity: None,
        }
    }

    /// A restore host: the identity only.
    pub fn identity_keyring(&self) -> Keyring {
        Keyring {
            recipients: Vec::new(),
            writer: None,
            identity: Some(Identity::parse(&self.identity).unwrap()),
        }
    }

    /// The identity file's text (a test secret).
    pub fn identity_text(&self) -> &str {
        &self.identity
    }

    pub async fn open(&self) -> Arc<Repository> {
        Arc::new(
            Repository::open(self.regions(), self.keyring(), None)
                .await
                .expect("open"),
        )
    }

    /// Object names stored in region `i` under `prefix`.
    pub fn names(&self, i: usize, prefix: &str) -> Vec<String> {
        self.stores[i]
            .names()
            .into_iter()
            .filter(|n| n.starts_with(prefix))
            .collect()
    }

    pub fn clear_faults(&self) {
        for f in &self.faults {
            f.clear();
        }
    }
}

pub fn manifest(root: Id) -> Manifest {
    Manifest {
        version: MANIFEST_VERSION,
        plan: "test".into(),
        host: "test-host".into(),
        time: 1_700_000_000,
        end_time: 1_700_000_001,
        committed_ns: 0,
        source: SourceInfo {
            kind: "test".into(),
            location: "memory".into(),
        },
        root,
        stats: Default::default(),
        probes: Default::default(),
        unreadable: Vec::new(),
        sealed: false,
        details_error: None,
    }
}

/// Write one snapshot to `targets`: `build` adds blobs and returns the root tree's id. Runs
/// the writer on a blocking thread, as the engine does.
pub async fn backup(
    repo: &Arc<Repository>,
    targets: &[usize],
    build: impl FnOnce(&mut BackupWriter) -> Result<Id> + Send + 'static,
) -> Result<BackupOutcome> {
    let index = Arc::new(repo.load_index().await?);
    backup_with_index(repo, index, targets, build).await
}

/// [`backup`] with an index loaded beforehand (so faults can start after it was read).
pub async fn backup_with_index(
    repo: &Arc<Repository>,
    index: Arc<Index>,
    targets: &[usize],
    build: impl FnOnce(&mut BackupWriter) -> Result<Id> + Send + 'static,
) -> Result<BackupOutcome> {
    let (repo, targets) = (repo.clone(), targets.to_vec());
    let handle = tokio::runtime::Handle::current();
    tokio::task::spawn_blocking(move || {
        let mut w = BackupWriter::start(
            repo,
            index,
            "test",
            &targets,
            handle,
            Cancel::new(),
            Arc::new(Progress::default()),
        )?;
        match build(&mut w) {
            Ok(root) => w.finish(manifest(root)),
            Err(e) => {
                w.abort();
                Err(e)
            }
        }
    })
    .await
    .expect("backup task")
}

/// How a repository cuts files into chunks (its parameters and key-derived seed).
#[derive(Debug, Clone, Copy)]
pub struct Chunking {
    pub params: ChunkerParams,
    pub seed: u64,
}

impl Chunking {
    pub fn of(repo: &Repository) -> Chunking {
        Chunking {
            params: repo.config.chunker,
            seed: repo.secrets().chunker_seed(),
        }
    }
}

/// A file node named `name` holding `data`, its chunks added to the writer.
pub fn file_node(w: &mut BackupWriter, name: &[u8], data: &[u8], c: Chunking) -> Node {
    let mut chunks = Vec::new();
    let (size, hash) = chunk_stream(data, &c.params, c.seed, |chunk| {
        chunks.push(w.add(BlobKind::Data, chunk)?);
        Ok(())
    })
    .expect("chunk");
    let mut n = Node::new(OsStr::from_bytes(name), NodeKind::File);
    n.mode = 0o644;
    n.mtime_ns = 1_600_000_000_123_456_789;
    n.size = size;
    n.hash = Some(hash.to_hex().to_string());
    n.chunks = chunks;
    n
}

pub fn dir_node(w: &mut BackupWriter, name: &[u8], mut children: Tree) -> Result<Node> {
    let mut n = Node::new(OsStr::from_bytes(name), NodeKind::Dir);
    n.mode = 0o755;
    n.mtime_ns = 1_600_000_000_000_000_000;
    n.subtree = Some(w.add_tree(&mut children)?);
    Ok(n)
}

pub fn symlink_node(name: &[u8], target: &[u8]) -> Node {
    let mut n = Node::new(OsStr::from_bytes(name), NodeKind::Symlink);
    n.mode = 0o777;
    n.mtime_ns = 1_600_000_000_000_000_000;
    n.set_target(OsStr::from_bytes(target));
    n
}

/// A flat snapshot of named files.
pub fn files_tree(
    files: Vec<(String, Vec<u8>)>,
    c: Chunking,
) -> impl FnOnce(&mut BackupWriter) -> Result<Id> + Send + 'static {
    move |w| {
        let mut tree = Tree::default();
        for (name, data) in &files {
            tree.nodes.push(file_node(w, name.as_bytes(), data, c));
        }
        w.add_tree(&mut tree)
    }
}

/// Restore `root` into `target` through a freshly loaded index (the restore's compact one).
pub async fn restore(
    repo: &Arc<Repository>,
    root: Id,
    target: &Path,
    overwrite: bool,
) -> Result<RestoreReport> {
    let index = Arc::new(repo.load_lookup_index().await?);
    let reader = Arc::new(BlobReader::new(repo.clone(), index));
    let opts = RestoreOptions {
        include: None,
        overwrite,
        ..RestoreOptions::default()
    };
    restore_tree(
        reader,
        root,
        target,
        &opts,
        Arc::new(Progress::default()),
        Cancel::new(),
    )
    .await
}

/// Deterministic incompressible bytes (xorshift64*).
pub fn random_bytes(seed: u64, n: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut out = Vec::with_capacity(n + 8);
    while out.len() < n {
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        out.extend_from_slice(&x.wrapping_mul(0x2545_F491_4F6C_DD1D).to_le_bytes());
    }
    out.truncate(n);
    out
}
