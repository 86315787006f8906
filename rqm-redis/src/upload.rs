//! A compiled project as the bytes Redis stores: the vertex string and the
//! edge string that the Lua graph operations (`lua/graph.lua`) read.

use rqm_core::{GraphSink, JobSpec, ListTail, Place, Role, VertexId};

/// Bytes per vertex record.
pub const VERTEX_BYTES: usize = 24;

fn role_bits(role: Role) -> u32 {
    match role {
        Role::Job => 0,
        Role::GroupStart => 1,
        Role::GroupEnd => 2,
        _ => 3,
    }
}

/// Collects what the compiler makes for a new project.
#[derive(Debug, Default)]
pub struct GraphUpload {
    meta: Vec<u32>,
    out: Vec<Vec<u32>>,
    pending: Vec<u32>,
    job_vertex: Vec<Option<VertexId>>,
    jobs: Vec<(u32, JobSpec)>,
    tails: Vec<(u32, ListTail)>,
}

impl GraphUpload {
    /// The number of vertices.
    pub fn vertices(&self) -> usize {
        self.meta.len()
    }

    /// The vertex of job node `node`.
    pub fn job_vertex(&self, node: u32) -> Option<VertexId> {
        self.job_vertex.get(node as usize).copied().flatten()
    }

    /// Every job made, with its node id.
    pub fn jobs(&self) -> &[(u32, JobSpec)] {
        &self.jobs
    }

    /// Every list's final tail.
    pub fn tails(&self) -> &[(u32, ListTail)] {
        &self.tails
    }

    /// The vertex string and the edge string.
    pub fn encode(&self) -> (Vec<u8>, Vec<u8>) {
        let mut vx = Vec::with_capacity(self.meta.len() * VERTEX_BYTES);
        let mut ed = Vec::new();
        for (v, targets) in self.out.iter().enumerate() {
            let inline = |i: usize| targets.get(i).map_or(0, |t| t + 1);
            let (head, tail) = if targets.len() > 2 {
                let at = ed.len() as u32 + 1;
                let rest = &targets[2..];
                ed.extend_from_slice(&(rest.len() as u32).to_be_bytes());
                ed.extend_from_slice(&0u32.to_be_bytes());
                for t in rest {
                    ed.extend_from_slice(&t.to_be_bytes());
                }
                (at, at)
            } else {
                (0, 0)
            };
            for word in [
                self.pending[v],
                self.meta[v],
                inline(0),
                inline(1),
                head,
                tail,
            ] {
                vx.extend_from_slice(&word.to_be_bytes());
            }
        }
        (vx, ed)
    }
}

impl GraphSink for GraphUpload {
    fn vertex(&mut self, role: Role, owner: u32) -> VertexId {
        let id = self.meta.len() as VertexId;
        self.meta.push(role_bits(role) << 30 | owner);
        self.out.push(Vec::new());
        self.pending.push(0);
        id
    }

    fn edge(&mut self, from: VertexId, to: VertexId) {
        self.out[from as usize].push(to);
        self.pending[to as usize] += 1;
    }

    fn job(&mut self, node: u32, _place: Place, vertex: VertexId, spec: JobSpec) {
        let i = node as usize;
        if self.job_vertex.len() <= i {
            self.job_vertex.resize(i + 1, None);
        }
        self.job_vertex[i] = Some(vertex);
        self.jobs.push((node, spec));
    }

    fn group(&mut self, _: u32, _: Place, _: VertexId, _: VertexId, _: usize) {}

    fn tail(&mut self, group: u32, tail: ListTail) {
        self.tails.push((group, tail));
    }
}
