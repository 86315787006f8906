//! rqm-bench: throughput, latency and scale of rqm, on Redis and in memory.
//!
//! `cargo run --release -p examples --bin rqm-bench -- SCENARIO [options]`
//!
//! Starts its own `redis-server` on a free loopback port (or uses
//! `--redis URL`), runs the workers in this process (or as `--worker-procs N`
//! `rqm-worker run` processes) and prints one JSON line per scenario on
//! stdout, with every parameter and figure, and a summary on stderr. Each
//! Redis scenario also measures, on the same server, Redis's own ceiling for
//! the command pattern rqm uses: FCALL of a trivial function at the depth the
//! worker pipelines, scaled by the jobs rqm gets through per script call.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use clap::{Parser, ValueEnum};
use futures_util::StreamExt;
use rqm_core::{Limits, Registry, Report};
use rqm_redis::redis::{self, aio::MultiplexedConnection};
use rqm_redis::testing::RedisServer;
use rqm_redis::{Config, RedisEngine};
use rqm_worker::{Engine, EngineConfig, WorkerConfig};
use serde_json::{Value, json};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

type Fallible<T> = Result<T, Box<dyn std::error::Error + Send + Sync>>;

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Scenario {
    /// N independent trivial jobs: jobs/s from submit to finished.
    Fanout,
    /// Jobs each taking the previous result: ms per hop.
    Chain,
    /// Parallel jobs, then one job taking all their results.
    Fanin,
    /// Blocking groups, each with a job that appends jobs.
    Tree,
    /// Seconds to submit big projects.
    Submit,
    /// Redis memory per job, queued and finished.
    Memory,
    /// Redis commands per job in fanout and chain.
    Commands,
    /// Fanout, chain and fanin on the in-memory engine.
    Embedded,
    /// Every scenario, then a table.
    All,
    /// (Internal) one submit of `--jobs` nodes in a process of its own, so
    /// that its peak memory is its own.
    #[value(hide = true)]
    SubmitChild,
}

#[derive(Clone, Debug, Parser)]
#[command(name = "rqm-bench", about = "Benchmarks of rqm on Redis and in memory")]
struct Args {
    /// What to measure.
    #[arg(value_enum)]
    scenario: Scenario,
    /// A Redis to use instead of starting one (its data under the bench's
    /// prefixes is deleted).
    #[arg(long)]
    redis: Option<String>,
    /// Worker processes (`rqm-worker run` beside this binary); 0 runs one
    /// worker in this process.
    #[arg(long, default_value_t = 0)]
    worker_procs: usize,
    /// Jobs in `fanout`.
    #[arg(long, default_value_t = 100_000)]
    jobs: usize,
    /// Jobs in `chain`.
    #[arg(long, default_value_t = 1_000)]
    chain: usize,
    /// Parallel jobs in `fanin`.
    #[arg(long, default_value_t = 10_000)]
    fanin: usize,
    /// Blocking groups in `tree`.
    #[arg(long, default_value_t = 100)]
    groups: usize,
    /// Jobs each group's job appends in `tree`.
    #[arg(long, default_value_t = 1_000)]
    appends: usize,
    /// Node counts `submit` submits.
    #[arg(long, value_delimiter = ',', default_values_t = [100_000, 1_000_000])]
    submit_sizes: Vec<usize>,
    /// Attempts each worker runs at once.
    #[arg(long, default_value_t = 1024)]
    concurrency: usize,
    /// Jobs a worker takes or reports per round trip.
    #[arg(long, default_value_t = 256)]
    batch: usize,
    /// Exit with status 1 when a figure misses its target.
    #[arg(long)]
    check: bool,
    /// Runs of every scenario, one after the other on one server; the
    /// table gives each figure's median and range over the runs.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..))]
    repeat: u32,
}

/// A figure, its target, and whether it met it.
#[derive(Clone, Copy, Debug)]
struct Target {
    scenario: &'static str,
    figure: &'static str,
    value: f64,
    /// `<=` or `>=`.
    op: &'static str,
    target: f64,
}

impl Target {
    fn met(&self) -> bool {
        if self.op == "<=" {
            self.value <= self.target
        } else {
            self.value >= self.target
        }
    }
}

/// What Redis did during a scenario.
#[derive(Clone, Debug, Default)]
struct ServerStats {
    /// Commands, those scripts call included.
    commands: u64,
    /// Script calls (FCALL, EVALSHA, EVAL).
    scripts: u64,
    /// Per command name: calls, and µs spent in them (a script's include
    /// the commands it calls).
    by_command: BTreeMap<String, (u64, u64)>,
    /// The slowest call in SLOWLOG, µs.
    slowest_us: u64,
    /// Calls slower than 10 ms.
    over_10ms: usize,
    /// The slowest calls: µs, and the command or script.
    slowest: Vec<(u64, String)>,
}

impl ServerStats {
    fn json(&self, jobs: usize) -> Value {
        json!({
            "commands": self.commands,
            "commands_per_job": per(self.commands, jobs),
            "script_calls": self.scripts,
            "jobs_per_script_call": if self.scripts == 0 { 0.0 } else { jobs as f64 / self.scripts as f64 },
            "slowest_call_us": self.slowest_us,
            "calls_over_10ms": self.over_10ms,
            "slowest_calls": self.slowest.iter().map(|(us, what)| json!({"us": us, "what": what})).collect::<Vec<_>>(),
            "by_command": self.by_command.iter().map(|(k, (calls, usec))| (k.clone(), json!({"calls": calls, "usec": usec}))).collect::<serde_json::Map<_, _>>(),
        })
    }
}

