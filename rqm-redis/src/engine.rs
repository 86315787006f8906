//! The Redis engine's client and transport: submit, status, wait, cancel,
//! list; and what workers call: take, begin, complete, renew, requeue.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use redis::aio::{ConnectionManager, MultiplexedConnection};
use rqm_core::{
    Backoff, CancelOutcome, Catalog, FailedJob, Limits, Node, NodeId, NodeReport, NodeState, Path,
    Project, Registry, Rejection, Report, RootCompiler, StateCounts, Status, ValidationError,
    compile_append, parse_project, parse_project_parts, validate, validate_append,
};
use serde::Deserialize;
use serde_json::{Map, Value};

use crate::config::{Config, check_server};
use crate::error::Error;
use crate::keys::{Keys, ProjectKeys, record_place};
use crate::scripts::{
    self, APPEND, BEGIN, CANCEL, COMPLETE, CORRUPT, Call, DUE, Function, NEXT, OPEN, RELEASE,
    REQUEUE, TAKE, is_not_loaded,
};
use crate::upload::{
    Drained, GraphUpload, LIVE_BYTES, NODE_BYTES, OwnedJob, Profile, VERTEX_BYTES, parse_tail,
    tail_text,
};

/// A project's own keys, in the order its scripts take them as KEYS
/// (see `lua/project.lua`).
const PROJECT_KEYS: [&str; 14] = [
    "vx", "ed", "vp", "nd", "nl", "jb", "rs", "ch", "tl", "meta", "ev", "er", "bl", "pf",
];

/// Projects whose queues a client keeps in mind; past this it forgets all.
const QUEUE_CACHE: usize = 10_000;

/// Tries of an append whose list keeps changing under it.
const APPEND_TRIES: usize = 1000;

/// How long a keeper that goes on with a stopped client's release has
/// before another one does.
const RELEASE_CLAIM: Duration = Duration::from_secs(2);

/// The longest a reply may take.
const SCRIPT_TIMEOUT: Duration = Duration::from_secs(60);

/// How long the keys of a project being uploaded live until it opens.
const UPLOAD_EXPIRY: i64 = 3600;

/// Bytes sent in one pipeline of an upload, so that neither side holds the
/// whole project twice.
const BYTES_PER_PIPELINE: usize = 2 << 20;
/// Root-list nodes per part of a streamed submit.
const PART_NODES: usize = 10_000;

/// Where a submit stops (tests stop it early, as a submitter that dies).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Step {
    #[cfg_attr(not(feature = "testing"), allow(dead_code))]
    Upload,
    #[cfg_attr(not(feature = "testing"), allow(dead_code))]
    Open,
    Release,
}

/// A pipeline sent whenever it holds about [`BYTES_PER_PIPELINE`].
#[derive(Default)]
struct Sender {
    pipe: redis::Pipeline,
    bytes: usize,
}

impl Sender {
    /// Counts `size` bytes just added; sends the pipeline once it is full.
    async fn sent(&mut self, conn: &mut ConnectionManager, size: usize) -> Result<(), Error> {
        self.bytes += size;
        if self.bytes >= BYTES_PER_PIPELINE {
            self.finish(conn).await?;
        }
        Ok(())
    }

    /// Sends what is left.
    async fn finish(&mut self, conn: &mut ConnectionManager) -> Result<(), Error> {
        if self.pipe.cmd_iter().next().is_some() {
            let () = std::mem::take(&mut self.pipe).query_async(conn).await?;
        }
        self.bytes = 0;
        Ok(())
    }
}

/// What a submit needs of its compiled project once the parts are stored.
struct Compiled {
    nodes: u32,
    vertices: usize,
    queues: Vec<String>,
    /// Vertices with nothing pending: where the release starts.
    ready: Vec<u32>,
    error: Option<String>,
}

impl Compiled {
    fn of(upload: &GraphUpload<'_>, nodes: u32) -> Compiled {
        Compiled {
            nodes,
            vertices: upload.vertices(),
            queues: upload.queues().to_vec(),
            ready: upload.drained_ready().to_vec(),
            error: upload.error().map(str::to_owned),
        }
    }
}

/// A submit's writes, part by part as [`GraphUpload::drain`] gives them
/// (records at their places, shard by shard; lists, tails, profiles and
/// payloads), in pipelines sent as they fill and at the end of each part,
/// so that what a part stored is in Redis before the next part is read (a
/// project refused later has it deleted). Each key is created with its
/// expiry in one MULTI, so that a submitter that dies mid-upload leaves
/// nothing that lasts: until the project opens, its keys expire in an
/// hour, and no worker sees it.
struct Store {
    pk: ProjectKeys,
    per_shard: usize,
    rest: Sender,
    /// The keys written so far.
    created: std::collections::HashSet<String>,
    /// Batches of the root list stored.
    root_batches: u32,
    /// Bytes of the edge string stored.
    ed_len: usize,
}

impl Store {
    fn new(pk: ProjectKeys, shard_records: u32) -> Store {
        Store {
            pk,
            per_shard: shard_records as usize,
            rest: Sender::default(),
            created: Default::default(),
            root_batches: 0,
            ed_len: 0,
        }
    }

    /// Queues `cmd`, which writes `key`; the first write to a key goes with
    /// its expiry, in one MULTI.
    fn write(&mut self, key: &str, cmd: redis::Cmd) {
        let pipe = &mut self.rest.pipe;
        if self.created.contains(key) {
            pipe.add_command(cmd).ignore();
            return;
        }
        pipe.cmd("MULTI").ignore();
        pipe.add_command(cmd).ignore();
        pipe.expire(key, UPLOAD_EXPIRY).ignore();
        pipe.cmd("EXEC").ignore();
        self.created.insert(key.to_owned());
    }

    /// Stores records `bytes` of string `name`, `size` bytes each, from
    /// record `first` on, shard by shard.
    async fn records(
        &mut self,
        conn: &mut ConnectionManager,
        name: &str,
        size: usize,
        first: u32,
        bytes: &[u8],
    ) -> Result<(), Error> {
        let mut id = first as usize;
        let mut rest = bytes;
        while !rest.is_empty() {
            let (shard, at) = record_place(id, size, self.per_shard);
            let room = (self.per_shard - id % self.per_shard) * size;
            let take = rest.len().min(room).min(BYTES_PER_COMMAND / size * size);
            let key = self.pk.shard(name, shard);
            let cmd = redis::cmd("SETRANGE")
                .arg(&key)
                .arg(at)
                .arg(&rest[..take])
                .clone();
            self.write(&key, cmd);
            self.rest.sent(conn, take).await?;
            id += take / size;
            rest = &rest[take..];
        }
        Ok(())
    }

    /// Stores fields of hash `name`, in commands of FIELDS_PER_COMMAND.
    async fn fields<F: redis::ToRedisArgs, V: redis::ToRedisArgs>(
        &mut self,
        conn: &mut ConnectionManager,
        name: &str,
        fields: &[(F, V)],
        size: impl Fn(&(F, V)) -> usize,
    ) -> Result<(), Error> {
        let key = self.pk.key(name);
        for chunk in fields.chunks(FIELDS_PER_COMMAND) {
            let mut cmd = redis::cmd("HSET");
            cmd.arg(&key);
            for (field, value) in chunk {
                cmd.arg(field).arg(value);
            }
            self.write(&key, cmd);
            self.rest.sent(conn, chunk.iter().map(&size).sum()).await?;
        }
        Ok(())
    }

    /// Stores a drained part.
    async fn part(&mut self, conn: &mut ConnectionManager, part: Drained) -> Result<(), Error> {
        self.records(conn, "nd", NODE_BYTES, part.first_node, &part.nd)
            .await?;
        for (first, vx, vp) in &part.vertices {
            self.records(conn, "vx", VERTEX_BYTES, *first, vx).await?;
            self.records(conn, "vp", 4, *first, vp).await?;
        }
        let ed = self.pk.key("ed");
        for chunk in part.ed.chunks(BYTES_PER_COMMAND) {
            let cmd = redis::cmd("SETRANGE")
                .arg(&ed)
                .arg(self.ed_len)
                .arg(chunk)
                .clone();
            self.write(&ed, cmd);
            self.ed_len += chunk.len();
            self.rest.sent(conn, chunk.len()).await?;
        }
        // Each list as its first batch, the root's as its next (see
        // `children` in project.lua).
        let mut lists: Vec<(String, Vec<u8>)> = Vec::new();
        for (g, kids) in part.children {
            let packed = kids.iter().flat_map(|k| k.to_be_bytes()).collect();
            if g == 0 {
                lists.push((format!("0:{}", self.root_batches), packed));
                self.root_batches += 1;
            } else {
                lists.push((format!("{g}#"), b"1".to_vec()));
                lists.push((format!("{g}:0"), packed));
            }
        }
        self.fields(conn, "ch", &lists, |(k, v)| k.len() + v.len())
            .await?;
        let tails: Vec<(u32, String)> =
            part.tails.iter().map(|(g, t)| (*g, tail_text(t))).collect();
        self.fields(conn, "tl", &tails, |_| 32).await?;
        self.fields(conn, "pf", &part.profiles, |(k, v)| k.len() + v.len())
            .await?;
        self.fields(conn, "jb", &part.jobs, |(_, p)| p.len() + 8)
            .await?;
        // A part goes whole before the next is read.
        self.rest.finish(conn).await
    }

