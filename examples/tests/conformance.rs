//! Every case of the shared conformance suite, run by the `rqm-worker`
//! binary of this crate with `run-local --json` on the embedded engine, with
//! real sleeps: a node must start after the nodes it waits for have
//! finished, and within a few milliseconds of it, so that jobs which may run
//! in parallel do overlap. Each file in the folder is one test.

use std::process::Command;

use libtest_mimic::{Arguments, Failed, Trial};
use rqm_core::Report;
use rqm_core::testing::conformance::{self, Case};

/// How long after its prerequisites a node may start: well below the 50 ms
/// that the cases' `sleep_ms` jobs take, so waiting for one fails the check.
const SLACK_US: u64 = 40_000;

fn main() {
    let args = Arguments::from_args();
    let dir = conformance::dir(env!("CARGO_MANIFEST_DIR"));
    let trials = conformance::load(&dir)
        .into_iter()
        .map(|(name, case)| Trial::test(name, move || run_case(&case).map_err(Failed::from)))
        .collect();
    libtest_mimic::run(&args, trials).exit();
}

fn run_case(case: &Case) -> Result<(), String> {
    let file = tempfile::NamedTempFile::new().map_err(|e| e.to_string())?;
    std::fs::write(file.path(), case.project_json()).map_err(|e| e.to_string())?;
    let out = Command::new(env!("CARGO_BIN_EXE_rqm-worker"))
        .arg("run-local")
        .arg(file.path())
        .arg("--json")
        .arg("--timeout")
        .arg("30")
        .output()
        .map_err(|e| format!("cannot run rqm-worker: {e}"))?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let last = stdout.lines().last().unwrap_or_default();
    let report: Report = serde_json::from_str(last).map_err(|e| {
        format!("the last line of stdout is not a report ({e}): {stdout}\nstderr: {stderr}")
    })?;
    let code = out.status.code();
    let expected_code = match case.status.as_str() {
        "finished" => 0,
        "rejected" => 2,
        _ => 1,
    };
    if code != Some(expected_code) {
        return Err(format!(
            "exit status {code:?}, expected {expected_code}; stderr: {stderr}"
        ));
    }
    if case.status == "rejected" {
        if report.status != "rejected" {
            return Err(format!("status {}, expected rejected", report.status));
        }
        return conformance::check_rejection(case, report.error.as_deref().unwrap_or_default());
    }
    conformance::check_report(case, &report, SLACK_US)
}
