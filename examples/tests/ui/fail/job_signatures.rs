use rqm_core::job;

#[job]
fn generic<T>(x: T) -> i64 {
    let _ = x;
    1
}

#[job]
fn borrowed(s: &str) -> usize {
    s.len()
}

#[job]
fn pattern((a, b): (i64, i64)) -> i64 {
    a + b
}

#[job(retry = 2)]
fn misspelt(x: i64) -> i64 {
    x
}

#[job(name = "")]
fn unnamed(x: i64) -> i64 {
    x
}

fn main() {}