    /// `stored`, once what was stored is deleted if it is an error.
    async fn settle(
        &mut self,
        conn: &mut ConnectionManager,
        stored: Result<(), Error>,
    ) -> Result<(), Error> {
        if stored.is_err() {
            self.forget(conn).await;
        }
        stored
    }

    /// Deletes what was stored (best effort: unopened, it expires within
    /// the hour anyway).
    async fn forget(&mut self, conn: &mut ConnectionManager) {
        // What is queued and not sent is dropped; some of it may have gone.
        self.rest = Sender::default();
        let keys: Vec<&String> = self.created.iter().collect();
        for chunk in keys.chunks(FIELDS_PER_COMMAND) {
            let _: Result<(), _> = redis::cmd("DEL").arg(chunk).query_async(conn).await;
        }
    }
}

/// Fields an HSCAN call asks for.
const SCAN_COUNT: usize = 250;

/// Fields and bytes per pipelined write, to keep each command short.
const FIELDS_PER_COMMAND: usize = 1000;
const BYTES_PER_COMMAND: usize = 1 << 20;

/// A job as stored for its workers.
#[derive(Clone, Debug, PartialEq, Deserialize)]
pub struct JobPayload {
    /// Its path.
    pub path: String,
    /// Its function.
    pub func: String,
    /// Its args, if it has some.
    #[serde(default)]
    pub args: Option<Value>,
    /// Whether it takes the previous node's result.
    #[serde(default)]
    pub previous: bool,
    /// Named parameters.
    #[serde(default)]
    pub kwargs: Option<Map<String, Value>>,
    /// Attempts after the first.
    pub retries: u32,
    /// How long one attempt may run.
    pub timeout_ms: Option<u64>,
    /// Initial ms, factor, max ms.
    pub backoff: [u64; 3],
    /// Its queue.
    pub queue: String,
    /// Whether its failure is allowed.
    pub allow_failure: bool,
}

impl JobPayload {
    /// The waits between attempts.
    pub fn backoff(&self) -> Backoff {
        Backoff {
            initial_ms: self.backoff[0],
            factor: u32::try_from(self.backoff[1]).unwrap_or(u32::MAX),
            max_ms: self.backoff[2],
        }
    }
}

/// An attempt begun by a worker.
#[derive(Clone, Debug, PartialEq)]
pub struct Begun {
    /// The project.
    pub project: String,
    /// The job's node id.
    pub node: u32,
    /// The attempt's number, which fences its reports.
    pub attempt: u32,
    /// The job.
    pub job: JobPayload,
    /// The previous node's result, for a job that takes it.
    pub input: Option<Value>,
    /// The lease entry it was taken under.
    pub lease: String,
}

/// What a worker that reports outcomes can begin at once (see
/// [`RedisEngine::complete_and_begin`]).
#[derive(Clone, Copy, Debug, Default)]
pub struct Handoff<'a> {
    /// Most jobs to begin.
    pub want: usize,
    /// Their lease.
    pub lease: Duration,
    /// The worker's queues.
    pub queues: &'a [String],
}

/// Jobs taken from a queue under one lease: a node of a project, or a run
/// of its nodes.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Taken {
    /// The project.
    pub project: String,
    /// The first node.
    pub first: u32,
    /// The last node (the first, for one).
    pub last: u32,
    /// The entry as stored: `<id>:<n>` or `<id>:<first>-<last>`, the
    /// member of its lease.
    pub entry: String,
}

impl Taken {
    /// Reads a queue or lease entry.
    pub fn parse(entry: &str) -> Option<Taken> {
        let (project, range) = entry.rsplit_once(':')?;
        let (first, last) = match range.split_once('-') {
            Some((a, b)) => (a.parse().ok()?, b.parse().ok()?),
            None => {
                let n = range.parse().ok()?;
                (n, n)
            }
        };
        (first <= last).then(|| Taken {
            project: project.to_owned(),
            first,
            last,
            entry: entry.to_owned(),
        })
    }

    /// Its nodes as the scripts take them: `n` or `first-last`.
    pub fn range(&self) -> String {
        if self.first == self.last {
            self.first.to_string()
        } else {
            format!("{}-{}", self.first, self.last)
        }
    }

    /// How many jobs it holds.
    pub fn len(&self) -> usize {
        (self.last - self.first) as usize + 1
    }

    /// Never empty; here for the lint that asks for it beside `len`.
    pub fn is_empty(&self) -> bool {
        false
    }
}

/// How an attempt ended, as a worker reports it.
#[derive(Clone, Debug, PartialEq)]
pub enum Completion {
    /// It returned this result (JSON text).
    Finished(String),
    /// It failed, and its failure is allowed: it finishes with `null`.
    Allowed(String),
    /// It failed and is tried again after the backoff.
    Retry {
        /// The error.
        error: String,
        /// The wait.
        backoff: Duration,
    },
    /// It failed for good, failing the project.
    Failed(String),
}

/// A project's summary in [`RedisEngine::list`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Listed {
    /// Its id.
    pub id: String,
    /// Its status.
    pub status: String,
    /// When it was submitted (stored and opened to workers), ms since the
    /// epoch, by the server's clock; its nodes' times count from it.
    pub submitted_ms: u64,
}

/// The Redis engine: a client of one Redis, under one prefix.
#[derive(Clone)]
pub struct RedisEngine {
    client: redis::Client,
    conn: ConnectionManager,
    config: Config,
    keys: Keys,
    limits: Limits,
    registry: Option<&'static Registry>,
    /// Each project's queues, in index order, as last read.
    queue_cache: Arc<Mutex<HashMap<String, Vec<String>>>>,
    /// Profiles read, by `<project>:<profile>`; they never change.
    profiles: Arc<Mutex<HashMap<String, Arc<Profile>>>>,
}

impl std::fmt::Debug for RedisEngine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisEngine")
            .field("url", &self.config.redacted_url())
            .field("prefix", &self.config.prefix)
            .finish_non_exhaustive()
    }
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

fn new_id() -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(COUNTER.fetch_add(1, Ordering::Relaxed));
    h.write_u32(std::process::id());
    format!("{:x}{:06x}", now_ms(), h.finish() & 0xff_ffff)
}

impl RedisEngine {
    /// Connects, checks that the server keeps every key, and checks jobs
    /// against `registry` when one is given.
    pub async fn connect(
        config: Config,
        limits: Limits,
        registry: Option<&'static Registry>,
    ) -> Result<RedisEngine, Error> {
        let client = config.client()?;
        // Long scripts (opening a big project) may run past redis-rs's
        // default of 500 ms; a timed-out reply would hide a step that did
        // happen.
        let manager = redis::aio::ConnectionManagerConfig::new()
            .set_response_timeout(Some(SCRIPT_TIMEOUT))
            // Fail fast on a bad address or password; outages are ridden
            // out by the callers, which try again.
            .set_number_of_retries(2);
        let mut conn = ConnectionManager::new_with_config(client.clone(), manager).await?;
        check_server(&mut conn, &config).await?;
        let keys = Keys::new(config.prefix.clone());
        Ok(RedisEngine {
            client,
            conn,
            config,
            keys,
            limits,
            registry,
            queue_cache: Arc::default(),
            profiles: Arc::default(),
        })
    }

    /// The key layout.
    pub fn keys(&self) -> &Keys {
        &self.keys
    }

