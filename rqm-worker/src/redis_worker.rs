//! The Redis worker: takes ready jobs from its queues in batches, runs them
//! with the shared executor, reports their outcomes in batches, renews the
//! leases of what runs, and puts back what is due or lost.

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::StreamExt;
use rqm_core::{Cancellation, Failure, JobResult, Path, Registry};
use rqm_redis::{Begun, Completion, Handoff, RedisEngine, Taken};
use tokio::sync::{Semaphore, mpsc};

use crate::exec;

/// How a Redis worker runs.
#[derive(Clone, Debug)]
pub struct WorkerConfig {
    /// The queues it takes jobs from, in order.
    pub queues: Vec<String>,
    /// Most attempts it runs at once.
    pub concurrency: usize,
    /// How long a lease lasts without renewal; a worker that stops renewing
    /// (it died, or lost Redis) has its jobs put back after this.
    pub lease: Duration,
    /// Most jobs taken or reported in one round trip.
    pub batch: usize,
    /// Times a job may be lost with its worker before it fails for good.
    pub max_lost: u32,
    /// On shutdown, how long running jobs may take to finish.
    pub grace: Duration,
}

impl Default for WorkerConfig {
    fn default() -> Self {
        WorkerConfig {
            queues: vec![rqm_core::DEFAULT_QUEUE.to_owned()],
            concurrency: 64,
            lease: Duration::from_secs(30),
            batch: 256,
            max_lost: 3,
            grace: Duration::from_secs(10),
        }
    }
}

type Running = Arc<Mutex<HashMap<(String, u32), Cancellation>>>;

/// The lease entries this worker holds: entry -> (its nodes as the scripts
/// take them, attempts begun under it and not reported yet).
type Leases = Arc<Mutex<HashMap<String, (String, usize)>>>;

/// Notes that `begun`'s attempt was reported; returns its lease entry's
/// nodes when that was the entry's last one, so that the report lets the
/// lease go.
fn reported(leases: &Leases, begun: &Begun) -> Option<String> {
    let mut leases = leases.lock().expect("never poisoned");
    let (range, left) = leases.get_mut(&begun.lease)?;
    *left = left.saturating_sub(1);
    if *left > 0 {
        return None;
    }
    let range = range.clone();
    leases.remove(&begun.lease);
    Some(range)
}

/// Hand-offs asked for per report: the jobs a report makes ready on this
/// worker's queues that it begins at once (a chain's next job).
const HANDOFF: usize = 16;

/// What starting an attempt needs, for the fetch loop and the reporter.
#[derive(Clone)]
struct Launch {
    engine: RedisEngine,
    registry: &'static Registry,
    running: Running,
    permits: Arc<Semaphore>,
    leases: Leases,
    /// Where outcomes go; weak, so that the reporter ends once the fetch
    /// loop has stopped and every attempt has reported.
    done: mpsc::WeakUnboundedSender<(Begun, JobResult)>,
    queues: Vec<String>,
    lease: Duration,
}

impl Launch {
    /// Runs `begun` holding `permit`; its outcome goes to `done`. A
    /// synchronous job without a timeout is returned as a job pool task, for
    /// the caller to queue with others (no async task of its own).
    fn start(
        &self,
        begun: Begun,
        permit: tokio::sync::OwnedSemaphorePermit,
        done: mpsc::UnboundedSender<(Begun, JobResult)>,
    ) -> Option<Box<dyn FnOnce() + Send>> {
        let cancel = Cancellation::new();
        self.running
            .lock()
            .expect("never poisoned")
            .insert((begun.project.clone(), begun.node), cancel.clone());
        let (running, engine, registry) =
            (self.running.clone(), self.engine.clone(), self.registry);
        // The attempt ended: no longer running, its permit free, its
        // outcome to the reporter.
        let finish = move |begun: Begun, outcome: JobResult| {
            running
                .lock()
                .expect("never poisoned")
                .remove(&(begun.project.clone(), begun.node));
            drop(permit);
            let _ = done.send((begun, outcome));
        };
        let timeout = begun.job.timeout_ms.map(Duration::from_millis);
        if let Some(function) = exec::pool_function(registry, &begun.job.func, timeout) {
            let (run, span, progress) = prepare(&engine, &begun);
            let body = exec::prepare_blocking(function, run, cancel, Some(progress));
            return Some(Box::new(move || {
                let outcome = span.in_scope(body);
                finish(begun, outcome);
            }));
        }
        tokio::spawn(async move {
            let outcome = execute(&engine, registry, &begun, cancel).await;
            finish(begun, outcome);
        });
        None
    }
}

