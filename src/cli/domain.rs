//! `linkedge domain add|verify|show|list|move|remove`: the domain registry from the command line,
//! through the same operations as the admin API.

use super::{Outcome, block_on, control};
use crate::control::Verified;
use crate::registry::Domain;
use std::path::Path;

fn show(d: &Domain) -> String {
    serde_json::to_string_pretty(d).expect("domains serialize")
}

/// Registers `host` for `workspace` in `region` (pending), fronted by the customer's own proxy
/// when `fronted`, and prints it.
pub fn add(config: &Path, host: &str, workspace: u64, region: &str, fronted: bool) -> Outcome {
    let (_, c) = control(config)?;
    let d = block_on(c.add_domain(host, workspace, region, fronted))?.map_err(|e| e.to_string())?;
    println!("{}", show(&d));
    Ok(true)
}

/// Checks `host`'s setup; verified, orders its certificate when ACME is configured (never for
/// a fronted domain, whose check goes through the customer's proxy).
pub fn verify(config: &Path, host: &str) -> Outcome {
    let (_, c) = control(config)?;
    let host = crate::host::normalize_domain(host).map_err(|e| e.to_string())?;
    let started = std::time::Instant::now();
    match block_on(c.verify(&host))?.map_err(|e| e.to_string())? {
        Verified::Verified => println!("{host} verified"),
        Verified::Issued(info) => {
            println!("{host} verified");
            println!(
                "certificate issued in {:.2} s, valid until {} (Unix seconds)",
                started.elapsed().as_secs_f64(),
                info.not_after
            );
        }
        Verified::Fronted(through) => {
            let over = through.over.as_str().to_ascii_uppercase();
            println!("{host} verified through the customer's proxy over {over}");
            if let Some(why) = &through.https_error {
                println!(
                    "warning: HTTPS did not pass ({why}): https:// links through the proxy fail until it does"
                );
            }
            println!("no certificate is ordered: the customer's proxy serves {host}'s certificate");
        }
    }
    Ok(true)
}

/// Prints one domain as JSON (a retired one with `last_click_ms`).
pub fn get(config: &Path, host: &str) -> Outcome {
    let (_, c) = control(config)?;
    let d = block_on(c.show_domain(host))?.map_err(|e| e.to_string())?;
    println!(
        "{}",
        serde_json::to_string_pretty(&d).expect("domains serialize")
    );
    Ok(true)
}

/// Registers `new` for `old`'s workspace and region (pending) and retires `old`, whose links
/// keep working; prints both as JSON (`retired`, `added`).
pub fn move_to(config: &Path, old: &str, new: &str) -> Outcome {
    let (_, c) = control(config)?;
    let moved = block_on(c.move_domain(old, new))?.map_err(|e| e.to_string())?;
    println!(
        "{}",
        serde_json::to_string_pretty(&moved).expect("domains serialize")
    );
    Ok(true)
}

/// Prints every domain, one per line: host, state, region, workspace, `fronted` or `-`, last
/// error.
pub fn list(config: &Path) -> Outcome {
    let (_, c) = control(config)?;
    for d in block_on(c.domains())?.map_err(|e| e.to_string())? {
        println!(
            "{}\t{}\t{}\t{}\t{}\t{}",
            d.host,
            d.state.as_str(),
            d.region,
            d.workspace,
            if d.fronted { "fronted" } else { "-" },
            d.error
        );
    }
    Ok(true)
}

/// Removes `host` from the registry (the only way a retired domain goes).
pub fn remove(config: &Path, host: &str) -> Outcome {
    let (_, c) = control(config)?;
    block_on(c.remove_domain(host))?.map_err(|e| e.to_string())?;
    println!("removed {host}");
    Ok(true)
}