fn per(n: u64, jobs: usize) -> f64 {
    n as f64 / jobs.max(1) as f64
}

/// The Redis side of the bench: the server, an admin connection, the
/// engine and its workers.
struct Bench {
    _server: Option<RedisServer>,
    url: String,
    admin: MultiplexedConnection,
    engine: RedisEngine,
    workers: Vec<Worker>,
    owns_server: bool,
}

enum Worker {
    InProcess(oneshot::Sender<()>, JoinHandle<()>),
    Process(Child),
}

impl Worker {
    async fn stop(self) {
        match self {
            Worker::InProcess(stop, task) => {
                let _ = stop.send(());
                let _ = task.await;
            }
            Worker::Process(mut child) => {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
    }
}

const PREFIX: &str = "rqmbench:";
const QUIET_PREFIX: &str = "rqmbench-idle:";

fn limits() -> Limits {
    Limits {
        max_nodes: 2_000_000,
        max_bytes: 256 << 20,
        ..Limits::default()
    }
}

fn registry() -> &'static Registry {
    examples::library::link();
    Registry::global().expect("the job library registers cleanly")
}

async fn engine(url: &str, prefix: &str) -> Fallible<RedisEngine> {
    let config = Config {
        url: url.to_owned(),
        prefix: prefix.to_owned(),
        ..Config::default()
    };
    Ok(RedisEngine::connect(config, limits(), Some(registry())).await?)
}

fn worker_config(args: &Args) -> WorkerConfig {
    WorkerConfig {
        concurrency: args.concurrency,
        batch: args.batch,
        ..WorkerConfig::default()
    }
}

fn spawn_in_process(engine: RedisEngine, config: WorkerConfig) -> Worker {
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        let shutdown = async move {
            let _ = stopped.await;
        };
        if let Err(e) = rqm_worker::run_redis_worker(engine, registry(), config, shutdown).await {
            eprintln!("worker stopped: {e}");
        }
    });
    Worker::InProcess(stop, task)
}

fn worker_binary() -> Fallible<PathBuf> {
    let exe = std::env::current_exe()?;
    let path = exe.with_file_name("rqm-worker");
    if !path.exists() {
        return Err(format!(
            "--worker-procs needs the rqm-worker binary beside rqm-bench ({}): build it with `cargo build --release -p examples --bins`",
            path.display()
        )
        .into());
    }
    Ok(path)
}

impl Bench {
    async fn start(args: &Args) -> Fallible<Bench> {
        let (server, url) = match &args.redis {
            Some(url) => (None, url.clone()),
            None => {
                let server = RedisServer::start_with(&["--appendonly", "no"]);
                let url = server.url();
                (Some(server), url)
            }
        };
        let client = redis::Client::open(url.as_str())?;
        let admin = client.get_multiplexed_async_connection().await?;
        let engine = engine(&url, PREFIX).await?;
        let owns_server = server.is_some();
        let mut bench = Bench {
            _server: server,
            url,
            admin,
            engine,
            workers: Vec::new(),
            owns_server,
        };
        bench.clear().await?;
        if args.worker_procs == 0 {
            bench
                .workers
                .push(spawn_in_process(bench.engine.clone(), worker_config(args)));
        } else {
            let binary = worker_binary()?;
            for _ in 0..args.worker_procs {
                let child = Command::new(&binary)
                    .args(["run", "--redis", &bench.url, "--prefix", PREFIX])
                    .arg("--concurrency")
                    .arg(args.concurrency.to_string())
                    .env("RQM_LOG", "warn")
                    .stdin(Stdio::null())
                    .spawn()?;
                bench.workers.push(Worker::Process(child));
            }
        }
        Ok(bench)
    }

    async fn stop(self) {
        for worker in self.workers {
            worker.stop().await;
        }
    }

    /// Deletes what earlier runs left under the bench's prefixes, and waits
    /// until Redis has freed it in the background (which would blur the
    /// next figures).
    async fn clear(&mut self) -> Fallible<()> {
        if self.owns_server {
            let () = redis::cmd("FLUSHALL")
                .arg("ASYNC")
                .query_async(&mut self.admin)
                .await?;
            return self.freed().await;
        }
        for prefix in [PREFIX, QUIET_PREFIX] {
            self.clear_prefix(prefix).await?;
        }
        self.freed().await
    }

    /// Unlinks every key under `prefix`, in short SCANs.
    async fn clear_prefix(&mut self, prefix: &str) -> Fallible<()> {
        let mut cursor = 0u64;
        loop {
            let (next, keys): (u64, Vec<String>) = redis::cmd("SCAN")
                .arg(cursor)
                .arg("MATCH")
                .arg(format!("{prefix}*"))
                .arg("COUNT")
                .arg(1000)
                .query_async(&mut self.admin)
                .await?;
            if !keys.is_empty() {
                let _: i64 = redis::cmd("UNLINK")
                    .arg(&keys)
                    .query_async(&mut self.admin)
                    .await?;
            }
            if next == 0 {
                return Ok(());
            }
            cursor = next;
        }
    }

