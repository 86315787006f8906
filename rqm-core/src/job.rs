//! What `#[job]` targets: typed node handles, the outcome a job returns, the
//! context a running job sees, and the registry of functions.

use std::collections::BTreeMap;
use std::fmt;
use std::future::Future;
use std::marker::PhantomData;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};

use serde::Serialize;
use serde_json::{Map, Value};

use crate::model::{Input, JobOptions, Node, Path};
use crate::output::Output;
use crate::registry::{Backoff, Catalog, JobDefaults};
use crate::run::Failure;

/// A job node whose function returns `O`, built by a `#[job]` function's
/// handle (`simple_task::job(1)`) without strings or JSON.
pub struct Job<O> {
    node: Node,
    _output: PhantomData<fn() -> O>,
}

impl<O> fmt::Debug for Job<O> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.node.fmt(f)
    }
}

impl<O> Clone for Job<O> {
    fn clone(&self) -> Self {
        Job {
            node: self.node.clone(),
            _output: PhantomData,
        }
    }
}

impl<O> Job<O> {
    /// A job of the function registered as `func`, with `input`.
    pub fn new(func: &str, input: Input) -> Self {
        Job {
            node: Node::job(func, input),
            _output: PhantomData,
        }
    }

    fn options(mut self, f: impl FnOnce(&mut JobOptions)) -> Self {
        self.node = self.node.with_options(f);
        self
    }

    /// Marks the job as a barrier for the rest of its list.
    pub fn blocking(mut self) -> Self {
        self.node.blocking = true;
        self
    }

    /// Attempts after the first, overriding the function's default.
    pub fn retries(self, retries: u32) -> Self {
        self.options(|o| o.retries = Some(retries))
    }

    /// How long one attempt may run, overriding the function's default.
    pub fn timeout_ms(self, ms: u64) -> Self {
        self.options(|o| o.timeout_ms = Some(ms))
    }

    /// The waits between attempts, overriding the function's default.
    pub fn backoff(self, backoff: Backoff) -> Self {
        self.options(|o| o.backoff = Some(backoff))
    }

    /// The queue the job goes to, overriding the function's default.
    pub fn queue(self, queue: impl Into<String>) -> Self {
        self.options(|o| o.queue = Some(queue.into()))
    }

    /// Lets the job fail without failing the project (SPEC 6.3).
    pub fn allow_failure(self) -> Self {
        self.options(|o| o.allow_failure = true)
    }

    /// Named parameters beside the positional input.
    pub fn kwargs(mut self, kwargs: Map<String, Value>) -> Self {
        self.node = self.node.with_kwargs(kwargs);
        self
    }

    /// The plain node.
    pub fn into_node(self) -> Node {
        self.node
    }
}

impl<O> From<Job<O>> for Node {
    fn from(job: Job<O>) -> Node {
        job.node
    }
}

/// What a job returns when it adds nodes to its own list (SPEC 5): its
/// result, and the nodes appended after it, in order.
#[derive(Clone, Debug)]
pub struct Outcome<T> {
    /// The job's result.
    pub result: T,
    /// The nodes appended to the job's list.
    pub nodes: Vec<Node>,
}

impl<T> Outcome<T> {
    /// An outcome with `result` and nothing added yet.
    pub fn new(result: T) -> Self {
        Outcome {
            result,
            nodes: Vec::new(),
        }
    }

    /// Appends one node (a job handle or a [`Node`]).
    pub fn append(mut self, node: impl Into<Node>) -> Self {
        self.nodes.push(node.into());
        self
    }

    /// Appends every node of `nodes`.
    pub fn append_all<N: Into<Node>>(mut self, nodes: impl IntoIterator<Item = N>) -> Self {
        self.nodes.extend(nodes.into_iter().map(Into::into));
        self
    }

    /// Appends one group of `children`, as a single node.
    pub fn append_group<N: Into<Node>>(mut self, children: impl IntoIterator<Item = N>) -> Self {
        self.nodes
            .push(Node::group(children.into_iter().map(Into::into).collect()));
        self
    }
}

/// A running attempt's view of itself: who it is, and whether to stop.
#[derive(Clone)]
pub struct JobContext {
    attempt: u32,
    project: Arc<str>,
    path: Path,
    function: &'static str,
    cancel: Cancellation,
    progress: Option<ProgressSink>,
}

