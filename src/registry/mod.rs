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
//!
//! A domain is *retired* when the customer moves to a new one (`linkedge domain move OLD NEW`):
//! links already sent on it keep working (routed, served and recorded as before), no new link
//! may be minted on it, and [`Domain::moved_to`] names the successor. Only `remove` ends it.
//! Each node notes, in memory, when a retired domain last saw a click ([`last_click`]).

pub mod last_click;
pub mod mirror;

pub use crate::host::DomainError;
use crate::host::normalize_domain;
use crate::store::Db;
pub use last_click::LastClicks;
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
    /// Moved to the domain [`Domain::moved_to`] names: its links keep working, no new link may
    /// be minted on it, and its certificate is renewed while it still resolves to the edge.
    /// Nothing but `remove` takes a domain out of this state.
    Retired,
}

impl State {
    /// The state's name as stored and shown.
    pub fn as_str(self) -> &'static str {
        match self {
            State::Pending => "pending",
            State::Verified => "verified",
            State::Issued => "issued",
            State::Failed => "failed",
            State::Retired => "retired",
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
    /// For a retired domain, the domain its new links go on (`domain move`). Records written
    /// before the field existed read as none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub moved_to: Option<String>,
}

impl Domain {
    /// `Err(Retired)`, naming the successor, when the domain is retired: no new link, no new
    /// registration, no second move may use it.
    pub fn accepts_new_links(&self) -> Result<(), RegistryError> {
        if self.state != State::Retired {
            return Ok(());
        }
        Err(RegistryError::Retired {
            host: self.host.clone(),
            to: self.moved_to.clone().unwrap_or_default(),
        })
    }
}

/// Registers `KEYS[1]`'s field `ARGV[1]` as `ARGV[2]` and replaces field `ARGV[3]` with `ARGV[5]`,
/// only if `ARGV[1]` is not registered and `ARGV[3]` still reads `ARGV[4]`: a move is one
/// atomic step on one key (no hash tag needed in a cluster). 1 when done, 0 when not.
const MOVE: &str = "if redis.call('HEXISTS', KEYS[1], ARGV[1]) == 1 \
    or redis.call('HGET', KEYS[1], ARGV[3]) ~= ARGV[4] then return 0 end \
    redis.call('HSET', KEYS[1], ARGV[1], ARGV[2], ARGV[3], ARGV[5]) return 1";

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
    /// Retired by a move: no new link, registration or move may use it.
    #[error("{host} is retired: new links go on {to}")]
    Retired {
        /// The retired host.
        host: String,
        /// Its successor.
        to: String,
    },
    /// A move to the domain's own name.
    #[error("{0} cannot move to itself: name another domain")]
    SameName(String),
    /// Another change to either name landed during a move, which did nothing.
    #[error("{old} or {new} changed during the move; nothing was changed: try again")]
    Raced {
        /// The domain being moved.
        old: String,
        /// Its successor.
        new: String,
    },
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
    /// is ordered, depend on it. A retired domain is refused (`Retired`): remove it first.
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
                d.accepts_new_links()?;
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
                moved_to: None,
            },
        };
        self.put(&domain).await?;
        Ok(domain)
    }

    async fn put(&self, d: &Domain) -> Result<(), RegistryError> {
        let json = serde_json::to_string(d).expect("domains serialize");
        // Never over a retired record with one that is not: a write prepared from a read
        // made just before a move (the issuer's, verify's) would un-retire the domain.
        let written: i64 = redis::Script::new(
            "local cur = redis.call('HGET', KEYS[1], ARGV[1]) \
             if cur and string.find(cur, '\"state\":\"retired\"', 1, true) \
                and not string.find(ARGV[2], '\"state\":\"retired\"', 1, true) then return 0 end \
             redis.call('HSET', KEYS[1], ARGV[1], ARGV[2]) return 1",
        )
        .key(&self.key)
        .arg(&d.host)
        .arg(json)
        .invoke_async(&mut self.db.conn().await?)
        .await?;
        if written == 0 {
            tracing::info!(host = %d.host, "not written: the domain was retired meanwhile");
        }
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

    /// Removes the domain (retired or not) and its last click; `NotFound` if it was not
    /// registered.
    pub async fn remove(&self, host: &str) -> Result<(), RegistryError> {
        let host = normalize_domain(host)?;
        let n: u64 = self.db.conn().await?.hdel(&self.key, &host).await?;
        if n == 0 {
            return Err(RegistryError::NotFound(host));
        }
        last_click::forget(&self.db, &host).await?;
        self.announce(&host).await
    }

    /// When `host` (normalised) last saw a click since it was retired, as far as the nodes have
    /// written it ([`last_click`]).
    pub async fn last_click_ms(&self, host: &str) -> Result<Option<u64>, RegistryError> {
        Ok(last_click::read(&self.db, host).await?)
    }

    /// Moves `old`'s new links to `new`: registers `new` (pending) for `old`'s workspace, region
    /// and fronted flag, and marks `old` retired with [`Domain::moved_to`] naming `new`, in one
    /// atomic step. Returns (old, new). Refused, changing nothing, when a name is invalid, `new`
    /// is `old`, `old` is not registered or already retired, or `new` is registered to anyone.
    pub async fn move_to(&self, old: &str, new: &str) -> Result<(Domain, Domain), RegistryError> {
        let old = normalize_domain(old)?;
        let new = normalize_domain(new)?;
        if old == new {
            return Err(RegistryError::SameName(old));
        }
        let raw: Option<String> = self.db.conn().await?.hget(&self.key, &old).await?;
        let raw = raw.ok_or_else(|| RegistryError::NotFound(old.clone()))?;
        let mut from: Domain =
            serde_json::from_str(&raw).map_err(|_| RegistryError::Damaged(old.clone()))?;
        from.accepts_new_links()?;
        if let Some(d) = self.get(&new).await? {
            return Err(RegistryError::Taken {
                host: new,
                workspace: d.workspace,
            });
        }
        let now = crate::time::unix_ms();
        let to = Domain {
            host: new.clone(),
            workspace: from.workspace,
            region: from.region.clone(),
            state: State::Pending,
            error: String::new(),
            created_ms: now,
            updated_ms: now,
            verified_ms: None,
            fronted: from.fronted,
            moved_to: None,
        };
        from.state = State::Retired;
        from.error.clear();
        from.moved_to = Some(new.clone());
        from.updated_ms = now;
        let json = |d: &Domain| serde_json::to_string(d).expect("domains serialize");
        let done: i64 = redis::Script::new(MOVE)
            .key(&self.key)
            .arg(&new)
            .arg(json(&to))
            .arg(&old)
            .arg(&raw)
            .arg(json(&from))
            .invoke_async(&mut self.db.conn().await?)
            .await?;
        if done != 1 {
            return Err(RegistryError::Raced { old, new });
        }
        self.announce(&new).await?;
        self.announce(&old).await?;
        Ok((from, to))
    }

    /// Moves the domain to `state` with `error` (empty when none). A retired domain stays
    /// retired whatever `state` says (the issuer's renewal outcome, a verify): only its error
    /// is recorded.
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
        if d.state != State::Retired {
            d.state = state;
        }
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
        assert_eq!(d.moved_to, None);
        assert!(d.accepts_new_links().is_ok());
        let json = serde_json::to_value(Domain { fronted: true, ..d }).unwrap();
        assert_eq!(json["fronted"], true);
        assert!(json.get("moved_to").is_none());
    }

    #[test]
    fn a_retired_domain_names_its_successor() {
        let raw = r#"{"host":"link.old.example","workspace":7,"region":"eu","state":"retired",
            "created_ms":1,"updated_ms":2,"moved_to":"link.new.example"}"#;
        let d: Domain = serde_json::from_str(raw).unwrap();
        assert_eq!(d.state, State::Retired);
        assert_eq!(d.state.as_str(), "retired");
        assert_eq!(
            d.accepts_new_links().unwrap_err().to_string(),
            "link.old.example is retired: new links go on link.new.example"
        );
    }
}
