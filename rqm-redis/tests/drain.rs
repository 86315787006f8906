//! A submit stores its graph part by part (`GraphUpload::drain`), keeping
//! only the root list's open tail: what it stores must be, record for
//! record, the graph the whole upload makes.

use std::collections::BTreeMap;

use proptest::prelude::*;
use rqm_core::testing::strategies;
use rqm_core::{ListTail, Node, RootCompiler, compile_root};
use rqm_redis::{Drained, GraphUpload, NODE_BYTES, VERTEX_BYTES};

const RANGE_BLOCK: u32 = 1 << 31;
const NO_OWNER: u32 = u32::MAX;

fn word(bytes: &[u8], at: usize) -> u32 {
    u32::from_be_bytes(bytes[at..at + 4].try_into().unwrap())
}

/// A graph as stored: records at their places.
#[derive(Default)]
struct Stored {
    vx: Vec<u8>,
    vp: Vec<u8>,
    nd: Vec<u8>,
    ed: Vec<u8>,
    children: BTreeMap<u32, Vec<u32>>,
    tails: BTreeMap<u32, ListTail>,
    jobs: BTreeMap<u32, String>,
    profiles: BTreeMap<String, String>,
}

fn put(string: &mut Vec<u8>, at: usize, bytes: &[u8]) {
    if string.len() < at + bytes.len() {
        string.resize(at + bytes.len(), 0);
    }
    string[at..at + bytes.len()].copy_from_slice(bytes);
}

impl Stored {
    fn store(&mut self, part: Drained) {
        put(
            &mut self.nd,
            part.first_node as usize * NODE_BYTES,
            &part.nd,
        );
        for (first, vx, vp) in part.vertices {
            put(&mut self.vx, first as usize * VERTEX_BYTES, &vx);
            put(&mut self.vp, first as usize * 4, &vp);
        }
        self.ed.extend_from_slice(&part.ed);
        for (g, kids) in part.children {
            self.children.entry(g).or_default().extend(kids);
        }
        self.tails.extend(part.tails);
        self.jobs.extend(part.jobs);
        self.profiles.extend(part.profiles);
    }

    /// Vertex v's targets in order, checking each range block that names a
    /// run of jobs against the records.
    fn targets(&self, v: usize) -> Vec<u32> {
        let rec = &self.vx[v * VERTEX_BYTES..(v + 1) * VERTEX_BYTES];
        let mut out: Vec<u32> = [word(rec, 4), word(rec, 8)]
            .into_iter()
            .filter(|t| *t > 0)
            .map(|t| t - 1)
            .collect();
        let mut block = word(rec, 12) as usize;
        while block > 0 {
            let at = block - 1;
            let (count, next) = (word(&self.ed, at), word(&self.ed, at + 4));
            if count & RANGE_BLOCK != 0 {
                let count = count & !RANGE_BLOCK;
                let (first, owner, queue) = (
                    word(&self.ed, at + 8),
                    word(&self.ed, at + 12),
                    word(&self.ed, at + 16),
                );
                for i in 0..count {
                    if owner != NO_OWNER {
                        let meta = word(&self.vx, (first + i) as usize * VERTEX_BYTES);
                        assert_eq!(meta, owner + i, "range of jobs at vertex {}", first + i);
                        let node = (owner + i) as usize * NODE_BYTES;
                        assert_eq!(u32::from(self.nd[node + 13]), queue, "queue of {node}");
                    }
                    out.push(first + i);
                }
            } else {
                out.extend((0..count as usize).map(|i| word(&self.ed, at + 8 + 4 * i)));
            }
            block = next as usize;
        }
        out
    }
}

/// The whole upload, as stored at once.
fn at_once(jobs: Vec<Node>) -> (Stored, Vec<u32>) {
    let mut upload = GraphUpload::default();
    compile_root(&mut upload, jobs);
    let ready = upload.ready_vertices();
    let (vx, vp, ed) = upload.vertex_bytes(0);
    let stored = Stored {
        vx,
        vp,
        ed,
        nd: upload.node_bytes(),
        children: upload.children().clone(),
        tails: upload.tails().clone(),
        jobs: upload.jobs().iter().cloned().collect(),
        profiles: upload.profiles().clone(),
    };
    (stored, ready)
}

