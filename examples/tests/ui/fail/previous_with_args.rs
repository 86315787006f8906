use rqm_core::{job, project};

#[job]
fn num(x: i64) -> i64 {
    x
}

fn main() {
    let _ = project![num(1), previous_args num(2)];
}
