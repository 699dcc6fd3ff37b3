//! The `linkedge` subcommands other than `serve`'s wiring: `check`, `reload`, and the `link`,
//! `domain` and `cert` commands. Each returns `Ok(true)` (exit 0), `Ok(false)` (exit 1: the answer is "no",
//! such as a link that does not verify) or `Err` with the message for stderr (exit 2). The
//! `domain` and `cert` commands go through [`crate::control`], as the admin API does.

pub mod block;
pub mod cert;
pub mod domain;
pub mod link;
pub mod reload;

use crate::config::{self, Settings};
use crate::control::Control;
use std::path::Path;

/// What a command returns; see the module documentation.
pub type Outcome = Result<bool, String>;

/// Loads and validates the config at `path`, reading its secrets.
pub fn load(path: &Path) -> Result<Settings, String> {
    Settings::load(path).map_err(|e| format!("{}: {e}", path.display()))
}

/// Runs `f` on a single-threaded runtime, for a command's few Redis round trips.
fn block_on<T>(f: impl std::future::Future<Output = T>) -> Result<T, String> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start a runtime: {e}"))?;
    Ok(rt.block_on(f))
}

/// The shared-state operations on the Redis of the config at `path`.
fn control(path: &Path) -> Result<(Settings, Control), String> {
    let s = load(path)?;
    let db = s.db("cli").map_err(|e| format!("{e:#}"))?;
    let c = Control::new(&s, db);
    Ok((s, c))
}

/// `linkedge check`: with `offline`, the fields only (no secret or other file read); else
/// everything `serve` loads before it starts (secrets, certificate files, backend names), and
/// with `online` a round trip to Redis naming the node that answered.
pub fn check(path: &Path, offline: bool, online: bool) -> Outcome {
    let shown = path.display();
    if offline {
        let f = config::checked_file(path).map_err(|e| format!("{shown}: {e}"))?;
        println!(
            "{shown}: fields ok ({} link key(s), minting with key {}); secrets and files not read",
            f.links.keys.len(),
            f.links.mint_key
        );
        return Ok(true);
    }
    let s = load(path)?;
    crate::server::check(&s).map_err(|e| format!("{shown}: {e:#}"))?;
    if online {
        let db = s.db("cli").map_err(|e| format!("{shown}: {e:#}"))?;
        let mut sinks = vec![("events".to_string(), db.clone(), s.events.min_replicas)];
        for sink in &s.event_sinks {
            let db = crate::store::Db::new(&sink.redis, "cli").map_err(|e| format!("{e:#}"))?;
            sinks.push((
                format!("events.regions.{}", sink.region),
                db,
                sink.min_replicas,
            ));
        }
        // One runtime for every round trip: a connection outlives no runtime.
        block_on(async {
            let node = db
                .describe()
                .await
                .map_err(|e| format!("{shown}: redis: cannot reach {}: {e}", db.target()))?;
            println!("{shown}: {node}");
            for (at, db, want) in sinks.into_iter().filter(|(_, _, want)| *want > 0) {
                let have = db
                    .replicas()
                    .await
                    .map_err(|e| format!("{shown}: redis: cannot reach {}: {e}", db.target()))?;
                if have < i64::from(want) {
                    return Err(format!(
                        "{shown}: {at}: min_replicas is {want} but {} has {have} replica(s) \
                         connected: every batch would wait events.replica_timeout and stay in \
                         the spool until replicas confirm it",
                        db.target()
                    ));
                }
                println!("{shown}: {at}: {have} replica(s) connected, batches wait for {want}");
            }
            Ok::<(), String>(())
        })??;
    }
    println!(
        "{shown}: ok ({} link key(s), minting with key {})",
        s.keyring.len(),
        s.keyring.mint_id()
    );
    Ok(true)
}
