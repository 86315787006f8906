//! The rqm worker: tokio execution of jobs, the embedded (in-memory) engine
//! and the command line a user's worker binary gets with one call. It drives
//! `rqm-core`'s state machine; it arrives with the engine issues.
