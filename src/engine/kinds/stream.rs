//! The writing step shared by stream kinds (`postgres`, `command`): run a command, chunk its
//! stdout into the writer as one file node, and require exit status 0.

use anyhow::Context;
use lifeboat_repo::snapshot::Stats;
use lifeboat_repo::Cancel;

use super::{WriteStep, Written};
use crate::source::child::{Launch, StreamChild};

/// A stream source's command and how its snapshot is described.
pub(super) struct StreamSpec {
    pub cmd: std::process::Command,
    /// A file the command needs while it runs (pg_dump's password file).
    pub keep: Option<tempfile::NamedTempFile>,
    /// The variables the command must not see ([`crate::config::Config::secret_env_names`]).
    pub scrub: Vec<String>,
    /// Kills the command (its process group) when it fires.
    pub cancel: Cancel,
    pub what: String,
    pub hint: &'static str,
    /// The file node's name in the root tree.
    pub name: &'static str,
    pub location: String,
    pub probes: serde_json::Map<String, serde_json::Value>,
    /// Files stored beside the stream (a database's globals), each the stdout of a command
    /// run to completion before the stream's command starts.
    pub beside: Vec<SideFile>,
}

/// A small file of a stream snapshot beside the stream, made by a command.
pub(super) struct SideFile {
    pub cmd: std::process::Command,
    pub keep: Option<tempfile::NamedTempFile>,
    pub what: String,
    /// Its name in the root tree.
    pub name: &'static str,
}

/// The writing step of a stream backup. On any error the command is stopped and the engine
/// aborts the writer: no snapshot.
pub(super) fn write_step(spec: StreamSpec) -> WriteStep {
    Box::new(move |writer, env| {
        let mut nodes = Vec::new();
        for side in spec.beside {
            let launch = Launch {
                what: side.what.clone(),
                hint: spec.hint,
                scrub: &spec.scrub,
                cancel: &spec.cancel,
                keep: side.keep,
            };
            let (child, stdout) = StreamChild::spawn(side.cmd, launch)?;
            match lifeboat_repo::stream::store_stream(
                writer,
                side.name,
                stdout,
                &env.params,
                env.seed,
            ) {
                Ok(node) => nodes.push(node),
                Err(e) => {
                    child.kill();
                    return Err(
                        anyhow::Error::new(e).context(format!("{}: reading its output", side.what))
                    );
                }
            }
            child.finish()?;
        }
        let launch = Launch {
            what: spec.what.clone(),
            hint: spec.hint,
            scrub: &spec.scrub,
            cancel: &spec.cancel,
            keep: spec.keep,
        };
        let (child, stdout) = StreamChild::spawn(spec.cmd, launch)?;
        let node = match lifeboat_repo::stream::store_stream(
            writer,
            spec.name,
            stdout,
            &env.params,
            env.seed,
        ) {
            Ok(node) => node,
            Err(e) => {
                child.kill();
                return Err(
                    anyhow::Error::new(e).context(format!("{}: reading its output", spec.what))
                );
            }
        };
        // The exit status decides: a dump that stopped early may look like a short stream,
        // and a command killed on cancellation gives the cancellation error.
        child.finish()?;
        spec.cancel
            .check()
            .with_context(|| format!("{} was stopped", spec.what))?;
        // The stream's size is what a restore moves; the side files are counted as files.
        let stats = Stats {
            files: 1 + nodes.len() as u64,
            bytes: node.size,
            bytes_read: node.size + nodes.iter().map(|n| n.size).sum::<u64>(),
            ..Default::default()
        };
        nodes.push(node);
        let root = lifeboat_repo::stream::store_root_files(writer, nodes)?;
        Ok(Written {
            root,
            stats,
            warnings: Vec::new(),
            location: spec.location,
            probes: spec.probes,
            after_commit: None,
            unreadable: Vec::new(),
        })
    })
}
