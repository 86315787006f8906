//! Bad input on the Redis engine: refused with a clear error and nothing
//! stored; a project whose keys were tampered with fails alone, with a clear
//! error, while the worker serves the others.

use std::time::Duration;

use examples::library::{simple_task, sleep_ms};
use rqm_core::{Limits, project};
use rqm_redis::testing::RedisServer;
use rqm_redis::{Config, Error, RedisEngine, redis};

mod common;

async fn setup(server: &RedisServer, retention: Duration) -> RedisEngine {
    let config = Config {
        url: server.url(),
        retention,
        ..Config::default()
    };
    let limits = Limits {
        max_bytes: 4096,
        ..Limits::default()
    };
    common::engine_with_worker(config, limits).await
}

const WEEK: Duration = Duration::from_secs(7 * 24 * 3600);

async fn dbsize(conn: &mut redis::aio::MultiplexedConnection) -> i64 {
    redis::cmd("DBSIZE").query_async(conn).await.unwrap()
}

/// An engine with the default limits and a worker in this process.
async fn with_worker(server: &RedisServer) -> RedisEngine {
    let config = Config {
        url: server.url(),
        ..Config::default()
    };
    common::engine_with_worker(config, Limits::default()).await
}

/// Submits each case, expecting a rejection naming its text and no key
/// left behind.
async fn refused_leaving_nothing(engine: &RedisEngine, cases: &[(&[u8], &str)]) {
    let mut conn = engine.dedicated().await.unwrap();
    let before = dbsize(&mut conn).await;
    for &(json, expected) in cases {
        match engine.submit_json(json).await {
            Err(Error::Rejected(r)) => assert!(r.to_string().contains(expected), "{r}"),
            other => panic!("expected a rejection naming {expected:?}, got {other:?}"),
        }
        assert_eq!(
            dbsize(&mut conn).await,
            before,
            "a refused project left keys ({expected})"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_input_stores_nothing() {
    let server = RedisServer::start();
    let engine = setup(&server, WEEK).await;
    let oversize = format!(
        r#"{{"jobs": [{{"func": "echo", "args": "{}"}}]}}"#,
        "x".repeat(5000)
    );
    let cases: [(&[u8], &str); 4] = [
        (b"{\"jobs\": [", "invalid JSON"),
        (
            br#"{"jobs": [{"func": "noSuchJob", "args": 1}]}"#,
            "no worker registers a function named `noSuchJob`",
        ),
        (
            br#"{"jobs": [{"func": "simpleTask", "args": "seven"}]}"#,
            "the input does not fit `simpleTask`",
        ),
        (
            oversize.as_bytes(),
            "more than the configured limit of 4096 bytes",
        ),
    ];
    refused_leaving_nothing(&engine, &cases).await;
}

/// A project on more queues than one may use is refused once it is
/// compiled, after its first parts were stored: what was stored is
/// deleted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_project_on_too_many_queues_is_refused_leaving_nothing() {
    let server = RedisServer::start();
    let engine = with_worker(&server).await;
    // Two parts: the first is stored before the project is refused.
    let jobs: Vec<serde_json::Value> = (0..20_000)
        .map(|i| serde_json::json!({"func": "simpleTask", "args": i, "queue": format!("q{}", i % 300)}))
        .collect();
    let json = serde_json::to_vec(&serde_json::json!({ "jobs": jobs })).unwrap();
    refused_leaving_nothing(&engine, &[(&json, "at most 256 queues")]).await;
}

/// A project big enough to be read and sent in several parts: refused
/// when its fault is in a late part (after earlier parts were sent), with
/// nothing left behind; accepted and run whole when it has none.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_streamed_submit_refused_late_leaves_nothing() {
    let server = RedisServer::start();
    let engine = with_worker(&server).await;
    let n = 25_000;
    let jobs = |bad: Option<usize>| -> Vec<serde_json::Value> {
        (0..n)
            .map(|i| match bad {
                Some(b) if b == i => serde_json::json!({"func": "noSuchJob", "args": i}),
                _ => serde_json::json!({"func": "simpleTask", "args": i}),
            })
            .collect()
    };
    let late_fault = serde_json::to_vec(&serde_json::json!({"jobs": jobs(Some(24_000))})).unwrap();
    let mut truncated = serde_json::to_vec(&serde_json::json!({"jobs": jobs(None)})).unwrap();
    truncated.truncate(truncated.len() - 2);
    let cases: [(&[u8], &str); 2] = [
        (
            &late_fault,
            "at node 24000, key `func`: no worker registers a function named `noSuchJob`",
        ),
        (&truncated, "EOF"),
    ];
    refused_leaving_nothing(&engine, &cases).await;
    let good = serde_json::to_vec(&serde_json::json!({"jobs": jobs(None)})).unwrap();
    let id = engine.submit_json(&good).await.unwrap();
    let report = engine
        .wait(&id, Some(Duration::from_secs(120)))
        .await
        .unwrap();
    assert_eq!(report.status, "finished", "{:?}", report.error);
    let expected: Vec<i64> = (0..n as i64).map(|i| 2 * i).collect();
    assert_eq!(report.result, Some(serde_json::json!(expected)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tampered_project_fails_alone() {
    let server = RedisServer::start();
    let engine = setup(&server, WEEK).await;
    let broken = engine
        .submit(project![blocking sleep_ms(300), simple_task(1)])
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    let mut conn = engine.dedicated().await.unwrap();
    let jobs = engine.keys().project(&broken).key("jb");
    let () = redis::pipe()
        .del(&jobs)
        .set(&jobs, "not a hash")
        .query_async(&mut conn)
        .await
        .unwrap();
    let fine = engine.submit(project![simple_task(21)]).await.unwrap();
    let report = engine
        .wait(&fine, Some(Duration::from_secs(10)))
        .await
        .unwrap();
    assert_eq!(report.result, Some(serde_json::json!([42])));
    let report = engine
        .wait(&broken, Some(Duration::from_secs(10)))
        .await
        .unwrap();
    assert_eq!(report.status, "failed");
    let error = report.error.unwrap_or_default();
    assert!(
        error.contains("corrupt") && error.contains("WRONGTYPE"),
        "{error}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ended_projects_expire_after_their_retention() {
    let server = RedisServer::start();
    let engine = setup(&server, Duration::from_secs(1)).await;
    let id = engine.submit(project![simple_task(1)]).await.unwrap();
    let report = engine
        .wait(&id, Some(Duration::from_secs(10)))
        .await
        .unwrap();
    assert_eq!(report.status, "finished");
    tokio::time::sleep(Duration::from_millis(2100)).await;
    assert!(matches!(engine.status(&id).await, Err(Error::NoProject(_))));
}
