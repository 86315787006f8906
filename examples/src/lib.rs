//! Runnable examples of rqm, and the conformance job library of the SPEC
//! (section 9) written with `#[job]`, which the `rqm-worker` binary of this
//! crate links so that it can run every conformance case.

pub mod library;
pub mod seeds;