    /// A connection of its own, for blocking commands.
    pub async fn dedicated(&self) -> Result<MultiplexedConnection, Error> {
        let config = redis::AsyncConnectionConfig::new().set_response_timeout(Some(SCRIPT_TIMEOUT));
        Ok(self
            .client
            .get_multiplexed_async_connection_with_config(&config)
            .await?)
    }

    /// The client, for subscriptions.
    pub fn client(&self) -> &redis::Client {
        &self.client
    }

    fn catalog(&self) -> Option<&'static (dyn Catalog + Sync)> {
        self.registry.map(|r| r as &(dyn Catalog + Sync))
    }

    /// The KEYS of a project script.
    fn script_keys(&self, pk: &ProjectKeys, queues: &[String]) -> Vec<String> {
        let mut keys: Vec<String> = PROJECT_KEYS.iter().map(|k| pk.key(k)).collect();
        keys.push(format!("{}leases", self.config.prefix));
        keys.push(format!("{}delayed", self.config.prefix));
        keys.push(self.keys.projects());
        keys.push(self.releases_key());
        keys.extend(queues.iter().map(|q| self.keys.queue(q)));
        keys
    }

    async fn queues_of(&self, id: &str) -> Result<Vec<String>, Error> {
        let mut conn = self.conn.clone();
        let queues: Option<String> = redis::cmd("HGET")
            .arg(self.keys.project(id).key("meta"))
            .arg("queues")
            .query_async(&mut conn)
            .await?;
        Ok(queues
            .filter(|q| !q.is_empty())
            .map(|q| q.split(',').map(str::to_owned).collect())
            .unwrap_or_default())
    }

    /// A call of a project function: the project's keys and its queues',
    /// then its id.
    fn script(&self, function: &Function, id: &str, queues: &[String]) -> Call {
        let pk = self.keys.project(id);
        let mut call = function.call();
        for key in self.script_keys(&pk, queues) {
            call.key(key);
        }
        call.arg(id);
        call
    }

    /// Runs a project script with the project's queues as KEYS, taken from
    /// a cache: a script refuses (`RQM_QUEUES`) when the project has come to
    /// use more queues than it was given, and is then run again with them
    /// read afresh. Saves a round trip per call.
    async fn run_project<T: redis::FromRedisValue>(
        &self,
        script: &Function,
        id: &str,
        args: impl Fn(&mut Call),
    ) -> Result<T, Error> {
        let mut queues = self.cached_queues(id).await?;
        let mut conn = self.conn.clone();
        for refreshed in [false, true] {
            let mut invocation = self.script(script, id, &queues);
            args(&mut invocation);
            match invocation.invoke_async(&mut conn).await {
                Err(e) if !refreshed && e.to_string().contains("RQM_QUEUES") => {
                    queues = self.refresh_queues(id).await?;
                }
                outcome => return Ok(outcome?),
            }
        }
        unreachable!("the second try returns")
    }

    /// The project's queues as last read, read now if never.
    async fn cached_queues(&self, id: &str) -> Result<Vec<String>, Error> {
        let cached = self
            .queue_cache
            .lock()
            .expect("never poisoned")
            .get(id)
            .cloned();
        match cached {
            Some(queues) => Ok(queues),
            None => self.refresh_queues(id).await,
        }
    }

    async fn refresh_queues(&self, id: &str) -> Result<Vec<String>, Error> {
        let queues = self.queues_of(id).await?;
        let mut cache = self.queue_cache.lock().expect("never poisoned");
        if cache.len() >= QUEUE_CACHE {
            cache.clear();
        }
        cache.insert(id.to_owned(), queues.clone());
        Ok(queues)
    }

    /// Checks a JSON project (SPEC 8) and submits it.
    ///
    /// The project is streamed: read, checked and compiled in parts of its
    /// root list on a thread of its own while what is already compiled is
    /// stored: job payloads and every record that is final (all but the
    /// few vertices at the root list's tail, which later parts add edges
    /// to), so that neither the tree, nor its jobs, nor its graph is held
    /// whole. Should the project be rejected part way, what was stored is
    /// deleted (and would expire within the hour anyway; it is never
    /// opened).
    ///
    /// The text is read on that thread: given as a `Vec<u8>`, it is moved
    /// there; given borrowed, it is copied.
    pub async fn submit_json(
        &self,
        json: impl Into<std::borrow::Cow<'_, [u8]>>,
    ) -> Result<String, Error> {
        let json = json.into();
        if json.len() > self.limits.max_bytes {
            // Refused before anything is copied.
            parse_project(&json, &self.limits, None)?;
        }
        let id = new_id();
        let (json, limits, catalog) = (json.into_owned(), self.limits.clone(), self.catalog());
        let (parts_tx, mut parts) = tokio::sync::mpsc::channel::<Drained>(2);
        let (done_tx, done) = tokio::sync::oneshot::channel();
        std::thread::Builder::new()
            .name("rqm-submit".into())
            .spawn(move || {
                let mut upload = GraphUpload::new(0, 0, catalog, Vec::new());
                let mut root = RootCompiler::start(&mut upload, 0);
                let read = parse_project_parts(
                    &json,
                    &limits,
                    catalog.map(|c| c as &dyn Catalog),
                    PART_NODES,
                    &mut |part| {
                        root.push(&mut upload, part);
                        // A submit that gave up stops listening; reading
                        // goes on to the end, harmlessly.
                        let _ = parts_tx.blocking_send(upload.drain(&root.open_vertices()));
                    },
                );
                drop(parts_tx);
                let _ = done_tx.send(read.map(|()| {
                    let nodes = root.finish(&mut upload);
                    let last = upload.drain(&[]);
                    (Compiled::of(&upload, nodes), last)
                }));
            })
            .map_err(|e| Error::Submit(format!("cannot start its thread: {e}")))?;
        let mut conn = self.conn.clone();
        let mut store = Store::new(self.keys.project(&id), self.config.shard_records);
        let mut sent: Result<(), Error> = Ok(());
        while let Some(part) = parts.recv().await {
            if sent.is_ok() {
                sent = store.part(&mut conn, part).await;
            }
        }
        let compiled = done
            .await
            .map_err(|_| Error::Submit("its thread stopped without an answer".into()))?;
        let stored = match (compiled, sent) {
            (Err(rejection), _) => Err(Error::Rejected(rejection)),
            (Ok(_), Err(e)) => Err(e),
            (Ok((compiled, last)), Ok(())) => {
                self.finish_store(&mut conn, &id, &mut store, last, compiled, Step::Release)
                    .await
            }
        };
        store.settle(&mut conn, stored).await.map(|()| id)
    }

    /// Checks `project` and stores it; workers see it only once all of it
    /// is stored. A rejected project stores nothing. Returns its id.
    pub async fn submit(&self, project: Project) -> Result<String, Error> {
        self.submit_with(project, Step::Release).await
    }

    /// Stores `project` and stops before it opens, as a submitter that died
    /// mid-upload would: for tests of what such a project leaves.
    #[cfg(feature = "testing")]
    pub async fn upload_only(&self, project: Project) -> Result<String, Error> {
        self.submit_with(project, Step::Upload).await
    }

    /// Submits `project` and leaves a wide first release to the workers'
    /// keepers, as a submitter that died after opening it would: for tests.
    #[cfg(feature = "testing")]
    pub async fn submit_leaving_release(&self, project: Project) -> Result<String, Error> {
        self.submit_with(project, Step::Open).await
    }

    async fn submit_with(&self, project: Project, last: Step) -> Result<String, Error> {
        validate(&project, &self.limits, self.catalog().map(|c| c as _))?;
        let id = new_id();
        let mut conn = self.conn.clone();
        let mut store = Store::new(self.keys.project(&id), self.config.shard_records);
        // Compiled and stored in parts of the root list, as a streamed
        // submit is: the graph is never held whole.
        let mut upload = GraphUpload::new(0, 0, self.catalog(), Vec::new());
        let mut root = RootCompiler::start(&mut upload, project.jobs.len());
        let mut jobs = project.jobs.into_iter().peekable();
        let stored: Result<(), Error> = async {
            while jobs.peek().is_some() {
                root.push(&mut upload, jobs.by_ref().take(PART_NODES).collect());
                store
                    .part(&mut conn, upload.drain(&root.open_vertices()))
                    .await?;
            }
            let nodes = root.finish(&mut upload);
            let part = upload.drain(&[]);
            let compiled = Compiled::of(&upload, nodes);
            self.finish_store(&mut conn, &id, &mut store, part, compiled, last)
                .await
        }
        .await;
        store.settle(&mut conn, stored).await.map(|()| id)
    }

    /// Stores the last part of a compiled project and what is left: the
    /// live records, the root list's batch count, and the meta hash (last,
    /// so that a project whose meta exists is whole); up to `last`, opens
    /// and releases it.
    async fn finish_store(
        &self,
        conn: &mut ConnectionManager,
        id: &str,
        store: &mut Store,
        part: Drained,
        compiled: Compiled,
        last: Step,
    ) -> Result<(), Error> {
        if let Some(error) = compiled.error {
            return Err(Error::Rejected(Rejection {
                errors: vec![ValidationError {
                    path: Path::root(),
                    key: Some("queue".into()),
                    message: error,
                }],
            }));
        }
        store.part(conn, part).await?;
        let nodes = compiled.nodes as usize;
        let per_shard = store.per_shard;
        // The live records start zeroed: one byte written at each shard's
        // end.
        for k in 0..nodes.div_ceil(per_shard).max(1) {
            let records = (nodes - k * per_shard).min(per_shard);
            let at = (records * LIVE_BYTES).max(1) - 1;
            let key = store.pk.shard("nl", k);
            store.write(
                &key,
                redis::cmd("SETRANGE")
                    .arg(&key)
                    .arg(at)
                    .arg(&[0u8][..])
                    .clone(),
            );
        }
        let ch = store.pk.key("ch");
        let batches = store.root_batches;
        store.write(
            &ch,
            redis::cmd("HSET").arg(&ch).arg("0#").arg(batches).clone(),
        );
        let meta = store.pk.key("meta");
        let mut hset = redis::cmd("HSET");
        hset.arg(&meta);
        for (field, value) in [
            ("status", "running".to_owned()),
            ("submitted_ms", now_ms().to_string()),
            ("next_node", compiled.nodes.to_string()),
            ("next_vertex", compiled.vertices.to_string()),
            ("queues", compiled.queues.join(",")),
            ("retention_s", self.config.retention.as_secs().to_string()),
            ("shard", per_shard.to_string()),
        ] {
            hset.arg(field).arg(value);
        }
        store.write(&meta, hset);
        store.rest.finish(conn).await?;
        if last == Step::Upload {
            return Ok(());
        }
        let more: i64 = self
            .script(&OPEN, id, &compiled.queues)
            .arg(compiled.ready)
            .invoke_async(conn)
            .await?;
        if more == 1 && last == Step::Release {
            self.release(id).await?;
        }
        Ok(())
    }

    /// Takes up to `n` ready jobs of `queue`, each entry leased for `lease`.
    pub async fn take(&self, queue: &str, n: usize, lease: Duration) -> Result<Vec<Taken>, Error> {
        let mut conn = self.conn.clone();
        let entries: Vec<String> = TAKE
            .key(self.keys.queue(queue))
            .key(format!("{}leases", self.config.prefix))
            .arg(n)
            .arg(lease.as_millis() as u64)
            .invoke_async(&mut conn)
            .await?;
        Ok(entries.iter().filter_map(|e| Taken::parse(e)).collect())
    }

    /// Begins attempts of the jobs of leased entries of one project.
    pub async fn begin(&self, id: &str, entries: &[Taken]) -> Result<Vec<Begun>, Error> {
        let ranges: Vec<String> = entries.iter().map(Taken::range).collect();
        let (rows, payloads) = self.begin_rows(id, &ranges, entries).await?;
        let mut begun = Vec::with_capacity(rows.len());
        let payloads: HashMap<u32, Option<String>> = entries
            .iter()
            .flat_map(|e| e.first..=e.last)
            .zip(payloads)
            .collect();
        for (node, attempt, input) in rows {
            let lease = entries
                .iter()
                .find(|e| (e.first..=e.last).contains(&node))
                .map(|e| e.entry.clone())
                .unwrap_or_default();
            let payload = payloads.get(&node).cloned().flatten();
            begun.push(self.begun(id, node, attempt, input, payload, lease).await?);
        }
        Ok(begun)
    }

    /// An attempt begun, from its script row and the job's payload.
    async fn begun(
        &self,
        id: &str,
        node: u32,
        attempt: u32,
        input: Option<String>,
        payload: Option<String>,
        lease: String,
    ) -> Result<Begun, Error> {
        let payload = payload.ok_or_else(|| Error::Corrupt {
            what: format!("job {node} of project {id}"),
            reason: "its payload is missing".into(),
        })?;
        let job = self.job_payload(id, node, &payload).await?;
        let input = match input {
            Some(text) => match text.strip_prefix("g:") {
                Some(group) => {
                    let group: u32 = group.parse().map_err(|_| Error::Corrupt {
                        what: format!("the input of job {node} of project {id}"),
                        reason: format!("{text:?}"),
                    })?;
                    Some(self.group_result(id, group).await?)
                }
                None => Some(serde_json::from_str(&text).map_err(|e| Error::Corrupt {
                    what: format!("the input of job {node} of project {id}"),
                    reason: e.to_string(),
                })?),
            },
            None => None,
        };
        Ok(Begun {
            project: id.to_owned(),
            node,
            attempt,
            job,
            input,
            lease,
        })
    }

    /// A stored payload with its profile, which is read once per project
    /// and kept.
    async fn job_payload(&self, id: &str, node: u32, payload: &str) -> Result<JobPayload, Error> {
        let corrupt = |reason: String| Error::Corrupt {
            what: format!("job {node} of project {id}"),
            reason,
        };
        let stored: OwnedJob = serde_json::from_str(payload).map_err(|e| corrupt(e.to_string()))?;
        let key = format!("{id}:{}", stored.profile);
        let cached = self
            .profiles
            .lock()
            .expect("never poisoned")
            .get(&key)
            .cloned();
        let profile = match cached {
            Some(profile) => profile,
            None => {
                let mut conn = self.conn.clone();
                let text: Option<String> = redis::cmd("HGET")
                    .arg(self.keys.project(id).key("pf"))
                    .arg(&stored.profile)
                    .query_async(&mut conn)
                    .await?;
                let text = text
                    .ok_or_else(|| corrupt(format!("its profile {} is missing", stored.profile)))?;
                let profile: Arc<Profile> =
                    Arc::new(serde_json::from_str(&text).map_err(|e| corrupt(e.to_string()))?);
                let mut cache = self.profiles.lock().expect("never poisoned");
                if cache.len() >= QUEUE_CACHE {
                    cache.clear();
                }
                cache.insert(key, profile.clone());
                profile
            }
        };
        Ok(JobPayload {
            path: stored.path,
            func: profile.func.clone(),
            args: stored.args,
            previous: profile.previous,
            kwargs: stored.kwargs,
            retries: profile.retries,
            timeout_ms: profile.timeout_ms,
            backoff: profile.backoff,
            queue: profile.queue.clone(),
            allow_failure: profile.allow_failure,
        })
    }

    /// The begin script's rows, and every taken job's payload, read in the
    /// same round trip (payloads never change once stored).
    async fn begin_rows(
        &self,
        id: &str,
        ranges: &[String],
        entries: &[Taken],
    ) -> Result<(Vec<(u32, u32, Option<String>)>, Vec<Option<String>>), Error> {
        let fields: Vec<u32> = entries.iter().flat_map(|e| e.first..=e.last).collect();
        let mut queues = self.cached_queues(id).await?;
        let mut conn = self.conn.clone();
        let pk = self.keys.project(id);
        let mut tries = 0;
        loop {
            tries += 1;
            let keys = self.script_keys(&pk, &queues);
            let mut call = BEGIN.call();
            for key in keys {
                call.key(key);
            }
            call.arg(id).arg(ranges);
            let mut pipe = redis::pipe();
            pipe.add_command(call.cmd());
            pipe.cmd("HMGET").arg(pk.key("jb")).arg(&fields);
            let reply: redis::RedisResult<(Vec<redis::Value>, Vec<Option<String>>)> =
                pipe.query_async(&mut conn).await;
            match reply {
                Ok((flat, payloads)) => return Ok((begin_reply(id, &flat)?, payloads)),
                // The library is not loaded yet (a pipeline does not load it).
                Err(e) if tries < 3 && is_not_loaded(&e) => {
                    scripts::load(&mut conn).await?;
                }
                Err(e) if tries < 3 && e.to_string().contains("RQM_QUEUES") => {
                    queues = self.refresh_queues(id).await?;
                }
                Err(e) => return Err(e.into()),
            }
        }
    }

    /// A group's result (SPEC 4): the array of its list's results, nested
    /// groups assembled in turn. Group results are not stored, so that no
    /// call is as long as a big group.
    pub async fn group_result(&self, id: &str, group: u32) -> Result<Value, Error> {
        let pk = self.keys.project(id);
        let mut conn = self.conn.clone();
        let mut out: HashMap<u32, Value> = HashMap::new();
        // Depth-first: a group's list, then its groups' lists.
        let mut order: Vec<(u32, Vec<u32>)> = Vec::new();
        let mut todo = vec![group];
        let mut flags: HashMap<u32, bool> = HashMap::new();
        let per_shard = shard_records(&mut conn, &pk).await?;
        while let Some(g) = todo.pop() {
            let kids = self.children_of(&mut conn, &pk, g).await?;
            let unknown: Vec<u32> = kids
                .iter()
                .copied()
                .filter(|k| !flags.contains_key(k))
                .collect();
            for (k, is_group) in unknown
                .iter()
                .zip(self.are_groups(&mut conn, &pk, &unknown, per_shard).await?)
            {
                flags.insert(*k, is_group);
            }
            for k in &kids {
                if flags[k] {
                    todo.push(*k);
                }
            }
            order.push((g, kids));
        }
        let jobs: Vec<u32> = order
            .iter()
            .flat_map(|(_, kids)| kids.iter().copied())
            .filter(|k| !flags[k])
            .collect();
        for chunk in jobs.chunks(FIELDS_PER_COMMAND) {
            let values: Vec<Option<String>> = redis::cmd("HMGET")
                .arg(pk.key("rs"))
                .arg(chunk)
                .query_async(&mut conn)
                .await?;
            for (k, v) in chunk.iter().zip(values) {
                let value = match v {
                    Some(text) => serde_json::from_str(&text).map_err(|e| Error::Corrupt {
                        what: format!("the result of node {k} of project {id}"),
                        reason: e.to_string(),
                    })?,
                    None => Value::Null,
                };
                out.insert(*k, value);
            }
        }
        for (g, kids) in order.into_iter().rev() {
            let list = kids
                .iter()
                .map(|k| out.remove(k).unwrap_or(Value::Null))
                .collect();
            out.insert(g, Value::Array(list));
        }
        Ok(out.remove(&group).unwrap_or(Value::Null))
    }

    async fn children_of(
        &self,
        conn: &mut ConnectionManager,
        pk: &ProjectKeys,
        group: u32,
    ) -> Result<Vec<u32>, Error> {
        let batches: Option<u32> = redis::cmd("HGET")
            .arg(pk.key("ch"))
            .arg(format!("{group}#"))
            .query_async(conn)
            .await?;
        let batches = batches.unwrap_or(0);
        if batches == 0 {
            return Ok(Vec::new());
        }
        let fields: Vec<String> = (0..batches).map(|b| format!("{group}:{b}")).collect();
        let raw: Vec<Option<Vec<u8>>> = redis::cmd("HMGET")
            .arg(pk.key("ch"))
            .arg(&fields)
            .query_async(conn)
            .await?;
        Ok(raw
            .into_iter()
            .flatten()
            .flat_map(|b| {
                b.chunks_exact(4)
                    .map(|w| u32::from_be_bytes(w.try_into().expect("4 bytes")))
                    .collect::<Vec<_>>()
            })
            .collect())
    }

    /// Whether each node is a group, from the flags of its record; the
    /// project's strings hold `per_shard` records a shard.
    async fn are_groups(
        &self,
        conn: &mut ConnectionManager,
        pk: &ProjectKeys,
        nodes: &[u32],
        per_shard: usize,
    ) -> Result<Vec<bool>, Error> {
        let (Some(&low), Some(&high)) = (nodes.iter().min(), nodes.iter().max()) else {
            return Ok(Vec::new());
        };
        let place = |n: u32| record_place(n as usize, NODE_BYTES, per_shard);
        // A list's nodes are mostly neighbours: one read of their span.
        let ((shard, at), (last_shard, _)) = (place(low), place(high));
        if (high - low) as usize <= 4 * nodes.len() + 64 && shard == last_shard {
            let span: Vec<u8> = redis::cmd("GETRANGE")
                .arg(pk.shard("nd", shard))
                .arg(at)
                .arg(at + (high - low + 1) as usize * NODE_BYTES - 1)
                .query_async(conn)
                .await?;
            return Ok(nodes
                .iter()
                .map(|n| {
                    span.get((n - low) as usize * NODE_BYTES + 12)
                        .is_some_and(|b| b & 1 != 0)
                })
                .collect());
        }
        let mut pipe = redis::pipe();
        for n in nodes {
            let (shard, at) = place(*n);
            let at = at + 12;
            pipe.getrange(pk.shard("nd", shard), at as isize, at as isize);
        }
        let flags: Vec<Vec<u8>> = pipe.query_async(conn).await?;
        Ok(flags
            .iter()
            .map(|f| f.first().is_some_and(|b| b & 1 != 0))
            .collect())
    }

    /// Applies attempts' outcomes for one project; returns the nodes whose
    /// reports were stale and ignored (SPEC 7).
    /// `done` are the lease entries (their [`Taken::range`]) all of whose
    /// attempts have now been reported: their leases go.
    pub async fn complete(
        &self,
        id: &str,
        done: &[String],
        outcomes: &[(u32, u32, Completion, String)],
    ) -> Result<Vec<u32>, Error> {
        let (stale, _) = self
            .complete_and_begin(id, done, outcomes, Handoff::default())
            .await?;
        Ok(stale)
    }

    /// [`RedisEngine::complete`], and begins, there and then, up to
    /// `handoff.want` of the jobs the outcomes make ready on the caller's
    /// queues, leased to it: a chain's next job starts without a trip
    /// through its queue. Returns the stale nodes and the attempts begun.
    pub async fn complete_and_begin(
        &self,
        id: &str,
        done: &[String],
        outcomes: &[(u32, u32, Completion, String)],
        handoff: Handoff<'_>,
    ) -> Result<(Vec<u32>, Vec<Begun>), Error> {
        let queues = handoff.queues.join(",");
        type Reply = (Vec<u32>, i64, Vec<redis::Value>, Vec<Option<String>>);
        let (stale, more, rows, payloads): Reply = self
            .run_project(&COMPLETE, id, |invocation| {
                invocation
                    .arg(handoff.want)
                    .arg(handoff.lease.as_millis() as u64)
                    .arg(&queues);
                invocation.arg(done.len()).arg(done);
                for (node, attempt, completion, path) in outcomes {
                    invocation.arg(node).arg(attempt);
                    match completion {
                        Completion::Finished(result) => invocation.arg("ok").arg(result).arg(""),
                        Completion::Allowed(error) => invocation.arg("allow").arg(error).arg(""),
                        Completion::Retry { error, backoff } => invocation
                            .arg("retry")
                            .arg(error)
                            .arg(backoff.as_millis() as u64),
                        Completion::Failed(error) => invocation.arg("fail").arg(error).arg(path),
                    };
                }
            })
            .await?;
        let rows = begin_reply(id, &rows)?;
        let mut begun = Vec::with_capacity(rows.len());
        for ((node, attempt, input), payload) in rows.into_iter().zip(payloads) {
            let lease = format!("{id}:{node}");
            begun.push(self.begun(id, node, attempt, input, payload, lease).await?);
        }
        if more == 1 {
            self.release(id).await?;
        }
        Ok((stale, begun))
    }

    /// The set of projects with a release left for later calls, scored by
    /// when any client may go on with it.
    fn releases_key(&self) -> String {
        format!("{}releases", self.config.prefix)
    }

    /// Goes on with a release that a call left for later (a barrier that
    /// releases more jobs than one call does), call by call, until it is
    /// done. Each call is short and atomic, so Redis serves other clients
    /// in between; if this client dies, a worker's keeper goes on.
    pub async fn release(&self, id: &str) -> Result<(), Error> {
        loop {
            let more: i64 = self.run_project(&RELEASE, id, |_| {}).await?;
            if more == 0 {
                return Ok(());
            }
        }
    }

    /// Goes on with releases whose client stopped (died) before it was
    /// done; returns how many projects it went on with.
    pub async fn release_due(&self, max: usize) -> Result<usize, Error> {
        let mut conn = self.conn.clone();
        let ids: Vec<String> = DUE
            .key(self.releases_key())
            .arg(max)
            .arg(RELEASE_CLAIM.as_millis() as u64)
            .invoke_async(&mut conn)
            .await?;
        for id in &ids {
            self.release(id).await?;
        }
        Ok(ids.len())
    }

    /// Completes an attempt that appended `nodes` to its list, atomically
    /// (SPEC 5.4). Nodes that break a rule fail the job, with every error.
    /// Returns `false` when the report was stale.
    pub async fn complete_with_nodes(
        &self,
        begun: &Begun,
        result: String,
        nodes: Vec<Node>,
        done: &[String],
    ) -> Result<bool, Error> {
        let id = &begun.project;
        let pk = self.keys.project(id);
        // What never changes: the job's list (its parent and path) and the
        // project's shard size.
        let mut conn = self.conn.clone();
        let parent_path: Path = begun.job.path.parse::<Path>().map_err(|e| Error::Corrupt {
            what: format!("the path of job {} of project {id}", begun.node),
            reason: e.to_string(),
        })?;
        let parent_path = parent_path.parent().unwrap_or_default();
        let per_shard = shard_records(&mut conn, &pk).await?;
        let (shard, at) = record_place(begun.node as usize, NODE_BYTES, per_shard);
        let parent: u32 = redis::cmd("GETRANGE")
            .arg(pk.shard("nd", shard))
            .arg(at)
            .arg(at + 3)
            .query_async::<Vec<u8>>(&mut conn)
            .await
            .ok()
            .and_then(|b| b.try_into().ok())
            .map(u32::from_be_bytes)
            .ok_or_else(|| Error::Corrupt {
                what: format!("the record of job {} of project {id}", begun.node),
                reason: "missing".into(),
            })?;
        // Another job of the list may append at the same time: compile again
        // against the new tail. Each try that loses, loses to a commit.
        for _ in 0..APPEND_TRIES {
            let (tail_text_now, next_node, next_vertex, queues, edge_len): (
                Option<String>,
                u32,
                u32,
                Option<String>,
                usize,
            ) = redis::pipe()
                .hget(pk.key("tl"), parent)
                .hget(pk.key("meta"), "next_node")
                .hget(pk.key("meta"), "next_vertex")
                .hget(pk.key("meta"), "queues")
                .strlen(pk.key("ed"))
                .query_async(&mut conn)
                .await?;
            let tail_text_now = tail_text_now.unwrap_or_default();
            let tail = parse_tail(&tail_text_now).ok_or_else(|| Error::Corrupt {
                what: format!("the list tail of group {parent} of project {id}"),
                reason: format!("{tail_text_now:?}"),
            })?;
            let queues: Vec<String> = queues
                .filter(|q| !q.is_empty())
                .map(|q| q.split(',').map(str::to_owned).collect())
                .unwrap_or_default();
            let catalog = self.catalog();
            let existing = next_node as usize - 1;
            if let Err(rejection) = validate_append(
                &nodes,
                &parent_path,
                tail.len,
                existing,
                &self.limits,
                catalog.map(|c| c as _),
            ) {
                let error = format!("the nodes it added were refused: {rejection}");
                let outcome = (
                    begun.node,
                    begun.attempt,
                    Completion::Failed(error),
                    begun.job.path.clone(),
                );
                let stale = self.complete(id, done, &[outcome]).await?;
                return Ok(stale.is_empty());
            }
            // The list's last node, which a first added node with
            // `previousJobArgs` takes its input from: the owner of the tail's
            // last vertex.
            let last_child = if tail.last == rqm_core::NO_VERTEX {
                None
            } else {
                let (shard, at) = record_place(tail.last as usize, VERTEX_BYTES, per_shard);
                let meta: Vec<u8> = redis::cmd("GETRANGE")
                    .arg(pk.shard("vx", shard))
                    .arg(at)
                    .arg(at + 3)
                    .query_async(&mut conn)
                    .await?;
                let meta: [u8; 4] = meta.try_into().map_err(|_| Error::Corrupt {
                    what: format!("vertex {} of project {id}", tail.last),
                    reason: "missing".into(),
                })?;
                Some(u32::from_be_bytes(meta) & 0x3fff_ffff)
            };
            let mut upload = GraphUpload::new(next_vertex, next_node, catalog, queues);
            upload.known_group(parent, parent_path.to_string(), last_child);
            compile_append(&mut upload, parent, tail, nodes.clone(), next_node);
            let children: HashMap<String, Vec<u32>> = upload
                .children()
                .iter()
                .map(|(g, kids)| (g.to_string(), kids.clone()))
                .collect();
            let tails: HashMap<String, String> = upload
                .tails()
                .iter()
                .map(|(g, t)| (g.to_string(), tail_text(t)))
                .collect();
            let (vx, vp, mut ed) = upload.vertex_bytes(edge_len);
            // The chains of edges from older vertices go after the new
            // vertices' blocks.
            let external = upload.external_plan(edge_len + ed.len());
            ed.extend_from_slice(&external.ed);
            let plan = serde_json::json!({
                "parent": parent,
                "tail": tail_text_now,
                "next_node": next_node,
                "next_vertex": next_vertex,
                "edges": external.pairs,
                "chains": external.chains,
                "job_runs": upload.job_runs(),
                "older_targets": upload.older_targets(),
                "edge_len": edge_len,
                "children": children,
                "tails": tails,
                "queues": upload.queues(),
                "unlease": done,
                "profiles": upload.profiles(),
            });
            let nd = upload.node_bytes();
            let (outcome, more): (String, i64) = self
                .script(&APPEND, id, upload.queues())
                .arg(begun.node)
                .arg(begun.attempt)
                .arg(&result)
                .arg(plan.to_string())
                .arg(vx)
                .arg(vp)
                .arg(nd)
                .arg(ed)
                .arg(upload.jobs())
                .invoke_async(&mut conn)
                .await?;
            match outcome.as_str() {
                "ok" => {
                    if more == 1 {
                        self.release(id).await?;
                    }
                    return Ok(true);
                }
                "stale" => return Ok(false),
                _ => continue,
            }
        }
        Err(Error::Corrupt {
            what: format!(
                "the list that job {} of project {id} appends to",
                begun.node
            ),
            reason: format!("its tail changed under {APPEND_TRIES} tries in a row"),
        })
    }

    /// Extends leases still held (their entries, see [`Taken::entry`]).
    pub async fn renew(&self, entries: &[String], lease: Duration) -> Result<(), Error> {
        if entries.is_empty() {
            return Ok(());
        }
        let mut conn = self.conn.clone();
        let expiry = now_ms() + lease.as_millis() as u64;
        let mut cmd = redis::cmd("ZADD");
        cmd.arg(format!("{}leases", self.config.prefix)).arg("XX");
        for entry in entries {
            cmd.arg(expiry).arg(entry);
        }
        let _: i64 = cmd.query_async(&mut conn).await?;
        Ok(())
    }

    /// Makes jobs whose backoff has passed ready again; returns how many.
    pub async fn requeue_due(&self, max: usize) -> Result<usize, Error> {
        self.requeue_from("delayed", "retry", max, 0).await
    }

    /// Puts back jobs whose lease expired, counting the attempt; a job lost
    /// more than `max_lost` times fails for good. Returns how many.
    pub async fn recover_expired(&self, max: usize, max_lost: u32) -> Result<usize, Error> {
        self.requeue_from("leases", "lost", max, max_lost).await
    }

    async fn requeue_from(
        &self,
        set: &str,
        why: &str,
        max: usize,
        max_lost: u32,
    ) -> Result<usize, Error> {
        let mut conn = self.conn.clone();
        let entries: Vec<String> = DUE
            .key(format!("{}{set}", self.config.prefix))
            .arg(max)
            .invoke_async(&mut conn)
            .await?;
        let mut by_project: HashMap<String, Vec<String>> = HashMap::new();
        for taken in entries.iter().filter_map(|e| Taken::parse(e)) {
            by_project
                .entry(taken.project.clone())
                .or_default()
                .push(taken.range());
        }
        for (id, ranges) in &by_project {
            let _: i64 = self
                .run_project(&REQUEUE, id, |invocation| {
                    invocation.arg(why).arg(max_lost).arg(ranges);
                })
                .await?;
        }
        Ok(entries.len())
    }

    /// Fails a project whose stored state could not be read (`error` says
    /// what), so that it ends instead of its jobs going round; other projects
    /// are not touched. Returns `false` if the failure could not be recorded.
    pub async fn fail_corrupt(&self, id: &str, error: &str) -> Result<bool, Error> {
        let pk = self.keys.project(id);
        let mut conn = self.conn.clone();
        let outcome: String = CORRUPT
            .key(pk.key("meta"))
            .key(pk.key("ev"))
            .arg(format!(
                "the project's stored state is corrupt, so it was stopped: {error}"
            ))
            .invoke_async(&mut conn)
            .await?;
        Ok(outcome != "unrecorded")
    }

    /// How long until the next retry or lease expiry is due, if one waits.
    pub async fn next_due(&self) -> Result<Option<Duration>, Error> {
        let mut conn = self.conn.clone();
        let (retry, lease, release): (i64, i64, i64) = NEXT
            .key(format!("{}delayed", self.config.prefix))
            .key(format!("{}leases", self.config.prefix))
            .key(self.releases_key())
            .invoke_async(&mut conn)
            .await?;
        Ok([retry, lease, release]
            .into_iter()
            .filter(|ms| *ms >= 0)
            .min()
            .map(|ms| Duration::from_millis(ms as u64)))
    }

    /// The channel a publish on which says a retry was scheduled.
    pub fn retry_channel(&self) -> String {
        format!("{}delayed", self.config.prefix)
    }

    /// The channel a publish on which names a project that ended.
    pub fn ended_channel(&self) -> String {
        format!("{}:ended", self.keys.projects())
    }

    /// The statuses of projects, `None` for one that no longer exists.
    pub async fn statuses(&self, ids: &[String]) -> Result<Vec<Option<String>>, Error> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let mut pipe = redis::pipe();
        for id in ids {
            pipe.hget(self.keys.project(id).key("meta"), "status");
        }
        let mut conn = self.conn.clone();
        Ok(pipe.query_async(&mut conn).await?)
    }

    /// Publishes a running job's progress report on its project's event
    /// stream, as an entry `{"progress": node, "value": JSON}`.
    pub async fn progress(&self, id: &str, node: u32, value: &Value) -> Result<(), Error> {
        let mut conn = self.conn.clone();
        let () = redis::cmd("XADD")
            .arg(self.keys.project(id).key("ev"))
            .arg("MAXLEN")
            .arg("~")
            .arg(10_000)
            .arg("*")
            .arg("progress")
            .arg(node)
            .arg("value")
            .arg(value.to_string())
            .query_async(&mut conn)
            .await
            .map(|_: String| ())?;
        Ok(())
    }

    /// Cancels a project (SPEC 6.4).
    pub async fn cancel(&self, id: &str) -> Result<CancelOutcome, Error> {
        let before: String = self.run_project(&CANCEL, id, |_| {}).await?;
        match before.as_str() {
            "running" => Ok(CancelOutcome::Cancelled),
            "missing" => Err(Error::NoProject(id.to_owned())),
            _ => {
                let report = self.status(id).await?;
                let status = match report.status.as_str() {
                    "finished" => Status::Finished,
                    "cancelled" => Status::Cancelled,
                    _ => Status::Failed(FailedJob {
                        job: NodeId(0),
                        path: report
                            .failed_path
                            .as_deref()
                            .unwrap_or_default()
                            .parse()
                            .unwrap_or_default(),
                        function: String::new(),
                        error: report.error.unwrap_or_default(),
                    }),
                };
                Ok(CancelOutcome::AlreadyEnded(status))
            }
        }
    }

    /// Every project, newest first.
    pub async fn list(&self) -> Result<Vec<Listed>, Error> {
        let mut conn = self.conn.clone();
        let ids: Vec<(String, u64)> = redis::cmd("ZRANGE")
            .arg(self.keys.projects())
            .arg(0)
            .arg(-1)
            .arg("REV")
            .arg("WITHSCORES")
            .query_async(&mut conn)
            .await?;
        let statuses = self
            .statuses(&ids.iter().map(|(id, _)| id.clone()).collect::<Vec<_>>())
            .await?;
        Ok(ids
            .into_iter()
            .zip(statuses)
            .map(|((id, submitted_ms), status)| Listed {
                id,
                status: status.unwrap_or_else(|| "expired".to_owned()),
                submitted_ms,
            })
            .collect())
    }

    /// Where a project stands, with every node.
    pub async fn status(&self, id: &str) -> Result<Report, Error> {
        let pk = self.keys.project(id);
        let mut conn = self.conn.clone();
        let meta: HashMap<String, String> = redis::cmd("HGETALL")
            .arg(pk.key("meta"))
            .query_async(&mut conn)
            .await
            .map_err(|e| {
                let e = Error::from(e);
                if e.is_transient() {
                    return e;
                }
                Error::Corrupt {
                    what: format!("the meta key of project {id}"),
                    reason: e.to_string(),
                }
            })?;
        // A part that does not read (a key tampered with) is left out, so
        // that the status still says what it can.
        let per_shard = parse_shard(meta.get("shard").map(String::as_str));
        let stored = meta
            .get("next_node")
            .and_then(|n| n.parse::<usize>().ok())
            .unwrap_or(0);
        let mut pipe = redis::pipe();
        for k in 0..stored.div_ceil(per_shard).max(1) {
            pipe.get(pk.shard("nd", k)).get(pk.shard("nl", k));
        }
        let shards: Vec<Vec<u8>> = pipe
            .query_async(&mut conn)
            .await
            .map_err(Error::from)
            .or_else(tolerated)?;
        let (nd, nl): (Vec<u8>, Vec<u8>) = (
            shards.iter().step_by(2).flatten().copied().collect(),
            shards
                .iter()
                .skip(1)
                .step_by(2)
                .flatten()
                .copied()
                .collect(),
        );
        let jobs = hash_all(&mut conn, &pk.key("jb"))
            .await
            .or_else(tolerated)?;
        let errors = hash_all(&mut conn, &pk.key("er"))
            .await
            .or_else(tolerated)?;
        let profiles: HashMap<String, Profile> = redis::cmd("HGETALL")
            .arg(pk.key("pf"))
            .query_async::<HashMap<String, String>>(&mut conn)
            .await
            .map_err(Error::from)
            .or_else(tolerated)?
            .into_iter()
            .filter_map(|(k, v)| Some((k, serde_json::from_str(&v).ok()?)))
            .collect();
        let Some(status) = meta.get("status").cloned() else {
            return Err(Error::NoProject(id.to_owned()));
        };
        let mut paths: Vec<Path> = Vec::with_capacity(nd.len() / NODE_BYTES);
        let mut nodes = Vec::new();
        let mut counts = StateCounts::default();
        // A field of node n's live record: state at 0, then u32s.
        let live = |n: usize, at: usize| nl.get(LIVE_BYTES * n + at..LIVE_BYTES * (n + 1));
        let live_word = |n: usize, at: usize| {
            live(n, at)
                .and_then(|w| w.get(..4))
                .map_or(0, |w| u32::from_be_bytes(w.try_into().expect("4 bytes")))
        };
        for (n, rec) in nd.chunks_exact(NODE_BYTES).enumerate() {
            let word = |at: usize| u32::from_be_bytes(rec[at..at + 4].try_into().expect("4 bytes"));
            let (parent, index, flags) = (word(0), word(4), rec[12]);
            let state = live(n, 0).map_or(0, |r| r[0]);
            let path = if n == 0 {
                Path::root()
            } else {
                paths
                    .get(parent as usize)
                    .map_or_else(Path::root, |p| p.child(index))
            };
            paths.push(path.clone());
            if n == 0 {
                continue;
            }
            let group = flags & 1 != 0;
            let state = match state {
                0 => NodeState::Pending,
                1 => NodeState::Ready,
                2 => NodeState::Running,
                3 => NodeState::Retrying,
                4 => NodeState::Finished,
                _ => NodeState::Failed,
            };
            if !group {
                *match state {
                    NodeState::Pending => &mut counts.pending,
                    NodeState::Ready => &mut counts.ready,
                    NodeState::Running => &mut counts.running,
                    NodeState::Retrying => &mut counts.retrying,
                    NodeState::Finished => &mut counts.finished,
                    _ => &mut counts.failed,
                } += 1;
            }
            let time = |at: usize| match live_word(n, at) {
                0 => None,
                t => Some(u64::from(t - 1) * 1000),
            };
            let n = n as u32;
            nodes.push(NodeReport {
                path,
                function: if group {
                    None
                } else {
                    jobs.get(&n)
                        .and_then(|p| serde_json::from_str::<OwnedJob>(p).ok())
                        .and_then(|p| profiles.get(&p.profile))
                        .map(|p| Arc::from(p.func.as_str()))
                },
                state,
                attempts: live_word(n as usize, 1),
                error: errors.get(&n).cloned(),
                started_us: time(5),
                finished_us: time(9),
            });
        }
        nodes.sort_by(|a, b| a.path.cmp(&b.path));
        let result = if status == "finished" {
            let results = hash_all(&mut conn, &pk.key("rs")).await?;
            Some(assemble(id, &nd, &results)?)
        } else {
            None
        };
        let (failed_path, error) = if status == "failed" {
            let path = meta.get("failed_path").cloned().filter(|p| !p.is_empty());
            let message = meta.get("error").map_or("", String::as_str);
            let error = match &path {
                Some(path) => format!(
                    "job {path} ({}) failed: {message}",
                    meta.get("failed_function").map_or("?", String::as_str)
                ),
                None => message.to_owned(),
            };
            (path, Some(error))
        } else {
            (None, None)
        };
        Ok(Report {
            status,
            result,
            failed_path,
            error,
            counts,
            nodes,
        })
    }

    /// Waits until a project has ended and returns its report: event-driven,
    /// on the project's event stream. `None` for no limit.
    pub async fn wait(&self, id: &str, limit: Option<Duration>) -> Result<Report, Error> {
        let deadline = limit.map(|l| tokio::time::Instant::now() + l);
        let mut outage = 0u32;
        loop {
            match self.wait_once(id, limit, deadline).await {
                // The connection dropped (Redis restarted, say): wait on.
                Err(e) if e.is_transient() && outage < 60 => {
                    outage += 1;
                    let pause = Duration::from_millis((50u64 << outage.min(4)).min(500));
                    tokio::time::sleep(pause).await;
                }
                other => return other,
            }
        }
    }

    async fn wait_once(
        &self,
        id: &str,
        limit: Option<Duration>,
        deadline: Option<tokio::time::Instant>,
    ) -> Result<Report, Error> {
        let pk = self.keys.project(id);
        let mut conn = self.dedicated().await?;
        let mut last: String = {
            let newest: Vec<StreamEntry> = redis::cmd("XREVRANGE")
                .arg(pk.key("ev"))
                .arg("+")
                .arg("-")
                .arg("COUNT")
                .arg(1)
                .query_async(&mut conn)
                .await?;
            newest
                .into_iter()
                .next()
                .map_or_else(|| "0-0".to_owned(), |(id, _)| id)
        };
        loop {
            let status: Option<String> = redis::cmd("HGET")
                .arg(pk.key("meta"))
                .arg("status")
                .query_async(&mut conn)
                .await?;
            match status.as_deref() {
                None => return Err(Error::NoProject(id.to_owned())),
                Some("running") => {}
                Some(_) => {
                    let report = self.status(id).await?;
                    if report.counts.running == 0 {
                        return Ok(report);
                    }
                }
            }
            let block_ms = match deadline {
                Some(d) => {
                    let left = d.saturating_duration_since(tokio::time::Instant::now());
                    if left.is_zero() {
                        return Err(Error::Timeout {
                            id: id.to_owned(),
                            seconds: limit.unwrap_or_default().as_secs_f64(),
                        });
                    }
                    left.as_millis().clamp(1, 1000) as u64
                }
                None => 1000,
            };
            let reply: Option<Vec<(String, Vec<StreamEntry>)>> = redis::cmd("XREAD")
                .arg("COUNT")
                .arg(1000)
                .arg("BLOCK")
                .arg(block_ms)
                .arg("STREAMS")
                .arg(pk.key("ev"))
                .arg(&last)
                .query_async(&mut conn)
                .await?;
            if let Some(streams) = reply {
                for (_, entries) in streams {
                    if let Some((newest, _)) = entries.last() {
                        last = newest.clone();
                    }
                }
            }
        }
    }
}

