//! The Redis engine of rqm: projects run by many worker processes on many
//! machines that share one Redis.
//!
//! [`RedisEngine`] is the client (submit, status, wait, cancel, list) and the
//! transport the worker loop of `rqm-worker` calls (take, begin, complete,
//! renew, requeue). A project is compiled by `rqm-core` into a counter graph
//! and stored under one hash tag; every transition is a call of a Lua
//! function (`lua/`, loaded as one library) of generic graph operations,
//! fenced by the attempt number. See
//! the README's "Running on Redis" for the key layout and the guarantees.

mod config;
mod engine;
mod error;
#[cfg(feature = "testing")]
mod graph;
mod keys;
mod scripts;
#[cfg(feature = "server")]
pub mod testing;
mod upload;

pub use config::{Config, check_server};
pub use engine::{Begun, Completion, Handoff, JobPayload, Listed, RedisEngine, Taken};
pub use error::Error;
#[cfg(feature = "testing")]
pub use graph::{Fired, fire, upload};
pub use keys::{Keys, ProjectKeys};
pub use redis;
pub use scripts::function_names;
pub use upload::{Drained, GraphUpload, LIVE_BYTES, NODE_BYTES, Profile, VERTEX_BYTES};
