//! The `lifeboat` binary: all behaviour lives in the library. The one thing decided here is
//! how glibc's allocator treats large buffers (see [`tune_malloc`]).
#![deny(unsafe_code)]

fn main() -> std::process::ExitCode {
    tune_malloc();
    lifeboat::cli::main()
}

/// Pin glibc's mmap threshold at 1 MiB. By default the threshold is dynamic: once a 16 MiB
/// pack buffer (allocated with `mmap`) is freed, glibc raises the threshold above 16 MiB and
/// every later pack buffer comes from a thread's heap arena instead, where freed memory
/// mostly stays resident. With the threshold fixed, buffers of 1 MiB and more are always
/// mapped and unmapped, so a restore's RSS follows what it holds (docs/bench.md, "Restore
/// memory": 224 → 159 MB for the 300k-file restore from this change alone). Smaller
/// allocations are unaffected. `GLIBC_TUNABLES=glibc.malloc.mmap_threshold=N` (read by glibc
/// before `main`) is overridden by this call.
///
/// Fixing the mmap threshold also fixes the trim threshold at its 128 KiB default: every
/// time more than that is free at the top of a heap it is given back, and the next file's
/// buffers fault it in again (a backup of the Linux source tree took ~100,000 such faults).
/// 16 MiB of free heap top is kept instead; the large buffers a backup moves between its
/// threads are reused through `lifeboat_repo::buffers`.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[allow(unsafe_code)]
fn tune_malloc() {
    // SAFETY: mallopt only sets an allocator parameter; it is called before any other
    // thread exists and takes no pointers.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 1 << 20);
        libc::mallopt(libc::M_TRIM_THRESHOLD, 16 << 20);
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn tune_malloc() {}
