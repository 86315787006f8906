//! The JSON form of projects and job outputs (SPEC 8), read in one streaming
//! pass that collects every error, bounds nesting before it recurses, and
//! never builds the tree as an intermediate `serde_json::Value`.

use std::fmt;

use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use serde::ser::{SerializeMap, Serializer};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Number, Value};

use crate::error::{Rejection, ValidationError};
use crate::model::{Input, JobOptions, JobSpec, Node, NodeKind, Path, Project};
use crate::output::Output;
use crate::registry::{Backoff, Catalog, describe};
use crate::validate::{Checker, Limits};

/// The visitor methods for scalars, each calling `$on(self, "a description")`.
macro_rules! forward_scalars {
    ($on:ident) => {
        fn visit_bool<E>(self, _: bool) -> Result<Self::Value, E> {
            Ok(self.$on("a boolean"))
        }
        fn visit_i64<E>(self, _: i64) -> Result<Self::Value, E> {
            Ok(self.$on("a number"))
        }
        fn visit_u64<E>(self, _: u64) -> Result<Self::Value, E> {
            Ok(self.$on("a number"))
        }
        fn visit_f64<E>(self, _: f64) -> Result<Self::Value, E> {
            Ok(self.$on("a number"))
        }
        fn visit_str<E>(self, _: &str) -> Result<Self::Value, E> {
            Ok(self.$on("a string"))
        }
        fn visit_unit<E>(self) -> Result<Self::Value, E> {
            Ok(self.$on("null"))
        }
        fn visit_none<E>(self) -> Result<Self::Value, E> {
            Ok(self.$on("null"))
        }
    };
}

/// Reads a project from its JSON text and checks it: every rule of SPEC 8,
/// the `limits`, and, when a `catalog` is given, the functions and their
/// inputs. Every error found is reported together.
pub fn parse_project(
    json: &[u8],
    limits: &Limits,
    catalog: Option<&dyn Catalog>,
) -> Result<Project, Rejection> {
    if json.len() > limits.max_bytes {
        return Err(too_big(json.len(), limits));
    }
    let mut ctx = Ctx::new(limits);
    let mut de = serde_json::Deserializer::from_slice(json);
    de.disable_recursion_limit();
    let parsed = ProjectSeed {
        ctx: &mut ctx,
        parts: None,
    }
    .deserialize(&mut de)
    .and_then(|project| de.end().map(|()| project));
    let mut errors = match parsed {
        Ok(project) => {
            let mut checker = Checker::new(limits, catalog, 0);
            checker.check_list(&project.jobs, &Path::root(), 0, false, 1);
            let mut errors = ctx.errors;
            errors.extend(checker.take_errors());
            if errors.is_empty() {
                return Ok(project);
            }
            errors
        }
        Err(e) => ctx.into_errors_after(&e),
    };
    errors.sort_by(|a, b| a.path.cmp(&b.path));
    Err(Rejection { errors })
}

/// Reads a project from its JSON text as [`parse_project`] does, handing
/// the root list to `part` as it is read, in parts of up to `part_len`
/// nodes, in order, each checked (every rule, the limits, the catalog)
/// before it is handed over; no whole tree is held. Once an error is
/// found no more parts are handed over, reading goes on to find every
/// error, and the result is the rejection: what the caller made of the
/// parts it had must then be dropped.
pub fn parse_project_parts(
    json: &[u8],
    limits: &Limits,
    catalog: Option<&dyn Catalog>,
    part_len: usize,
    part: &mut dyn FnMut(Vec<Node>),
) -> Result<(), Rejection> {
    if json.len() > limits.max_bytes {
        return Err(too_big(json.len(), limits));
    }
    let mut ctx = Ctx::new(limits);
    let mut de = serde_json::Deserializer::from_slice(json);
    de.disable_recursion_limit();
    let mut parts = Parts {
        len: part_len.max(1),
        checker: Checker::new(limits, catalog, 0),
        sink: part,
    };
    let parsed = ProjectSeed {
        ctx: &mut ctx,
        parts: Some(&mut parts),
    }
    .deserialize(&mut de)
    .and_then(|_| de.end());
    let mut errors = match parsed {
        Ok(()) => {
            let mut errors = ctx.errors;
            errors.extend(parts.checker.take_errors());
            if errors.is_empty() {
                return Ok(());
            }
            errors
        }
        Err(e) => ctx.into_errors_after(&e),
    };
    errors.sort_by(|a, b| a.path.cmp(&b.path));
    Err(Rejection { errors })
}

fn too_big(bytes: usize, limits: &Limits) -> Rejection {
    Rejection {
        errors: vec![ValidationError::new(
            Path::root(),
            Some("max_bytes"),
            format!(
                "the project is {bytes} bytes of JSON, more than the configured limit of {} bytes",
                limits.max_bytes
            ),
        )],
    }
}

/// Where [`parse_project_parts`] hands the root list.
struct Parts<'p, 'a> {
    len: usize,
    checker: Checker<'a>,
    sink: &'p mut dyn FnMut(Vec<Node>),
}

/// What a list being read hands its parts to.
trait PartSink {
    /// Nodes per part.
    fn part_len(&self) -> usize;
    /// Takes the part of the list from index `first` on.
    fn hand(&mut self, ctx: &Ctx<'_>, nodes: Vec<Node>, first: u32);
}

impl PartSink for Parts<'_, '_> {
    fn part_len(&self) -> usize {
        self.len
    }

