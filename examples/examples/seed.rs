//! Runs the six seed examples on the embedded engine and prints each
//! project's result: `cargo run -p examples --example seed`.

use std::process::ExitCode;

use rqm_worker::{Engine, EngineConfig};

#[tokio::main]
async fn main() -> ExitCode {
    let engine = match Engine::new(EngineConfig::default()) {
        Ok(engine) => engine,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
    };
    let mut ok = true;
    for (name, project, expected) in examples::seeds::seeds() {
        let report = match engine.submit(project) {
            Ok(handle) => handle.wait().await,
            Err(rejection) => {
                eprintln!("{name}: {rejection}");
                ok = false;
                continue;
            }
        };
        let result = report.result.unwrap_or_default();
        let mark = if result == expected {
            ""
        } else {
            "   <- expected "
        };
        println!(
            "{name:<20} {:<9} {result}{mark}{}",
            report.status,
            if mark.is_empty() {
                String::new()
            } else {
                expected.to_string()
            }
        );
        ok &= result == expected;
    }
    if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
