//! Test support, for this crate's tests and the engines': the SPEC 9
//! reference job library, a deterministic simulation harness with a virtual
//! clock, the SPEC 2 timing oracle, a sequential reference interpreter, and
//! proptest strategies over random trees.

use std::collections::VecDeque;

use serde::de::DeserializeOwned;
use serde_json::{Map, Value, json};

use crate::error::Rejection;
use crate::model::{Input, Node, NodeKind, Project};
use crate::output::Output;
use crate::registry::{Catalog, JobDefaults, bind_input};
use crate::run::{Attempt, Event, Failure, NodeId, Run, RunConfig, Status, Time};

/// The conformance job library of SPEC 9, as plain functions.
///
/// `panic` does not unwind here: it returns the failure an engine reports
/// for a caught panic, `panicked: <message>`. `sleep_ms` returns at once;
/// the simulation's clock is virtual.
#[derive(Clone, Copy, Debug, Default)]
pub struct Library;

const FUNCTIONS: [(&str, &[&str]); 11] = [
    ("simpleTask", &["x"]),
    ("addJobs", &["x"]),
    ("addSubJob", &["x"]),
    ("addChain", &["n"]),
    ("expand", &["depth", "fanout"]),
    ("sum", &["value"]),
    ("echo", &["value"]),
    ("sleep_ms", &["ms"]),
    ("fail", &["message"]),
    ("panic", &["message"]),
    ("flaky", &["n"]),
];

static DEFAULTS: std::sync::OnceLock<JobDefaults> = std::sync::OnceLock::new();

fn params(func: &str) -> Option<&'static [&'static str]> {
    FUNCTIONS
        .iter()
        .find(|(name, _)| *name == func)
        .map(|(_, p)| *p)
}

fn arg<T: DeserializeOwned>(values: &mut [Value], i: usize, name: &str) -> Result<T, String> {
    serde_json::from_value(values[i].take()).map_err(|e| format!("parameter `{name}`: {e}"))
}

/// A decoded call of a library function.
enum Call {
    Simple(i64),
    AddJobs(u32),
    AddSubJob(u32),
    AddChain(u32),
    Expand(u32, u32),
    Sum(Value),
    Echo(Value),
    Sleep(u64),
    Fail(String),
    Panic(String),
    Flaky(u32),
}

fn decode(
    func: &str,
    args: Option<Value>,
    kwargs: Option<Map<String, Value>>,
) -> Result<Call, String> {
    let names = params(func).ok_or_else(|| format!("no function named `{func}`"))?;
    let mut v = bind_input(names, args, kwargs)?;
    Ok(match func {
        "simpleTask" => Call::Simple(arg(&mut v, 0, "x")?),
        "addJobs" => Call::AddJobs(arg(&mut v, 0, "x")?),
        "addSubJob" => Call::AddSubJob(arg(&mut v, 0, "x")?),
        "addChain" => {
            let n: u32 = arg(&mut v, 0, "n")?;
            if n == 0 {
                return Err("parameter `n`: must be at least 1".into());
            }
            Call::AddChain(n)
        }
        "expand" => Call::Expand(arg(&mut v, 0, "depth")?, arg(&mut v, 1, "fanout")?),
        "sum" => Call::Sum(v[0].take()),
        "echo" => Call::Echo(v[0].take()),
        "sleep_ms" => Call::Sleep(arg(&mut v, 0, "ms")?),
        "fail" => Call::Fail(arg(&mut v, 0, "message")?),
        "panic" => Call::Panic(arg(&mut v, 0, "message")?),
        "flaky" => Call::Flaky(arg(&mut v, 0, "n")?),
        _ => unreachable!("every name in FUNCTIONS is decoded"),
    })
}

