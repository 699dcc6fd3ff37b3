//! The domain registry: each customer tracking domain, its workspace, region and state, kept in
//! Redis so every node of a fleet sees the same list.
//!
//! Storage: one Redis hash (`<prefix>domains`), field = the normalised host, value = the
//! [`Domain`] as JSON. Host names are validated and normalised by [`normalize_domain`], a pure
//! function.

use crate::db::Db;
use redis::AsyncCommands;
use serde::{Deserialize, Serialize};
use std::time::{SystemTime, UNIX_EPOCH};

/// Why a host name is refused, in words a customer can act on.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DomainError {
    /// Nothing given.
    #[error("the host name is empty")]
    Empty,
    /// Over 253 characters once in ASCII form.
    #[error("the host name is longer than 253 characters")]
    TooLong,
    /// An IP address instead of a name.
    #[error("{0} is an IP address; use a host name such as link.example.com")]
    IpAddress(String),
    /// `*.example.com`.
    #[error("wildcards are not supported; register each tracking host, such as link.example.com")]
    Wildcard,
    /// `localhost`, `com`.
    #[error("{0:?} has a single label; use a full host name such as link.example.com")]
    SingleLabel(String),
    /// A label breaks the rules.
    #[error("label {label:?} {why}")]
    BadLabel {
        /// The offending label.
        label: String,
        /// What is wrong with it.
        why: &'static str,
    },
    /// Not convertible to ASCII (IDNA).
    #[error("not a valid internationalised host name: {0}")]
    Idna(String),
    /// The top-level label is all digits.
    #[error("the top-level label {0:?} is all digits")]
    NumericTld(String),
    /// Something that is not a bare host name (a URL, a path, a port).
    #[error("{0:?} is not a bare host name; give only the name, such as link.example.com")]
    NotBare(String),
}

/// Validates and normalises a tracking host: lowercase, IDNA to punycode, no trailing dot, any
/// depth of subdomain (`a.b.example.com`).
pub fn normalize_domain(input: &str) -> Result<String, DomainError> {
    let s = input.trim();
    if s.is_empty() {
        return Err(DomainError::Empty);
    }
    if s.contains("://") || s.contains(['/', '?', '#', '@', ' ']) {
        return Err(DomainError::NotBare(s.to_string()));
    }
    if s.parse::<std::net::IpAddr>().is_ok() || s.starts_with('[') {
        return Err(DomainError::IpAddress(s.to_string()));
    }
    if s.contains(':') {
        return Err(DomainError::NotBare(s.to_string()));
    }
    if s.starts_with("*.") || s.contains('*') {
        return Err(DomainError::Wildcard);
    }
    let s = s.strip_suffix('.').unwrap_or(s);
    let ascii = idna::domain_to_ascii(s).map_err(|e| DomainError::Idna(e.to_string()))?;
    if ascii.is_empty() {
        return Err(DomainError::Empty);
    }
    if ascii.len() > 253 {
        return Err(DomainError::TooLong);
    }
    let labels: Vec<&str> = ascii.split('.').collect();
    if labels.len() < 2 {
        return Err(DomainError::SingleLabel(ascii.clone()));
    }
    for l in &labels {
        let why = if l.is_empty() {
            Some("is empty (two dots in a row?)")
        } else if l.len() > 63 {
            Some("is longer than 63 characters")
        } else if !l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-') {
            Some("may hold only letters, digits and hyphens")
        } else if l.starts_with('-') || l.ends_with('-') {
            Some("may not start or end with a hyphen")
        } else {
            None
        };
        if let Some(why) = why {
            return Err(DomainError::BadLabel {
                label: l.to_string(),
                why,
            });
        }
    }
    let tld = labels[labels.len() - 1];
    if tld.bytes().all(|b| b.is_ascii_digit()) {
        return Err(DomainError::NumericTld(tld.to_string()));
    }
    Ok(ascii)
}

/// Where a domain stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum State {
    /// Added, not verified yet.
    Pending,
    /// DNS and HTTP checks passed; a certificate may be ordered.
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

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
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

    /// Adds `host` for `workspace` in `region`, as pending. Adding it again for the same
    /// workspace updates the region and keeps the rest.
    pub async fn add(
        &self,
        host: &str,
        workspace: u64,
        region: &str,
    ) -> Result<Domain, RegistryError> {
        let host = normalize_domain(host)?;
        if !self.regions.iter().any(|r| r == region) {
            return Err(RegistryError::UnknownRegion {
                region: region.to_string(),
                known: self.regions.join(", "),
            });
        }
        let now = now_ms();
        let domain = match self.get(&host).await? {
            Some(d) if d.workspace != workspace => {
                return Err(RegistryError::Taken {
                    host,
                    workspace: d.workspace,
                });
            }
            Some(mut d) => {
                d.region = region.to_string();
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
            },
        };
        self.put(&domain).await?;
        Ok(domain)
    }

    async fn put(&self, d: &Domain) -> Result<(), RegistryError> {
        let json = serde_json::to_string(d).expect("domains serialize");
        let _: () = self.db.conn().await?.hset(&self.key, &d.host, json).await?;
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
        Ok(())
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
        d.updated_ms = now_ms();
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
    fn normalises() {
        assert_eq!(
            normalize_domain("Link.Example.COM.").unwrap(),
            "link.example.com"
        );
        assert_eq!(
            normalize_domain(" a.b.example.com ").unwrap(),
            "a.b.example.com"
        );
        assert_eq!(
            normalize_domain("bücher.example").unwrap(),
            "xn--bcher-kva.example"
        );
    }

    #[test]
    fn refuses_with_reasons() {
        let e = |s: &str| normalize_domain(s).unwrap_err().to_string();
        assert_eq!(e(""), "the host name is empty");
        assert_eq!(
            e("localhost"),
            "\"localhost\" has a single label; use a full host name such as link.example.com"
        );
        assert!(e("192.0.2.1").contains("is an IP address"));
        assert!(e("*.example.com").starts_with("wildcards are not supported"));
        assert_eq!(
            e("-a.example.com"),
            "label \"-a\" may not start or end with a hyphen"
        );
        assert_eq!(
            e("a..example.com"),
            "label \"\" is empty (two dots in a row?)"
        );
        assert_eq!(
            e("a_b.example.com"),
            "label \"a_b\" may hold only letters, digits and hyphens"
        );
        assert!(e("https://link.example.com/").contains("is not a bare host name"));
        assert!(e("link.example.com:443").contains("is not a bare host name"));
        assert!(e(&format!("{}.com", "a".repeat(64))).contains("longer than 63"));
        assert_eq!(
            e("example.123"),
            "the top-level label \"123\" is all digits"
        );
    }
}
