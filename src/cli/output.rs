//! What every subcommand shares and the dispatcher must not own (so no subcommand imports
//! back from `commands`): JSON on stdout for `--json`, and cancellation on SIGINT/SIGTERM.

use lifeboat_repo::Cancel;

/// Cancel on SIGINT or SIGTERM: the operation stops at the next chunk, commits nothing.
pub(super) fn cancel_on_signals() -> Cancel {
    let cancel = Cancel::new();
    let c = cancel.clone();
    tokio::spawn(async move {
        use tokio::signal::unix::{signal, SignalKind};
        let (Ok(mut term), Ok(mut int)) = (
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
        ) else {
            return;
        };
        tokio::select! {
            _ = term.recv() => {},
            _ = int.recv() => {},
        }
        tracing::warn!("signal received: stopping; nothing partial will be visible");
        c.cancel();
    });
    cancel
}

pub(super) fn print_json(v: &serde_json::Value) {
    println!("{}", serde_json::to_string_pretty(v).unwrap_or_default());
}
