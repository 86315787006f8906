//! The Lua code, one file per operation under `lua/`, loaded into Redis as
//! one function library (`FUNCTION LOAD`) and called with `FCALL`. The
//! shared graph and project helpers (`lua/graph.lua`, `lua/project.lua`)
//! are defined once, when the library loads, not again at every call (an
//! EVALSHA of them alone costs about 20 us more than a trivial script);
//! what differs from call to call is set up as each call starts.
//!
//! The library's name and its functions' carry a hash of its code, so that
//! workers of different versions on one Redis each call their own. A call
//! that finds its function missing (a restarted server, a flushed one)
//! loads the library and goes again.

use std::sync::LazyLock;

use redis::aio::ConnectionLike;
use redis::{FromRedisValue, RedisResult, ToRedisArgs};

const GRAPH: &str = include_str!("../lua/graph.lua");
const PROJECT: &str = include_str!("../lua/project.lua");

/// What a function's body finds set up when it starts.
#[derive(Clone, Copy)]
enum Setup {
    /// `KEYS` and `ARGV` only.
    Plain,
    /// The graph of KEYS[1..3] (see graph.lua).
    #[cfg_attr(not(feature = "testing"), allow(dead_code))]
    Graph,
    /// A project (see project.lua).
    Project,
}

const BODIES: &[(&str, Setup, &str)] = &[
    ("open", Setup::Project, include_str!("../lua/open.lua")),
    ("begin", Setup::Project, include_str!("../lua/begin.lua")),
    (
        "complete",
        Setup::Project,
        include_str!("../lua/complete.lua"),
    ),
    ("append", Setup::Project, include_str!("../lua/append.lua")),
    (
        "release",
        Setup::Project,
        include_str!("../lua/release.lua"),
    ),
    ("cancel", Setup::Project, include_str!("../lua/cancel.lua")),
    (
        "requeue",
        Setup::Project,
        include_str!("../lua/requeue.lua"),
    ),
    ("take", Setup::Plain, include_str!("../lua/take.lua")),
    ("due", Setup::Plain, include_str!("../lua/due.lua")),
    ("next", Setup::Plain, include_str!("../lua/next.lua")),
    ("corrupt", Setup::Plain, include_str!("../lua/corrupt.lua")),
    #[cfg(feature = "testing")]
    ("fire", Setup::Graph, include_str!("../lua/fire.lua")),
];

/// The library's code and the prefix of its functions' names.
struct Library {
    code: String,
    prefix: String,
}

static LIBRARY: LazyLock<Library> = LazyLock::new(|| {
    let mut body = String::new();
    body.push_str(GRAPH);
    body.push('\n');
    body.push_str(PROJECT);
    body.push('\n');
    for (name, setup, code) in BODIES {
        let start = match setup {
            Setup::Plain => "local KEYS, ARGV = keys, args",
            Setup::Graph => "graph_setup(keys, args)",
            Setup::Project => {
                "local refused = project_setup(keys, args)\nif refused then return refused end"
            }
        };
        body.push_str(&format!(
            "redis.register_function('{{PREFIX}}{name}', function(keys, args)\n{start}\n{code}\nend)\n"
        ));
    }
    let prefix = format!("rqm_{}_", hash(&body));
    let code = format!(
        "#!lua name={}\n{}",
        prefix.trim_end_matches('_'),
        body.replace("{PREFIX}", &prefix)
    );
    Library { code, prefix }
});

/// 64 bits of FNV-1a, in hex.
fn hash(text: &str) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in text.bytes() {
        h ^= u64::from(byte);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    format!("{h:016x}")
}

/// One function of the library.
pub(crate) struct Function {
    name: &'static str,
}

impl Function {
    const fn new(name: &'static str) -> Function {
        Function { name }
    }

    /// Its name in Redis.
    pub(crate) fn full_name(&self) -> String {
        format!("{}{}", LIBRARY.prefix, self.name)
    }

