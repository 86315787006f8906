//! A compiled project, or an appended batch, as the bytes and fields Redis
//! stores; see the key layout in the crate docs.

use std::collections::BTreeMap;

use rqm_core::{
    Catalog, GraphSink, Input, JobOptions, JobSpec, ListTail, NO_PARENT, Place, Role, VertexId,
};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use smallvec::SmallVec;

/// Bytes per vertex record in `vx` (role and owner, edges); its pending
/// count is apart, in `vp` (4 bytes), so that a run of vertices is one
/// substring.
pub const VERTEX_BYTES: usize = 20;
/// Bytes per node record in `nd` (parent, index, vertex, flags, queue, lost,
/// extra); what changes as it runs is apart, in the node's live record.
pub const NODE_BYTES: usize = 20;
/// Bytes per node live record in `nl`: state (1 byte), then attempts,
/// started and finished (4 each).
pub const LIVE_BYTES: usize = 13;

/// Consecutive targets from which an overflow block holds a range rather
/// than a list.
const RANGE_MIN: usize = 8;
/// The mark of a range block in its count word.
const RANGE_BLOCK: u32 = 1 << 31;
/// A range block's owner word when its targets are not a run of jobs.
const NO_OWNER: u32 = u32::MAX;

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

/// Edges from older vertices, as [`GraphUpload::external_plan`] makes them.
#[derive(Debug, Default)]
pub struct ExternalEdges {
    /// `from, to` pairs, added one by one.
    pub pairs: Vec<u32>,
    /// `(from, first block, last block, target runs)`: chains of overflow
    /// blocks (offsets + 1) to link onto `from`'s edges, and the runs of
    /// their targets, `[first, last]`.
    pub chains: Vec<(u32, u32, u32, Vec<[u32; 2]>)>,
    /// The chains' blocks.
    pub ed: Vec<u8>,
}

/// What [`GraphUpload::drain`] takes out: final records, to be stored at
/// their places.
#[derive(Debug, Default)]
pub struct Drained {
    /// The first node of `nd`.
    pub first_node: u32,
    /// Node records from `first_node` on.
    pub nd: Vec<u8>,
    /// Runs of vertex records: first vertex, records (vx), pending counts
    /// (vp).
    pub vertices: Vec<(u32, Vec<u8>, Vec<u8>)>,
    /// Overflow edge blocks, to go on the end of the edge string.
    pub ed: Vec<u8>,
    /// Groups' new children (a list, or for the root a batch of it).
    pub children: Vec<(u32, Vec<u32>)>,
    /// Groups' final tails.
    pub tails: Vec<(u32, ListTail)>,
    /// New profiles, by id.
    pub profiles: Vec<(String, String)>,
    /// Job payloads by node id.
    pub jobs: Vec<(u32, String)>,
}

/// A run of consecutive edge targets; `job`: `(owner, queue)` of the first
/// when they are all jobs of consecutive nodes on one queue.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct EdgeRun {
    first: u32,
    len: u32,
    job: Option<(u32, u32)>,
}

/// A drained vertex that still gets edges: its record as it stands, with
/// its targets as runs (a root gate's million targets are one run).
#[derive(Debug)]
struct Kept {
    meta: u32,
    pending: u32,
    runs: Vec<EdgeRun>,
}

/// Adds target `to` to `runs`, `(owner, queue)` when it is a job's: it
/// extends the last run when it follows it and is like it (both not jobs,
/// or both jobs of consecutive nodes on one queue).
fn push_target(runs: &mut Vec<EdgeRun>, to: u32, job: Option<(u32, u32)>) {
    if let Some(last) = runs.last_mut()
        && to == last.first + last.len
    {
        let like = match (last.job, job) {
            (None, None) => true,
            (Some((owner, queue)), Some((o, q))) => o == owner + last.len && q == queue,
            _ => false,
        };
        if like {
            last.len += 1;
            return;
        }
    }
    runs.push(EdgeRun {
        first: to,
        len: 1,
        job,
    });
}

