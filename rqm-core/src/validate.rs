//! The rules of SPEC 8 that hold for any tree, however it was built.

use crate::error::{Rejection, ValidationError};
use crate::model::{Input, Node, NodeKind, Path, Project};
use crate::registry::Catalog;

/// Bounds on what a project may be, so that hostile or mistaken input is
/// refused with a clear error instead of exhausting a worker.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Deepest nesting of groups: nodes of the root list are at depth 1.
    pub max_depth: usize,
    /// Most nodes in one project, groups and appended nodes included.
    pub max_nodes: usize,
    /// Longest JSON text of a project, in bytes.
    pub max_bytes: usize,
    /// Deepest nesting of arrays and objects inside one `args` or `kwargs`
    /// value, or a job's result.
    pub max_value_depth: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_depth: 256,
            max_nodes: 1_000_000,
            max_bytes: 64 << 20,
            max_value_depth: 128,
        }
    }
}

/// Checks every rule of SPEC 8 that the tree's shape and the `catalog` can
/// tell, and reports every error found, not only the first.
pub fn validate(
    project: &Project,
    limits: &Limits,
    catalog: Option<&dyn Catalog>,
) -> Result<(), Rejection> {
    let mut checker = Checker::new(limits, catalog, 0);
    checker.check_list(&project.jobs, &Path::root(), 0, false, 1);
    checker.finish()
}

/// Checks `nodes` about to be appended to the list of the group at `group`,
/// taking indices from `first_index` on, in a project that holds `existing`
/// nodes: the rules of SPEC 8, the limits (appended nodes count) and the
/// catalog. The first appended node may take the previous result.
pub fn validate_append(
    nodes: &[Node],
    group: &Path,
    first_index: u32,
    existing: usize,
    limits: &Limits,
    catalog: Option<&dyn Catalog>,
) -> Result<(), Rejection> {
    let mut checker = Checker::new(limits, catalog, existing);
    checker.check_list(nodes, group, first_index, true, group.indices().len() + 1);
    checker.finish()
}

/// Walks lists of nodes, collecting errors.
pub(crate) struct Checker<'a> {
    limits: &'a Limits,
    catalog: Option<&'a dyn Catalog>,
    errors: Vec<ValidationError>,
    /// Nodes counted so far, including those that existed before.
    nodes: usize,
    too_many: bool,
    /// The function the last job checked named, when the catalog has it:
    /// lists of like jobs look it up once.
    known: String,
}

struct Frame<'n> {
    list: &'n [Node],
    next: usize,
    first_index: u32,
    has_previous: bool,
}

impl<'a> Checker<'a> {
    /// A checker for a project that already holds `existing` nodes.
    pub(crate) fn new(
        limits: &'a Limits,
        catalog: Option<&'a dyn Catalog>,
        existing: usize,
    ) -> Self {
        Checker {
            limits,
            catalog,
            errors: Vec::new(),
            nodes: existing,
            too_many: false,
            known: String::new(),
        }
    }

    /// Checks `list`, the nodes of the group at `group` that take indices
    /// from `first_index` on, at `depth`; `has_previous` says whether a node
    /// stands before the first of them.
    pub(crate) fn check_list(
        &mut self,
        list: &[Node],
        group: &Path,
        first_index: u32,
        has_previous: bool,
        depth: usize,
    ) {
        let mut path: Vec<u32> = group.indices().to_vec();
        let mut stack = vec![Frame {
            list,
            next: 0,
            first_index,
            has_previous,
        }];
        while let Some(frame) = stack.last_mut() {
            let Some(node) = frame.list.get(frame.next) else {
                stack.pop();
                if !stack.is_empty() {
                    path.pop();
                }
                continue;
            };
            let position = frame.next;
            frame.next += 1;
            let index = frame.first_index + position as u32;
            let first = position == 0 && !frame.has_previous;
            let node_depth = depth + stack.len() - 1;

            self.nodes += 1;
            if self.nodes > self.limits.max_nodes {
                if !self.too_many {
                    self.too_many = true;
                    self.errors.push(ValidationError::new(
                        Path::root(),
                        Some("max_nodes"),
                        format!(
                            "the project has more than {} nodes, the configured limit",
                            self.limits.max_nodes
                        ),
                    ));
                }
                return;
            }
            let node_path = || {
                let mut p = path.clone();
                p.push(index);
                Path::from_indices(p)
            };
            if node_depth > self.limits.max_depth {
                self.errors.push(ValidationError::new(
                    node_path(),
                    Some("max_depth"),
                    format!(
                        "groups are nested deeper than {} levels, the configured limit",
                        self.limits.max_depth
                    ),
                ));
                continue;
            }
            match &node.kind {
                NodeKind::Job(spec) => {
                    self.check_job(spec, first, &node_path);
                }
                NodeKind::Group(children) => {
                    path.push(index);
                    stack.push(Frame {
                        list: children,
                        next: 0,
                        first_index: 0,
                        has_previous: false,
                    });
                }
            }
        }
    }

