use rqm_core::{JobContext, Outcome, Registry, job};
use serde::{Deserialize, Serialize};
use serde_json::Value;

#[derive(Serialize, Deserialize)]
struct Point {
    x: i64,
    y: i64,
}

#[job]
fn plain(x: i64) -> i64 {
    x
}

#[job(name = "renamed", retries = 3, timeout_ms = 1500, queue = "slow", backoff_ms = 20, backoff_factor = 3, backoff_max_ms = 400)]
fn with_options(p: Point, scale: Option<i64>) -> Point {
    let s = scale.unwrap_or(1);
    Point { x: p.x * s, y: p.y * s }
}

#[job]
async fn asynchronous(ms: u64, ctx: JobContext) -> Result<u64, String> {
    if ctx.is_cancelled() {
        return Err("stopped".into());
    }
    Ok(ms)
}

#[job]
fn by_ref(ctx: &JobContext, label: String) -> String {
    format!("{label}@{}", ctx.path())
}

#[job]
fn nothing() {}

#[job]
fn any(value: Value) -> Value {
    value
}

#[job]
fn adds(n: u32) -> Outcome<u32> {
    Outcome::new(n).append_all((0..n).map(|i| plain::job(i64::from(i))))
}

#[job]
pub async fn maybe_adds(n: u32) -> anyhow_like::Result<Outcome<u32>> {
    Ok(Outcome::new(n).append_group([plain::job(1), plain::job(2).blocking()]))
}

mod anyhow_like {
    pub type Result<T> = std::result::Result<T, String>;
}

fn main() {
    let registry = Registry::global().expect("no duplicate names");
    let names: Vec<_> = registry.names().collect();
    assert_eq!(
        names,
        ["adds", "any", "asynchronous", "by_ref", "maybe_adds", "nothing", "plain", "renamed"]
    );
    let r = registry.get("renamed").unwrap();
    assert_eq!(r.function.params, ["p", "scale"]);
    assert_eq!(r.defaults.retries, 3);
    assert_eq!(r.defaults.timeout_ms, Some(1500));
    assert_eq!(r.defaults.queue.as_deref(), Some("slow"));
    assert_eq!((r.defaults.backoff.initial_ms, r.defaults.backoff.factor, r.defaults.backoff.max_ms), (20, 3, 400));
    assert!(matches!(registry.get("asynchronous").unwrap().function.call, rqm_core::Call::Async(_)));
    assert!(matches!(registry.get("plain").unwrap().function.call, rqm_core::Call::Blocking(_)));
    assert_eq!(registry.get("by_ref").unwrap().function.params, ["label"]);
    assert!(adds::ADDS && maybe_adds::ADDS && !plain::ADDS);
    let _: rqm_core::Job<i64> = plain::job(1);
    let _: rqm_core::Job<Point> = with_options::job(Point { x: 1, y: 2 }, None).retries(1);
    let _: rqm_core::Job<()> = nothing::job();
    let _: rqm_core::Job<u32> = adds::job(2);
}
