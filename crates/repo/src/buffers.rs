//! Large buffers handed back for reuse along the backup pipeline.
//!
//! A backup moves its big buffers one way through threads: a chunk read on the walk, its
//! compressed form made on a compressor, a 16 MiB pack built on the packer and freed by the
//! uploader. Buffers of 1 MiB and more are `mmap`ed and unmapped by glibc (the binary pins
//! that threshold so that a restore's RSS follows what it holds), so each one used to cost
//! fresh zero-filled pages: on the Linux source tree about 170,000 page faults per backup,
//! most of them here. The stages now give such buffers back when done with them and take
//! one from here before allocating; the pool holds at most [`MAX_BUFFERS`] buffers and
//! [`MAX_BYTES`] bytes, so what it keeps is a constant, never a function of the data.
//! [`clear`] drops them all (a writer does at the end of its backup).

use std::sync::Mutex;

/// Buffers smaller than this are not worth keeping: the allocator's own free lists serve them.
pub const MIN_CAPACITY: usize = 1 << 20;
/// Buffers larger than this are not kept (a pack is 16 MiB plus a little).
pub const MAX_CAPACITY: usize = 40 << 20;
/// At most this many buffers and bytes are kept.
pub const MAX_BUFFERS: usize = 16;
pub const MAX_BYTES: usize = 48 << 20;

struct Pool {
    free: Vec<Vec<u8>>,
    bytes: usize,
}

impl Pool {
    const fn new() -> Pool {
        Pool {
            free: Vec::new(),
            bytes: 0,
        }
    }

    fn take(&mut self, capacity: usize) -> Vec<u8> {
        if capacity >= MIN_CAPACITY / 2 {
            let best = (self.free.iter().enumerate())
                // Not a 16 MiB pack buffer for a 1 MiB chunk: what a buffer holds is what
                // the stage that has it counts, so it must not be much more.
                .filter(|(_, b)| (capacity..=capacity.saturating_mul(2)).contains(&b.capacity()))
                .min_by_key(|(_, b)| b.capacity())
                .map(|(i, _)| i);
            if let Some(i) = best {
                let b = self.free.swap_remove(i);
                self.bytes -= b.capacity();
                return b;
            }
        }
        Vec::with_capacity(capacity)
    }

    fn give(&mut self, mut buf: Vec<u8>) {
        let cap = buf.capacity();
        if !(MIN_CAPACITY..=MAX_CAPACITY).contains(&cap)
            || self.free.len() >= MAX_BUFFERS
            || self.bytes + cap > MAX_BYTES
        {
            return;
        }
        buf.clear();
        self.bytes += cap;
        self.free.push(buf);
    }

    fn kept(&self) -> (usize, usize) {
        (self.free.len(), self.bytes)
    }
}

static POOL: Mutex<Pool> = Mutex::new(Pool::new());

fn pool() -> std::sync::MutexGuard<'static, Pool> {
    POOL.lock().unwrap_or_else(|p| p.into_inner())
}

/// An empty buffer with room for at least `capacity` bytes: a kept one when one is big
/// enough and at most twice that (the smallest such), a new one otherwise.
pub fn take(capacity: usize) -> Vec<u8> {
    if capacity < MIN_CAPACITY / 2 {
        return Vec::with_capacity(capacity);
    }
    pool().take(capacity)
}

/// Give a buffer back once its contents are no longer needed. Kept when it is large, the
/// pool has room, and not larger than [`MAX_CAPACITY`]; dropped otherwise (after the lock
/// is released: unmapping 16 MiB is not done holding it).
pub fn give(buf: Vec<u8>) {
    if buf.capacity() < MIN_CAPACITY {
        return;
    }
    let mut p = pool();
    if p.free.len() < MAX_BUFFERS {
        p.give(buf);
    }
}

/// Drop every kept buffer.
pub fn clear() {
    let free = {
        let mut p = pool();
        p.bytes = 0;
        std::mem::take(&mut p.free)
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
    fn the_pool_reuses_large_buffers_and_stays_bounded() {
        let mut p = Pool::new();
        // Small buffers are never kept.
        p.give(Vec::with_capacity(4096));
        assert_eq!(p.kept(), (0, 0));
        // A large one is, and comes back for a request it can hold, emptied.
        let mut b = Vec::with_capacity(2 << 20);
        b.extend_from_slice(b"old contents");
        let ptr = b.as_ptr();
        p.give(b);
        assert_eq!(p.kept().0, 1);
        let again = p.take(1 << 20);
        assert_eq!(again.as_ptr(), ptr, "the kept buffer is reused");
        assert!(again.is_empty() && again.capacity() >= 2 << 20);
        assert_eq!(p.kept(), (0, 0));
        // A request larger than any kept buffer allocates.
        p.give(again);
        let big = p.take(8 << 20);
        assert!(big.capacity() >= 8 << 20);
        assert_eq!(p.kept().0, 1, "the smaller one stays");
        // The smallest buffer that fits is the one handed out, never one over twice the
        // size asked for.
        p.give(big);
        assert_eq!(p.take(5 << 20).capacity(), 8 << 20);
        p.give(Vec::with_capacity(8 << 20));
        assert_eq!(
            p.take(3 << 20).capacity(),
            3 << 20,
            "8 MiB is too big for 3"
        );
        assert_eq!(p.kept().0, 2);
        // Bounded by count and bytes, whatever is given.
        let mut p = Pool::new();
        for _ in 0..100 {
            p.give(Vec::with_capacity(MIN_CAPACITY));
        }
        let (n, bytes) = p.kept();
        assert!(
            n <= MAX_BUFFERS && bytes <= MAX_BYTES,
            "{n} buffers, {bytes} bytes"
        );
        for _ in 0..100 {
            p.give(Vec::with_capacity(MAX_CAPACITY));
        }
        assert!(p.kept().1 <= MAX_BYTES);
        // Too large to keep.
        let mut p = Pool::new();
        p.give(Vec::with_capacity(MAX_CAPACITY + 1));
        assert_eq!(p.kept(), (0, 0));
    }

    #[test]
    fn the_shared_pool_hands_out_buffers_that_fit() {
        // Other tests may use the shared pool at the same time: only what holds whatever
        // they do is asserted.
        give(Vec::with_capacity(2 << 20));
        let b = take(1 << 20);
        assert!(b.is_empty() && b.capacity() >= 1 << 20);
        let (n, bytes) = kept();
        assert!(n <= MAX_BUFFERS && bytes <= MAX_BYTES);
        assert!(take(100).capacity() >= 100);
    }
}
