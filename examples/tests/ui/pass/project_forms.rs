use rqm_core::{Node, Outcome, job, project};
use serde_json::{Value, json};

#[job]
fn num(x: i64) -> i64 {
    2 * x
}

#[job]
fn float(x: f64) -> f64 {
    x
}

#[job]
fn maybe(x: Option<i64>) -> i64 {
    x.unwrap_or(0)
}

#[job]
fn pair(a: i64, b: i64) -> i64 {
    a + b
}

#[job]
fn list(xs: Vec<i64>) -> i64 {
    xs.iter().sum()
}

#[job]
fn any(v: Value) -> Value {
    v
}

#[job]
fn text(s: String) -> String {
    s
}

#[job]
fn grow(n: u32) -> Outcome<u32> {
    Outcome::new(n).append(num::job(1))
}

fn main() {
    let base = 3;
    let many: Vec<Node> = (0..3).map(|i| num::job(i).into()).collect();
    let project = project![
        num(1),
        previous_args num(),
        previous_args maybe(),
        previous_args float(),
        blocking num(base + 1),
        [num(1), num(2)],
        previous_args list(),
        [num(1), num(2)],
        previous_args pair(),
        [num(1), [num(2)]],
        previous_args any(),
        [grow(1), num(2)],
        previous_args pair(),
        [],
        previous_args list(),
        { Node::group(many) },
        previous_args any(),
        text("hi".to_string()).retries(2).timeout_ms(50).queue("q").allow_failure(),
        blocking [
            blocking num(7),
            num(8),
        ],
    ];
    let json = serde_json::to_value(&project).unwrap();
    assert_eq!(json["jobs"][0], json!({"func": "num", "args": 1}));
    assert_eq!(json["jobs"][1], json!({"func": "num", "previousJobArgs": true}));
    assert_eq!(json["jobs"][4], json!({"func": "num", "args": 4, "blocking": true}));
    assert_eq!(json["jobs"][5], json!({"jobs": [{"func": "num", "args": 1}, {"func": "num", "args": 2}]}));
    assert_eq!(json["jobs"][13], json!({"jobs": []}));
    assert_eq!(json["jobs"][15]["jobs"].as_array().unwrap().len(), 3);
    assert_eq!(
        json["jobs"][17],
        json!({"func": "text", "args": "hi", "retries": 2, "timeout_ms": 50, "queue": "q", "allow_failure": true})
    );
    assert_eq!(
        json["jobs"][18],
        json!({"jobs": [{"func": "num", "args": 7, "blocking": true}, {"func": "num", "args": 8}], "blocking": true})
    );
    assert_eq!(project.jobs.len(), 19);
    let empty = project![];
    assert!(empty.jobs.is_empty());
}
