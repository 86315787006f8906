//! The state machine of one project, without I/O or clocks.
//!
//! # Driving a [`Run`]
//!
//! 1. [`Run::new`] checks and compiles the project and starts its root.
//! 2. Take ready jobs with [`Run::poll_ready`]; [`Run::begin`] one to get its
//!    [`Attempt`] (function, input, options), and run it however you like.
//! 3. Report each attempt with [`Run::handle_success`] or
//!    [`Run::handle_failure`]; reports for an attempt that is not the current
//!    one are [`Ignored`] and change nothing (SPEC 7).
//! 4. Failed attempts wait for their backoff: call [`Run::handle_timeout`]
//!    once the time [`Run::poll_timeout`] names has come.
//! 5. Drain [`Run::poll_event`] after each call: it says which running jobs
//!    to stop and when the project ended.
//!
//! Time is a [`Time`] the driver passes in; the core never reads a clock.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, VecDeque};
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use serde_json::{Map, Value};

use crate::chunked::Chunked;
use crate::compile::{self, GraphSink, ListTail, Place};
use crate::error::{Ignored, Rejection};
use crate::graph::{Change, Graph, NIL, Role, VertexId};
use crate::model::{Input, JobOptions, JobSpec, Node, Path, Project};
use crate::output::Output;
use crate::registry::{Backoff, Catalog, JobDefaults};
use crate::validate::{Checker, Limits};

/// A point in time, in microseconds since an epoch the driver chooses.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Time(u64);

impl Time {
    /// The epoch.
    pub const ZERO: Time = Time(0);

    /// `micros` microseconds after the epoch.
    pub const fn from_micros(micros: u64) -> Self {
        Time(micros)
    }

    /// Microseconds since the epoch.
    pub const fn as_micros(self) -> u64 {
        self.0
    }

    /// This time plus `d`, saturating.
    pub fn after(self, d: Duration) -> Self {
        Time(
            self.0
                .saturating_add(u64::try_from(d.as_micros()).unwrap_or(u64::MAX)),
        )
    }
}

/// A node's index in its [`Run`]; stable for the run's life. The root is 0.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct NodeId(pub u32);

/// Where a node stands; in JSON and text, its name (`"finished"`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum NodeState {
    /// Waiting for its prerequisites (SPEC 2).
    Pending,
    /// A job free to start, not yet begun.
    Ready,
    /// A job attempt under way; a group that has started.
    Running,
    /// A job waiting out its backoff before its next attempt.
    Retrying,
    /// Done: a job that returned (or whose failure was allowed), a group
    /// whose list all finished.
    Finished,
    /// A job that failed for good.
    Failed,
}

impl NodeState {
    /// The state's name, as in status output.
    pub fn as_str(self) -> &'static str {
        match self {
            NodeState::Pending => "pending",
            NodeState::Ready => "ready",
            NodeState::Running => "running",
            NodeState::Retrying => "retrying",
            NodeState::Finished => "finished",
            NodeState::Failed => "failed",
        }
    }
}

impl fmt::Display for NodeState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(self.as_str())
    }
}

impl PartialEq<str> for NodeState {
    fn eq(&self, name: &str) -> bool {
        self.as_str() == name
    }
}

impl PartialEq<&str> for NodeState {
    fn eq(&self, name: &&str) -> bool {
        self.as_str() == *name
    }
}

/// Where the project stands (SPEC 6.5).
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Status {
    /// Not ended yet.
    Running,
    /// Every node finished.
    Finished,
    /// A job failed for good.
    Failed(FailedJob),
    /// Cancelled before it ended.
    Cancelled,
}

impl Status {
    /// The status's name: `running`, `finished`, `failed` or `cancelled`.
    pub fn as_str(&self) -> &'static str {
        match self {
            Status::Running => "running",
            Status::Finished => "finished",
            Status::Failed(_) => "failed",
            Status::Cancelled => "cancelled",
        }
    }

    /// Whether the project has ended.
    pub fn is_ended(&self) -> bool {
        !matches!(self, Status::Running)
    }
}

/// The job whose failure failed the project.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FailedJob {
    /// Its node.
    pub job: NodeId,
    /// Its path.
    pub path: Path,
    /// Its function.
    pub function: String,
    /// The error of its last attempt.
    pub error: String,
}

