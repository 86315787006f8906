//! The compiler from trees to counter-graph operations, shared by every
//! engine: the in-memory [`Run`](crate::Run) applies them to its graph, the
//! Redis engine uploads them. All tree semantics (SPEC 2 and 5) live here.
//!
//! Every list is cut into *segments* at its barriers: a segment vertex
//! fires when its part of the list, and everything before it, has finished.
//! A node waits for its list's *gate* (the group's start, or the segment
//! that closes at the list's last barrier before it) and, with
//! `previousJobArgs`, for the node before it; its finish feeds the open
//! segment. A group's end waits for all its segments. So a list of n nodes
//! costs O(n) vertices and edges, and appending to a running list is an
//! incremental step against its [`ListTail`].

use crate::model::{JobSpec, Node, NodeKind};

/// A vertex's id in its graph, from 0.
pub type VertexId = u32;

/// No vertex: the `last` of an empty list, a root's parent.
pub const NO_VERTEX: u32 = u32::MAX;

/// What a vertex stands for. Jobs wait to be run and completed; the other
/// roles are virtual and fire as soon as nothing is pending.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Role {
    /// A job node: ready at zero, fired when it finishes.
    Job,
    /// A group starting: its list becomes eligible.
    GroupStart,
    /// A group finishing: every node of its list has finished.
    GroupEnd,
    /// A stretch of a list up to and including a barrier, or the open tail.
    Segment,
}

/// The end of a list, where appended nodes attach (SPEC 5).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ListTail {
    /// What a node added now waits for: the group's start, or the segment
    /// that closed at the list's last barrier.
    pub gate: VertexId,
    /// The open segment, which nodes after the last barrier finish into.
    pub segment: VertexId,
    /// The group's end.
    pub end: VertexId,
    /// The finish vertex of the list's last node, or [`NO_VERTEX`].
    pub last: VertexId,
    /// The list's length: the index the next node gets.
    pub len: u32,
}

/// Where a new node stands in the tree.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Place {
    /// Its group's node id.
    pub parent: u32,
    /// Its index in the group's list.
    pub index: u32,
    /// Whether it is a barrier.
    pub blocking: bool,
    /// Whether it takes the previous node's result.
    pub previous: bool,
}

/// Receives what the compiler makes, in order. Vertex ids are handed out by
/// the sink; node ids by the compiler, counting up from where it is told.
///
/// [`edge`](GraphSink::edge) has the graph's one rule: an edge from a vertex
/// that has already fired adds nothing to wait for. A new vertex left with
/// nothing pending fires (virtual) or is ready (a job) once the step is
/// applied.
pub trait GraphSink {
    /// A new vertex.
    fn vertex(&mut self, role: Role, owner: u32) -> VertexId;
    /// Makes `to` wait for `from`.
    fn edge(&mut self, from: VertexId, to: VertexId);
    /// A new job node, whose vertex is `vertex`.
    fn job(&mut self, node: u32, place: Place, vertex: VertexId, spec: JobSpec);
    /// A new group node, with its start and end vertices and the length of
    /// the list about to be compiled into it.
    fn group(&mut self, node: u32, place: Place, start: VertexId, end: VertexId, len: usize);
    /// The final tail of a group's list after this step.
    fn tail(&mut self, group: u32, tail: ListTail);
}

/// The parent of the root.
pub const NO_PARENT: u32 = u32::MAX;

fn open_group<S: GraphSink>(sink: &mut S, node: u32) -> ListTail {
    let start = sink.vertex(Role::GroupStart, node);
    let segment = sink.vertex(Role::Segment, node);
    let end = sink.vertex(Role::GroupEnd, node);
    sink.edge(start, segment);
    sink.edge(segment, end);
    ListTail {
        gate: start,
        segment,
        end,
        last: NO_VERTEX,
        len: 0,
    }
}

/// Compiles a project: the root group, node 0, whose start has nothing
/// pending, and its list `jobs`. Returns the number of nodes made.
pub fn compile_root<S: GraphSink>(sink: &mut S, jobs: Vec<Node>) -> u32 {
    let len = jobs.len();
    let mut root = RootCompiler::start(sink, len);
    root.push(sink, jobs);
    root.finish(sink)
}

/// Compiles a project's root list in parts, as it is read: each part goes
/// onto the end of the list, and the sink sees what [`compile_root`] of
/// the whole list would show it.
#[derive(Debug)]
pub struct RootCompiler {
    tail: ListTail,
    next_node: u32,
}

impl RootCompiler {
    /// Opens the root group, node 0, whose list will hold about `len` nodes
    /// (a hint).
    pub fn start<S: GraphSink>(sink: &mut S, len: usize) -> RootCompiler {
        let tail = open_group(sink, 0);
        let place = Place {
            parent: NO_PARENT,
            index: 0,
            blocking: false,
            previous: false,
        };
        sink.group(0, place, tail.gate, tail.end, len);
        RootCompiler { tail, next_node: 1 }
    }

    /// Compiles the next part of the root list.
    pub fn push<S: GraphSink>(&mut self, sink: &mut S, nodes: Vec<Node>) {
        let (next, tail) = compile_list(sink, 0, self.tail, nodes, self.next_node, false);
        self.next_node = next;
        self.tail = tail;
    }

    /// Ends the root list; returns the number of nodes made, the root
    /// included.
    pub fn finish<S: GraphSink>(self, sink: &mut S) -> u32 {
        sink.tail(0, self.tail);
        self.next_node
    }
}

