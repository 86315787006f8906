//! The project tree as plain data: what a user writes, before it is compiled.

use std::fmt;
use std::str::FromStr;

use serde_json::{Map, Value};
use smallvec::SmallVec;

use crate::registry::Backoff;

/// A project: a tree of nodes handed to rqm to complete.
///
/// Its root is a group; `jobs` is the root group's list (SPEC 1).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Project {
    /// The root group's list, in order.
    pub jobs: Vec<Node>,
}

impl Project {
    /// A project whose root list is `jobs`.
    pub fn new(jobs: Vec<Node>) -> Self {
        Project { jobs }
    }

    /// The number of nodes in the tree, groups included, the root excluded.
    pub fn node_count(&self) -> usize {
        let mut count = 0;
        let mut stack: Vec<&[Node]> = vec![&self.jobs];
        while let Some(list) = stack.pop() {
            count += list.len();
            for node in list {
                if let NodeKind::Group(children) = &node.kind {
                    stack.push(children);
                }
            }
        }
        count
    }
}

/// One node of a tree: a job or a group, possibly a barrier for its list.
#[derive(Clone, Debug, PartialEq)]
pub struct Node {
    /// What the node is.
    pub kind: NodeKind,
    /// A blocking node is a barrier: later nodes of its list wait for it and
    /// for everything before it (SPEC 2.2).
    pub blocking: bool,
}

/// A job or a group.
#[derive(Clone, Debug, PartialEq)]
pub enum NodeKind {
    /// A registered function with its input.
    Job(JobSpec),
    /// An ordered list of child nodes.
    Group(Vec<Node>),
}

/// A job: which function to call, with what, and how.
#[derive(Clone, Debug, PartialEq)]
pub struct JobSpec {
    /// The registered function's name.
    pub func: String,
    /// Where the input comes from.
    pub input: Input,
    /// Parameters named beside the positional `args` (SPEC 3).
    pub kwargs: Option<Map<String, Value>>,
    /// Per-node options; unset ones take the function's defaults.
    pub options: JobOptions,
}

/// A job's input (SPEC 3).
#[derive(Clone, Debug, Default, PartialEq)]
pub enum Input {
    /// No input: the function takes no parameters, or only `kwargs`.
    #[default]
    None,
    /// A JSON value given in the project.
    Args(Value),
    /// The result of the node just before this one in its list.
    Previous,
}

/// Options of one job node; `None` means the function's default.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct JobOptions {
    /// Attempts after the first that a failing job gets.
    pub retries: Option<u32>,
    /// How long one attempt may run, in milliseconds.
    pub timeout_ms: Option<u64>,
    /// The waits between attempts.
    pub backoff: Option<Backoff>,
    /// The queue the job is sent to.
    pub queue: Option<String>,
    /// A job that fails for good finishes with `null` instead of failing the
    /// project (SPEC 6.3).
    pub allow_failure: bool,
}

impl Node {
    /// A job calling `func` with `input`.
    pub fn job(func: impl Into<String>, input: Input) -> Self {
        Node {
            kind: NodeKind::Job(JobSpec {
                func: func.into(),
                input,
                kwargs: None,
                options: JobOptions::default(),
            }),
            blocking: false,
        }
    }

    /// A job calling `func` with the JSON `args`.
    pub fn call(func: impl Into<String>, args: Value) -> Self {
        Node::job(func, Input::Args(args))
    }

    /// A job calling `func` with the previous node's result.
    pub fn after(func: impl Into<String>) -> Self {
        Node::job(func, Input::Previous)
    }

    /// A group of `children`.
    pub fn group(children: Vec<Node>) -> Self {
        Node {
            kind: NodeKind::Group(children),
            blocking: false,
        }
    }

    /// This node, marked as a barrier for its list.
    pub fn blocking(mut self) -> Self {
        self.blocking = true;
        self
    }

    /// This node, blocking when `blocking` is set.
    pub fn blocking_if(mut self, blocking: bool) -> Self {
        self.blocking = blocking;
        self
    }

    /// This job with `kwargs` set; a group is returned unchanged.
    pub fn with_kwargs(mut self, kwargs: Map<String, Value>) -> Self {
        if let NodeKind::Job(spec) = &mut self.kind {
            spec.kwargs = Some(kwargs);
        }
        self
    }

    /// This job with its options changed by `f`; a group is returned unchanged.
    pub fn with_options(mut self, f: impl FnOnce(&mut JobOptions)) -> Self {
        if let NodeKind::Job(spec) = &mut self.kind {
            f(&mut spec.options);
        }
        self
    }

    /// The job's spec, if this node is a job.
    pub fn as_job(&self) -> Option<&JobSpec> {
        match &self.kind {
            NodeKind::Job(spec) => Some(spec),
            NodeKind::Group(_) => None,
        }
    }

    /// Whether this node takes the previous node's result.
    pub fn takes_previous(&self) -> bool {
        matches!(
            &self.kind,
            NodeKind::Job(JobSpec {
                input: Input::Previous,
                ..
            })
        )
    }
}

/// A node's address: the indices from the root, shown joined by dots
/// (`"0"`, `"2.1"`); the root's path is empty (SPEC 1). Paths up to four
/// deep are held inline: making or cloning one allocates nothing.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Path(SmallVec<[u32; 4]>);

impl Path {
    /// The root's path.
    pub fn root() -> Self {
        Path(SmallVec::new())
    }

    /// A path from its indices.
    pub fn from_indices(indices: Vec<u32>) -> Self {
        Path(SmallVec::from_vec(indices))
    }

    /// A path from its indices, as a slice.
    pub fn from_slice(indices: &[u32]) -> Self {
        Path(SmallVec::from_slice(indices))
    }

    /// The indices from the root.
    pub fn indices(&self) -> &[u32] {
        &self.0
    }

    /// The path of child `index` of this node.
    pub fn child(&self, index: u32) -> Self {
        let mut indices = self.0.clone();
        indices.push(index);
        Path(indices)
    }

    /// The parent's path, or `None` for the root.
    pub fn parent(&self) -> Option<Self> {
        let (_, rest) = self.0.split_last()?;
        Some(Path::from_slice(rest))
    }

    /// Whether this is the root's path.
    pub fn is_root(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Display for Path {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, index) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(".")?;
            }
            write!(f, "{index}")?;
        }
        Ok(())
    }
}

/// The error of parsing a [`Path`] from text.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("invalid path {text:?}: expected indices joined by dots, like \"0.2.1\"")]
pub struct ParsePathError {
    text: String,
}

impl FromStr for Path {
    type Err = ParsePathError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.is_empty() {
            return Ok(Path::root());
        }
        s.split('.')
            .map(|part| {
                // Reject "+1" and "01"-style spellings so each path has one text form.
                let canonical = !part.is_empty()
                    && part.bytes().all(|b| b.is_ascii_digit())
                    && (part == "0" || !part.starts_with('0'));
                canonical.then(|| part.parse::<u32>().ok()).flatten()
            })
            .collect::<Option<SmallVec<_>>>()
            .map(Path)
            .ok_or_else(|| ParsePathError { text: s.to_owned() })
    }
}

impl serde::Serialize for Path {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for Path {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = <std::borrow::Cow<'de, str>>::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}