    fn check_job(&mut self, spec: &crate::model::JobSpec, first: bool, path: &dyn Fn() -> Path) {
        if spec.input == Input::Previous && first {
            self.errors.push(ValidationError::new(
                path(),
                Some("previousJobArgs"),
                "`previousJobArgs` on the first node of a list: there is no previous node to take a result from",
            ));
        }
        if spec.func.is_empty() {
            self.errors.push(ValidationError::new(
                path(),
                Some("func"),
                "the function name is empty",
            ));
        }
        if spec.options.timeout_ms == Some(0) {
            self.errors.push(ValidationError::new(
                path(),
                Some("timeout_ms"),
                "`timeout_ms` must be at least 1; leave it out for no timeout",
            ));
        }
        if spec.options.queue.as_deref() == Some("") {
            self.errors.push(ValidationError::new(
                path(),
                Some("queue"),
                "the queue name is empty; leave `queue` out for the default queue",
            ));
        }
        let Some(catalog) = self.catalog else {
            return;
        };
        if spec.func.is_empty() {
            return;
        }
        if spec.func != self.known {
            if catalog.defaults(&spec.func).is_none() {
                self.errors.push(ValidationError::new(
                    path(),
                    Some("func"),
                    format!(
                        "no worker registers a function named `{}`; check the name or link the crate that defines it",
                        spec.func
                    ),
                ));
                return;
            }
            self.known.clone_from(&spec.func);
        }
        let args = match &spec.input {
            Input::Previous => return,
            Input::None => None,
            Input::Args(value) => Some(value),
        };
        if let Err(reason) = catalog.check_input(&spec.func, args, spec.kwargs.as_ref()) {
            self.errors.push(ValidationError::new(
                path(),
                Some(if args.is_none() && spec.kwargs.is_some() {
                    "kwargs"
                } else {
                    "args"
                }),
                format!("the input does not fit `{}`: {reason}", spec.func),
            ));
        }
    }

    /// Whether no error has been found so far.
    pub(crate) fn clean(&self) -> bool {
        self.errors.is_empty()
    }

    /// Errors found so far, taken out.
    pub(crate) fn take_errors(&mut self) -> Vec<ValidationError> {
        std::mem::take(&mut self.errors)
    }

    pub(crate) fn finish(mut self) -> Result<(), Rejection> {
        let errors = self.take_errors();
        if errors.is_empty() {
            Ok(())
        } else {
            Err(Rejection { errors })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn deep_model_trees_are_refused_without_recursion() {
        let mut node = Node::call("simpleTask", json!(1));
        for _ in 0..100_000 {
            node = Node::group(vec![node]);
        }
        let project = Project::new(vec![node]);
        let err = validate(&project, &Limits::default(), None).unwrap_err();
        assert_eq!(err.errors.len(), 1, "{err}");
        assert_eq!(err.errors[0].key.as_deref(), Some("max_depth"));
        assert_eq!(err.errors[0].path.indices().len(), 257);
        // Dropping a tree this deep recurses; leak it, as the test's point is
        // that validation itself does not.
        std::mem::forget(project);
    }

    #[test]
    fn every_error_is_reported() {
        let project = Project::new(vec![
            Node::after("simpleTask"),
            Node::group(vec![Node::after("x"), Node::call("", json!(1))]),
            Node::call("y", json!(1)).with_options(|o| o.timeout_ms = Some(0)),
        ]);
        let err = validate(&project, &Limits::default(), None).unwrap_err();
        let found: Vec<(String, Option<&str>)> = err
            .errors
            .iter()
            .map(|e| (e.path.to_string(), e.key.as_deref()))
            .collect();
        assert_eq!(
            found,
            [
                ("0".into(), Some("previousJobArgs")),
                ("1.0".into(), Some("previousJobArgs")),
                ("1.1".into(), Some("func")),
                ("2".into(), Some("timeout_ms")),
            ]
        );
    }

    #[test]
    fn node_limit_counts_groups() {
        let limits = Limits {
            max_nodes: 3,
            ..Limits::default()
        };
        let ok = Project::new(vec![
            Node::group(vec![Node::call("a", json!(1))]),
            Node::call("a", json!(1)),
        ]);
        assert!(validate(&ok, &limits, None).is_ok());
        let big = Project::new(vec![Node::group(vec![Node::call("a", json!(1)); 3])]);
        let err = validate(&big, &limits, None).unwrap_err();
        assert_eq!(err.errors.len(), 1);
        assert!(err.to_string().contains("more than 3 nodes"), "{err}");
    }
}
