//! Where Redis is and how rqm uses it.

use std::path::PathBuf;
use std::time::Duration;

use redis::aio::ConnectionLike;

use crate::error::Error;

/// How to reach Redis and lay out rqm's keys.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Config {
    /// `redis://[user:password@]host:port[/db]`; `rediss://` for TLS.
    pub url: String,
    /// Every key starts with this (default `rqm:`), so ACLs can fence rqm.
    pub prefix: String,
    /// How long a finished project's keys live (default 7 days).
    pub retention: Duration,
    /// For `rediss://`: a PEM file of the CA to trust instead of the
    /// system's roots (a private CA or a self-signed server).
    pub tls_ca: Option<PathBuf>,
    /// Records per shard of a project's per-node and per-vertex strings
    /// (default 65,536, a multiple of 16): no Redis call creates, grows or
    /// copies more than one shard (about 1.3 MB at the default). Each
    /// project keeps the value it was submitted with.
    pub shard_records: u32,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            url: "redis://127.0.0.1:6379".to_owned(),
            prefix: "rqm:".to_owned(),
            retention: Duration::from_secs(7 * 24 * 3600),
            tls_ca: None,
            shard_records: 65_536,
        }
    }
}

/// Records per block the scripts read (`BLOCK` in `lua/graph.lua`): a
/// shard holds whole blocks.
const SHARD_BLOCK: u32 = 16;

/// Whether `records` can be a shard's size: a positive multiple of the
/// scripts' block (the scripts apply the same rule to a stored value).
pub(crate) fn valid_shard(records: u32) -> bool {
    records >= SHARD_BLOCK && records.is_multiple_of(SHARD_BLOCK)
}

impl Config {
    /// A client for this configuration; connects lazily.
    pub fn client(&self) -> Result<redis::Client, Error> {
        if !valid_shard(self.shard_records) {
            return Err(Error::Config {
                name: "shard_records",
                reason: format!(
                    "{} is not a positive multiple of {SHARD_BLOCK} (records are read in blocks of {SHARD_BLOCK})",
                    self.shard_records
                ),
            });
        }
        if self.prefix.contains(['{', '}']) {
            return Err(Error::Config {
                name: "prefix",
                reason: format!(
                    "{:?} has a brace, which would break the hash tags",
                    self.prefix
                ),
            });
        }
        match &self.tls_ca {
            None => Ok(redis::Client::open(self.url.as_str())?),
            Some(path) => {
                if !self.url.starts_with("rediss://") {
                    return Err(Error::Config {
                        name: "tls_ca",
                        reason: format!(
                            "a CA is given, but {} is not a rediss:// URL",
                            self.redacted_url()
                        ),
                    });
                }
                let root_cert = std::fs::read(path).map_err(|e| Error::Config {
                    name: "tls_ca",
                    reason: format!("cannot read {}: {e}", path.display()),
                })?;
                let certs = redis::TlsCertificates {
                    client_tls: None,
                    root_cert: Some(root_cert),
                };
                Ok(redis::Client::build_with_tls(self.url.as_str(), certs)?)
            }
        }
    }

    /// The URL with any password hidden, for messages and logs.
    pub fn redacted_url(&self) -> String {
        match (self.url.find("://"), self.url.rfind('@')) {
            (Some(scheme), Some(at)) if at > scheme => {
                let creds = &self.url[scheme + 3..at];
                let user = creds.split(':').next().unwrap_or_default();
                format!("{}{user}:***{}", &self.url[..scheme + 3], &self.url[at..])
            }
            _ => self.url.clone(),
        }
    }
}

/// Checks that the server keeps every key: `maxmemory-policy` must be
/// `noeviction` (DESIGN 3). Read from `INFO memory`, which needs no CONFIG
/// permission.
pub async fn check_server<C: ConnectionLike>(conn: &mut C, config: &Config) -> Result<(), Error> {
    let info: String = redis::cmd("INFO").arg("memory").query_async(conn).await?;
    let policy = info
        .lines()
        .find_map(|line| line.strip_prefix("maxmemory_policy:"))
        .map(str::trim)
        .unwrap_or("unknown");
    if policy == "noeviction" {
        Ok(())
    } else {
        Err(Error::Eviction {
            server: config.redacted_url(),
            policy: policy.to_owned(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_never_show() {
        let c = Config {
            url: "rediss://worker:s3cret@redis.internal:6380/2".into(),
            ..Config::default()
        };
        assert_eq!(
            c.redacted_url(),
            "rediss://worker:***@redis.internal:6380/2"
        );
        assert_eq!(Config::default().redacted_url(), "redis://127.0.0.1:6379");
    }

    #[test]
    fn a_prefix_may_not_break_hash_tags() {
        let c = Config {
            prefix: "rqm{x}:".into(),
            ..Config::default()
        };
        assert!(matches!(
            c.client(),
            Err(Error::Config { name: "prefix", .. })
        ));
    }

    #[test]
    fn shards_hold_whole_blocks() {
        for bad in [0, 8, 100] {
            let c = Config {
                shard_records: bad,
                ..Config::default()
            };
            let err = c.client().unwrap_err();
            assert!(
                matches!(
                    err,
                    Error::Config {
                        name: "shard_records",
                        ..
                    }
                ),
                "{bad}: {err}"
            );
        }
        let c = Config {
            shard_records: 32,
            ..Config::default()
        };
        assert!(c.client().is_ok());
    }
}
