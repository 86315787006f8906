//! A compiled project, or an appended batch, as the bytes and fields Redis
//! stores; see the key layout in the crate docs.

use std::collections::BTreeMap;

use rqm_core::{Catalog, GraphSink, Input, JobSpec, ListTail, NO_PARENT, Place, Role, VertexId};
use serde_json::{Value, json};

/// Bytes per vertex record.
pub const VERTEX_BYTES: usize = 24;
/// Bytes per node record.
pub const NODE_BYTES: usize = 32;

fn role_bits(role: Role) -> u32 {
    match role {
        Role::Job => 0,
        Role::GroupStart => 1,
        Role::GroupEnd => 2,
        _ => 3,
    }
}

/// A list tail as stored: `gate,segment,end,last,len`.
pub(crate) fn tail_text(t: &ListTail) -> String {
    format!("{},{},{},{},{}", t.gate, t.segment, t.end, t.last, t.len)
}

/// Reads a stored list tail.
pub(crate) fn parse_tail(text: &str) -> Option<ListTail> {
    let v: Vec<u32> = text
        .split(',')
        .map(|p| p.parse().ok())
        .collect::<Option<_>>()?;
    let [gate, segment, end, last, len] = v[..] else {
        return None;
    };
    Some(ListTail {
        gate,
        segment,
        end,
        last,
        len,
    })
}

struct NodeRecord {
    parent: u32,
    index: u32,
    vertex: u32,
    flags: u8,
    queue: u8,
    /// A group's end vertex; a job's previous sibling, whose result it takes.
    extra: u32,
}

/// Collects what the compiler makes, from vertex `base_vertex` and node
/// `base_node` on; edges from older vertices are kept apart, as only the
/// server can tell whether those have fired.
pub struct GraphUpload<'c> {
    base_vertex: u32,
    base_node: u32,
    catalog: Option<&'c (dyn Catalog + Sync)>,
    meta: Vec<u32>,
    out: Vec<Vec<u32>>,
    pending: Vec<u32>,
    external: Vec<(u32, u32)>,
    nodes: Vec<NodeRecord>,
    paths: BTreeMap<u32, String>,
    jobs: Vec<(u32, String)>,
    children: BTreeMap<u32, Vec<u32>>,
    tails: BTreeMap<u32, ListTail>,
    queues: Vec<String>,
    job_vertex: BTreeMap<u32, u32>,
    last_child: BTreeMap<u32, u32>,
    error: Option<String>,
}

impl std::fmt::Debug for GraphUpload<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GraphUpload")
            .field("vertices", &self.meta.len())
            .field("nodes", &self.nodes.len())
            .finish_non_exhaustive()
    }
}

impl Default for GraphUpload<'_> {
    fn default() -> Self {
        GraphUpload::new(0, 0, None, Vec::new())
    }
}

impl<'c> GraphUpload<'c> {
    /// An upload of vertices from `base_vertex` and nodes from `base_node`,
    /// resolving job options with `catalog`, for a project using `queues`.
    pub fn new(
        base_vertex: u32,
        base_node: u32,
        catalog: Option<&'c (dyn Catalog + Sync)>,
        queues: Vec<String>,
    ) -> Self {
        GraphUpload {
            base_vertex,
            base_node,
            catalog,
            meta: Vec::new(),
            out: Vec::new(),
            pending: Vec::new(),
            external: Vec::new(),
            nodes: Vec::new(),
            paths: BTreeMap::new(),
            jobs: Vec::new(),
            children: BTreeMap::new(),
            tails: BTreeMap::new(),
            queues,
            job_vertex: BTreeMap::new(),
            last_child: BTreeMap::new(),
            error: None,
        }
    }

    /// Tells the upload about the existing group that nodes are appended
    /// to: its path, and its last child, if it has one.
    pub fn known_group(&mut self, group: u32, path: String, last_child: Option<u32>) {
        self.paths.insert(group, path);
        if let Some(last) = last_child {
            self.last_child.insert(group, last);
        }
    }

    /// New vertices.
    pub fn vertices(&self) -> usize {
        self.meta.len()
    }

    /// New nodes.
    pub fn nodes(&self) -> usize {
        self.nodes.len()
    }

    /// The vertex of a new job node.
    pub fn job_vertex(&self, node: u32) -> Option<VertexId> {
        self.job_vertex.get(&node).copied()
    }

    /// What went wrong, such as more than 255 queues in one project.
    pub fn error(&self) -> Option<&str> {
        self.error.as_deref()
    }

    /// Every queue the project uses, in index order.
    pub fn queues(&self) -> &[String] {
        &self.queues
    }

    /// Job payloads by node id.
    pub fn jobs(&self) -> &[(u32, String)] {
        &self.jobs
    }

    /// New children of each group, the ones that existed included.
    pub fn children(&self) -> &BTreeMap<u32, Vec<u32>> {
        &self.children
    }

    /// Every touched group's final tail.
    pub fn tails(&self) -> &BTreeMap<u32, ListTail> {
        &self.tails
    }

    /// Edges from vertices older than this upload, as `from, to` pairs.
    pub fn external_edges(&self) -> &[(u32, u32)] {
        &self.external
    }

