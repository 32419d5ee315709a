//! Sources: where backup data comes from. Each turns its input into chunks and trees fed to
//! the repository's [`BackupWriter`](lifeboat_repo::writer::BackupWriter).

pub mod cache;
pub mod dir;
