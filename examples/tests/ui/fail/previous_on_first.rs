use rqm_core::{job, project};

#[job]
fn num(x: i64) -> i64 {
    x
}

fn main() {
    let _ = project![previous_args num(), [previous_args num()]];
}