/// Why a job attempt failed, as its driver reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Failure {
    /// What went wrong, in words for the user.
    pub message: String,
    /// Whether another attempt could succeed; bad input and unknown functions
    /// are never retried (SPEC 6.1).
    pub retryable: bool,
}

impl Failure {
    /// A failure that the job's retries may overcome: an error returned, a
    /// panic, a timeout.
    pub fn retryable(message: impl Into<String>) -> Self {
        Failure {
            message: message.into(),
            retryable: true,
        }
    }

    /// A failure no retry can mend, such as bad input.
    pub fn permanent(message: impl Into<String>) -> Self {
        Failure {
            message: message.into(),
            retryable: false,
        }
    }
}

/// One attempt of a job, as handed to whoever runs it.
#[derive(Clone, Debug, PartialEq)]
pub struct Attempt {
    /// The job.
    pub job: NodeId,
    /// The attempt's number, from 1; reports name it.
    pub number: u32,
    /// The function to call.
    pub func: Arc<str>,
    /// The input: the args, the previous node's result, or `None`.
    pub input: Option<Value>,
    /// Named parameters beside the input.
    pub kwargs: Option<Map<String, Value>>,
    /// How long the attempt may run.
    pub timeout: Option<Duration>,
    /// The queue the job belongs to.
    pub queue: Arc<str>,
}

/// What the driver must act on, drained with [`Run::poll_event`].
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Event {
    /// Tell this running attempt to stop: the project failed or was cancelled.
    /// Its outcome is still recorded when it comes.
    Stop {
        /// The job.
        job: NodeId,
        /// Its running attempt.
        attempt: u32,
    },
    /// The project ended with this status.
    Ended(Status),
}

/// What [`Run::cancel`] did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CancelOutcome {
    /// The project is now cancelled.
    Cancelled,
    /// The project had already ended with this status; nothing changed.
    AlreadyEnded(Status),
}

/// How a run checks and compiles its nodes.
#[derive(Clone, Default)]
pub struct RunConfig {
    /// Bounds on the tree, appended nodes included.
    pub limits: Limits,
    /// The functions known; with one, unknown functions and inputs that do
    /// not fit are refused, and jobs take their function's defaults.
    pub catalog: Option<Arc<dyn Catalog + Send + Sync>>,
}

impl fmt::Debug for RunConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RunConfig")
            .field("limits", &self.limits)
            .field("catalog", &self.catalog.as_ref().map(|_| ".."))
            .finish()
    }
}

/// The queue of jobs that name none and whose function names none.
pub const DEFAULT_QUEUE: &str = "default";

const NEVER: u64 = u64::MAX;

const GROUP: u8 = 1;
const BLOCKING: u8 = 2;
const PREVIOUS: u8 = 4;

/// One node of the run. Jobs keep their args in `data` until they finish,
/// then their result.
struct NodeRec {
    parent: u32,
    index: u32,
    vertex: VertexId,
    /// A job's function id; a group's index in `groups`.
    info: u32,
    /// A job's options id.
    opts: u32,
    attempts: u32,
    flags: u8,
    state: NodeState,
    data: Value,
    ready_at: u64,
    started_at: u64,
    finished_at: u64,
}

struct GroupRec {
    children: Vec<u32>,
    tail: ListTail,
}

/// A job's options with its function's defaults filled in.
#[derive(Clone, PartialEq, Eq, Hash)]
struct Opts {
    retries: u32,
    backoff: Backoff,
    timeout_ms: Option<u64>,
    queue: Arc<str>,
    allow_failure: bool,
}

/// The state of one project: its compiled graph, every node's state, result
/// and times, and the queues a driver drains. See the module docs for the
/// call order.
pub struct Run {
    config: RunConfig,
    graph: Graph,
    nodes: Chunked<NodeRec>,
    groups: Vec<GroupRec>,
    funcs: Vec<(Arc<str>, Option<JobDefaults>)>,
    func_ids: HashMap<Arc<str>, u32>,
    opts: Vec<Opts>,
    opt_ids: HashMap<Opts, u32>,
    last_opts: Option<(u32, JobOptions, u32)>,
    last_func: Option<(Arc<str>, u32)>,
    kwargs: HashMap<u32, Map<String, Value>>,
    errors: HashMap<u32, String>,
    ready: VecDeque<NodeId>,
    timers: BinaryHeap<Reverse<(u64, u32, u32)>>,
    events: VecDeque<Event>,
    status: Status,
    running: usize,
    transitions: u64,
}

