//! The `rqm-worker` command line.

use std::ffi::OsString;
use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use rqm_core::{CancelOutcome, Limits, Registry, Report};
use rqm_redis::{Config, RedisEngine};

use crate::embedded::{Engine, EngineConfig};
use crate::redis_worker::WorkerConfig;

/// Runs projects of jobs with dependencies.
#[derive(Debug, Parser)]
#[command(name = "rqm-worker", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

/// Where Redis is.
#[derive(Debug, Args)]
struct RedisArgs {
    /// The Redis URL: redis://[user:password@]host:port[/db].
    #[arg(
        long = "redis",
        env = "RQM_REDIS_URL",
        default_value = "redis://127.0.0.1:6379"
    )]
    url: String,
    /// The prefix of every key rqm writes.
    #[arg(long, env = "RQM_PREFIX", default_value = "rqm:")]
    prefix: String,
    /// How long finished projects are kept, in seconds.
    #[arg(long, env = "RQM_RETENTION_S", default_value_t = 7 * 24 * 3600)]
    retention_s: u64,
    /// Most nodes a project may have.
    #[arg(long, env = "RQM_MAX_NODES", default_value_t = Limits::default().max_nodes)]
    max_nodes: usize,
    /// For rediss://, a PEM file of the CA to trust instead of the system's.
    #[arg(long, env = "RQM_TLS_CA")]
    tls_ca: Option<PathBuf>,
    /// Records per shard of a submitted project's per-node strings (a
    /// positive multiple of 16); each project keeps the value it was
    /// submitted with.
    #[arg(long, env = "RQM_SHARD_RECORDS", default_value_t = Config::default().shard_records)]
    shard_records: u32,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Runs a worker against Redis until SIGINT or SIGTERM.
    Run {
        #[command(flatten)]
        redis: RedisArgs,
        /// The queues to take jobs from, comma-separated, in order.
        #[arg(
            long,
            env = "RQM_QUEUES",
            default_value = "default",
            value_delimiter = ','
        )]
        queues: Vec<String>,
        /// Most job attempts running at once.
        #[arg(long, env = "RQM_CONCURRENCY", default_value_t = 64)]
        concurrency: usize,
        /// How long a job's lease lasts between renewals, in ms.
        #[arg(long, env = "RQM_LEASE_MS", default_value_t = 30_000)]
        lease_ms: u64,
        /// On shutdown, how long running jobs may take to finish, in seconds.
        #[arg(long, env = "RQM_GRACE_S", default_value_t = 10.0)]
        grace_s: f64,
    },
    /// Checks a JSON project against this binary's jobs and submits it.
    Submit {
        /// The project, in the JSON form (SPEC 8).
        file: PathBuf,
        #[command(flatten)]
        redis: RedisArgs,
        /// Wait for the project to end and print its status.
        #[arg(long)]
        wait: bool,
        /// With --wait, print the status as one JSON object, the last line.
        #[arg(long)]
        json: bool,
        /// Give up waiting after this many seconds.
        #[arg(long)]
        timeout: Option<f64>,
    },
    /// Prints a project's status.
    Status {
        /// The project's id.
        id: String,
        #[command(flatten)]
        redis: RedisArgs,
        /// Print it as one JSON object.
        #[arg(long)]
        json: bool,
    },
    /// Waits for a project to end and prints its status.
    Wait {
        /// The project's id.
        id: String,
        #[command(flatten)]
        redis: RedisArgs,
        /// Print it as one JSON object.
        #[arg(long)]
        json: bool,
        /// Give up after this many seconds.
        #[arg(long)]
        timeout: Option<f64>,
    },
    /// Prints a finished project's result as JSON.
    Result {
        /// The project's id.
        id: String,
        #[command(flatten)]
        redis: RedisArgs,
    },
    /// Cancels a project.
    Cancel {
        /// The project's id.
        id: String,
        #[command(flatten)]
        redis: RedisArgs,
    },
    /// Lists projects, newest first.
    List {
        #[command(flatten)]
        redis: RedisArgs,
    },
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

/// A failed command: what to print, and the exit status.
struct Fail(u8, String);

impl<E: std::fmt::Display> From<E> for Fail {
    fn from(e: E) -> Self {
        Fail(2, format!("error: {e}"))
    }
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
    if let Command::Functions = cli.command {
        for name in registry.names() {
            let r = registry.get(name).expect("a listed name is registered");
            println!("{name}\t{}", r.function.defined_at);
        }
        return ExitCode::SUCCESS;
    }
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
    match runtime.block_on(command(cli.command, registry)) {
        Ok(code) => code,
        Err(Fail(code, message)) => {
            eprintln!("{message}");
            ExitCode::from(code)
        }
    }
}

async fn connect(args: RedisArgs, registry: &'static Registry) -> Result<RedisEngine, Fail> {
    let config = Config {
        url: args.url,
        prefix: args.prefix,
        retention: Duration::from_secs(args.retention_s),
        tls_ca: args.tls_ca,
        shard_records: args.shard_records,
    };
    let limits = Limits {
        max_nodes: args.max_nodes,
        ..Limits::default()
    };
    Ok(RedisEngine::connect(config, limits, Some(registry)).await?)
}

fn read(file: &PathBuf) -> Result<Vec<u8>, Fail> {
    std::fs::read(file).map_err(|e| Fail(2, format!("error: cannot read {}: {e}", file.display())))
}

