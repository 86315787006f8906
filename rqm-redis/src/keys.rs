//! The key layout: everything under one prefix; each project's keys share
//! the hash tag `{<project id>}`, so one script can touch them all and
//! Redis Cluster keeps them on one shard.

/// Key names under a prefix.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Keys {
    prefix: String,
}

impl Keys {
    /// Keys under `prefix`, such as `rqm:`.
    pub fn new(prefix: impl Into<String>) -> Self {
        Keys {
            prefix: prefix.into(),
        }
    }

    /// The set of every project's id.
    pub fn projects(&self) -> String {
        format!("{}projects", self.prefix)
    }

    /// The ready list of a queue.
    pub fn queue(&self, queue: &str) -> String {
        format!("{}queue:{queue}", self.prefix)
    }

    /// The keys of one project.
    pub fn project(&self, id: &str) -> ProjectKeys {
        ProjectKeys {
            base: format!("{}{{{id}}}:", self.prefix),
        }
    }
}

/// The keys of one project, all with its hash tag.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProjectKeys {
    base: String,
}

impl ProjectKeys {
    /// The project's key named `name`, such as `meta`.
    pub fn key(&self, name: &str) -> String {
        format!("{}{name}", self.base)
    }

    /// Shard `k` of the project's string of records `name` (such as `nd`):
    /// the key itself for shard 0, then `<key>:<k>`.
    pub fn shard(&self, name: &str, k: usize) -> String {
        if k == 0 {
            self.key(name)
        } else {
            format!("{}{name}:{k}", self.base)
        }
    }
}

/// Where record `id` of a string of `size`-byte records cut into shards of
/// `per_shard` records is: its shard and its byte offset there.
pub(crate) fn record_place(id: usize, size: usize, per_shard: usize) -> (usize, usize) {
    (id / per_shard, (id % per_shard) * size)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_projects_keys_share_one_hash_tag_under_the_prefix() {
        let keys = Keys::new("app:rqm:").project("p42");
        assert_eq!(keys.key("meta"), "app:rqm:{p42}:meta");
        assert_eq!(keys.shard("nd", 0), "app:rqm:{p42}:nd");
        assert_eq!(keys.shard("nd", 3), "app:rqm:{p42}:nd:3");
        assert_eq!(
            record_place(70_000, 20, 65_536),
            (1, (70_000 - 65_536) * 20)
        );
        assert_eq!(Keys::new("rqm:").queue("fast"), "rqm:queue:fast");
    }
}