impl fmt::Debug for Run {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Run")
            .field("status", &self.status)
            .field("nodes", &self.nodes.len())
            .field("running", &self.running)
            .field("ready", &self.ready.len())
            .finish_non_exhaustive()
    }
}

impl Run {
    /// Checks `project` (SPEC 8, the limits, the catalog), compiles it and
    /// starts its root at `now`. A rejected project leaves nothing behind.
    pub fn new(project: Project, config: RunConfig, now: Time) -> Result<Run, Rejection> {
        let mut checker =
            Checker::new(&config.limits, config.catalog.as_deref().map(|c| c as _), 0);
        checker.check_list(&project.jobs, &Path::root(), 0, false, 1);
        checker.finish()?;
        Ok(Run::start_checked(project, config, now))
    }

    /// Reads a project from its JSON text (SPEC 8), checks it once against
    /// the config's limits and catalog while reading, compiles it and starts
    /// its root at `now`: what [`parse_project`](crate::parse_project) and
    /// [`Run::new`] do, without checking twice.
    pub fn from_json(json: &[u8], config: RunConfig, now: Time) -> Result<Run, Rejection> {
        let catalog = config.catalog.as_deref().map(|c| c as &dyn Catalog);
        let project = crate::json::parse_project(json, &config.limits, catalog)?;
        Ok(Run::start_checked(project, config, now))
    }

    /// Compiles a project already checked against `config` and starts it.
    fn start_checked(project: Project, config: RunConfig, now: Time) -> Run {
        let mut run = Run {
            config,
            graph: Graph::default(),
            nodes: Chunked::default(),
            groups: Vec::new(),
            funcs: Vec::new(),
            func_ids: HashMap::new(),
            opts: Vec::new(),
            opt_ids: HashMap::new(),
            last_opts: None,
            last_func: None,
            kwargs: HashMap::new(),
            errors: HashMap::new(),
            ready: VecDeque::new(),
            timers: BinaryHeap::new(),
            events: VecDeque::new(),
            status: Status::Running,
            running: 0,
            transitions: 0,
        };
        compile::compile_root(&mut RunSink(&mut run), project.jobs);
        run.settle(0, now);
        run
    }

    /// The next job free to start, in the order they became ready. Nothing
    /// is handed out once the project has ended.
    pub fn poll_ready(&mut self) -> Option<NodeId> {
        if self.status.is_ended() {
            self.ready.clear();
            return None;
        }
        self.ready.pop_front()
    }

    /// Starts an attempt of a ready job at `now`.
    pub fn begin(&mut self, job: NodeId, now: Time) -> Result<Attempt, Ignored> {
        let rec = self.job_rec(job)?;
        if self.status.is_ended() {
            return Err(Ignored::Ended(self.status.as_str()));
        }
        if rec.state != NodeState::Ready {
            return Err(Ignored::NotReady {
                path: self.path(job),
                state: rec.state,
            });
        }
        let input = if rec.flags & PREVIOUS != 0 {
            let group = &self.groups[self.nodes[rec.parent as usize].info as usize];
            Some(self.result_of(NodeId(group.children[rec.index as usize - 1])))
        } else if rec.data.is_null() {
            None
        } else {
            Some(rec.data.clone())
        };
        let opts = &self.opts[rec.opts as usize];
        let (timeout, queue) = (
            opts.timeout_ms.map(Duration::from_millis),
            opts.queue.clone(),
        );
        let func = self.funcs[rec.info as usize].0.clone();
        let rec = &mut self.nodes[job.0 as usize];
        rec.attempts += 1;
        rec.state = NodeState::Running;
        if rec.started_at == NEVER {
            rec.started_at = now.0;
        }
        self.running += 1;
        self.transitions += 1;
        Ok(Attempt {
            job,
            number: rec.attempts,
            func,
            input,
            kwargs: self.kwargs.get(&job.0).cloned(),
            timeout,
            queue,
        })
    }