/// An entry of a project's event stream: its id and fields.
type StreamEntry = (String, HashMap<String, String>);

/// The begin script's flat reply as (node, attempt, input) rows.
fn begin_reply(id: &str, flat: &[redis::Value]) -> Result<Vec<(u32, u32, Option<String>)>, Error> {
    let bad = |reason: String| Error::Corrupt {
        what: format!("the begin reply of project {id}"),
        reason,
    };
    if !flat.len().is_multiple_of(3) {
        return Err(bad(format!("{} values, not threes", flat.len())));
    }
    flat.chunks(3)
        .map(|row| {
            let node: u32 = redis::from_redis_value_ref(&row[0]).map_err(|e| bad(e.to_string()))?;
            let attempt: u32 =
                redis::from_redis_value_ref(&row[1]).map_err(|e| bad(e.to_string()))?;
            let input: Option<String> =
                redis::from_redis_value_ref(&row[2]).map_err(|e| bad(e.to_string()))?;
            Ok((node, attempt, input))
        })
        .collect()
}

/// Records per shard of a project's record strings, as it was stored with;
/// `usize::MAX` (one shard) for a project stored before strings had shards.
async fn shard_records(conn: &mut ConnectionManager, pk: &ProjectKeys) -> Result<usize, Error> {
    let shard: Option<String> = redis::cmd("HGET")
        .arg(pk.key("meta"))
        .arg("shard")
        .query_async(conn)
        .await?;
    Ok(parse_shard(shard.as_deref()))
}