/// Where an engine sends a running job's progress reports: called with the
/// reporting job's context and the value. One sink may serve every job of a
/// project.
pub type ProgressSink = Arc<dyn Fn(&JobContext, Value) + Send + Sync>;

impl fmt::Debug for JobContext {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JobContext")
            .field("attempt", &self.attempt)
            .field("project", &self.project)
            .field("path", &self.path.to_string())
            .field("function", &self.function)
            .field("cancelled", &self.is_cancelled())
            .finish()
    }
}

impl JobContext {
    /// A context; engines make these, tests may too.
    pub fn new(
        attempt: u32,
        project: Arc<str>,
        path: Path,
        function: &'static str,
        cancel: Cancellation,
    ) -> Self {
        JobContext {
            attempt,
            project,
            path,
            function,
            cancel,
            progress: None,
        }
    }

    /// This context, sending progress reports to `sink`.
    pub fn with_progress(mut self, sink: ProgressSink) -> Self {
        self.progress = Some(sink);
        self
    }

    /// The attempt's number, from 1.
    pub fn attempt(&self) -> u32 {
        self.attempt
    }

    /// The project's id.
    pub fn project(&self) -> &str {
        &self.project
    }

    /// The job's path in its project.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The function's registered name.
    pub fn function(&self) -> &'static str {
        self.function
    }

    /// Whether the job has been told to stop: its project failed or was
    /// cancelled, or its attempt timed out. Long synchronous jobs should
    /// check this and return early.
    pub fn is_cancelled(&self) -> bool {
        self.cancel.is_cancelled()
    }

    /// Completes when the job is told to stop.
    pub async fn cancelled(&self) {
        self.cancel.cancelled().await
    }

    /// Reports progress, any JSON value; engines publish it as an event.
    pub fn progress(&self, value: impl Serialize) {
        if let (Some(sink), Ok(value)) = (&self.progress, serde_json::to_value(value)) {
            sink(self, value);
        }
    }
}

/// A cooperative stop signal, shared by an engine and one attempt.
#[derive(Clone, Default)]
pub struct Cancellation {
    inner: Arc<CancelInner>,
}

#[derive(Default)]
struct CancelInner {
    flag: AtomicBool,
    event: event_listener::Event,
}

impl fmt::Debug for Cancellation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Cancellation")
            .field(&self.is_cancelled())
            .finish()
    }
}

impl Cancellation {
    /// A signal not yet given.
    pub fn new() -> Self {
        Cancellation::default()
    }

    /// Gives the signal; every waiter wakes.
    pub fn cancel(&self) {
        self.inner.flag.store(true, Ordering::SeqCst);
        self.inner.event.notify(usize::MAX);
    }

    /// Whether the signal was given.
    pub fn is_cancelled(&self) -> bool {
        self.inner.flag.load(Ordering::SeqCst)
    }

    /// Completes once the signal is given.
    pub async fn cancelled(&self) {
        loop {
            if self.is_cancelled() {
                return;
            }
            let listener = self.inner.event.listen();
            if self.is_cancelled() {
                return;
            }
            listener.await;
        }
    }
}

/// One call of a registered function.
#[derive(Debug)]
pub struct Invocation {
    /// The input: args, the previous result, or nothing.
    pub input: Option<Value>,
    /// Named parameters.
    pub kwargs: Option<Map<String, Value>>,
    /// The attempt's context.
    pub context: JobContext,
}

/// What a job's call gives back.
pub type JobResult = Result<Output, Failure>;

/// A boxed future of an async job.
pub type JobFuture = Pin<Box<dyn Future<Output = JobResult> + Send>>;

/// How a registered function is called.
#[derive(Clone, Copy)]
pub enum Call {
    /// A synchronous function: engines run it off the async threads.
    Blocking(fn(Invocation) -> JobResult),
    /// An async function.
    Async(fn(Invocation) -> JobFuture),
}

impl fmt::Debug for Call {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Call::Blocking(_) => "Call::Blocking",
            Call::Async(_) => "Call::Async",
        })
    }
}

/// Checks that `args` and `kwargs` decode into a function's parameters.
pub type InputCheck = fn(Option<&Value>, Option<&Map<String, Value>>) -> Result<(), String>;

