//! Large buffers handed back for reuse along the backup pipeline.
//!
//! A backup moves its big buffers one way through threads: a chunk read on the walk, its
//! compressed form made on a compressor, a 16 MiB pack built on the packer and freed by the
//! uploader. Buffers of 1 MiB and more are `mmap`ed and unmapped by glibc (the binary pins
//! that threshold so that a restore's RSS follows what it holds), so each one used to cost
//! fresh zero-filled pages: on the Linux source tree about 170,000 page faults per backup,
//! most of them here, and on large files one fault per 4 KiB of data. The stages now give
//! such buffers back when done with them and take one from here before allocating.
//!
//! Requests are rounded up to a size class, 1 MiB × 2^k plus [`SLACK`] (zstd's compress
//! bound and age's tags fit in the slack), so that a buffer freed by one stage serves the
//! next request of its class whatever its exact size: a 1.3 MiB chunk's buffer serves a
//! 1.9 MiB chunk. Only the pages a buffer has been written to are resident, so the rounding
//! costs address space, not memory. The pool keeps at most [`PER_CLASS`] buffers of a class
//! and [`MAX_BYTES`] bytes of their contents at their last use, so what it keeps is a
//! constant, never a function of the data. [`clear`] drops them all (a writer does at the
//! end of its backup).

use std::sync::Mutex;

/// Requests smaller than this are not pooled: the allocator's own free lists serve them.
pub const MIN_POOLED: usize = 512 << 10;
/// Room above each class's power of two.
pub const SLACK: usize = 64 << 10;
/// Classes 1 MiB … 32 MiB (plus slack); larger requests are not pooled.
pub const CLASSES: usize = 6;
/// At most this many buffers of one class are kept…
pub const PER_CLASS: usize = 8;
/// …and at most this many bytes of what they held when given back.
pub const MAX_BYTES: usize = 96 << 20;

/// The capacity of class `k`'s buffers.
pub const fn class_size(k: usize) -> usize {
    (1 << 20 << k) + SLACK
}

/// The class a request of `capacity` bytes is served from, if it is pooled.
fn class_for_request(capacity: usize) -> Option<usize> {
    if capacity < MIN_POOLED {
        return None;
    }
    (0..CLASSES).find(|&k| class_size(k) >= capacity)
}

/// The class a buffer of `capacity` can serve: the largest whose size it holds.
fn class_for_buffer(capacity: usize) -> Option<usize> {
    if capacity > 2 * class_size(CLASSES - 1) {
        return None; // far larger than anything asked for: not worth keeping
    }
    (0..CLASSES).rev().find(|&k| class_size(k) <= capacity)
}

struct Kept {
    buf: Vec<u8>,
    /// What it held when given back: the pages it has resident, near enough.
    used: usize,
}

struct Pool {
    free: [Vec<Kept>; CLASSES],
    bytes: usize,
}

impl Pool {
    const fn new() -> Pool {
        Pool {
            free: [const { Vec::new() }; CLASSES],
            bytes: 0,
        }
    }

    fn take(&mut self, capacity: usize) -> Vec<u8> {
        let Some(k) = class_for_request(capacity) else {
            return Vec::with_capacity(capacity);
        };
        match self.free[k].pop() {
            Some(kept) => {
                self.bytes -= kept.used;
                kept.buf
            }
            None => Vec::with_capacity(class_size(k)),
        }
    }

    /// Keeps `buf` when there is room; hands it back otherwise, to be dropped by the caller
    /// outside the lock (unmapping 32 MiB is not done holding it).
    fn give(&mut self, mut buf: Vec<u8>) -> Option<Vec<u8>> {
        let Some(k) = class_for_buffer(buf.capacity()) else {
            return Some(buf);
        };
        let used = buf.len().max(MIN_POOLED);
        if self.free[k].len() >= PER_CLASS || self.bytes + used > MAX_BYTES {
            return Some(buf);
        }
        buf.clear();
        self.bytes += used;
        self.free[k].push(Kept { buf, used });
        None
    }

    fn kept(&self) -> (usize, usize) {
        (self.free.iter().map(Vec::len).sum(), self.bytes)
    }
}

static POOL: Mutex<Pool> = Mutex::new(Pool::new());

fn pool() -> std::sync::MutexGuard<'static, Pool> {
    POOL.lock().unwrap_or_else(|p| p.into_inner())
}

/// An empty buffer with room for at least `capacity` bytes: a kept one of the request's
/// class when there is one, a new one of the class's size otherwise (exactly `capacity`
/// when the request is too small or too large to pool).
pub fn take(capacity: usize) -> Vec<u8> {
    if class_for_request(capacity).is_none() {
        return Vec::with_capacity(capacity);
    }
    pool().take(capacity)
}