/// Runs a worker until `shutdown` completes; then stops taking jobs, lets
/// running ones finish within the grace period, and hands back the leases of
/// those that do not.
pub async fn run(
    engine: RedisEngine,
    registry: &'static Registry,
    config: WorkerConfig,
    shutdown: impl Future<Output = ()>,
) -> Result<(), rqm_redis::Error> {
    let permits = Arc::new(Semaphore::new(config.concurrency.max(1)));
    let running: Running = Arc::default();
    let leases: Leases = Arc::default();
    let (done_tx, done_rx) = mpsc::unbounded_channel::<(Begun, JobResult)>();
    let launch = Launch {
        engine: engine.clone(),
        registry,
        running: running.clone(),
        permits: permits.clone(),
        leases: leases.clone(),
        done: done_tx.downgrade(),
        queues: config.queues.clone(),
        lease: config.lease,
    };
    let reporter = tokio::spawn(report(launch.clone(), done_rx, config.batch));
    let keeper = tokio::spawn(keep(
        engine.clone(),
        running.clone(),
        leases.clone(),
        config.clone(),
    ));
    let queue_channels: Vec<String> = config
        .queues
        .iter()
        .map(|q| engine.keys().queue(q))
        .collect();
    let mut wake = subscribe(&engine, &queue_channels).await;
    let mut outage = Outage::default();
    tokio::pin!(shutdown);
    loop {
        // The permits of the jobs taken are held from before the take: the
        // reporter takes some too, for the jobs its reports begin.
        let mut reserved = exec::free_permits(&permits, config.batch.max(1));
        if reserved.is_empty() {
            tokio::select! {
                () = &mut shutdown => break,
                permit = permits.clone().acquire_owned() => drop(permit),
            }
            continue;
        }
        let taken = match take(&engine, &config, reserved.len()).await {
            Ok(taken) => {
                outage.over();
                taken
            }
            Err(e) => {
                tokio::select! {
                    () = &mut shutdown => break,
                    () = outage.wait(&e) => {}
                }
                continue;
            }
        };
        if taken.is_empty() {
            // Idle, it holds no permits: reports may begin jobs meanwhile.
            drop(reserved);
            let woken = match wake.as_mut() {
                Some(stream) => tokio::select! {
                    () = &mut shutdown => break,
                    message = stream.next() => message.is_some(),
                    // A wake-up lost in a reconnect costs at most this long.
                    () = tokio::time::sleep(Duration::from_secs(1)) => true,
                },
                None => tokio::select! {
                    () = &mut shutdown => break,
                    () = tokio::time::sleep(Duration::from_millis(100)) => false,
                },
            };
            if !woken {
                // The subscription broke (Redis went away): subscribe again.
                wake = subscribe(&engine, &queue_channels).await;
            }
            continue;
        }
        let mut by_project: HashMap<String, Vec<Taken>> = HashMap::new();
        for entry in taken {
            by_project
                .entry(entry.project.clone())
                .or_default()
                .push(entry);
        }
        for (id, entries) in by_project {
            let begun = match engine.begin(&id, &entries).await {
                Ok(begun) => begun,
                Err(e) => {
                    if e.is_transient() {
                        tracing::warn!(project = %id, error = %e, "cannot begin jobs");
                    } else {
                        corrupt(&engine, &id, &e).await;
                    }
                    // The script may have begun them: their leases expire
                    // now, so that recovery runs them again or, in a project
                    // that ended, fails them.
                    let held: Vec<String> = entries.iter().map(|e| e.entry.clone()).collect();
                    if let Err(e) = engine.renew(&held, Duration::ZERO).await {
                        tracing::warn!(project = %id, error = %e, "cannot hand back leases");
                    }
                    continue;
                }
            };
            {
                // Entries none of whose jobs began were let go by the script.
                let mut held = leases.lock().expect("never poisoned");
                for entry in &entries {
                    let count = begun.iter().filter(|b| b.lease == entry.entry).count();
                    if count > 0 {
                        held.insert(entry.entry.clone(), (entry.range(), count));
                    }
                }
            }
            let mut tasks = Vec::with_capacity(begun.len());
            for begun in begun {
                let permit = reserved
                    .pop()
                    .expect("no more jobs were taken than permits were reserved");
                tasks.extend(launch.start(begun, permit, done_tx.clone()));
            }
            crate::pool::run_many(tasks);
        }
    }
    // Shutdown: no more jobs are taken; running ones get the grace period.
    let all = config.concurrency.max(1) as u32;
    let finished = tokio::time::timeout(config.grace, permits.acquire_many(all)).await;
    keeper.abort();
    if finished.is_ok() {
        // Every attempt has ended: send the last reports before leaving.
        drop(done_tx);
        let _ = reporter.await;
        return Ok(());
    }
    // The rest are handed back, their attempts left unreported: their leases
    // expire now, and another worker runs them again.
    let jobs = running.lock().expect("never poisoned").len();
    let held: Vec<String> = leases
        .lock()
        .expect("never poisoned")
        .keys()
        .cloned()
        .collect();
    tracing::warn!(
        jobs,
        "grace period over; handing back the leases of running jobs"
    );
    reporter.abort();
    engine.renew(&held, Duration::ZERO).await?;
    Ok(())
}

