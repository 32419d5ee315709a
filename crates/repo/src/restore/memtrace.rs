//! Where a restore's memory goes, phase by phase, when `LIFEBOAT_RESTORE_MEMTRACE=1` is set
//! (docs/bench.md "Restore memory" was measured with it; off, it costs one check per phase).
//!
//! Linux keeps a process's peak resident set (`VmHWM` in `/proc/self/status`) and lets the
//! process reset it to the current RSS by writing `5` to `/proc/self/clear_refs`. So each
//! phase starts with a reset and ends by reading the peak: the result is the peak RSS
//! *during* that phase, summed up per phase name over the restore's batches (the maximum,
//! not the total). Beside it the restore's own accounting of what it holds (the reader's
//! cached tree packs, the batch's nodes) says which part of the peak is live data and which
//! part the allocator keeps. The summary goes to stderr at the end of the restore. The
//! resets also reset what `getrusage` and GNU time report as the maximum RSS: with the trace
//! on, the restore's peak is the largest phase peak printed here.

use std::collections::BTreeMap;
use std::sync::Mutex;

/// The environment variable that turns the trace on.
pub const ENV: &str = "LIFEBOAT_RESTORE_MEMTRACE";

/// Peak RSS per phase (KiB), kept only while tracing.
pub(crate) struct MemTrace {
    on: bool,
    phases: Mutex<BTreeMap<&'static str, Phase>>,
}

#[derive(Default, Clone, Copy)]
struct Phase {
    order: usize,
    peak_kib: u64,
    /// The largest figure the restore accounted for itself during the phase (bytes).
    held: u64,
    times: u64,
}

/// `(VmHWM, VmRSS)` in KiB.
fn status() -> Option<(u64, u64)> {
    let s = std::fs::read_to_string("/proc/self/status").ok()?;
    let field = |name: &str| {
        s.lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse::<u64>().ok())
    };
    Some((field("VmHWM:")?, field("VmRSS:")?))
}

impl MemTrace {
    pub fn from_env() -> MemTrace {
        MemTrace {
            on: std::env::var(ENV).is_ok_and(|v| v == "1"),
            phases: Mutex::new(BTreeMap::new()),
        }
    }

    pub fn on(&self) -> bool {
        self.on
    }

    /// Start a phase: the peak is reset to the current RSS.
    pub fn start(&self) {
        if self.on {
            // Best effort: without it (old kernels) the figures are peaks since the start.
            let _ = std::fs::write("/proc/self/clear_refs", "5");
        }
    }

    /// End phase `name`, which held `held` bytes by the restore's own count.
    pub fn end(&self, name: &'static str, held: u64) {
        if !self.on {
            return;
        }
        let Some((hwm, _)) = status() else { return };
        let mut phases = self.phases.lock().unwrap_or_else(|p| p.into_inner());
        let n = phases.len();
        let p = phases.entry(name).or_insert(Phase {
            order: n,
            ..Phase::default()
        });
        p.peak_kib = p.peak_kib.max(hwm);
        p.held = p.held.max(held);
        p.times += 1;
    }

    /// Print the phases in the order they first ended.
    pub fn report(&self) {
        if !self.on {
            return;
        }
        let phases = self.phases.lock().unwrap_or_else(|p| p.into_inner());
        let mut v: Vec<(&&str, &Phase)> = phases.iter().collect();
        v.sort_by_key(|(_, p)| p.order);
        let now = status().map_or(0, |(_, rss)| rss);
        eprintln!("restore memory (peak RSS per phase; held = the restore's own count):");
        for (name, p) in v {
            eprintln!(
                "  {name:<28} peak {:>7.1} MiB   held {:>7.1} MiB   ({}×)",
                p.peak_kib as f64 / 1024.0,
                p.held as f64 / 1048576.0,
                p.times
            );
        }
        eprintln!(
            "  at the end                   rss  {:>7.1} MiB",
            now as f64 / 1024.0
        );
    }
}
