//! Taking back what the readers read, and storing directories whose files were waiting.
//!
//! A directory's tree can be stored only once every file in it is: the walk does not wait
//! for that at the end of each directory (the readers would sit idle while it does, at
//! every directory of a tree of small files). A directory listed with files still being
//! read becomes a [`Slot::Dir`] in its parent, holding its entries; it is finished when the
//! walk takes its oldest pending entries back ([`DirArchiver::resolve_next`], called when
//! too many files or bytes are in flight, or too many entries are held by such
//! directories: [`super::HELD_ENTRIES`]) or when its parent is finished. Entries are always taken back
//! oldest first and every tree holds its entries in name order, so what is stored does not
//! depend on when the reads complete.

use anyhow::Result;
use lifeboat_repo::tree::{Node, Tree};
use lifeboat_repo::Id;

use super::read::source_error;
use super::{Deferred, DirArchiver, Level, Pending, Slot};
use crate::source::cache::CacheEntry;

/// A file's name in its directory and its new files-cache entry.
type Cached = (Vec<u8>, CacheEntry);

impl Level {
    /// Does an entry from `next_pending` on still wait for a read?
    pub(super) fn waiting(&self) -> bool {
        self.slots[self.next_pending.min(self.slots.len())..]
            .iter()
            .any(|s| matches!(s, Slot::Pending(_) | Slot::Dir(_)))
    }
}

impl DirArchiver<'_> {
    /// Take back the first waiting entry of the directory at `depth` on the walk's path (a
    /// file, or a whole listed subdirectory); `false` when none is left.
    pub(super) fn resolve_next(&mut self, depth: usize) -> Result<bool> {
        let level = &mut self.levels[depth];
        while level.next_pending < level.slots.len()
            && !matches!(
                level.slots[level.next_pending],
                Slot::Pending(_) | Slot::Dir(_)
            )
        {
            level.next_pending += 1;
        }
        let at = level.next_pending;
        if at == level.slots.len() {
            return Ok(false);
        }
        level.next_pending += 1;
        let slot = std::mem::replace(&mut level.slots[at], Slot::Gone);
        let (slot, cached) = self.resolve_slot(slot)?;
        let level = &mut self.levels[depth];
        level.slots[at] = slot;
        level.new.extend(cached);
        Ok(true)
    }

    /// Take back every waiting entry of `level` (one no longer on the walk's path).
    pub(super) fn resolve_all(&mut self, level: &mut Level) -> Result<()> {
        for at in level.next_pending..level.slots.len() {
            if !matches!(level.slots[at], Slot::Pending(_) | Slot::Dir(_)) {
                continue;
            }
            let slot = std::mem::replace(&mut level.slots[at], Slot::Gone);
            let (slot, cached) = self.resolve_slot(slot)?;
            level.slots[at] = slot;
            level.new.extend(cached);
        }
        level.next_pending = level.slots.len();
        Ok(())
    }

    /// A waiting entry made ready (or gone, when its file could not be read), with the
    /// files-cache entry of a file read consistently.
    fn resolve_slot(&mut self, slot: Slot) -> Result<(Slot, Option<Cached>)> {
        match slot {
            Slot::Pending(p) => self.take_back(*p),
            Slot::Dir(d) => {
                let Deferred {
                    mut node,
                    mut level,
                } = *d;
                self.held -= level.slots.len();
                self.resolve_all(&mut level)?;
                node.subtree = Some(self.finish_level(level)?);
                Ok((Slot::Ready(node), None))
            }
            other => Ok((other, None)),
        }
    }

    /// Wait for one queued file's read and store it.
    fn take_back(&mut self, p: Pending) -> Result<(Slot, Option<Cached>)> {
        let Pending {
            node,
            abs,
            name,
            m,
            reply,
        } = p;
        self.in_flight_bytes -= m.len();
        self.in_flight_files -= 1;
        let read = match self.pool.as_mut() {
            Some(pool) => pool.take(reply),
            None => Err(anyhow::anyhow!("the reader threads stopped")),
        };
        match read.and_then(|r| self.store_read(node, &m, r)) {
            Ok((n, cached)) => Ok((Slot::Ready(n), cached.map(|c| (name, c)))),
            Err(e) if source_error(&e).is_some() => {
                self.unreadable(&abs, &e);
                Ok((Slot::Gone, None))
            }
            Err(e) => Err(e),
        }
    }

    /// Store the tree of a directory whose every entry is ready, and its files-cache record.
    pub(super) fn finish_level(&mut self, level: Level) -> Result<Id> {
        self.new_cache.add_dir(&level.rel, &level.new);
        let nodes: Vec<Node> = (level.slots.into_iter())
            .filter_map(|slot| match slot {
                Slot::Ready(n) => Some(n),
                _ => None,
            })
            .collect();
        let mut tree = Tree { nodes };
        Ok(self.writer.add_tree(&mut tree)?)
    }
}
