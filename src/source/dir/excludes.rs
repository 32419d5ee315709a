//! Exclude rules of a `dir` source.

use std::path::Path;

use anyhow::{Context, Result};
use globset::{GlobBuilder, GlobSet, GlobSetBuilder};

/// Exclude rules, gitignore-like: a pattern without `/` matches a name at any depth; with
/// `/` it matches the path relative to the source root; a trailing `/` matches directories only.
#[derive(Debug)]
pub struct Excludes {
    any: GlobSet,
    dirs_only: GlobSet,
    anchored: GlobSet,
    anchored_dirs: GlobSet,
}

impl Excludes {
    pub fn new(patterns: &[String]) -> Result<Excludes> {
        let mut sets = [
            GlobSetBuilder::new(),
            GlobSetBuilder::new(),
            GlobSetBuilder::new(),
            GlobSetBuilder::new(),
        ];
        for p in patterns {
            let dir_only = p.ends_with('/');
            let core = p.trim_end_matches('/');
            let anchored = core.contains('/');
            let core = core.trim_start_matches('/');
            let glob = GlobBuilder::new(core)
                .literal_separator(anchored)
                .build()
                .with_context(|| format!("exclude pattern {p:?} is not a valid glob"))?;
            sets[(anchored as usize) * 2 + dir_only as usize].add(glob);
        }
        let [a, b, c, d] = sets;
        Ok(Excludes {
            any: a.build()?,
            dirs_only: b.build()?,
            anchored: c.build()?,
            anchored_dirs: d.build()?,
        })
    }

    pub fn is_excluded(&self, rel: &Path, name: &std::ffi::OsStr, is_dir: bool) -> bool {
        self.any.is_match(name)
            || self.anchored.is_match(rel)
            || (is_dir && (self.dirs_only.is_match(name) || self.anchored_dirs.is_match(rel)))
    }
}
