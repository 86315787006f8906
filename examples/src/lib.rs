//! Runnable examples of rqm and the conformance job library of the SPEC,
//! written with `#[job]` once the macros land.
