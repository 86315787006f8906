//! The errors of rqm-worker.

/// What can go wrong running or submitting projects.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The project was refused before anything ran.
    #[error(transparent)]
    Rejected(#[from] rqm_core::Rejection),
    /// Two `#[job]` functions share a name.
    #[error(transparent)]
    Registry(#[from] rqm_core::RegistryError),
    /// A project file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// Waiting for a project took longer than allowed.
    #[error("project {id} did not end within {seconds} s")]
    Timeout {
        /// The project.
        id: String,
        /// The time allowed.
        seconds: f64,
    },
}
