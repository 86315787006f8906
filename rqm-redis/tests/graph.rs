//! Differential: the counter graph in Redis (`lua/graph.lua`) against
//! rqm-core's, on random trees compiled once by the same compiler. Every
//! step must make the same jobs ready and finish the same groups.

use std::collections::BTreeSet;
use std::sync::Arc;

use proptest::prelude::*;
use rqm_core::testing::{Library, strategies};
use rqm_core::{
    Node, NodeId, NodeKind, NodeState, Project, Run, RunConfig, Status, Time, compile_root,
};
use rqm_redis::testing::RedisServer;
use rqm_redis::{GraphUpload, Keys, fire, upload};
use serde_json::json;

/// Jobs that append nodes become plain ones: appends are a later step.
fn without_appends(nodes: Vec<Node>) -> Vec<Node> {
    nodes
        .into_iter()
        .map(|mut node| {
            node.kind = match node.kind {
                NodeKind::Group(children) => NodeKind::Group(without_appends(children)),
                NodeKind::Job(spec)
                    if matches!(
                        spec.func.as_str(),
                        "addJobs" | "addSubJob" | "addChain" | "expand"
                    ) =>
                {
                    let blocking = node.blocking;
                    return Node::call("simpleTask", json!(1)).blocking_if(blocking);
                }
                job => job,
            };
            node
        })
        .collect()
}

fn set(v: impl IntoIterator<Item = u32>) -> BTreeSet<u32> {
    v.into_iter().collect()
}

async fn mirror(server: &RedisServer, id: &str, project: Project, seed: u64) -> Result<(), String> {
    let client = redis::Client::open(server.url()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let keys = Keys::new("rqm:").project(id);
    let mut graph = GraphUpload::default();
    compile_root(&mut graph, project.jobs.clone());
    upload(&mut conn, &keys, &graph)
        .await
        .map_err(|e| e.to_string())?;
    let config = RunConfig {
        catalog: Some(Arc::new(Library)),
        ..RunConfig::default()
    };
    let mut run = Run::new(project, config, Time::ZERO).map_err(|e| e.to_string())?;
    let last = graph.vertices() as u32 - 1;
    let first = fire(&mut conn, &keys, Some((0, last)), &[])
        .await
        .map_err(|e| e.to_string())?;
    let groups: Vec<NodeId> = run
        .nodes()
        .filter(|n| n.is_group())
        .map(|n| n.id())
        .collect();
    let mut ready: Vec<NodeId> = std::iter::from_fn(|| run.poll_ready()).collect();
    if set(first.ready.iter().copied()) != set(ready.iter().map(|n| n.0)) {
        return Err(format!(
            "at submit: redis {:?}, core {ready:?}",
            first.ready
        ));
    }
    let mut rng = seed;
    let mut now = 0;
    while !ready.is_empty() && run.status() == &Status::Running {
        rng = rng
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        let job = ready.swap_remove((rng >> 33) as usize % ready.len());
        now += 1;
        let attempt = run.begin(job, Time::from_micros(now)).unwrap();
        let outcome = Library.run_attempt(&attempt);
        match outcome {
            Ok(output) => run.handle_success(job, attempt.number, output, Time::from_micros(now)),
            Err(f) => run.handle_failure(job, attempt.number, f, Time::from_micros(now)),
        }
        .unwrap();
        run.handle_timeout(Time::from_micros(u64::MAX));
        let newly: Vec<NodeId> = std::iter::from_fn(|| run.poll_ready()).collect();
        if run.node(job).unwrap().state() != NodeState::Finished {
            // A retry or a failure: nothing fired.
            ready.extend(newly.into_iter().filter(|n| *n != job));
            if run.node(job).unwrap().state() == NodeState::Ready {
                ready.push(job);
            }
            continue;
        }
        let vertex = graph.job_vertex(job.0).unwrap();
        let fired = fire(&mut conn, &keys, None, &[vertex])
            .await
            .map_err(|e| e.to_string())?;
        let core_new = set(newly.iter().map(|n| n.0));
        if set(fired.ready.iter().copied()) != core_new {
            return Err(format!(
                "after {job:?}: redis {:?}, core {core_new:?}",
                fired.ready
            ));
        }
        let core_ended = ended_at(&run, &groups, now);
        if set(fired.ended.iter().copied()) != core_ended {
            return Err(format!(
                "after {job:?}: redis ended {:?}, core {core_ended:?}",
                fired.ended
            ));
        }
        ready.extend(newly);
    }
    Ok(())
}

/// The groups that finished at `now`.
fn ended_at(run: &Run, groups: &[NodeId], now: u64) -> BTreeSet<u32> {
    groups
        .iter()
        .filter(|g| run.node(**g).unwrap().finished_at() == Some(Time::from_micros(now)))
        .map(|g| g.0)
        .collect()
}

#[test]
fn redis_graph_steps_match_the_core() {
    let server = RedisServer::start();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let case = std::sync::atomic::AtomicU32::new(0);
    proptest!(ProptestConfig { cases: 96, ..ProptestConfig::default() }, |(project in strategies::project(true), seed in any::<u64>())| {
        let n = case.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let project = Project::new(without_appends(project.jobs));
        let outcome = runtime.block_on(mirror(&server, &format!("p{n}"), project, seed));
        prop_assert!(outcome.is_ok(), "{}\nredis log:\n{}", outcome.unwrap_err(), server.log());
    });
}

#[test]
fn a_wide_fan_out_is_released_at_once() {
    let server = RedisServer::start();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let wide = Project::new(vec![
        Node::call("simpleTask", json!(1)).blocking(),
        Node::group(
            (0..20_000)
                .map(|i| Node::call("simpleTask", json!(i)))
                .collect(),
        ),
    ]);
    runtime.block_on(mirror(&server, "wide", wide, 7)).unwrap();
}
