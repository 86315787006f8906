//! Every case of the shared conformance suite on the Redis engine, against
//! a private redis-server, with one worker, in this process; three worker
//! processes are `redis_workers.rs`'s.

use std::time::Duration;

use libtest_mimic::{Arguments, Failed, Trial};
use rqm_core::Limits;
use rqm_core::testing::conformance::{self, Case};
use rqm_redis::testing::RedisServer;
use rqm_redis::{Config, RedisEngine};

mod common;

/// As for the embedded engine: well below the cases' 50 ms sleeps.
const SLACK_US: u64 = 40_000;

fn main() {
    let args = Arguments::from_args();
    let dir = conformance::dir(env!("CARGO_MANIFEST_DIR"));
    let cases = conformance::load(&dir);
    if args.list {
        // Listing runs nothing: no server.
        let trials = cases
            .into_iter()
            .map(|(name, _)| Trial::test(name, || Ok(())))
            .collect();
        libtest_mimic::run(&args, trials).exit();
    }
    let server = RedisServer::start();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    // Small shards: every project's records span several.
    let config = Config {
        url: server.url(),
        shard_records: 16,
        ..Config::default()
    };
    let engine = runtime.block_on(common::engine_with_worker(config, Limits::default()));
    let trials = cases
        .into_iter()
        .map(|(name, case)| {
            let (engine, handle) = (engine.clone(), runtime.handle().clone());
            Trial::test(name, move || {
                handle
                    .block_on(run_case(&engine, &case))
                    .map_err(Failed::from)
            })
        })
        .collect();
    let conclusion = libtest_mimic::run(&args, trials);
    if conclusion.has_failed() {
        eprintln!("redis-server log:\n{}", server.log());
    }
    // `exit` runs no destructors: stop the worker, then the server, first.
    drop(engine);
    drop(runtime);
    drop(server);
    conclusion.exit();
}

async fn run_case(engine: &RedisEngine, case: &Case) -> Result<(), String> {
    let submitted = engine.submit_json(&case.project_json()).await;
    if case.status == "rejected" {
        return match submitted {
            Ok(id) => Err(format!(
                "the project was accepted as {id}; it must be rejected"
            )),
            Err(rqm_redis::Error::Rejected(rejection)) => {
                conformance::check_rejection(case, &rejection.to_string())
            }
            Err(other) => Err(format!("expected a rejection, got {other}")),
        };
    }
    let id = submitted.map_err(|e| format!("submit: {e}"))?;
    let report = engine
        .wait(&id, Some(Duration::from_secs(30)))
        .await
        .map_err(|e| format!("wait: {e}"))?;
    conformance::check_report(case, &report, SLACK_US)
}
