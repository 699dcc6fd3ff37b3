//! `linkedge block add|list|show|remove`: the block list from the command line, through the same
//! operations as the admin API (`/v1/blocks`).

use super::{Outcome, block_on, control};
use crate::blocks::{Action, NewRule, Rule, Target};
use std::path::Path;
use std::time::Duration;

fn show(r: &Rule) -> String {
    serde_json::to_string_pretty(r).expect("rules serialize")
}

/// Adds a rule matching `target` with `action`, `reason` and `by`, expiring after `lasts`, and
/// prints it; every node applies it within a second.
pub fn add(
    config: &Path,
    target: Target,
    action: Action,
    (reason, by): (&str, &str),
    lasts: Option<Duration>,
) -> Outcome {
    let (_, c) = control(config)?;
    let new = NewRule {
        target,
        action,
        reason: reason.to_string(),
        added_by: by.to_string(),
        expires_ms: lasts.map(|d| {
            crate::time::unix_ms().saturating_add(u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        }),
    };
    let rule = block_on(c.blocks().add(new))?.map_err(|e| e.to_string())?;
    println!("{}", show(&rule));
    Ok(true)
}

/// Prints every rule as a JSON array.
pub fn list(config: &Path) -> Outcome {
    let (_, c) = control(config)?;
    let all = block_on(c.blocks().list())?.map_err(|e| e.to_string())?;
    println!(
        "{}",
        serde_json::to_string_pretty(&all).expect("rules serialize")
    );
    Ok(true)
}

/// Prints rule `id`.
pub fn get(config: &Path, id: &str) -> Outcome {
    let (_, c) = control(config)?;
    let r = block_on(c.blocks().get(id))?.map_err(|e| e.to_string())?;
    println!("{}", show(&r));
    Ok(true)
}

/// Removes rule `id` (`by` goes to the audit stream) and prints what it was.
pub fn remove(config: &Path, id: &str, by: &str) -> Outcome {
    let (_, c) = control(config)?;
    let r = block_on(c.blocks().remove(id, by))?.map_err(|e| e.to_string())?;
    println!("removed {}", r.id);
    Ok(true)
}
