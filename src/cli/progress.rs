//! Progress on a terminal: a bar with bytes, rate and ETA, redrawn from the engine's
//! [`Progress`] counters. Silent when stderr is not a terminal or output is JSON.

use std::io::IsTerminal;
use std::sync::Arc;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use lifeboat_repo::Progress;

pub struct Bar {
    bar: Option<ProgressBar>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl Bar {
    /// Start drawing `progress` under `label` if stderr is a terminal and `enabled`.
    pub fn start(label: &str, progress: Arc<Progress>, enabled: bool) -> Bar {
        if !enabled || !std::io::stderr().is_terminal() {
            return Bar {
                bar: None,
                task: None,
            };
        }
        progress.watch();
        let bar = ProgressBar::with_draw_target(Some(0), ProgressDrawTarget::stderr_with_hz(5));
        bar.set_style(
            ProgressStyle::with_template(
                "{prefix} [{elapsed_precise}] {wide_bar} {bytes}/{total_bytes} {binary_bytes_per_sec} ETA {eta} {msg}",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
        );
        bar.set_prefix(label.to_string());
        let b = bar.clone();
        let task = tokio::spawn(async move {
            loop {
                let (done, total, files, transferred) = progress.get();
                b.set_length(total.max(done));
                b.set_position(done);
                b.set_message(format!(
                    "{files} files, {} moved",
                    indicatif::HumanBytes(transferred)
                ));
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        });
        Bar {
            bar: Some(bar),
            task: Some(task),
        }
    }

    pub fn finish(self) {
        if let Some(t) = self.task {
            t.abort();
        }
        if let Some(b) = self.bar {
            b.finish_and_clear();
        }
    }
}
