//! The embedded engine: projects run in this process on tokio, with the
//! `#[job]` functions linked into it. It is the default when no Redis is
//! named, and offers the client API the Redis engine offers.

use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use rqm_core::{
    Attempt, CancelOutcome, Cancellation, Event, JobContext, JobResult, Limits, NodeId, NodeState,
    Path, ProgressSink, Project, Registry, Rejection, Report, Run, RunConfig, Time,
};
use serde::Serialize;
use serde_json::Value;
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};
use tracing::Instrument;

use crate::error::Error;

/// Most attempts begun in one turn of a project's driver.
const BEGIN_BATCH: usize = 256;

/// Events a subscriber may fall behind by before it skips some.
const EVENT_BUFFER: usize = 1024;

/// How the embedded engine runs.
#[derive(Clone, Debug)]
pub struct EngineConfig {
    /// Most job attempts running at once, over every project.
    pub concurrency: usize,
    /// Bounds on projects, appended nodes included.
    pub limits: Limits,
    /// How long the engine keeps an ended project: past it, the project
    /// is no longer listed nor found by id (handles to it still work). The
    /// default is 7 days, as the Redis engine's.
    pub retention: Duration,
}

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig {
            concurrency: 64,
            limits: Limits::default(),
            retention: Duration::from_secs(7 * 24 * 3600),
        }
    }
}

/// Something that happened in a project, as [`ProjectHandle::events`] gives.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
#[non_exhaustive]
pub enum ProjectEvent {
    /// An attempt of a job began.
    Started {
        /// The job's path.
        path: Path,
        /// Its function.
        function: Arc<str>,
        /// The attempt's number.
        attempt: u32,
    },
    /// A job finished.
    Finished {
        /// The job's path.
        path: Path,
    },
    /// A job attempt failed.
    Failed {
        /// The job's path.
        path: Path,
        /// The error.
        error: String,
        /// Whether another attempt follows.
        retrying: bool,
    },
    /// A running job reported progress.
    Progress {
        /// The job's path.
        path: Path,
        /// What it reported.
        value: Value,
    },
    /// The project ended: `finished`, `failed` or `cancelled`.
    Ended {
        /// The final status.
        status: String,
    },
}

/// The in-process engine. Cheap to clone; clones share projects.
#[derive(Clone, Debug)]
pub struct Engine {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    registry: &'static Registry,
    config: EngineConfig,
    permits: Arc<Semaphore>,
    projects: Mutex<BTreeMap<u64, ProjectHandle>>,
    /// The ended projects, by number, in the order they ended.
    ended: Mutex<VecDeque<(Instant, u64)>>,
    next_id: AtomicU64,
}

impl Inner {
    /// The project list, without the projects ended longer ago than the
    /// retention.
    fn projects(&self) -> MutexGuard<'_, BTreeMap<u64, ProjectHandle>> {
        let mut projects = self.projects.lock().unwrap_or_else(PoisonError::into_inner);
        let mut ended = self.ended.lock().unwrap_or_else(PoisonError::into_inner);
        let now = Instant::now();
        while let Some(&(at, number)) = ended.front() {
            if now.saturating_duration_since(at) < self.config.retention {
                break;
            }
            ended.pop_front();
            projects.remove(&number);
        }
        projects
    }
}

impl Engine {
    /// An engine running the `#[job]` functions linked into this binary.
    pub fn new(config: EngineConfig) -> Result<Engine, Error> {
        let registry = Registry::global()?;
        Ok(Engine {
            inner: Arc::new(Inner {
                registry,
                permits: Arc::new(Semaphore::new(config.concurrency.max(1))),
                config,
                projects: Mutex::new(BTreeMap::new()),
                ended: Mutex::new(VecDeque::new()),
                next_id: AtomicU64::new(1),
            }),
        })
    }