/// A vertex's record (vx) and pending count (vp), its targets `runs` in
/// order: the first two inline, the rest as overflow blocks appended to
/// `ed`, which starts at byte `edge_base` of the edge string.
fn vertex_record(
    meta: u32,
    pending: u32,
    mut runs: Vec<EdgeRun>,
    edge_base: usize,
    ed: &mut Vec<u8>,
) -> ([u8; VERTEX_BYTES], [u8; 4]) {
    let mut inline = [0u32; 2];
    for slot in &mut inline {
        let Some(run) = runs.first_mut() else { break };
        *slot = run.first + 1;
        run.first += 1;
        run.len -= 1;
        run.job = run.job.map(|(owner, queue)| (owner + 1, queue));
        if run.len == 0 {
            runs.remove(0);
        }
    }
    let (head, tail) = write_blocks(&runs, edge_base, ed);
    let mut vx = [0u8; VERTEX_BYTES];
    for (k, word) in [meta, inline[0], inline[1], head, tail]
        .into_iter()
        .enumerate()
    {
        vx[4 * k..4 * k + 4].copy_from_slice(&word.to_be_bytes());
    }
    (vx, pending.to_be_bytes())
}

/// Writes `runs` of targets as a chain of overflow blocks: a range block
/// for each run of at least `RANGE_MIN`, list blocks for the others'
/// targets between them. Returns the offsets + 1 of its first and last
/// block (0, 0 for none); `ed` starts at byte `edge_base` of the string.
fn write_blocks(runs: &[EdgeRun], edge_base: usize, ed: &mut Vec<u8>) -> (u32, u32) {
    let mut blocks: Vec<Vec<u32>> = Vec::new();
    let mut list: Vec<u32> = Vec::new();
    let flush = |list: &mut Vec<u32>, blocks: &mut Vec<Vec<u32>>| {
        if !list.is_empty() {
            let mut block = vec![list.len() as u32, 0];
            block.append(list);
            blocks.push(block);
        }
    };
    for run in runs {
        if run.len as usize >= RANGE_MIN {
            flush(&mut list, &mut blocks);
            let (owner, queue) = run.job.unwrap_or((NO_OWNER, 0));
            blocks.push(vec![run.len | RANGE_BLOCK, 0, run.first, owner, queue]);
        } else {
            list.extend(run.first..run.first + run.len);
        }
    }
    flush(&mut list, &mut blocks);
    let mut first = 0;
    let mut last = 0;
    let count = blocks.len();
    for (k, mut block) in blocks.into_iter().enumerate() {
        let at = (edge_base + ed.len()) as u32 + 1;
        if k + 1 < count {
            block[1] = at + 4 * block.len() as u32;
        }
        if k == 0 {
            first = at;
        }
        last = at;
        for word in block {
            ed.extend_from_slice(&word.to_be_bytes());
        }
    }
    (first, last)
}

/// A job's profile as the upload last worked it out.
struct LastProfile {
    func: String,
    options: JobOptions,
    previous: bool,
    id: String,
    queue: u8,
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
    /// The first vertex and node still held (earlier ones were drained).
    window_vertex: u32,
    window_node: u32,
    /// Drained vertices that still get edges, by id.
    kept: BTreeMap<u32, Kept>,
    /// Bytes of overflow blocks drained so far.
    ed_len: usize,
    /// Drained vertices with nothing pending.
    ready: Vec<u32>,
    /// Ids of profiles not yet drained, in the order they were made.
    new_profiles: Vec<String>,
    catalog: Option<&'c (dyn Catalog + Sync)>,
    meta: Vec<u32>,
    /// Each vertex's out-edges; most have one or two.
    out: Vec<SmallVec<[u32; 2]>>,
    pending: Vec<u32>,
    external: Vec<(u32, u32)>,
    older_targets: Vec<u32>,
    nodes: Vec<NodeRecord>,
    paths: BTreeMap<u32, String>,
    jobs: Vec<(u32, String)>,
    children: BTreeMap<u32, Vec<u32>>,
    tails: BTreeMap<u32, ListTail>,
    queues: Vec<String>,
    profiles: BTreeMap<String, String>,
    last_child: BTreeMap<u32, u32>,
    /// The last job's profile, for the next like it.
    last_profile: Option<LastProfile>,
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
            window_vertex: base_vertex,
            window_node: base_node,
            kept: BTreeMap::new(),
            ed_len: 0,
            ready: Vec::new(),
            new_profiles: Vec::new(),
            catalog,
            meta: Vec::new(),
            out: Vec::new(),
            pending: Vec::new(),
            external: Vec::new(),
            older_targets: Vec::new(),
            nodes: Vec::new(),
            paths: BTreeMap::new(),
            jobs: Vec::new(),
            children: BTreeMap::new(),
            tails: BTreeMap::new(),
            queues,
            profiles: BTreeMap::new(),
            last_child: BTreeMap::new(),
            last_profile: None,
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