type Wake = std::pin::Pin<Box<dyn futures_util::Stream<Item = rqm_redis::redis::Msg> + Send>>;

/// A subscription to `channels`, or `None` while Redis is away.
async fn subscribe(engine: &RedisEngine, channels: &[String]) -> Option<Wake> {
    let mut pubsub = match engine.client().get_async_pubsub().await {
        Ok(pubsub) => pubsub,
        Err(e) => {
            tracing::debug!(error = %e, "cannot subscribe to wake-ups yet");
            return None;
        }
    };
    for channel in channels {
        if pubsub.subscribe(channel).await.is_err() {
            return None;
        }
    }
    Some(Box::pin(pubsub.into_on_message()))
}

async fn take(
    engine: &RedisEngine,
    config: &WorkerConfig,
    free: usize,
) -> Result<Vec<Taken>, rqm_redis::Error> {
    let mut taken: Vec<Taken> = Vec::new();
    let mut jobs = 0;
    for queue in &config.queues {
        let want = free.min(config.batch) - jobs;
        if want == 0 {
            break;
        }
        let got = engine.take(queue, want, config.lease).await?;
        jobs += got.iter().map(Taken::len).sum::<usize>();
        taken.extend(got);
    }
    Ok(taken)
}

/// Waits between tries while Redis cannot be reached, logging once.
#[derive(Default)]
struct Outage {
    tries: u32,
}

impl Outage {
    async fn wait(&mut self, error: &rqm_redis::Error) {
        if self.tries == 0 {
            tracing::warn!(%error, "Redis cannot be reached; trying again");
        }
        self.tries += 1;
        let ms = (50u64 << self.tries.min(5)).min(1000);
        tokio::time::sleep(Duration::from_millis(ms)).await;
    }

    fn over(&mut self) {
        if self.tries > 0 {
            tracing::info!(tries = self.tries, "Redis is back");
        }
        self.tries = 0;
    }
}

/// Stops a project whose state cannot be read, and says so; the worker goes
/// on serving the others.
async fn corrupt(engine: &RedisEngine, id: &str, error: &rqm_redis::Error) {
    tracing::error!(project = %id, %error, "the project's stored state is corrupt; failing it");
    match engine.fail_corrupt(id, &error.to_string()).await {
        Ok(true) => {}
        Ok(false) => {
            tracing::error!(project = %id, "the failure cannot be recorded: the project's meta key is not rqm's")
        }
        Err(e) => tracing::error!(project = %id, error = %e, "cannot record the failure"),
    }
}

/// Tries `step` again through an outage of up to about half a minute.
async fn persist<T, F: std::future::Future<Output = Result<T, rqm_redis::Error>>>(
    mut step: impl FnMut() -> F,
) -> Result<T, rqm_redis::Error> {
    let mut outage = Outage::default();
    loop {
        match step().await {
            Err(e) if e.is_transient() && outage.tries < 40 => outage.wait(&e).await,
            other => return other,
        }
    }
}

async fn execute(
    engine: &RedisEngine,
    registry: &'static Registry,
    begun: &Begun,
    cancel: Cancellation,
) -> JobResult {
    let (run, span, progress) = prepare(engine, begun);
    tracing::Instrument::instrument(exec::call(registry, run, cancel, Some(progress)), span).await
}

