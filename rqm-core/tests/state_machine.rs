//! The state machine's contract beyond the conformance cases: stale
//! reports, retries and their backoff, failure and cancel, appends.

use std::sync::Arc;
use std::time::Duration;

use rqm_core::testing::Library;
use rqm_core::{
    CancelOutcome, Event, Failure, Ignored, Limits, Node, NodeId, NodeState, Output, Path, Project,
    Run, RunConfig, Status, Time,
};
use serde_json::json;

fn library() -> RunConfig {
    RunConfig {
        catalog: Some(Arc::new(Library)),
        ..RunConfig::default()
    }
}

fn t(micros: u64) -> Time {
    Time::from_micros(micros)
}

fn ready(run: &mut Run) -> Vec<NodeId> {
    std::iter::from_fn(|| run.poll_ready()).collect()
}

#[test]
fn reports_for_other_attempts_are_ignored_and_say_why() {
    let project = Project::new(vec![
        Node::call("simpleTask", json!(1)),
        Node::group(vec![]),
    ]);
    let mut run = Run::new(project, library(), t(0)).unwrap();
    let [job] = ready(&mut run)[..] else {
        panic!("one ready job")
    };
    assert!(matches!(
        run.handle_success(job, 1, Output::value(json!(2)), t(1)),
        Err(Ignored::NotRunning { .. })
    ));
    let attempt = run.begin(job, t(1)).unwrap();
    assert!(matches!(
        run.begin(job, t(1)),
        Err(Ignored::NotReady {
            state: NodeState::Running,
            ..
        })
    ));
    let stale = run.handle_success(job, attempt.number + 1, Output::value(json!(2)), t(2));
    assert_eq!(
        stale,
        Err(Ignored::StaleAttempt {
            path: "0".parse().unwrap(),
            current: 1,
            attempt: 2
        })
    );
    run.handle_success(job, attempt.number, Output::value(json!(2)), t(2))
        .unwrap();
    let late = run
        .handle_failure(job, attempt.number, Failure::retryable("late"), t(3))
        .unwrap_err();
    assert_eq!(
        late.to_string(),
        "job 0 has no attempt running (it is finished); the report for attempt 1 is ignored"
    );
    assert_eq!(
        run.handle_success(NodeId(99), 1, Output::default(), t(3)),
        Err(Ignored::UnknownNode(99))
    );
    assert!(matches!(
        run.begin(NodeId(2), t(3)),
        Err(Ignored::NotAJob { .. })
    ));
    assert_eq!(run.result(), Some(json!([2, []])));
}

#[test]
fn retries_wait_for_their_backoff_from_now() {
    let project = Project::new(vec![
        Node::call("flaky", json!(2)).with_options(|o| o.retries = Some(2)),
    ]);
    // No catalog: the default backoff, 100 ms doubling.
    let mut run = Run::new(project, RunConfig::default(), t(0)).unwrap();
    let job = run.poll_ready().unwrap();
    let a = run.begin(job, t(10)).unwrap();
    run.handle_failure(job, a.number, Failure::retryable("no"), t(1_000))
        .unwrap();
    assert_eq!(run.node(job).unwrap().state(), NodeState::Retrying);
    assert_eq!(run.poll_timeout(), Some(t(101_000)));
    run.handle_timeout(t(100_999));
    assert_eq!(run.poll_ready(), None);
    run.handle_timeout(t(101_000));
    assert_eq!(run.poll_ready(), Some(job));
    let a = run.begin(job, t(101_000)).unwrap();
    assert_eq!(a.number, 2);
    run.handle_failure(job, a.number, Failure::retryable("no"), t(200_000))
        .unwrap();
    assert_eq!(run.poll_timeout(), Some(t(400_000)));
    run.handle_timeout(t(400_000));
    let job = run.poll_ready().unwrap();
    let a = run.begin(job, t(400_000)).unwrap();
    run.handle_success(job, a.number, Output::value(json!(3)), t(400_001))
        .unwrap();
    let view = run.node(job).unwrap();
    assert_eq!((view.attempts(), view.error()), (3, Some("no")));
    assert_eq!(view.started_at(), Some(t(10)));
    assert_eq!(run.result(), Some(json!([3])));
}

#[test]
fn permanent_failures_are_not_retried() {
    let project = Project::new(vec![
        Node::call("x", json!(1)).with_options(|o| o.retries = Some(5)),
    ]);
    let mut run = Run::new(project, RunConfig::default(), t(0)).unwrap();
    let job = run.poll_ready().unwrap();
    let a = run.begin(job, t(0)).unwrap();
    run.handle_failure(job, a.number, Failure::permanent("bad input"), t(1))
        .unwrap();
    assert_eq!(run.poll_timeout(), None);
    let Status::Failed(failed) = run.status() else {
        panic!("failed")
    };
    assert_eq!(
        (
            failed.path.to_string(),
            failed.function.as_str(),
            failed.error.as_str()
        ),
        ("0".into(), "x", "bad input")
    );
}

