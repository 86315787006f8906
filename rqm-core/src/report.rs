//! A project's status as data: what every engine's `status` and `wait`
//! return, and what the command line prints as JSON.

use std::sync::Arc;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::error::Rejection;
use crate::model::Path;
use crate::run::{NodeState, Run, StateCounts, Status};

/// Where a project stands, with every node.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Report {
    /// `running`, `finished`, `failed`, `cancelled` or `rejected`.
    pub status: String,
    /// The project's result, once finished.
    pub result: Option<Value>,
    /// The job whose failure failed the project.
    pub failed_path: Option<String>,
    /// The failure's error, or the rejection's errors.
    pub error: Option<String>,
    /// How many jobs are in each state.
    pub counts: StateCounts,
    /// Every node but the root, in path order.
    pub nodes: Vec<NodeReport>,
}

/// One node's status.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct NodeReport {
    /// Its path.
    pub path: Path,
    /// A job's function; `null` for a group.
    pub function: Option<Arc<str>>,
    /// Its state.
    pub state: NodeState,
    /// Attempts begun.
    pub attempts: u32,
    /// The last failed attempt's error.
    pub error: Option<String>,
    /// When it started, in microseconds since the project was submitted.
    pub started_us: Option<u64>,
    /// When it finished, in microseconds since the project was submitted.
    pub finished_us: Option<u64>,
}

impl Report {
    /// The report of `run`, whose times count from its submit.
    pub fn of(run: &Run) -> Report {
        let (failed_path, error) = match run.status() {
            Status::Failed(f) => (
                Some(f.path.to_string()),
                Some(format!(
                    "job {} ({}) failed: {}",
                    f.path, f.function, f.error
                )),
            ),
            _ => (None, None),
        };
        let mut nodes: Vec<NodeReport> = run
            .nodes()
            .skip(1)
            .map(|n| NodeReport {
                path: n.path(),
                function: n.shared_function().cloned(),
                state: n.state(),
                attempts: n.attempts(),
                error: n.error().map(str::to_owned),
                started_us: n.started_at().map(|t| t.as_micros()),
                finished_us: n.finished_at().map(|t| t.as_micros()),
            })
            .collect();
        // Ids follow paths but for appended nodes: often sorted already.
        if !nodes.is_sorted_by(|a, b| a.path <= b.path) {
            nodes.sort_by(|a, b| a.path.cmp(&b.path));
        }
        Report {
            status: run.status().as_str().to_owned(),
            result: run.result(),
            failed_path,
            error,
            counts: run.counts(),
            nodes,
        }
    }

    /// The report of a project refused at submit.
    pub fn rejected(rejection: &Rejection) -> Report {
        Report {
            status: "rejected".to_owned(),
            result: None,
            failed_path: None,
            error: Some(rejection.to_string()),
            counts: StateCounts::default(),
            nodes: Vec::new(),
        }
    }

    /// The node at `path`, if the project has one.
    pub fn node(&self, path: &str) -> Option<&NodeReport> {
        self.nodes.iter().find(|n| n.path.to_string() == path)
    }
}
