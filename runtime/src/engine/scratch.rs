//! The buffers our ops keep between calls, one per thread: taken out for the length of a call
//! and put back after it, never borrowed across a parallel part. A pool thread that waits inside
//! one op's parallel part may pick up other work (a rayon worker helps while it waits) and enter
//! the same op again; it then finds no buffer and makes its own, where a `RefCell` held across
//! the wait would panic ("already borrowed").
use std::cell::Cell;
use std::thread::LocalKey;

/// Runs `f` on this thread's buffer in `key` (an empty one when another call on this thread
/// holds it), and keeps the buffer for the next call.
pub(crate) fn with<T: Default, R>(
    key: &'static LocalKey<Cell<T>>,
    f: impl FnOnce(&mut T) -> R,
) -> R {
    let mut buffer = key.take();
    let result = f(&mut buffer);
    key.set(buffer);
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    thread_local! {
        static BUFFER: Cell<Vec<u8>> = const { Cell::new(Vec::new()) };
    }

    #[test]
    fn a_call_inside_a_call_gets_its_own_buffer_and_the_outer_one_is_kept() {
        with(&BUFFER, |outer| {
            outer.resize(8, 1);
            with(&BUFFER, |inner| {
                assert!(
                    inner.is_empty(),
                    "the outer call's buffer is not lent twice"
                );
                inner.resize(4, 2);
            });
            assert_eq!(outer, &vec![1; 8]);
        });
        with(&BUFFER, |kept| assert_eq!(kept, &vec![1; 8]));
    }
}
