//! The Redis engine of rqm: the key layout, the Lua scripts for the counter
//! graph's transitions, submit, fetch with leases, results and events. It
//! runs the graph that `rqm-core` compiles; it arrives with the Redis issue.