    /// New vertices, drained ones included.
    pub fn vertices(&self) -> usize {
        (self.window_vertex - self.base_vertex) as usize + self.meta.len()
    }

    /// New nodes, drained ones included.
    pub fn nodes(&self) -> usize {
        (self.window_node - self.base_node) as usize + self.nodes.len()
    }

    /// The vertex of a new job node.
    pub fn job_vertex(&self, node: u32) -> Option<VertexId> {
        let rec = self
            .nodes
            .get(node.checked_sub(self.window_node)? as usize)?;
        (rec.flags & 1 == 0).then_some(rec.vertex)
    }

    /// What went wrong, such as more than 255 queues in one project.
    pub fn error(&self) -> Option<&str> {
        self.error.as_deref()
    }

    /// Every queue the project uses, in index order.
    pub fn queues(&self) -> &[String] {
        &self.queues
    }

    /// The profiles (function and options) the new jobs use, by id.
    pub fn profiles(&self) -> &BTreeMap<String, String> {
        &self.profiles
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

    /// The edges from older vertices as the append script adds them, its
    /// overflow blocks written at byte `edge_base` of the edge string on
    /// (each chain after the one before it):
    /// an older vertex with more than two new edges gets them as one chain
    /// of blocks (ranges where the targets run on, so that the server
    /// releases a run of jobs at once), linked in with a few writes; one
    /// with one or two gets them one by one, into its free inline slots.
    pub fn external_plan(&self, edge_base: usize) -> ExternalEdges {
        let mut by_vertex: Vec<(u32, Vec<u32>)> = Vec::new();
        let mut at: BTreeMap<u32, usize> = BTreeMap::new();
        for &(from, to) in &self.external {
            let k = *at.entry(from).or_insert_with(|| {
                by_vertex.push((from, Vec::new()));
                by_vertex.len() - 1
            });
            by_vertex[k].1.push(to);
        }
        let mut plan = ExternalEdges::default();
        for (from, targets) in by_vertex {
            if targets.len() <= 2 {
                plan.pairs.extend(targets.iter().flat_map(|&t| [from, t]));
                continue;
            }
            let runs = self.target_runs(&targets);
            let (head, tail) = write_blocks(&runs, edge_base, &mut plan.ed);
            // The targets as runs `first, last`, for the server to count
            // each one's new wait (at once for a run that waits on nothing).
            let spans = runs
                .iter()
                .map(|r| [r.first, r.first + r.len - 1])
                .collect();
            plan.chains.push((from, head, tail, spans));
        }
        plan
    }

    /// Older vertices that new ones have edges to, once per edge: each
    /// has one more to wait for. (The edges are in the new records.)
    pub fn older_targets(&self) -> &[u32] {
        &self.older_targets
    }

    /// The new vertex records, their pending counts and overflow edge
    /// blocks: `(vx, vp, ed)`, the blocks at byte `edge_base` of the edge
    /// string on. Each carries its out-edges and what it waits for among
    /// the new vertices; edges from older vertices are apart
    /// ([`GraphUpload::external_plan`]).
    ///
    /// An overflow block is `count, next` (byte offset + 1 of the next
    /// block, or 0) then either `count` targets or, with the count's top bit
    /// set, a range: `first, owner, queue`, targets `first..first + count`;
    /// `owner` is the node of the first when they are all jobs of
    /// consecutive nodes on one queue, so that the server releases them
    /// as one run, else `u32::MAX`.
    pub fn vertex_bytes(&self, edge_base: usize) -> (Vec<u8>, Vec<u8>, Vec<u8>) {
        let mut ed = Vec::new();
        let (vx, vp) = self.records(0..self.meta.len(), edge_base, &mut ed);
        (vx, vp, ed)
    }

    /// The records (vx, vp) of held vertices `range` (indices into the
    /// window), their overflow blocks appended to `ed`, which starts at byte
    /// `edge_base` of the edge string.
    fn records(
        &self,
        range: std::ops::Range<usize>,
        edge_base: usize,
        ed: &mut Vec<u8>,
    ) -> (Vec<u8>, Vec<u8>) {
        let mut vx = Vec::with_capacity(range.len() * VERTEX_BYTES);
        let mut vp = Vec::with_capacity(range.len() * 4);
        for i in range {
            let runs = self.target_runs(&self.out[i]);
            let (record, pending) =
                vertex_record(self.meta[i], self.pending[i], runs, edge_base, ed);
            vx.extend_from_slice(&record);
            vp.extend_from_slice(&pending);
        }
        (vx, vp)
    }

    /// `targets` as runs (see `push_target`).
    fn target_runs(&self, targets: &[u32]) -> Vec<EdgeRun> {
        let mut runs = Vec::new();
        for &t in targets {
            push_target(&mut runs, t, self.job_info(t));
        }
        runs
    }

    /// `(owner, queue)` of vertex `v` when it is a held job's.
    fn job_info(&self, v: u32) -> Option<(u32, u32)> {
        let meta = *self.meta.get(v.checked_sub(self.window_vertex)? as usize)?;
        if meta >> 30 != 0 {
            return None;
        }
        let owner = meta & 0x3fff_ffff;
        let rec = self
            .nodes
            .get(owner.checked_sub(self.window_node)? as usize)?;
        Some((owner, u32::from(rec.queue)))
    }

    /// Takes out what is final of a submit's graph, so that it is stored
    /// and not held: every held vertex and node but `open` (the vertices
    /// that later nodes still add edges to or from: the root list's tail),
    /// which are kept apart and given out once no longer open. Every
    /// group's list but the root's is complete (parts end between root
    /// nodes); the root's comes in batches.
    pub fn drain(&mut self, open: &[VertexId]) -> Drained {
        let first = self.window_vertex;
        let held = self.meta.len();
        let mut part = Drained {
            first_node: self.window_node,
            ..Drained::default()
        };
        let edge_base = self.ed_len;
        // Kept vertices that are no longer open are final now.
        let closed: Vec<u32> = self
            .kept
            .keys()
            .copied()
            .filter(|v| !open.contains(v))
            .collect();
        for v in closed {
            let kept = self.kept.remove(&v).expect("listed");
            let (vx, vp) =
                vertex_record(kept.meta, kept.pending, kept.runs, edge_base, &mut part.ed);
            if kept.pending == 0 {
                self.ready.push(v);
            }
            part.vertices.push((v, vx.to_vec(), vp.to_vec()));
        }
        // Held ones that are open are kept; the rest, between them, go.
        let mut holes: Vec<usize> = open
            .iter()
            .filter(|v| (first..first + held as u32).contains(v))
            .map(|v| (v - first) as usize)
            .collect();
        holes.sort_unstable();
        holes.dedup();
        for &i in &holes {
            let kept = Kept {
                meta: self.meta[i],
                pending: self.pending[i],
                runs: self.target_runs(&self.out[i]),
            };
            self.kept.insert(first + i as u32, kept);
        }
        let mut from = 0;
        for bound in holes.iter().copied().chain([held]) {
            if from < bound {
                let (vx, vp) = self.records(from..bound, edge_base, &mut part.ed);
                part.vertices.push((first + from as u32, vx, vp));
                let ready: Vec<u32> = self.ready_in(from..bound).collect();
                self.ready.extend(ready);
            }
            from = bound + 1;
        }
        self.ed_len += part.ed.len();
        part.nd = self.node_bytes();
        self.window_vertex += held as u32;
        self.window_node += self.nodes.len() as u32;
        self.meta.clear();
        self.out.clear();
        self.pending.clear();
        self.nodes.clear();
        part.children = std::mem::take(&mut self.children).into_iter().collect();
        part.tails = std::mem::take(&mut self.tails).into_iter().collect();
        self.paths.retain(|g, _| *g == 0);
        self.last_child.retain(|g, _| *g == 0);
        part.profiles = std::mem::take(&mut self.new_profiles)
            .into_iter()
            .map(|id| {
                let json = self.profiles[&id].clone();
                (id, json)
            })
            .collect();
        part.jobs = std::mem::take(&mut self.jobs);
        part
    }

    /// The drained vertices with nothing pending, in the order drained:
    /// where a fresh project's release starts.
    pub fn drained_ready(&self) -> &[u32] {
        &self.ready
    }

    /// Runs of new job vertices of consecutive nodes on one queue, at
    /// least `RANGE_MIN` long: `[first vertex, last vertex, first node,
    /// queue]`. The server settles such a run that waits on nothing as one
    /// substring and queues it as one entry.
    pub fn job_runs(&self) -> Vec<[u32; 4]> {
        let held: Vec<u32> = (self.window_vertex..).take(self.meta.len()).collect();
        self.target_runs(&held)
            .into_iter()
            .filter(|r| r.len as usize >= RANGE_MIN)
            .filter_map(|r| {
                let (owner, queue) = r.job?;
                Some([r.first, r.first + r.len - 1, owner, queue])
            })
            .collect()
    }

    /// The new vertices with nothing pending: where a fresh project's
    /// release starts.
    pub fn ready_vertices(&self) -> Vec<u32> {
        self.ready_in(0..self.pending.len()).collect()
    }

    /// The held vertices of `range` (indices into the window) with nothing
    /// pending.
    fn ready_in(&self, range: std::ops::Range<usize>) -> impl Iterator<Item = u32> + '_ {
        range
            .filter(|&i| self.pending[i] == 0)
            .map(|i| self.window_vertex + i as u32)
    }

