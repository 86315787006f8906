//! Compile tests of `#[job]` and `project!`: every syntax form compiles and
//! means what it says; every rule the macros enforce fails to compile with
//! an error at the user's own token. Refresh the `.stderr` snapshots with
//! `TRYBUILD=overwrite cargo test -p examples --test macros`.

#[test]
fn macros() {
    let t = trybuild::TestCases::new();
    t.pass("tests/ui/pass/*.rs");
    t.compile_fail("tests/ui/fail/*.rs");
}