    /// Checks the part of the root list from `first` on, and hands it over
    /// while the project is clean.
    fn hand(&mut self, ctx: &Ctx<'_>, nodes: Vec<Node>, first: u32) {
        if nodes.is_empty() {
            return;
        }
        let clean = ctx.errors.is_empty() && self.checker.clean();
        self.checker
            .check_list(&nodes, &Path::root(), first, first > 0, 1);
        if clean && self.checker.clean() {
            (self.sink)(nodes);
        }
    }
}

/// Reads a job's output in its JSON form, `{"result": …, "addJobs": …}`
/// (SPEC 8), from any serde deserializer. `addJobs` is a list of nodes or one
/// group `{"jobs": [...]}`. Paths in errors count from the first added node.
pub fn parse_output<'de, D: Deserializer<'de>>(
    deserializer: D,
    limits: &Limits,
) -> Result<Output, Rejection> {
    let mut ctx = Ctx::new(limits);
    match (OutputSeed { ctx: &mut ctx }).deserialize(deserializer) {
        Ok(output) if ctx.errors.is_empty() => Ok(output),
        Ok(_) => Err(Rejection { errors: ctx.errors }),
        Err(e) => Err(Rejection {
            errors: ctx.into_errors_after(&e),
        }),
    }
}

/// Runs `f` on a stack with room for one more level of nesting, moving to a
/// new heap-allocated stack segment when the current one runs low. The
/// limits bound how deep reading goes; this keeps any allowed depth safe on
/// any thread, debug builds included.
fn grow<R>(f: impl FnOnce() -> R) -> R {
    stacker::maybe_grow(64 * 1024, 1024 * 1024, f)
}

/// The reader's state: where it is, what it found.
struct Ctx<'l> {
    limits: &'l Limits,
    path: Vec<u32>,
    nodes: usize,
    errors: Vec<ValidationError>,
    /// An error that stopped reading: nesting or size past a limit.
    fatal: Option<ValidationError>,
}

/// The message of the serde error that carries a fatal error out; the error
/// itself is kept in [`Ctx::fatal`].
const STOPPED: &str = "reading stopped at a limit";

impl<'l> Ctx<'l> {
    fn new(limits: &'l Limits) -> Self {
        Ctx {
            limits,
            path: Vec::new(),
            nodes: 0,
            errors: Vec::new(),
            fatal: None,
        }
    }

    fn path(&self) -> Path {
        Path::from_slice(&self.path)
    }

    fn error(&mut self, key: Option<&str>, message: impl Into<String>) {
        let path = self.path();
        self.errors.push(ValidationError::new(path, key, message));
    }

    fn fatal<E: de::Error>(&mut self, key: Option<&str>, message: impl Into<String>) -> E {
        let path = self.path();
        self.fatal = Some(ValidationError::new(path, key, message));
        E::custom(STOPPED)
    }

    /// Every error, once reading ended with `e`.
    fn into_errors_after(mut self, e: &dyn fmt::Display) -> Vec<ValidationError> {
        match self.fatal.take() {
            Some(fatal) => self.errors.push(fatal),
            None => self.errors.push(ValidationError::new(
                Path::root(),
                None,
                format!("invalid JSON: {e}"),
            )),
        }
        self.errors
    }
}

struct ProjectSeed<'c, 'l, 'p> {
    ctx: &'c mut Ctx<'l>,
    /// Where the root list goes as it is read, if not into the project.
    parts: Option<&'p mut dyn PartSink>,
}

impl<'de> DeserializeSeed<'de> for ProjectSeed<'_, '_, '_> {
    type Value = Project;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Project, D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for ProjectSeed<'_, '_, '_> {
    type Value = Project;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a project: an object with a `jobs` list")
    }

    fn visit_map<A: MapAccess<'de>>(mut self, mut map: A) -> Result<Project, A::Error> {
        let mut jobs = None;
        while let Some(key) = map.next_key::<String>()? {
            if key == "jobs" {
                let list = map.next_value_seed(ListSeed {
                    ctx: &mut *self.ctx,
                    key: "jobs",
                    parts: self.parts.as_mut().map(|p| &mut **p as &mut dyn PartSink),
                })?;
                if jobs.replace(list).is_some() {
                    self.ctx.error(Some("jobs"), "key `jobs` appears twice");
                }
            } else {
                map.next_value_seed(ValueSeed::new(&mut *self.ctx, &key))?;
                self.ctx.error(
                    Some(&key),
                    format!("unknown key `{key}`: a project has only `jobs`"),
                );
            }
        }
        if jobs.is_none() {
            self.ctx
                .error(Some("jobs"), "the project has no `jobs` list");
        }
        Ok(Project {
            jobs: jobs.unwrap_or_default(),
        })
    }

    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Project, A::Error> {
        skip_seq(self.ctx, seq, "jobs")?;
        self.ctx.error(
            Some("jobs"),
            "a project is an object `{\"jobs\": [...]}`, not an array",
        );
        Ok(Project::default())
    }

    forward_scalars!(project_scalar);
}

/// A list of nodes, the value of a `jobs` key.
struct ListSeed<'c, 'l, 'p> {
    ctx: &'c mut Ctx<'l>,
    key: &'static str,
    /// The root list's parts go here as they are read (then the list
    /// returned is empty).
    parts: Option<&'p mut dyn PartSink>,
}

