//! The Redis engine of rqm. This crate holds, so far, what every part of it
//! stands on: the connection settings and the server check, the key layout,
//! and a private `redis-server` for tests (feature `testing`). The Lua
//! transitions of the counter graph that `rqm-core` compiles, submit, fetch
//! with leases, results and events build on these.

mod config;
mod engine;
mod error;
mod graph;
mod keys;
mod scripts;
#[cfg(feature = "testing")]
pub mod testing;
mod upload;

pub use config::{Config, check_server};
pub use engine::{Begun, Completion, JobPayload, Listed, RedisEngine};
pub use error::Error;
pub use graph::{Fired, fire, upload};
pub use keys::{Keys, ProjectKeys};
pub use redis;
pub use upload::{GraphUpload, NODE_BYTES, VERTEX_BYTES};
