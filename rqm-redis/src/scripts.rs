//! The Lua scripts, one file each under `lua/`, with the shared graph and
//! project operations (`lua/graph.lua`, `lua/project.lua`) in front. Run
//! with EVALSHA; redis-rs loads a script again when the server answers
//! NOSCRIPT.

use std::sync::LazyLock;

use redis::Script;

macro_rules! project_script {
    ($file:literal) => {
        LazyLock::new(|| {
            Script::new(concat!(
                include_str!("../lua/graph.lua"),
                include_str!("../lua/project.lua"),
                include_str!($file)
            ))
        })
    };
}

/// Applies finished jobs and settles new vertices, graph only.
#[cfg(feature = "testing")]
pub(crate) static FIRE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(concat!(
        include_str!("../lua/graph.lua"),
        include_str!("../lua/fire.lua")
    ))
});
/// Opens an uploaded project.
pub(crate) static OPEN: LazyLock<Script> = project_script!("../lua/open.lua");
/// Begins leased attempts.
pub(crate) static BEGIN: LazyLock<Script> = project_script!("../lua/begin.lua");
/// Applies attempts' outcomes.
pub(crate) static COMPLETE: LazyLock<Script> = project_script!("../lua/complete.lua");
/// Completes an attempt that appended nodes.
pub(crate) static APPEND: LazyLock<Script> = project_script!("../lua/append.lua");
/// Goes on with a release left for later.
pub(crate) static RELEASE: LazyLock<Script> = project_script!("../lua/release.lua");
/// Cancels a project.
pub(crate) static CANCEL: LazyLock<Script> = project_script!("../lua/cancel.lua");
/// Makes retried or lost jobs ready again.
pub(crate) static REQUEUE: LazyLock<Script> = project_script!("../lua/requeue.lua");
/// Takes ready jobs from a queue with leases.
pub(crate) static TAKE: LazyLock<Script> =
    LazyLock::new(|| Script::new(include_str!("../lua/take.lua")));
/// Takes due entries of a sorted set.
pub(crate) static DUE: LazyLock<Script> =
    LazyLock::new(|| Script::new(include_str!("../lua/due.lua")));
/// When the next retry or lease expiry is due.
pub(crate) static NEXT: LazyLock<Script> =
    LazyLock::new(|| Script::new(include_str!("../lua/next.lua")));
/// Fails a project whose stored state is corrupt.
pub(crate) static CORRUPT: LazyLock<Script> =
    LazyLock::new(|| Script::new(include_str!("../lua/corrupt.lua")));

/// Every script's name and SHA1, so that a slow log or a monitor can say
/// which script a call ran.
pub fn script_names() -> Vec<(&'static str, String)> {
    let scripts: [(&'static str, &LazyLock<Script>); 11] = [
        ("open", &OPEN),
        ("begin", &BEGIN),
        ("complete", &COMPLETE),
        ("append", &APPEND),
        ("release", &RELEASE),
        ("cancel", &CANCEL),
        ("requeue", &REQUEUE),
        ("take", &TAKE),
        ("due", &DUE),
        ("next", &NEXT),
        ("corrupt", &CORRUPT),
    ];
    scripts
        .iter()
        .map(|(name, script)| (*name, script.get_hash().to_owned()))
        .collect()
}