fn exit_for(report: &Report) -> ExitCode {
    if report.status == "finished" {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}

async fn command(command: Command, registry: &'static Registry) -> Result<ExitCode, Fail> {
    match command {
        Command::Functions => Ok(ExitCode::SUCCESS),
        Command::RunLocal {
            file,
            json,
            concurrency,
            timeout,
            max_nodes,
        } => {
            let config = EngineConfig {
                concurrency,
                limits: Limits {
                    max_nodes,
                    ..Limits::default()
                },
                ..EngineConfig::default()
            };
            run_local(read(&file)?, &file, json, config, timeout).await
        }
        Command::Run {
            redis,
            queues,
            concurrency,
            lease_ms,
            grace_s,
        } => {
            let engine = connect(redis, registry).await?;
            let config = WorkerConfig {
                queues,
                concurrency,
                lease: Duration::from_millis(lease_ms.max(1)),
                grace: Duration::from_secs_f64(grace_s.max(0.0)),
                ..WorkerConfig::default()
            };
            tracing::info!(queues = ?config.queues, concurrency, "worker started");
            crate::redis_worker::run(engine, registry, config, shutdown_signal()).await?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Submit {
            file,
            redis,
            wait,
            json,
            timeout,
        } => {
            let bytes = read(&file)?;
            let engine = connect(redis, registry).await?;
            let id = match engine.submit_json(bytes).await {
                Ok(id) => id,
                Err(rqm_redis::Error::Rejected(rejection)) => {
                    eprintln!("{}: {rejection}", file.display());
                    if json {
                        print_json(&Report::rejected(&rejection));
                    }
                    return Ok(ExitCode::from(2));
                }
                Err(e) => return Err(e.into()),
            };
            if !wait {
                println!("{id}");
                return Ok(ExitCode::SUCCESS);
            }
            eprintln!("submitted {id}");
            let report = wait_for(&engine, &id, timeout, json).await?;
            Ok(exit_for(&report))
        }
        Command::Status { id, redis, json } => {
            let engine = connect(redis, registry).await?;
            let report = engine.status(&id).await?;
            if json {
                print_json(&report);
            } else {
                print_summary(&mut std::io::stdout(), &id, &report);
                for node in &report.nodes {
                    println!(
                        "  {:<12} {:<12} {:<9} attempts {}{}",
                        node.path.to_string(),
                        node.function.as_deref().unwrap_or("(group)"),
                        node.state,
                        node.attempts,
                        node.error
                            .as_deref()
                            .map(|e| format!("  error: {e}"))
                            .unwrap_or_default()
                    );
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Wait {
            id,
            redis,
            json,
            timeout,
        } => {
            let engine = connect(redis, registry).await?;
            let report = wait_for(&engine, &id, timeout, json).await?;
            Ok(exit_for(&report))
        }
        Command::Result { id, redis } => {
            let engine = connect(redis, registry).await?;
            let report = engine.status(&id).await?;
            match report.result {
                Some(result) => {
                    println!("{result}");
                    Ok(ExitCode::SUCCESS)
                }
                None => Err(Fail(
                    1,
                    format!("project {id} has no result: it is {}", report.status),
                )),
            }
        }
        Command::Cancel { id, redis } => {
            let engine = connect(redis, registry).await?;
            match engine.cancel(&id).await? {
                CancelOutcome::Cancelled => {
                    println!("project {id} cancelled");
                    Ok(ExitCode::SUCCESS)
                }
                CancelOutcome::AlreadyEnded(status) => {
                    println!(
                        "project {id} had already ended: {}; nothing changed",
                        status.as_str()
                    );
                    Ok(ExitCode::from(1))
                }
            }
        }
        Command::List { redis } => {
            let engine = connect(redis, registry).await?;
            for p in engine.list().await? {
                println!("{}\t{}\t{}", p.id, p.status, p.submitted_ms);
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

async fn wait_for(
    engine: &RedisEngine,
    id: &str,
    timeout: Option<f64>,
    json: bool,
) -> Result<Report, Fail> {
    let limit = timeout.map(Duration::from_secs_f64);
    let report = match engine.wait(id, limit).await {
        Ok(report) => report,
        Err(rqm_redis::Error::Timeout { .. }) => {
            let report = engine.status(id).await?;
            if json {
                print_json(&report);
            }
            return Err(Fail(1, format!("error: project {id} did not end in time")));
        }
        Err(e) => return Err(e.into()),
    };
    if json {
        print_summary(&mut std::io::stderr(), id, &report);
        print_json(&report);
    } else {
        print_summary(&mut std::io::stdout(), id, &report);
    }
    Ok(report)
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(term) => term,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot listen for SIGTERM");
                    let _ = ctrl_c.await;
                    return;
                }
            };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
    tracing::info!("shutting down: no more jobs are taken");
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
    bytes: Vec<u8>,
    file: &std::path::Path,
    json: bool,
    config: EngineConfig,
    timeout: Option<f64>,
) -> Result<ExitCode, Fail> {
    let engine = Engine::new(config)?;
    let handle = match engine.submit_json(&bytes) {
        Ok(handle) => handle,
        Err(rejection) => {
            eprintln!("{}: {rejection}", file.display());
            if json {
                print_json(&Report::rejected(&rejection));
            }
            return Ok(ExitCode::from(2));
        }
    };
    let report = match timeout {
        Some(seconds) => match handle.wait_for(Duration::from_secs_f64(seconds)).await {
            Ok(report) => report,
            Err(e) => {
                let report = handle.status().await;
                if json {
                    print_json(&report);
                }
                return Err(Fail(1, format!("error: {e}")));
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
    Ok(exit_for(&report))
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
