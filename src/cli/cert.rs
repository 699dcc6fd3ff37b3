//! `linkedge cert import|show|remove`: the certificate store from the command line.

use super::{Outcome, block_on, control};
use std::path::Path;

/// Stores `chain` and `key` (PEM files) as `host`'s certificate and prints its facts.
pub fn import(config: &Path, host: &str, chain: &Path, key: &Path) -> Outcome {
    let (_, c) = control(config)?;
    let chain = std::fs::read(chain).map_err(|e| format!("{}: {e}", chain.display()))?;
    let key = std::fs::read(key).map_err(|e| format!("{}: {e}", key.display()))?;
    let info = block_on(c.import_cert(host, &chain, &key))?.map_err(|e| e.to_string())?;
    println!(
        "{}",
        serde_json::to_string_pretty(&info).expect("serializes")
    );
    Ok(true)
}

/// Prints the stored certificate's validity and sealing key id as JSON.
pub fn show(config: &Path, host: &str) -> Outcome {
    let (_, c) = control(config)?;
    let info = block_on(c.cert(host))?.map_err(|e| e.to_string())?;
    println!(
        "{}",
        serde_json::to_string_pretty(&info).expect("serializes")
    );
    Ok(true)
}

/// Removes `host`'s certificate.
pub fn remove(config: &Path, host: &str) -> Outcome {
    let (_, c) = control(config)?;
    block_on(c.remove_cert(host))?.map_err(|e| e.to_string())?;
    let host = crate::host::normalize_host(host).unwrap_or_else(|| host.to_string());
    println!("removed the certificate of {host}");
    Ok(true)
}

/// Rotates the fleet's session-ticket keys now (`force`: even a set no node can open) and
/// prints the new version.
pub fn rotate_tickets(config: &Path, force: bool) -> Outcome {
    let s = super::load(config)?;
    let certs = s
        .certs
        .as_ref()
        .ok_or("no certs section: session ticket keys are each node's own, not shared")?;
    let db = s.db("cli").map_err(|e| format!("{e:#}"))?;
    let version = block_on(crate::tls::tickets::rotate_now(&db, &certs.sealer, force))?
        .map_err(|e| format!("{e:#}"))?;
    println!(
        "session ticket keys rotated: version {version}; every node seals with it within seconds"
    );
    Ok(true)
}
