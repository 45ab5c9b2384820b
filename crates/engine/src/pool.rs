//! Per-thread reuse of activation buffers: after the first inference, running a network allocates and zeroes
//! nothing. Every kernel writes every element of its output, so a reused buffer's old contents never show.
//!
//! Invariant: every buffer this module hands out has its whole capacity initialised, and only such buffers
//! (from [`take`], on any thread) are handed back to [`give`]. So a buffer lent at a small length comes
//! back with its full size still usable, and is never zeroed again. The module is private to the crate
//! so that the invariant can be checked by reading it.

use crate::buffer::{zeros, Buffer};
use std::cell::RefCell;

thread_local! {
    /// Returned buffers, each initialised over its whole capacity.
    static POOL: RefCell<Vec<Buffer>> = const { RefCell::new(Vec::new()) };
}

/// A buffer of exactly `n` elements whose contents are unspecified (old values or zeros).
pub(crate) fn take(n: usize) -> Buffer {
    let buffer = POOL.with(|pool| {
        let mut pool = pool.borrow_mut();
        // The smallest buffer that is big enough (the latest of equals, likely still in cache), else the
        // biggest one.
        let fits = pool.iter().enumerate().filter(|(_, b)| b.capacity() >= n);
        let best = fits.min_by_key(|&(i, b)| (b.capacity(), std::cmp::Reverse(i)));
        let pick = best.map(|(i, _)| i).or_else(|| {
            pool.iter()
                .enumerate()
                .max_by_key(|(_, b)| b.capacity())
                .map(|(i, _)| i)
        });
        pick.map(|i| pool.swap_remove(i))
    });
    let mut data = match buffer {
        Some(mut data) => {
            // SAFETY: the whole capacity is initialised (module invariant).
            unsafe { data.set_len(data.capacity()) };
            if data.len() < n {
                data.resize(n, 0.0);
            }
            data
        }
        None => zeros(n),
    };
    // Keep the invariant: growth may have reserved more than `n`.
    let capacity = data.capacity();
    if data.len() < capacity {
        data.resize(capacity, 0.0);
    }
    // SAFETY: the whole capacity is initialised (above, or by the module invariant); f32 has no
    // invalid bit patterns.
    unsafe { data.set_len(n) };
    data
}

/// Returns a buffer from [`take`] for later [`take`]s on this thread.
pub(crate) fn give(data: Buffer) {
    POOL.with(|pool| pool.borrow_mut().push(data));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buffers_are_reused_with_the_requested_length() {
        let mut a = take(1000);
        a.iter_mut().for_each(|v| *v = 1.0);
        let ptr = a.as_ptr();
        give(a);
        let b = take(400);
        assert_eq!(b.len(), 400);
        assert_eq!(b.as_ptr(), ptr, "the same memory comes back");
        give(b);
        let c = take(900);
        assert_eq!(c.len(), 900);
        let d = take(2000);
        assert_eq!(d.len(), 2000);
        assert!(d.iter().all(|&v| v == 0.0), "fresh memory is zeroed");
    }

    #[test]
    fn a_buffer_lent_short_comes_back_at_full_size_without_zeroing() {
        let mut big = take(10_000);
        big.fill(1.0);
        let ptr = big.as_ptr();
        give(big);
        let small = take(100);
        assert_eq!(small.as_ptr(), ptr, "the only buffer is lent");
        give(small);
        let again = take(10_000);
        assert_eq!(again.as_ptr(), ptr);
        assert!(
            again.iter().all(|&v| v == 1.0),
            "its old contents are kept, not zeroed again"
        );
        give(again);
    }
}