    /// The functions this engine runs.
    pub fn registry(&self) -> &'static Registry {
        self.inner.registry
    }

    /// Checks `project` against the registry and starts it. Must be called
    /// from within a tokio runtime, which runs the project.
    pub fn submit(&self, project: Project) -> Result<ProjectHandle, Rejection> {
        let run = Run::new(project, self.run_config(), Time::ZERO)?;
        Ok(self.start(run))
    }

    /// Starts driving `run`, from within a tokio runtime.
    fn start(&self, run: Run) -> ProjectHandle {
        let number = self.inner.next_id.fetch_add(1, Ordering::Relaxed);
        let id: Arc<str> = Arc::from(format!("local-{number}"));
        let shared = Arc::new(Shared {
            id,
            run: Mutex::new(run),
            started: Instant::now(),
            inbox: Inbox::default(),
            events: EventLog::default(),
        });
        let handle = ProjectHandle {
            shared: shared.clone(),
        };
        self.inner.projects().insert(number, handle.clone());
        tokio::spawn(drive(shared, self.inner.clone(), number));
        handle
    }

    /// Reads a project from JSON (SPEC 8), checks it and starts it.
    pub fn submit_json(&self, json: &[u8]) -> Result<ProjectHandle, Rejection> {
        // Checked once, while it is read.
        let run = Run::from_json(json, self.run_config(), Time::ZERO)?;
        Ok(self.start(run))
    }

    fn run_config(&self) -> RunConfig {
        RunConfig {
            limits: self.inner.config.limits.clone(),
            catalog: Some(Arc::new(self.inner.registry)),
        }
    }

    /// The project with this id.
    pub fn project(&self, id: &str) -> Option<ProjectHandle> {
        let number: u64 = id.strip_prefix("local-")?.parse().ok()?;
        self.inner.projects().get(&number).cloned()
    }

    /// Every project submitted and kept (see [`EngineConfig::retention`]),
    /// oldest first.
    pub fn list(&self) -> Vec<ProjectHandle> {
        self.inner.projects().values().cloned().collect()
    }
}

/// A submitted project: look at it, wait for it, cancel it.
#[derive(Clone, Debug)]
pub struct ProjectHandle {
    shared: Arc<Shared>,
}

#[derive(Debug)]
struct Shared {
    id: Arc<str>,
    run: Mutex<Run>,
    started: Instant,
    inbox: Inbox,
    /// Its events; closed once the project has settled.
    events: EventLog,
}

impl Shared {
    fn now(&self) -> Time {
        Time::from_micros(u64::try_from(self.started.elapsed().as_micros()).unwrap_or(u64::MAX))
    }

    fn run(&self) -> MutexGuard<'_, Run> {
        // The run is only changed by code that does not panic while holding
        // it; a poisoned lock still holds a consistent run.
        self.run.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn publish(&self, event: ProjectEvent) {
        self.events.push([event].into_iter());
    }
}

/// What reaches a project's driver: attempts' outcomes and wake-ups, in a
/// list the driver takes whole each turn. A stream of outcomes costs one
/// short lock each, and a wake-up only when the driver has taken the rest.
#[derive(Debug, Default)]
struct Inbox {
    msgs: Mutex<Vec<Msg>>,
    arrived: Notify,
}

impl Inbox {
    fn send(&self, msg: Msg) {
        let mut msgs = self.msgs.lock().unwrap_or_else(PoisonError::into_inner);
        let first = msgs.is_empty();
        msgs.push(msg);
        drop(msgs);
        if first {
            // Kept as a permit when the driver is not waiting: not lost.
            self.arrived.notify_one();
        }
    }

    /// Waits until messages have arrived, then moves them all into `into`,
    /// which is empty. Cancelling the wait loses nothing.
    async fn take(&self, into: &mut Vec<Msg>) {
        loop {
            {
                let mut msgs = self.msgs.lock().unwrap_or_else(PoisonError::into_inner);
                if !msgs.is_empty() {
                    std::mem::swap(&mut *msgs, into);
                    return;
                }
            }
            self.arrived.notified().await;
        }
    }
}

/// A project's events: the last [`EVENT_BUFFER`] are kept for subscribers,
/// each of which reads at its own place. The driver adds a turn's events
/// under one lock.
#[derive(Debug, Default)]
struct EventLog {
    ring: Mutex<Ring>,
    added: Notify,
}

#[derive(Debug, Default)]
struct Ring {
    events: VecDeque<ProjectEvent>,
    /// The number of the oldest event kept (events are numbered from 0).
    first: u64,
    /// Whether the first subscriber (who reads from event 0) has come.
    subscribed: bool,
    /// No event follows the ones kept: the project has settled.
    closed: bool,
}

impl Ring {
    fn end(&self) -> u64 {
        self.first + self.events.len() as u64
    }
}

impl EventLog {
    fn ring(&self) -> MutexGuard<'_, Ring> {
        self.ring.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn push(&self, events: impl ExactSizeIterator<Item = ProjectEvent>) {
        if events.len() == 0 {
            return;
        }
        let mut ring = self.ring();
        for event in events {
            if ring.events.len() == EVENT_BUFFER {
                ring.events.pop_front();
                ring.first += 1;
            }
            ring.events.push_back(event);
        }
        drop(ring);
        self.added.notify_waiters();
    }

