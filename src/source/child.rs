//! Child processes at either end of a stream: a backup command whose stdout is the stream
//! (`pg_dump`, `mysqldump`, …) and a restore command that reads it on stdin (`pg_restore`,
//! a plan's `restore_command`). Owns spawning with clear "not installed" errors, collecting
//! the tail of stderr without letting a full pipe block the child, and turning an exit
//! status into an error that carries what the command said.

use std::io::Read;
use std::process::{Child, ChildStdout, Command, ExitStatus, Stdio};
use std::thread::JoinHandle;

use anyhow::{Context, Result};
use tokio::io::AsyncReadExt;

/// Bytes of stderr kept for the error message (the end, where the reason usually is).
const STDERR_TAIL: usize = 16 * 1024;

/// The program a command line runs, for messages.
pub fn program(cmd: &Command) -> String {
    cmd.get_program().to_string_lossy().into_owned()
}

fn spawn_error(e: std::io::Error, what: &str, hint: &str) -> anyhow::Error {
    if e.kind() == std::io::ErrorKind::NotFound {
        anyhow::anyhow!("{what}: command not found{hint}")
    } else {
        anyhow::Error::new(e).context(format!("{what}: could not start"))
    }
}

/// A running backup command whose stdout is being read.
pub struct StreamChild {
    child: Child,
    stderr: Option<JoinHandle<String>>,
    what: String,
}

impl StreamChild {
    /// Start `cmd` with stdout piped, stderr collected and stdin closed. `hint` is appended
    /// to a "command not found" error (e.g. which package to install).
    pub fn spawn(mut cmd: Command, what: &str, hint: &str) -> Result<(StreamChild, ChildStdout)> {
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| spawn_error(e, what, hint))?;
        let stdout = child.stdout.take().context("child stdout")?;
        let mut err = child.stderr.take().context("child stderr")?;
        let stderr = std::thread::Builder::new()
            .name("lifeboat-stderr".into())
            .spawn(move || {
                let mut tail = Vec::new();
                let mut buf = [0u8; 8192];
                while let Ok(n) = err.read(&mut buf) {
                    if n == 0 {
                        break;
                    }
                    tail.extend_from_slice(&buf[..n]);
                    if tail.len() > 2 * STDERR_TAIL {
                        tail.drain(..tail.len() - STDERR_TAIL);
                    }
                }
                tail_text(&tail)
            })?;
        Ok((
            StreamChild {
                child,
                stderr: Some(stderr),
                what: what.to_string(),
            },
            stdout,
        ))
    }

    /// Stop the command (the backup failed or was cancelled on our side).
    pub fn kill(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if let Some(t) = self.stderr.take() {
            let _ = t.join();
        }
    }

    /// Wait for the command; an error with its stderr unless it exited 0.
    pub fn finish(mut self) -> Result<()> {
        let status = self
            .child
            .wait()
            .with_context(|| format!("{}: wait", self.what))?;
        let stderr = self
            .stderr
            .take()
            .and_then(|t| t.join().ok())
            .unwrap_or_default();
        check_status(&self.what, status, &stderr)
    }
}

fn tail_text(bytes: &[u8]) -> String {
    let start = bytes.len().saturating_sub(STDERR_TAIL);
    String::from_utf8_lossy(&bytes[start..]).trim().to_string()
}

/// `Ok` for exit status 0, else an error naming the command, how it ended and its stderr.
pub fn check_status(what: &str, status: ExitStatus, stderr: &str) -> Result<()> {
    use std::os::unix::process::ExitStatusExt;
    if status.success() {
        return Ok(());
    }
    let how = match (status.code(), status.signal()) {
        (Some(code), _) => format!("exited with status {code}"),
        (None, Some(sig)) => format!("was killed by signal {sig}"),
        _ => "failed".to_string(),
    };
    if stderr.is_empty() {
        anyhow::bail!("{what} {how} (it printed nothing on stderr)")
    }
    anyhow::bail!("{what} {how}: {stderr}")
}

/// A restore-side command reading the stream on stdin (tokio), with stderr collected.
pub struct SinkChild {
    pub child: tokio::process::Child,
    pub stdin: tokio::process::ChildStdin,
    stderr: tokio::task::JoinHandle<String>,
    what: String,
}

impl SinkChild {
    pub fn spawn(mut cmd: tokio::process::Command, what: &str, hint: &str) -> Result<SinkChild> {
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| spawn_error(e, what, hint))?;
        let stdin = child.stdin.take().context("child stdin")?;
        let mut err = child.stderr.take().context("child stderr")?;
        let stderr = tokio::spawn(async move {
            let mut tail = Vec::new();
            let mut buf = [0u8; 8192];
            while let Ok(n) = err.read(&mut buf).await {
                if n == 0 {
                    break;
                }
                tail.extend_from_slice(&buf[..n]);
                if tail.len() > 2 * STDERR_TAIL {
                    tail.drain(..tail.len() - STDERR_TAIL);
                }
            }
            tail_text(&tail)
        });
        Ok(SinkChild {
            child,
            stdin,
            stderr,
            what: what.to_string(),
        })
    }

    /// Close stdin and wait; an error with stderr unless the command exited 0.
    pub async fn finish(self) -> Result<()> {
        let SinkChild {
            mut child,
            stdin,
            stderr,
            what,
        } = self;
        drop(stdin);
        let status = child
            .wait()
            .await
            .with_context(|| format!("{what}: wait"))?;
        let stderr = stderr.await.unwrap_or_default();
        check_status(&what, status, &stderr)
    }

    /// The stream failed on our side: stop the command and return what it said, if anything.
    pub async fn abort(self) -> String {
        let SinkChild {
            mut child,
            stdin,
            stderr,
            ..
        } = self;
        drop(stdin);
        let _ = child.kill().await;
        stderr.await.unwrap_or_default()
    }

    /// The stream could not be written (e.g. broken pipe): the command probably failed
    /// first, so its own error is the one to report.
    pub async fn failed_write(self, write_error: anyhow::Error) -> anyhow::Error {
        let what = self.what.clone();
        let SinkChild {
            mut child,
            stdin,
            stderr,
            ..
        } = self;
        drop(stdin);
        let status = child.wait().await;
        let stderr = stderr.await.unwrap_or_default();
        match status {
            Ok(status) if !status.success() => match check_status(&what, status, &stderr) {
                Err(e) => e.context(format!("{write_error:#}")),
                Ok(()) => write_error,
            },
            _ => write_error,
        }
    }
}
