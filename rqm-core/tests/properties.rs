//! Properties of the state machine over random trees (see
//! `rqm_core::testing::strategies`), each run in random completion orders.

use proptest::prelude::*;
use rqm_core::testing::{Order, Sim, has_shape, interpret, strategies};
use rqm_core::{CancelOutcome, NodeId, Status};

fn config() -> ProptestConfig {
    ProptestConfig {
        cases: 256,
        ..ProptestConfig::default()
    }
}

proptest! {
    #![proptest_config(config())]

    /// No node is ready before SPEC 2 allows, every node is ready as soon as
    /// it allows, every group finishes with its list, and every project ends.
    #[test]
    fn nodes_start_exactly_when_spec_2_allows(
        project in strategies::project(true),
        seed in any::<u64>(),
    ) {
        let mut sim = Sim::new(project, Order::Random(seed)).unwrap();
        sim.run_until_idle();
        prop_assert!(sim.run().status().is_ended());
        if let Err(e) = sim.check_timing() {
            return Err(TestCaseError::fail(e));
        }
    }

    /// The result is what a sequential reading of the tree gives, shaped like
    /// the finished tree, and a project fails exactly when that reading does.
    #[test]
    fn result_is_the_trees_result(project in strategies::project(true), seed in any::<u64>()) {
        let expected = interpret(&project);
        let mut sim = Sim::new(project, Order::Random(seed)).unwrap();
        let run = sim.run_until_idle();
        match expected {
            Some(value) => {
                prop_assert_eq!(run.status(), &Status::Finished);
                let result = run.result().unwrap();
                prop_assert!(has_shape(run, NodeId(0), &result), "result {} has not the tree's shape", result);
                prop_assert_eq!(result, value);
            }
            None => prop_assert_eq!(run.status().as_str(), "failed"),
        }
    }

    /// The completion order never changes the status or the result.
    #[test]
    fn completion_order_never_changes_the_result(
        project in strategies::project(true),
        seeds in prop::collection::vec(any::<u64>(), 3),
    ) {
        let outcome = |order| {
            let mut sim = Sim::new(project.clone(), order).unwrap();
            let run = sim.run_until_idle();
            (run.status().as_str(), run.result())
        };
        let first = outcome(Order::Fifo);
        prop_assert_eq!(&outcome(Order::Lifo), &first);
        for seed in seeds {
            prop_assert_eq!(&outcome(Order::Random(seed)), &first);
        }
    }

    /// After a cancel nothing starts, running attempts are told to stop, and
    /// the project ends cancelled; a second cancel changes nothing.
    #[test]
    fn cancel_stops_everything(
        project in strategies::project(false),
        seed in any::<u64>(),
        steps in 0usize..40,
    ) {
        let mut sim = Sim::new(project, Order::Random(seed)).unwrap();
        for _ in 0..steps {
            if !sim.step() {
                break;
            }
        }
        let was_ended = sim.run().status().is_ended();
        let running = sim.run().running();
        let at = sim.now();
        let outcome = sim.cancel();
        if was_ended {
            prop_assert!(matches!(outcome, CancelOutcome::AlreadyEnded(_)));
        } else {
            prop_assert_eq!(outcome, CancelOutcome::Cancelled);
            prop_assert_eq!(sim.stops().len(), running);
            prop_assert!(matches!(sim.cancel(), CancelOutcome::AlreadyEnded(Status::Cancelled)));
        }
        let run = sim.run_until_idle();
        if !was_ended {
            prop_assert_eq!(run.status(), &Status::Cancelled);
            for node in run.nodes() {
                prop_assert!(node.started_at().is_none_or(|t| t <= at), "{} started after the cancel", node.path());
            }
        }
    }
}

/// Every call a compiler makes, in order.
#[derive(Debug, Default, PartialEq)]
struct Recorded {
    calls: Vec<String>,
    vertices: u32,
}