    /// A call of it, with no keys or arguments yet.
    pub(crate) fn call(&self) -> Call {
        Call {
            function: self.full_name(),
            keys: Vec::new(),
            args: Vec::new(),
        }
    }

    /// A call of it with `key` as its first key.
    pub(crate) fn key<T: ToRedisArgs>(&self, key: T) -> Call {
        let mut call = self.call();
        call.key(key);
        call
    }
}

/// An FCALL being built: keys, then arguments.
pub(crate) struct Call {
    function: String,
    keys: Vec<Vec<u8>>,
    args: Vec<Vec<u8>>,
}

impl Call {
    /// Adds a key.
    pub(crate) fn key<T: ToRedisArgs>(&mut self, key: T) -> &mut Call {
        self.keys.extend(key.to_redis_args());
        self
    }

    /// Adds arguments.
    pub(crate) fn arg<T: ToRedisArgs>(&mut self, arg: T) -> &mut Call {
        self.args.extend(arg.to_redis_args());
        self
    }

    /// The FCALL command, as a pipeline takes it.
    pub(crate) fn cmd(&self) -> redis::Cmd {
        let mut cmd = redis::cmd("FCALL");
        cmd.arg(&self.function)
            .arg(self.keys.len())
            .arg(&self.keys)
            .arg(&self.args);
        cmd
    }

    /// Calls it; loads the library first if Redis does not have it.
    pub(crate) async fn invoke_async<T: FromRedisValue, C: ConnectionLike>(
        &self,
        conn: &mut C,
    ) -> RedisResult<T> {
        let cmd = self.cmd();
        match cmd.query_async(conn).await {
            Err(e) if is_not_loaded(&e) => {
                load(conn).await?;
                cmd.query_async(conn).await
            }
            outcome => outcome,
        }
    }
}

/// Whether Redis answered that the function is not loaded.
pub(crate) fn is_not_loaded(e: &redis::RedisError) -> bool {
    e.to_string().contains("Function not found")
}

/// Loads the library (again: replacing one of the same name, which holds
/// the same code).
pub(crate) async fn load<C: ConnectionLike>(conn: &mut C) -> RedisResult<()> {
    let _: String = redis::cmd("FUNCTION")
        .arg("LOAD")
        .arg("REPLACE")
        .arg(&LIBRARY.code)
        .query_async(conn)
        .await?;
    Ok(())
}

/// Opens an uploaded project.
pub(crate) static OPEN: Function = Function::new("open");
/// Begins leased attempts.
pub(crate) static BEGIN: Function = Function::new("begin");
/// Applies attempts' outcomes.
pub(crate) static COMPLETE: Function = Function::new("complete");
/// Completes an attempt that appended nodes.
pub(crate) static APPEND: Function = Function::new("append");
/// Goes on with a release left for later.
pub(crate) static RELEASE: Function = Function::new("release");
/// Cancels a project.
pub(crate) static CANCEL: Function = Function::new("cancel");
/// Makes retried or lost jobs ready again.
pub(crate) static REQUEUE: Function = Function::new("requeue");
/// Takes ready jobs from a queue with leases.
pub(crate) static TAKE: Function = Function::new("take");
/// Takes due entries of a sorted set.
pub(crate) static DUE: Function = Function::new("due");
/// When the next retry or lease expiry is due.
pub(crate) static NEXT: Function = Function::new("next");
/// Fails a project whose stored state is corrupt.
pub(crate) static CORRUPT: Function = Function::new("corrupt");
/// Applies finished jobs and settles new vertices, graph only.
#[cfg(feature = "testing")]
pub(crate) static FIRE: Function = Function::new("fire");

/// Every function's short name (`complete`) and its name in Redis, so
/// that a slow log or a monitor can say which one a call ran.
pub fn function_names() -> Vec<(&'static str, String)> {
    BODIES
        .iter()
        .map(|(name, _, _)| (*name, Function::new(name).full_name()))
        .collect()
}