    /// Applies a successful attempt: stores the result, appends the nodes it
    /// added (atomically with its completion, SPEC 5.4) and releases what
    /// became ready. Added nodes that break a rule fail the job instead, with
    /// every error in its message.
    pub fn handle_success(
        &mut self,
        job: NodeId,
        attempt: u32,
        output: Output,
        now: Time,
    ) -> Result<(), Ignored> {
        self.check_running(job, attempt)?;
        let first_new = self.graph.len();
        if !output.append.is_empty() {
            if let Err(rejection) = self.check_append(job, &output.append) {
                let failure =
                    Failure::permanent(format!("the nodes it added were refused: {rejection}"));
                self.fail_attempt(job, failure, now);
                return Ok(());
            }
            let parent = self.nodes[job.0 as usize].parent;
            let tail = self.groups[self.nodes[parent as usize].info as usize].tail;
            let next = self.nodes.len() as u32;
            compile::compile_append(&mut RunSink(self), parent, tail, output.append, next);
        }
        self.running -= 1;
        self.nodes[job.0 as usize].data = output.result;
        self.kwargs.remove(&job.0);
        self.finish_job(job, first_new, now);
        Ok(())
    }

    /// Applies a failed attempt: schedules a retry while attempts remain
    /// (SPEC 6.1), else finishes an `allow_failure` job with `null` or fails
    /// the project.
    pub fn handle_failure(
        &mut self,
        job: NodeId,
        attempt: u32,
        failure: Failure,
        now: Time,
    ) -> Result<(), Ignored> {
        self.check_running(job, attempt)?;
        self.fail_attempt(job, failure, now);
        Ok(())
    }

    /// When the next retry is due, if one waits and the project runs.
    pub fn poll_timeout(&self) -> Option<Time> {
        if self.status.is_ended() {
            return None;
        }
        self.timers.peek().map(|Reverse((at, _, _))| Time(*at))
    }

    /// Makes every job whose backoff has passed by `now` ready again.
    pub fn handle_timeout(&mut self, now: Time) {
        while let Some(&Reverse((at, job, attempts))) = self.timers.peek() {
            if at > now.0 || self.status.is_ended() {
                break;
            }
            self.timers.pop();
            let rec = &mut self.nodes[job as usize];
            if rec.state == NodeState::Retrying && rec.attempts == attempts {
                rec.state = NodeState::Ready;
                self.transitions += 1;
                self.ready.push_back(NodeId(job));
            }
        }
    }

    /// Cancels the project (SPEC 6.4): nothing starts afterwards and running
    /// jobs are told to stop.
    pub fn cancel(&mut self) -> CancelOutcome {
        if self.status.is_ended() {
            return CancelOutcome::AlreadyEnded(self.status.clone());
        }
        self.end(Status::Cancelled);
        CancelOutcome::Cancelled
    }

    /// The next thing the driver must act on.
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// The project's status.
    pub fn status(&self) -> &Status {
        &self.status
    }

    /// Whether the project has ended and no attempt is still out.
    pub fn is_settled(&self) -> bool {
        self.status.is_ended() && self.running == 0
    }

    /// The number of job attempts under way.
    pub fn running(&self) -> usize {
        self.running
    }

    /// The project's result, once it has finished (SPEC 4.3).
    pub fn result(&self) -> Option<Value> {
        (self.status == Status::Finished).then(|| self.result_of(NodeId(0)))
    }

    /// A node's result so far: a job's value (`null` until it finishes), a
    /// group's array of its list's results (SPEC 4).
    pub fn result_of(&self, node: NodeId) -> Value {
        let Some(rec) = self.nodes.get(node.0 as usize) else {
            return Value::Null;
        };
        if rec.flags & GROUP == 0 {
            return self.job_result(rec);
        }
        // Built without recursion: a frame per open group.
        let mut frames: Vec<(u32, usize, Vec<Value>)> = vec![(node.0, 0, Vec::new())];
        loop {
            let (group, next, values) = frames.last_mut().expect("a frame is open");
            let children = &self.groups[self.nodes[*group as usize].info as usize].children;
            if let Some(&child) = children.get(*next) {
                *next += 1;
                let child_rec = &self.nodes[child as usize];
                if child_rec.flags & GROUP == 0 {
                    values.push(self.job_result(child_rec));
                } else {
                    let len = self.groups[child_rec.info as usize].children.len();
                    frames.push((child, 0, Vec::with_capacity(len)));
                }
                continue;
            }
            let (_, _, done) = frames.pop().expect("a frame is open");
            match frames.last_mut() {
                Some((_, _, parent_values)) => parent_values.push(Value::Array(done)),
                None => return Value::Array(done),
            }
        }
    }

