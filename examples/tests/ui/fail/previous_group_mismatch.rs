use rqm_core::{job, project};

#[job]
fn num(x: i64) -> i64 {
    x
}

#[job]
fn texts(s: Vec<String>) -> usize {
    s.len()
}

fn main() {
    let _ = project![[num(1), num(2)], previous_args texts()];
}
