//! Where synchronous jobs run: a pool of threads of its own, fed from one
//! queue, so that a stream of short jobs costs no thread hand-off per job.
//!
//! Runners take jobs from the queue until it is empty, then wait (an idle
//! runner is woken for the next job, and ends after a while without one).
//! Up to one runner per core starts as soon as jobs wait. A job may block
//! for long (sleep, I/O), so a watchdog thread looks every 5 ms while jobs
//! wait and no runner is idle: if no job started since its last look, the
//! runners are taken to be blocked and as many more start (at most one per
//! waiting job). So a job waits a few milliseconds at most behind blocked
//! ones, and short jobs run back to back. The pool belongs to no runtime:
//! it serves every engine and worker in the process.

use std::collections::VecDeque;
use std::sync::{Condvar, LazyLock, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

type Task = Box<dyn FnOnce() + Send>;

/// Most runners at once.
const MAX_RUNNERS: usize = 512;

/// How long waiting jobs may see no job start before more runners start.
const STALL: Duration = Duration::from_millis(5);

/// How long an idle runner waits for a job before it ends.
const KEEPALIVE: Duration = Duration::from_secs(10);

#[derive(Default)]
struct State {
    queue: VecDeque<Task>,
    runners: usize,
    idle: usize,
    /// Jobs started so far, for the watchdog to see progress.
    started: u64,
    watchdog: bool,
    /// The watchdog sleeps until jobs wait.
    watchdog_asleep: bool,
}

#[derive(Default)]
struct Pool {
    state: Mutex<State>,
    work: Condvar,
    watch: Condvar,
}

static POOL: LazyLock<Pool> = LazyLock::new(Pool::default);

/// Runners started without waiting: one per core (read once; it reads
/// cgroup files).
fn eager() -> usize {
    static CORES: LazyLock<usize> =
        LazyLock::new(|| std::thread::available_parallelism().map_or(2, |n| n.get()));
    *CORES
}

fn lock() -> MutexGuard<'static, State> {
    POOL.state.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Runs `task` on one of the pool's threads.
pub(crate) fn run(task: Task) {
    run_many(vec![task]);
}

/// Runs `tasks` on the pool's threads, queued under one lock.
pub(crate) fn run_many(tasks: Vec<Task>) {
    if tasks.is_empty() {
        return;
    }
    let mut state = lock();
    let count = tasks.len();
    state.queue.extend(tasks);
    // Idle runners first, then new ones up to one per core.
    let mut wake = count.min(state.idle);
    while wake > 0 {
        POOL.work.notify_one();
        wake -= 1;
    }
    let mut left = count.saturating_sub(state.idle);
    while left > 0 && state.runners < eager() {
        state.runners += 1;
        start_runner();
        left -= 1;
    }
    if left > 0 && state.watchdog_asleep {
        state.watchdog_asleep = false;
        POOL.watch.notify_one();
    }
    if !state.watchdog {
        state.watchdog = true;
        std::thread::Builder::new()
            .name("rqm-pool-watchdog".into())
            .spawn(watchdog)
            .expect("the pool's watchdog thread starts");
    }
}

fn start_runner() {
    std::thread::Builder::new()
        .name("rqm-job".into())
        .spawn(runner)
        .expect("a job thread starts");
}

fn runner() {
    let mut state = lock();
    loop {
        if let Some(task) = state.queue.pop_front() {
            state.started += 1;
            drop(state);
            task();
            state = lock();
            continue;
        }
        state.idle += 1;
        let (guard, wait) = POOL
            .work
            .wait_timeout(state, KEEPALIVE)
            .unwrap_or_else(PoisonError::into_inner);
        state = guard;
        state.idle -= 1;
        if wait.timed_out() && state.queue.is_empty() {
            state.runners -= 1;
            return;
        }
    }
}

/// While jobs wait and no runner is idle, starts runners when none started
/// a job for a while (they block).
fn watchdog() {
    let mut state = lock();
    loop {
        if state.queue.is_empty() || state.idle > 0 {
            state.watchdog_asleep = true;
            state = POOL
                .watch
                .wait(state)
                .unwrap_or_else(PoisonError::into_inner);
            continue;
        }
        let seen = state.started;
        state = POOL
            .watch
            .wait_timeout(state, STALL)
            .unwrap_or_else(PoisonError::into_inner)
            .0;
        if !state.queue.is_empty() && state.idle == 0 && state.started == seen {
            // Doubling, so that a busy machine (runners not scheduled, not
            // blocked) does not start a thread per waiting job at once.
            let more = state
                .queue
                .len()
                .min(state.runners.max(1))
                .min(MAX_RUNNERS.saturating_sub(state.runners));
            state.runners += more;
            for _ in 0..more {
                start_runner();
            }
        }
    }
}