    fn job_result(&self, rec: &NodeRec) -> Value {
        if rec.state == NodeState::Finished {
            rec.data.clone()
        } else {
            Value::Null
        }
    }

    /// The number of nodes, the root included; ids run from 0 to this.
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    /// Whether the run has only its root.
    pub fn is_empty(&self) -> bool {
        self.nodes.len() <= 1
    }

    /// A view of one node.
    pub fn node(&self, node: NodeId) -> Option<NodeView<'_>> {
        let rec = self.nodes.get(node.0 as usize)?;
        Some(NodeView {
            run: self,
            id: node,
            rec,
        })
    }

    /// Every node, in id order: the tree's nodes depth first, then appended
    /// ones in the order they were added.
    pub fn nodes(&self) -> impl Iterator<Item = NodeView<'_>> + '_ {
        self.nodes.iter().enumerate().map(|(i, rec)| NodeView {
            run: self,
            id: NodeId(i as u32),
            rec,
        })
    }

    /// The node at `path`.
    pub fn find(&self, path: &Path) -> Option<NodeId> {
        let mut node = 0u32;
        for &index in path.indices() {
            let rec = &self.nodes[node as usize];
            if rec.flags & GROUP == 0 {
                return None;
            }
            node = *self.groups[rec.info as usize]
                .children
                .get(index as usize)?;
        }
        Some(NodeId(node))
    }

    /// The path of a node.
    pub fn path(&self, node: NodeId) -> Path {
        let mut indices = smallvec::SmallVec::<[u32; 4]>::new();
        let mut at = node.0;
        while let Some(rec) = self.nodes.get(at as usize) {
            if rec.parent == NIL {
                break;
            }
            indices.push(rec.index);
            at = rec.parent;
        }
        indices.reverse();
        Path::from_slice(&indices)
    }

    /// How many jobs are in each state.
    pub fn counts(&self) -> StateCounts {
        let mut counts = StateCounts::default();
        for rec in self.nodes.iter().filter(|r| r.flags & GROUP == 0) {
            *match rec.state {
                NodeState::Pending => &mut counts.pending,
                NodeState::Ready => &mut counts.ready,
                NodeState::Running => &mut counts.running,
                NodeState::Retrying => &mut counts.retrying,
                NodeState::Finished => &mut counts.finished,
                NodeState::Failed => &mut counts.failed,
            } += 1;
        }
        counts
    }

    /// State changes applied so far: jobs made ready, begun, finished or
    /// failed, groups started and finished.
    pub fn transitions(&self) -> u64 {
        self.transitions
    }

    /// Bytes the run holds on the heap for its nodes and graph, not counting
    /// what JSON values own.
    pub fn heap_bytes(&self) -> usize {
        self.nodes.heap_bytes()
            + self.graph.heap_bytes()
            + self
                .groups
                .iter()
                .map(|g| g.children.capacity() * 4 + std::mem::size_of::<GroupRec>())
                .sum::<usize>()
    }

    fn job_rec(&self, job: NodeId) -> Result<&NodeRec, Ignored> {
        let rec = self
            .nodes
            .get(job.0 as usize)
            .ok_or(Ignored::UnknownNode(job.0))?;
        if rec.flags & GROUP != 0 {
            return Err(Ignored::NotAJob {
                path: self.path(job),
            });
        }
        Ok(rec)
    }

    fn check_running(&self, job: NodeId, attempt: u32) -> Result<(), Ignored> {
        let rec = self.job_rec(job)?;
        if rec.state != NodeState::Running {
            return Err(Ignored::NotRunning {
                path: self.path(job),
                state: rec.state,
                attempt,
            });
        }
        if rec.attempts != attempt {
            return Err(Ignored::StaleAttempt {
                path: self.path(job),
                current: rec.attempts,
                attempt,
            });
        }
        Ok(())
    }

    fn check_append(&self, job: NodeId, nodes: &[Node]) -> Result<(), Rejection> {
        let parent = NodeId(self.nodes[job.0 as usize].parent);
        let next_index = self.groups[self.nodes[parent.0 as usize].info as usize]
            .children
            .len() as u32;
        let catalog = self.config.catalog.as_deref().map(|c| c as _);
        // The root is not a node of the tree, so it does not count.
        crate::validate::validate_append(
            nodes,
            &self.path(parent),
            next_index,
            self.nodes.len() - 1,
            &self.config.limits,
            catalog,
        )
    }

    fn fail_attempt(&mut self, job: NodeId, failure: Failure, now: Time) {
        self.running -= 1;
        self.transitions += 1;
        let (attempts, opts) = {
            let rec = &self.nodes[job.0 as usize];
            (rec.attempts, &self.opts[rec.opts as usize])
        };
        let retry = failure.retryable && attempts <= opts.retries && !self.status.is_ended();
        let allow = opts.allow_failure;
        let delay = opts.backoff.delay(attempts);
        self.errors.insert(job.0, failure.message);
        let rec = &mut self.nodes[job.0 as usize];
        if retry {
            rec.state = NodeState::Retrying;
            self.timers
                .push(Reverse((now.after(delay).0, job.0, attempts)));
            return;
        }
        if allow {
            rec.data = Value::Null;
            self.kwargs.remove(&job.0);
            let first_new = self.graph.len();
            self.finish_job(job, first_new, now);
            return;
        }
        rec.state = NodeState::Failed;
        rec.finished_at = now.0;
        let func = rec.info as usize;
        if !self.status.is_ended() {
            let failed = FailedJob {
                job,
                path: self.path(job),
                function: self.funcs[func].0.to_string(),
                error: self.errors[&job.0].clone(),
            };
            self.end(Status::Failed(failed));
        }
    }

    /// Marks a job finished at `now`, settles the vertices compiled from
    /// `first_new` on, and fires the job's vertex.
    fn finish_job(&mut self, job: NodeId, first_new: VertexId, now: Time) {
        let rec = &mut self.nodes[job.0 as usize];
        rec.state = NodeState::Finished;
        rec.finished_at = now.0;
        self.transitions += 1;
        let vertex = rec.vertex;
        self.settle_and_fire(first_new, Some(vertex), now);
    }

    fn settle(&mut self, first: VertexId, now: Time) {
        self.settle_and_fire(first, None, now);
    }

    /// Settles the vertices from `first` on, fires `job` if given, and
    /// applies every change that cascades, at `now`.
    fn settle_and_fire(&mut self, first: VertexId, job: Option<VertexId>, now: Time) {
        let ended = self.status.is_ended();
        let mut finished = Vec::new();
        let (nodes, ready, transitions) = (&mut self.nodes, &mut self.ready, &mut self.transitions);
        let mut on_change = |change: Change| {
            *transitions += 1;
            match change {
                // Once the project has ended nothing more starts.
                Change::JobReady(_) | Change::GroupStarted(_) if ended => {}
                Change::JobReady(node) => {
                    let rec = &mut nodes[node as usize];
                    rec.state = NodeState::Ready;
                    rec.ready_at = now.0;
                    ready.push_back(NodeId(node));
                }
                Change::GroupStarted(node) => {
                    let rec = &mut nodes[node as usize];
                    rec.state = NodeState::Running;
                    rec.ready_at = now.0;
                    rec.started_at = now.0;
                }
                Change::GroupFinished(node) => finished.push(node),
            }
        };
        self.graph.settle(first, &mut on_change);
        if let Some(vertex) = job {
            self.graph.finish_job(vertex, &mut on_change);
        }
        // Inner groups come first, so each sees its children's new states.
        for node in finished {
            // After an end a group finishes only if its whole list did.
            if ended && !self.list_finished(node) {
                continue;
            }
            let rec = &mut self.nodes[node as usize];
            rec.state = NodeState::Finished;
            rec.finished_at = now.0;
            if node == 0 && !self.status.is_ended() {
                self.end(Status::Finished);
            }
        }
    }

    fn list_finished(&self, group: u32) -> bool {
        let rec = &self.nodes[group as usize];
        rec.state == NodeState::Running
            && self.groups[rec.info as usize]
                .children
                .iter()
                .all(|&c| self.nodes[c as usize].state == NodeState::Finished)
    }

    fn end(&mut self, status: Status) {
        self.status = status.clone();
        self.ready.clear();
        if self.running > 0 {
            for (i, rec) in self.nodes.iter().enumerate() {
                if rec.state == NodeState::Running && rec.flags & GROUP == 0 {
                    self.events.push_back(Event::Stop {
                        job: NodeId(i as u32),
                        attempt: rec.attempts,
                    });
                }
            }
        }
        self.events.push_back(Event::Ended(status));
    }

    fn intern_func(&mut self, name: &str) -> u32 {
        // Lists of like jobs: the last function again.
        if let Some(&(ref last, id)) = self.last_func.as_ref()
            && **last == *name
        {
            return id;
        }
        if let Some(&id) = self.func_ids.get(name) {
            self.last_func = Some((self.funcs[id as usize].0.clone(), id));
            return id;
        }
        let name: Arc<str> = Arc::from(name);
        let defaults = self
            .config
            .catalog
            .as_ref()
            .and_then(|c| c.defaults(&name).cloned());
        let id = self.funcs.len() as u32;
        self.funcs.push((name.clone(), defaults));
        self.last_func = Some((name.clone(), id));
        self.func_ids.insert(name, id);
        id
    }

    fn intern_opts(&mut self, func: u32, options: JobOptions) -> u32 {
        if let Some((last_func, last_options, id)) = &self.last_opts
            && *last_func == func
            && *last_options == options
        {
            return *id;
        }
        let defaults = self.funcs[func as usize].1.clone().unwrap_or_default();
        let opts = Opts {
            retries: options.retries.unwrap_or(defaults.retries),
            backoff: options.backoff.unwrap_or(defaults.backoff),
            timeout_ms: options.timeout_ms.or(defaults.timeout_ms),
            queue: Arc::from(
                options
                    .queue
                    .as_deref()
                    .or(defaults.queue.as_deref())
                    .unwrap_or(DEFAULT_QUEUE),
            ),
            allow_failure: options.allow_failure,
        };
        let id = match self.opt_ids.get(&opts) {
            Some(&id) => id,
            None => {
                let id = self.opts.len() as u32;
                self.opts.push(opts.clone());
                self.opt_ids.insert(opts, id);
                id
            }
        };
        self.last_opts = Some((func, options, id));
        id
    }
}

