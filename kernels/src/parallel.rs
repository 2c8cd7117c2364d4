//! The threads of a multi-threaded run: [`Workers`] keeps `threads − 1` helper threads beside
//! the caller, and [`for_each`] splits a parallel part (tiles, channel planes) over them.
//!
//! A model run is a chain of short parallel parts (10–100 µs each) with serial parts between
//! them. A pool whose idle threads fall asleep after a few microseconds, as rayon's do, pays a
//! futex wake-up at the start of every part and often finishes the part on one thread before
//! the other is up; measured on MobileNetV2 (int8, 2 cores), two threads that way were slower
//! than one. Here the helpers spin (yielding the core now and then) for as long as a run is
//! on and for a moment after it, then park until the next run; the caller takes items from
//! the same counter, so a part never waits for a helper to wake, and the caller waits at
//! the end of a part only for items already started.
//!
//! Outside [`Workers::run`] (and inside an item of a parallel part) [`for_each`] runs serially
//! on the calling thread: a part never nests and never blocks on a pool it is not in.

use std::cell::Cell;
use std::panic::{catch_unwind, resume_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicPtr, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// How long helpers keep spinning after a run ends, so back-to-back runs do not wake them.
const SPIN_AFTER_RUN: Duration = Duration::from_micros(500);

/// Spins between two `yield_now`s of a waiting helper (a yield lets another runnable thread
/// have the core, e.g. a tract pool thread during one of tract's own parallel parts).
const SPINS_PER_YIELD: u32 = 64;

/// A parallel part in progress: `items` calls of `f`, handed out by `next`.
struct Job<'a> {
    f: &'a (dyn Fn(usize) + Sync),
    items: usize,
    next: AtomicUsize,
    panic: Mutex<Option<Box<dyn std::any::Any + Send>>>,
}

impl Job<'_> {
    /// Takes items until none is left; a panic is kept for the caller to resume.
    fn work(&self) {
        loop {
            let item = self.next.fetch_add(1, Ordering::Relaxed);
            if item >= self.items {
                return;
            }
            if let Err(panic) = catch_unwind(AssertUnwindSafe(|| (self.f)(item))) {
                let mut kept = self.panic.lock().unwrap_or_else(PoisonError::into_inner);
                kept.get_or_insert(panic);
                // no further items: the part has failed
                self.next.store(self.items, Ordering::Relaxed);
            }
        }
    }
}

/// What the caller and the helpers share.
struct Shared {
    /// The part in progress, or null. Only dereferenced by a helper counted in `busy`.
    job: AtomicPtr<Job<'static>>,
    /// Bumped when a part is published.
    parts: AtomicUsize,
    /// Helpers inside the published part; the caller waits for zero before it returns.
    busy: AtomicUsize,
    /// A run is on: helpers spin instead of parking.
    running: AtomicBool,
    shutdown: AtomicBool,
    /// The helpers and the caller.
    threads: usize,
    park: Mutex<()>,
    wake: Condvar,
}

impl Shared {
    /// Sets `flag` (`running` or `shutdown`) and wakes the parked helpers; under the park lock,
    /// so a helper about to park sees it or is woken.
    fn raise(&self, flag: &AtomicBool) {
        {
            let _parked = self.park.lock().unwrap_or_else(PoisonError::into_inner);
            flag.store(true, Ordering::SeqCst);
        }
        self.wake.notify_all();
    }
}

thread_local! {
    /// The workers of the run this thread is the caller of (null: none, or inside a part).
    static CURRENT: Cell<*const Shared> = const { Cell::new(std::ptr::null()) };
}

/// `threads − 1` helper threads that, with the caller, run the parallel parts of one run at a
/// time. Dropping it stops and joins them.
pub struct Workers {
    shared: Arc<Shared>,
    helpers: Vec<JoinHandle<()>>,
    /// One run at a time: the helpers serve one caller's parts.
    run_lock: Mutex<()>,
}

impl std::fmt::Debug for Workers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Workers")
            .field("threads", &self.threads())
            .finish()
    }
}

