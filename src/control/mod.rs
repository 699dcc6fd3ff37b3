//! Managing the fleet's shared state: the domain registry, domain verification and the
//! certificate store, as one set of typed operations ([`Control`]) shared by the command line
//! ([`crate::cli`]) and the admin API ([`admin`]), so both answer alike. A [`ControlError`] says
//! whether the request was wrong, the customer's setup is wrong, or linkedge's own state failed;
//! each caller turns it into an exit status or an HTTP status in one place.

pub mod admin;
pub mod verify;

use crate::acme::{Acme, AcmeError};
use crate::config::{self, Settings};
use crate::mint::{Hosts, Standing};
use crate::registry::{Domain, Registry, RegistryError, State};
use crate::store::Db;
use crate::tls::{CertError, CertStore, Info};
use serde::Serialize;
pub use verify::{Scheme, ThroughProxy, Verified};

/// Why an operation did not happen.
#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    /// The request is malformed (a host name, a region, a certificate that does not fit).
    #[error("{0}")]
    Invalid(String),
    /// The domain or certificate does not exist.
    #[error("{0}")]
    NotFound(String),
    /// The domain belongs to another workspace.
    #[error("{0}")]
    Conflict(String),
    /// The customer's setup is wrong (verify), or the certificate was not issued now; says what
    /// to change or what happens next.
    #[error("{0}")]
    Unprocessable(String),
    /// The feature is not configured on this node (no `certs` section).
    #[error("{0}")]
    Off(String),
    /// linkedge's own state (Redis, the DNS resolver) failed: nothing was decided.
    #[error("{0}")]
    Unavailable(String),
}

impl ControlError {
    /// The HTTP status that says this error.
    pub fn status(&self) -> u16 {
        match self {
            ControlError::Invalid(_) => 400,
            ControlError::NotFound(_) | ControlError::Off(_) => 404,
            ControlError::Conflict(_) => 409,
            ControlError::Unprocessable(_) => 422,
            ControlError::Unavailable(_) => 503,
        }
    }
}

impl From<RegistryError> for ControlError {
    fn from(e: RegistryError) -> Self {
        match e {
            RegistryError::Invalid(_) | RegistryError::UnknownRegion { .. } => {
                ControlError::Invalid(e.to_string())
            }
            RegistryError::SameName(_) => ControlError::Invalid(e.to_string()),
            RegistryError::Taken { .. }
            | RegistryError::Retired { .. }
            | RegistryError::Raced { .. } => ControlError::Conflict(e.to_string()),
            RegistryError::NotFound(_) => ControlError::NotFound(e.to_string()),
            RegistryError::Redis(_) | RegistryError::Damaged(_) => {
                ControlError::Unavailable(format!("the domain registry is unavailable: {e}"))
            }
        }
    }
}

impl From<CertError> for ControlError {
    fn from(e: CertError) -> Self {
        match e {
            CertError::Redis(_) | CertError::Seal(_) => {
                ControlError::Unavailable(format!("the certificate store failed: {e}"))
            }
            CertError::Invalid(_) | CertError::WrongName(_) | CertError::KeyMismatch => {
                ControlError::Invalid(e.to_string())
            }
        }
    }
}

impl From<AcmeError> for ControlError {
    fn from(e: AcmeError) -> Self {
        match e {
            AcmeError::Redis(_)
            | AcmeError::Registry(_)
            | AcmeError::Store(CertError::Redis(_)) => ControlError::Unavailable(e.to_string()),
            other => ControlError::Unprocessable(other.to_string()),
        }
    }
}

/// One domain as `domain show` and `GET /v1/domains/<host>` show it: its record and, for a
/// retired domain, when it last saw a click (`null`: none since it was retired, as far as the
/// nodes have written: they write at most once per `registry.last_click_interval`).
#[derive(Debug, Serialize)]
pub struct Shown {
    /// The record.
    #[serde(flatten)]
    pub domain: Domain,
    /// Unix milliseconds; only for a retired domain.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_click_ms: Option<Option<u64>>,
}

/// What a move did: the retired domain and its successor.
#[derive(Debug, Serialize)]
pub struct Moved {
    /// The old domain, now retired, naming its successor.
    pub retired: Domain,
    /// The new domain, pending, in the old one's workspace and region.
    pub added: Domain,
}

/// The shared-state operations of one node, built once from its settings.
pub struct Control {
    registry: Registry,
    blocks: crate::blocks::Blocks,
    verify: config::Verify,
    acme: Option<Acme>,
    certs: Option<CertStore>,
}

impl Control {
    /// Operations on the Redis behind `db`, as `settings` configure them.
    pub fn new(settings: &Settings, db: Db) -> Control {
        let certs = settings
            .certs
            .as_ref()
            .map(|c| CertStore::new(db.clone(), c.sealer.clone()));
        let acme = match (&settings.acme, &settings.certs) {
            (Some(a), Some(c)) => Some(Acme::new(db.clone(), a.clone(), c.sealer.clone())),
            _ => None,
        };
        Control {
            blocks: crate::blocks::Blocks::new(db.clone()),
            registry: Registry::new(db, settings.region_names()),
            verify: settings.verify.clone(),
            acme,
            certs,
        }
    }