/// Applies the compiler's steps to a run.
struct RunSink<'r>(&'r mut Run);

impl RunSink<'_> {
    fn push(&mut self, node: u32, place: Place, rec: NodeRec) {
        let run = &mut *self.0;
        debug_assert_eq!(
            node as usize,
            run.nodes.len(),
            "nodes are numbered in order"
        );
        if place.parent != compile::NO_PARENT {
            let group = run.nodes[place.parent as usize].info as usize;
            run.groups[group].children.push(node);
        }
        run.nodes.push(rec);
    }
}

fn flags(place: Place) -> u8 {
    let mut flags = 0;
    if place.blocking {
        flags |= BLOCKING;
    }
    if place.previous {
        flags |= PREVIOUS;
    }
    flags
}

impl GraphSink for RunSink<'_> {
    fn vertex(&mut self, role: Role, owner: u32) -> VertexId {
        self.0.graph.add(role, owner)
    }

    fn edge(&mut self, from: VertexId, to: VertexId) {
        self.0.graph.edge(from, to);
    }

    fn job(&mut self, node: u32, place: Place, vertex: VertexId, spec: JobSpec) {
        let run = &mut *self.0;
        if let Some(kwargs) = spec.kwargs {
            run.kwargs.insert(node, kwargs);
        }
        let func = run.intern_func(&spec.func);
        let opts = run.intern_opts(func, spec.options);
        let data = match spec.input {
            Input::Args(value) => value,
            Input::Previous | Input::None => Value::Null,
        };
        let rec = NodeRec {
            parent: place.parent,
            index: place.index,
            vertex,
            info: func,
            opts,
            attempts: 0,
            flags: flags(place),
            state: NodeState::Pending,
            data,
            ready_at: NEVER,
            started_at: NEVER,
            finished_at: NEVER,
        };
        self.push(node, place, rec);
    }

    fn group(&mut self, node: u32, place: Place, start: VertexId, end: VertexId, len: usize) {
        let run = &mut *self.0;
        let group = run.groups.len() as u32;
        run.groups.push(GroupRec {
            children: Vec::with_capacity(len),
            tail: ListTail {
                gate: start,
                segment: NIL,
                end,
                last: NIL,
                len: 0,
            },
        });
        let rec = NodeRec {
            parent: place.parent,
            index: place.index,
            vertex: start,
            info: group,
            opts: 0,
            attempts: 0,
            flags: flags(place) | GROUP,
            state: NodeState::Pending,
            data: Value::Null,
            ready_at: NEVER,
            started_at: NEVER,
            finished_at: NEVER,
        };
        self.push(node, place, rec);
    }

    fn tail(&mut self, group: u32, tail: ListTail) {
        let run = &mut *self.0;
        let g = run.nodes[group as usize].info as usize;
        run.groups[g].tail = tail;
    }
}