/// The upload drained after every `part` root nodes.
fn in_parts(jobs: Vec<Node>, part: usize) -> (Stored, Vec<u32>) {
    let mut upload = GraphUpload::default();
    let mut root = RootCompiler::start(&mut upload, jobs.len());
    let mut stored = Stored::default();
    let mut jobs = jobs.into_iter().peekable();
    while jobs.peek().is_some() {
        root.push(&mut upload, jobs.by_ref().take(part).collect());
        stored.store(upload.drain(&root.open_vertices()));
    }
    root.finish(&mut upload);
    stored.store(upload.drain(&[]));
    assert_eq!(upload.error(), None);
    (stored, upload.drained_ready().to_vec())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn a_project_drained_in_parts_stores_what_the_whole_upload_stores(
        project in strategies::project(true),
        part in 1usize..5,
    ) {
        let (whole, whole_ready) = at_once(project.jobs.clone());
        let (parts, parts_ready) = in_parts(project.jobs, part);
        prop_assert_eq!(&whole.nd, &parts.nd);
        prop_assert_eq!(whole.vx.len(), parts.vx.len());
        prop_assert_eq!(&whole.vp, &parts.vp);
        for v in 0..whole.vx.len() / VERTEX_BYTES {
            let meta = |s: &Stored| word(&s.vx, v * VERTEX_BYTES);
            prop_assert_eq!(meta(&whole), meta(&parts), "vertex {}", v);
            prop_assert_eq!(whole.targets(v), parts.targets(v), "vertex {}", v);
        }
        let (mut a, mut b) = (whole_ready, parts_ready);
        a.sort_unstable();
        b.sort_unstable();
        prop_assert_eq!(a, b);
        prop_assert_eq!(&whole.children, &parts.children);
        prop_assert_eq!(&whole.tails, &parts.tails);
        prop_assert_eq!(&whole.jobs, &parts.jobs);
        prop_assert_eq!(&whole.profiles, &parts.profiles);
    }
}

/// A root list of a thousand jobs after a barrier: the barrier's segment,
/// their gate, stays open across every part and keeps its targets as one
/// run, stored as one range block of jobs.
#[test]
fn a_gate_open_across_parts_keeps_its_targets_as_one_run() {
    let mut jobs = vec![Node::call("f", serde_json::json!(0)).blocking()];
    jobs.extend((1..=1000).map(|i| Node::call("f", serde_json::json!(i))));
    let (whole, _) = at_once(jobs.clone());
    let (parts, _) = in_parts(jobs, 10);
    // Root: start 0, segment 1, end 2; the barrier 3 and its next segment
    // 4; then the jobs, 5..=1004. Segment 1 feeds the end and the next
    // segment (inline) and gates the jobs.
    let targets = parts.targets(1);
    assert_eq!(targets[..2], [2, 4]);
    assert_eq!(targets[2..], (5..=1004).collect::<Vec<u32>>()[..]);
    assert_eq!(targets, whole.targets(1));
    let head = word(&parts.vx, VERTEX_BYTES + 12) as usize;
    assert_eq!(
        word(&parts.ed, head - 1),
        RANGE_BLOCK | 1000,
        "one range block"
    );
    assert_eq!(word(&parts.ed, head - 1 + 4), 0, "and no other");
    assert_eq!(
        word(&parts.ed, head - 1 + 12),
        1 + 1,
        "a run of jobs from node 2"
    );

    // Without the barrier the root's start is the gate: its first job goes
    // inline, and the range of the rest starts at the second job.
    let jobs: Vec<Node> = (0..1000)
        .map(|i| Node::call("f", serde_json::json!(i)))
        .collect();
    let (whole, _) = at_once(jobs.clone());
    let (parts, _) = in_parts(jobs, 10);
    let targets = parts.targets(0);
    assert_eq!(targets, whole.targets(0));
    assert_eq!(targets[..2], [1, 3]);
    let head = word(&parts.vx, 12) as usize;
    assert_eq!(word(&parts.ed, head - 1), RANGE_BLOCK | 999);
    assert_eq!(
        word(&parts.ed, head - 1 + 12),
        2,
        "the run's first job is node 2"
    );
}
