//! The domain registry: each customer tracking domain, its workspace, region and state, kept in
//! Redis so every node of a fleet sees the same list.
//!
//! Storage: one Redis hash (`<prefix>domains`), field = the normalised host, value = the
//! [`Domain`] as JSON. Host names are validated and normalised by
//! [`crate::host::normalize_domain`], a pure function. Each change is announced on the change
//! feed that keeps every node's [`mirror`] current.
//!
//! A domain is either served with its own certificate (ordered by ACME once verified), or
//! *fronted*: the customer's own proxy or CDN terminates TLS for it with the customer's
//! certificate and connects to the edge, so linkedge never orders one for it and answers its
//! handshakes with `tls.cert`.

pub mod mirror;

pub use crate::host::DomainError;
use crate::host::normalize_domain;
use crate::store::Db;
pub use mirror::{Follower, Mirror};
use redis::AsyncCommands;
use serde::{Deserialize, Serialize};

/// Where a domain stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum State {
    /// Added, not verified yet.
    Pending,
    /// DNS and HTTP checks passed; a certificate may be ordered (never for a fronted domain,
    /// which stays here).
    Verified,
    /// A certificate is being served.
    Issued,
    /// Verification or issuance failed; `error` says why.
    Failed,
}

impl State {
    /// The state's name as stored and shown.
    pub fn as_str(self) -> &'static str {
        match self {
            State::Pending => "pending",
            State::Verified => "verified",
            State::Issued => "issued",
            State::Failed => "failed",
        }
    }
}

/// One registered tracking domain.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Domain {
    /// The normalised host.
    pub host: String,
    /// The workspace that owns it.
    pub workspace: u64,
    /// Its data region (`us`, `eu`, ...).
    pub region: String,
    /// Where it stands.
    pub state: State,
    /// The last error, in words; empty when none.
    #[serde(default)]
    pub error: String,
    /// Unix milliseconds when added.
    pub created_ms: u64,
    /// Unix milliseconds of the last change.
    pub updated_ms: u64,
    /// Unix milliseconds when it last passed verification.
    #[serde(default)]
    pub verified_ms: Option<u64>,
    /// Fronted by the customer: their proxy or CDN (Cloudflare "Proxied", CloudFront, Fastly,
    /// their own nginx) terminates TLS with its own certificate in front of the edge. No
    /// certificate is ordered for it, its handshakes get `tls.cert`, and `domain verify` checks
    /// it through that proxy. Records written before the field existed read as not fronted.
    #[serde(default)]
    pub fronted: bool,
}

