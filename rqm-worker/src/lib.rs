//! The rqm worker: the embedded (in-memory) engine that runs projects on
//! tokio, the Redis worker loop ([`run_redis_worker`]), and the command line
//! a user's worker binary gets with one call:
//!
//! ```no_run
//! // src/main.rs of a crate whose #[job] functions should run:
//! fn main() -> std::process::ExitCode {
//!     rqm_worker::main()
//! }
//! ```

mod cli;
mod embedded;
mod error;
mod exec;
mod pool;
mod redis_worker;

pub use cli::{main, main_with};
pub use embedded::{Engine, EngineConfig, Events, ProjectEvent, ProjectHandle};
pub use error::Error;
pub use redis_worker::{WorkerConfig, run as run_redis_worker};
