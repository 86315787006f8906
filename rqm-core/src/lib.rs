//! The heart of rqm: the project tree, its JSON form, validation, and the
//! pure state machine that decides what runs when.
//!
//! Nothing here does I/O, spawns tasks or reads a clock; engines drive a
//! [`Run`] and pass time in. The contract is the shared SPEC: a project is a
//! tree of jobs and groups; jobs of a list run in parallel, a `blocking` node
//! is a barrier for the rest of its list, a job may take the previous node's
//! result, a group finishes when its list has, and a running job may append
//! nodes to its own list.
//!
//! ```
//! use rqm_core::{Node, Output, Project, Run, RunConfig, Time};
//! use serde_json::json;
//!
//! let project = Project::new(vec![
//!     Node::call("double", json!(1)).blocking(),
//!     Node::after("double"),
//! ]);
//! let mut run = Run::new(project, RunConfig::default(), Time::ZERO).unwrap();
//! let mut now = Time::ZERO;
//! while let Some(job) = run.poll_ready() {
//!     let attempt = run.begin(job, now).unwrap();
//!     let x = attempt.input.unwrap().as_i64().unwrap();
//!     now = Time::from_micros(now.as_micros() + 1);
//!     run.handle_success(job, attempt.number, Output::value(json!(2 * x)), now).unwrap();
//! }
//! assert_eq!(run.result(), Some(json!([2, 4])));
//! ```

mod chunked;
mod compile;
mod error;
mod graph;
mod job;
mod json;
mod model;
mod output;
#[doc(hidden)]
pub mod __private {
    //! Reached by generated code only.
    pub use crate::private::*;
}
mod private;
mod registry;
mod report;
mod run;
#[cfg(feature = "testing")]
pub mod testing;
mod validate;

pub use compile::{
    GraphSink, ListTail, NO_PARENT, NO_VERTEX, Place, Role, RootCompiler, VertexId, compile_append,
    compile_root,
};
pub use error::{Ignored, Rejection, ValidationError};
pub use job::{
    Call, Cancellation, InputCheck, Invocation, Job, JobContext, JobFunction, JobFuture, JobResult,
    Outcome, ProgressSink, Registered, Registry, RegistryError,
};
pub use json::{parse_output, parse_project, parse_project_parts};
pub use model::{Input, JobOptions, JobSpec, Node, NodeKind, ParsePathError, Path, Project};
pub use output::Output;
pub use registry::{Backoff, Catalog, JobDefaults, bind_input};
pub use report::{NodeReport, Report};
pub use rqm_macros::{job, project};
pub use run::{
    Attempt, CancelOutcome, DEFAULT_QUEUE, Event, FailedJob, Failure, NodeId, NodeState, NodeView,
    Run, RunConfig, StateCounts, Status, Time,
};
pub use validate::{Limits, validate, validate_append};
