//! Every Redis key and channel linkedge uses, built from the configured prefix, in one place.
//!
//! In a Redis Cluster each key lives in the slot of its own name. No command or script linkedge
//! sends touches more than one key (the per-domain lock and its release script, each rate-limit
//! window, the events stream and its de-duplication read are all single-key), so no key needs a
//! hash tag and no command can fail with CROSSSLOT. A new multi-key command must put its keys
//! under one hash tag (`{...}`) here.

/// The key schema under one prefix (such as `linkedge:`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Keys {
    prefix: String,
}

impl Keys {
    /// Keys under `prefix`.
    pub fn new(prefix: &str) -> Keys {
        Keys {
            prefix: prefix.to_string(),
        }
    }

    /// Hash of every registered domain: field host, value the domain's JSON record.
    pub fn domains(&self) -> String {
        format!("{}domains", self.prefix)
    }

    /// Pub/sub channel on which the host of a changed registry entry is announced (the change
    /// feed of every node's registry mirror).
    pub fn domains_channel(&self) -> String {
        format!("{}domains:changed", self.prefix)
    }

    /// Hash of the last click seen on each retired domain: field host, value Unix milliseconds
    /// (written by every node at most once per `registry.last_click_interval`, never lowered).
    pub fn domains_last_click(&self) -> String {
        format!("{}domains:last_click", self.prefix)
    }

    /// Hash of every block rule: field the rule's id, value its JSON. Under the `{blocks}` hash
    /// tag with its audit stream: a change writes both in one transaction.
    pub fn blocks(&self) -> String {
        format!("{}{{blocks}}", self.prefix)
    }

    /// Pub/sub channel on which a changed block rule's id is announced (the change feed of
    /// every node's block list).
    pub fn blocks_channel(&self) -> String {
        format!("{}blocks:changed", self.prefix)
    }

    /// Counter raised by every change to the block list: a node's periodic re-sync reads it
    /// and loads every rule again only when it moved.
    pub fn blocks_version(&self) -> String {
        format!("{}{{blocks}}:version", self.prefix)
    }

    /// Stream of every change to the block list: who, what, when (never trimmed: an audit
    /// log).
    pub fn blocks_audit(&self) -> String {
        format!("{}{{blocks}}:audit", self.prefix)
    }

    /// The TLS session-ticket keys every node seals tickets with (sealed with the master
    /// keys; see `tls::tickets`).
    pub fn ticket_keys(&self) -> String {
        format!("{}tls:ticket_keys", self.prefix)
    }

    /// Pub/sub channel announcing a new set of session-ticket keys.
    pub fn ticket_keys_channel(&self) -> String {
        format!("{}tls:ticket_keys:changed", self.prefix)
    }

    /// Hash of `host`'s stored certificate (chain, sealed key, validity).
    pub fn cert(&self, host: &str) -> String {
        format!("{}cert:{host}", self.prefix)
    }

    /// Pub/sub channel on which a changed certificate's host is announced.
    pub fn cert_channel(&self) -> String {
        format!("{}certs", self.prefix)
    }

    /// The ACME account credentials for a directory URL.
    pub fn acme_account(&self, directory: &str) -> String {
        format!("{}acme:account:{directory}", self.prefix)
    }

    /// The key authorization answering HTTP-01 `token`.
    pub fn acme_http01(&self, token: &str) -> String {
        format!("{}acme:http01:{token}", self.prefix)
    }

    /// The per-domain order lock (value: the holding node, with expiry).
    pub fn acme_lock(&self, host: &str) -> String {
        format!("{}acme:lock:{host}", self.prefix)
    }

    /// The CA's cached renewal window (ARI) for `host`.
    pub fn acme_ari(&self, host: &str) -> String {
        format!("{}acme:ari:{host}", self.prefix)
    }

    /// Hash of per-domain failure backoff records.
    pub fn acme_backoff(&self) -> String {
        format!("{}acme:backoff", self.prefix)
    }

    /// Sliding window of new orders per account (directory URL).
    pub fn acme_limit_orders(&self, directory: &str) -> String {
        format!("{}acme:limit:orders:{directory}", self.prefix)
    }

    /// Sliding window of failed validations of `host`.
    pub fn acme_limit_failed(&self, host: &str) -> String {
        format!("{}acme:limit:failed:{host}", self.prefix)
    }

    /// Sliding window of certificates for a registered domain.
    pub fn acme_limit_certs(&self, registered_domain: &str) -> String {
        format!("{}acme:limit:certs:{registered_domain}", self.prefix)
    }

    /// A `domain verify` nonce (value: the host being verified).
    pub fn verify_nonce(&self, nonce: &str) -> String {
        format!("{}verify:{nonce}", self.prefix)
    }
}

/// A key under `prefix` in the same Redis Cluster hash slot as `stream`, for the write that
/// gives a `WAIT` something to wait for: `<prefix>{stream}:replicated` when the stream's name
/// has no braces (its hash tag is then the whole name, the slot the stream's own), or
/// `<prefix><stream>:replicated` under the stream's hash tag when it has one (a prefix with a
/// brace in it would change the tag, so none is used then). `None` for a name with braces but
/// no hash tag, or a prefix with braces (`events.stream` is refused with
/// `events.min_replicas` then).
pub fn replication_marker(prefix: &str, stream: &str) -> Option<String> {
    if prefix.contains(['{', '}']) {
        return None;
    }
    match stream.find('{') {
        Some(open) => {
            let close = stream[open + 1..].find('}')?;
            (close > 0).then(|| format!("{prefix}{stream}:replicated"))
        }
        None if !stream.contains('}') => Some(format!("{prefix}{{{stream}}}:replicated")),
        None => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_replication_marker_shares_the_streams_hash_slot() {
        // Under the prefix (ACLs scoped to it allow it), in the stream's slot.
        assert_eq!(
            replication_marker("linkedge:", "linkedge:events").as_deref(),
            Some("linkedge:{linkedge:events}:replicated")
        );
        assert_eq!(
            replication_marker("le:", "{eu}:events").as_deref(),
            Some("le:{eu}:events:replicated")
        );
        for no_tag in ["a{}b", "a}b", "a{b"] {
            assert_eq!(replication_marker("le:", no_tag), None, "{no_tag}");
        }
        assert_eq!(replication_marker("le{x}:", "events"), None);
    }

    #[test]
    fn every_key_starts_with_the_prefix_and_names_its_subject() {
        let k = Keys::new("le:");
        assert_eq!(k.domains(), "le:domains");
        assert_eq!(k.domains_channel(), "le:domains:changed");
        assert_eq!(k.domains_last_click(), "le:domains:last_click");
        assert_eq!(k.cert("a.example"), "le:cert:a.example");
        assert_eq!(k.cert_channel(), "le:certs");
        assert_eq!(k.acme_http01("t0k"), "le:acme:http01:t0k");
        assert_eq!(k.acme_lock("a.example"), "le:acme:lock:a.example");
        assert_eq!(k.verify_nonce("n"), "le:verify:n");
        assert_eq!(
            k.acme_limit_certs("example.co.uk"),
            "le:acme:limit:certs:example.co.uk"
        );
        // No key carries a hash tag: each command touches one key (see the module doc).
        for key in [k.domains(), k.cert("a"), k.acme_lock("a"), k.acme_backoff()] {
            assert!(!key.contains('{'), "{key}");
        }
    }
}
