//! The six seed examples of rq-manager, written with `project!`, each with
//! the result it must finish with.

use rqm_core::{Project, project};
use serde_json::{Value, json};

use crate::library::{add_jobs, add_sub_job, simple_task};

/// Each seed example: its name, the project, and its expected result.
pub fn seeds() -> Vec<(&'static str, Project, Value)> {
    vec![
        (
            "parallel",
            project![simple_task(1), simple_task(2)],
            json!([2, 4]),
        ),
        (
            "series",
            project![blocking simple_task(1), simple_task(2)],
            json!([2, 4]),
        ),
        (
            "previous_args",
            project![simple_task(1), previous_args simple_task(), simple_task(3)],
            json!([2, 4, 6]),
        ),
        (
            "multiple_dependency",
            project![blocking [simple_task(1), simple_task(2)], simple_task(3)],
            json!([[2, 4], 6]),
        ),
        (
            "add_jobs",
            project![blocking [simple_task(1), add_jobs(2)], simple_task(3)],
            json!([[2, 4, 8, 10], 6]),
        ),
        (
            "add_sub_job",
            project![blocking [simple_task(1), add_sub_job(2)], simple_task(2)],
            json!([[2, 4, [8, 10]], 4]),
        ),
    ]
}
