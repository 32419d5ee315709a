//! Child processes at either end of a stream: a backup command whose stdout is the stream
//! (`pg_dump`, `mysqldump`, …) and a restore command that reads it on stdin (`pg_restore`,
//! a plan's `restore_command` / `verify_command`). Owns spawning with clear "not installed"
//! errors, the environment a child gets (lifeboat's secret variables removed, see
//! [`Launch`]), collecting the tail of stderr without letting a full pipe block the child,
//! stopping a child that hangs, and turning an exit status into an error that carries what
//! the command said.
//!
//! Every child runs in its own process group. When the operation's [`Cancel`] fires
//! (SIGTERM, Ctrl-C, or the daemon's per-run timeout) a watcher kills the whole group, so a
//! command that blocks without output — or a shell script's own children — cannot keep a
//! run (and its plan lease) alive.

use std::io::Read;
use std::process::{Child, ChildStdout, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::Duration;

use anyhow::{Context, Result};
use lifeboat_repo::Cancel;
use tokio::io::AsyncReadExt;

/// Bytes of stderr kept for the error message (the end, where the reason usually is).
const STDERR_TAIL: usize = 16 * 1024;
/// How often a watcher looks at the cancel flag.
const WATCH_EVERY: Duration = Duration::from_millis(100);

/// How a child is started: what it is called in messages, the "not installed" hint, the
/// environment variables it must not inherit, a file it needs while it runs (a
/// `PGPASSFILE`), and the flag that stops it.
pub struct Launch<'a> {
    pub what: String,
    /// Appended to a "command not found" error (e.g. which package to install).
    pub hint: &'a str,
    /// Names of lifeboat's secret variables ([`crate::config::Config::secret_env_names`]).
    pub scrub: &'a [String],
    pub cancel: &'a Cancel,
    /// Kept (and so not deleted) until the child has exited.
    pub keep: Option<tempfile::NamedTempFile>,
}

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

/// Kill the process group `pgid` (the child's pid: each child leads its own group).
/// A group that no longer exists gives ESRCH, which is ignored.
pub(crate) fn kill_group(pgid: u32) {
    let pid = i32::try_from(pgid)
        .ok()
        .and_then(rustix::process::Pid::from_raw);
    if let Some(pid) = pid {
        let _ = rustix::process::kill_process_group(pid, rustix::process::Signal::KILL);
    }
}

/// Keeps the last [`STDERR_TAIL`] bytes of what a child writes on stderr.
#[derive(Default)]
struct Tail(Vec<u8>);

impl Tail {
    fn push(&mut self, data: &[u8]) {
        self.0.extend_from_slice(data);
        if self.0.len() > 2 * STDERR_TAIL {
            self.0.drain(..self.0.len() - STDERR_TAIL);
        }
    }

    fn text(&self) -> String {
        let start = self.0.len().saturating_sub(STDERR_TAIL);
        String::from_utf8_lossy(&self.0[start..]).trim().to_string()
    }
}

/// A running backup command whose stdout is being read.
pub struct StreamChild {
    child: Child,
    stderr: Option<JoinHandle<String>>,
    /// Dropping it stops the cancel watcher.
    watcher: Option<mpsc::Sender<()>>,
    cancel: Cancel,
    what: String,
    _keep: Option<tempfile::NamedTempFile>,
}

impl StreamChild {
    /// Start `cmd` with stdout piped, stderr collected, stdin closed, in its own process
    /// group, without lifeboat's secret variables; killed when `launch.cancel` fires.
    pub fn spawn(mut cmd: Command, launch: Launch<'_>) -> Result<(StreamChild, ChildStdout)> {
        use std::os::unix::process::CommandExt;
        for name in launch.scrub {
            cmd.env_remove(name);
        }
        let mut child = cmd
            .process_group(0)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| spawn_error(e, &launch.what, launch.hint))?;
        let stdout = child.stdout.take().context("child stdout")?;
        let mut err = child.stderr.take().context("child stderr")?;
        let stderr = std::thread::Builder::new()
            .name("lifeboat-stderr".into())
            .spawn(move || {
                let mut tail = Tail::default();
                let mut buf = [0u8; 8192];
                while let Ok(n) = err.read(&mut buf) {
                    if n == 0 {
                        break;
                    }
                    tail.push(&buf[..n]);
                }
                tail.text()
            })?;
        let (tx, rx) = mpsc::channel::<()>();
        let (pid, cancel) = (child.id(), launch.cancel.clone());
        std::thread::Builder::new()
            .name("lifeboat-child-watch".into())
            .spawn(move || loop {
                match rx.recv_timeout(WATCH_EVERY) {
                    Err(mpsc::RecvTimeoutError::Timeout) if cancel.is_cancelled() => {
                        kill_group(pid);
                        return;
                    }
                    Err(mpsc::RecvTimeoutError::Timeout) => {}
                    _ => return,
                }
            })?;
        Ok((
            StreamChild {
                child,
                stderr: Some(stderr),
                watcher: Some(tx),
                cancel: launch.cancel.clone(),
                what: launch.what,
                _keep: launch.keep,
            },
            stdout,
        ))
    }

    /// Stop the command and everything it started (the backup failed or was cancelled on
    /// our side).
    pub fn kill(mut self) {
        kill_group(self.child.id());
        let _ = self.child.wait();
        self.watcher.take();
        if let Some(t) = self.stderr.take() {
            let _ = t.join();
        }
    }

    /// Wait for the command; an error with its stderr unless it exited 0. A command killed
    /// because the operation was cancelled gives the cancellation error.
    pub fn finish(mut self) -> Result<()> {
        let status = self
            .child
            .wait()
            .with_context(|| format!("{}: wait", self.what))?;
        self.watcher.take();
        // Whatever the command left running (a shell's background job) goes with it.
        kill_group(self.child.id());
        let stderr = self
            .stderr
            .take()
            .and_then(|t| t.join().ok())
            .unwrap_or_default();
        if !status.success() && self.cancel.is_cancelled() {
            return Err(anyhow::Error::new(lifeboat_repo::RepoError::Cancelled)
                .context(format!("{} was stopped", self.what)));
        }
        check_status(&self.what, status, &stderr)
    }
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
    /// Dropping it (with the child) stops the cancel watcher.
    watcher: tokio::sync::oneshot::Sender<()>,
    cancel: Cancel,
    what: String,
    _keep: Option<tempfile::NamedTempFile>,
}

