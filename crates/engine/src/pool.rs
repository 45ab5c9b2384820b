//! Per-thread reuse of activation buffers: after the first inference, running a network allocates and zeroes
//! nothing. Every kernel writes every element of its output, so a reused buffer's old contents never show.

use std::cell::RefCell;

/// A buffer with how much of it has ever been initialised.
struct Slot {
    data: Vec<f32>,
    initialised: usize,
}

thread_local! {
    static POOL: RefCell<Vec<Slot>> = const { RefCell::new(Vec::new()) };
}

/// A buffer of exactly `n` elements whose contents are unspecified (old values or zeros).
pub fn take(n: usize) -> Vec<f32> {
    let slot = POOL.with(|pool| {
        let mut pool = pool.borrow_mut();
        // Prefer the most recently returned buffer that is big enough (likely still in cache), else the
        // biggest one.
        let pick = pool.iter().rposition(|s| s.initialised >= n).or_else(|| {
            pool.iter()
                .enumerate()
                .max_by_key(|(_, s)| s.initialised)
                .map(|(i, _)| i)
        });
        pick.map(|i| pool.remove(i))
    });
    match slot {
        Some(Slot {
            mut data,
            initialised,
        }) if initialised >= n => {
            // SAFETY: the first `initialised` elements were written before (by `resize` or a kernel) and
            // truncation never de-initialises memory; f32 has no invalid bit patterns.
            unsafe { data.set_len(n) };
            data
        }
        Some(Slot {
            mut data,
            initialised,
        }) => {
            // SAFETY: as above for the first `initialised` elements; `resize` then initialises the rest.
            unsafe { data.set_len(initialised) };
            data.resize(n, 0.0);
            data
        }
        None => vec![0.0; n],
    }
}

/// Returns a buffer for later [`take`]s on this thread.
pub fn give(data: Vec<f32>) {
    let initialised = data.len();
    POOL.with(|pool| pool.borrow_mut().push(Slot { data, initialised }));
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
}
