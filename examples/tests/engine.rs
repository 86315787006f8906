//! The embedded engine with real tasks and clocks: retries and backoff,
//! timeouts, panics, cancellation, concurrency, blocking jobs off the async
//! threads, events, and bad input found at run time.

use std::time::{Duration, Instant};

use examples::library::{fail, flaky, panic, simple_task, sleep_ms};
use rqm_core::{
    Call, CancelOutcome, Input, Invocation, JobContext, JobFunction, JobResult, Node, Project,
    Registry, job, project,
};
use rqm_worker::{Engine, EngineConfig, ProjectEvent};
use serde_json::json;

fn engine(concurrency: usize) -> Engine {
    examples::library::link();
    Engine::new(EngineConfig {
        concurrency,
        ..EngineConfig::default()
    })
    .expect("the registry loads")
}

/// Sleeps on its thread, as a synchronous job that blocks would.
#[job]
fn block_ms(ms: u64) -> u64 {
    std::thread::sleep(Duration::from_millis(ms));
    ms
}

/// Reports progress twice.
#[job]
fn chatty(ctx: &JobContext) -> &'static str {
    ctx.progress(json!({"done": 1, "of": 2}));
    ctx.progress(json!({"done": 2, "of": 2}));
    "said"
}

/// Spins until told to stop, checking its context.
#[job]
fn spin(ctx: JobContext) -> Result<u32, String> {
    let mut turns = 0;
    while !ctx.is_cancelled() {
        std::thread::sleep(Duration::from_millis(2));
        turns += 1;
        if turns > 5_000 {
            return Ok(turns);
        }
    }
    Err("stopped when told to".into())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retries_wait_out_their_backoff() {
    let engine = engine(8);
    let started = Instant::now();
    let handle = engine.submit(project![flaky(2).retries(2)]).expect("valid");
    let report = handle.wait().await;
    assert_eq!(report.status, "finished", "{report:?}");
    assert_eq!(report.result, Some(json!([3])));
    let node = report.node("0").unwrap();
    assert_eq!(node.attempts, 3);
    assert_eq!(node.error.as_deref(), Some("flaky: attempt 2 of 2 fails"));
    // The default backoff: 100 ms, then 200 ms.
    assert!(
        started.elapsed() >= Duration::from_millis(300),
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_timed_out_attempt_fails_and_is_retried() {
    let engine = engine(8);
    let started = Instant::now();
    let project = project![sleep_ms(5_000).timeout_ms(50).retries(1)];
    let report = engine.submit(project).unwrap().wait().await;
    assert_eq!(report.status, "failed");
    let node = report.node("0").unwrap();
    assert_eq!(node.attempts, 2);
    assert_eq!(node.error.as_deref(), Some("timed out after 50 ms"));
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panic_fails_the_job_and_the_engine_lives_on() {
    let engine = engine(8);
    let report = engine
        .submit(project![panic("kaboom".to_string()), simple_task(1)])
        .unwrap()
        .wait()
        .await;
    assert_eq!(report.status, "failed");
    assert_eq!(report.failed_path.as_deref(), Some("0"));
    assert!(
        report
            .error
            .as_deref()
            .unwrap()
            .contains("panicked: kaboom"),
        "{report:?}"
    );
    let again = engine
        .submit(project![simple_task(21)])
        .unwrap()
        .wait()
        .await;
    assert_eq!(again.result, Some(json!([42])));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_stops_running_jobs_and_starts_nothing() {
    let engine = engine(8);
    let handle = engine
        .submit(project![sleep_ms(10_000), blocking spin(), simple_task(1)])
        .unwrap();
    let mut events = handle.events();
    let mut started = 0;
    while started < 2 {
        match events.next().await {
            Some(ProjectEvent::Started { .. }) => started += 1,
            Some(_) => {}
            None => panic!("the project ended before both jobs started"),
        }
    }
    let t = Instant::now();
    assert_eq!(handle.cancel().await, CancelOutcome::Cancelled);
    let report = handle
        .wait_for(Duration::from_secs(5))
        .await
        .expect("ends soon");
    assert!(t.elapsed() < Duration::from_secs(1), "{:?}", t.elapsed());
    assert_eq!(report.status, "cancelled");
    assert!(
        report
            .node("0")
            .unwrap()
            .error
            .as_deref()
            .unwrap()
            .starts_with("stopped")
    );
    assert_eq!(
        report.node("1").unwrap().error.as_deref(),
        Some("stopped when told to")
    );
    assert_eq!(report.node("2").unwrap().started_us, None);
    assert!(matches!(
        handle.cancel().await,
        CancelOutcome::AlreadyEnded(_)
    ));
    let mut last = None;
    while let Some(event) = events.next().await {
        last = Some(event);
    }
    assert_eq!(
        last,
        Some(ProjectEvent::Ended {
            status: "cancelled".into()
        })
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failure_stops_the_jobs_still_running() {
    let engine = engine(8);
    let project = project![sleep_ms(10_000), blocking fail("boom".to_string()), simple_task(1)];
    let t = Instant::now();
    let report = engine.submit(project).unwrap().wait().await;
    assert!(t.elapsed() < Duration::from_secs(2), "{:?}", t.elapsed());
    assert_eq!(report.status, "failed");
    assert_eq!(report.failed_path.as_deref(), Some("1"));
    assert!(
        report
            .node("0")
            .unwrap()
            .error
            .as_deref()
            .unwrap()
            .starts_with("stopped")
    );
    assert_eq!(report.node("2").unwrap().started_us, None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrency_bounds_the_attempts_running_at_once() {
    let jobs = || Project::new((0..8).map(|_| sleep_ms::job(100).into()).collect());
    let t = Instant::now();
    engine(2).submit(jobs()).unwrap().wait().await;
    let narrow = t.elapsed();
    let t = Instant::now();
    engine(8).submit(jobs()).unwrap().wait().await;
    let wide = t.elapsed();
    assert!(
        narrow >= Duration::from_millis(400),
        "8 × 100 ms two at a time took {narrow:?}"
    );
    assert!(
        wide < Duration::from_millis(350),
        "8 × 100 ms at once took {wide:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blocking_jobs_run_off_the_async_threads() {
    let engine = engine(16);
    let mut jobs: Vec<Node> = (0..4).map(|_| block_ms::job(400).into()).collect();
    jobs.extend((0..4).map(|_| Node::from(sleep_ms::job(10))));
    let report = engine.submit(Project::new(jobs)).unwrap().wait().await;
    assert_eq!(report.status, "finished");
    for i in 4..8 {
        let n = report.node(&i.to_string()).unwrap();
        let took = n.finished_us.unwrap() - n.started_us.unwrap();
        assert!(
            took < 200_000,
            "an async 10 ms job took {took} us beside blocking jobs"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blocked_synchronous_jobs_do_not_hold_up_the_others() {
    // Short synchronous jobs share a few threads; when those block, more
    // start, so 16 jobs that block 200 ms each still run side by side.
    let jobs: Vec<Node> = (0..16).map(|_| block_ms::job(200).into()).collect();
    let t = Instant::now();
    let report = engine(16).submit(Project::new(jobs)).unwrap().wait().await;
    let took = t.elapsed();
    assert_eq!(report.status, "finished");
    assert!(
        took < Duration::from_millis(700),
        "16 × 200 ms blocking jobs, 16 at a time, took {took:?}"
    );
}

/// Every event left, to the project's end.
async fn read_all(events: &mut rqm_worker::Events) -> Vec<ProjectEvent> {
    let mut seen = Vec::new();
    while let Some(event) = events.next().await {
        seen.push(event);
    }
    seen
}

/// The events of a project's last job, `simpleTask` at node 1, and its end.
fn simple_task_1_and_end() -> [ProjectEvent; 3] {
    let path = |p: &str| p.parse().unwrap();
    [
        ProjectEvent::Started {
            path: path("1"),
            function: "simpleTask".into(),
            attempt: 1,
        },
        ProjectEvent::Finished { path: path("1") },
        ProjectEvent::Ended {
            status: "finished".into(),
        },
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_tell_each_step_and_progress() {
    let engine = engine(8);
    let handle = engine
        .submit(project![blocking chatty(), simple_task(1)])
        .unwrap();
    let seen = read_all(&mut handle.events()).await;
    let path = |p: &str| p.parse().unwrap();
    assert_eq!(
        seen,
        [
            ProjectEvent::Started {
                path: path("0"),
                function: "chatty".into(),
                attempt: 1
            },
            ProjectEvent::Progress {
                path: path("0"),
                value: json!({"done": 1, "of": 2})
            },
            ProjectEvent::Progress {
                path: path("0"),
                value: json!({"done": 2, "of": 2})
            },
            ProjectEvent::Finished { path: path("0") },
        ]
        .into_iter()
        .chain(simple_task_1_and_end())
        .collect::<Vec<_>>()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscriber_that_falls_behind_skips_to_the_last_1024_events() {
    let engine = engine(64);
    let jobs: Vec<Node> = (0..2_000).map(|i| simple_task::job(i).into()).collect();
    let handle = engine.submit(Project::new(jobs)).unwrap();
    // The first subscriber reads from the submit on, but only after the
    // project's 4,001 events (a start and a finish a job, the end).
    let mut first = handle.events();
    handle.wait().await;
    let seen = read_all(&mut first).await;
    assert_eq!(seen.len(), 1024, "the last 1,024 are kept");
    assert_eq!(
        seen.last(),
        Some(&ProjectEvent::Ended {
            status: "finished".into()
        })
    );
    let finished = seen
        .iter()
        .filter(|e| matches!(e, ProjectEvent::Finished { .. }))
        .count();
    assert!(finished >= 511, "{finished} finishes among the last events");
    // A later subscriber sees events from its call on: none, after the end.
    assert_eq!(handle.events().next().await, None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_later_subscriber_sees_events_from_its_call_on() {
    let engine = engine(8);
    let handle = engine
        .submit(project![blocking block_ms(150), simple_task(1)])
        .unwrap();
    let mut first = handle.events();
    assert!(matches!(
        first.next().await,
        Some(ProjectEvent::Started { .. })
    ));
    // Subscribed while the first job runs: its start is already past.
    let seen = read_all(&mut handle.events()).await;
    let path = |p: &str| p.parse().unwrap();
    assert_eq!(
        seen,
        [ProjectEvent::Finished { path: path("0") },]
            .into_iter()
            .chain(simple_task_1_and_end())
            .collect::<Vec<_>>()
    );
    // The first still has all of it to read.
    assert_eq!(read_all(&mut first).await, seen);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ended_projects_are_let_go_after_the_retention() {
    examples::library::link();
    let engine = Engine::new(EngineConfig {
        retention: Duration::from_millis(300),
        ..EngineConfig::default()
    })
    .unwrap();
    let old = engine.submit(project![simple_task(1)]).unwrap();
    old.wait().await;
    let running = engine.submit(project![sleep_ms(5_000)]).unwrap();
    assert!(
        engine.project(old.id()).is_some(),
        "kept within the retention"
    );
    assert_eq!(engine.list().len(), 2);
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert!(engine.project(old.id()).is_none(), "let go after it");
    // A running project is kept, however old.
    let listed: Vec<String> = engine.list().iter().map(|h| h.id().to_owned()).collect();
    assert_eq!(listed, [running.id()]);
    assert!(engine.project(running.id()).is_some());
    // A handle held still works.
    assert_eq!(old.status().await.status, "finished");
    running.cancel().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_at_run_time_is_a_permanent_failure_naming_everything() {
    let engine = engine(8);
    let json = br#"{"jobs": [{"func": "echo", "args": "seven"}, {"func": "simpleTask", "previousJobArgs": true, "retries": 3}]}"#;
    let handle = engine.submit_json(json).unwrap();
    let report = handle.wait().await;
    assert_eq!(report.status, "failed");
    let node = report.node("1").unwrap();
    assert_eq!(node.attempts, 1, "bad input is never retried");
    let error = node.error.as_deref().unwrap();
    assert!(
        error.contains("bad input for `simpleTask` at node 1")
            && error.contains(handle.id())
            && error.contains("parameter `x`: invalid type: string \"seven\", expected i64"),
        "{error}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn submit_refuses_unknown_functions_and_bad_args_before_running() {
    let engine = engine(8);
    let err = engine
        .submit(Project::new(vec![
            Node::call("noSuchJob", json!(1)),
            Node::call("simpleTask", json!("seven")),
            Node::job("expand", Input::Args(json!([1, 2, 3]))),
        ]))
        .unwrap_err();
    let text = err.to_string();
    assert!(
        text.contains("at node 0, key `func`: no worker registers a function named `noSuchJob`"),
        "{text}"
    );
    assert!(
        text.contains("at node 1, key `args`: the input does not fit `simpleTask`: parameter `x`"),
        "{text}"
    );
    assert!(text.contains("at node 2, key `args`: the input does not fit `expand`: the function takes 2 parameters"), "{text}");
    assert!(engine.list().is_empty(), "a rejected project is not kept");
}

fn never_called(_: Invocation) -> JobResult {
    unreachable!("registration only")
}

fn any_input(
    _: Option<&serde_json::Value>,
    _: Option<&serde_json::Map<String, serde_json::Value>>,
) -> Result<(), String> {
    Ok(())
}

static FIRST: JobFunction = JobFunction {
    name: "twice",
    defined_at: "tests::first (engine.rs:1)",
    params: &[],
    retries: 0,
    backoff: None,
    timeout_ms: None,
    queue: None,
    check: any_input,
    call: Call::Blocking(never_called),
};

static SECOND: JobFunction = JobFunction {
    defined_at: "tests::second (engine.rs:2)",
    ..FIRST
};

#[test]
fn two_functions_with_one_name_are_refused_naming_both() {
    let err = Registry::from_functions([&FIRST, &SECOND]).unwrap_err();
    assert_eq!(
        err.to_string(),
        "job name `twice` is registered 2 times: by tests::first (engine.rs:1) and by tests::second (engine.rs:2); rename one with #[job(name = \"...\")]"
    );
    assert!(Registry::from_functions([&FIRST]).is_ok());
}
