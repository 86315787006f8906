//! The `#[job]` attribute and the `project!` macro, re-exported by
//! `rqm-core`; users never name this crate. They arrive with the macros
//! issue; until then the crate holds nothing.
