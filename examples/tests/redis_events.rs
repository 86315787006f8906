//! A project's event stream on Redis: state changes, and the progress that
//! running jobs report.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use rqm_core::{JobContext, Limits, job, project};
use rqm_redis::testing::RedisServer;
use rqm_redis::{Config, redis};
use serde_json::json;

mod common;

/// Reports progress once.
#[job]
fn chatty(ctx: &JobContext) -> &'static str {
    ctx.progress(json!({"step": 1, "of": 1}));
    "said"
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changes_and_progress_reach_the_event_stream() {
    let server = RedisServer::start();
    let config = Config {
        url: server.url(),
        ..Config::default()
    };
    let engine = common::engine_with_worker(config, Limits::default()).await;
    let id = engine.submit(project![chatty()]).await.unwrap();
    let report = engine
        .wait(&id, Some(Duration::from_secs(10)))
        .await
        .unwrap();
    assert_eq!(report.result, Some(json!(["said"])));
    let mut conn = engine.dedicated().await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(2);
    loop {
        let entries: Vec<(String, HashMap<String, String>)> = redis::cmd("XRANGE")
            .arg(engine.keys().project(&id).key("ev"))
            .arg("-")
            .arg("+")
            .query_async(&mut conn)
            .await
            .unwrap();
        let changes: Vec<&str> = entries
            .iter()
            .filter_map(|(_, f)| f.get("c"))
            .flat_map(|c| c.split(' '))
            .collect();
        let progress = entries
            .iter()
            .find(|(_, f)| f.get("progress").map(String::as_str) == Some("1"))
            .and_then(|(_, f)| f.get("value"))
            .map(|v| serde_json::from_str::<serde_json::Value>(v).unwrap());
        if let Some(value) = progress {
            assert_eq!(value, json!({"step": 1, "of": 1}));
            for expected in [
                "submitted:0",
                "started:1:1",
                "finished:1",
                "ended:0:finished",
            ] {
                assert!(
                    changes.contains(&expected),
                    "{expected} missing from {changes:?}"
                );
            }
            return;
        }
        assert!(
            Instant::now() < deadline,
            "no progress event in {entries:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Appends a job that goes to a queue the project did not use before.
#[job]
fn add_elsewhere() -> rqm_core::Outcome<i64> {
    rqm_core::Outcome::new(1).append(examples::library::simple_task::job(2).queue("other"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_added_on_a_new_queue_is_queued_there() {
    let server = RedisServer::start();
    let config = Config {
        url: server.url(),
        ..Config::default()
    };
    let engine = common::engine_with_worker(config, Limits::default()).await;
    let id = engine
        .submit(project![blocking add_elsewhere(), examples::library::simple_task(5)])
        .await
        .unwrap();
    // The default worker ran `add_elsewhere` and cached the project's one
    // queue; the added job sits on `other` until a worker takes that queue.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let report = engine.status(&id).await.unwrap();
    assert_eq!(report.node("2").map(|n| n.state.as_str()), Some("ready"));
    let (other, registry) = (engine.clone(), rqm_core::Registry::global().unwrap());
    let worker = rqm_worker::WorkerConfig {
        queues: vec!["other".into()],
        ..rqm_worker::WorkerConfig::default()
    };
    tokio::spawn(async move {
        let _ = rqm_worker::run_redis_worker(other, registry, worker, std::future::pending()).await;
    });
    let report = engine
        .wait(&id, Some(Duration::from_secs(10)))
        .await
        .unwrap();
    assert_eq!(report.result, Some(json!([1, 10, 4])));
}
