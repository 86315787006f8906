//! A worker binary linking the conformance job library: a user's worker is
//! the same three lines, plus one call that links their jobs' crate.

fn main() -> std::process::ExitCode {
    examples::library::link();
    rqm_worker::main()
}