    async fn used_memory(&mut self) -> Fallible<u64> {
        let info: String = redis::cmd("INFO")
            .arg("memory")
            .query_async(&mut self.admin)
            .await?;
        info.lines()
            .find_map(|l| l.strip_prefix("used_memory:"))
            .and_then(|v| v.trim().parse().ok())
            .ok_or_else(|| "INFO memory has no used_memory".into())
    }

    /// Resets the server's command counts and slow log.
    async fn reset_stats(&mut self) -> Fallible<()> {
        let () = redis::cmd("CONFIG")
            .arg("RESETSTAT")
            .query_async(&mut self.admin)
            .await?;
        let () = redis::cmd("CONFIG")
            .arg("SET")
            .arg("slowlog-log-slower-than")
            .arg(1000)
            .arg("slowlog-max-len")
            .arg(1024)
            .query_async(&mut self.admin)
            .await?;
        let () = redis::cmd("SLOWLOG")
            .arg("RESET")
            .query_async(&mut self.admin)
            .await?;
        Ok(())
    }

    async fn stats(&mut self) -> Fallible<ServerStats> {
        let info: String = redis::cmd("INFO")
            .arg("commandstats")
            .query_async(&mut self.admin)
            .await?;
        let mut stats = ServerStats::default();
        for line in info.lines() {
            let Some((name, rest)) = line
                .strip_prefix("cmdstat_")
                .and_then(|l| l.split_once(':'))
            else {
                continue;
            };
            // The bench's own measuring is not rqm's work.
            if matches!(name, "info" | "config" | "config|resetstat" | "config|set")
                || name.starts_with("slowlog")
            {
                continue;
            }
            let calls: u64 = rest
                .split(',')
                .find_map(|kv| kv.strip_prefix("calls="))
                .and_then(|v| v.parse().ok())
                .unwrap_or(0);
            stats.commands += calls;
            if name == "fcall" || name == "evalsha" || name == "eval" {
                stats.scripts += calls;
            }
            let usec: u64 = rest
                .split(',')
                .find_map(|kv| kv.strip_prefix("usec="))
                .and_then(|v| v.parse().ok())
                .unwrap_or(0);
            stats.by_command.insert(name.to_owned(), (calls, usec));
        }
        let mut log = redis::cmd("SLOWLOG")
            .arg("GET")
            .arg(1024)
            .query_async::<redis::Value>(&mut self.admin)
            .await
            .map(|v| slowlog_entries(&v))?;
        log.sort_by_key(|e| std::cmp::Reverse(e.0));
        for (us, _) in &log {
            stats.slowest_us = stats.slowest_us.max(*us);
            if *us > 10_000 {
                stats.over_10ms += 1;
            }
        }
        log.truncate(5);
        stats.slowest = log;
        Ok(stats)
    }

    /// Submits `json` and waits for the project to end, timing from the
    /// start of submit to the end's publish; then reads its report.
    async fn run(&mut self, json: &[u8]) -> Fallible<(Duration, Report)> {
        run_on(&self.engine, json).await
    }

    /// Trivial-function calls per second on this server, `depth` in
    /// flight: FCALL of a function that returns 1, as rqm calls its own.
    async fn ceiling(&mut self, depth: usize) -> Fallible<f64> {
        let client = redis::Client::open(self.url.as_str())?;
        let conn = client.get_multiplexed_async_connection().await?;
        let _: String = redis::cmd("FUNCTION")
            .arg("LOAD")
            .arg("REPLACE")
            .arg("#!lua name=rqmbench_ceiling\nredis.register_function('rqmbench_trivial', function() return 1 end)")
            .query_async(&mut conn.clone())
            .await?;
        let window = Duration::from_millis(500);
        let start = Instant::now();
        let mut tasks = Vec::new();
        for _ in 0..depth {
            let mut conn = conn.clone();
            tasks.push(tokio::spawn(async move {
                let mut calls = 0u64;
                let call = redis::cmd("FCALL").arg("rqmbench_trivial").arg(0).clone();
                while start.elapsed() < window {
                    let _: i64 = call.query_async(&mut conn).await?;
                    calls += 1;
                }
                Ok::<u64, redis::RedisError>(calls)
            }));
        }
        let mut calls = 0;
        for t in tasks {
            calls += t.await??;
        }
        Ok(calls as f64 / start.elapsed().as_secs_f64())
    }
}

/// The slow log's entries as (µs, what ran), scripts named.
fn slowlog_entries(v: &redis::Value) -> Vec<(u64, String)> {
    let redis::Value::Array(entries) = v else {
        return Vec::new();
    };
    let names = rqm_redis::function_names();
    let text = |v: &redis::Value| match v {
        redis::Value::BulkString(b) => String::from_utf8_lossy(b).into_owned(),
        other => format!("{other:?}"),
    };
    entries
        .iter()
        .filter_map(|e| {
            let redis::Value::Array(fields) = e else {
                return None;
            };
            let Some(redis::Value::Int(us)) = fields.get(2) else {
                return None;
            };
            let what = match fields.get(3) {
                Some(redis::Value::Array(argv)) if !argv.is_empty() => {
                    let command = text(&argv[0]).to_lowercase();
                    let function = argv.get(1).map(text).unwrap_or_default();
                    match names.iter().find(|(_, full)| *full == function) {
                        Some((name, _)) if command == "fcall" => format!("script {name}"),
                        _ => command,
                    }
                }
                _ => String::new(),
            };
            Some((u64::try_from(*us).unwrap_or(0), what))
        })
        .collect()
}

