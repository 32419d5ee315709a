//! Sources: where backup data comes from. Each turns its input into chunks and trees fed to
//! the repository's [`BackupWriter`](lifeboat_repo::writer::BackupWriter): a directory tree
//! (`dir`), or one stream (`postgres`, `command`) stored as a single file node.

pub mod cache;
pub mod child;
pub mod command;
pub mod dir;
pub mod pg_globals;
pub mod pgtls;
pub mod postgres;
pub mod sparse;
