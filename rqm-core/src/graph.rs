//! The counter graph: every vertex counts its unfinished prerequisites, and
//! finishing one decrements its dependents. Nothing here knows about trees;
//! the compiler in `run.rs` decides which vertices and edges a tree needs.

use crate::chunked::Chunked;

pub(crate) use crate::compile::{Role, VertexId};

/// "No vertex" / "no edge".
pub(crate) const NIL: u32 = crate::compile::NO_VERTEX;

#[derive(Clone, Copy, PartialEq, Eq)]
enum Phase {
    Waiting,
    /// A job with nothing pending, handed out to run but not finished.
    Released,
    Fired,
}

struct Vertex {
    pending: u32,
    head: u32,
    tail: u32,
    owner: u32,
    role: Role,
    phase: Phase,
}

struct Edge {
    to: VertexId,
    next: u32,
}

/// A change the graph reports to its owner.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Change {
    /// A job's prerequisites have all finished.
    JobReady(u32),
    /// A group started.
    GroupStarted(u32),
    /// A group finished.
    GroupFinished(u32),
}

/// Vertices with counters and out-edges, grown incrementally.
#[derive(Default)]
pub(crate) struct Graph {
    vertices: Chunked<Vertex>,
    edges: Chunked<Edge>,
    work: Vec<VertexId>,
}

impl Graph {
    /// Adds a vertex with nothing pending, standing for `owner` in `role`.
    pub(crate) fn add(&mut self, role: Role, owner: u32) -> VertexId {
        let id = self.vertices.len() as VertexId;
        self.vertices.push(Vertex {
            pending: 0,
            head: NIL,
            tail: NIL,
            owner,
            role,
            phase: Phase::Waiting,
        });
        id
    }

    /// The number of vertices; the id the next one will get.
    pub(crate) fn len(&self) -> VertexId {
        self.vertices.len() as VertexId
    }

    /// Makes `to` wait for `from`, unless `from` has already fired.
    pub(crate) fn edge(&mut self, from: VertexId, to: VertexId) {
        if self.vertices[from as usize].phase == Phase::Fired {
            return;
        }
        let edge = self.edges.len() as u32;
        self.edges.push(Edge { to, next: NIL });
        let source = &mut self.vertices[from as usize];
        if source.tail == NIL {
            source.head = edge;
        } else {
            self.edges[source.tail as usize].next = edge;
        }
        source.tail = edge;
        self.vertices[to as usize].pending += 1;
    }

    /// Fires the vertices from `first` on that have nothing pending and
    /// releases such jobs: the last step of compiling new vertices.
    pub(crate) fn settle(&mut self, first: VertexId, changes: &mut impl FnMut(Change)) {
        for v in first..self.len() {
            let vertex = &mut self.vertices[v as usize];
            if vertex.phase != Phase::Waiting || vertex.pending != 0 {
                continue;
            }
            if vertex.role == Role::Job {
                vertex.phase = Phase::Released;
                changes(Change::JobReady(vertex.owner));
            } else {
                self.fire_virtual(v, changes);
            }
        }
    }

    /// Fires a finished job's vertex and everything that cascades from it.
    pub(crate) fn finish_job(&mut self, v: VertexId, changes: &mut impl FnMut(Change)) {
        debug_assert_eq!(self.vertices[v as usize].role, Role::Job);
        self.vertices[v as usize].phase = Phase::Fired;
        self.work.push(v);
        self.cascade(changes);
    }

    fn fire_virtual(&mut self, v: VertexId, changes: &mut impl FnMut(Change)) {
        self.mark_fired(v, changes);
        self.work.push(v);
        self.cascade(changes);
    }

    fn mark_fired(&mut self, v: VertexId, changes: &mut impl FnMut(Change)) {
        let vertex = &mut self.vertices[v as usize];
        vertex.phase = Phase::Fired;
        match vertex.role {
            Role::GroupStart => changes(Change::GroupStarted(vertex.owner)),
            Role::GroupEnd => changes(Change::GroupFinished(vertex.owner)),
            Role::Segment | Role::Job => {}
        }
    }

    /// Decrements the dependents of every fired vertex on the work stack.
    fn cascade(&mut self, changes: &mut impl FnMut(Change)) {
        while let Some(v) = self.work.pop() {
            let mut edge = self.vertices[v as usize].head;
            while edge != NIL {
                let Edge { to, next } = self.edges[edge as usize];
                edge = next;
                let target = &mut self.vertices[to as usize];
                target.pending -= 1;
                if target.pending != 0 {
                    continue;
                }
                if target.role == Role::Job {
                    target.phase = Phase::Released;
                    changes(Change::JobReady(target.owner));
                } else {
                    self.mark_fired(to, changes);
                    self.work.push(to);
                }
            }
        }
    }

    /// Bytes held by the graph's arrays.
    pub(crate) fn heap_bytes(&self) -> usize {
        self.vertices.heap_bytes() + self.edges.heap_bytes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_vertex_fires_when_its_last_prerequisite_does() {
        let mut g = Graph::default();
        let start = g.add(Role::GroupStart, 0);
        let a = g.add(Role::Job, 1);
        let b = g.add(Role::Job, 2);
        let join = g.add(Role::Segment, 0);
        let end = g.add(Role::GroupEnd, 0);
        g.edge(start, a);
        g.edge(start, b);
        g.edge(a, join);
        g.edge(b, join);
        g.edge(join, end);
        let mut seen = Vec::new();
        g.settle(0, &mut |c| seen.push(c));
        assert_eq!(
            seen,
            [
                Change::GroupStarted(0),
                Change::JobReady(1),
                Change::JobReady(2)
            ]
        );
        seen.clear();
        g.finish_job(a, &mut |c| seen.push(c));
        assert!(seen.is_empty());
        g.finish_job(b, &mut |c| seen.push(c));
        assert_eq!(seen, [Change::GroupFinished(0)]);
        // An edge from a fired vertex adds nothing to wait for.
        let late = g.add(Role::Job, 3);
        g.edge(join, late);
        g.settle(late, &mut |c| seen.push(c));
        assert_eq!(seen.last(), Some(&Change::JobReady(3)));
    }

    #[test]
    fn long_cascades_do_not_recurse() {
        let mut g = Graph::default();
        let first = g.add(Role::Job, 0);
        let mut prev = first;
        for _ in 0..1_000_000 {
            let next = g.add(Role::Segment, 0);
            g.edge(prev, next);
            prev = next;
        }
        let end = g.add(Role::GroupEnd, 7);
        g.edge(prev, end);
        let mut seen = Vec::new();
        g.settle(0, &mut |c| seen.push(c));
        g.finish_job(first, &mut |c| seen.push(c));
        assert_eq!(seen, [Change::JobReady(0), Change::GroupFinished(7)]);
    }
}
