//! The errors of rqm-redis.

/// What can go wrong talking to Redis.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Redis answered with an error, or the connection failed.
    #[error(transparent)]
    Redis(#[from] redis::RedisError),
    /// The server may evict keys, which would lose projects' state.
    #[error(
        "Redis at {server} runs with maxmemory-policy `{policy}`, which may evict rqm's keys and lose projects; \
         set `maxmemory-policy noeviction` (redis.conf, or CONFIG SET maxmemory-policy noeviction) and start again"
    )]
    Eviction {
        /// The server, as configured.
        server: String,
        /// Its policy.
        policy: String,
    },
    /// The project was refused before anything was stored.
    #[error(transparent)]
    Rejected(#[from] rqm_core::Rejection),
    /// No project has this id (or it expired).
    #[error("no project {0} in Redis (it may have expired after its retention)")]
    NoProject(String),
    /// Waiting took longer than allowed.
    #[error("project {id} did not end within {seconds} s")]
    Timeout {
        /// The project.
        id: String,
        /// The time allowed.
        seconds: f64,
    },
    /// Stored state does not read as rqm wrote it: a key was changed by
    /// something else.
    #[error("{what} is corrupt in Redis: {reason}")]
    Corrupt {
        /// What.
        what: String,
        /// Why.
        reason: String,
    },
    /// The thread reading a submitted project stopped without an answer
    /// (it panicked): nothing of the project was opened.
    #[error("reading the submitted project failed: {0}")]
    Submit(String),
    /// A setting is not valid.
    #[error("invalid setting {name}: {reason}")]
    Config {
        /// The setting.
        name: &'static str,
        /// What is wrong.
        reason: String,
    },
}

impl Error {
    /// Whether the connection failed rather than the request: worth trying
    /// again once Redis is back.
    pub fn is_transient(&self) -> bool {
        matches!(self, Error::Redis(r)
            if r.is_io_error() || r.is_connection_dropped() || r.is_connection_refusal() || r.is_timeout())
    }
}
