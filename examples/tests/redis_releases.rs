//! Wide releases on Redis go on in short calls, and a submitter that dies
//! leaves nothing that lasts or stalls.

use std::time::Duration;

use rqm_core::{Limits, Node, Project};
use rqm_redis::testing::RedisServer;
use rqm_redis::{Config, RedisEngine, Taken, redis};
use serde_json::{Value, json};

mod common;

const WIDE: usize = 60_000;

/// Records per shard here: a wide project's strings span hundreds of
/// shards, so releases, runs and reads cross shard boundaries.
const SHARD: usize = 256;

fn config(server: &RedisServer) -> Config {
    Config {
        url: server.url(),
        shard_records: SHARD as u32,
        ..Config::default()
    }
}

async fn client(server: &RedisServer) -> RedisEngine {
    examples::library::link();
    let registry = rqm_core::Registry::global().unwrap();
    RedisEngine::connect(config(server), Limits::default(), Some(registry))
        .await
        .unwrap()
}

fn jobs(n: usize) -> Vec<Node> {
    (0..n).map(|i| Node::call("simpleTask", json!(i))).collect()
}

fn doubled(n: usize) -> Vec<Value> {
    (0..n).map(|i| json!(2 * i)).collect()
}

/// Jobs waiting on `queue`, counting each run of nodes in an entry.
async fn queued(conn: &mut redis::aio::MultiplexedConnection, queue: &str) -> usize {
    let entries: Vec<String> = redis::cmd("LRANGE")
        .arg(queue)
        .arg(0)
        .arg(-1)
        .query_async(conn)
        .await
        .unwrap();
    entries
        .iter()
        .filter_map(|e| Taken::parse(e))
        .map(|t| t.len())
        .sum()
}

/// Has the slow log keep every call, to tell later which ran.
async fn log_every_call(conn: &mut redis::aio::MultiplexedConnection) {
    for (setting, value) in [
        ("slowlog-log-slower-than", "0"),
        ("slowlog-max-len", "1000000"),
    ] {
        let () = redis::cmd("CONFIG")
            .arg("SET")
            .arg(setting)
            .arg(value)
            .query_async(conn)
            .await
            .unwrap();
    }
}

