//! `command` sources: a command's stdout streamed into the repository; restore-tested by
//! feeding the verified stream to the plan's `verify_command` (with `LIFEBOAT_SCRATCH_DIR`
//! set), or by verifying the stream alone when there is none.

use anyhow::{Context, Result};
use async_trait::async_trait;

use super::stream::{write_step, StreamSpec};
use super::{BeginBackup, Begun, RepoSource, TestCx};
use crate::engine::restore_test::RtoTimer;
use crate::engine::stream::OpenStream;
use crate::engine::RestoreTestOutcome;
use crate::source::child::{Launch, SinkChild};

pub(super) struct Command<'a> {
    pub command: &'a [String],
    pub verify_command: Option<&'a [String]>,
}

#[async_trait]
impl RepoSource for Command<'_> {
    async fn begin(&self, cx: &BeginBackup<'_>) -> Result<Begun> {
        let spec = StreamSpec {
            cmd: crate::source::command::command(self.command),
            keep: None,
            scrub: cx.config.secret_env_names(),
            cancel: cx.cancel.clone(),
            what: format!("backup command {:?}", self.command[0]),
            hint: "",
            name: crate::source::command::OUTPUT_NAME,
            location: self.command[0].clone(),
            probes: Default::default(),
            beside: Vec::new(),
        };
        Ok(Begun {
            write: write_step(spec),
            end: None,
        })
    }

    async fn restore_test(&self, cx: &TestCx<'_>, outcome: &mut RestoreTestOutcome) -> Result<()> {
        // A real restore pays the listing and the index load: the RTO starts here.
        let mut timer = RtoTimer::start();
        let stream = OpenStream::open(cx.config, &cx.plan.name, cx.snapshot, cx.from).await?;
        outcome.snapshot = stream.snapshot.id.to_hex();
        timer.phase(outcome, "open");
        let bytes = match self.verify_command {
            Some(argv) => {
                outcome.checked = format!(
                    "every chunk and the stream's BLAKE3, fed to verify_command {:?}",
                    argv[0]
                );
                let dir = tempfile::Builder::new()
                    .prefix("lifeboat-restore-test-")
                    .tempdir_in(cx.scratch)
                    .with_context(|| {
                        format!("create a scratch directory in {}", cx.scratch.display())
                    })?;
                let mut cmd = crate::source::command::async_command(argv);
                cmd.env("LIFEBOAT_SCRATCH_DIR", dir.path());
                let scrub = cx.config.secret_env_names();
                let launch = Launch {
                    what: format!("verify command {:?}", argv[0]),
                    hint: "",
                    scrub: &scrub,
                    cancel: cx.cancel,
                    keep: None,
                };
                let child = SinkChild::spawn(cmd, launch)?;
                stream.pipe_into(child, cx.progress, cx.cancel).await
            }
            None => {
                outcome.checked =
                    "every chunk and the stream's BLAKE3 (no verify_command configured)".into();
                stream
                    .copy_to(&mut tokio::io::sink(), cx.progress, cx.cancel)
                    .await
            }
        };
        timer.phase(outcome, "restore");
        outcome.bytes = bytes?;
        Ok(())
    }
}
