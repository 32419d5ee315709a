//! The `command` source: the stdout of any program (`mysqldump`, `etcdctl snapshot save`,
//! `pg_dumpall --globals-only`, …) streamed into the repository, and the plan's
//! `restore_command` / `verify_command` that read the stream back on stdin. Commands run
//! without a shell, exactly as listed; lifeboat's environment is inherited.

/// The name of the output inside a command snapshot's root tree.
pub const OUTPUT_NAME: &str = "command.out";

/// A blocking command line for `argv` (non-empty, as the config guarantees).
pub fn command(argv: &[String]) -> std::process::Command {
    let mut cmd = std::process::Command::new(&argv[0]);
    cmd.args(&argv[1..]);
    cmd
}

/// A tokio command line for `argv` (non-empty).
pub fn async_command(argv: &[String]) -> tokio::process::Command {
    let mut cmd = tokio::process::Command::new(&argv[0]);
    cmd.args(&argv[1..]);
    cmd
}