/// A registry operation that could not be done.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    /// The host name is refused.
    #[error("{0}")]
    Invalid(#[from] DomainError),
    /// The region is not configured.
    #[error("unknown region {region:?}; configured: {known}")]
    UnknownRegion {
        /// The region asked for.
        region: String,
        /// The configured ones.
        known: String,
    },
    /// Already registered to another workspace.
    #[error("{host} is already registered to workspace {workspace}")]
    Taken {
        /// The host.
        host: String,
        /// Its owner.
        workspace: u64,
    },
    /// Not registered.
    #[error("{0} is not registered")]
    NotFound(String),
    /// Redis failed.
    #[error("redis: {0}")]
    Redis(#[from] redis::RedisError),
    /// A stored record could not be read.
    #[error("stored record for {0} is damaged")]
    Damaged(String),
}

/// The registry in Redis.
#[derive(Clone)]
pub struct Registry {
    db: Db,
    key: String,
    regions: Vec<String>,
}

impl Registry {
    /// The registry in `db`, accepting the configured `regions`.
    pub fn new(db: Db, regions: Vec<String>) -> Registry {
        Registry {
            key: db.keys().domains(),
            db,
            regions,
        }
    }

    /// The Redis the registry lives in.
    pub fn db(&self) -> &Db {
        &self.db
    }

    /// Adds `host` for `workspace` in `region`, as pending, fronted by the customer's own proxy
    /// when `fronted`. Adding it again for the same workspace sets the region and the fronted
    /// flag to these and keeps the rest, except that a change of the fronted flag makes the
    /// domain pending again (with no error): what `verify` checks, and whether a certificate
    /// is ordered, depend on it.
    pub async fn add(
        &self,
        host: &str,
        workspace: u64,
        region: &str,
        fronted: bool,
    ) -> Result<Domain, RegistryError> {
        let host = normalize_domain(host)?;
        if !self.regions.iter().any(|r| r == region) {
            return Err(RegistryError::UnknownRegion {
                region: region.to_string(),
                known: self.regions.join(", "),
            });
        }
        let now = crate::time::unix_ms();
        let domain = match self.get(&host).await? {
            Some(d) if d.workspace != workspace => {
                return Err(RegistryError::Taken {
                    host,
                    workspace: d.workspace,
                });
            }
            Some(mut d) => {
                d.region = region.to_string();
                if d.fronted != fronted {
                    d.fronted = fronted;
                    d.state = State::Pending;
                    d.error.clear();
                }
                d.updated_ms = now;
                d
            }
            None => Domain {
                host: host.clone(),
                workspace,
                region: region.to_string(),
                state: State::Pending,
                error: String::new(),
                created_ms: now,
                updated_ms: now,
                verified_ms: None,
                fronted,
            },
        };
        self.put(&domain).await?;
        Ok(domain)
    }

    async fn put(&self, d: &Domain) -> Result<(), RegistryError> {
        let json = serde_json::to_string(d).expect("domains serialize");
        let _: () = self.db.conn().await?.hset(&self.key, &d.host, json).await?;
        self.announce(&d.host).await
    }

    /// Tells every node's mirror that `host` changed. The write before it has landed, so a node
    /// that misses the message (not subscribed at that moment) loads everything again when it
    /// subscribes.
    async fn announce(&self, host: &str) -> Result<(), RegistryError> {
        let _: () = self
            .db
            .conn()
            .await?
            .publish(self.db.keys().domains_channel(), host)
            .await?;
        Ok(())
    }

    /// The domain, if registered (`host` is normalised first).
    pub async fn get(&self, host: &str) -> Result<Option<Domain>, RegistryError> {
        let host = normalize_domain(host)?;
        let raw: Option<String> = self.db.conn().await?.hget(&self.key, &host).await?;
        raw.map(|r| serde_json::from_str(&r).map_err(|_| RegistryError::Damaged(host.clone())))
            .transpose()
    }

    /// Every registered domain, sorted by host.
    pub async fn list(&self) -> Result<Vec<Domain>, RegistryError> {
        let all: Vec<(String, String)> = self.db.conn().await?.hgetall(&self.key).await?;
        let mut out = all
            .into_iter()
            .map(|(h, r)| serde_json::from_str(&r).map_err(|_| RegistryError::Damaged(h)))
            .collect::<Result<Vec<Domain>, _>>()?;
        out.sort_by(|a, b| a.host.cmp(&b.host));
        Ok(out)
    }

    /// Removes the domain; `NotFound` if it was not registered.
    pub async fn remove(&self, host: &str) -> Result<(), RegistryError> {
        let host = normalize_domain(host)?;
        let n: u64 = self.db.conn().await?.hdel(&self.key, &host).await?;
        if n == 0 {
            return Err(RegistryError::NotFound(host));
        }
        self.announce(&host).await
    }

    /// Moves the domain to `state` with `error` (empty when none).
    pub async fn set_state(
        &self,
        host: &str,
        state: State,
        error: &str,
    ) -> Result<Domain, RegistryError> {
        let mut d = self
            .get(host)
            .await?
            .ok_or_else(|| RegistryError::NotFound(host.to_string()))?;
        d.state = state;
        d.error = error.to_string();
        d.updated_ms = crate::time::unix_ms();
        if state == State::Verified {
            d.verified_ms = Some(d.updated_ms);
        }
        self.put(&d).await?;
        Ok(d)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_written_before_the_fronted_flag_read_as_not_fronted() {
        let old = r#"{"host":"link.example.com","workspace":7,"region":"eu","state":"issued",
            "error":"","created_ms":1,"updated_ms":2,"verified_ms":2}"#;
        let d: Domain = serde_json::from_str(old).unwrap();
        assert!(!d.fronted);
        assert_eq!(d.state, State::Issued);
        let json = serde_json::to_value(Domain { fronted: true, ..d }).unwrap();
        assert_eq!(json["fronted"], true);
    }
}
