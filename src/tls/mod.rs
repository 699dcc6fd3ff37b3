//! TLS for the HTTPS listener, and the per-domain certificates behind it.
//!
//! - [`Terminator`]: the handshake itself, on the plain TCP connections that [`crate::limits`]
//!   accepted (so a handshake is bounded by `limits.handshake_timeout` and counted against the
//!   connection caps from the accept on; Pingora 0.9's own TLS listener allows every handshake
//!   60 s and counts nothing before it ends).
//! - [`Certificates`]: where each handshake's certificate comes from: one pair of files
//!   (`tls.cert`), or per SNI from the store, with `tls.cert` for the edge's own names ([`own`])
//!   and the domains fronted by the customer's own proxy, and as the optional fallback.
//! - [`store`] (Redis, sealed keys by [`seal`]), [`cache`] (memory), [`selector`] (the choice per
//!   SNI, with on-demand issuance behind a trait), [`invalidate`] (every node drops a changed
//!   certificate), [`sni`] (the name, carried into the HTTP phase).

pub mod cache;
pub mod invalidate;
pub mod own;
pub mod seal;
pub mod selector;
pub mod sni;
pub mod store;
pub mod tickets;

pub use cache::Cache;
pub use invalidate::Invalidator;
pub use own::{Cover, Own};
pub use seal::Sealer;
pub use selector::{OnDemand, Selector};
pub use sni::{Handshake, Sni};
pub use store::{CertError, CertStore, Info, Loaded};
pub use tickets::{TicketFollower, TicketKeys};

use crate::host::normalize_host;
use crate::metrics;
use async_trait::async_trait;
use openssl::ssl::{
    AlpnError, NameType, SniError, SslAcceptor, SslAlert, SslMethod, select_next_proto,
};
use pingora::listeners::TlsAccept;
use pingora::protocols::Stream;
use pingora::protocols::tls::TlsRef;
use std::any::Any;
use std::path::Path;
use std::sync::Arc;

/// Reads a certificate chain (leaf first) and its key from files: `tls.cert` and `tls.key`.
pub fn load_pair(cert: &Path, key: &Path) -> anyhow::Result<Arc<Loaded>> {
    let read = |what: &str, p: &Path| {
        std::fs::read(p).map_err(|e| anyhow::anyhow!("{what}: cannot read {}: {e}", p.display()))
    };
    let chain = openssl::x509::X509::stack_from_pem(&read("tls.cert", cert)?)
        .map_err(|e| anyhow::anyhow!("tls.cert: not PEM certificates: {e}"))?;
    anyhow::ensure!(!chain.is_empty(), "tls.cert: holds no certificate");
    let key = openssl::pkey::PKey::private_key_from_pem(&read("tls.key", key)?)
        .map_err(|e| anyhow::anyhow!("tls.key: not a PEM private key: {e}"))?;
    let public = chain[0]
        .public_key()
        .map_err(|e| anyhow::anyhow!("tls.cert: unreadable public key: {e}"))?;
    anyhow::ensure!(
        public.public_eq(&key),
        "tls.key: does not match the first certificate of tls.cert"
    );
    Ok(Arc::new(Loaded {
        chain,
        key,
        not_after: 0,
        rsa: None,
    }))
}

/// Where the HTTPS listener's certificates come from.
pub enum Certificates {
    /// One certificate for every name: `tls.cert` and `tls.key`, without a `certs` section.
    Static(Own),
    /// Per SNI from the certificate store, through the cache (`certs`).
    Store(Selector),
}

impl Certificates {
    /// Whether a ClientHello asking for `asked` (see [`asked`]) is to be refused at once,
    /// decided from memory: a name that would get no certificate. Asked on resumed handshakes
    /// too, which skip the certificate callback.
    fn refuses(&self, asked: &Result<Option<String>, ()>) -> bool {
        match (self, asked) {
            (Certificates::Static(_), _) => false,
            (Certificates::Store(selector), Ok(sni)) => selector.refuses(sni.as_deref()),
            // Not a host name: no one's, so only the fallback would take it.
            (Certificates::Store(selector), Err(())) => !selector.falls_back(),
        }
    }

    /// Whether a handshake for `sni` (normalised; `None`: the client sent none) reached the
    /// edge by one of its own names: see [`Handshake::own_name`]. Decided from memory.
    pub fn own_name(&self, sni: Option<&str>) -> bool {
        match self {
            // No registry: every name `tls.cert` covers is the edge's.
            Certificates::Static(own) => sni.is_none_or(|name| own.covers(name).is_some()),
            Certificates::Store(selector) => selector.own_name(sni),
        }
    }
}

/// The SNI name the ClientHello asked for, normalised: `Ok(None)` when it sent none, `Err(())`
/// when what it sent is not a host name (no one's name, so not one of the edge's own either).
fn asked(ssl: &TlsRef) -> Result<Option<String>, ()> {
    // The raw bytes: a name that is not UTF-8 is a bad name, not an absent one.
    ssl.servername_raw(NameType::HOST_NAME)
        .map(|raw| {
            std::str::from_utf8(raw)
                .ok()
                .and_then(normalize_host)
                .ok_or(())
        })
        .transpose()
}

