//! The `#[job]` attribute and the `project!` macro, re-exported by
//! `rqm-core`; users write `use rqm_core::{job, project}` and never name
//! this crate. Each macro parses, then validates (collecting every error with
//! its span), then expands; on error `#[job]` still emits the function.

use proc_macro::TokenStream;

mod job;
mod project;

/// Registers a function as a job. See `rqm_core`'s README for the full
/// reference: parameters, the job context, return types and options
/// (`name`, `retries`, `timeout_ms`, `queue`, `backoff_ms`,
/// `backoff_factor`, `backoff_max_ms`).
#[proc_macro_attribute]
pub fn job(attr: TokenStream, item: TokenStream) -> TokenStream {
    job::expand(attr.into(), item.into()).into()
}

/// Builds a `rqm_core::Project` from Rust syntax: `f(args)` is a job,
/// `[ ... ]` a group, `{ expr }` any node value; `blocking` and
/// `previous_args` prefix a node; `.retries(2)` and the other options
/// follow a job.
#[proc_macro]
pub fn project(input: TokenStream) -> TokenStream {
    project::expand(input.into()).into()
}