/// Whether the slow log (see `log_every_call`) shows a call of the
/// library's function `name`.
async fn called(conn: &mut redis::aio::MultiplexedConnection, name: &str) -> bool {
    let (_, full) = rqm_redis::function_names()
        .into_iter()
        .find(|(n, _)| *n == name)
        .unwrap();
    let log: Vec<redis::Value> = redis::cmd("SLOWLOG")
        .arg("GET")
        .arg(-1)
        .query_async(conn)
        .await
        .unwrap();
    let text = |v: &redis::Value| match v {
        redis::Value::BulkString(b) => String::from_utf8_lossy(b).to_lowercase(),
        _ => String::new(),
    };
    log.iter().any(|entry| match entry {
        redis::Value::Array(fields) => match fields.get(3) {
            Some(redis::Value::Array(argv)) => {
                argv.len() > 1 && text(&argv[0]) == "fcall" && text(&argv[1]) == full
            }
            _ => false,
        },
        _ => false,
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wide_barrier_is_released_over_several_calls() {
    let server = RedisServer::start();
    let engine = common::engine_with_worker(config(&server), Limits::default()).await;
    log_every_call(&mut engine.dedicated().await.unwrap()).await;
    let mut list = vec![Node::call("simpleTask", json!(1)).blocking()];
    list.extend(jobs(WIDE));
    let id = engine.submit(Project::new(list)).await.unwrap();
    let report = engine
        .wait(&id, Some(Duration::from_secs(120)))
        .await
        .unwrap();
    assert_eq!(report.status, "finished", "{:?}", report.error);
    let mut expected = vec![json!(2)];
    expected.extend(doubled(WIDE));
    assert_eq!(report.result, Some(Value::Array(expected)));
    // The barrier's 60,000 jobs are more than one call releases: the rest
    // went on in release calls.
    let mut conn = engine.dedicated().await.unwrap();
    assert!(
        called(&mut conn, "release").await,
        "the release function never ran"
    );
    // Finished, the project keeps its records and results, not its graph.
    let graph: i64 = redis::cmd("EXISTS")
        .arg(format!("rqm:{{{id}}}:vx"))
        .arg(format!("rqm:{{{id}}}:vp"))
        .arg(format!("rqm:{{{id}}}:ed"))
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(graph, 0, "a finished project kept its graph");
    let kept: i64 = redis::cmd("EXISTS")
        .arg(format!("rqm:{{{id}}}:nd"))
        .arg(format!("rqm:{{{id}}}:rs"))
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(kept, 2, "a finished project lost its records or results");
    // Every shard: the graph's are gone, the node records' kept for the
    // retention.
    let keys = keys_of(&mut conn, &id).await;
    let named = |name: &str| {
        let prefix = format!("rqm:{{{id}}}:{name}");
        keys.iter()
            .filter(|(k, _)| *k == prefix || k.starts_with(&format!("{prefix}:")))
            .count()
    };
    let shards = (WIDE + 2).div_ceil(SHARD);
    assert_eq!((named("vx"), named("vp")), (0, 0), "graph shards kept");
    assert_eq!((named("nd"), named("nl")), (shards, shards), "{keys:?}");
    for (key, ttl) in keys {
        assert!(ttl > 3600, "{key} will not last the retention (TTL {ttl})");
    }
}

/// Every key of project `id`, with its TTL.
async fn keys_of(conn: &mut redis::aio::MultiplexedConnection, id: &str) -> Vec<(String, i64)> {
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg(format!("rqm:{{{id}}}:*"))
        .query_async(conn)
        .await
        .unwrap();
    let mut out = Vec::new();
    for key in keys {
        let ttl: i64 = redis::cmd("TTL").arg(&key).query_async(conn).await.unwrap();
        out.push((key, ttl));
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_release_its_submitter_left_is_finished_by_a_keeper() {
    let server = RedisServer::start();
    let engine = client(&server).await;
    let id = engine
        .submit_leaving_release(Project::new(jobs(WIDE)))
        .await
        .unwrap();
    let mut conn = engine.dedicated().await.unwrap();
    let waiting = queued(&mut conn, "rqm:queue:default").await;
    assert!(
        waiting > 0 && waiting < WIDE,
        "the open call released {waiting} of {WIDE} jobs"
    );
    let left: Option<f64> = redis::cmd("ZSCORE")
        .arg("rqm:releases")
        .arg(&id)
        .query_async(&mut conn)
        .await
        .unwrap();
    assert!(left.is_some(), "the rest of the release is not on record");
    // A worker's keeper goes on with it once the submitter's claim lapses.
    let worker = common::engine_with_worker(config(&server), Limits::default()).await;
    let report = worker
        .wait(&id, Some(Duration::from_secs(120)))
        .await
        .unwrap();
    assert_eq!(report.status, "finished", "{:?}", report.error);
    assert_eq!(report.result, Some(Value::Array(doubled(WIDE))));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_half_stored_project_is_invisible_and_expires() {
    let server = RedisServer::start();
    let engine = client(&server).await;
    let id = engine.upload_only(Project::new(jobs(1_000))).await.unwrap();
    // A worker runs, and finds nothing to do.
    let worker = common::engine_with_worker(config(&server), Limits::default()).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut conn = engine.dedicated().await.unwrap();
    assert_eq!(queued(&mut conn, "rqm:queue:default").await, 0);
    assert!(
        worker.list().await.unwrap().iter().all(|p| p.id != id),
        "a project that never opened is listed"
    );
    let keys = keys_of(&mut conn, &id).await;
    assert!(keys.len() >= 10, "stored keys: {keys:?}");
    for (key, ttl) in keys {
        assert!(
            (1..=3600).contains(&ttl),
            "{key} would outlive a dead submitter (TTL {ttl})"
        );
    }
    let live: Vec<u8> = redis::cmd("GET")
        .arg(format!("rqm:{{{id}}}:nl"))
        .query_async(&mut conn)
        .await
        .unwrap();
    assert!(!live.is_empty(), "no live records stored");
    assert!(live.iter().all(|s| *s == 0), "a job of it was touched");
}

/// Jobs appended behind a barrier that is still running wait for it (they
/// are linked onto its segment as one chain of edges) and then go as one
/// run; jobs appended where their stretch has begun are queued at once as
/// one run. Either way each runs once, in its place.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn appended_runs_wait_for_what_they_must_and_go_together() {
    use examples::library::{add_jobs, sleep_ms};
    let server = RedisServer::start();
    let engine = common::engine_with_worker(config(&server), Limits::default()).await;
    let n = 1000;
    // addJobs appends behind the running barrier; the group's addJobs
    // appends to a stretch that has begun.
    let project = rqm_core::project![
        add_jobs(n),
        blocking sleep_ms(300),
        [add_jobs(n)],
    ];
    let id = engine.submit(project).await.unwrap();
    let report = engine
        .wait(&id, Some(Duration::from_secs(60)))
        .await
        .unwrap();
    assert_eq!(report.status, "finished", "{:?}", report.error);
    let appended = |x: i64| (0..x).map(move |i| json!(2 * (2 * x + i)));
    let mut top = vec![json!(2 * n), json!(300)];
    top.push(json!(
        [2 * n]
            .into_iter()
            .map(|v| json!(v))
            .chain(appended(n))
            .collect::<Vec<_>>()
    ));
    top.extend(appended(n));
    assert_eq!(report.result, Some(Value::Array(top)));
    let barrier_done = report.node("1").unwrap().finished_us.unwrap();
    for i in 3..3 + n {
        let node = report.node(&i.to_string()).unwrap();
        assert_eq!(node.attempts, 1, "node {i}");
        assert!(
            node.started_us.unwrap() >= barrier_done,
            "appended node {i} started at {:?} us, before the barrier ended at {barrier_done} us",
            node.started_us
        );
    }
}

/// A project with an empty root list, submitted as JSON (no part is read,
/// so the streamed submit compiles nothing but the root), finishes at once
/// with `[]`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_empty_project_finishes_at_once() {
    let server = RedisServer::start();
    let engine = common::engine_with_worker(config(&server), Limits::default()).await;
    let id = engine.submit_json(br#"{"jobs": []}"#).await.unwrap();
    let report = engine
        .wait(&id, Some(Duration::from_secs(10)))
        .await
        .unwrap();
    assert_eq!(report.status, "finished", "{:?}", report.error);
    assert_eq!(report.result, Some(json!([])));
}

/// A server that lost rqm's function library (restarted without
/// persistence, or flushed) gets it again from the first call that misses
/// it, the worker's pipelined begin included.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_that_lost_the_library_gets_it_again() {
    let server = RedisServer::start();
    let engine = common::engine_with_worker(config(&server), Limits::default()).await;
    let mut conn = engine.dedicated().await.unwrap();
    for round in 0..3 {
        let () = redis::cmd("FUNCTION")
            .arg("FLUSH")
            .query_async(&mut conn)
            .await
            .unwrap();
        let id = engine
            .submit(Project::new(vec![
                Node::call("simpleTask", json!(round)),
                Node::after("simpleTask"),
            ]))
            .await
            .unwrap();
        let report = engine
            .wait(&id, Some(Duration::from_secs(30)))
            .await
            .unwrap();
        assert_eq!(report.status, "finished", "{:?}", report.error);
        assert_eq!(report.result, Some(json!([2 * round, 4 * round])));
    }
}
