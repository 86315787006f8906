//! Every case of the shared conformance suite, run through the pure core
//! with the reference job library, in ten completion orders. Each file in
//! the folder is one test; a new file is picked up without a code change.

use libtest_mimic::{Arguments, Failed, Trial};
use rqm_core::testing::conformance::{self, Case};
use rqm_core::testing::{Library, Order, Sim};
use rqm_core::{Limits, Report, parse_project};

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
    let parsed = parse_project(&case.project_json(), &Limits::default(), Some(&Library));
    if case.status == "rejected" {
        return match parsed {
            Ok(_) => Err("the project was accepted; it must be rejected".into()),
            Err(rejection) => conformance::check_rejection(case, &rejection.to_string()),
        };
    }
    let project = parsed.map_err(|r| format!("rejected: {r}"))?;
    let orders = [Order::Fifo, Order::Lifo]
        .into_iter()
        .chain((1..=8).map(Order::Random));
    for order in orders {
        let mut sim = Sim::new(project.clone(), order).map_err(|r| r.to_string())?;
        sim.run_until_idle();
        let report = Report::of(sim.run());
        conformance::check_report(case, &report, 0)
            .and_then(|()| sim.check_timing())
            .map_err(|e| format!("in order {order:?}: {e}"))?;
    }
    Ok(())
}