impl<'de> DeserializeSeed<'de> for ListSeed<'_, '_, '_> {
    type Value = Vec<Node>;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Vec<Node>, D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for ListSeed<'_, '_, '_> {
    type Value = Vec<Node>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a list of nodes")
    }

    fn visit_seq<A: SeqAccess<'de>>(mut self, mut seq: A) -> Result<Vec<Node>, A::Error> {
        let mut nodes = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(4096));
        let mut first = 0;
        for index in 0u32.. {
            self.ctx.path.push(index);
            let next = seq.next_element_seed(NodeSeed {
                ctx: &mut *self.ctx,
            });
            self.ctx.path.pop();
            match next? {
                Some(node) => nodes.push(node),
                None => break,
            }
            if let Some(parts) = self.parts.as_mut()
                && nodes.len() == parts.part_len()
            {
                parts.hand(self.ctx, std::mem::take(&mut nodes), first);
                first = index + 1;
            }
        }
        if let Some(parts) = self.parts {
            parts.hand(self.ctx, nodes, first);
            return Ok(Vec::new());
        }
        Ok(nodes)
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Vec<Node>, A::Error> {
        skip_map(self.ctx, map, self.key)?;
        self.list_error("an object");
        Ok(Vec::new())
    }

    forward_scalars!(list_scalar);
}

impl ListSeed<'_, '_, '_> {
    fn list_error(self, found: &str) {
        let key = self.key;
        self.ctx.error(
            Some(key),
            format!("`{key}` must be an array of nodes, not {found}"),
        );
    }
}

/// One node: an object with `func` or `jobs`.
struct NodeSeed<'c, 'l> {
    ctx: &'c mut Ctx<'l>,
}

impl<'de> DeserializeSeed<'de> for NodeSeed<'_, '_> {
    type Value = Node;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Node, D::Error> {
        grow(|| deserializer.deserialize_any(self))
    }
}

/// The keys of a node (SPEC 8).
#[derive(Clone, Copy, PartialEq, Eq)]
enum Key {
    Func,
    Jobs,
    Args,
    Kwargs,
    PreviousJobArgs,
    PreviousArgs,
    Blocking,
    Retries,
    TimeoutMs,
    Backoff,
    Queue,
    AllowFailure,
}

impl Key {
    const ALL: [Key; 12] = [
        Key::Func,
        Key::Jobs,
        Key::Args,
        Key::Kwargs,
        Key::PreviousJobArgs,
        Key::PreviousArgs,
        Key::Blocking,
        Key::Retries,
        Key::TimeoutMs,
        Key::Backoff,
        Key::Queue,
        Key::AllowFailure,
    ];

    fn name(self) -> &'static str {
        match self {
            Key::Func => "func",
            Key::Jobs => "jobs",
            Key::Args => "args",
            Key::Kwargs => "kwargs",
            Key::PreviousJobArgs => "previousJobArgs",
            Key::PreviousArgs => "previous_args",
            Key::Blocking => "blocking",
            Key::Retries => "retries",
            Key::TimeoutMs => "timeout_ms",
            Key::Backoff => "backoff",
            Key::Queue => "queue",
            Key::AllowFailure => "allow_failure",
        }
    }

    fn from_name(name: &str) -> Option<Key> {
        Key::ALL.into_iter().find(|k| k.name() == name)
    }

    /// Keys that only a job may have.
    fn job_only(self) -> bool {
        !matches!(self, Key::Func | Key::Jobs | Key::Blocking)
    }
}

/// A node's keys as read, before the rules decide what it is.
#[derive(Default)]
struct Fields {
    func: Option<Value>,
    jobs: Option<Vec<Node>>,
    args: Option<Value>,
    kwargs: Option<Value>,
    previous: Option<(Key, Value)>,
    blocking: Option<Value>,
    retries: Option<Value>,
    timeout_ms: Option<Value>,
    backoff: Option<Value>,
    queue: Option<Value>,
    allow_failure: Option<Value>,
    /// Job-only keys present, in the order read.
    job_keys: Vec<Key>,
}

