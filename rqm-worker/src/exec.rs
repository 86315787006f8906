//! Runs one attempt of a registered function, as every engine does:
//! synchronous functions on blocking threads (see `pool`), async ones in
//! their own task; a panic or a timeout is a failed attempt, and the worker lives on.

use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::Duration;

use rqm_core::{Call, Cancellation, Failure, Invocation, JobContext, JobResult, Path, Registry};
use serde_json::{Map, Value};

/// Where a job's progress reports go.
pub(crate) type Progress = rqm_core::ProgressSink;

/// One attempt to run.
pub(crate) struct Run<'a> {
    pub(crate) func: &'a str,
    pub(crate) attempt: u32,
    pub(crate) project: Arc<str>,
    pub(crate) path: Path,
    pub(crate) input: Option<Value>,
    pub(crate) kwargs: Option<Map<String, Value>>,
    pub(crate) timeout: Option<Duration>,
}

/// Up to `most` of `semaphore`'s free permits, one an attempt, taken in one
/// step (one lock of the semaphore, not one a permit).
pub(crate) fn free_permits(
    semaphore: &Arc<tokio::sync::Semaphore>,
    most: usize,
) -> Vec<tokio::sync::OwnedSemaphorePermit> {
    let n = most.min(semaphore.available_permits());
    match u32::try_from(n).ok().filter(|&n| n > 0) {
        Some(n) => match semaphore.clone().try_acquire_many_owned(n) {
            Ok(mut all) => std::iter::from_fn(|| all.split(1)).collect(),
            Err(_) => Vec::new(),
        },
        None => Vec::new(),
    }
}

/// A function an attempt can run as a job pool task of its own with
/// ([`prepare_blocking`]): a synchronous one, called without a timeout.
#[derive(Clone, Copy)]
pub(crate) struct PoolFunction {
    f: fn(Invocation) -> JobResult,
    name: &'static str,
}

/// The function an attempt of `func` with `timeout` runs on the job pool
/// with, if it can: a synchronous function without a timeout. Anything else
/// goes through [`call`].
pub(crate) fn pool_function(
    registry: &'static Registry,
    func: &str,
    timeout: Option<Duration>,
) -> Option<PoolFunction> {
    if timeout.is_some() {
        return None;
    }
    let registered = registry.get(func)?;
    match registered.function.call {
        Call::Blocking(f) => Some(PoolFunction {
            f,
            name: registered.function.name,
        }),
        Call::Async(_) => None,
    }
}

/// The invocation of `run`'s function, with its context.
fn invocation(
    name: &'static str,
    run: Run<'_>,
    cancel: Cancellation,
    progress: Option<Progress>,
) -> Invocation {
    let mut context = JobContext::new(run.attempt, run.project, run.path, name, cancel);
    if let Some(progress) = progress {
        context = context.with_progress(progress);
    }
    Invocation {
        input: run.input,
        kwargs: run.kwargs,
        context,
    }
}

/// An attempt of a [`PoolFunction`], ready to run on any thread: what
/// [`call`] would do, without a task of its own, for engines that run many
/// short jobs (see `pool`).
pub(crate) fn prepare_blocking(
    function: PoolFunction,
    run: Run<'_>,
    cancel: Cancellation,
    progress: Option<Progress>,
) -> impl FnOnce() -> JobResult + Send + 'static {
    let PoolFunction { f, name } = function;
    let invocation = invocation(name, run, cancel, progress);
    move || match std::panic::catch_unwind(AssertUnwindSafe(|| f(invocation))) {
        Ok(outcome) => outcome,
        Err(panic) => Err(panicked(&*panic)),
    }
}

/// Calls the function, honouring the timeout; `cancel` is the attempt's stop
/// signal, given on a timeout too.
pub(crate) async fn call(
    registry: &'static Registry,
    run: Run<'_>,
    cancel: Cancellation,
    progress: Option<Progress>,
) -> JobResult {
    let Some(registered) = registry.get(run.func) else {
        return Err(Failure::permanent(format!(
            "no function named `{}` is registered in this worker",
            run.func
        )));
    };
    let timeout = run.timeout;
    let invocation = invocation(registered.function.name, run, cancel.clone(), progress);
    let timed_out = |limit: Duration| {
        cancel.cancel();
        Err(Failure::retryable(format!(
            "timed out after {} ms",
            limit.as_millis()
        )))
    };
    tracing::debug!("attempt begins");
    match registered.function.call {
        Call::Blocking(f) => {
            let (tx, rx) = tokio::sync::oneshot::channel();
            crate::pool::run(Box::new(move || {
                let _ = tx.send(std::panic::catch_unwind(AssertUnwindSafe(|| f(invocation))));
            }));
            match within(timeout, rx).await {
                Some(Ok(Ok(outcome))) => outcome,
                Some(Ok(Err(panic))) => Err(panicked(&*panic)),
                Some(Err(_)) => Err(Failure::retryable(
                    "the job's thread ended without an outcome".to_owned(),
                )),
                None => timed_out(timeout.unwrap_or_default()),
            }
        }
        Call::Async(f) => {
            let task = tokio::spawn(f(invocation));
            let abort = task.abort_handle();
            match within(timeout, task).await {
                Some(Ok(outcome)) => outcome,
                Some(Err(e)) if e.is_panic() => Err(panicked(&*e.into_panic())),
                Some(Err(e)) => Err(Failure::retryable(format!("the job's task failed: {e}"))),
                None => {
                    abort.abort();
                    timed_out(timeout.unwrap_or_default())
                }
            }
        }
    }
}

/// `future`'s output, or `None` when `limit` passes first.
async fn within<F: std::future::Future>(limit: Option<Duration>, future: F) -> Option<F::Output> {
    match limit {
        Some(limit) => tokio::time::timeout(limit, future).await.ok(),
        None => Some(future.await),
    }
}

fn panicked(payload: &(dyn std::any::Any + Send)) -> Failure {
    let message = payload
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a panic without a message".to_owned());
    Failure::retryable(format!("panicked: {message}"))
}
