//! lifeboat's repository engine.
//!
//! A repository is a set of objects in one or more regions (see `docs/FORMAT.md`): packs of
//! compressed chunks, each pack a standard age file; an index mapping chunk ids to packs;
//! snapshot manifests; and a plaintext `config`. This crate owns the format, the write order
//! that keeps every region valid after any crash, and the storage [`backend`] contract. It
//! knows nothing of AWS, SQL, CLIs or schedules.
#![forbid(unsafe_code)]

pub mod age_header;
pub mod attrs;
pub mod audit;
pub mod backend;
pub mod buffers;
pub mod chunker;
pub mod clock;
pub mod details;
pub mod drills;
pub mod epochs;
pub mod erase;
pub mod error;
pub mod id;
pub mod index;
pub mod index_load;
pub mod index_lookup;
pub mod index_mem;
pub mod init;
pub mod keys;
pub mod lock;
pub mod meta_cache;
pub mod pack;
pub mod progress;
pub mod prune;
pub mod reader;
pub mod regions;
pub mod replicate;
pub mod repo;
pub mod repo_config;
pub mod restore;
pub mod retention;
pub mod rewrap;
pub mod secrets;
pub mod sign;
pub mod snapshot;
pub mod stream;
pub mod tree;
pub(crate) mod unlock;
pub mod upgrade;
pub mod verify;
pub mod verify_data;
pub mod writer;
pub mod writers;

pub use error::{RepoError, Result};
pub use id::Id;
pub use index::Index;
pub use progress::{Cancel, Progress};
pub use regions::RegionSet;
pub use repo::{Region, RepoConfig, Repository};

/// Threads for CPU-bound stages (compression in a backup, pack fetch and decode in a
/// restore): one per core, at least 1 and at most 4 (more only adds memory in flight).
pub(crate) fn worker_threads() -> usize {
    std::thread::available_parallelism()
        .map_or(2, |n| n.get())
        .clamp(1, 4)
}