impl Workers {
    /// Workers for runs on `threads` threads (the caller's included); `name` names the helper
    /// threads (`name-1`, `name-2`, …).
    pub fn new(threads: usize, name: &str) -> std::io::Result<Workers> {
        let shared = Arc::new(Shared {
            job: AtomicPtr::new(std::ptr::null_mut()),
            parts: AtomicUsize::new(0),
            busy: AtomicUsize::new(0),
            running: AtomicBool::new(false),
            shutdown: AtomicBool::new(false),
            threads: threads.max(1),
            park: Mutex::new(()),
            wake: Condvar::new(),
        });
        let mut workers = Workers {
            shared: shared.clone(),
            helpers: Vec::new(),
            run_lock: Mutex::new(()),
        };
        for n in 1..threads.max(1) {
            let shared = shared.clone();
            let helper = std::thread::Builder::new()
                .name(format!("{name}-{n}"))
                .spawn(move || helper(&shared))?;
            // (on an error, `workers` is dropped here and stops the helpers already started)
            workers.helpers.push(helper);
        }
        Ok(workers)
    }

    /// The threads of a run: the helpers and the caller.
    pub fn threads(&self) -> usize {
        self.shared.threads
    }

    /// Runs `run` on the calling thread with the helpers standing by: [`for_each`] inside it
    /// splits its items over them. Runs of several callers take turns.
    pub fn run<R>(&self, run: impl FnOnce() -> R) -> R {
        if self.helpers.is_empty() {
            return run();
        }
        let _turn = self.run_lock.lock().unwrap_or_else(PoisonError::into_inner);
        self.shared.raise(&self.shared.running);
        /// Ends the run (helpers may park) and restores the thread's previous workers, also
        /// when `run` unwinds.
        struct Ending<'a>(&'a Shared, *const Shared);
        impl Drop for Ending<'_> {
            fn drop(&mut self) {
                self.0.running.store(false, Ordering::SeqCst);
                CURRENT.set(self.1);
            }
        }
        let _ending = Ending(&self.shared, CURRENT.replace(Arc::as_ptr(&self.shared)));
        run()
    }
}

impl Drop for Workers {
    fn drop(&mut self) {
        self.shared.raise(&self.shared.shutdown);
        for helper in self.helpers.drain(..) {
            let _ = helper.join();
        }
    }
}

/// A helper thread: takes part in every published part, spins while a run is on, parks when
/// none is.
fn helper(shared: &Shared) {
    // (zero, not the count now: a part published before this thread got going is still on)
    let mut seen = 0;
    let mut spins = 0u32;
    let mut idle_since = Instant::now();
    let mut was_running = false;
    loop {
        let parts = shared.parts.load(Ordering::Acquire);
        if parts != seen {
            seen = parts;
            // counted before the part is read: the caller, having withdrawn the part, waits
            // for `busy` to fall to zero before the part's frame goes away
            shared.busy.fetch_add(1, Ordering::SeqCst);
            let job = shared.job.load(Ordering::SeqCst);
            if !job.is_null() {
                // SAFETY: `job` is the published part, alive until its caller has withdrawn it
                // and seen `busy` at zero, which cannot happen before the `fetch_sub` below
                // (the increment above and the caller's withdrawal are sequentially consistent).
                unsafe { (*job).work() };
            }
            shared.busy.fetch_sub(1, Ordering::SeqCst);
            was_running = true;
            continue;
        }
        if shared.shutdown.load(Ordering::Acquire) {
            return;
        }
        if shared.running.load(Ordering::Acquire) {
            was_running = true;
        } else if std::mem::take(&mut was_running) {
            idle_since = Instant::now();
        } else if idle_since.elapsed() > SPIN_AFTER_RUN {
            let mut parked = shared.park.lock().unwrap_or_else(PoisonError::into_inner);
            while !shared.running.load(Ordering::SeqCst) && !shared.shutdown.load(Ordering::SeqCst)
            {
                parked = shared
                    .wake
                    .wait(parked)
                    .unwrap_or_else(PoisonError::into_inner);
            }
            idle_since = Instant::now();
            continue;
        }
        spins += 1;
        if spins.is_multiple_of(SPINS_PER_YIELD) {
            std::thread::yield_now();
        } else {
            std::hint::spin_loop();
        }
    }
}

/// The threads a parallel part started here would run on: the current run's, else 1.
pub fn threads_here() -> usize {
    let shared = CURRENT.get();
    if shared.is_null() {
        1
    } else {
        // SAFETY: CURRENT is only non-null inside `Workers::run`, which holds the `Workers`
        // (and so the `Shared`) borrowed.
        unsafe { (*shared).threads }
    }
}