/// The sum of every number in `value`; integers stay integers.
pub fn sum(value: &Value) -> Value {
    let (mut int, mut float, mut any_float) = (0i64, 0f64, false);
    let mut stack = vec![value];
    while let Some(v) = stack.pop() {
        match v {
            Value::Number(n) => match n.as_i64() {
                Some(i) => int = int.wrapping_add(i),
                None => {
                    any_float = true;
                    float += n.as_f64().unwrap_or(0.0);
                }
            },
            Value::Array(items) => stack.extend(items),
            Value::Object(map) => stack.extend(map.values()),
            _ => {}
        }
    }
    if any_float {
        json!(float + int as f64)
    } else {
        json!(int)
    }
}

impl Library {
    /// Calls `func` as attempt number `attempt`, with its input already
    /// mapped per SPEC 3. Bad input is a permanent failure naming the
    /// function and the serde message.
    pub fn call(
        &self,
        func: &str,
        args: Option<Value>,
        kwargs: Option<Map<String, Value>>,
        attempt: u32,
    ) -> Result<Output, Failure> {
        let call = decode(func, args, kwargs)
            .map_err(|e| Failure::permanent(format!("bad input for `{func}`: {e}")))?;
        let simple = |x: i64| Node::call("simpleTask", json!(x));
        Ok(match call {
            Call::Simple(x) => Output::value(json!(2 * x)),
            Call::AddJobs(x) => Output::with_nodes(
                json!(2 * x),
                (0..x).map(|i| simple(i64::from(2 * x + i))).collect(),
            ),
            Call::AddSubJob(x) => Output::with_group(
                json!(2 * x),
                (0..x).map(|i| simple(i64::from(2 * x + i))).collect(),
            ),
            Call::AddChain(n) => Output::with_nodes(
                json!(n),
                std::iter::once(simple(1))
                    .chain((1..n).map(|_| Node::after("simpleTask")))
                    .collect(),
            ),
            Call::Expand(depth, fanout) => {
                let nodes = if depth > 0 {
                    (0..fanout)
                        .map(|_| Node::call("expand", json!([depth - 1, fanout])))
                        .collect()
                } else {
                    Vec::new()
                };
                Output::with_nodes(json!(1), nodes)
            }
            Call::Sum(value) => Output::value(sum(&value)),
            Call::Echo(value) => Output::value(value),
            Call::Sleep(ms) => Output::value(json!(ms)),
            Call::Fail(message) => return Err(Failure::retryable(message)),
            Call::Panic(message) => return Err(Failure::retryable(format!("panicked: {message}"))),
            Call::Flaky(n) if attempt <= n => {
                return Err(Failure::retryable(format!(
                    "flaky: attempt {attempt} of {n} fails"
                )));
            }
            Call::Flaky(_) => Output::value(json!(attempt)),
        })
    }

    /// Runs one attempt as an engine would.
    pub fn run_attempt(&self, attempt: &Attempt) -> Result<Output, Failure> {
        self.call(
            &attempt.func,
            attempt.input.clone(),
            attempt.kwargs.clone(),
            attempt.number,
        )
    }
}

impl Catalog for Library {
    fn defaults(&self, func: &str) -> Option<&JobDefaults> {
        params(func).map(|_| {
            DEFAULTS.get_or_init(|| JobDefaults {
                backoff: crate::registry::Backoff::fixed(10),
                ..JobDefaults::default()
            })
        })
    }

    fn check_input(
        &self,
        func: &str,
        args: Option<&Value>,
        kwargs: Option<&Map<String, Value>>,
    ) -> Result<(), String> {
        decode(func, args.cloned(), kwargs.cloned()).map(|_| ())
    }
}

/// The order in which a [`Sim`] completes the attempts under way.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Order {
    /// The attempt begun first completes first.
    Fifo,
    /// The attempt begun last completes first.
    Lifo,
    /// A random attempt completes next, from this seed.
    Random(u64),
}