/// Publishes of ended projects, subscribed to before a submit so that no
/// end is missed.
struct Ended(std::pin::Pin<Box<dyn futures_util::Stream<Item = redis::Msg> + Send>>);

impl Ended {
    async fn subscribe(engine: &RedisEngine) -> Fallible<Ended> {
        let mut pubsub = engine.client().get_async_pubsub().await?;
        pubsub.subscribe(engine.ended_channel()).await?;
        Ok(Ended(Box::pin(pubsub.into_on_message())))
    }

    /// Waits until project `id` ends, for at most ten minutes.
    async fn of(&mut self, id: &str) -> Fallible<()> {
        let limit = Duration::from_secs(600);
        let start = Instant::now();
        loop {
            let message =
                tokio::time::timeout(limit.saturating_sub(start.elapsed()), self.0.next())
                    .await
                    .map_err(|_| format!("project {id} did not end within {limit:?}"))?
                    .ok_or("the subscription to ended projects broke")?;
            if message.get_payload::<String>().ok().as_deref() == Some(id) {
                return Ok(());
            }
        }
    }
}

async fn run_on(engine: &RedisEngine, json: &[u8]) -> Fallible<(Duration, Report)> {
    let mut ended = Ended::subscribe(engine).await?;
    let start = Instant::now();
    let id = engine.submit_json(json).await?;
    ended.of(&id).await?;
    let elapsed = start.elapsed();
    let report = engine.status(&id).await?;
    Ok((elapsed, report))
}

/// `{"jobs": [simpleTask(0), ...]}`, written as text (a JSON value tree of
/// a million jobs would dwarf what is measured).
fn fanout_json(n: usize) -> Vec<u8> {
    use std::io::Write;
    let mut out = Vec::with_capacity(16 + 40 * n);
    out.extend_from_slice(b"{\"jobs\": [");
    for i in 0..n {
        if i > 0 {
            out.push(b',');
        }
        write!(out, r#"{{"func": "simpleTask", "args": {i}}}"#).expect("a Vec takes writes");
    }
    out.extend_from_slice(b"]}");
    out
}

fn fanout_result(n: usize) -> Value {
    Value::Array((0..n).map(|i| json!(2 * i)).collect())
}

fn chain_json(n: usize) -> Vec<u8> {
    let mut jobs = vec![json!({"func": "hop", "args": 0})];
    jobs.extend((1..n).map(|_| json!({"func": "hop", "previousJobArgs": true})));
    serde_json::to_vec(&json!({"jobs": jobs})).expect("JSON")
}

fn fanin_json(n: usize) -> Vec<u8> {
    let parallel: Vec<Value> = (0..n)
        .map(|i| json!({"func": "simpleTask", "args": i}))
        .collect();
    serde_json::to_vec(
        &json!({"jobs": [{"jobs": parallel}, {"func": "sum", "previousJobArgs": true}]}),
    )
    .expect("JSON")
}

fn fanin_result(n: usize) -> Value {
    let parallel = fanout_result(n);
    let total: u64 = (0..n as u64).map(|i| 2 * i).sum();
    json!([parallel, total])
}

fn tree_json(groups: usize, appends: usize) -> Vec<u8> {
    let list: Vec<Value> = (0..groups)
        .map(|_| json!({"blocking": true, "jobs": [{"func": "addJobs", "args": appends}]}))
        .collect();
    serde_json::to_vec(&json!({"jobs": list})).expect("JSON")
}

fn tree_result(groups: usize, appends: usize) -> Value {
    let x = appends as u64;
    let mut group = vec![json!(2 * x)];
    group.extend((0..x).map(|i| json!(2 * (2 * x + i))));
    Value::Array((0..groups).map(|_| Value::Array(group.clone())).collect())
}

fn expect_result(scenario: &str, report: &Report, expected: &Value) -> Fallible<()> {
    if report.status != "finished" {
        return Err(format!(
            "{scenario}: the project ended {} ({:?})",
            report.status, report.error
        )
        .into());
    }
    if report.result.as_ref() != Some(expected) {
        return Err(format!("{scenario}: the project's result is not the expected one").into());
    }
    Ok(())
}

/// Hop times from a chain's results (each job's start, µs): p50 and p99 ms.
fn hops(report: &Report, n: usize) -> Fallible<(f64, f64)> {
    let stamps: Vec<u64> = report
        .result
        .as_ref()
        .and_then(Value::as_array)
        .map(|a| a.iter().filter_map(Value::as_u64).collect())
        .unwrap_or_default();
    if report.status != "finished" || stamps.len() != n || n < 2 {
        return Err(format!(
            "chain: the project ended {} without {n} stamps",
            report.status
        )
        .into());
    }
    let mut gaps: Vec<u64> = stamps
        .windows(2)
        .map(|w| w[1].saturating_sub(w[0]))
        .collect();
    gaps.sort_unstable();
    let at = |q: f64| gaps[((gaps.len() - 1) as f64 * q).round() as usize] as f64 / 1000.0;
    Ok((at(0.5), at(0.99)))
}

/// A memory figure of this process from /proc (VmRSS, VmHWM), bytes.
fn rss_field(name: &str) -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix(name))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        })
        .map_or(0, |kb| kb * 1024)
}