    fn close(&self) {
        self.ring().closed = true;
        self.added.notify_waiters();
    }

    /// What `look` finds in the ring, once it finds something: it looks
    /// now and again after each change.
    async fn until<T>(&self, mut look: impl FnMut(&mut Ring) -> Option<T>) -> T {
        loop {
            // Registered before the look, so that a change after it wakes
            // this wait.
            let added = self.added.notified();
            tokio::pin!(added);
            added.as_mut().enable();
            if let Some(found) = look(&mut self.ring()) {
                return found;
            }
            added.await;
        }
    }
}

#[derive(Debug)]
enum Msg {
    Done {
        job: NodeId,
        attempt: u32,
        outcome: JobResult,
        /// The attempt's permit, freed by the driver together with the
        /// others of its turn, in one step.
        permit: OwnedSemaphorePermit,
    },
    Wake,
}

impl ProjectHandle {
    /// The project's id.
    pub fn id(&self) -> &str {
        &self.shared.id
    }

    /// Where the project stands now.
    pub async fn status(&self) -> Report {
        Report::of(&self.shared.run())
    }

    /// Waits until the project has ended and every attempt has reported.
    pub async fn wait(&self) -> Report {
        self.shared
            .events
            .until(|ring| ring.closed.then_some(()))
            .await;
        self.status().await
    }

    /// Waits as [`wait`](Self::wait) does, for at most `limit`.
    pub async fn wait_for(&self, limit: Duration) -> Result<Report, Error> {
        tokio::time::timeout(limit, self.wait())
            .await
            .map_err(|_| Error::Timeout {
                id: self.id().to_owned(),
                seconds: limit.as_secs_f64(),
            })
    }

    /// Cancels the project (SPEC 6.4); cancelling an ended one does nothing
    /// and says so.
    pub async fn cancel(&self) -> CancelOutcome {
        let outcome = self.shared.run().cancel();
        self.shared.inbox.send(Msg::Wake);
        outcome
    }

    /// The project's events, ending with [`ProjectEvent::Ended`]. The first
    /// call, through any handle of the project, sees every event since the
    /// submit; later calls see events from the call on. A subscriber that
    /// falls more than 1,024 events behind skips what it missed.
    pub fn events(&self) -> Events {
        let mut ring = self.shared.events.ring();
        let next = if ring.subscribed { ring.end() } else { 0 };
        ring.subscribed = true;
        Events {
            shared: self.shared.clone(),
            next,
            ended: false,
        }
    }
}

/// A stream of a project's events.
#[derive(Debug)]
pub struct Events {
    shared: Arc<Shared>,
    /// The number of the next event to read.
    next: u64,
    ended: bool,
}

impl Events {
    /// The next event, or `None` after the project's end.
    pub async fn next(&mut self) -> Option<ProjectEvent> {
        if self.ended {
            return None;
        }
        let next = &mut self.next;
        let event = self
            .shared
            .events
            .until(|ring| {
                if *next < ring.first {
                    let missed = ring.first - *next;
                    tracing::warn!(missed, "an event subscriber fell behind and missed events");
                    *next = ring.first;
                }
                match ring.events.get((*next - ring.first) as usize) {
                    Some(event) => {
                        *next += 1;
                        Some(Some(event.clone()))
                    }
                    None => ring.closed.then_some(None),
                }
            })
            .await;
        self.ended = matches!(event, None | Some(ProjectEvent::Ended { .. }));
        event
    }
}