/// A deterministic driver of a [`Run`]: a virtual clock that advances one
/// microsecond per completion, the [`Library`] as its jobs, a chosen
/// completion order, and a replay of every report to check it is ignored.
#[derive(Debug)]
pub struct Sim {
    run: Run,
    now: u64,
    order: Order,
    rng: u64,
    in_flight: VecDeque<Attempt>,
    created_at: Vec<Time>,
    ended_at: Option<Time>,
    stops: Vec<(NodeId, u32)>,
    steps: usize,
}

impl Sim {
    /// A simulation of `project`, checked against the [`Library`].
    pub fn new(project: Project, order: Order) -> Result<Sim, Rejection> {
        let config = RunConfig {
            catalog: Some(std::sync::Arc::new(Library)),
            ..RunConfig::default()
        };
        Sim::with_config(project, config, order)
    }

    /// A simulation of `project` with `config`.
    pub fn with_config(
        project: Project,
        config: RunConfig,
        order: Order,
    ) -> Result<Sim, Rejection> {
        let run = Run::new(project, config, Time::ZERO)?;
        let created_at = vec![Time::ZERO; run.len()];
        let rng = match order {
            Order::Random(seed) => seed ^ 0x9e37_79b9_7f4a_7c15,
            _ => 0,
        };
        let mut sim = Sim {
            run,
            now: 0,
            order,
            rng,
            in_flight: VecDeque::new(),
            created_at,
            ended_at: None,
            stops: Vec::new(),
            steps: 0,
        };
        sim.drain_events();
        Ok(sim)
    }