impl<'de> Visitor<'de> for NodeSeed<'_, '_> {
    type Value = Node;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a node: an object with `func` or `jobs`")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Node, A::Error> {
        let ctx = self.ctx;
        ctx.nodes += 1;
        if ctx.nodes > ctx.limits.max_nodes {
            let max = ctx.limits.max_nodes;
            return Err(ctx.fatal(
                Some("max_nodes"),
                format!("the project has more than {max} nodes, the configured limit"),
            ));
        }
        if ctx.path.len() > ctx.limits.max_depth {
            let max = ctx.limits.max_depth;
            return Err(ctx.fatal(
                Some("max_depth"),
                format!("groups are nested deeper than {max} levels, the configured limit"),
            ));
        }
        let mut fields = Fields::default();
        while let Some(name) = map.next_key::<KeyName>()? {
            let Some(key) = Key::from_name(&name.0) else {
                map.next_value_seed(ValueSeed::new(&mut *ctx, &name.0))?;
                ctx.error(
                    Some(&name.0),
                    format!(
                        "unknown key `{}`; a node's keys are {}",
                        name.0,
                        Key::ALL.map(|k| format!("`{}`", k.name())).join(", ")
                    ),
                );
                continue;
            };
            let duplicate = if key == Key::Jobs {
                let list = map.next_value_seed(ListSeed {
                    ctx: &mut *ctx,
                    key: "jobs",
                    parts: None,
                })?;
                fields.jobs.replace(list).is_some()
            } else {
                let value = map.next_value_seed(ValueSeed::new(&mut *ctx, key.name()))?;
                if key.job_only() {
                    fields.job_keys.push(key);
                }
                let slot = match key {
                    Key::Func => &mut fields.func,
                    Key::Args => &mut fields.args,
                    Key::Kwargs => &mut fields.kwargs,
                    Key::PreviousJobArgs | Key::PreviousArgs => {
                        if let Some((first, _)) = fields.previous {
                            ctx.error(
                                Some(key.name()),
                                format!(
                                    "`{}` and `{}` both given; they are the same key, write one",
                                    first.name(),
                                    key.name()
                                ),
                            );
                        } else {
                            fields.previous = Some((key, value));
                        }
                        continue;
                    }
                    Key::Blocking => &mut fields.blocking,
                    Key::Retries => &mut fields.retries,
                    Key::TimeoutMs => &mut fields.timeout_ms,
                    Key::Backoff => &mut fields.backoff,
                    Key::Queue => &mut fields.queue,
                    Key::AllowFailure => &mut fields.allow_failure,
                    Key::Jobs => unreachable!("handled above"),
                };
                slot.replace(value).is_some()
            };
            if duplicate {
                ctx.error(
                    Some(key.name()),
                    format!("key `{}` appears twice", key.name()),
                );
            }
        }
        Ok(build_node(ctx, fields))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Node, A::Error> {
        skip_seq(self.ctx, seq, "")?;
        Ok(self.not_an_object("an array"))
    }

    forward_scalars!(node_scalar);
}

impl NodeSeed<'_, '_> {
    fn not_an_object(self, found: &str) -> Node {
        let index = self.ctx.path.last().copied().unwrap_or(0);
        self.ctx.error(
            None,
            format!(
                "node {index} of its list is {found}; every node is an object with `func` or `jobs`"
            ),
        );
        Node::group(Vec::new())
    }
}

/// Applies the rules that decide what a node is; a node that breaks them is
/// kept as an empty group so that later paths stay right.
fn build_node(ctx: &mut Ctx<'_>, fields: Fields) -> Node {
    let mut broken = false;
    let blocking = flag(ctx, Key::Blocking, fields.blocking);
    let func = match fields.func {
        None => None,
        Some(Value::String(name)) => Some(name),
        Some(other) => {
            ctx.error(
                Some("func"),
                format!(
                    "`func` must be a function name (a string), not {}",
                    describe(&other)
                ),
            );
            broken = true;
            Some(String::new())
        }
    };
    let func = match (func, fields.jobs) {
        (Some(_), Some(children)) => {
            ctx.error(
                Some("func"),
                "the node has both `func` and `jobs`: a node is a job (`func`) or a group (`jobs`), not both",
            );
            return Node {
                kind: NodeKind::Group(children),
                blocking,
            };
        }
        (None, None) => {
            ctx.error(
                Some("func"),
                "the node has neither `func` nor `jobs`: give `func` for a job or `jobs` for a group",
            );
            return Node::group(Vec::new());
        }
        (None, Some(children)) => {
            for key in fields.job_keys {
                ctx.error(
                    Some(key.name()),
                    format!(
                        "`{}` applies to jobs only, and this node is a group (it has `jobs`)",
                        key.name()
                    ),
                );
            }
            return Node {
                kind: NodeKind::Group(children),
                blocking,
            };
        }
        (Some(func), None) => func,
    };
    let previous = fields
        .previous
        .map(|(key, value)| (key, flag(ctx, key, Some(value))))
        .filter(|(_, on)| *on);
    let input = match (fields.args, previous) {
        (Some(args), Some((key, _))) => {
            ctx.error(
                Some(key.name()),
                format!(
                    "`args` and `{}` both given: a job takes its args or the previous result, not both",
                    key.name()
                ),
            );
            Input::Args(args)
        }
        (Some(args), None) => Input::Args(args),
        (None, Some(_)) => Input::Previous,
        (None, None) => Input::None,
    };
    let kwargs = match fields.kwargs {
        None => None,
        Some(Value::Object(map)) => Some(map),
        Some(other) => {
            ctx.error(
                Some("kwargs"),
                format!(
                    "`kwargs` must be an object of named parameters, not {}",
                    describe(&other)
                ),
            );
            None
        }
    };
    let options = JobOptions {
        retries: fields
            .retries
            .and_then(|v| count(ctx, Key::Retries, v, 0))
            .map(|n| n as u32),
        timeout_ms: fields
            .timeout_ms
            .and_then(|v| count(ctx, Key::TimeoutMs, v, 1)),
        backoff: fields.backoff.and_then(|v| backoff(ctx, v)),
        queue: match fields.queue {
            None => None,
            Some(Value::String(queue)) => Some(queue),
            Some(other) => {
                ctx.error(
                    Some("queue"),
                    format!(
                        "`queue` must be a queue name (a string), not {}",
                        describe(&other)
                    ),
                );
                None
            }
        },
        allow_failure: flag(ctx, Key::AllowFailure, fields.allow_failure),
    };
    if broken {
        return Node::group(Vec::new());
    }
    Node {
        kind: NodeKind::Job(JobSpec {
            func,
            input,
            kwargs,
            options,
        }),
        blocking,
    }
}