    /// The new vertex records. With `with_edges`, each carries its pending
    /// count and out-edges (a fresh project); without, they are bare and the
    /// edges are sent as pairs (an append), as the server applies them.
    pub fn vertex_bytes(&self, with_edges: bool, edge_base: usize) -> (Vec<u8>, Vec<u8>) {
        let mut vx = Vec::with_capacity(self.meta.len() * VERTEX_BYTES);
        let mut ed = Vec::new();
        for (i, targets) in self.out.iter().enumerate() {
            let (pending, inline0, inline1, head, tail) = if with_edges {
                let inline = |k: usize| targets.get(k).map_or(0, |t| t + 1);
                let (head, tail) = if targets.len() > 2 {
                    let at = (edge_base + ed.len()) as u32 + 1;
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
                (self.pending[i], inline(0), inline(1), head, tail)
            } else {
                (0, 0, 0, 0, 0)
            };
            for word in [pending, self.meta[i], inline0, inline1, head, tail] {
                vx.extend_from_slice(&word.to_be_bytes());
            }
        }
        (vx, ed)
    }

    /// Edges among the new vertices, as pairs, for an append.
    pub fn internal_edges(&self) -> Vec<(u32, u32)> {
        self.out
            .iter()
            .enumerate()
            .flat_map(|(i, ts)| ts.iter().map(move |&t| (i as u32 + self.base_vertex, t)))
            .collect()
    }

    /// The new node records.
    pub fn node_bytes(&self) -> Vec<u8> {
        let mut nd = Vec::with_capacity(self.nodes.len() * NODE_BYTES);
        for n in &self.nodes {
            nd.extend_from_slice(&n.parent.to_be_bytes());
            nd.extend_from_slice(&n.index.to_be_bytes());
            nd.extend_from_slice(&n.vertex.to_be_bytes());
            nd.extend_from_slice(&[n.flags, 0, n.queue, 0]);
            nd.extend_from_slice(&[0; 12]);
            nd.extend_from_slice(&n.extra.to_be_bytes());
        }
        nd
    }

    fn path_of(&self, place: &Place) -> String {
        match self.paths.get(&place.parent) {
            Some(p) if p.is_empty() => place.index.to_string(),
            Some(p) => format!("{p}.{}", place.index),
            None => place.index.to_string(),
        }
    }

    fn queue_index(&mut self, queue: &str) -> u8 {
        let i = match self.queues.iter().position(|q| q == queue) {
            Some(i) => i,
            None => {
                self.queues.push(queue.to_owned());
                self.queues.len() - 1
            }
        };
        u8::try_from(i).unwrap_or_else(|_| {
            self.error = Some("a project may use at most 256 queues".to_owned());
            0
        })
    }

    fn record(&mut self, node: u32, place: Place, rec: NodeRecord) {
        debug_assert_eq!(
            node,
            self.base_node + self.nodes.len() as u32,
            "nodes in order"
        );
        if place.parent != NO_PARENT {
            self.children.entry(place.parent).or_default().push(node);
            self.last_child.insert(place.parent, node);
        }
        self.nodes.push(rec);
    }
}

fn flags(place: &Place, group: bool) -> u8 {
    u8::from(group) | (u8::from(place.blocking) << 1) | (u8::from(place.previous) << 2)
}

impl GraphSink for GraphUpload<'_> {
    fn vertex(&mut self, role: Role, owner: u32) -> VertexId {
        let id = self.base_vertex + self.meta.len() as VertexId;
        self.meta.push(role_bits(role) << 30 | owner);
        self.out.push(Vec::new());
        self.pending.push(0);
        id
    }

    fn edge(&mut self, from: VertexId, to: VertexId) {
        if from < self.base_vertex || to < self.base_vertex {
            self.external.push((from, to));
            return;
        }
        self.out[(from - self.base_vertex) as usize].push(to);
        self.pending[(to - self.base_vertex) as usize] += 1;
    }

    fn job(&mut self, node: u32, place: Place, vertex: VertexId, spec: JobSpec) {
        let defaults = self
            .catalog
            .and_then(|c| c.defaults(&spec.func))
            .cloned()
            .unwrap_or_default();
        let o = &spec.options;
        let backoff = o.backoff.unwrap_or(defaults.backoff);
        let queue = o
            .queue
            .clone()
            .or(defaults.queue)
            .unwrap_or_else(|| rqm_core::DEFAULT_QUEUE.to_owned());
        let mut payload = json!({
            "path": self.path_of(&place),
            "func": spec.func,
            "retries": o.retries.unwrap_or(defaults.retries),
            "timeout_ms": o.timeout_ms.or(defaults.timeout_ms),
            "backoff": [backoff.initial_ms, backoff.factor, backoff.max_ms],
            "queue": queue,
            "allow_failure": o.allow_failure,
        });
        match spec.input {
            Input::Args(args) => payload["args"] = args,
            Input::Previous => payload["previous"] = Value::Bool(true),
            Input::None => {}
        }
        if let Some(kwargs) = spec.kwargs {
            payload["kwargs"] = Value::Object(kwargs);
        }
        let queue = self.queue_index(&queue);
        let previous = if place.previous {
            self.last_child
                .get(&place.parent)
                .copied()
                .unwrap_or(u32::MAX)
        } else {
            0
        };
        self.jobs.push((node, payload.to_string()));
        self.job_vertex.insert(node, vertex);
        let rec = NodeRecord {
            parent: place.parent,
            index: place.index,
            vertex,
            flags: flags(&place, false),
            queue,
            extra: previous,
        };
        self.record(node, place, rec);
    }

    fn group(&mut self, node: u32, place: Place, start: VertexId, end: VertexId, _len: usize) {
        let path = if place.parent == NO_PARENT {
            String::new()
        } else {
            self.path_of(&place)
        };
        self.paths.insert(node, path);
        self.children.entry(node).or_default();
        let rec = NodeRecord {
            parent: place.parent,
            index: place.index,
            vertex: start,
            flags: flags(&place, true),
            queue: 0,
            extra: end,
        };
        self.record(node, place, rec);
    }

    fn tail(&mut self, group: u32, tail: ListTail) {
        self.tails.insert(group, tail);
    }
}
