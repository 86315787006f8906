//! What the Redis tests share: an engine on a test server, with a worker
//! of this process serving it.

use rqm_core::{Limits, Registry};
use rqm_redis::{Config, RedisEngine};
use rqm_worker::WorkerConfig;

/// Connects to `config`'s Redis and starts one worker on the current tokio
/// runtime, running this crate's job library.
pub(crate) async fn engine_with_worker(config: Config, limits: Limits) -> RedisEngine {
    examples::library::link();
    let registry = Registry::global().expect("the registry loads");
    let engine = RedisEngine::connect(config, limits, Some(registry))
        .await
        .expect("connects to the test server");
    let worker = engine.clone();
    tokio::spawn(async move {
        rqm_worker::run_redis_worker(
            worker,
            registry,
            WorkerConfig::default(),
            std::future::pending(),
        )
        .await
        .expect("the worker runs");
    });
    engine
}