/// An rqm extension beside the seed's keys: `{"initial_ms", "factor",
/// "max_ms"}`, each optional, defaulting to [`Backoff::default`].
fn backoff(ctx: &mut Ctx<'_>, value: Value) -> Option<Backoff> {
    let mut backoff = Backoff::default();
    let Value::Object(map) = value else {
        ctx.error(
            Some("backoff"),
            format!(
                "`backoff` must be an object like {{\"initial_ms\": 100, \"factor\": 2, \"max_ms\": 60000}}, not {}",
                describe(&value)
            ),
        );
        return None;
    };
    let mut ok = true;
    for (key, v) in map {
        let n = v.as_u64();
        match (key.as_str(), n) {
            ("initial_ms", Some(n)) => backoff.initial_ms = n,
            ("max_ms", Some(n)) => backoff.max_ms = n,
            ("factor", Some(n)) if n >= 1 && n <= u64::from(u32::MAX) => backoff.factor = n as u32,
            ("initial_ms" | "max_ms" | "factor", _) => {
                ok = false;
                ctx.error(
                    Some("backoff"),
                    format!("`backoff.{key}` must be a whole number (factor at least 1), not {v}"),
                );
            }
            _ => {
                ok = false;
                ctx.error(
                    Some("backoff"),
                    format!("unknown key `{key}` in `backoff`; its keys are `initial_ms`, `factor`, `max_ms`"),
                );
            }
        }
    }
    ok.then_some(backoff)
}

fn flag(ctx: &mut Ctx<'_>, key: Key, value: Option<Value>) -> bool {
    match value {
        None => false,
        Some(Value::Bool(on)) => on,
        Some(other) => {
            ctx.error(
                Some(key.name()),
                format!(
                    "`{}` must be true or false, not {}",
                    key.name(),
                    describe(&other)
                ),
            );
            false
        }
    }
}

/// A whole number of at least `min`, fitting `u32` for `retries`.
fn count(ctx: &mut Ctx<'_>, key: Key, value: Value, min: u64) -> Option<u64> {
    let max = if key == Key::Retries {
        u64::from(u32::MAX)
    } else {
        u64::MAX
    };
    match value.as_u64() {
        Some(n) if n >= min && n <= max => Some(n),
        _ => {
            ctx.error(
                Some(key.name()),
                format!(
                    "`{}` must be a whole number from {min} to {max}, not {value}",
                    key.name()
                ),
            );
            None
        }
    }
}

/// A key of an object, read without allocating when it can be borrowed
/// (it has no escapes).
struct KeyName<'de>(std::borrow::Cow<'de, str>);

impl<'de> Deserialize<'de> for KeyName<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct KeyVisitor;
        impl<'de> Visitor<'de> for KeyVisitor {
            type Value = KeyName<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a key")
            }
            fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<KeyName<'de>, E> {
                Ok(KeyName(std::borrow::Cow::Borrowed(v)))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<KeyName<'de>, E> {
                Ok(KeyName(std::borrow::Cow::Owned(v.to_owned())))
            }
            fn visit_string<E: de::Error>(self, v: String) -> Result<KeyName<'de>, E> {
                Ok(KeyName(std::borrow::Cow::Owned(v)))
            }
        }
        deserializer.deserialize_str(KeyVisitor)
    }
}

/// A JSON value, built with its nesting bounded by the limits.
struct ValueSeed<'c, 'l, 'k> {
    ctx: &'c mut Ctx<'l>,
    key: &'k str,
    depth: usize,
}

impl<'c, 'l, 'k> ValueSeed<'c, 'l, 'k> {
    fn new(ctx: &'c mut Ctx<'l>, key: &'k str) -> Self {
        ValueSeed { ctx, key, depth: 0 }
    }

    fn enter<E: de::Error>(&mut self) -> Result<(), E> {
        if self.depth >= self.ctx.limits.max_value_depth {
            let max = self.ctx.limits.max_value_depth;
            let what = if self.key.is_empty() {
                "the node".to_owned()
            } else {
                format!("the value of `{}`", self.key)
            };
            let key = (!self.key.is_empty()).then_some(self.key);
            return Err(self.ctx.fatal(
                key,
                format!(
                    "{what} nests arrays or objects deeper than {max} levels, the configured limit"
                ),
            ));
        }
        Ok(())
    }

    fn inner(&mut self) -> ValueSeed<'_, 'l, 'k> {
        ValueSeed {
            ctx: &mut *self.ctx,
            key: self.key,
            depth: self.depth + 1,
        }
    }
}

impl<'de> DeserializeSeed<'de> for ValueSeed<'_, '_, '_> {
    type Value = Value;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Value, D::Error> {
        grow(|| deserializer.deserialize_any(self))
    }
}

