//! TLS for the HTTPS listener. For now one certificate from files (the development certificate
//! in `certs-dev/`); per-SNI certificates come with the certificate store.

use pingora::listeners::tls::TlsSettings;
use std::path::Path;

/// TLS settings serving `cert` (chain, leaf first) and `key`, with HTTP/2 offered by ALPN.
pub fn settings(cert: &Path, key: &Path) -> anyhow::Result<TlsSettings> {
    for (what, p) in [("tls.cert", cert), ("tls.key", key)] {
        if !p.is_file() {
            anyhow::bail!("{what}: no such file {}", p.display());
        }
    }
    let cert = cert
        .to_str()
        .ok_or_else(|| anyhow::anyhow!("tls.cert: path is not UTF-8"))?;
    let key = key
        .to_str()
        .ok_or_else(|| anyhow::anyhow!("tls.key: path is not UTF-8"))?;
    let mut tls = TlsSettings::intermediate(cert, key)
        .map_err(|e| anyhow::anyhow!("tls: cannot load certificate and key: {e}"))?;
    tls.enable_h2();
    Ok(tls)
}