/// A function registered with `#[job]`, gathered through `inventory`.
#[derive(Debug)]
pub struct JobFunction {
    /// The name projects call it by.
    pub name: &'static str,
    /// Where it is defined: `module::function (file:line)`.
    pub defined_at: &'static str,
    /// Its parameters' names, the job context not counted.
    pub params: &'static [&'static str],
    /// Default attempts after the first.
    pub retries: u32,
    /// Default backoff: initial ms, factor, max ms.
    pub backoff: Option<Backoff>,
    /// Default timeout of one attempt, in ms.
    pub timeout_ms: Option<u64>,
    /// Default queue.
    pub queue: Option<&'static str>,
    /// Checks that an input decodes into the parameters' types.
    pub check: InputCheck,
    /// Calls it.
    pub call: Call,
}

inventory::collect!(JobFunction);

/// Two functions registered under one name.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{}", describe_duplicates(.duplicates))]
pub struct RegistryError {
    /// Each name registered more than once, with where each registration is.
    pub duplicates: BTreeMap<&'static str, Vec<&'static str>>,
}

fn describe_duplicates(duplicates: &BTreeMap<&'static str, Vec<&'static str>>) -> String {
    duplicates
        .iter()
        .map(|(name, places)| {
            format!(
                "job name `{name}` is registered {} times: by {}; rename one with #[job(name = \"...\")]",
                places.len(),
                places.join(" and by ")
            )
        })
        .collect::<Vec<_>>()
        .join("; ")
}

/// A registered function with its defaults resolved.
#[derive(Debug)]
pub struct Registered {
    /// The registration.
    pub function: &'static JobFunction,
    /// Its defaults as the core takes them.
    pub defaults: JobDefaults,
}

/// The functions linked into this binary with `#[job]`, by name.
#[derive(Debug)]
pub struct Registry {
    functions: BTreeMap<&'static str, Registered>,
}

impl Registry {
    /// The registry of every `#[job]` linked into this binary, built on first
    /// use; refused if two functions share a name, naming both.
    pub fn global() -> Result<&'static Registry, RegistryError> {
        static GLOBAL: OnceLock<Result<Registry, RegistryError>> = OnceLock::new();
        GLOBAL
            .get_or_init(|| Registry::from_functions(inventory::iter::<JobFunction>))
            .as_ref()
            .map_err(Clone::clone)
    }

    /// A registry of `functions`, refused if two share a name.
    pub fn from_functions(
        functions: impl IntoIterator<Item = &'static JobFunction>,
    ) -> Result<Registry, RegistryError> {
        let mut by_name: BTreeMap<&'static str, Vec<&'static JobFunction>> = BTreeMap::new();
        for f in functions {
            by_name.entry(f.name).or_default().push(f);
        }
        let duplicates: BTreeMap<_, _> = by_name
            .iter()
            .filter(|(_, fs)| fs.len() > 1)
            .map(|(name, fs)| {
                let mut places: Vec<_> = fs.iter().map(|f| f.defined_at).collect();
                places.sort_unstable();
                (*name, places)
            })
            .collect();
        if !duplicates.is_empty() {
            return Err(RegistryError { duplicates });
        }
        let functions = by_name
            .into_iter()
            .map(|(name, fs)| {
                let function = fs[0];
                let defaults = JobDefaults {
                    retries: function.retries,
                    backoff: function.backoff.unwrap_or_default(),
                    timeout_ms: function.timeout_ms,
                    queue: function.queue.map(str::to_owned),
                };
                (name, Registered { function, defaults })
            })
            .collect();
        Ok(Registry { functions })
    }

    /// The function registered as `name`.
    pub fn get(&self, name: &str) -> Option<&Registered> {
        self.functions.get(name)
    }

    /// Every registered name, sorted.
    pub fn names(&self) -> impl Iterator<Item = &'static str> + '_ {
        self.functions.keys().copied()
    }
}

impl Catalog for Registry {
    fn defaults(&self, func: &str) -> Option<&JobDefaults> {
        self.get(func).map(|r| &r.defaults)
    }

    fn check_input(
        &self,
        func: &str,
        args: Option<&Value>,
        kwargs: Option<&Map<String, Value>>,
    ) -> Result<(), String> {
        match self.get(func) {
            Some(r) => (r.function.check)(args, kwargs),
            None => Err(format!("no function named `{func}`")),
        }
    }
}
