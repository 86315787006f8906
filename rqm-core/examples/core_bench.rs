//! Speed and memory of the pure core: compile a project and run it to the
//! end, the jobs' bodies trivial, so that what is measured is rqm-core.
//!
//! ```text
//! cargo run --release -p rqm-core --example core_bench [-- --check] [--flat N] [--nested N]
//! ```
//!
//! `flat`: N independent `double` jobs in one list. `nested`: groups nested
//! 200 deep, each level a mix of parallel jobs, barriers and
//! `previousJobArgs` chains, and a job that appends nodes as it runs, N nodes
//! in all. Prints one JSON line per scenario and a summary; with `--check`,
//! exits 1 when a target (2,000,000 transitions/s, 200 bytes/node) is missed.

use std::time::Instant;

use peak_alloc::PeakAlloc;
use rqm_core::{Node, Output, Project, Run, RunConfig, Time};
use serde_json::{Value, json};

#[global_allocator]
static ALLOCATOR: PeakAlloc = PeakAlloc;

const TARGET_TRANSITIONS: f64 = 2_000_000.0;
const TARGET_BYTES: f64 = 200.0;
const DEPTH: usize = 200;

struct Figures {
    scenario: &'static str,
    nodes: usize,
    build_s: f64,
    compile_s: f64,
    run_s: f64,
    transitions: u64,
    compiled_bytes: usize,
    final_bytes: usize,
    peak_bytes: usize,
}

impl Figures {
    fn transitions_per_s(&self) -> f64 {
        self.transitions as f64 / (self.compile_s + self.run_s)
    }
    /// The run's own memory per node: the most it held, after compiling
    /// or at the end with every result stored.
    fn bytes_per_node(&self) -> f64 {
        self.compiled_bytes.max(self.final_bytes) as f64 / self.nodes as f64
    }
}

/// Runs `project` to the end, completing each job as soon as it begins.
fn drive(scenario: &'static str, build: impl FnOnce() -> Project) -> Figures {
    let base = ALLOCATOR.current_usage();
    ALLOCATOR.reset_peak_usage();
    let t = Instant::now();
    let project = build();
    let build_s = t.elapsed().as_secs_f64();
    let t = Instant::now();
    let mut run =
        Run::new(project, RunConfig::default(), Time::ZERO).expect("the project is valid");
    let compile_s = t.elapsed().as_secs_f64();
    let compiled_bytes = ALLOCATOR.current_usage() - base;
    let t = Instant::now();
    let mut now = 0u64;
    while let Some(job) = run.poll_ready() {
        now += 1;
        let attempt = run.begin(job, Time::from_micros(now)).expect("ready");
        let output = body(&attempt.func, attempt.input);
        run.handle_success(job, attempt.number, output, Time::from_micros(now))
            .expect("current attempt");
    }
    let run_s = t.elapsed().as_secs_f64();
    // The highest the heap reached from building the project to now,
    // including the project's source tree while it was being compiled.
    let peak_bytes = ALLOCATOR.peak_usage() - base;
    let final_bytes = ALLOCATOR.current_usage() - base;
    assert_eq!(run.status().as_str(), "finished");
    let nodes = run.len() - 1;
    let figures = Figures {
        scenario,
        nodes,
        build_s,
        compile_s,
        run_s,
        transitions: run.transitions(),
        compiled_bytes,
        final_bytes,
        peak_bytes,
    };
    let result = run.result().expect("finished");
    assert!(result.is_array());
    figures
}

fn body(func: &str, input: Option<Value>) -> Output {
    let x = input.as_ref().and_then(Value::as_i64).unwrap_or(0);
    match func {
        "double" => Output::value(json!(x.wrapping_mul(2) % 1_000_000)),
        "append" => Output::with_nodes(
            json!(x),
            (0..x)
                .map(|i| {
                    if i % 10 == 9 {
                        Node::after("double")
                    } else {
                        Node::call("double", json!(i)).blocking_if(i % 50 == 49)
                    }
                })
                .collect(),
        ),
        other => panic!("no job {other}"),
    }
}

fn flat(n: usize) -> Project {
    Project::new((0..n).map(|i| Node::call("double", json!(i))).collect())
}

/// `n` nodes over `DEPTH` nested levels; a fifth of each level is appended
/// while it runs.
fn nested(n: usize) -> Project {
    let per_level = n / DEPTH;
    let appended = per_level / 5;
    let fixed = per_level - appended - 2;
    let mut inner: Option<Node> = None;
    for _ in 0..DEPTH {
        let mut list = vec![Node::call("append", json!(appended))];
        for i in 0..fixed {
            list.push(match i % 7 {
                3 => Node::after("double"),
                6 => Node::call("double", json!(i)).blocking(),
                _ => Node::call("double", json!(i)),
            });
        }
        list.push(
            inner
                .take()
                .unwrap_or_else(|| Node::call("double", json!(1))),
        );
        inner = Some(Node::group(list));
    }
    Project::new(vec![inner.expect("DEPTH > 0")])
}

fn arg(args: &[String], name: &str, default: usize) -> usize {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .map(|v| v.parse().expect("a number"))
        .unwrap_or(default)
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let check = args.iter().any(|a| a == "--check");
    let flat_n = arg(&args, "--flat", 1_000_000);
    let nested_n = arg(&args, "--nested", 100_000);
    let all = [
        drive("flat", || flat(flat_n)),
        drive("nested", || nested(nested_n)),
    ];
    let mut ok = true;
    for f in &all {
        println!(
            "{}",
            json!({
                "bench": "core",
                "scenario": f.scenario,
                "nodes": f.nodes,
                "depth": if f.scenario == "nested" { DEPTH } else { 1 },
                "build_s": f.build_s,
                "compile_s": f.compile_s,
                "run_s": f.run_s,
                "transitions": f.transitions,
                "transitions_per_s": f.transitions_per_s().round(),
                "nodes_per_s": (f.nodes as f64 / (f.compile_s + f.run_s)).round(),
                "run_bytes_per_node_compiled": (f.compiled_bytes as f64 / f.nodes as f64).round(),
                "run_bytes_per_node_final": (f.final_bytes as f64 / f.nodes as f64).round(),
                "peak_bytes_per_node_with_source_tree": (f.peak_bytes as f64 / f.nodes as f64).round(),
            })
        );
        ok &= f.transitions_per_s() >= TARGET_TRANSITIONS && f.bytes_per_node() <= TARGET_BYTES;
    }
    println!();
    println!(
        "scenario  nodes      compile+run  transitions/s  nodes/s     run bytes/node  peak with source"
    );
    for f in &all {
        println!(
            "{:<9} {:<10} {:>9.3} s  {:>13.0}  {:>10.0}  {:>14.0}  {:>16.0}",
            f.scenario,
            f.nodes,
            f.compile_s + f.run_s,
            f.transitions_per_s(),
            f.nodes as f64 / (f.compile_s + f.run_s),
            f.bytes_per_node(),
            f.peak_bytes as f64 / f.nodes as f64
        );
    }
    println!(
        "targets: >= {TARGET_TRANSITIONS:.0} transitions/s, <= {TARGET_BYTES:.0} bytes/node: {}",
        if ok { "met" } else { "MISSED" }
    );
    if check && !ok {
        std::process::exit(1);
    }
}