#[test]
fn a_failure_stops_running_jobs_and_records_their_outcomes() {
    let project = Project::new(vec![
        Node::call("slow", json!(1)),
        Node::call("bad", json!(1)).blocking(),
        Node::call("after", json!(1)),
    ]);
    let mut run = Run::new(project, RunConfig::default(), t(0)).unwrap();
    let jobs = ready(&mut run);
    let attempts: Vec<_> = jobs.iter().map(|&j| run.begin(j, t(0)).unwrap()).collect();
    run.handle_failure(jobs[1], 1, Failure::retryable("boom"), t(5))
        .unwrap();
    let events: Vec<Event> = std::iter::from_fn(|| run.poll_event()).collect();
    assert_eq!(
        events[0],
        Event::Stop {
            job: jobs[0],
            attempt: attempts[0].number
        }
    );
    assert!(matches!(&events[1], Event::Ended(Status::Failed(f)) if f.path.to_string() == "1"));
    assert!(!run.is_settled());
    run.handle_success(jobs[0], 1, Output::value(json!("done")), t(6))
        .unwrap();
    assert!(run.is_settled());
    assert_eq!(run.node(jobs[0]).unwrap().state(), NodeState::Finished);
    assert_eq!(run.poll_ready(), None);
    let after = run.find(&"2".parse().unwrap()).unwrap();
    assert_eq!(run.node(after).unwrap().state(), NodeState::Pending);
    assert_eq!(
        run.cancel(),
        CancelOutcome::AlreadyEnded(run.status().clone())
    );
}

#[test]
fn cancel_ends_once() {
    let project = Project::new(vec![Node::call("a", json!(1))]);
    let mut run = Run::new(project, RunConfig::default(), t(0)).unwrap();
    let job = run.poll_ready().unwrap();
    run.begin(job, t(0)).unwrap();
    assert_eq!(run.cancel(), CancelOutcome::Cancelled);
    assert_eq!(run.cancel(), CancelOutcome::AlreadyEnded(Status::Cancelled));
    assert_eq!(run.poll_event(), Some(Event::Stop { job, attempt: 1 }));
    assert_eq!(run.poll_event(), Some(Event::Ended(Status::Cancelled)));
    run.handle_success(job, 1, Output::value(json!(1)), t(1))
        .unwrap();
    assert_eq!(run.result(), None);

    let mut done = Run::new(Project::default(), RunConfig::default(), t(0)).unwrap();
    assert_eq!(done.result(), Some(json!([])));
    assert_eq!(done.cancel(), CancelOutcome::AlreadyEnded(Status::Finished));
}

#[test]
fn allowed_failures_finish_with_null_and_keep_their_error() {
    let project = Project::new(vec![
        Node::call("fail", json!("meh"))
            .with_options(|o| o.allow_failure = true)
            .blocking(),
        Node::after("echo"),
    ]);
    let mut run = Run::new(project, library(), t(0)).unwrap();
    let job = run.poll_ready().unwrap();
    run.begin(job, t(0)).unwrap();
    run.handle_failure(job, 1, Failure::retryable("meh"), t(1))
        .unwrap();
    let view = run.node(job).unwrap();
    assert_eq!(
        (view.state(), view.error()),
        (NodeState::Finished, Some("meh"))
    );
    let next = run.poll_ready().unwrap();
    let a = run.begin(next, t(1)).unwrap();
    assert_eq!(a.input, Some(json!(null)));
}

#[test]
fn batches_added_at_once_stay_contiguous_in_completion_order() {
    let project = Project::new(vec![
        Node::call("addJobs", json!(2)),
        Node::call("addJobs", json!(3)),
    ]);
    let mut run = Run::new(project, library(), t(0)).unwrap();
    let jobs = ready(&mut run);
    let a: Vec<_> = jobs.iter().map(|&j| run.begin(j, t(0)).unwrap()).collect();
    let out = |a: &rqm_core::Attempt| Library.run_attempt(a).unwrap();
    run.handle_success(jobs[1], 1, out(&a[1]), t(1)).unwrap();
    run.handle_success(jobs[0], 1, out(&a[0]), t(2)).unwrap();
    let mut now = 2;
    while let Some(job) = run.poll_ready() {
        now += 1;
        let attempt = run.begin(job, t(now)).unwrap();
        run.handle_success(job, 1, out(&attempt), t(now)).unwrap();
    }
    assert_eq!(run.result(), Some(json!([4, 6, 12, 14, 16, 8, 10])));
}