/// Sets the certificate (and the RSA one, if any) on the connection. OpenSSL keeps one
/// certificate per key type and picks the one the ClientHello's signature algorithms allow; a
/// chain certificate attaches to the certificate set just before it.
fn use_cert(ssl: &mut TlsRef, c: &Loaded) -> Result<(), openssl::error::ErrorStack> {
    use pingora::tls::ext;
    ext::ssl_use_certificate(ssl, &c.chain[0])?;
    ext::ssl_use_private_key(ssl, &c.key)?;
    for extra in &c.chain[1..] {
        ext::ssl_add_chain_cert(ssl, extra)?;
    }
    if let Some(rsa) = &c.rsa {
        use_cert(ssl, rsa)?;
    }
    Ok(())
}

#[async_trait]
impl TlsAccept for Certificates {
    /// Sets the certificate for the ClientHello's SNI; sets none (the handshake fails) when the
    /// name has none, is not one of the edge's own, and no fallback is configured.
    async fn certificate_callback(&self, ssl: &mut TlsRef) {
        let chosen = match (self, asked(ssl)) {
            (Certificates::Static(own), _) => Some(own.cert()),
            (Certificates::Store(selector), Ok(sni)) => selector.choose(sni.as_deref()).await,
            (Certificates::Store(selector), Err(())) => selector.fallback(),
        };
        if let Some(c) = chosen
            && let Err(e) = use_cert(ssl, &c)
        {
            tracing::error!(error = %e, "cannot use certificate");
        }
    }

    /// Carries the SNI name, whether it is one of the edge's own names, and whether the session
    /// was resumed into the HTTP phase (see [`Handshake`]). Whether the name is the edge's own
    /// is decided here again, from memory, rather than remembered from the certificate callback:
    /// a resumed session skips that callback.
    async fn handshake_complete_callback(
        &self,
        ssl: &TlsRef,
    ) -> Option<Arc<dyn Any + Send + Sync>> {
        let resumed = ssl.session_reused();
        metrics::tls_handshake(resumed);
        let asked = asked(ssl);
        let own_name = asked
            .as_ref()
            .is_ok_and(|sni| self.own_name(sni.as_deref()));
        Some(Arc::new(Handshake {
            sni: asked.ok().flatten().map(Sni),
            own_name,
            resumed,
            connection: std::sync::OnceLock::new(),
        }))
    }
}

/// Server-side TLS for the public listener: Mozilla's intermediate profile, the certificate
/// chosen by [`Certificates`], HTTP/2 preferred over HTTP/1.1 by ALPN.
pub struct Terminator {
    acceptor: SslAcceptor,
    certificates: Arc<Certificates>,
}

/// ALPN protocols in the server's order of preference, in wire format.
const ALPN_H2_H1: &[u8] = b"\x02h2\x08http/1.1";

impl Terminator {
    /// Handshakes presenting `certificates`, resuming sessions from tickets sealed with
    /// `tickets` (see [`tickets`]), which live at most `ticket_rotation`.
    pub fn new(
        certificates: Certificates,
        tickets: Arc<TicketKeys>,
        ticket_rotation: std::time::Duration,
    ) -> anyhow::Result<Terminator> {
        let mut b = SslAcceptor::mozilla_intermediate_v5(SslMethod::tls())
            .map_err(|e| anyhow::anyhow!("tls: {e}"))?;
        tickets::attach(&mut b, tickets, ticket_rotation)?;
        b.set_alpn_select_callback(|_, offered| {
            // Clients offering nothing we speak fall back to HTTP/1.1 without ALPN.
            select_next_proto(ALPN_H2_H1, offered).ok_or(AlpnError::NOACK)
        });
        let certificates = Arc::new(certificates);
        let decide = certificates.clone();
        // Every ClientHello, resumed or not: a name that would get no certificate is refused
        // here, so resuming a session made under another name does not get around it (a
        // resumed handshake skips the certificate callback), and a flood of unknown names
        // costs no more than this.
        b.set_servername_callback(move |ssl, alert| {
            if decide.refuses(&asked(ssl)) {
                *alert = SslAlert::UNRECOGNIZED_NAME;
                return Err(SniError::ALERT_FATAL);
            }
            Ok(())
        });
        Ok(Terminator {
            acceptor: b.build(),
            certificates,
        })
    }

    /// The TLS handshake on an accepted TCP connection (the caller bounds its time).
    pub async fn accept(&self, tcp: Stream) -> pingora::Result<Stream> {
        // The listener hands over its own TCP stream type, as Pingora's TLS listener uses it.
        let l4 = tcp
            .into_any()
            .downcast::<pingora::protocols::l4::stream::Stream>()
            .map_err(|_| {
                pingora::Error::explain(
                    pingora::ErrorType::InternalError,
                    "the HTTPS listener did not hand over a TCP stream",
                )
            })?;
        let tls = pingora::protocols::tls::server::handshake_with_callback(
            &self.acceptor,
            *l4,
            &*self.certificates,
        )
        .await?;
        Ok(Box::new(tls))
    }
}