    fn next_random(&mut self) -> u64 {
        // splitmix64
        self.rng = self.rng.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.rng;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn drain_events(&mut self) {
        while let Some(event) = self.run.poll_event() {
            match event {
                Event::Stop { job, attempt } => self.stops.push((job, attempt)),
                Event::Ended(_) => self.ended_at = Some(Time::from_micros(self.now)),
            }
        }
    }

    /// Runs until nothing is under way, ready or waiting for a retry, and
    /// panics if the project has not ended by then (SPEC 6.5) or a replayed
    /// report was applied (SPEC 7).
    pub fn run_until_idle(&mut self) -> &Run {
        while self.step() {}
        assert!(
            self.run.status().is_ended(),
            "the project is idle but has not ended: {:?}",
            self.run.counts()
        );
        assert!(self.run.is_settled());
        &self.run
    }

    /// Begins every ready job, then completes one attempt (or, with none
    /// under way, lets the clock reach the next retry). Returns `false` once
    /// nothing is left to do.
    pub fn step(&mut self) -> bool {
        while let Some(job) = self.run.poll_ready() {
            let now = Time::from_micros(self.now);
            let attempt = self.run.begin(job, now).expect("a ready job begins");
            self.in_flight.push_back(attempt);
        }
        if self.in_flight.is_empty() {
            let Some(at) = self.run.poll_timeout() else {
                return false;
            };
            self.now = (self.now + 1).max(at.as_micros());
            self.run.handle_timeout(Time::from_micros(self.now));
            return true;
        }
        let attempt = match self.order {
            Order::Fifo => self.in_flight.pop_front(),
            Order::Lifo => self.in_flight.pop_back(),
            Order::Random(_) => {
                let i = (self.next_random() % self.in_flight.len() as u64) as usize;
                self.in_flight.swap_remove_back(i)
            }
        }
        .expect("an attempt is under way");
        self.now += 1;
        self.steps += 1;
        let now = Time::from_micros(self.now);
        let outcome = Library.run_attempt(&attempt);
        let report = |run: &mut Run, outcome: Result<Output, Failure>| match outcome {
            Ok(output) => run.handle_success(attempt.job, attempt.number, output, now),
            Err(failure) => run.handle_failure(attempt.job, attempt.number, failure, now),
        };
        report(&mut self.run, outcome.clone()).expect("the report of the current attempt applies");
        self.created_at.resize(self.run.len(), now);
        let (nodes, counts) = (self.run.len(), self.run.counts());
        // A second report for the same attempt is ignored and changes nothing.
        let replay = report(&mut self.run, outcome);
        assert!(
            replay.is_err(),
            "a replayed report for {:?} was applied",
            attempt.job
        );
        assert_eq!(
            (nodes, counts),
            (self.run.len(), self.run.counts()),
            "a replayed report changed the run"
        );
        self.drain_events();
        true
    }

    /// Cancels the project at the current virtual time.
    pub fn cancel(&mut self) -> crate::run::CancelOutcome {
        let outcome = self.run.cancel();
        self.drain_events();
        outcome
    }

    /// The virtual time now.
    pub fn now(&self) -> Time {
        Time::from_micros(self.now)
    }

    /// The run being simulated.
    pub fn run(&self) -> &Run {
        &self.run
    }

    /// When a node came to exist: the submit for the tree's own nodes, the
    /// adding job's completion for appended ones.
    pub fn created_at(&self, node: NodeId) -> Time {
        self.created_at[node.0 as usize]
    }

    /// When the project ended, if it has.
    pub fn ended_at(&self) -> Option<Time> {
        self.ended_at
    }

    /// The attempts the run said to stop.
    pub fn stops(&self) -> &[(NodeId, u32)] {
        &self.stops
    }

    /// Completions applied so far.
    pub fn steps(&self) -> usize {
        self.steps
    }

    /// Checks every node's start against SPEC 2, from the recorded times: a
    /// node became ready exactly when the last of its parent's start, its
    /// list's last barrier (with everything before it), its previous node
    /// and its own creation came to pass; never, if that moment did not come
    /// before the project ended. Groups finish exactly when their list did.
    pub fn check_timing(&self) -> Result<(), String> {
        let run = &self.run;
        let ended = self.ended_at.map(|t| t.as_micros());
        let finished = run.status() == &Status::Finished;
        for node in run.nodes().skip(1) {
            let parent = run
                .node(node.parent().expect("not the root"))
                .expect("parent exists");
            let siblings: Vec<NodeId> = parent.children().collect();
            let i = node.index() as usize;
            let at = |id: NodeId| {
                run.node(id)
                    .and_then(|n| n.finished_at())
                    .map(Time::as_micros)
            };
            let mut need = vec![parent.started_at().map(Time::as_micros)];
            if let Some(b) = (0..i)
                .rev()
                .find(|&j| run.node(siblings[j]).is_some_and(|n| n.blocking()))
            {
                need.extend(siblings[..=b].iter().map(|&s| at(s)));
            }
            if node.takes_previous() {
                need.push(at(siblings[i - 1]));
            }
            need.push(Some(self.created_at(node.id()).as_micros()));
            let expected = need
                .into_iter()
                .collect::<Option<Vec<u64>>>()
                .map(|t| t.into_iter().max().unwrap_or(0));
            let expected = match (expected, ended) {
                (Some(t), Some(end)) if !finished && t >= end => None,
                (e, _) => e,
            };
            let actual = node.ready_at().map(Time::as_micros);
            if actual != expected {
                return Err(format!(
                    "node {} became ready at {actual:?}, SPEC 2 says {expected:?}",
                    node.path()
                ));
            }
            if finished && node.finished_at().is_none() {
                return Err(format!(
                    "node {} never finished in a finished project",
                    node.path()
                ));
            }
            if node.is_group() && node.finished_at().is_some() {
                let last = node
                    .children()
                    .map(at)
                    .chain([node.started_at().map(Time::as_micros)])
                    .collect::<Option<Vec<u64>>>()
                    .and_then(|t| t.into_iter().max());
                if last != node.finished_at().map(Time::as_micros) {
                    return Err(format!(
                        "group {} finished at {:?}, its list at {last:?}",
                        node.path(),
                        node.finished_at()
                    ));
                }
            }
        }
        Ok(())
    }
}

/// The result SPEC 4 gives `project`, computed by a plain sequential
/// interpreter of the tree with the [`Library`]; `None` when it fails.
///
/// It agrees with any engine on trees where no two jobs that add nodes to one
/// list can run at the same time, which the strategies here ensure; `expand`
/// is the exception that proves it harmless, as its nodes are alike.
pub fn interpret(project: &Project) -> Option<Value> {
    interpret_list(project.jobs.clone()).map(Value::Array)
}

fn interpret_list(mut list: Vec<Node>) -> Option<Vec<Value>> {
    let mut results: Vec<Value> = Vec::new();
    let mut i = 0;
    while i < list.len() {
        let node = list[i].clone();
        let result = match node.kind {
            NodeKind::Group(children) => Value::Array(interpret_list(children)?),
            NodeKind::Job(spec) => {
                let input = match spec.input {
                    Input::Args(v) => Some(v),
                    Input::Previous => Some(results[i - 1].clone()),
                    Input::None => None,
                };
                let attempts = spec.options.retries.unwrap_or(0) + 1;
                let mut outcome = None;
                for attempt in 1..=attempts {
                    match Library.call(&spec.func, input.clone(), spec.kwargs.clone(), attempt) {
                        Ok(output) => {
                            outcome = Some(output);
                            break;
                        }
                        Err(f) if !f.retryable => break,
                        Err(_) => {}
                    }
                }
                match outcome {
                    Some(output) => {
                        list.extend(output.append);
                        output.result
                    }
                    None if spec.options.allow_failure => Value::Null,
                    None => return None,
                }
            }
        };
        results.push(result);
        i += 1;
    }
    Some(results)
}

/// Whether `value` has the shape of the finished tree under `node`: an array
/// per group with one element per node of its list.
pub fn has_shape(run: &Run, node: NodeId, value: &Value) -> bool {
    let view = run.node(node).expect("node exists");
    if !view.is_group() {
        return true;
    }
    let Value::Array(items) = value else {
        return false;
    };
    let children: Vec<NodeId> = view.children().collect();
    items.len() == children.len()
        && children
            .iter()
            .zip(items)
            .all(|(&c, v)| has_shape(run, c, v))
}

/// proptest strategies over random projects built from the [`Library`].
pub mod strategies {
    use proptest::prelude::*;
    use serde_json::json;

