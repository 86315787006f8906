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
//!
//! A node's finish feeds its segment only when nothing after it does so
//! through it: when the next node takes its result (so waits for it) and
//! feeds the same segment, the edge would add nothing and is left out. A
//! chain of n `previousJobArgs` jobs then counts one segment down once, not
//! n times.

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
    /// The last node's finish, whose edge to the open segment waits on
    /// the next node (see the module docs).
    deferred: Option<VertexId>,
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
        RootCompiler {
            tail,
            next_node: 1,
            deferred: None,
        }
    }

    /// Compiles the next part of the root list.
    pub fn push<S: GraphSink>(&mut self, sink: &mut S, nodes: Vec<Node>) {
        let (next, tail, deferred) = compile_list(
            sink,
            0,
            self.tail,
            nodes,
            self.next_node,
            Some(self.deferred),
        );
        self.next_node = next;
        self.tail = tail;
        self.deferred = deferred;
    }

    /// The vertices that the root list's nodes still to come may add edges
    /// to or from: its gate, open segment, end and last node's finish (or
    /// [`NO_VERTEX`]). Every other vertex made so far is final.
    pub fn open_vertices(&self) -> [VertexId; 4] {
        let t = &self.tail;
        [t.gate, t.segment, t.end, t.last]
    }

    /// Ends the root list; returns the number of nodes made, the root
    /// included.
    pub fn finish<S: GraphSink>(self, sink: &mut S) -> u32 {
        if let Some(finish) = self.deferred {
            sink.edge(finish, self.tail.segment);
        }
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
    compile_list(sink, group, tail, nodes, next_node, None).0
}

/// [`compile_append`], giving the list's final tail too. With `root`
/// (the root list compiled in parts), the outer list is left open: its
/// tail is not reported and the finish whose segment edge waits on the
/// next node is handed in (`root`'s value) and back; otherwise every list
/// is closed here.
fn compile_list<S: GraphSink>(
    sink: &mut S,
    group: u32,
    tail: ListTail,
    nodes: Vec<Node>,
    mut next_node: u32,
    root: Option<Option<VertexId>>,
) -> (u32, ListTail, Option<VertexId>) {
    let mut outer = (tail, None);
    struct Frame {
        group: u32,
        tail: ListTail,
        nodes: std::vec::IntoIter<Node>,
        /// The last node's finish, whose edge to the open segment is not
        /// yet made.
        deferred: Option<VertexId>,
    }
    let mut stack = vec![Frame {
        group,
        tail,
        nodes: nodes.into_iter(),
        deferred: root.flatten(),
    }];
    while let Some(frame) = stack.last_mut() {
        let Some(node) = frame.nodes.next() else {
            let done = stack.pop().expect("a frame is open");
            if stack.is_empty() && root.is_some() {
                outer = (done.tail, done.deferred);
                continue;
            }
            if let Some(finish) = done.deferred {
                sink.edge(finish, done.tail.segment);
            }
            if stack.is_empty() {
                outer = (done.tail, None);
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
        // The node before feeds the segment through this one when this one
        // waits for it; else its own edge is made now.
        if let Some(before) = frame.deferred.take()
            && !place.previous
        {
            sink.edge(before, tail.segment);
        }
        if place.blocking {
            sink.edge(finish, tail.segment);
            let next = sink.vertex(Role::Segment, frame.group);
            sink.edge(tail.segment, next);
            sink.edge(next, tail.end);
            tail.gate = tail.segment;
            tail.segment = next;
        } else {
            frame.deferred = Some(finish);
        }
        tail.last = finish;
        tail.len += 1;
        if let Some((inner, children)) = inner {
            stack.push(Frame {
                group: id,
                tail: inner,
                nodes: children.into_iter(),
                deferred: None,
            });
        }
    }
    (next_node, outer.0, outer.1)
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
        /// Edges into each vertex.
        into: std::collections::HashMap<VertexId, usize>,
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
            *self.into.entry(to).or_default() += 1;
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
            // Each chained job's edge from the job before it stands for
            // that job's edge to their segment, which is left out.
            assert_eq!(
                count.edges,
                2 + 2 * n as usize + chained as usize + 2 * barriers as usize - chained as usize
            );
            assert_eq!((count.jobs, count.groups), (n as usize, 1));
            let (group, tail) = *count.tails.last().unwrap();
            assert_eq!((group, tail.len), (0, n));
        }
    }

    #[test]
    fn a_chain_feeds_its_segment_through_its_last_job() {
        // Root: start 0, segment 1, end 2, then a vertex per job.
        let chain: Vec<Node> = std::iter::once(Node::call("f", json!(0)))
            .chain((1..1000).map(|_| Node::after("f")))
            .collect();
        let mut count = Count::default();
        compile_root(&mut count, chain);
        assert_eq!(count.into[&1], 1 + 1, "the start and the last job");
        // A job that does not take its predecessor's result breaks the
        // chain: both chains' last jobs feed the segment.
        let broken = vec![
            Node::call("f", json!(0)),
            Node::after("f"),
            Node::call("f", json!(2)),
            Node::after("f"),
        ];
        let mut count = Count::default();
        compile_root(&mut count, broken);
        assert_eq!(count.into[&1], 1 + 2);
        // A barrier closes its segment: the job after it, though it takes
        // the barrier's result, feeds the next segment, and the barrier
        // feeds its own.
        let barrier = vec![Node::call("f", json!(0)).blocking(), Node::after("f")];
        let mut count = Count::default();
        compile_root(&mut count, barrier);
        assert_eq!(count.into[&1], 1 + 1, "the start and the barrier");
        // A group's last job feeds the group's own segment.
        let nested = vec![Node::group(vec![
            Node::call("f", json!(0)),
            Node::after("f"),
        ])];
        let mut count = Count::default();
        compile_root(&mut count, nested);
        assert_eq!(count.into[&1], 1 + 1, "the start and the group's end");
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