#[test]
fn added_nodes_that_break_a_rule_fail_the_job_with_every_error() {
    let project = Project::new(vec![Node::group(vec![
        Node::call("simpleTask", json!(1)),
        Node::call("adder", json!(0)),
    ])]);
    let mut run = Run::new(project, RunConfig::default(), t(0)).unwrap();
    let jobs = ready(&mut run);
    run.begin(jobs[1], t(0)).unwrap();
    let bad = vec![
        Node::after("simpleTask"),
        Node::group(vec![Node::after("simpleTask")]),
        Node::call("", json!(1)),
    ];
    run.handle_success(jobs[1], 1, Output::with_nodes(json!(0), bad), t(1))
        .unwrap();
    let Status::Failed(failed) = run.status() else {
        panic!("failed: {:?}", run.status())
    };
    assert_eq!(failed.path.to_string(), "0.1");
    assert!(
        failed
            .error
            .contains("at node 0.3.0, key `previousJobArgs`"),
        "{}",
        failed.error
    );
    assert!(
        failed.error.contains("at node 0.4, key `func`"),
        "{}",
        failed.error
    );
    assert_eq!(run.len(), 4, "nothing of a refused batch is kept");
}

#[test]
fn added_nodes_count_against_the_limits() {
    let config = RunConfig {
        limits: Limits {
            max_nodes: 5,
            ..Limits::default()
        },
        catalog: Some(Arc::new(Library)),
    };
    let project = Project::new(vec![Node::call("addJobs", json!(5))]);
    let mut run = Run::new(project, config, t(0)).unwrap();
    let job = run.poll_ready().unwrap();
    let a = run.begin(job, t(0)).unwrap();
    run.handle_success(job, 1, Library.run_attempt(&a).unwrap(), t(1))
        .unwrap();
    let Status::Failed(failed) = run.status() else {
        panic!("failed")
    };
    assert!(
        failed.error.contains("more than 5 nodes"),
        "{}",
        failed.error
    );
}

#[test]
fn unknown_functions_added_are_refused_by_the_catalog() {
    let project = Project::new(vec![Node::call("echo", json!(1))]);
    let mut run = Run::new(project, library(), t(0)).unwrap();
    let job = run.poll_ready().unwrap();
    run.begin(job, t(0)).unwrap();
    let out = Output::with_nodes(
        json!(1),
        vec![
            Node::call("nope", json!(1)),
            Node::call("simpleTask", json!("x")),
        ],
    );
    run.handle_success(job, 1, out, t(1)).unwrap();
    let Status::Failed(failed) = run.status() else {
        panic!("failed")
    };
    assert!(
        failed
            .error
            .contains("at node 1, key `func`: no worker registers a function named `nope`"),
        "{}",
        failed.error
    );
    assert!(
        failed
            .error
            .contains("at node 2, key `args`: the input does not fit `simpleTask`"),
        "{}",
        failed.error
    );
}

#[test]
fn attempts_carry_input_and_options() {
    let project = Project::new(vec![
        Node::group(vec![Node::call("a", json!(1)), Node::call("a", json!(2))]),
        Node::after("b").with_options(|o| {
            o.timeout_ms = Some(250);
            o.queue = Some("slow".into());
        }),
        Node::job("c", rqm_core::Input::None)
            .with_kwargs(json!({"k": 1}).as_object().unwrap().clone()),
    ]);
    let mut run = Run::new(project, RunConfig::default(), t(0)).unwrap();
    let mut seen = Vec::new();
    let mut now = 0;
    while let Some(job) = run.poll_ready() {
        now += 1;
        let a = run.begin(job, t(now)).unwrap();
        let result = a.input.clone().unwrap_or(json!(null));
        seen.push(a);
        run.handle_success(job, 1, Output::value(result), t(now))
            .unwrap();
    }
    let b = seen.iter().find(|a| &*a.func == "b").unwrap();
    assert_eq!(b.input, Some(json!([1, 2])));
    assert_eq!(
        (b.timeout, &*b.queue),
        (Some(Duration::from_millis(250)), "slow")
    );
    let c = seen.iter().find(|a| &*a.func == "c").unwrap();
    assert_eq!(
        (c.input.clone(), c.kwargs.clone()),
        (None, json!({"k": 1}).as_object().cloned())
    );
    assert_eq!(&*seen[0].queue, rqm_core::DEFAULT_QUEUE);
    assert_eq!(
        run.path(run.find(&Path::from_indices(vec![0, 1])).unwrap())
            .to_string(),
        "0.1"
    );
}
