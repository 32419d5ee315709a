//! `dir` sources: a directory tree walked into the repository (with the files cache), and
//! restore-tested into a scratch directory with every file's BLAKE3 checked.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context, Result};
use async_trait::async_trait;
use lifeboat_repo::reader::BlobReader;
use lifeboat_repo::restore::{restore_tree, RestoreOptions};

use super::{BeginBackup, Begun, RepoSource, TestCx, Written};
use crate::engine::restore_test::{explain, RtoTimer};
use crate::engine::{open, KeyNeed, RestoreTestOutcome};
use crate::source::cache::{NewCache, OldCache};
use crate::source::dir::{DirArchiver, DirSource, Excludes};

pub(super) struct Dir<'a> {
    pub path: &'a PathBuf,
    pub exclude: &'a [String],
    pub one_file_system: bool,
    pub read_threads: Option<usize>,
}

#[async_trait]
impl RepoSource for Dir<'_> {
    async fn begin(&self, cx: &BeginBackup<'_>) -> Result<Begun> {
        let src = DirSource {
            root: self.path.clone(),
            excludes: Excludes::new(self.exclude)
                .with_context(|| format!("plan {}: source.exclude", cx.plan.name))?,
            one_file_system: self.one_file_system,
        };
        let (cache_path, cancel) = (cx.cache_path.clone(), cx.cancel.clone());
        let read_threads = self
            .read_threads
            .unwrap_or_else(crate::source::dir::default_read_threads);
        Ok(Begun {
            write: Box::new(move |writer, env| {
                let src = Arc::new(src);
                // The size estimate is a second walk of the tree (an lstat per entry);
                // only a progress bar's ETA uses it.
                if writer.progress().is_watched() {
                    let (src, progress) = (src.clone(), writer.progress().clone());
                    std::thread::spawn(move || {
                        crate::source::dir::estimate(&src, &progress, &cancel)
                    });
                }
                // The last cache read a directory at a time, the new one written as the
                // walk goes; put in its place only after the commit.
                let old = OldCache::open(&cache_path);
                let new = NewCache::create(&cache_path);
                let mut arch = DirArchiver::new(writer, env.params, env.seed, old, new);
                arch.read_threads = read_threads;
                let root = arch.run(&src)?;
                let DirArchiver {
                    stats,
                    warnings,
                    new_cache,
                    unreadable,
                    ..
                } = arch;
                let cache = new_cache.finish();
                Ok(Written {
                    root,
                    stats,
                    warnings,
                    location: src.root.display().to_string(),
                    probes: Default::default(),
                    unreadable,
                    after_commit: Some(Box::new(move || {
                        if let Err(e) = cache.commit() {
                            tracing::warn!(error = %format!("{e:#}"), "could not save the files cache; the next backup reads every file");
                        }
                    })),
                })
            }),
            end: None,
        })
    }

    async fn restore_test(&self, cx: &TestCx<'_>, outcome: &mut RestoreTestOutcome) -> Result<()> {
        // A real restore pays the listing and the index load: the RTO starts here.
        let mut timer = RtoTimer::start();
        let repo = open(cx.config, KeyNeed::Read, cx.from).await?;
        let snapshot = repo.find_snapshot(cx.snapshot, Some(&cx.plan.name)).await?;
        outcome.snapshot = snapshot.id.to_hex();
        timer.phase(outcome, "list");
        let index = Arc::new(repo.load_lookup_index().await.context("load index")?);
        timer.phase(outcome, "index");
        let reader = Arc::new(BlobReader::new(repo.clone(), index));
        let dir = tempfile::Builder::new()
            .prefix("lifeboat-restore-test-")
            .tempdir_in(cx.scratch)
            .with_context(|| format!("create a scratch directory in {}", cx.scratch.display()))?;
        outcome.checked = "every file's BLAKE3 against the manifest, and the file count".into();
        let report = restore_tree(
            reader,
            snapshot.manifest.tree_root()?,
            dir.path(),
            &RestoreOptions::default(),
            cx.progress.clone(),
            cx.cancel.clone(),
        )
        .await;
        timer.phase(outcome, "restore");
        let report = report.map_err(|e| explain(e, &snapshot.id))?;
        outcome.bytes = report.bytes;
        let m = &snapshot.manifest.stats;
        if report.files != m.files {
            outcome.differences.push(format!(
                "{} files restored, the snapshot recorded {}",
                report.files, m.files
            ));
        }
        if report.bytes != m.bytes {
            outcome.differences.push(format!(
                "{} bytes restored, the snapshot recorded {}",
                report.bytes, m.bytes
            ));
        }
        Ok(())
    }
}