/// An attempt's call, its tracing span and where its progress goes.
fn prepare<'b>(
    engine: &RedisEngine,
    begun: &'b Begun,
) -> (exec::Run<'b>, tracing::Span, exec::Progress) {
    let path: Path = begun.job.path.parse().unwrap_or_default();
    let span = tracing::info_span!(
        "job",
        project = %begun.project,
        path = %begun.job.path,
        function = %begun.job.func,
        attempt = begun.attempt
    );
    let input = if begun.job.previous {
        begun.input.clone()
    } else {
        begun.job.args.clone()
    };
    let run = exec::Run {
        func: &begun.job.func,
        attempt: begun.attempt,
        project: Arc::from(begun.project.as_str()),
        path,
        input,
        kwargs: begun.job.kwargs.clone(),
        timeout: begun.job.timeout_ms.map(Duration::from_millis),
    };
    // Progress goes to the project's event stream, off the job's thread.
    let (engine, runtime) = (engine.clone(), tokio::runtime::Handle::current());
    let (id, node) = (begun.project.clone(), begun.node);
    let progress: exec::Progress = Arc::new(move |_: &rqm_core::JobContext, value| {
        let (engine, id) = (engine.clone(), id.clone());
        runtime.spawn(async move {
            if let Err(e) = engine.progress(&id, node, &value).await {
                tracing::warn!(project = %id, node, error = %e, "cannot publish progress");
            }
        });
    });
    (run, span, progress)
}

/// What a failed attempt becomes, by the job's retries and `allow_failure`
/// (SPEC 6), as rqm-core's state machine decides it.
fn failure(begun: &Begun, failure: Failure) -> Completion {
    if failure.retryable && begun.attempt <= begun.job.retries {
        Completion::Retry {
            backoff: begun.job.backoff().delay(begun.attempt),
            error: failure.message,
        }
    } else if begun.job.allow_failure {
        Completion::Allowed(failure.message)
    } else {
        Completion::Failed(failure.message)
    }
}

/// Reports outcomes in batches, one round trip per project per batch; an
/// outcome with appended nodes goes alone, as it must be compiled.
async fn report(
    launch: Launch,
    mut done: mpsc::UnboundedReceiver<(Begun, JobResult)>,
    batch: usize,
) {
    let (engine, leases) = (launch.engine.clone(), launch.leases.clone());
    while let Some(first) = done.recv().await {
        let mut outcomes = vec![first];
        while outcomes.len() < batch {
            match done.try_recv() {
                Ok(more) => outcomes.push(more),
                Err(_) => break,
            }
        }
        type Outcomes = (Vec<String>, Vec<(u32, u32, Completion, String)>);
        let mut by_project: HashMap<String, Outcomes> = HashMap::new();
        for (begun, outcome) in outcomes {
            let last = reported(&leases, &begun);
            let completion = match outcome {
                Ok(output) if !output.append.is_empty() => {
                    let result = output.result.to_string();
                    let done: Vec<String> = last.into_iter().collect();
                    let applied = persist(|| {
                        engine.complete_with_nodes(
                            &begun,
                            result.clone(),
                            output.append.clone(),
                            &done,
                        )
                    })
                    .await;
                    match applied {
                        Ok(_) => {}
                        Err(e) if e.is_transient() => {
                            tracing::error!(project = %begun.project, path = %begun.job.path, error = %e, "cannot report a completion");
                        }
                        Err(e) => corrupt(&engine, &begun.project, &e).await,
                    }
                    continue;
                }
                Ok(output) => Completion::Finished(output.result.to_string()),
                Err(f) => failure(&begun, f),
            };
            let (done, list) = by_project.entry(begun.project.clone()).or_default();
            done.extend(last);
            list.push((
                begun.node,
                begun.attempt,
                completion,
                begun.job.path.clone(),
            ));
        }
        for (id, (done, mut outcomes)) in by_project {
            // In node order, so that runs of neighbours are applied as runs.
            outcomes.sort_by_key(|o| o.0);
            // Permits for the jobs this report may begin at once, while the
            // fetch loop runs (a weak sender that upgrades says it does).
            let sender = launch.done.upgrade();
            let mut permits = match sender {
                Some(_) => exec::free_permits(&launch.permits, HANDOFF),
                None => Vec::new(),
            };
            let handoff = Handoff {
                want: permits.len(),
                lease: launch.lease,
                queues: &launch.queues,
            };
            // A report applies once, fenced by its attempt, so it can be sent
            // again through an outage; past the lease another worker reruns.
            match persist(|| engine.complete_and_begin(&id, &done, &outcomes, handoff)).await {
                Ok((stale, begun)) => {
                    if !stale.is_empty() {
                        tracing::info!(project = %id, nodes = ?stale, "reports for attempts no longer current were ignored");
                    }
                    if sender.is_some() {
                        let mut held = leases.lock().expect("never poisoned");
                        for b in &begun {
                            held.insert(b.lease.clone(), (b.node.to_string(), 1));
                        }
                    }
                    let mut tasks = Vec::new();
                    for b in begun {
                        match (permits.pop(), &sender) {
                            (Some(permit), Some(sender)) => {
                                tasks.extend(launch.start(b, permit, sender.clone()));
                            }
                            // Cannot happen: no more are begun than asked.
                            _ => {
                                tracing::error!(project = %id, node = b.node, "a job was handed off beyond the permits held")
                            }
                        }
                    }
                    crate::pool::run_many(tasks);
                }
                Err(e) if e.is_transient() => {
                    tracing::error!(project = %id, error = %e, "cannot report completions");
                }
                Err(e) => corrupt(&engine, &id, &e).await,
            }
        }
    }
}