/// Runs one project: hands ready jobs to tasks as permits allow, applies
/// their reports, fires retries, until the project has settled.
async fn drive(shared: Arc<Shared>, engine: Arc<Inner>, number: u64) {
    let mut ready: VecDeque<NodeId> = VecDeque::new();
    // A turn's messages, and its events, published together.
    let mut msgs: Vec<Msg> = Vec::new();
    let mut events: Vec<ProjectEvent> = Vec::new();
    // The stop signal of every attempt without a timeout: the core stops
    // every running attempt at once, when the project ends.
    let stop_all = Cancellation::new();
    // The stop signal of each running attempt with a timeout (which stops
    // it alone on expiry), by job id.
    let mut running: Vec<Option<Cancellation>> = Vec::new();
    let progress = progress_sink(&shared);
    let mut functions = Functions {
        registry: engine.registry,
        last: None,
    };
    loop {
        let (settled, timeout) = {
            let mut run = shared.run();
            ready.extend(std::iter::from_fn(|| run.poll_ready()));
            while let Some(event) = run.poll_event() {
                match event {
                    Event::Stop { job, .. } => {
                        stop_all.cancel();
                        if let Some(Some(cancel)) = running.get(job.0 as usize) {
                            cancel.cancel();
                        }
                    }
                    Event::Ended(status) => events.push(ProjectEvent::Ended {
                        status: status.as_str().to_owned(),
                    }),
                    _ => {}
                }
            }
            if run.status().is_ended() {
                ready.clear();
            }
            (run.is_settled(), run.poll_timeout())
        };
        shared.events.push(events.drain(..));
        if settled {
            shared.events.close();
            engine
                .ended
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .push_back((Instant::now(), number));
            return;
        }
        let wake_at = timeout.map(|t| {
            tokio::time::Instant::from_std(shared.started + Duration::from_micros(t.as_micros()))
        });
        tokio::select! {
            biased;
            () = shared.inbox.take(&mut msgs) => {
                // Everything that has arrived is applied in one turn, under
                // one lock of the run, at one reading of the clock.
                let now = shared.now();
                let mut freed: Option<OwnedSemaphorePermit> = None;
                let mut run = shared.run();
                for msg in msgs.drain(..) {
                    if let Msg::Done { job, attempt, outcome, permit } = msg {
                        if let Some(slot) = running.get_mut(job.0 as usize) {
                            *slot = None;
                        }
                        report(&shared, &mut run, job, attempt, outcome, now, &mut events);
                        match &mut freed {
                            Some(all) => all.merge(permit),
                            None => freed = Some(permit),
                        }
                    }
                }
                drop(run);
                drop(freed);
            },
            permit = engine.permits.clone().acquire_owned(), if !ready.is_empty() => {
                // One permit came free; more may be: begin as many ready jobs
                // as there are, under one lock of the run.
                let mut permits = vec![permit.expect("the engine's semaphore is never closed")];
                let more = ready.len().min(BEGIN_BATCH) - 1;
                permits.extend(crate::exec::free_permits(&engine.permits, more));
                let mut tasks = Vec::with_capacity(permits.len());
                let mut own_tasks = Vec::new();
                let mut run = shared.run();
                let now = shared.now();
                for permit in permits {
                    let Some(job) = ready.pop_front() else { break };
                    let Ok(attempt) = run.begin(job, now) else { continue };
                    let path = run.path(job);
                    let cancel = if attempt.timeout.is_some() {
                        let own = Cancellation::new();
                        let slot = attempt.job.0 as usize;
                        if running.len() <= slot {
                            running.resize(slot + 1, None);
                        }
                        running[slot] = Some(own.clone());
                        own
                    } else {
                        stop_all.clone()
                    };
                    events.push(ProjectEvent::Started {
                        path: path.clone(),
                        function: attempt.func.clone(),
                        attempt: attempt.number,
                    });
                    let pooled = match attempt.timeout {
                        None => functions.pool_function(&attempt.func),
                        Some(_) => None,
                    };
                    let job = Start { attempt, path, cancel, permit };
                    match pooled {
                        Some(function) => tasks.push(pool_task(&shared, function, job, &progress)),
                        None => own_tasks.push(job),
                    }
                }
                drop(run);
                // Their starts are told before any can report progress.
                shared.events.push(events.drain(..));
                crate::pool::run_many(tasks);
                for job in own_tasks {
                    spawn(&shared, engine.registry, job, &progress);
                }
            }
            () = sleep_until(wake_at), if wake_at.is_some() => {
                let now = shared.now();
                shared.run().handle_timeout(now);
            }
        }
    }
}