impl SinkChild {
    /// Start `cmd` with stdin piped, stdout discarded, stderr collected, in its own process
    /// group, without lifeboat's secret variables; killed when `launch.cancel` fires.
    pub fn spawn(mut cmd: tokio::process::Command, launch: Launch<'_>) -> Result<SinkChild> {
        for name in launch.scrub {
            cmd.env_remove(name);
        }
        let mut child = cmd
            .process_group(0)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| spawn_error(e, &launch.what, launch.hint))?;
        let stdin = child.stdin.take().context("child stdin")?;
        let mut err = child.stderr.take().context("child stderr")?;
        let stderr = tokio::spawn(async move {
            let mut tail = Tail::default();
            let mut buf = [0u8; 8192];
            while let Ok(n) = err.read(&mut buf).await {
                if n == 0 {
                    break;
                }
                tail.push(&buf[..n]);
            }
            tail.text()
        });
        let pid = child.id().context("child pid")?;
        let cancel = launch.cancel.clone();
        let (watcher, mut done) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = &mut done => return,
                    _ = tokio::time::sleep(WATCH_EVERY) => {
                        if cancel.is_cancelled() {
                            kill_group(pid);
                            return;
                        }
                    }
                }
            }
        });
        Ok(SinkChild {
            child,
            stdin,
            stderr,
            watcher,
            cancel: launch.cancel.clone(),
            what: launch.what,
            _keep: launch.keep,
        })
    }

    /// Close stdin and wait; an error with stderr unless the command exited 0.
    pub async fn finish(self) -> Result<()> {
        let (status, stderr, parts) = self.close_and_wait().await;
        let status = status.with_context(|| format!("{}: wait", parts.what))?;
        if !status.success() {
            if let Some(e) = parts.stopped() {
                return Err(e);
            }
        }
        check_status(&parts.what, status, &stderr)
    }

    /// The stream failed on our side: stop the command and return what it said, if anything.
    pub async fn abort(self) -> String {
        if let Some(pid) = self.child.id() {
            kill_group(pid);
        }
        self.close_and_wait().await.1
    }

    /// The stream could not be written (e.g. broken pipe): the command probably failed
    /// first, so its own error is the one to report.
    pub async fn failed_write(self, write_error: anyhow::Error) -> anyhow::Error {
        let (status, stderr, parts) = self.close_and_wait().await;
        if let Some(e) = parts.stopped() {
            return e;
        }
        match status {
            Ok(status) if !status.success() => match check_status(&parts.what, status, &stderr) {
                Err(e) => e.context(format!("{write_error:#}")),
                Ok(()) => write_error,
            },
            _ => write_error,
        }
    }

    /// Close stdin, wait for the exit, stop the watcher and whatever the command left
    /// running in its group, and collect stderr.
    async fn close_and_wait(self) -> (std::io::Result<ExitStatus>, String, Ended) {
        let SinkChild {
            mut child,
            stdin,
            stderr,
            watcher,
            cancel,
            what,
            _keep,
        } = self;
        drop(stdin);
        let pid = child.id();
        let status = child.wait().await;
        drop(watcher);
        if let Some(pid) = pid {
            kill_group(pid);
        }
        let stderr = stderr.await.unwrap_or_default();
        (status, stderr, Ended { cancel, what })
    }
}

/// What is left of a [`SinkChild`] once it has exited.
struct Ended {
    cancel: Cancel,
    what: String,
}

impl Ended {
    /// The cancellation error, when the command ended because the operation was cancelled.
    fn stopped(&self) -> Option<anyhow::Error> {
        self.cancel.is_cancelled().then(|| {
            anyhow::Error::new(lifeboat_repo::RepoError::Cancelled)
                .context(format!("{} was stopped", self.what))
        })
    }
}