/// A project's `shard` field as the scripts read it: a value that is not a
/// valid shard size (none, or tampered with) means one shard.
fn parse_shard(field: Option<&str>) -> usize {
    field
        .and_then(|s| s.parse::<u32>().ok())
        .filter(|&s| crate::config::valid_shard(s))
        .map_or(usize::MAX, |s| s as usize)
}

/// The project's result (SPEC 4) from every node record and job result:
/// each group's the array of its list's, in list order.
fn assemble(id: &str, nd: &[u8], results: &HashMap<u32, String>) -> Result<Value, Error> {
    let count = nd.len() / NODE_BYTES;
    let mut kids: Vec<Vec<(u32, u32)>> = vec![Vec::new(); count];
    let mut group = vec![false; count];
    for (n, rec) in nd.chunks_exact(NODE_BYTES).enumerate() {
        let word = |at: usize| u32::from_be_bytes(rec[at..at + 4].try_into().expect("4 bytes"));
        group[n] = rec[12] & 1 != 0;
        if n > 0
            && let Some(list) = kids.get_mut(word(0) as usize)
        {
            list.push((word(4), n as u32));
        }
    }
    // A node's id is above its parent's: build from the last node up.
    let mut values: Vec<Option<Value>> = vec![None; count];
    for n in (0..count).rev() {
        let value = if group[n] {
            let mut list = std::mem::take(&mut kids[n]);
            list.sort_unstable();
            Value::Array(
                list.iter()
                    .map(|(_, k)| values[*k as usize].take().unwrap_or(Value::Null))
                    .collect(),
            )
        } else {
            match results.get(&(n as u32)) {
                Some(text) => serde_json::from_str(text).map_err(|e| Error::Corrupt {
                    what: format!("the result of node {n} of project {id}"),
                    reason: e.to_string(),
                })?,
                None => Value::Null,
            }
        };
        values[n] = Some(value);
    }
    Ok(values
        .first_mut()
        .and_then(Option::take)
        .unwrap_or(Value::Null))
}

/// Every field of a hash of node ids, in short HSCAN calls, so that reading
/// a big project's hash never holds Redis up for long.
async fn hash_all(conn: &mut ConnectionManager, key: &str) -> Result<HashMap<u32, String>, Error> {
    let mut out = HashMap::new();
    let mut cursor = 0u64;
    loop {
        let (next, fields): (u64, Vec<(u32, String)>) = redis::cmd("HSCAN")
            .arg(key)
            .arg(cursor)
            .arg("COUNT")
            .arg(SCAN_COUNT)
            .query_async(conn)
            .await?;
        out.extend(fields);
        if next == 0 {
            return Ok(out);
        }
        cursor = next;
    }
}

/// A part of a status that does not read: left out when the key is not as
/// rqm wrote it (tampered with), so that the status says what it can; a
/// connection that failed is an error, to try again.
fn tolerated<T: Default>(e: Error) -> Result<T, Error> {
    if e.is_transient() {
        Err(e)
    } else {
        Ok(T::default())
    }
}