impl rqm_core::GraphSink for Recorded {
    fn vertex(&mut self, role: rqm_core::Role, owner: u32) -> rqm_core::VertexId {
        self.calls.push(format!("vertex {role:?} {owner}"));
        self.vertices += 1;
        self.vertices - 1
    }
    fn edge(&mut self, from: rqm_core::VertexId, to: rqm_core::VertexId) {
        self.calls.push(format!("edge {from} {to}"));
    }
    fn job(
        &mut self,
        node: u32,
        place: rqm_core::Place,
        vertex: rqm_core::VertexId,
        spec: rqm_core::JobSpec,
    ) {
        self.calls
            .push(format!("job {node} {place:?} {vertex} {spec:?}"));
    }
    fn group(
        &mut self,
        node: u32,
        place: rqm_core::Place,
        start: rqm_core::VertexId,
        end: rqm_core::VertexId,
        _len: usize,
    ) {
        self.calls
            .push(format!("group {node} {place:?} {start} {end}"));
    }
    fn tail(&mut self, group: u32, tail: rqm_core::ListTail) {
        self.calls.push(format!("tail {group} {tail:?}"));
    }
}

/// The root list read and compiled in parts, as a streamed submit does.
fn compiled_in_parts(
    json: &[u8],
    part_len: usize,
) -> Result<(Recorded, u32, usize), rqm_core::Rejection> {
    let mut sink = Recorded::default();
    let mut root = rqm_core::RootCompiler::start(&mut sink, 0);
    let mut parts = 0;
    rqm_core::parse_project_parts(
        json,
        &rqm_core::Limits::default(),
        None,
        part_len,
        &mut |part| {
            assert!(
                !part.is_empty() && part.len() <= part_len,
                "a part of {} nodes",
                part.len()
            );
            parts += 1;
            root.push(&mut sink, part);
        },
    )?;
    let nodes = root.finish(&mut sink);
    Ok((sink, nodes, parts))
}

proptest! {
    #![proptest_config(config())]

    /// Reading and compiling the root list in parts makes exactly what
    /// reading and compiling the whole project makes, call for call.
    #[test]
    fn a_project_compiled_in_parts_is_the_project_compiled_whole(
        project in strategies::project(true),
        part_len in 1usize..5,
    ) {
        let json = serde_json::to_vec(&project).unwrap();
        let whole = rqm_core::parse_project(&json, &rqm_core::Limits::default(), None).unwrap();
        let top = whole.jobs.len();
        let mut expected = Recorded::default();
        let nodes = rqm_core::compile_root(&mut expected, whole.jobs);
        let (parts, parts_nodes, count) = compiled_in_parts(&json, part_len).unwrap();
        prop_assert_eq!(nodes, parts_nodes);
        prop_assert_eq!(count, top.div_ceil(part_len));
        prop_assert_eq!(expected, parts);
    }
}

/// A project with an error anywhere is rejected with the errors reading it
/// whole finds, and no part after the error is handed over.
#[test]
fn a_project_read_in_parts_is_rejected_as_a_whole_one_is() {
    let mut jobs: Vec<serde_json::Value> = (0..10)
        .map(|i| serde_json::json!({"func": "simpleTask", "args": i}))
        .collect();
    jobs[6] = serde_json::json!({"func": "simpleTask", "colour": "red"});
    jobs[8] = serde_json::json!({"jobs": [{"func": "f", "previousJobArgs": true}]});
    let json = serde_json::to_vec(&serde_json::json!({ "jobs": jobs })).unwrap();
    let whole = rqm_core::parse_project(&json, &rqm_core::Limits::default(), None).unwrap_err();
    let mut handed = Vec::new();
    let parts =
        rqm_core::parse_project_parts(&json, &rqm_core::Limits::default(), None, 3, &mut |part| {
            handed.push(part.len());
        })
        .unwrap_err();
    assert_eq!(parts, whole);
    assert_eq!(whole.errors.len(), 2, "{whole}");
    assert_eq!(handed, [3, 3], "the parts before the error, and none after");
}
