//! Differential: random trees from rqm-core's property-test generators
//! (nesting, barriers, `previousJobArgs`, jobs that append nodes and groups,
//! retries, allowed and fatal failures) give the same status and result on
//! the embedded engine and on the Redis engine.

use std::time::Duration;

use proptest::prelude::*;
use proptest::test_runner::{Config as ProptestConfig, TestRunner};
use rqm_core::Limits;
use rqm_core::testing::strategies;
use rqm_redis::Config;
use rqm_redis::testing::RedisServer;
use rqm_worker::{Engine, EngineConfig};

mod common;

#[test]
fn embedded_and_redis_agree_on_random_trees() {
    let server = RedisServer::start();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    // Small shards: every project's records span several.
    let config = Config {
        url: server.url(),
        shard_records: 16,
        ..Config::default()
    };
    let redis = runtime.block_on(common::engine_with_worker(config, Limits::default()));
    let embedded = runtime
        .block_on(async { Engine::new(EngineConfig::default()) })
        .unwrap();
    let mut runner = TestRunner::new(ProptestConfig {
        cases: 48,
        failure_persistence: None,
        ..ProptestConfig::default()
    });
    let outcome = runner.run(&strategies::project(true), |project| {
        let (local, remote) = runtime.block_on(async {
            let local = embedded
                .submit(project.clone())
                .expect("valid")
                .wait()
                .await;
            let id = redis.submit(project.clone()).await.expect("valid");
            let remote = redis
                .wait(&id, Some(Duration::from_secs(60)))
                .await
                .expect("ends");
            (local, remote)
        });
        prop_assert_eq!(&local.status, &remote.status);
        prop_assert_eq!(&local.result, &remote.result);
        // After a failure, which running jobs still finish (and append)
        // depends on timing; a finished project has one answer.
        if local.status == "finished" {
            prop_assert_eq!(local.nodes.len(), remote.nodes.len());
            for (l, r) in local.nodes.iter().zip(&remote.nodes) {
                prop_assert_eq!(&l.path, &r.path);
                prop_assert_eq!(&l.function, &r.function);
                prop_assert_eq!(&l.state, &r.state, "node {}", l.path);
                prop_assert_eq!(l.attempts, r.attempts, "node {}", l.path);
            }
        }
        Ok(())
    });
    if let Err(e) = outcome {
        panic!("{e}\nredis log:\n{}", server.log());
    }
}