    /// Registers `host` for `workspace` in `region` (pending), fronted by the customer's own
    /// proxy when `fronted`; for a domain already registered to `workspace`, sets its region and
    /// fronted flag (a changed flag makes it pending again: see [`Registry::add`]).
    pub async fn add_domain(
        &self,
        host: &str,
        workspace: u64,
        region: &str,
        fronted: bool,
    ) -> Result<Domain, ControlError> {
        Ok(self.registry.add(host, workspace, region, fronted).await?)
    }

    /// The block rules ([`crate::blocks`]).
    pub fn blocks(&self) -> &crate::blocks::Blocks {
        &self.blocks
    }

    /// One registered domain.
    pub async fn domain(&self, host: &str) -> Result<Domain, ControlError> {
        self.registry
            .get(host)
            .await?
            .ok_or_else(|| ControlError::NotFound(format!("{host} is not registered")))
    }

    /// One registered domain, with its last click when it is retired.
    pub async fn show_domain(&self, host: &str) -> Result<Shown, ControlError> {
        let domain = self.domain(host).await?;
        let last_click_ms = match domain.state {
            State::Retired => Some(self.registry.last_click_ms(&domain.host).await?),
            _ => None,
        };
        Ok(Shown {
            domain,
            last_click_ms,
        })
    }

    /// Moves `old`'s new links to `new` ([`Registry::move_to`]): `new` is registered pending in
    /// `old`'s workspace and region (fronted if `old` is), `old` is retired and keeps serving its
    /// links. Bad input changes nothing.
    pub async fn move_domain(&self, old: &str, new: &str) -> Result<Moved, ControlError> {
        let (retired, added) = self.registry.move_to(old, new).await?;
        Ok(Moved { retired, added })
    }

    /// What the registry says of `host` for minting a link on it ([`crate::mint`]): one read.
    pub async fn standing(&self, host: &str) -> Result<Standing, ControlError> {
        let Ok(host) = crate::host::normalize_domain(host) else {
            return Ok(Standing::Unregistered);
        };
        let domain = self.registry.get(&host).await?;
        Ok(domain.standing(&host))
    }

    /// Every registered domain, sorted by host.
    pub async fn domains(&self) -> Result<Vec<Domain>, ControlError> {
        Ok(self.registry.list().await?)
    }

    /// Removes a domain from the registry.
    pub async fn remove_domain(&self, host: &str) -> Result<(), ControlError> {
        Ok(self.registry.remove(host).await?)
    }

    /// Checks `host`'s DNS and proxy setup; verified, orders its certificate at once when ACME
    /// is configured, unless the domain is fronted (checked through the customer's proxy, no
    /// certificate ordered). [`ControlError::Unprocessable`] says what the customer must change.
    pub async fn verify(&self, host: &str) -> Result<Verified, ControlError> {
        // A retired domain stays retired: there is nothing to verify for links already sent.
        if let Some(d) = self.registry.get(host).await? {
            d.accepts_new_links()?;
        }
        verify::verify_and_issue(&self.registry, &self.verify, self.acme.as_ref(), host).await
    }

    fn store(&self) -> Result<&CertStore, ControlError> {
        self.certs.as_ref().ok_or_else(|| {
            ControlError::Off(
                "the config has no certs section: per-domain certificates are off".into(),
            )
        })
    }

    /// Stores a certificate chain and key for `host`, a registered domain (checked: the key
    /// matches, the certificate covers `host`); every node serves it at its next handshake for
    /// `host`. A name the registry does not know is refused: handshakes for it are decided
    /// from memory and never read the store.
    pub async fn import_cert(
        &self,
        host: &str,
        chain: &[u8],
        key: &[u8],
    ) -> Result<Info, ControlError> {
        let store = self.store()?;
        let host = cert_host(host)?;
        if self.registry.get(&host).await?.is_none() {
            return Err(ControlError::Invalid(format!(
                "{host} is not registered: add it first (linkedge domain add); handshakes for names the registry does not know never read the certificate store"
            )));
        }
        Ok(store.put(&host, chain, key).await?)
    }

    /// The stored certificate's validity and sealing key id.
    pub async fn cert(&self, host: &str) -> Result<Info, ControlError> {
        let store = self.store()?;
        let host = cert_host(host)?;
        store
            .info(&host)
            .await?
            .ok_or_else(|| ControlError::NotFound(format!("no certificate stored for {host}")))
    }

    /// Removes `host`'s certificate; every node stops serving it at once.
    pub async fn remove_cert(&self, host: &str) -> Result<(), ControlError> {
        let store = self.store()?;
        let host = cert_host(host)?;
        if !store.remove(&host).await? {
            return Err(ControlError::NotFound(format!(
                "no certificate stored for {host}"
            )));
        }
        Ok(())
    }
}

/// A certificate's host, normalised as handshakes look it up.
fn cert_host(host: &str) -> Result<String, ControlError> {
    crate::host::normalize_host(host)
        .ok_or_else(|| ControlError::Invalid(format!("{host:?}: not a host name")))
}