    use crate::model::{Node, NodeKind, Project};

    fn adds(node: &Node) -> bool {
        node.as_job().is_some_and(|j| {
            matches!(
                j.func.as_str(),
                "addJobs" | "addSubJob" | "addChain" | "expand"
            )
        })
    }

    fn leaf(failures: bool) -> BoxedStrategy<Node> {
        let mut choices: Vec<BoxedStrategy<Node>> = vec![
            (0i64..50)
                .prop_map(|x| Node::call("simpleTask", json!(x)))
                .boxed(),
            Just(Node::after("simpleTask")).boxed(),
            Just(Node::after("sum")).boxed(),
            Just(Node::after("echo")).boxed(),
            (0u64..20)
                .prop_map(|ms| Node::call("sleep_ms", json!(ms)))
                .boxed(),
            (1u32..4)
                .prop_map(|x| Node::call("addJobs", json!(x)))
                .boxed(),
            (0u32..3)
                .prop_map(|x| Node::call("addSubJob", json!(x)))
                .boxed(),
            (1u32..4)
                .prop_map(|n| Node::call("addChain", json!(n)))
                .boxed(),
            (0u32..3, 1u32..3)
                .prop_map(|(d, f)| Node::call("expand", json!([d, f])))
                .boxed(),
            (0u32..3)
                .prop_map(|n| Node::call("flaky", json!(n)).with_options(|o| o.retries = Some(n)))
                .boxed(),
            Just(Node::call("fail", json!("allowed")).with_options(|o| o.allow_failure = true))
                .boxed(),
        ];
        if failures {
            choices.push(Just(Node::call("fail", json!("boom"))).boxed());
            choices.push(
                (1u32..3)
                    .prop_map(|n| {
                        Node::call("flaky", json!(n)).with_options(|o| o.retries = Some(n - 1))
                    })
                    .boxed(),
            );
        }
        proptest::strategy::Union::new(choices).boxed()
    }

