//! What a job returns: its result, and any nodes it adds to its own list.

use serde_json::Value;

use crate::model::Node;

/// A job's successful outcome (SPEC 4.1 and 5).
///
/// Its JSON form is `{"result": …, "addJobs": [nodes]}`; see
/// [`parse_output`](crate::parse_output).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Output {
    /// The job's result.
    pub result: Value,
    /// Nodes appended, in order, to the end of the job's own list; a single
    /// appended group is one node here.
    pub append: Vec<Node>,
}

impl Output {
    /// An output with a result and nothing added.
    pub fn value(result: Value) -> Self {
        Output {
            result,
            append: Vec::new(),
        }
    }

    /// An output that adds `nodes` to the job's list.
    pub fn with_nodes(result: Value, nodes: Vec<Node>) -> Self {
        Output {
            result,
            append: nodes,
        }
    }

    /// An output that adds one group of `children` to the job's list.
    pub fn with_group(result: Value, children: Vec<Node>) -> Self {
        Output {
            result,
            append: vec![Node::group(children)],
        }
    }
}
