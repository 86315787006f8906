//! The conformance job library (SPEC 9). Names are the JSON names.

use std::time::Duration;

use rqm_core::{JobContext, Outcome, job};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

/// `2x`.
#[job(name = "simpleTask")]
pub fn simple_task(x: i64) -> i64 {
    2 * x
}

/// `2x`, and appends `x` jobs `simpleTask(2x + i)`.
#[job(name = "addJobs")]
pub fn add_jobs(x: i64) -> Outcome<i64> {
    Outcome::new(2 * x).append_all((0..x).map(|i| simple_task::job(2 * x + i)))
}

/// `2x`, and appends one group of `simpleTask(2x + i)`, i = 0..x.
#[job(name = "addSubJob")]
pub fn add_sub_job(x: i64) -> Outcome<i64> {
    Outcome::new(2 * x).append_group((0..x).map(|i| simple_task::job(2 * x + i)))
}

/// A count of at least one.
#[derive(Clone, Copy, Debug, Serialize, Deserialize)]
#[serde(try_from = "u32", into = "u32")]
pub struct AtLeastOne(u32);

impl TryFrom<u32> for AtLeastOne {
    type Error = String;

    fn try_from(n: u32) -> Result<Self, String> {
        if n == 0 {
            Err("must be at least 1".to_owned())
        } else {
            Ok(AtLeastOne(n))
        }
    }
}

impl From<AtLeastOne> for u32 {
    fn from(n: AtLeastOne) -> u32 {
        n.0
    }
}

/// `n`, and appends `simpleTask(1)` then `n - 1` chained `simpleTask`s.
#[job(name = "addChain")]
pub fn add_chain(n: AtLeastOne) -> Outcome<u32> {
    Outcome::new(n.0)
        .append(simple_task::job(1))
        .append_all((1..n.0).map(|_| simple_task::after()))
}

/// `1`, and if `depth > 0` appends `fanout` × `expand([depth - 1, fanout])`.
#[job]
pub fn expand(depth: u32, fanout: u32) -> Outcome<i64> {
    let children = if depth > 0 { fanout } else { 0 };
    Outcome::new(1).append_all((0..children).map(|_| expand::job(depth - 1, fanout)))
}

/// The sum of every number in `value`; integers stay integers.
#[job]
pub fn sum(value: Value) -> Value {
    let (mut int, mut float, mut any_float) = (0i64, 0f64, false);
    let mut stack = vec![&value];
    while let Some(v) = stack.pop() {
        match v {
            Value::Number(n) => match n.as_i64() {
                Some(i) => int = int.wrapping_add(i),
                None => {
                    any_float = true;
                    float += n.as_f64().unwrap_or(0.0);
                }
            },
            Value::Array(items) => stack.extend(items),
            Value::Object(map) => stack.extend(map.values()),
            _ => {}
        }
    }
    if any_float {
        json!(float + int as f64)
    } else {
        json!(int)
    }
}

/// The input.
#[job]
pub fn echo(value: Value) -> Value {
    value
}

/// `ms`, after sleeping that long; stops early when told to.
#[job]
pub async fn sleep_ms(ms: u64, ctx: JobContext) -> Result<u64, String> {
    tokio::select! {
        () = tokio::time::sleep(Duration::from_millis(ms)) => Ok(ms),
        () = ctx.cancelled() => Err(format!("stopped after less than {ms} ms: the project ended")),
    }
}

/// Fails every attempt with `message`.
#[job]
pub fn fail(message: String) -> Result<(), String> {
    Err(message)
}

/// Panics with `message`.
#[job]
pub fn panic(message: String) {
    std::panic::panic_any(message)
}

/// Fails attempts `1..=n`, then returns the attempt number.
#[job]
pub fn flaky(n: u32, ctx: &JobContext) -> Result<u32, String> {
    if ctx.attempt() <= n {
        Err(format!("flaky: attempt {} of {n} fails", ctx.attempt()))
    } else {
        Ok(ctx.attempt())
    }
}

/// Call this from a binary's `main` to link the library: the linker keeps
/// `#[job]` registrations only from code a binary references.
#[inline(never)]
pub fn link() {}

/// Ends the worker process that runs it, at once: a job whose runs kill
/// their worker, for crash tests. Not one of SPEC 9's.
#[job]
pub fn exit_worker(code: i32) {
    std::process::exit(code)
}

/// The time it runs at, in microseconds since the Unix epoch, whatever it
/// is given: the chain benchmark's hops, timed by the jobs themselves. Not
/// one of SPEC 9's.
#[job]
pub fn hop(_previous: u64) -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
}