/// How many jobs are in each state.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct StateCounts {
    /// Waiting for prerequisites.
    pub pending: usize,
    /// Free to start.
    pub ready: usize,
    /// Under way.
    pub running: usize,
    /// Waiting out a backoff.
    pub retrying: usize,
    /// Done.
    pub finished: usize,
    /// Failed for good.
    pub failed: usize,
}

/// A read-only view of one node of a [`Run`].
#[derive(Clone, Copy)]
pub struct NodeView<'r> {
    run: &'r Run,
    id: NodeId,
    rec: &'r NodeRec,
}

impl fmt::Debug for NodeView<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NodeView")
            .field("path", &self.path())
            .field("function", &self.function())
            .field("state", &self.state())
            .field("attempts", &self.attempts())
            .finish_non_exhaustive()
    }
}

fn time(t: u64) -> Option<Time> {
    (t != NEVER).then_some(Time(t))
}

impl<'r> NodeView<'r> {
    /// The node's id.
    pub fn id(&self) -> NodeId {
        self.id
    }

    /// The node's path.
    pub fn path(&self) -> Path {
        self.run.path(self.id)
    }

    /// The parent group, or `None` for the root.
    pub fn parent(&self) -> Option<NodeId> {
        (self.rec.parent != NIL).then_some(NodeId(self.rec.parent))
    }

