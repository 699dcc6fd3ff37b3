//! TLS for the HTTPS listener: one certificate from files (`tls.cert`), or per-SNI certificates
//! from the certificate store with `tls.cert` as the optional fallback.
//!
//! linkedge terminates TLS itself (the listener is plain TCP to Pingora), so a handshake is
//! bounded by `limits.handshake_timeout` and counted against the connection caps from the
//! accept on ([`crate::limits`]); Pingora 0.9's own TLS listener allows every handshake 60 s
//! and counts nothing before it ends.

use crate::certs::{Loaded, Selector};
use openssl::ssl::{AlpnError, SslAcceptor, SslMethod, select_next_proto};
use pingora::listeners::TlsAccept;
use pingora::listeners::tls::TlsSettings;
use pingora::protocols::Stream;
use std::path::Path;
use std::sync::Arc;

fn check_files(cert: &Path, key: &Path) -> anyhow::Result<(String, String)> {
    for (what, p) in [("tls.cert", cert), ("tls.key", key)] {
        if !p.is_file() {
            anyhow::bail!("{what}: no such file {}", p.display());
        }
    }
    let c = cert
        .to_str()
        .ok_or_else(|| anyhow::anyhow!("tls.cert: path is not UTF-8"))?;
    let k = key
        .to_str()
        .ok_or_else(|| anyhow::anyhow!("tls.key: path is not UTF-8"))?;
    Ok((c.to_string(), k.to_string()))
}

/// TLS settings serving `cert` (chain, leaf first) and `key`, with HTTP/2 offered by ALPN.
pub fn settings(cert: &Path, key: &Path) -> anyhow::Result<TlsSettings> {
    let (c, k) = check_files(cert, key)?;
    let mut tls = TlsSettings::intermediate(&c, &k)
        .map_err(|e| anyhow::anyhow!("tls: cannot load certificate and key: {e}"))?;
    tls.enable_h2();
    Ok(tls)
}

/// Reads `tls.cert` and `tls.key` into a certificate for the store's fallback.
pub fn load_pair(cert: &Path, key: &Path) -> anyhow::Result<Arc<Loaded>> {
    check_files(cert, key)?;
    let chain = openssl::x509::X509::stack_from_pem(&std::fs::read(cert)?)
        .map_err(|e| anyhow::anyhow!("tls.cert: not PEM certificates: {e}"))?;
    anyhow::ensure!(!chain.is_empty(), "tls.cert: holds no certificate");
    let key = openssl::pkey::PKey::private_key_from_pem(&std::fs::read(key)?)
        .map_err(|e| anyhow::anyhow!("tls.key: not a PEM private key: {e}"))?;
    Ok(Arc::new(Loaded {
        chain,
        key,
        not_after: 0,
        rsa: None,
    }))
}

/// Server-side TLS for the public listener: Mozilla's intermediate profile, the certificate
/// chosen per SNI by a [`Selector`], HTTP/2 preferred over HTTP/1.1 by ALPN.
pub struct Terminator {
    acceptor: SslAcceptor,
    callbacks: Box<dyn TlsAccept + Send + Sync>,
}

/// ALPN protocols in the server's order of preference, in wire format.
const ALPN_H2_H1: &[u8] = b"\x02h2\x08http/1.1";

impl Terminator {
    /// Handshakes choosing certificates through `selector`.
    pub fn new(selector: Selector) -> anyhow::Result<Terminator> {
        let mut b = SslAcceptor::mozilla_intermediate_v5(SslMethod::tls())
            .map_err(|e| anyhow::anyhow!("tls: {e}"))?;
        b.set_alpn_select_callback(|_, offered| {
            // Clients offering nothing we speak fall back to HTTP/1.1 without ALPN.
            select_next_proto(ALPN_H2_H1, offered).ok_or(AlpnError::NOACK)
        });
        Ok(Terminator {
            acceptor: b.build(),
            callbacks: Box::new(selector),
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
            self.callbacks.as_ref(),
        )
        .await?;
        Ok(Box::new(tls))
    }
}
