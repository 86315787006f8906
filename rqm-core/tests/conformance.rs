//! Every case of the shared conformance suite, run through the pure core
//! with the reference job library, in several completion orders. Each file
//! in the folder is one test; a new file is picked up without a code change.

use std::collections::BTreeMap;
use std::path::{Path as FsPath, PathBuf};

use libtest_mimic::{Arguments, Failed, Trial};
use rqm_core::testing::{Library, Order, Sim};
use rqm_core::{Limits, Path, Project, Status, parse_project};
use serde::Deserialize;
use serde_json::Value;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Case {
    #[allow(dead_code)]
    about: String,
    project: Value,
    status: String,
    #[serde(default)]
    result: Option<Value>,
    #[serde(default)]
    waits_for: BTreeMap<String, Vec<String>>,
    #[serde(default)]
    never_started: Vec<String>,
    #[serde(default)]
    failed_path: Option<String>,
    #[serde(default)]
    error: Option<Value>,
}

fn conformance_dir() -> PathBuf {
    match std::env::var_os("RQM_CONFORMANCE_DIR") {
        Some(dir) => PathBuf::from(dir),
        None => FsPath::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/conformance"),
    }
}

fn main() {
    let args = Arguments::from_args();
    let dir = conformance_dir();
    let entries = std::fs::read_dir(&dir).unwrap_or_else(|e| {
        panic!(
            "the conformance folder {} cannot be read ({e}); the shared folder must sit beside the repository",
            dir.display()
        )
    });
    let mut files: Vec<PathBuf> = entries
        .map(|e| e.expect("a readable folder entry").path())
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .collect();
    files.sort();
    assert!(
        !files.is_empty(),
        "no conformance cases in {}",
        dir.display()
    );
    let trials = files
        .into_iter()
        .map(|file| {
            let name = file.file_stem().unwrap().to_string_lossy().into_owned();
            Trial::test(name, move || run_case(&file))
        })
        .collect();
    libtest_mimic::run(&args, trials).exit();
}

fn path(text: &str) -> Result<Path, Failed> {
    text.parse().map_err(|e| Failed::from(format!("{e}")))
}

fn expected_errors(error: &Option<Value>) -> Vec<String> {
    match error {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::String(s)) => vec![s.clone()],
        Some(Value::Array(items)) => items
            .iter()
            .map(|v| v.as_str().map_or_else(|| v.to_string(), str::to_owned))
            .collect(),
        Some(other) => vec![other.to_string()],
    }
}

fn run_case(file: &FsPath) -> Result<(), Failed> {
    let text = std::fs::read_to_string(file).map_err(|e| format!("{}: {e}", file.display()))?;
    let case: Case = serde_json::from_str(&text).map_err(|e| format!("{}: {e}", file.display()))?;
    let bytes = serde_json::to_vec(&case.project).expect("a value serializes");
    let parsed = parse_project(&bytes, &Limits::default(), Some(&Library));
    if case.status == "rejected" {
        let rejection = match parsed {
            Ok(_) => return Err("the project was accepted; it must be rejected".into()),
            Err(r) => r,
        };
        let text = rejection.to_string();
        for needle in expected_errors(&case.error) {
            if !text.contains(&needle) {
                return Err(format!("the rejection does not mention {needle:?}: {text}").into());
            }
        }
        return Ok(());
    }
    let project: Project = parsed.map_err(|r| format!("rejected: {r}"))?;
    let orders = [Order::Fifo, Order::Lifo]
        .into_iter()
        .chain((1..=8).map(Order::Random));
    for order in orders {
        check_order(&case, project.clone(), order)
            .map_err(|e| format!("in order {order:?}: {e}"))?;
    }
    Ok(())
}

fn check_order(case: &Case, project: Project, order: Order) -> Result<(), String> {
    let mut sim = Sim::new(project, order).map_err(|r| r.to_string())?;
    sim.run_until_idle();
    let run = sim.run();
    if run.status().as_str() != case.status {
        return Err(format!(
            "status {:?}, expected {}",
            run.status(),
            case.status
        ));
    }
    if case.status == "finished" {
        if let Some(expected) = &case.result {
            let actual = run.result();
            if actual.as_ref() != Some(expected) {
                return Err(format!("result {actual:?}, expected {expected}"));
            }
        }
    }
    sim.check_timing()?;
    for (node, needs) in &case.waits_for {
        let id = run
            .find(&path(node).map_err(|_| format!("bad path {node:?}"))?)
            .ok_or_else(|| format!("node {node} of waits_for does not exist"))?;
        let ready = run
            .node(id)
            .and_then(|n| n.ready_at())
            .ok_or_else(|| format!("node {node} never became ready"))?;
        let mut last = 0;
        for need in needs {
            let need_id = run
                .find(&path(need).map_err(|_| format!("bad path {need:?}"))?)
                .ok_or_else(|| format!("node {need}, which {node} waits for, does not exist"))?;
            let finished = run
                .node(need_id)
                .and_then(|n| n.finished_at())
                .ok_or_else(|| format!("node {need}, which {node} waits for, never finished"))?;
            last = last.max(finished.as_micros());
        }
        if ready.as_micros() != last {
            return Err(format!(
                "node {node} became ready at {}, but {needs:?} had all finished at {last}",
                ready.as_micros()
            ));
        }
    }
    for node in &case.never_started {
        let p = path(node).map_err(|_| format!("bad path {node:?}"))?;
        if let Some(view) = run.find(&p).and_then(|id| run.node(id)) {
            if view.started_at().is_some() {
                return Err(format!("node {node} started, and must never have"));
            }
        }
    }
    if let Some(failed) = &case.failed_path {
        match run.status() {
            Status::Failed(job) if job.path.to_string() == *failed => {
                for needle in expected_errors(&case.error) {
                    if !job.error.contains(&needle) {
                        return Err(format!(
                            "the failure does not mention {needle:?}: {}",
                            job.error
                        ));
                    }
                }
            }
            other => return Err(format!("status {other:?}, expected a failure at {failed}")),
        }
    }
    Ok(())
}