    /// The new node records.
    pub fn node_bytes(&self) -> Vec<u8> {
        let mut nd = Vec::with_capacity(self.nodes.len() * NODE_BYTES);
        for n in &self.nodes {
            nd.extend_from_slice(&n.parent.to_be_bytes());
            nd.extend_from_slice(&n.index.to_be_bytes());
            nd.extend_from_slice(&n.vertex.to_be_bytes());
            nd.extend_from_slice(&[n.flags, n.queue, 0, 0]);
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

    /// The id of `spec`'s profile (stored once in `profiles`) and its queue's
    /// index; a list of like jobs works it out once.
    fn profile_of(&mut self, spec: &JobSpec) -> (String, u8) {
        let previous = matches!(spec.input, Input::Previous);
        if let Some(last) = &self.last_profile
            && last.func == spec.func
            && last.options == spec.options
            && last.previous == previous
        {
            return (last.id.clone(), last.queue);
        }
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
        let profile = Profile {
            func: spec.func.clone(),
            retries: o.retries.unwrap_or(defaults.retries),
            timeout_ms: o.timeout_ms.or(defaults.timeout_ms),
            backoff: [
                backoff.initial_ms,
                u64::from(backoff.factor),
                backoff.max_ms,
            ],
            queue: queue.clone(),
            allow_failure: o.allow_failure,
            previous,
        };
        let profile_json = serde_json::to_string(&profile).expect("a profile serializes");
        let profile_id = profile_key(&profile_json);
        if let std::collections::btree_map::Entry::Vacant(slot) =
            self.profiles.entry(profile_id.clone())
        {
            slot.insert(profile_json);
            self.new_profiles.push(profile_id.clone());
        }
        let queue = self.queue_index(&queue);
        self.last_profile = Some(LastProfile {
            func: spec.func.clone(),
            options: spec.options.clone(),
            previous,
            id: profile_id.clone(),
            queue,
        });
        (profile_id, queue)
    }

    fn record(&mut self, node: u32, place: Place, rec: NodeRecord) {
        debug_assert_eq!(
            node,
            self.window_node + self.nodes.len() as u32,
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
        let id = self.window_vertex + self.meta.len() as VertexId;
        self.meta.push(role_bits(role) << 30 | owner);
        self.out.push(SmallVec::new());
        self.pending.push(0);
        id
    }

    fn edge(&mut self, from: VertexId, to: VertexId) {
        if from < self.base_vertex {
            // Only the server can tell whether an older vertex has fired.
            self.external.push((from, to));
            return;
        }
        if from < self.window_vertex {
            // An open vertex of a part already drained (see `drain`).
            let info = self.job_info(to);
            match self.kept.get_mut(&from) {
                Some(kept) => push_target(&mut kept.runs, to, info),
                None => {
                    self.error = Some(format!(
                        "internal: an edge from vertex {from}, drained as final"
                    ));
                }
            }
        } else {
            self.out[(from - self.window_vertex) as usize].push(to);
        }
        if to < self.base_vertex {
            self.older_targets.push(to);
        } else if to < self.window_vertex {
            match self.kept.get_mut(&to) {
                Some(kept) => kept.pending += 1,
                None => {
                    self.error = Some(format!(
                        "internal: an edge to vertex {to}, drained as final"
                    ));
                }
            }
        } else {
            self.pending[(to - self.window_vertex) as usize] += 1;
        }
    }

    fn job(&mut self, node: u32, place: Place, vertex: VertexId, spec: JobSpec) {
        let (profile_id, queue) = self.profile_of(&spec);
        let path = self.path_of(&place);
        let stored = StoredJob {
            profile: &profile_id,
            path: &path,
            args: match &spec.input {
                Input::Args(args) => Some(args),
                _ => None,
            },
            kwargs: spec.kwargs.as_ref(),
        };
        let payload = serde_json::to_string(&stored).expect("a job serializes");
        let previous = if place.previous {
            self.last_child
                .get(&place.parent)
                .copied()
                .unwrap_or(u32::MAX)
        } else {
            0
        };
        self.jobs.push((node, payload));
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

/// A job's function and options, stored once per project (field of `pf`)
/// for every job that shares them; a job's payload names it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Profile {
    /// The function.
    pub func: String,
    /// Attempts after the first.
    pub retries: u32,
    /// How long one attempt may run.
    pub timeout_ms: Option<u64>,
    /// Initial ms, factor, max ms.
    pub backoff: [u64; 3],
    /// The queue.
    pub queue: String,
    /// Whether a failure is allowed.
    pub allow_failure: bool,
    /// Whether the job takes the previous node's result.
    pub previous: bool,
}

/// A profile's id: 64 bits of FNV-1a of its JSON, in hex. A clash of two
/// profiles of one project is refused when they are stored.
pub(crate) fn profile_key(json: &str) -> String {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in json.bytes() {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    format!("{hash:016x}")
}

/// A job's payload as stored (field of `jb`): its profile, path, and input.
#[derive(Debug, Serialize)]
pub(crate) struct StoredJob<'a> {
    #[serde(rename = "f")]
    pub(crate) profile: &'a str,
    #[serde(rename = "p")]
    pub(crate) path: &'a str,
    /// Present (even `null`) when the job is given args.
    #[serde(rename = "a", skip_serializing_if = "Option::is_none")]
    pub(crate) args: Option<&'a Value>,
    #[serde(rename = "k", skip_serializing_if = "Option::is_none")]
    pub(crate) kwargs: Option<&'a Map<String, Value>>,
}

/// A stored payload, read.
#[derive(Debug, Deserialize)]
pub(crate) struct OwnedJob {
    #[serde(rename = "f")]
    pub(crate) profile: String,
    #[serde(rename = "p")]
    pub(crate) path: String,
    /// Present (even `null`) when the job is given args.
    #[serde(rename = "a", default, deserialize_with = "present")]
    pub(crate) args: Option<Value>,
    #[serde(rename = "k", default)]
    pub(crate) kwargs: Option<Map<String, Value>>,
}

/// Deserializes a present field, `null` included, as `Some`.
fn present<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Value>, D::Error> {
    Value::deserialize(d).map(Some)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Two older vertices that each get three new edges: two chains of
    /// blocks, the second right after the first.
    #[test]
    fn chains_from_older_vertices_follow_one_another() {
        let mut upload = GraphUpload::new(10, 5, None, Vec::new());
        let new: Vec<VertexId> = (0..6).map(|_| upload.vertex(Role::Segment, 0)).collect();
        for &t in &new[..3] {
            upload.edge(1, t);
        }
        for &t in &new[3..] {
            upload.edge(2, t);
        }
        let plan = upload.external_plan(100);
        // One list block each: count, next, three targets.
        let block = 5 * 4;
        assert_eq!(plan.ed.len(), 2 * block);
        let heads: Vec<(u32, u32, u32)> = plan.chains.iter().map(|c| (c.0, c.1, c.2)).collect();
        assert_eq!(
            heads,
            vec![(1, 101, 101), (2, 101 + block as u32, 101 + block as u32)]
        );
    }
}