    fn node(failures: bool) -> impl Strategy<Value = Node> {
        let leaf = (leaf(failures), any::<bool>()).prop_map(|(mut n, b)| {
            n.blocking = b && !adds(&n);
            n
        });
        leaf.prop_recursive(4, 48, 6, |inner| {
            (
                prop::collection::vec(inner, 0..6),
                prop::bool::weighted(0.3),
            )
                .prop_map(|(children, blocking)| Node::group(children).blocking_if(blocking))
        })
    }

    /// Random trees: nesting, barriers, `previousJobArgs`, jobs that add
    /// nodes, groups or chains while they run, retries and allowed failures;
    /// with `failures`, jobs that fail the project too. No two adding jobs of
    /// a list can overlap except `expand`, so every completion order gives
    /// one result.
    pub fn project(failures: bool) -> impl Strategy<Value = Project> {
        prop::collection::vec(node(failures), 0..8).prop_map(|mut jobs| {
            fix_list(&mut jobs);
            Project::new(jobs)
        })
    }

    /// Mends what a random list may get wrong: `previousJobArgs` on a first
    /// node, and adding jobs whose batches could interleave: at most one
    /// adding job per stretch between barriers, and none beside an `expand`
    /// (whose added nodes land in the open stretch and add more).
    fn fix_list(list: &mut [Node]) {
        let has_expand = list
            .iter()
            .any(|n| n.as_job().is_some_and(|j| j.func == "expand"));
        let mut adder_in_segment = false;
        for (i, node) in list.iter_mut().enumerate() {
            if i == 0 && node.takes_previous() {
                *node = Node::call("simpleTask", json!(i)).blocking_if(node.blocking);
            }
            let is_expand = node.as_job().is_some_and(|j| j.func == "expand");
            if adds(node) && !is_expand {
                if adder_in_segment || has_expand {
                    *node = Node::call("simpleTask", json!(i)).blocking_if(node.blocking);
                } else {
                    adder_in_segment = true;
                }
            }
            if let NodeKind::Group(children) = &mut node.kind {
                fix_list(children);
            }
            if node.blocking {
                adder_in_segment = false;
            }
        }
    }
}

/// The shared conformance cases (SPEC 10), and the checks every engine's
/// suite applies to its report of each.
pub mod conformance {
    use std::collections::BTreeMap;
    use std::path::{Path as FsPath, PathBuf};

    use serde::Deserialize;
    use serde_json::Value;

    use crate::report::Report;

    /// One case file.
    #[derive(Clone, Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    pub struct Case {
        /// What it shows.
        pub about: String,
        /// The project, in the JSON form.
        pub project: Value,
        /// `finished`, `failed`, `cancelled` or `rejected`.
        pub status: String,
        /// The result, when finished.
        #[serde(default)]
        pub result: Option<Value>,
        /// For each listed node, the nodes whose finishing it needs.
        #[serde(default)]
        pub waits_for: BTreeMap<String, Vec<String>>,
        /// Nodes that must never start.
        #[serde(default)]
        pub never_started: Vec<String>,
        /// The failure's path, when failed.
        #[serde(default)]
        pub failed_path: Option<String>,
        /// Text the error must contain: one string or several.
        #[serde(default)]
        pub error: Option<Value>,
    }

    impl Case {
        /// The texts the error must contain.
        pub fn error_needles(&self) -> Vec<String> {
            match &self.error {
                None | Some(Value::Null) => Vec::new(),
                Some(Value::String(s)) => vec![s.clone()],
                Some(Value::Array(items)) => items
                    .iter()
                    .map(|v| v.as_str().map_or_else(|| v.to_string(), str::to_owned))
                    .collect(),
                Some(other) => vec![other.to_string()],
            }
        }

