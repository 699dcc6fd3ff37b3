//! The edge's own names: the DNS names `tls.cert` covers, such as `track.linkedge.example`,
//! the CNAME target customers are given (`verify.target`). A customer's own proxy or CDN in
//! front of the edge connects to one of them, or sends no SNI at all (nginx's `proxy_pass
//! https://…` by default), while the request keeps the customer's Host. Such handshakes get
//! `tls.cert` whatever `certs.fallback` says, and their requests are judged by Host alone
//! ([`super::Handshake::own_name`]).

use super::store::Loaded;
use openssl::x509::X509;
use std::sync::Arc;

/// How `tls.cert` covers a name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cover {
    /// One of its DNS names exactly.
    Exact,
    /// Only through a `*.` name (which matches one label).
    Wildcard,
}

/// The edge's own certificate (`tls.cert`) and the DNS names it covers, read from its subject
/// alternative names once at load (the subject's CN is ignored, as browsers ignore it).
#[derive(Clone)]
pub struct Own {
    cert: Arc<Loaded>,
    /// Exact names, lowercase, without a trailing dot.
    exact: Vec<String>,
    /// The parents of the `*.` names: `*.linkedge.example` is kept as `linkedge.example`.
    wildcard: Vec<String>,
}

impl Own {
    /// `cert` (leaf first) and the DNS names of its leaf.
    pub fn new(cert: Arc<Loaded>) -> Own {
        let names = cert.chain.first().map_or_else(Vec::new, dns_names);
        let (mut exact, mut wildcard) = (Vec::new(), Vec::new());
        for name in names {
            if let Some(parent) = name.strip_prefix("*.") {
                // Only a whole left-most label is a wildcard the edge honours (as browsers do).
                if !parent.is_empty() && !parent.contains('*') {
                    wildcard.push(parent.to_string());
                }
            } else if !name.is_empty() && !name.contains('*') {
                exact.push(name);
            }
        }
        Own {
            cert,
            exact,
            wildcard,
        }
    }

    /// The certificate.
    pub fn cert(&self) -> Arc<Loaded> {
        self.cert.clone()
    }

    /// The DNS names it covers, as written in the certificate (for logs).
    pub fn names(&self) -> impl Iterator<Item = String> + '_ {
        let wildcards = self.wildcard.iter().map(|p| format!("*.{p}"));
        self.exact.iter().cloned().chain(wildcards)
    }

    /// How it covers `name` (a normalised SNI name), if it does. Case does not matter.
    pub fn covers(&self, name: &str) -> Option<Cover> {
        if self.exact.iter().any(|e| e.eq_ignore_ascii_case(name)) {
            return Some(Cover::Exact);
        }
        let (label, parent) = name.split_once('.')?;
        let under =
            !label.is_empty() && self.wildcard.iter().any(|w| w.eq_ignore_ascii_case(parent));
        under.then_some(Cover::Wildcard)
    }
}

/// The DNS names among `cert`'s subject alternative names, lowercase, without a trailing dot.
fn dns_names(cert: &X509) -> Vec<String> {
    let Some(sans) = cert.subject_alt_names() else {
        return Vec::new();
    };
    sans.iter()
        .filter_map(|n| n.dnsname())
        .map(|n| n.trim_end_matches('.').to_ascii_lowercase())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The development certificate: `*.linkedge.test`, `linkedge.test`, `localhost` and two IP
    /// addresses.
    fn dev() -> Own {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("certs-dev");
        Own::new(crate::tls::load_pair(&root.join("leaf.pem"), &root.join("leaf.key")).unwrap())
    }

    #[test]
    fn names_are_read_from_the_certificate() {
        let mut names: Vec<String> = dev().names().collect();
        names.sort();
        assert_eq!(names, ["*.linkedge.test", "linkedge.test", "localhost"]);
    }

    #[test]
    fn exact_names_and_one_label_under_a_wildcard() {
        let own = dev();
        assert_eq!(own.covers("linkedge.test"), Some(Cover::Exact));
        assert_eq!(own.covers("LinkEdge.Test"), Some(Cover::Exact));
        assert_eq!(own.covers("localhost"), Some(Cover::Exact));
        assert_eq!(own.covers("track.linkedge.test"), Some(Cover::Wildcard));
        assert_eq!(own.covers("Track.LINKEDGE.test"), Some(Cover::Wildcard));
        // A wildcard matches one label only, and never the bare parent through itself.
        assert_eq!(own.covers("a.b.linkedge.test"), None);
        assert_eq!(own.covers(".linkedge.test"), None);
        assert_eq!(own.covers("linkedge.test.evil.example"), None);
        assert_eq!(own.covers("xlinkedge.test"), None);
        // IP addresses in the SANs are not names: SNI never carries one.
        assert_eq!(own.covers("127.0.0.1"), None);
        assert_eq!(own.covers("link.example.com"), None);
    }
}