/// The submit-child scenario: one submit, timed, with this process's
/// peak memory before (the JSON built) and after.
async fn submit_child(args: &Args) -> Fallible<()> {
    let url = args.redis.clone().ok_or("submit-child needs --redis")?;
    let n = args.jobs;
    let json = fanout_json(n.saturating_sub(1));
    let idle = engine(&url, QUIET_PREFIX).await?;
    let peak_json = rss_field("VmHWM:");
    let json_bytes = json.len();
    let start = Instant::now();
    // Moved, as `rqm-worker submit` moves the file it read.
    idle.submit_json(json).await?;
    let seconds = start.elapsed().as_secs_f64();
    let peak_end = rss_field("VmHWM:");
    println!(
        "{}",
        json!({"seconds": seconds, "json_bytes": json_bytes, "peak_rss_with_json_bytes": peak_json, "peak_rss_after_submit_bytes": peak_end})
    );
    Ok(())
}

struct Out {
    targets: Vec<Target>,
    /// The run under way, from 1 (see `--repeat`).
    run: u32,
}

impl Out {
    fn emit(&mut self, line: Value, summary: String) {
        let line = merge(line, json!({"run": self.run}));
        println!("{line}");
        eprintln!("{summary}");
    }

    fn target(
        &mut self,
        scenario: &'static str,
        figure: &'static str,
        value: f64,
        op: &'static str,
        target: f64,
    ) -> Value {
        let t = Target {
            scenario,
            figure,
            value,
            op,
            target,
        };
        let v = json!({"figure": figure, "value": value, "target": format!("{op} {target}"), "met": t.met()});
        self.targets.push(t);
        v
    }
}

async fn measured<T>(
    bench: &mut Bench,
    f: impl AsyncFnOnce(&mut Bench) -> Fallible<T>,
) -> Fallible<(T, ServerStats)> {
    bench.reset_stats().await?;
    let out = f(bench).await?;
    let stats = bench.stats().await?;
    Ok((out, stats))
}

fn common(args: &Args) -> Value {
    json!({
        "engine": "redis",
        "worker_procs": args.worker_procs,
        "concurrency": args.concurrency,
        "batch": args.batch,
        "cores": std::thread::available_parallelism().map_or(0, |n| n.get()),
    })
}

fn merge(mut a: Value, b: Value) -> Value {
    if let (Some(a), Value::Object(b)) = (a.as_object_mut(), b) {
        a.extend(b);
    }
    a
}

/// Redis's ceiling for the pattern: trivial function calls/s at depth 2 (a
/// worker's take loop and its reporter each keep one call in flight) times
/// the jobs rqm got through per script call.
async fn with_ceiling(
    bench: &mut Bench,
    jobs: usize,
    stats: &ServerStats,
    rate: f64,
) -> Fallible<Value> {
    let calls = bench.ceiling(2).await?;
    let jobs_per_call = if stats.scripts == 0 {
        0.0
    } else {
        jobs as f64 / stats.scripts as f64
    };
    let ceiling = calls * jobs_per_call;
    Ok(json!({
        "ceiling_trivial_fcall_per_s": calls.round(),
        "ceiling_jobs_per_s": ceiling.round(),
        "fraction_of_ceiling": if ceiling > 0.0 { rate / ceiling } else { 0.0 },
    }))
}

async fn fanout(bench: &mut Bench, args: &Args, out: &mut Out) -> Fallible<()> {
    let n = args.jobs;
    let json = fanout_json(n);
    let ((elapsed, report), stats) = measured(bench, async |b| b.run(&json).await).await?;
    expect_result("fanout", &report, &fanout_result(n))?;
    let rate = n as f64 / elapsed.as_secs_f64();
    let ceiling = with_ceiling(bench, n, &stats, rate).await?;
    let targets = json!([
        out.target("fanout", "jobs_per_s", rate, ">=", 70_000.0),
        out.target(
            "fanout",
            "commands_per_job",
            per(stats.commands, n),
            "<=",
            3.0
        ),
        out.target(
            "fanout",
            "calls_over_10ms",
            stats.over_10ms as f64,
            "<=",
            0.0
        ),
    ]);
    let line = merge(
        merge(
            common(args),
            json!({"scenario": "fanout", "jobs": n, "seconds": elapsed.as_secs_f64(), "jobs_per_s": rate.round(), "redis": stats.json(n), "targets": targets}),
        ),
        ceiling.clone(),
    );
    out.emit(
        line,
        format!(
            "fanout: {n} jobs in {:.3} s = {:.0} jobs/s ({:.1}% of Redis's ceiling {:.0}), {:.2} commands/job, slowest call {} us",
            elapsed.as_secs_f64(),
            rate,
            100.0 * ceiling["fraction_of_ceiling"].as_f64().unwrap_or(0.0),
            ceiling["ceiling_jobs_per_s"].as_f64().unwrap_or(0.0),
            per(stats.commands, n),
            stats.slowest_us
        ),
    );
    Ok(())
}

