//! Reuse of activation buffers: after the first inference of a batch, running a network allocates and
//! zeroes nothing. Every kernel writes every element of its output, so a reused buffer's old contents never
//! show.
//!
//! One pool serves every thread. Per-thread pools drift: a buffer taken on one worker is often given back
//! on another, so each worker's pool came to hold its own copy of the largest buffers and resident memory
//! crept up run after run. A buffer is lent to the smallest request it fits and is never grown, so the
//! pool holds the distinct buffers that inference has live at once and nothing more; its lock is taken a
//! few times per layer, not per pixel. Among buffers of the fitting size, one last given back by the
//! asking thread is preferred: its lines are likely still in that core's cache, where a buffer from
//! another core would first have to be fetched from there.
//!
//! Invariant: every buffer in the pool has its whole capacity initialised, and only buffers from [`take`]
//! are handed back to [`give`]. So a buffer lent at a small length comes back with its full size still
//! usable, and is never zeroed again. The module is private to the crate so that the invariant can be
//! checked by reading it.

use crate::buffer::{zeros, Buffer};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

/// A free list of buffers, each initialised over its whole capacity, with the rayon thread that gave it
/// back (`None` outside the pool's threads).
pub(crate) struct Pool {
    free: Mutex<Vec<(Buffer, Option<usize>)>>,
    /// Bytes of every buffer the pool has made (it frees none).
    allocated: AtomicUsize,
}

/// The pool every kernel takes its outputs from.
static SHARED: Pool = Pool::new();

impl Pool {
    /// An empty pool.
    const fn new() -> Self {
        Self {
            free: Mutex::new(Vec::new()),
            allocated: AtomicUsize::new(0),
        }
    }

    /// A buffer of exactly `n` elements whose contents are unspecified (old values or zeros).
    fn take(&self, n: usize) -> Buffer {
        let reused = {
            let mut free = self.free.lock().unwrap_or_else(|e| e.into_inner());
            // The smallest buffer that is big enough; of equals, this thread's latest.
            let thread = rayon::current_thread_index();
            let best = free
                .iter()
                .enumerate()
                .filter(|(_, (b, _))| b.capacity() >= n)
                .min_by_key(|&(i, (b, owner))| {
                    (b.capacity(), *owner != thread, std::cmp::Reverse(i))
                })
                .map(|(i, _)| i);
            best.map(|i| free.swap_remove(i).0)
        };
        let mut data = reused.unwrap_or_else(|| {
            let mut fresh = zeros(n);
            // Keep the invariant: the allocation may hold more than `n`.
            fresh.resize(fresh.capacity(), 0.0);
            let bytes = fresh.capacity() * std::mem::size_of::<f32>();
            self.allocated.fetch_add(bytes, Ordering::Relaxed);
            fresh
        });
        // SAFETY: `n` is within the capacity, which is initialised (above, or by the module invariant);
        // f32 has no invalid bit patterns.
        unsafe { data.set_len(n) };
        data
    }

    /// Returns a buffer from [`Pool::take`] for later takes on any thread.
    fn give(&self, data: Buffer) {
        self.free
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push((data, rayon::current_thread_index()));
    }
}

/// A buffer of exactly `n` elements from the shared pool, contents unspecified (old values or zeros).
pub(crate) fn take(n: usize) -> Buffer {
    SHARED.take(n)
}

/// Returns a buffer from [`take`] to the shared pool.
pub(crate) fn give(data: Buffer) {
    SHARED.give(data);
}

/// Bytes of the buffers the shared pool has made so far: its whole size, since it frees none.
pub(crate) fn allocated_bytes() -> usize {
    SHARED.allocated.load(Ordering::Relaxed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buffers_are_reused_with_the_requested_length() {
        let pool = Pool::new();
        let mut a = pool.take(1000);
        a.iter_mut().for_each(|v| *v = 1.0);
        let ptr = a.as_ptr();
        pool.give(a);
        let b = pool.take(400);
        assert_eq!(b.len(), 400);
        assert_eq!(b.as_ptr(), ptr, "the same memory comes back");
        pool.give(b);
        let c = pool.take(900);
        assert_eq!(c.len(), 900);
        let d = pool.take(2000);
        assert_eq!(d.len(), 2000);
        assert!(d.iter().all(|&v| v == 0.0), "fresh memory is zeroed");
    }

    #[test]
    fn a_buffer_lent_short_comes_back_at_full_size_without_zeroing() {
        let pool = Pool::new();
        let mut big = pool.take(10_000);
        big.fill(1.0);
        let ptr = big.as_ptr();
        pool.give(big);
        let small = pool.take(100);
        assert_eq!(small.as_ptr(), ptr, "the only buffer is lent");
        pool.give(small);
        let again = pool.take(10_000);
        assert_eq!(again.as_ptr(), ptr);
        assert!(
            again.iter().all(|&v| v == 1.0),
            "its old contents are kept, not zeroed again"
        );
        pool.give(again);
    }

    #[test]
    fn a_request_larger_than_every_free_buffer_gets_new_memory_and_grows_none() {
        let pool = Pool::new();
        let small = pool.take(100);
        let ptr = small.as_ptr();
        pool.give(small);
        let large = pool.take(5000);
        assert_ne!(
            large.as_ptr(),
            ptr,
            "the small buffer is not grown into the large one"
        );
        assert!(pool.allocated.load(Ordering::Relaxed) >= 5100 * 4);
        assert_eq!(large.len(), 5000);
        let again = pool.take(50);
        assert_eq!(again.as_ptr(), ptr, "the small buffer is still there");
        assert!(again.capacity() < 5000);
        pool.give(large);
        pool.give(again);
    }
}
