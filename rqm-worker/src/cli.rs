//! The `rqm-worker` command line.

use std::ffi::OsString;
use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use rqm_core::{Limits, Registry, Report};

use crate::embedded::{Engine, EngineConfig};

/// Runs projects of jobs with dependencies.
#[derive(Debug, Parser)]
#[command(name = "rqm-worker", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Checks a JSON project against this binary's jobs, runs it on the
    /// embedded engine and prints its status.
    RunLocal {
        /// The project, in the JSON form (SPEC 8).
        file: PathBuf,
        /// Print the status as one JSON object, the last line of stdout.
        #[arg(long)]
        json: bool,
        /// Most job attempts running at once.
        #[arg(long, env = "RQM_CONCURRENCY", default_value_t = 64)]
        concurrency: usize,
        /// Give up waiting after this many seconds (exit status 1).
        #[arg(long)]
        timeout: Option<f64>,
        /// Most nodes a project may have.
        #[arg(long, env = "RQM_MAX_NODES", default_value_t = Limits::default().max_nodes)]
        max_nodes: usize,
    },
    /// Lists the job functions linked into this binary.
    Functions,
}

/// Runs the command line on this process's arguments; a user's worker
/// binary calls this from `main`.
pub fn main() -> ExitCode {
    main_with(std::env::args_os())
}

/// Runs the command line on `args`, the first being the program's name.
pub fn main_with(args: impl IntoIterator<Item = OsString>) -> ExitCode {
    let cli = match Cli::try_parse_from(args) {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            return if e.use_stderr() {
                ExitCode::from(2)
            } else {
                ExitCode::SUCCESS
            };
        }
    };
    init_tracing();
    let registry = match Registry::global() {
        Ok(registry) => registry,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    match cli.command {
        Command::Functions => {
            for name in registry.names() {
                let r = registry.get(name).expect("a listed name is registered");
                println!("{name}\t{}", r.function.defined_at);
            }
            ExitCode::SUCCESS
        }
        Command::RunLocal {
            file,
            json,
            concurrency,
            timeout,
            max_nodes,
        } => {
            let runtime = match tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()
            {
                Ok(rt) => rt,
                Err(e) => {
                    eprintln!("error: cannot start the tokio runtime: {e}");
                    return ExitCode::from(2);
                }
            };
            let config = EngineConfig {
                concurrency,
                limits: Limits {
                    max_nodes,
                    ..Limits::default()
                },
            };
            runtime.block_on(run_local(file, json, config, timeout))
        }
    }
}

fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("RQM_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}

async fn run_local(
    file: PathBuf,
    json: bool,
    config: EngineConfig,
    timeout: Option<f64>,
) -> ExitCode {
    let bytes = match std::fs::read(&file) {
        Ok(bytes) => bytes,
        Err(e) => {
            eprintln!("error: cannot read {}: {e}", file.display());
            return ExitCode::from(2);
        }
    };
    let engine = match Engine::new(config) {
        Ok(engine) => engine,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    let handle = match engine.submit_json(&bytes) {
        Ok(handle) => handle,
        Err(rejection) => {
            eprintln!("{}: {rejection}", file.display());
            if json {
                print_json(&Report::rejected(&rejection));
            }
            return ExitCode::from(2);
        }
    };
    let report = match timeout {
        Some(seconds) => match handle.wait_for(Duration::from_secs_f64(seconds)).await {
            Ok(report) => report,
            Err(e) => {
                eprintln!("error: {e}");
                let report = handle.status().await;
                if json {
                    print_json(&report);
                }
                return ExitCode::from(1);
            }
        },
        None => handle.wait().await,
    };
    if json {
        print_summary(&mut std::io::stderr(), handle.id(), &report);
        print_json(&report);
    } else {
        print_summary(&mut std::io::stdout(), handle.id(), &report);
    }
    if report.status == "finished" {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}

fn print_json(report: &Report) {
    let line = serde_json::to_string(report).expect("a report serializes");
    println!("{line}");
}

fn print_summary(out: &mut dyn Write, id: &str, report: &Report) {
    let c = &report.counts;
    let _ = writeln!(
        out,
        "project {id}: {} ({} finished, {} failed, {} never started)",
        report.status,
        c.finished,
        c.failed,
        c.pending + c.ready + c.retrying
    );
    if let Some(result) = &report.result {
        let _ = writeln!(out, "result: {result}");
    }
    if let Some(error) = &report.error {
        let _ = writeln!(out, "error: {error}");
    }
}
