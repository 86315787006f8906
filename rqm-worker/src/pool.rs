//! Where synchronous jobs run: tokio's blocking threads, fed from one queue
//! so that a stream of short jobs costs no thread hand-off per job.
//!
//! A runner takes jobs from the queue until it is empty. Up to one runner
//! per core starts as soon as jobs wait. A job may block for long (sleep,
//! I/O), so a watchdog looks every 5 ms while jobs wait: if no job started
//! since its last look, the runners are taken to be blocked, and as many
//! more start (at most one per waiting job). So a job waits at most about
//! a few milliseconds behind blocked ones, and short jobs run back to back.

use std::collections::VecDeque;
use std::sync::{LazyLock, Mutex};
use std::time::Duration;

type Task = Box<dyn FnOnce() + Send>;

/// Most runners at once, as tokio's own bound on blocking threads.
const MAX_RUNNERS: usize = 512;

/// How long waiting jobs may see no job start before more runners start.
const STALL: Duration = Duration::from_millis(5);

#[derive(Default)]
struct State {
    queue: VecDeque<Task>,
    runners: usize,
    /// Jobs started so far, for the watchdog to see progress.
    started: u64,
    watching: bool,
}

static STATE: LazyLock<Mutex<State>> = LazyLock::new(Mutex::default);

/// Runners started without waiting: one per core (read once; it reads
/// cgroup files).
fn eager() -> usize {
    static CORES: LazyLock<usize> =
        LazyLock::new(|| std::thread::available_parallelism().map_or(2, |n| n.get()));
    *CORES
}

fn lock() -> std::sync::MutexGuard<'static, State> {
    STATE
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Runs `task` on a blocking thread; must be called within tokio.
pub(crate) fn run(task: Task) {
    let mut state = lock();
    state.queue.push_back(task);
    if state.runners < eager() {
        state.runners += 1;
        drop(state);
        start_runner();
        return;
    }
    if !state.watching {
        state.watching = true;
        drop(state);
        tokio::spawn(watch());
    }
}

fn start_runner() {
    tokio::task::spawn_blocking(|| {
        loop {
            let task = {
                let mut state = lock();
                match state.queue.pop_front() {
                    Some(task) => {
                        state.started += 1;
                        task
                    }
                    None => {
                        state.runners -= 1;
                        return;
                    }
                }
            };
            task();
        }
    });
}

/// While jobs wait, starts runners when none of them started a job for a
/// while (they block).
async fn watch() {
    let mut seen = lock().started;
    loop {
        tokio::time::sleep(STALL).await;
        let mut state = lock();
        if state.queue.is_empty() {
            state.watching = false;
            return;
        }
        if state.started == seen {
            // Doubling, so that a busy machine (runners not scheduled, not
            // blocked) does not start a thread per waiting job at once.
            let more = state
                .queue
                .len()
                .min(state.runners.max(1))
                .min(MAX_RUNNERS.saturating_sub(state.runners));
            state.runners += more;
            drop(state);
            for _ in 0..more {
                start_runner();
            }
            state = lock();
        }
        seen = state.started;
    }
}