/// Compiles `nodes` onto the end of `group`'s list, whose tail is `tail`,
/// numbering new nodes from `next_node`; returns the next free node id.
/// Iterative: depth costs heap, not stack.
pub fn compile_append<S: GraphSink>(
    sink: &mut S,
    group: u32,
    tail: ListTail,
    nodes: Vec<Node>,
    next_node: u32,
) -> u32 {
    compile_list(sink, group, tail, nodes, next_node, true).0
}

/// [`compile_append`], giving the list's final tail too, which the sink is
/// told of when `report` is set.
fn compile_list<S: GraphSink>(
    sink: &mut S,
    group: u32,
    tail: ListTail,
    nodes: Vec<Node>,
    mut next_node: u32,
    report: bool,
) -> (u32, ListTail) {
    let mut outer = tail;
    struct Frame {
        group: u32,
        tail: ListTail,
        nodes: std::vec::IntoIter<Node>,
    }
    let mut stack = vec![Frame {
        group,
        tail,
        nodes: nodes.into_iter(),
    }];
    while let Some(frame) = stack.last_mut() {
        let Some(node) = frame.nodes.next() else {
            let done = stack.pop().expect("a frame is open");
            if stack.is_empty() {
                outer = done.tail;
                if !report {
                    continue;
                }
            }
            sink.tail(done.group, done.tail);
            continue;
        };
        let id = next_node;
        next_node += 1;
        let place = Place {
            parent: frame.group,
            index: frame.tail.len,
            blocking: node.blocking,
            previous: node.takes_previous(),
        };
        let (start, finish, inner) = match node.kind {
            NodeKind::Job(spec) => {
                let v = sink.vertex(Role::Job, id);
                sink.job(id, place, v, spec);
                (v, v, None)
            }
            NodeKind::Group(children) => {
                let inner = open_group(sink, id);
                sink.group(id, place, inner.gate, inner.end, children.len());
                (inner.gate, inner.end, Some((inner, children)))
            }
        };
        let tail = &mut frame.tail;
        sink.edge(tail.gate, start);
        if place.previous {
            sink.edge(tail.last, start);
        }
        sink.edge(finish, tail.segment);
        if place.blocking {
            let next = sink.vertex(Role::Segment, frame.group);
            sink.edge(tail.segment, next);
            sink.edge(next, tail.end);
            tail.gate = tail.segment;
            tail.segment = next;
        }
        tail.last = finish;
        tail.len += 1;
        if let Some((inner, children)) = inner {
            stack.push(Frame {
                group: id,
                tail: inner,
                nodes: children.into_iter(),
            });
        }
    }
    (next_node, outer)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Node;
    use serde_json::json;

    /// Counts what the compiler makes.
    #[derive(Default)]
    struct Count {
        vertices: u32,
        edges: usize,
        jobs: usize,
        groups: usize,
        tails: Vec<(u32, ListTail)>,
    }

    impl GraphSink for Count {
        fn vertex(&mut self, _: Role, _: u32) -> VertexId {
            self.vertices += 1;
            self.vertices - 1
        }
        fn edge(&mut self, from: VertexId, to: VertexId) {
            assert!(
                from < self.vertices && to < self.vertices,
                "edges join existing vertices"
            );
            self.edges += 1;
        }
        fn job(&mut self, _: u32, _: Place, _: VertexId, _: JobSpec) {
            self.jobs += 1;
        }
        fn group(&mut self, _: u32, _: Place, _: VertexId, _: VertexId, _: usize) {
            self.groups += 1;
        }
        fn tail(&mut self, group: u32, tail: ListTail) {
            self.tails.push((group, tail));
        }
    }

    #[test]
    fn a_list_costs_linear_vertices_and_edges() {
        for n in [10u32, 1_000, 100_000] {
            let list: Vec<Node> = (0..n)
                .map(|i| match i % 10 {
                    4 => Node::after("f"),
                    9 => Node::call("f", json!(i)).blocking(),
                    _ => Node::call("f", json!(i)),
                })
                .collect();
            let mut count = Count::default();
            let nodes = compile_root(&mut count, list);
            let barriers = n / 10;
            let chained = n / 10;
            assert_eq!(nodes, n + 1);
            assert_eq!(count.vertices, 3 + n + barriers);
            assert_eq!(
                count.edges,
                2 + 2 * n as usize + chained as usize + 2 * barriers as usize
            );
            assert_eq!((count.jobs, count.groups), (n as usize, 1));
            let (group, tail) = *count.tails.last().unwrap();
            assert_eq!((group, tail.len), (0, n));
        }
    }

    #[test]
    fn appending_builds_on_the_tail_alone() {
        let mut count = Count::default();
        let next = compile_root(&mut count, vec![Node::call("f", json!(1)).blocking()]);
        let (_, tail) = count.tails[0];
        let before = (count.vertices, count.edges);
        let next = compile_append(
            &mut count,
            0,
            tail,
            vec![
                Node::after("f"),
                Node::group(vec![Node::call("f", json!(2))]),
            ],
            next,
        );
        assert_eq!(next, 5);
        // Two jobs' and a group's vertices; each node waits for the gate and
        // feeds the open segment, the chained one waits for the last node too.
        assert_eq!(count.vertices - before.0, 1 + 3 + 1);
        assert_eq!(count.edges - before.1, 3 + 2 + 2 + 2);
        let (group, appended) = *count.tails.last().unwrap();
        assert_eq!((group, appended.len, appended.gate), (0, 3, tail.gate));
    }
}
