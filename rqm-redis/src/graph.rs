//! The counter graph in Redis alone, without projects: uploading a compiled
//! graph and firing it through `lua/graph.lua`, so that the Lua graph can be
//! tested against rqm-core's (feature `testing`).

use redis::aio::ConnectionLike;

use crate::error::Error;
use crate::keys::ProjectKeys;
use crate::scripts::FIRE;
use crate::upload::GraphUpload;

/// Bytes per SETRANGE/APPEND of a big string, to keep each call short.
const WRITE_CHUNK: usize = 1 << 20;

/// What a graph step changed.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Fired {
    /// Job nodes made ready.
    pub ready: Vec<u32>,
    /// Group nodes started.
    pub started: Vec<u32>,
    /// Group nodes finished.
    pub ended: Vec<u32>,
}

/// Writes a compiled project's graph under `keys`, in pipelined chunks.
pub async fn upload<C: ConnectionLike>(
    conn: &mut C,
    keys: &ProjectKeys,
    graph: &GraphUpload<'_>,
) -> Result<(), Error> {
    let (vx, vp, ed) = graph.vertex_bytes(0);
    for (key, bytes) in [
        (keys.key("vx"), vx),
        (keys.key("ed"), ed),
        (keys.key("vp"), vp),
    ] {
        let mut pipe = redis::pipe();
        pipe.del(&key).ignore();
        for chunk in bytes.chunks(WRITE_CHUNK) {
            pipe.append(&key, chunk).ignore();
        }
        let () = pipe.query_async(conn).await?;
    }
    Ok(())
}

/// Settles vertices `settle` (first, last inclusive) and fires the vertices
/// of `finished` jobs, atomically.
pub async fn fire<C: ConnectionLike>(
    conn: &mut C,
    keys: &ProjectKeys,
    settle: Option<(u32, u32)>,
    finished: &[u32],
) -> Result<Fired, Error> {
    let (first, last) = settle.map_or((0, -1), |(f, l)| (i64::from(f), i64::from(l)));
    let (ready, started, ended): (Vec<u32>, Vec<u32>, Vec<u32>) = FIRE
        .key(keys.key("vx"))
        .key(keys.key("ed"))
        .key(keys.key("vp"))
        .arg(first)
        .arg(last)
        .arg(finished)
        .invoke_async(conn)
        .await?;
    Ok(Fired {
        ready,
        started,
        ended,
    })
}
