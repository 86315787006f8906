//! The Lua scripts, one file each under `lua/`, with the shared graph
//! operations of `lua/graph.lua` in front. Run with EVALSHA; redis-rs loads
//! a script again when the server answers NOSCRIPT.

use std::sync::LazyLock;

use redis::Script;

/// Applies finished jobs and settles new vertices.
pub(crate) static FIRE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(concat!(
        include_str!("../lua/graph.lua"),
        include_str!("../lua/fire.lua")
    ))
});