        /// The project as JSON text.
        pub fn project_json(&self) -> Vec<u8> {
            serde_json::to_vec(&self.project).expect("a value serializes")
        }
    }

    /// The folder of case files: `$RQM_CONFORMANCE_DIR`, or `shared/conformance`
    /// beside the repository holding `manifest_dir`.
    pub fn dir(manifest_dir: &str) -> PathBuf {
        match std::env::var_os("RQM_CONFORMANCE_DIR") {
            Some(dir) => PathBuf::from(dir),
            None => FsPath::new(manifest_dir).join("../../shared/conformance"),
        }
    }

    /// Every case in `dir`, by file stem, sorted; panics, failing the suite,
    /// when the folder is missing, empty or holds a file that does not read.
    pub fn load(dir: &FsPath) -> Vec<(String, Case)> {
        let entries = std::fs::read_dir(dir).unwrap_or_else(|e| {
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
        files
            .into_iter()
            .map(|file| {
                let text = std::fs::read_to_string(&file)
                    .unwrap_or_else(|e| panic!("{}: {e}", file.display()));
                let case: Case = serde_json::from_str(&text)
                    .unwrap_or_else(|e| panic!("{}: {e}", file.display()));
                let name = file
                    .file_stem()
                    .expect("a file name")
                    .to_string_lossy()
                    .into_owned();
                (name, case)
            })
            .collect()
    }

    /// Checks that a rejection's text names every offending key or rule.
    pub fn check_rejection(case: &Case, text: &str) -> Result<(), String> {
        for needle in case.error_needles() {
            if !text.contains(&needle) {
                return Err(format!("the rejection does not mention {needle:?}: {text}"));
            }
        }
        Ok(())
    }

    /// Checks an engine's report of a case that was not rejected. Each node
    /// of `waits_for` must start no earlier than the last of its set finished
    /// and at most `slack_us` later (0 for a virtual clock).
    pub fn check_report(case: &Case, report: &Report, slack_us: u64) -> Result<(), String> {
        if report.status != case.status {
            return Err(format!(
                "status {}, expected {} (error: {:?})",
                report.status, case.status, report.error
            ));
        }
        if case.status == "finished"
            && let Some(expected) = &case.result
            && report.result.as_ref() != Some(expected)
        {
            return Err(format!("result {:?}, expected {expected}", report.result));
        }
        for (node, needs) in &case.waits_for {
            let started = report
                .node(node)
                .ok_or_else(|| format!("node {node} of waits_for does not exist"))?
                .started_us
                .ok_or_else(|| format!("node {node} never started"))?;
            let mut last = 0;
            for need in needs {
                let finished = report
                    .node(need)
                    .ok_or_else(|| format!("node {need}, which {node} waits for, does not exist"))?
                    .finished_us
                    .ok_or_else(|| {
                        format!("node {need}, which {node} waits for, never finished")
                    })?;
                last = last.max(finished);
            }
            if started < last {
                return Err(format!(
                    "node {node} started at {started} us, before {needs:?} had all finished ({last} us)"
                ));
            }
            if started > last + slack_us {
                return Err(format!(
                    "node {node} started at {started} us, {} us after {needs:?} had all finished ({last} us); allowed {slack_us} us",
                    started - last
                ));
            }
        }
        for node in &case.never_started {
            if let Some(started) = report.node(node).and_then(|n| n.started_us) {
                return Err(format!(
                    "node {node} started at {started} us, and must never have"
                ));
            }
        }
        if let Some(failed) = &case.failed_path {
            if report.failed_path.as_deref() != Some(failed.as_str()) {
                return Err(format!(
                    "the failure is at {:?}, expected {failed}",
                    report.failed_path
                ));
            }
            let error = report.error.as_deref().unwrap_or_default();
            for needle in case.error_needles() {
                if !error.contains(&needle) {
                    return Err(format!("the failure does not mention {needle:?}: {error}"));
                }
            }
        }
        Ok(())
    }
}
