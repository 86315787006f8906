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
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_projects_keys_share_one_hash_tag_under_the_prefix() {
        let keys = Keys::new("app:rqm:").project("p42");
        assert_eq!(keys.key("meta"), "app:rqm:{p42}:meta");
        assert_eq!(Keys::new("rqm:").queue("fast"), "rqm:queue:fast");
    }
}