async fn sleep_until(at: Option<tokio::time::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// Applies one attempt's outcome and notes the events of what it did.
fn report(
    shared: &Shared,
    run: &mut Run,
    job: NodeId,
    attempt: u32,
    outcome: JobResult,
    now: Time,
    events: &mut Vec<ProjectEvent>,
) {
    let path = run.path(job);
    let failed = outcome.as_ref().err().map(|f| f.message.clone());
    let applied = match outcome {
        Ok(output) => run.handle_success(job, attempt, output, now),
        Err(failure) => run.handle_failure(job, attempt, failure, now),
    };
    if let Err(ignored) = applied {
        tracing::info!(project = %shared.id, %path, %ignored, "report ignored");
        return;
    }
    let node = run.node(job).expect("the job exists");
    let state = node.state();
    if state == NodeState::Finished && failed.is_none() {
        events.push(ProjectEvent::Finished { path });
        return;
    }
    let error = node.error().unwrap_or_default().to_owned();
    match state {
        NodeState::Finished => {
            // An allowed failure: the job failed, and finished with null.
            events.push(ProjectEvent::Failed {
                path: path.clone(),
                error,
                retrying: false,
            });
            events.push(ProjectEvent::Finished { path });
        }
        state => events.push(ProjectEvent::Failed {
            path,
            error,
            retrying: state == NodeState::Retrying,
        }),
    }
}

/// An attempt the driver has begun, to start.
struct Start {
    attempt: Attempt,
    path: Path,
    cancel: Cancellation,
    permit: OwnedSemaphorePermit,
}

/// Which registered functions run on the job pool, looked up once for a
/// run of attempts of one function (the run's function names are shared).
struct Functions {
    registry: &'static Registry,
    last: Option<(Arc<str>, Option<crate::exec::PoolFunction>)>,
}

impl Functions {
    fn pool_function(&mut self, func: &Arc<str>) -> Option<crate::exec::PoolFunction> {
        match &self.last {
            Some((name, found)) if Arc::ptr_eq(name, func) => *found,
            _ => {
                let found = crate::exec::pool_function(self.registry, func, None);
                self.last = Some((func.clone(), found));
                found
            }
        }
    }
}

/// A synchronous job without a timeout, as a job pool task (no async task
/// of its own) for the caller to queue with others; it reports back.
fn pool_task(
    shared: &Arc<Shared>,
    function: crate::exec::PoolFunction,
    job: Start,
    progress: &ProgressSink,
) -> Box<dyn FnOnce() + Send> {
    let (mut attempt, path, cancel, span, reply) = job.split(shared);
    let run = exec_run(shared, &mut attempt, path);
    let body = crate::exec::prepare_blocking(function, run, cancel, Some(progress.clone()));
    Box::new(move || reply.send(span.in_scope(body)))
}

impl Start {
    /// The attempt, its path and stop signal, its tracing span, and what
    /// sends its outcome back.
    fn split(self, shared: &Arc<Shared>) -> (Attempt, Path, Cancellation, tracing::Span, Reply) {
        let Start {
            attempt,
            path,
            cancel,
            permit,
        } = self;
        let span = tracing::info_span!(
            "job",
            project = %shared.id,
            path = %path,
            function = %attempt.func,
            attempt = attempt.number
        );
        let reply = Reply {
            shared: shared.clone(),
            job: attempt.job,
            attempt: attempt.number,
            permit,
        };
        (attempt, path, cancel, span, reply)
    }
}

/// The attempt as [`crate::exec`] runs it (its input taken out).
fn exec_run<'a>(shared: &Shared, attempt: &'a mut Attempt, path: Path) -> crate::exec::Run<'a> {
    crate::exec::Run {
        func: &attempt.func,
        attempt: attempt.number,
        project: shared.id.clone(),
        path,
        input: attempt.input.take(),
        kwargs: attempt.kwargs.take(),
        timeout: attempt.timeout,
    }
}

/// What sends an attempt's outcome, with its permit, to the driver.
struct Reply {
    shared: Arc<Shared>,
    job: NodeId,
    attempt: u32,
    permit: OwnedSemaphorePermit,
}

impl Reply {
    fn send(self, outcome: JobResult) {
        self.shared.inbox.send(Msg::Done {
            job: self.job,
            attempt: self.attempt,
            outcome,
            permit: self.permit,
        });
    }
}

/// Any other attempt, in a task of its own.
fn spawn(shared: &Arc<Shared>, registry: &'static Registry, job: Start, progress: &ProgressSink) {
    tokio::spawn(execute(shared.clone(), registry, job, progress.clone()));
}

/// Where the project's running jobs send their progress: its events.
fn progress_sink(shared: &Arc<Shared>) -> ProgressSink {
    let target = shared.clone();
    Arc::new(move |context: &JobContext, value| {
        target.publish(ProjectEvent::Progress {
            path: context.path().clone(),
            value,
        });
    })
}

async fn execute(
    shared: Arc<Shared>,
    registry: &'static Registry,
    job: Start,
    progress: ProgressSink,
) {
    let (mut attempt, path, cancel, span, reply) = job.split(&shared);
    let run = exec_run(&shared, &mut attempt, path);
    let outcome = crate::exec::call(registry, run, cancel, Some(progress))
        .instrument(span)
        .await;
    reply.send(outcome);
}