impl<'de> Visitor<'de> for ValueSeed<'_, '_, '_> {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }

    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(Value::from(v))
    }

    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(Value::from(v))
    }

    fn visit_f64<E>(self, v: f64) -> Result<Value, E> {
        Ok(Number::from_f64(v).map_or(Value::Null, Value::Number))
    }

    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_owned()))
    }

    fn visit_string<E>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }

    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_none<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_some<D: Deserializer<'de>>(self, deserializer: D) -> Result<Value, D::Error> {
        self.deserialize(deserializer)
    }

    fn visit_seq<A: SeqAccess<'de>>(mut self, mut seq: A) -> Result<Value, A::Error> {
        self.enter()?;
        let mut items = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(4096));
        while let Some(item) = seq.next_element_seed(self.inner())? {
            items.push(item);
        }
        Ok(Value::Array(items))
    }

    fn visit_map<A: MapAccess<'de>>(mut self, mut map: A) -> Result<Value, A::Error> {
        self.enter()?;
        let mut object = Map::new();
        while let Some(key) = map.next_key::<String>()? {
            let value = map.next_value_seed(self.inner())?;
            object.insert(key, value);
        }
        Ok(Value::Object(object))
    }
}

fn skip_seq<'de, A: SeqAccess<'de>>(
    ctx: &mut Ctx<'_>,
    mut seq: A,
    key: &str,
) -> Result<(), A::Error> {
    let mut seed = ValueSeed::new(ctx, key);
    seed.enter()?;
    while seq.next_element_seed(seed.inner())?.is_some() {}
    Ok(())
}

fn skip_map<'de, A: MapAccess<'de>>(
    ctx: &mut Ctx<'_>,
    mut map: A,
    key: &str,
) -> Result<(), A::Error> {
    let mut seed = ValueSeed::new(ctx, key);
    seed.enter()?;
    while map.next_key::<de::IgnoredAny>()?.is_some() {
        map.next_value_seed(seed.inner())?;
    }
    Ok(())
}

impl ProjectSeed<'_, '_, '_> {
    fn project_scalar(self, found: &str) -> Project {
        self.ctx.error(
            None,
            format!("a project is an object `{{\"jobs\": [...]}}`, not {found}"),
        );
        Project::default()
    }
}

impl ListSeed<'_, '_, '_> {
    fn list_scalar(self, found: &str) -> Vec<Node> {
        self.list_error(found);
        Vec::new()
    }
}

impl NodeSeed<'_, '_> {
    fn node_scalar(self, found: &str) -> Node {
        self.not_an_object(found)
    }
}

struct OutputSeed<'c, 'l> {
    ctx: &'c mut Ctx<'l>,
}

impl<'de> DeserializeSeed<'de> for OutputSeed<'_, '_> {
    type Value = Output;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Output, D::Error> {
        deserializer.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for OutputSeed<'_, '_> {
    type Value = Output;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a job output: {\"result\": …, \"addJobs\": […] or {\"jobs\": […]}}")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Output, A::Error> {
        let ctx = self.ctx;
        let mut result = None;
        let mut append = None;
        while let Some(key) = map.next_key::<String>()? {
            match key.as_str() {
                "result" => {
                    result = Some(map.next_value_seed(ValueSeed::new(&mut *ctx, "result"))?);
                }
                "addJobs" => {
                    append = Some(map.next_value_seed(AddSeed { ctx: &mut *ctx })?);
                }
                _ => {
                    map.next_value_seed(ValueSeed::new(&mut *ctx, &key))?;
                    ctx.error(
                        Some(&key),
                        format!("unknown key `{key}` in a job output; its keys are `result` and `addJobs`"),
                    );
                }
            }
        }
        Ok(Output {
            result: result.unwrap_or(Value::Null),
            append: append.unwrap_or_default(),
        })
    }
}

/// The value of `addJobs`: a list of nodes, or one group.
struct AddSeed<'c, 'l> {
    ctx: &'c mut Ctx<'l>,
}

impl<'de> DeserializeSeed<'de> for AddSeed<'_, '_> {
    type Value = Vec<Node>;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Vec<Node>, D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for AddSeed<'_, '_> {
    type Value = Vec<Node>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a list of nodes or one group")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Vec<Node>, A::Error> {
        ListSeed {
            ctx: self.ctx,
            key: "addJobs",
            parts: None,
        }
        .visit_seq(seq)
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Vec<Node>, A::Error> {
        self.ctx.path.push(0);
        let node = NodeSeed {
            ctx: &mut *self.ctx,
        }
        .visit_map(map);
        let node = node?;
        if !matches!(node.kind, NodeKind::Group(_)) {
            self.ctx.error(
                Some("addJobs"),
                "`addJobs` is a list of nodes or one group `{\"jobs\": [...]}`, and this object is a job",
            );
        }
        self.ctx.path.pop();
        Ok(vec![node])
    }

    forward_scalars!(add_scalar);
}

impl AddSeed<'_, '_> {
    fn add_scalar(self, found: &str) -> Vec<Node> {
        self.ctx.error(
            Some("addJobs"),
            format!("`addJobs` must be a list of nodes or one group, not {found}"),
        );
        Vec::new()
    }
}

impl Serialize for Project {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(Some(1))?;
        map.serialize_entry("jobs", &self.jobs)?;
        map.end()
    }
}

impl Serialize for Node {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(None)?;
        match &self.kind {
            NodeKind::Group(children) => map.serialize_entry("jobs", children)?,
            NodeKind::Job(spec) => {
                map.serialize_entry("func", &spec.func)?;
                match &spec.input {
                    Input::None => {}
                    Input::Args(args) => map.serialize_entry("args", args)?,
                    Input::Previous => map.serialize_entry("previousJobArgs", &true)?,
                }
                if let Some(kwargs) = &spec.kwargs {
                    map.serialize_entry("kwargs", kwargs)?;
                }
                let o = &spec.options;
                if let Some(retries) = o.retries {
                    map.serialize_entry("retries", &retries)?;
                }
                if let Some(timeout) = o.timeout_ms {
                    map.serialize_entry("timeout_ms", &timeout)?;
                }
                if let Some(b) = &o.backoff {
                    map.serialize_entry(
                        "backoff",
                        &serde_json::json!({"initial_ms": b.initial_ms, "factor": b.factor, "max_ms": b.max_ms}),
                    )?;
                }
                if let Some(queue) = &o.queue {
                    map.serialize_entry("queue", queue)?;
                }
                if o.allow_failure {
                    map.serialize_entry("allow_failure", &true)?;
                }
            }
        }
        if self.blocking {
            map.serialize_entry("blocking", &true)?;
        }
        map.end()
    }
}

impl<'de> Deserialize<'de> for Project {
    /// Reads a project with the default [`Limits`] and no catalog; every
    /// error found is in the message. [`parse_project`] gives them as data.
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let limits = Limits::default();
        let mut ctx = Ctx::new(&limits);
        let project = ProjectSeed {
            ctx: &mut ctx,
            parts: None,
        }
        .deserialize(deserializer);
        let project = match project {
            Ok(project) => project,
            Err(e) if ctx.fatal.is_none() => return Err(e),
            Err(e) => {
                let errors = ctx.into_errors_after(&e);
                return Err(de::Error::custom(Rejection { errors }));
            }
        };
        let mut checker = Checker::new(&limits, None, 0);
        checker.check_list(&project.jobs, &Path::root(), 0, false, 1);
        let mut errors = ctx.errors;
        errors.extend(checker.take_errors());
        if errors.is_empty() {
            Ok(project)
        } else {
            Err(de::Error::custom(Rejection { errors }))
        }
    }
}