/// Calls `f(i)` for every `i` in `0..items`, split over the current run's threads (each item
/// on one thread), or serially when this thread has none or `items < 2`.
pub fn for_each(items: usize, f: impl Fn(usize) + Sync) {
    let shared = CURRENT.get();
    if shared.is_null() || items < 2 {
        (0..items).for_each(f);
        return;
    }
    // SAFETY: non-null CURRENT points at the `Shared` of the `Workers` whose `run` is on this
    // thread's stack (see `Workers::run`).
    let shared = unsafe { &*shared };
    let job = Job {
        f: &f,
        items,
        next: AtomicUsize::new(0),
        panic: Mutex::new(None),
    };
    // no nesting: an item that starts a part runs it serially
    CURRENT.set(std::ptr::null());
    let published = (&job as *const Job<'_>).cast::<Job<'static>>().cast_mut();
    shared.job.store(published, Ordering::SeqCst);
    shared.parts.fetch_add(1, Ordering::Release);
    job.work();
    shared.job.store(std::ptr::null_mut(), Ordering::SeqCst);
    while shared.busy.load(Ordering::SeqCst) != 0 {
        std::hint::spin_loop();
    }
    CURRENT.set(shared);
    let panic = job
        .panic
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .take();
    if let Some(panic) = panic {
        resume_unwind(panic);
    }
}

/// [`for_each`] over the rows of `out` (`row_len` values each) in `parts` runs of whole rows:
/// `f(first_row, rows)` once per run, each run on one thread. The first error is returned
/// (items not yet started are then skipped).
pub fn try_for_each_rows<T: Send, E: Send>(
    out: &mut [T],
    row_len: usize,
    parts: usize,
    f: impl Fn(usize, &mut [T]) -> Result<(), E> + Sync,
) -> Result<(), E> {
    let rows = out.len() / row_len.max(1);
    assert_eq!(rows * row_len, out.len(), "a partial row");
    let parts = parts.clamp(1, rows.max(1));
    if parts == 1 {
        return f(0, out);
    }
    let per_part = rows.div_ceil(parts);
    let base = SharedOut(out.as_mut_ptr());
    let failed: Mutex<Option<E>> = Mutex::new(None);
    for_each(rows.div_ceil(per_part), |part| {
        let first = part * per_part;
        let len = per_part.min(rows - first) * row_len;
        // SAFETY: the parts are disjoint runs of whole rows inside `out`, which is borrowed
        // mutably for the length of this call; each part is handed to one call of `f`.
        let rows = unsafe { std::slice::from_raw_parts_mut(base.at(first * row_len), len) };
        if let Err(e) = f(first, rows) {
            failed
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .get_or_insert(e);
        }
    });
    match failed.into_inner().unwrap_or_else(PoisonError::into_inner) {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

/// An output's start, shared by the threads of a parallel part that each write their own
/// disjoint rows through it ([`try_for_each_rows`], the runtime's tile walks).
pub struct SharedOut<T>(pub *mut T);

impl<T> SharedOut<T> {
    /// The pointer `n` values in (a method, so closures capture the whole `Sync` wrapper).
    pub fn at(&self, n: usize) -> *mut T {
        self.0.wrapping_add(n)
    }
}
// SAFETY: every thread writes a disjoint set of rows through it; whoever writes through it
// upholds that (each `unsafe` write names its rows).
unsafe impl<T: Send> Sync for SharedOut<T> {}
// SAFETY: as for Sync: threads write disjoint rows, so the pointer may move between them.
unsafe impl<T: Send> Send for SharedOut<T> {}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;
    use std::sync::atomic::AtomicU32;

    /// Runs a part of `items` items on `workers`; returns how often each item ran and the
    /// threads that ran them.
    fn part(workers: &Workers, items: usize, pause: Duration) -> (Vec<u32>, usize) {
        let counts: Vec<AtomicU32> = (0..items).map(|_| AtomicU32::new(0)).collect();
        let threads = Mutex::new(HashSet::new());
        workers.run(|| {
            for_each(items, |i| {
                counts[i].fetch_add(1, Ordering::Relaxed);
                threads.lock().unwrap().insert(std::thread::current().id());
                std::thread::sleep(pause);
            })
        });
        let counts = counts.into_iter().map(AtomicU32::into_inner).collect();
        (counts, threads.into_inner().unwrap().len())
    }

    #[test]
    fn every_item_runs_once_and_the_helpers_take_some() {
        for threads in [1, 2, 3] {
            let workers = Workers::new(threads, "test").unwrap();
            assert_eq!(workers.threads(), threads);
            let (counts, ran_on) = part(&workers, 64, Duration::from_millis(1));
            assert!(counts.iter().all(|&c| c == 1), "{counts:?}");
            // 64 ms of sleeping items: a spinning helper picks up some of them
            assert!(
                ran_on > 1 || threads == 1,
                "{threads} threads: ran on {ran_on}"
            );
            // many short parts in a row, then a run after the helpers have parked
            for items in [0, 1, 2, 7, 100] {
                let (counts, _) = part(&workers, items, Duration::ZERO);
                assert!(counts.iter().all(|&c| c == 1));
            }
            std::thread::sleep(SPIN_AFTER_RUN * 4);
            let (counts, _) = part(&workers, 9, Duration::ZERO);
            assert!(counts.iter().all(|&c| c == 1));
        }
    }

    #[test]
    fn outside_a_run_and_inside_an_item_a_part_is_serial() {
        let here = std::thread::current().id();
        for_each(5, |_| assert_eq!(std::thread::current().id(), here));
        assert_eq!(threads_here(), 1);
        let workers = Workers::new(2, "test").unwrap();
        let total = AtomicUsize::new(0);
        workers.run(|| {
            assert_eq!(threads_here(), 2);
            for_each(8, |_| {
                let item_thread = std::thread::current().id();
                assert_eq!(threads_here(), 1);
                for_each(4, |_| {
                    assert_eq!(std::thread::current().id(), item_thread);
                    total.fetch_add(1, Ordering::Relaxed);
                });
            });
            assert_eq!(threads_here(), 2);
        });
        assert_eq!(total.into_inner(), 32);
        assert_eq!(threads_here(), 1);
    }

    #[test]
    fn a_panicking_item_panics_the_caller_and_the_workers_go_on() {
        let workers = Workers::new(2, "test").unwrap();
        let caught = catch_unwind(AssertUnwindSafe(|| {
            workers.run(|| {
                for_each(50, |i| {
                    if i == 17 {
                        panic!("item 17");
                    }
                })
            })
        }));
        let message = caught.unwrap_err();
        assert_eq!(message.downcast_ref::<&str>(), Some(&"item 17"));
        assert_eq!(threads_here(), 1, "the run ended with the panic");
        let (counts, _) = part(&workers, 20, Duration::ZERO);
        assert!(counts.iter().all(|&c| c == 1));
    }

    #[test]
    fn rows_are_split_into_whole_disjoint_runs_and_the_first_error_is_returned() {
        let workers = Workers::new(2, "test").unwrap();
        let mut out = vec![0usize; 7 * 3];
        let ok: Result<(), String> = workers.run(|| {
            try_for_each_rows(&mut out, 3, 4, |first, rows| {
                assert_eq!(rows.len() % 3, 0);
                for (r, row) in rows.chunks_exact_mut(3).enumerate() {
                    row.fill(first + r + 1);
                }
                Ok(())
            })
        });
        ok.unwrap();
        let expected: Vec<usize> = (1..=7).flat_map(|r| [r; 3]).collect();
        assert_eq!(out, expected);
        let err = workers.run(|| {
            try_for_each_rows(&mut out, 3, 7, |first, _| match first {
                4 => Err(format!("row {first}")),
                _ => Ok(()),
            })
        });
        assert_eq!(err, Err("row 4".to_string()));
    }

    #[test]
    fn callers_on_several_threads_take_turns() {
        let workers = Arc::new(Workers::new(2, "test").unwrap());
        let callers: Vec<_> = (0..4)
            .map(|_| {
                let workers = workers.clone();
                std::thread::spawn(move || {
                    (0..50).all(|_| {
                        let (counts, _) = part(&workers, 33, Duration::ZERO);
                        counts.iter().all(|&c| c == 1)
                    })
                })
            })
            .collect();
        for caller in callers {
            assert!(caller.join().unwrap());
        }
    }
}