    /// The node's index in its list.
    pub fn index(&self) -> u32 {
        self.rec.index
    }

    /// Whether the node is a group.
    pub fn is_group(&self) -> bool {
        self.rec.flags & GROUP != 0
    }

    /// A job's function; `None` for a group.
    pub fn function(&self) -> Option<&'r str> {
        self.shared_function().map(|f| &**f)
    }

    /// A job's function, shared: cloning it copies no text.
    pub fn shared_function(&self) -> Option<&'r Arc<str>> {
        (!self.is_group()).then(|| &self.run.funcs[self.rec.info as usize].0)
    }

    /// A group's list; empty for a job.
    pub fn children(&self) -> impl Iterator<Item = NodeId> + 'r {
        let list: &'r [u32] = if self.is_group() {
            &self.run.groups[self.rec.info as usize].children
        } else {
            &[]
        };
        list.iter().map(|&c| NodeId(c))
    }

    /// Whether the node is a barrier for its list.
    pub fn blocking(&self) -> bool {
        self.rec.flags & BLOCKING != 0
    }

    /// Whether the job takes the previous node's result.
    pub fn takes_previous(&self) -> bool {
        self.rec.flags & PREVIOUS != 0
    }

    /// The node's state.
    pub fn state(&self) -> NodeState {
        self.rec.state
    }

    /// Attempts begun.
    pub fn attempts(&self) -> u32 {
        self.rec.attempts
    }

    /// The error of the job's last failed attempt, kept even when a retry
    /// or `allow_failure` finished it.
    pub fn error(&self) -> Option<&'r str> {
        self.run.errors.get(&self.id.0).map(String::as_str)
    }

    /// When the node became ready (a group: when it started).
    pub fn ready_at(&self) -> Option<Time> {
        time(self.rec.ready_at)
    }

    /// When the job's first attempt began (a group: when it started).
    pub fn started_at(&self) -> Option<Time> {
        time(self.rec.started_at)
    }

    /// When the node finished, or its job failed for good.
    pub fn finished_at(&self) -> Option<Time> {
        time(self.rec.finished_at)
    }

    /// The node's result so far (SPEC 4).
    pub fn result(&self) -> Value {
        self.run.result_of(self.id)
    }
}
