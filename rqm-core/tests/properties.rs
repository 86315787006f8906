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
