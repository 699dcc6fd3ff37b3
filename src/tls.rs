//! TLS for the HTTPS listener: one certificate from files (`tls.cert`), or per-SNI certificates
//! from the certificate store with `tls.cert` as the optional fallback.

use crate::certs::{Loaded, Selector};
use pingora::listeners::tls::TlsSettings;
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

/// TLS settings choosing the certificate per SNI through `selector`, with HTTP/2 by ALPN.
pub fn dynamic_settings(selector: Selector) -> anyhow::Result<TlsSettings> {
    let mut tls =
        TlsSettings::with_callbacks(Box::new(selector)).map_err(|e| anyhow::anyhow!("tls: {e}"))?;
    tls.enable_h2();
    Ok(tls)
}