async fn chain(bench: &mut Bench, args: &Args, out: &mut Out) -> Fallible<()> {
    let n = args.chain;
    let json = chain_json(n);
    let ((elapsed, report), stats) = measured(bench, async |b| b.run(&json).await).await?;
    let (p50, p99) = hops(&report, n)?;
    let targets = json!([
        out.target("chain", "hop_ms_p50", p50, "<=", 0.25),
        out.target(
            "chain",
            "commands_per_job",
            per(stats.commands, n),
            "<=",
            6.0
        ),
        out.target(
            "chain",
            "calls_over_10ms",
            stats.over_10ms as f64,
            "<=",
            0.0
        ),
    ]);
    let line = merge(
        common(args),
        json!({"scenario": "chain", "jobs": n, "seconds": elapsed.as_secs_f64(), "hop_ms_p50": p50, "hop_ms_p99": p99, "redis": stats.json(n), "targets": targets}),
    );
    out.emit(
        line,
        format!(
            "chain: {n} hops in {:.3} s, p50 {p50:.3} ms, p99 {p99:.3} ms per hop, {:.2} commands/job",
            elapsed.as_secs_f64(),
            per(stats.commands, n)
        ),
    );
    Ok(())
}

async fn fanin(bench: &mut Bench, args: &Args, out: &mut Out) -> Fallible<()> {
    let n = args.fanin;
    let json = fanin_json(n);
    let ((elapsed, report), stats) = measured(bench, async |b| b.run(&json).await).await?;
    expect_result("fanin", &report, &fanin_result(n))?;
    let targets = json!([
        out.target("fanin", "seconds", elapsed.as_secs_f64(), "<=", 0.3),
        out.target(
            "fanin",
            "calls_over_10ms",
            stats.over_10ms as f64,
            "<=",
            0.0
        ),
    ]);
    let line = merge(
        common(args),
        json!({"scenario": "fanin", "jobs": n + 1, "seconds": elapsed.as_secs_f64(), "redis": stats.json(n + 1), "targets": targets}),
    );
    out.emit(
        line,
        format!(
            "fanin: {n} parallel jobs and one taking their results in {:.3} s, {:.2} commands/job",
            elapsed.as_secs_f64(),
            per(stats.commands, n + 1)
        ),
    );
    Ok(())
}

async fn tree(bench: &mut Bench, args: &Args, out: &mut Out) -> Fallible<()> {
    let (groups, appends) = (args.groups, args.appends);
    let jobs = groups * (appends + 1);
    let json = tree_json(groups, appends);
    let ((elapsed, report), stats) = measured(bench, async |b| b.run(&json).await).await?;
    expect_result("tree", &report, &tree_result(groups, appends))?;
    let rate = jobs as f64 / elapsed.as_secs_f64();
    let targets = json!([out.target("tree", "calls_over_10ms", stats.over_10ms as f64, "<=", 0.0)]);
    let line = merge(
        common(args),
        json!({"scenario": "tree", "groups": groups, "appends_per_group": appends, "jobs": jobs, "seconds": elapsed.as_secs_f64(), "jobs_per_s": rate.round(), "redis": stats.json(jobs), "targets": targets}),
    );
    out.emit(
        line,
        format!(
            "tree: {groups} blocking groups x (1 + {appends} appended) = {jobs} jobs in {:.3} s = {rate:.0} jobs/s, {:.2} commands/job",
            elapsed.as_secs_f64(),
            per(stats.commands, jobs)
        ),
    );
    Ok(())
}

/// What a submit may add to its process's peak memory, whatever the
/// project's size.
const SUBMITTER_BUDGET_MB: f64 = 64.0;

async fn submit(bench: &mut Bench, args: &Args, out: &mut Out) -> Fallible<()> {
    // Under a prefix no worker serves (see submit_child): only the submit
    // is measured.
    for &n in &args.submit_sizes {
        // In a process of its own, whose peak memory is the submit's.
        let ((child, json_bytes), stats) = measured(bench, async |b| {
            let output = Command::new(std::env::current_exe()?)
                .args(["submit-child", "--redis", &b.url, "--jobs"])
                .arg(n.to_string())
                .stderr(Stdio::inherit())
                .output()?;
            if !output.status.success() {
                return Err(format!("the submitting process failed ({})", output.status).into());
            }
            let line: Value = serde_json::from_slice(&output.stdout)?;
            let bytes = line["json_bytes"].as_u64().unwrap_or(0);
            Ok((line, bytes))
        })
        .await?;
        let seconds = child["seconds"].as_f64().unwrap_or(f64::NAN);
        let peak_json = child["peak_rss_with_json_bytes"].as_u64().unwrap_or(0);
        let peak_end = child["peak_rss_after_submit_bytes"].as_u64().unwrap_or(0);
        let growth = peak_end.saturating_sub(peak_json);
        let target = if n <= 100_000 { 0.5 } else { 5.0 };
        let figure = if n <= 100_000 {
            "seconds_100k"
        } else {
            "seconds_1m"
        };
        let targets = json!([
            out.target("submit", figure, seconds, "<=", target),
            out.target(
                "submit",
                "calls_over_10ms",
                stats.over_10ms as f64,
                "<=",
                0.0
            ),
            // Bounded: the submit holds parts, not the project, so what it
            // adds to the process is the same at any size.
            out.target(
                "submit",
                "submitter_growth_mb",
                growth as f64 / 1e6,
                "<=",
                SUBMITTER_BUDGET_MB
            ),
        ]);
        let line = merge(
            common(args),
            json!({"scenario": "submit", "nodes": n, "json_bytes": json_bytes, "seconds": seconds, "submitter_peak_rss_with_json_bytes": peak_json, "submitter_peak_rss_after_submit_bytes": peak_end, "submit_peak_growth_bytes_per_node": growth as f64 / n as f64, "redis": stats.json(n), "targets": targets}),
        );
        out.emit(
            line,
            format!(
                "submit: {n} nodes ({:.1} MB of JSON) in {seconds:.3} s; the submitting process peaked at {:.0} MB ({:.0} MB with the JSON read, so the submit added {:.0} MB, {:.0} B/node); slowest Redis call {} us",
                json_bytes as f64 / 1e6,
                peak_end as f64 / 1e6,
                peak_json as f64 / 1e6,
                growth as f64 / 1e6,
                growth as f64 / n as f64,
                stats.slowest_us
            ),
        );
        bench.clear_quiet().await?;
    }
    Ok(())
}

