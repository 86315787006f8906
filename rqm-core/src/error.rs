//! The errors of rqm-core.

use std::fmt;

use crate::model::Path;

/// One thing wrong with a project, and where.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ValidationError {
    /// The node at fault; the root's path for the project as a whole.
    pub path: Path,
    /// The offending key or rule, such as `previousJobArgs`, when there is one.
    pub key: Option<String>,
    /// What is wrong, and what to do about it.
    pub message: String,
}

impl ValidationError {
    pub(crate) fn new(path: Path, key: Option<&str>, message: impl Into<String>) -> Self {
        ValidationError {
            path,
            key: key.map(str::to_owned),
            message: message.into(),
        }
    }
}

impl fmt::Display for ValidationError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.path.is_root() {
            write!(f, "at the project root")?;
        } else {
            write!(f, "at node {}", self.path)?;
        }
        if let Some(key) = &self.key {
            write!(f, ", key `{key}`")?;
        }
        write!(f, ": {}", self.message)
    }
}

/// A project refused before anything ran or was stored: every error found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rejection {
    /// The errors, in the order the tree was read.
    pub errors: Vec<ValidationError>,
}

impl fmt::Display for Rejection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.errors.as_slice() {
            [one] => write!(f, "project rejected: {one}"),
            many => {
                write!(f, "project rejected with {} errors:", many.len())?;
                for error in many {
                    write!(f, "\n  - {error}")?;
                }
                Ok(())
            }
        }
    }
}

impl std::error::Error for Rejection {}

/// Why a report about a job was not applied (SPEC 7): it came too late, or
/// for an attempt that is not the current one. Nothing was changed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Ignored {
    /// No node has that id.
    #[error("no node {0} in this project")]
    UnknownNode(u32),
    /// The node is a group; only jobs run.
    #[error("node {path} is a group, not a job")]
    NotAJob {
        /// The group's path.
        path: Path,
    },
    /// The job has no attempt running; its outcome was already applied or it
    /// never started.
    #[error(
        "job {path} has no attempt running (it is {state}); the report for attempt {attempt} is ignored"
    )]
    NotRunning {
        /// The job's path.
        path: Path,
        /// The job's state now.
        state: crate::run::NodeState,
        /// The attempt the report was for.
        attempt: u32,
    },
    /// The report is for another attempt than the one running.
    #[error("job {path} is running attempt {current}; the report for attempt {attempt} is ignored")]
    StaleAttempt {
        /// The job's path.
        path: Path,
        /// The attempt running now.
        current: u32,
        /// The attempt the report was for.
        attempt: u32,
    },
    /// The job is not ready to begin.
    #[error("job {path} cannot begin: it is {state}")]
    NotReady {
        /// The job's path.
        path: Path,
        /// The job's state now.
        state: crate::run::NodeState,
    },
    /// The project has ended; nothing more starts.
    #[error("the project has ended ({0}); nothing more starts")]
    Ended(&'static str),
}