impl Serialize for Output {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(None)?;
        map.serialize_entry("result", &self.result)?;
        if !self.append.is_empty() {
            map.serialize_entry("addJobs", &self.append)?;
        }
        map.end()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn parse(text: &str) -> Result<Project, Rejection> {
        parse_project(text.as_bytes(), &Limits::default(), None)
    }

    fn keys(err: &Rejection) -> Vec<(String, Option<String>)> {
        err.errors
            .iter()
            .map(|e| (e.path.to_string(), e.key.clone()))
            .collect()
    }

    #[test]
    fn reads_the_seed_spelling_and_the_alias() {
        let p = parse(
            r#"{"jobs": [
                {"func": "simpleTask", "args": 1, "blocking": true},
                {"func": "simpleTask", "previousJobArgs": true},
                {"func": "simpleTask", "previous_args": true, "retries": 2, "timeout_ms": 50, "backoff": {"factor": 3}, "queue": "q", "allow_failure": true},
                {"jobs": [{"func": "addJobs", "args": 2}], "blocking": true},
                {"func": "expand", "kwargs": {"depth": 1, "fanout": 2}}
            ]}"#,
        )
        .unwrap();
        assert_eq!(p.jobs.len(), 5);
        assert!(p.jobs[0].blocking);
        assert!(p.jobs[1].takes_previous() && p.jobs[2].takes_previous());
        let o = &p.jobs[2].as_job().unwrap().options;
        assert_eq!(
            o,
            &JobOptions {
                retries: Some(2),
                timeout_ms: Some(50),
                queue: Some("q".into()),
                allow_failure: true,
                backoff: Some(Backoff {
                    factor: 3,
                    ..Backoff::default()
                }),
            }
        );
        assert!(matches!(&p.jobs[3].kind, NodeKind::Group(c) if c.len() == 1));
        let back = serde_json::to_value(&p).unwrap();
        let again = parse(&back.to_string()).unwrap();
        assert_eq!(p, again);
        assert_eq!(
            back["jobs"][1],
            json!({"func": "simpleTask", "previousJobArgs": true})
        );
    }

    #[test]
    fn reports_every_error_with_path_and_key() {
        let err = parse(
            r#"{"jobs": [
                {"func": "a", "blockng": true},
                7,
                {"jobs": [{"func": "b", "args": 1, "previousJobArgs": true}, {"blocking": true}], "args": 3},
                {"func": 5, "retries": -1, "blocking": "yes"},
                {"func": "c", "jobs": []},
                {"func": "d", "func": "e"}
            ], "extra": 1}"#,
        )
        .unwrap_err();
        assert_eq!(
            keys(&err),
            [
                ("".into(), Some("extra".into())),
                ("0".into(), Some("blockng".into())),
                ("1".into(), None),
                ("2".into(), Some("args".into())),
                ("2.0".into(), Some("previousJobArgs".into())),
                ("2.1".into(), Some("func".into())),
                ("3".into(), Some("blocking".into())),
                ("3".into(), Some("func".into())),
                ("3".into(), Some("retries".into())),
                ("4".into(), Some("func".into())),
                ("5".into(), Some("func".into())),
            ],
            "{err}"
        );
        let text = err.to_string();
        assert!(text.contains("11 errors"), "{text}");
        assert!(
            text.contains("at node 2.0, key `previousJobArgs`"),
            "{text}"
        );
    }

    #[test]
    fn rejects_previous_on_first_and_bad_json() {
        let err = parse(r#"{"jobs": [{"func": "a", "previous_args": true}]}"#).unwrap_err();
        assert_eq!(keys(&err), [("0".into(), Some("previousJobArgs".into()))]);
        let err = parse(r#"{"jobs": [{"func": "a"}"#).unwrap_err();
        assert!(err.to_string().contains("invalid JSON"), "{err}");
        let err = parse(r#"{"jobs": []} x"#).unwrap_err();
        assert!(err.to_string().contains("trailing characters"), "{err}");
        let err = parse(r#"[1]"#).unwrap_err();
        assert!(err.to_string().contains("not an array"), "{err}");
        let err = parse(r#"{}"#).unwrap_err();
        assert!(err.to_string().contains("no `jobs` list"), "{err}");
    }

    #[test]
    fn hostile_nesting_is_refused_without_overflow() {
        let deep_groups = format!(
            "{}{}",
            r#"{"jobs": ["#.repeat(100_000),
            "]}".repeat(100_000)
        );
        let err = parse(&deep_groups).unwrap_err();
        assert!(err.to_string().contains("deeper than 256 levels"), "{err}");

        let deep_args = format!(
            r#"{{"jobs": [{{"func": "echo", "args": {}1{}}}]}}"#,
            "[".repeat(100_000),
            "]".repeat(100_000)
        );
        let err = parse(&deep_args).unwrap_err();
        assert_eq!(keys(&err), [("0".into(), Some("args".into()))], "{err}");
        assert!(err.to_string().contains("deeper than 128 levels"), "{err}");

        let deep_node = format!(r#"{{"jobs": [{}]}}"#, "[".repeat(100_000));
        let err = parse(&deep_node).unwrap_err();
        assert!(err.to_string().contains("deeper than 128"), "{err}");
    }

    #[test]
    fn the_deepest_allowed_tree_parses_on_a_small_stack() {
        let limits = Limits::default();
        let mut text = String::new();
        for _ in 0..limits.max_depth - 1 {
            text.push_str(r#"{"jobs": ["#);
        }
        text.push_str(r#"{"func": "echo", "args": "#);
        text.push_str(&"[".repeat(limits.max_value_depth));
        text.push_str(&"]".repeat(limits.max_value_depth));
        text.push('}');
        for _ in 0..limits.max_depth - 1 {
            text.push_str("]}");
        }
        let text = format!(r#"{{"jobs": [{text}]}}"#);
        let worker = std::thread::Builder::new()
            .stack_size(1 << 20)
            .spawn(move || parse(&text).map(|p| p.node_count()))
            .unwrap();
        assert_eq!(worker.join().unwrap(), Ok(256));
    }

    #[test]
    fn limits_on_size_and_count() {
        let limits = Limits {
            max_bytes: 10,
            ..Limits::default()
        };
        let err = parse_project(br#"{"jobs": [ ]}"#, &limits, None).unwrap_err();
        assert_eq!(keys(&err), [("".into(), Some("max_bytes".into()))]);
        let limits = Limits {
            max_nodes: 2,
            ..Limits::default()
        };
        let err = parse_project(
            br#"{"jobs": [{"jobs": []}, {"jobs": []}, {"jobs": []}]}"#,
            &limits,
            None,
        )
        .unwrap_err();
        assert_eq!(keys(&err), [("2".into(), Some("max_nodes".into()))]);
    }

    #[test]
    fn outputs_in_both_spellings() {
        let out = parse_output(
            json!({"result": 4, "addJobs": [{"func": "simpleTask", "args": 1}]}),
            &Limits::default(),
        )
        .unwrap();
        assert_eq!(out.result, json!(4));
        assert_eq!(out.append, vec![Node::call("simpleTask", json!(1))]);
        let out = parse_output(
            json!({"result": 4, "addJobs": {"jobs": [{"func": "simpleTask", "args": 1}]}}),
            &Limits::default(),
        )
        .unwrap();
        assert_eq!(
            out.append,
            vec![Node::group(vec![Node::call("simpleTask", json!(1))])]
        );
        assert_eq!(
            serde_json::to_value(&out).unwrap(),
            json!({"result": 4, "addJobs": [{"jobs": [{"func": "simpleTask", "args": 1}]}]})
        );
        let err = parse_output(
            json!({"result": 1, "addJobs": {"func": "x"}, "more": 1}),
            &Limits::default(),
        )
        .unwrap_err();
        let found = keys(&err);
        assert!(found.contains(&("".into(), Some("more".into()))), "{err}");
        assert!(
            found.contains(&("0".into(), Some("addJobs".into()))),
            "{err}"
        );
    }

    #[test]
    fn serde_deserialize_uses_the_same_rules() {
        let p: Project =
            serde_json::from_value(json!({"jobs": [{"func": "a", "args": 1}]})).unwrap();
        assert_eq!(p, Project::new(vec![Node::call("a", json!(1))]));
        let err = serde_json::from_value::<Project>(
            json!({"jobs": [{"func": "a", "previousJobArgs": true}]}),
        )
        .unwrap_err();
        assert!(err.to_string().contains("previousJobArgs"), "{err}");
    }
}