/// Give a buffer back once its contents are no longer needed, *before* clearing it: its
/// length is what the pool counts. Kept when the pool has room for its class; dropped
/// otherwise.
pub fn give(buf: Vec<u8>) {
    if buf.capacity() < class_size(0) {
        return;
    }
    let rejected = pool().give(buf);
    drop(rejected);
}

/// Drop every kept buffer.
pub fn clear() {
    let free = {
        let mut p = pool();
        p.bytes = 0;
        std::mem::replace(&mut p.free, [const { Vec::new() }; CLASSES])
    };
    drop(free);
}

/// Buffers and bytes kept now.
pub fn kept() -> (usize, usize) {
    pool().kept()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_round_up_to_a_class_and_buffers_serve_theirs() {
        assert_eq!(class_for_request(MIN_POOLED - 1), None, "small: the heap's");
        assert_eq!(class_for_request(MIN_POOLED), Some(0));
        assert_eq!(class_for_request(1 << 20), Some(0));
        assert_eq!(class_for_request((1 << 20) + SLACK + 1), Some(1));
        // A 4 MiB chunk's compress bound is a little over 4 MiB: still the 4 MiB class.
        assert_eq!(class_for_request((4 << 20) + (16 << 10)), Some(2));
        assert_eq!(class_for_request((16 << 20) + (16 << 20) / 64), Some(5));
        assert_eq!(
            class_for_request(class_size(CLASSES - 1) + 1),
            None,
            "too large"
        );
        // A buffer serves the largest class it holds; an odd size serves the one below.
        assert_eq!(class_for_buffer(class_size(2)), Some(2));
        assert_eq!(class_for_buffer(class_size(3) - 1), Some(2));
        assert_eq!(class_for_buffer(class_size(0) - 1), None);
        assert_eq!(class_for_buffer(3 * class_size(CLASSES - 1)), None);
    }

    #[test]
    fn the_pool_reuses_large_buffers_and_stays_bounded() {
        let mut p = Pool::new();
        // Small buffers are never kept.
        assert!(p.give(Vec::with_capacity(4096)).is_some());
        assert_eq!(p.kept(), (0, 0));
        // A new buffer has its class's size, so that it serves any request of the class.
        let mut b = p.take(1_300_000);
        assert_eq!(b.capacity(), class_size(1));
        b.extend_from_slice(&[7; 1_300_000]);
        let ptr = b.as_ptr();
        assert!(p.give(b).is_none());
        assert_eq!(p.kept(), (1, 1_300_000), "counted by what it held");
        let again = p.take(1_900_000);
        assert_eq!(again.as_ptr(), ptr, "the kept buffer is reused");
        assert!(again.is_empty() && again.capacity() == class_size(1));
        assert_eq!(p.kept(), (0, 0));
        // Another class's request does not take it.
        assert!(p.give(again).is_none());
        let big = p.take(8 << 20);
        assert_eq!(big.capacity(), class_size(3));
        assert_eq!(p.kept().0, 1, "the smaller one stays");
        let small = p.take(600 << 10);
        assert_eq!(small.capacity(), class_size(0));
        assert_eq!(p.kept().0, 1, "nor a smaller class's");
        // Bounded per class and in bytes, whatever is given.
        let mut p = Pool::new();
        for _ in 0..100 {
            let _ = p.give(Vec::with_capacity(class_size(0)));
        }
        assert_eq!(p.kept().0, PER_CLASS);
        for k in 0..CLASSES {
            for _ in 0..100 {
                let mut b = Vec::with_capacity(class_size(k));
                b.resize(class_size(k), 1);
                let _ = p.give(b);
            }
        }
        let (n, bytes) = p.kept();
        assert!(
            n <= PER_CLASS * CLASSES && bytes <= MAX_BYTES,
            "{n} buffers, {bytes} bytes"
        );
        // Far too large to keep.
        let mut p = Pool::new();
        assert!(p
            .give(Vec::with_capacity(3 * class_size(CLASSES - 1)))
            .is_some());
        assert_eq!(p.kept(), (0, 0));
    }

    #[test]
    fn the_shared_pool_hands_out_buffers_that_fit() {
        // Other tests may use the shared pool at the same time: only what holds whatever
        // they do is asserted.
        give(Vec::with_capacity(class_size(1)));
        let b = take(1 << 20);
        assert!(b.is_empty() && b.capacity() >= 1 << 20);
        let (n, bytes) = kept();
        assert!(n <= PER_CLASS * CLASSES && bytes <= MAX_BYTES);
        assert!(take(100).capacity() >= 100);
    }
}