/// Renews leases, stops attempts of projects that ended, and puts back
/// retries that are due and jobs whose lease expired.
async fn keep(engine: RedisEngine, running: Running, leases: Leases, config: WorkerConfig) {
    let renew_every = (config.lease / 3).max(Duration::from_millis(10));
    let mut last_renew = tokio::time::Instant::now();
    let mut last_check = tokio::time::Instant::now();
    let channels = [engine.retry_channel(), engine.ended_channel()];
    let mut wake = subscribe(&engine, &channels).await;
    loop {
        // Renew first, so that this worker never takes its own jobs for lost.
        let held = running_now(&running);
        if held.is_empty() {
            // Nothing to renew: a job taken from now on is renewed a third
            // of its lease from now at the latest.
            last_renew = tokio::time::Instant::now();
        } else if last_renew.elapsed() >= renew_every {
            last_renew = tokio::time::Instant::now();
            let entries: Vec<String> = leases
                .lock()
                .expect("never poisoned")
                .keys()
                .cloned()
                .collect();
            if let Err(e) = engine.renew(&entries, config.lease).await {
                tracing::warn!(error = %e, "cannot renew leases");
            }
        }
        if let Err(e) = engine.requeue_due(config.batch).await {
            tracing::warn!(error = %e, "cannot requeue due retries");
        }
        if let Err(e) = engine.recover_expired(config.batch, config.max_lost).await {
            tracing::warn!(error = %e, "cannot recover expired leases");
        }
        if let Err(e) = engine.release_due(config.batch).await {
            tracing::warn!(error = %e, "cannot go on with a release left by a stopped client");
        }
        // Ends are published; this check catches one missed in a reconnect.
        if !held.is_empty() && last_check.elapsed() >= SAFETY_NET {
            last_check = tokio::time::Instant::now();
            stop_ended(&engine, &held).await;
        }
        // Sleep until the next retry or lease expiry is due, a renewal is,
        // or a publish says a retry was scheduled or a project ended.
        let mut wait = SAFETY_NET;
        if let Ok(Some(due)) = engine.next_due().await {
            wait = wait.min(due + Duration::from_millis(1));
        }
        // A job may begin while this sleeps: wake in time to renew it.
        wait = wait.min(
            renew_every
                .saturating_sub(last_renew.elapsed())
                .max(Duration::from_millis(1)),
        );
        let message = match wake.as_mut() {
            Some(stream) => tokio::select! {
                message = stream.next() => Some(message),
                () = tokio::time::sleep(wait) => None,
            },
            None => {
                tokio::time::sleep(wait.min(Duration::from_millis(100))).await;
                wake = subscribe(&engine, &channels).await;
                None
            }
        };
        match message {
            Some(Some(message)) if message.get_channel_name() == channels[1] => {
                if let Ok(id) = message.get_payload::<String>() {
                    for ((project, _), cancel) in running_now(&running) {
                        if project == id {
                            cancel.cancel();
                        }
                    }
                }
            }
            // The subscription broke: subscribe again.
            Some(None) => wake = subscribe(&engine, &channels).await,
            _ => {}
        }
    }
}

/// How often what is published is also checked for, in case a publish was
/// missed while a connection was down.
const SAFETY_NET: Duration = Duration::from_secs(1);

fn running_now(running: &Running) -> Vec<((String, u32), Cancellation)> {
    running
        .lock()
        .expect("never poisoned")
        .iter()
        .map(|(k, c)| (k.clone(), c.clone()))
        .collect()
}

/// Tells the running attempts of projects that ended to stop.
async fn stop_ended(engine: &RedisEngine, held: &[((String, u32), Cancellation)]) {
    let mut ids: Vec<String> = held.iter().map(|((id, _), _)| id.clone()).collect();
    ids.sort();
    ids.dedup();
    if let Ok(statuses) = engine.statuses(&ids).await {
        let ended: Vec<&String> = ids
            .iter()
            .zip(statuses)
            .filter(|(_, s)| s.as_deref() != Some("running"))
            .map(|(id, _)| id)
            .collect();
        for ((id, _), cancel) in held {
            if ended.contains(&id) {
                cancel.cancel();
            }
        }
    }
}