impl Bench {
    async fn clear_quiet(&mut self) -> Fallible<()> {
        self.clear_prefix(QUIET_PREFIX).await?;
        self.freed().await
    }

    /// Waits until Redis has freed what was unlinked.
    async fn freed(&mut self) -> Fallible<()> {
        loop {
            let info: String = redis::cmd("INFO")
                .arg("memory")
                .query_async(&mut self.admin)
                .await?;
            let pending = info
                .lines()
                .find_map(|l| l.strip_prefix("lazyfree_pending_objects:"))
                .and_then(|v| v.trim().parse::<u64>().ok())
                .unwrap_or(0);
            if pending == 0 {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

async fn memory(bench: &mut Bench, args: &Args, out: &mut Out) -> Fallible<()> {
    let n = args.jobs;
    let idle = engine(&bench.url, QUIET_PREFIX).await?;
    bench.clear_quiet().await?;
    let json = fanout_json(n);
    let before = bench.used_memory().await?;
    let mut ended = Ended::subscribe(&idle).await?;
    let id = idle.submit_json(json.as_slice()).await?;
    let queued = bench.used_memory().await?.saturating_sub(before);
    // Now a worker serves the prefix, and the project runs to its end.
    let worker = spawn_in_process(idle.clone(), worker_config(args));
    ended.of(&id).await?;
    worker.stop().await;
    let finished = bench.used_memory().await?.saturating_sub(before);
    let report = idle.status(&id).await?;
    expect_result("memory", &report, &fanout_result(n))?;
    let (q, f) = (queued as f64 / n as f64, finished as f64 / n as f64);
    let targets = json!([out.target("memory", "finished_bytes_per_job", f, "<=", 250.0)]);
    let line = merge(
        common(args),
        json!({"scenario": "memory", "jobs": n, "queued_bytes": queued, "finished_bytes": finished, "queued_bytes_per_job": q, "finished_bytes_per_job": f, "targets": targets}),
    );
    out.emit(
        line,
        format!("memory: {n} trivial jobs take {q:.0} B/job of Redis memory while queued, {f:.0} B/job once finished (kept for the retention)"),
    );
    bench.clear_quiet().await?;
    Ok(())
}

async fn embedded(args: &Args, out: &mut Out) -> Fallible<()> {
    let engine = Engine::new(EngineConfig {
        concurrency: args.concurrency,
        limits: limits(),
        ..EngineConfig::default()
    })?;
    // The time to the finished report, and the part of it spent reading,
    // checking and compiling the JSON.
    let run = async |json: &[u8]| -> Fallible<(Duration, Duration, Report)> {
        let start = Instant::now();
        let handle = engine.submit_json(json)?;
        let submitted = start.elapsed();
        let report = handle.wait().await;
        Ok((start.elapsed(), submitted, report))
    };
    let n = args.jobs;
    // The fanout as a Rust program submits it: a project value built with
    // the typed job handles (built before the clock starts, as the JSON is).
    let project = rqm_core::Project {
        jobs: (0..n as i64)
            .map(|i| examples::library::simple_task::job(i).into())
            .collect(),
    };
    let start = Instant::now();
    let handle = engine.submit(project)?;
    let value_submitted = start.elapsed();
    let report = handle.wait().await;
    let elapsed = start.elapsed();
    expect_result("embedded fanout", &report, &fanout_result(n))?;
    let rate = n as f64 / elapsed.as_secs_f64();
    let (json_elapsed, submitted, report) = run(&fanout_json(n)).await?;
    expect_result("embedded fanout (JSON)", &report, &fanout_result(n))?;
    let json_rate = n as f64 / json_elapsed.as_secs_f64();
    let (chain_elapsed, _, chain_report) = run(&chain_json(args.chain)).await?;
    let (p50, p99) = hops(&chain_report, args.chain)?;
    let (fanin_elapsed, _, fanin_report) = run(&fanin_json(args.fanin)).await?;
    expect_result("embedded fanin", &fanin_report, &fanin_result(args.fanin))?;
    let targets = json!([out.target("embedded", "fanout_jobs_per_s", rate, ">=", 1_000_000.0)]);
    let line = json!({
        "scenario": "embedded", "engine": "embedded", "concurrency": args.concurrency,
        "fanout_jobs": n, "fanout_seconds": elapsed.as_secs_f64(), "fanout_jobs_per_s": rate.round(),
        "fanout_submit_seconds": value_submitted.as_secs_f64(),
        "fanout_json_seconds": json_elapsed.as_secs_f64(), "fanout_json_jobs_per_s": json_rate.round(),
        "fanout_json_submit_seconds": submitted.as_secs_f64(),
        "chain_jobs": args.chain, "chain_seconds": chain_elapsed.as_secs_f64(), "hop_ms_p50": p50, "hop_ms_p99": p99,
        "fanin_jobs": args.fanin + 1, "fanin_seconds": fanin_elapsed.as_secs_f64(),
        "targets": targets,
    });
    out.emit(
        line,
        format!(
            "embedded: fanout {n} jobs in {:.3} s = {rate:.0} jobs/s (submit {:.3} s of it); from JSON text {:.3} s = {json_rate:.0} jobs/s (reading, checking and compiling {:.3} s of it); chain p50 {p50:.3} ms, p99 {p99:.3} ms per hop; fanin of {} in {:.3} s",
            elapsed.as_secs_f64(),
            value_submitted.as_secs_f64(),
            json_elapsed.as_secs_f64(),
            submitted.as_secs_f64(),
            args.fanin,
            fanin_elapsed.as_secs_f64()
        ),
    );
    Ok(())
}

async fn main_async(args: Args) -> Fallible<bool> {
    let mut out = Out {
        targets: Vec::new(),
        run: 1,
    };
    if args.scenario == Scenario::SubmitChild {
        submit_child(&args).await?;
        return Ok(true);
    }
    let redis_needed = args.scenario != Scenario::Embedded;
    let mut bench = if redis_needed {
        Some(Bench::start(&args).await?)
    } else {
        None
    };
    let scenarios: &[Scenario] = match args.scenario {
        Scenario::All => &[
            Scenario::Fanout,
            Scenario::Chain,
            Scenario::Fanin,
            Scenario::Tree,
            Scenario::Submit,
            Scenario::Memory,
            Scenario::Embedded,
        ],
        Scenario::Commands => &[Scenario::Fanout, Scenario::Chain],
        _ => std::slice::from_ref(&args.scenario),
    };
    let mut runs: Vec<Vec<Target>> = Vec::new();
    for run in 1..=args.repeat {
        out.run = run;
        for &scenario in scenarios {
            let b = bench.as_mut();
            match (scenario, b) {
                (Scenario::Embedded, _) => embedded(&args, &mut out).await?,
                (Scenario::Fanout, Some(b)) => fanout(b, &args, &mut out).await?,
                (Scenario::Chain, Some(b)) => chain(b, &args, &mut out).await?,
                (Scenario::Fanin, Some(b)) => fanin(b, &args, &mut out).await?,
                (Scenario::Tree, Some(b)) => tree(b, &args, &mut out).await?,
                (Scenario::Submit, Some(b)) => submit(b, &args, &mut out).await?,
                (Scenario::Memory, Some(b)) => memory(b, &args, &mut out).await?,
                _ => unreachable!("Redis is started for every Redis scenario"),
            }
        }
        runs.push(std::mem::take(&mut out.targets));
    }
    if let Some(bench) = bench {
        bench.stop().await;
    }
    let table = medians(&runs);
    // With one run the median is the value, and there is no range.
    let many = runs.len() > 1;
    let range = |text: String| if many { text } else { String::new() };
    eprintln!();
    eprintln!(
        "{:<10} {:<24} {:>14} {:>12}  met{}",
        "scenario",
        "figure",
        if many { "median" } else { "value" },
        "target",
        range(format!("  range over {} runs", runs.len()))
    );
    let mut all_met = true;
    for (t, low, high) in &table {
        all_met &= t.met();
        eprintln!(
            "{:<10} {:<24} {:>14.3} {:>12}  {:<3}{}",
            t.scenario,
            t.figure,
            t.value,
            format!("{} {}", t.op, t.target),
            if t.met() { "yes" } else { "NO" },
            range(format!("  {low:.3} - {high:.3}"))
        );
    }
    if many {
        let figures: Vec<Value> = table
            .iter()
            .map(|(t, low, high)| {
                json!({"scenario": t.scenario, "figure": t.figure, "median": t.value,
                    "low": low, "high": high, "target": format!("{} {}", t.op, t.target), "met": t.met()})
            })
            .collect();
        println!(
            "{}",
            json!({"scenario": "summary", "runs": runs.len(), "figures": figures})
        );
    }
    Ok(all_met)
}

/// Each target figure's median over the runs (the upper one of an even
/// count's middle pair), with its lowest and highest value. Every run
/// measures the same figures in the same order.
fn medians(runs: &[Vec<Target>]) -> Vec<(Target, f64, f64)> {
    let Some(first) = runs.first() else {
        return Vec::new();
    };
    (0..first.len())
        .map(|i| {
            let mut values: Vec<f64> = runs
                .iter()
                .filter_map(|r| r.get(i))
                .map(|t| t.value)
                .collect();
            values.sort_by(f64::total_cmp);
            let t = &first[i];
            let median = Target {
                value: values[values.len() / 2],
                ..*t
            };
            (median, values[0], values[values.len() - 1])
        })
        .collect()
}

fn main() -> std::process::ExitCode {
    let args = Args::parse();
    let check = args.check;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime");
    match runtime.block_on(main_async(args)) {
        Ok(all_met) if all_met || !check => std::process::ExitCode::SUCCESS,
        Ok(_) => {
            eprintln!("rqm-bench: a figure missed its target (--check)");
            std::process::ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("rqm-bench: {e}");
            std::process::ExitCode::from(2)
        }
    }
}
