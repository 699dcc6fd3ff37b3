//! Named networks (security gateways, privacy proxies) from a file of `CIDR name` lines, looked
//! up in O(log n), and reloaded when the file changes.
//!
//! ```text
//! # comments and blank lines are ignored
//! 203.0.113.0/24  example-gateway
//! 2001:db8::/32   example-proxy
//! ```

use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

/// Disjoint address ranges, sorted, each with its network's name. IPv4 is kept as its
/// IPv4-mapped IPv6 form, so one sorted list serves both.
#[derive(Debug, Default, Clone)]
pub struct Networks {
    ranges: Vec<(u128, u128, u32)>,
    names: Vec<String>,
}

fn key(ip: IpAddr) -> u128 {
    match ip {
        IpAddr::V4(v4) => u128::from(v4.to_ipv6_mapped()),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => u128::from(v4.to_ipv6_mapped()),
            None => u128::from(v6),
        },
    }
}

impl Networks {
    /// Parses the file's text; an error names the line and what is wrong.
    pub fn parse(text: &str) -> Result<Networks, String> {
        let mut names: Vec<String> = Vec::new();
        let mut ranges = Vec::new();
        for (i, line) in text.lines().enumerate() {
            let line = line.split('#').next().unwrap_or("").trim();
            if line.is_empty() {
                continue;
            }
            let mut parts = line.split_whitespace();
            let (Some(cidr), Some(name), None) = (parts.next(), parts.next(), parts.next()) else {
                return Err(format!(
                    "line {}: expected `CIDR name`, got {line:?}",
                    i + 1
                ));
            };
            let net: ipnet::IpNet = cidr
                .parse()
                .map_err(|_| format!("line {}: {cidr:?} is not a CIDR", i + 1))?;
            let (lo, hi) = (key(net.network()), key(net.broadcast()));
            let idx = match names.iter().position(|n| n == name) {
                Some(p) => p,
                None => {
                    names.push(name.to_string());
                    names.len() - 1
                }
            } as u32;
            ranges.push((lo, hi, idx));
        }
        // Disjoint: sorted by start, a range inside or overlapping an earlier one keeps only
        // the part past it (the first network listed wins).
        ranges.sort_by_key(|r| (r.0, std::cmp::Reverse(r.1)));
        let mut merged: Vec<(u128, u128, u32)> = Vec::with_capacity(ranges.len());
        for (lo, hi, n) in ranges {
            match merged.last() {
                Some(&(_, last_hi, _)) if last_hi >= hi => {}
                Some(&(_, last_hi, _)) if last_hi >= lo => merged.push((last_hi + 1, hi, n)),
                _ => merged.push((lo, hi, n)),
            }
        }
        Ok(Networks {
            ranges: merged,
            names,
        })
    }

    /// The name of the network holding `ip`, if any.
    pub fn lookup(&self, ip: IpAddr) -> Option<&str> {
        let k = key(ip);
        let i = self.ranges.partition_point(|r| r.0 <= k);
        let (_, hi, n) = *self.ranges.get(i.checked_sub(1)?)?;
        (k <= hi).then(|| self.names[n as usize].as_str())
    }

    /// How many disjoint ranges.
    pub fn len(&self) -> usize {
        self.ranges.len()
    }

    /// True when no network is listed.
    pub fn is_empty(&self) -> bool {
        self.ranges.is_empty()
    }
}

/// Keeps `networks` equal to the file at `path`, checking it every `every`; a file that does
/// not parse keeps the previous list (logged).
pub struct Reloader {
    path: PathBuf,
    networks: Arc<RwLock<Networks>>,
    every: Duration,
}

impl Reloader {
    /// Reads `path` now (an error stops the start), then follows it.
    pub fn load(
        path: PathBuf,
        every: Duration,
    ) -> anyhow::Result<(Reloader, Arc<RwLock<Networks>>)> {
        let text = std::fs::read_to_string(&path).map_err(|e| {
            anyhow::anyhow!("bots.scanner_networks: cannot read {}: {e}", path.display())
        })?;
        let n = Networks::parse(&text)
            .map_err(|e| anyhow::anyhow!("bots.scanner_networks: {}: {e}", path.display()))?;
        tracing::info!(file = %path.display(), ranges = n.len(), "scanner networks loaded");
        let networks = Arc::new(RwLock::new(n));
        Ok((
            Reloader {
                path,
                networks: networks.clone(),
                every,
            },
            networks,
        ))
    }

    fn stamp(&self) -> Option<(SystemTime, u64)> {
        let m = std::fs::metadata(&self.path).ok()?;
        Some((m.modified().ok()?, m.len()))
    }
}

#[async_trait::async_trait]
impl pingora::services::background::BackgroundService for Reloader {
    async fn start(&self, mut shutdown: pingora::server::ShutdownWatch) {
        let mut seen = self.stamp();
        loop {
            tokio::select! {
                _ = tokio::time::sleep(self.every) => {}
                _ = shutdown.changed() => return,
            }
            let now = self.stamp();
            if now == seen {
                continue;
            }
            seen = now;
            match std::fs::read_to_string(&self.path)
                .map_err(|e| e.to_string())
                .and_then(|t| Networks::parse(&t))
            {
                Ok(n) => {
                    tracing::info!(file = %self.path.display(), ranges = n.len(), "scanner networks reloaded");
                    *self.networks.write().unwrap_or_else(|p| p.into_inner()) = n;
                }
                Err(e) => {
                    tracing::warn!(file = %self.path.display(), error = %e, "scanner networks not reloaded; keeping the previous list");
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn lookups_over_ipv4_ipv6_and_nested_ranges() {
        let n = Networks::parse(
            "# test ranges (documentation prefixes)\n\
             203.0.113.0/24 gw-a\n\
             203.0.113.128/25 gw-b   # inside gw-a: gw-a wins\n\
             198.51.100.0/24 gw-b\n\
             2001:db8:1::/48 proxy\n",
        )
        .unwrap();
        assert_eq!(n.lookup(ip("203.0.113.200")), Some("gw-a"));
        assert_eq!(n.lookup(ip("198.51.100.0")), Some("gw-b"));
        assert_eq!(n.lookup(ip("198.51.100.255")), Some("gw-b"));
        assert_eq!(n.lookup(ip("198.51.101.0")), None);
        assert_eq!(n.lookup(ip("::ffff:203.0.113.1")), Some("gw-a"));
        assert_eq!(n.lookup(ip("2001:db8:1:ffff::1")), Some("proxy"));
        assert_eq!(n.lookup(ip("2001:db8:2::1")), None);
        assert_eq!(n.lookup(ip("0.0.0.0")), None);
    }

    #[test]
    fn bad_lines_are_named() {
        assert_eq!(
            Networks::parse("203.0.113.0/24\n").unwrap_err(),
            "line 1: expected `CIDR name`, got \"203.0.113.0/24\""
        );
        assert_eq!(
            Networks::parse("\n300.0.0.0/8 x\n").unwrap_err(),
            "line 2: \"300.0.0.0/8\" is not a CIDR"
        );
    }
}
