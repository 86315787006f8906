use rqm_core::project;

fn main() {
    let _ = project![no_such_job(1)];
}
