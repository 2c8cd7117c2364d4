//! How our ops split a parallel part: over the workers of the run in progress
//! (`edge_kernels::parallel`, started by the cpu engine for `threads > 1`), one contiguous run
//! of rows per thread, and serially when the part is too small to pay for a split.
//!
//! One run per thread, not many small items handed out as threads come free: with two threads
//! the caller takes the first share of every layer and the helper the second (with more, the
//! helpers race for theirs; a late helper's share is taken by whoever is free), so a
//! depthwise layer's channels are, for the most part, the ones the same core wrote in the 1×1
//! layer before it and still holds in its L2. Measured on int8 MobileNetV2 at two threads
//! (2 cores): 2.50–2.55 ms against 2.76–2.93 ms with four items per thread taken in any order
//! (the items then ran 1.5× slower in total than on one thread, reading the other core's
//! writes). Splitting the 1×1 layers by points instead of output channels was slower still
//! (2.84–2.90 ms).
use edge_kernels::parallel;
use tract_nnef::prelude::TractResult;

/// Work (multiply-adds, elements) below which a part runs on the calling thread alone.
const SERIAL_BELOW: usize = 32 * 1024;

/// `f(first_row, rows)` over runs of whole rows of `out` (`row_len` values each), one run per
/// thread of the run in progress; `work` sizes the part.
pub(crate) fn par_rows<T: Send>(
    out: &mut [T],
    row_len: usize,
    work: usize,
    f: impl Fn(usize, &mut [T]) -> TractResult<()> + Sync,
) -> TractResult<()> {
    let threads = parallel::threads_here();
    if threads < 2 || work < SERIAL_BELOW {
        return f(0, out);
    }
    parallel::try_for_each_rows(out, row_len, threads, f)
}
