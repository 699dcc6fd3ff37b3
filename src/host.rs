//! Host names, as the rest of linkedge needs them, in pure functions:
//! - [`normalize_host`]: a `Host` header, SNI or `--host` value as the edge compares it
//!   (lowercase, no port, no trailing dot), lenient enough for IP literals;
//! - [`normalize_domain`]: a customer's tracking domain as the registry stores it (IDNA to
//!   punycode, every label checked), with a reason a customer can act on when it is refused;
//! - [`split_host_port`]: `host:port` and `[v6]:port` as the config names servers.

/// Normalises a Host header, SNI name or `--host` value: lowercase, port and one trailing dot
/// removed. Returns `None` when it is not a plausible host name (letters, digits, `-`, `_` and
/// dots between non-empty labels) or bracketed IPv6 literal. Stable: normalising the result
/// again returns it unchanged.
pub fn normalize_host(raw: &str) -> Option<String> {
    let raw = raw.trim();
    let digits = |p: &str| p.bytes().all(|b| b.is_ascii_digit());
    let host = if raw.starts_with('[') {
        // IPv6 literal, possibly with a port.
        let end = raw.find(']')?;
        let (literal, rest) = raw.split_at(end + 1);
        let inside = &literal[1..literal.len() - 1];
        let port_ok = rest.is_empty() || rest.strip_prefix(':').is_some_and(digits);
        let literal_ok = inside.contains(':')
            && inside
                .bytes()
                .all(|b| b.is_ascii_hexdigit() || b == b':' || b == b'.');
        if !port_ok || !literal_ok {
            return None;
        }
        literal
    } else {
        let name = match raw.rsplit_once(':') {
            Some((h, port)) if digits(port) => h,
            Some(_) => return None,
            None => raw,
        };
        let name = name.strip_suffix('.').unwrap_or(name);
        let labels_ok = !name.is_empty()
            && !name.starts_with('.')
            && !name.ends_with('.')
            && !name.contains("..");
        let chars_ok = name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_'));
        if !labels_ok || !chars_ok {
            return None;
        }
        name
    };
    (host.len() <= 253).then(|| host.to_ascii_lowercase())
}

/// Whether `host` is already what [`normalize_host`] makes of it, without allocating for the
/// common case of a lowercase name.
pub fn is_normalized(host: &str) -> bool {
    let b = host.as_bytes();
    let plain = !b.is_empty()
        && b.len() <= 253
        && b[0] != b'.'
        && b[b.len() - 1] != b'.'
        && !host.contains("..")
        && b.iter().all(|&c| {
            c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, b'-' | b'.' | b'_')
        });
    plain || normalize_host(host).as_deref() == Some(host)
}

/// Why a host name is refused, in words a customer can act on.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DomainError {
    /// Nothing given.
    #[error("the host name is empty")]
    Empty,
    /// Over 253 characters once in ASCII form.
    #[error("the host name is longer than 253 characters")]
    TooLong,
    /// An IP address instead of a name.
    #[error("{0} is an IP address; use a host name such as link.example.com")]
    IpAddress(String),
    /// `*.example.com`.
    #[error("wildcards are not supported; register each tracking host, such as link.example.com")]
    Wildcard,
    /// `localhost`, `com`.
    #[error("{0:?} has a single label; use a full host name such as link.example.com")]
    SingleLabel(String),
    /// A label breaks the rules.
    #[error("label {label:?} {why}")]
    BadLabel {
        /// The offending label.
        label: String,
        /// What is wrong with it.
        why: &'static str,
    },
    /// Not convertible to ASCII (IDNA).
    #[error("not a valid internationalised host name: {0}")]
    Idna(String),
    /// The top-level label is all digits.
    #[error("the top-level label {0:?} is all digits")]
    NumericTld(String),
    /// Something that is not a bare host name (a URL, a path, a port).
    #[error("{0:?} is not a bare host name; give only the name, such as link.example.com")]
    NotBare(String),
}

/// Validates and normalises a tracking host: lowercase, IDNA to punycode, no trailing dot, any
/// depth of subdomain (`a.b.example.com`).
pub fn normalize_domain(input: &str) -> Result<String, DomainError> {
    let s = input.trim();
    if s.is_empty() {
        return Err(DomainError::Empty);
    }
    if s.contains("://") || s.contains(['/', '?', '#', '@', ' ']) {
        return Err(DomainError::NotBare(s.to_string()));
    }
    if s.parse::<std::net::IpAddr>().is_ok() || s.starts_with('[') {
        return Err(DomainError::IpAddress(s.to_string()));
    }
    if s.contains(':') {
        return Err(DomainError::NotBare(s.to_string()));
    }
    if s.starts_with("*.") || s.contains('*') {
        return Err(DomainError::Wildcard);
    }
    let s = s.strip_suffix('.').unwrap_or(s);
    let ascii = idna::domain_to_ascii(s).map_err(|e| DomainError::Idna(e.to_string()))?;
    if ascii.is_empty() {
        return Err(DomainError::Empty);
    }
    if ascii.len() > 253 {
        return Err(DomainError::TooLong);
    }
    let labels: Vec<&str> = ascii.split('.').collect();
    if labels.len() < 2 {
        return Err(DomainError::SingleLabel(ascii.clone()));
    }
    for l in &labels {
        let why = if l.is_empty() {
            Some("is empty (two dots in a row?)")
        } else if l.len() > 63 {
            Some("is longer than 63 characters")
        } else if !l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-') {
            Some("may hold only letters, digits and hyphens")
        } else if l.starts_with('-') || l.ends_with('-') {
            Some("may not start or end with a hyphen")
        } else {
            None
        };
        if let Some(why) = why {
            return Err(DomainError::BadLabel {
                label: l.to_string(),
                why,
            });
        }
    }
    let tld = labels[labels.len() - 1];
    if tld.bytes().all(|b| b.is_ascii_digit()) {
        return Err(DomainError::NumericTld(tld.to_string()));
    }
    Ok(ascii)
}

/// `(host, port)` of `host:port` or `[v6]:port`; `None` without a host, or with a port that is
/// not a number from 1 to 65535.
pub fn split_host_port(addr: &str) -> Option<(&str, u16)> {
    let (h, p) = addr.rsplit_once(':')?;
    let h = h.trim_matches(['[', ']']);
    let port = p.parse::<u16>().ok().filter(|p| *p > 0)?;
    (!h.is_empty()).then_some((h, port))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn is_normalized_agrees_with_normalize_host() {
        for h in [
            "link.example.com",
            "Link.example.com",
            "link.example.com.",
            "link.example.com:443",
            "a_b.example",
            "",
            ".",
            "a..b",
            ".a",
            "a.",
            "[::1]",
            "[::1]:80",
            "[::A]",
            " a.b",
            "127.0.0.1",
            "xn--bcher-kva.example",
            "bücher.example",
            "a/b",
        ] {
            assert_eq!(
                is_normalized(h),
                normalize_host(h).as_deref() == Some(h),
                "{h:?}"
            );
        }
        assert!(is_normalized(&"a".repeat(253)));
        assert!(!is_normalized(&"a".repeat(254)));
    }

    #[test]
    fn hosts() {
        assert_eq!(
            normalize_host("Link.Example.COM:443").as_deref(),
            Some("link.example.com")
        );
        assert_eq!(
            normalize_host("link.example.com.").as_deref(),
            Some("link.example.com")
        );
        assert_eq!(normalize_host("[::1]:8080").as_deref(), Some("[::1]"));
        assert_eq!(normalize_host("a/b"), None);
        assert_eq!(normalize_host(""), None);
        // Found by fuzz/fuzz_targets/host.rs: these were accepted as hosts ":" and "." and
        // "a:b", which normalise to nothing on a second pass.
        assert_eq!(normalize_host("::"), None);
        assert_eq!(normalize_host(".."), None);
        assert_eq!(normalize_host("a:b:80"), None);
        assert_eq!(normalize_host("[]"), None);
        assert_eq!(normalize_host("[::1]x"), None);
        assert_eq!(normalize_host("a..b"), None);
    }

    #[test]
    fn normalises() {
        assert_eq!(
            normalize_domain("Link.Example.COM.").unwrap(),
            "link.example.com"
        );
        assert_eq!(
            normalize_domain(" a.b.example.com ").unwrap(),
            "a.b.example.com"
        );
        assert_eq!(
            normalize_domain("bücher.example").unwrap(),
            "xn--bcher-kva.example"
        );
    }

    #[test]
    fn refuses_with_reasons() {
        let e = |s: &str| normalize_domain(s).unwrap_err().to_string();
        assert_eq!(e(""), "the host name is empty");
        assert_eq!(
            e("localhost"),
            "\"localhost\" has a single label; use a full host name such as link.example.com"
        );
        assert!(e("192.0.2.1").contains("is an IP address"));
        assert!(e("*.example.com").starts_with("wildcards are not supported"));
        assert_eq!(
            e("-a.example.com"),
            "label \"-a\" may not start or end with a hyphen"
        );
        assert_eq!(
            e("a..example.com"),
            "label \"\" is empty (two dots in a row?)"
        );
        assert_eq!(
            e("a_b.example.com"),
            "label \"a_b\" may hold only letters, digits and hyphens"
        );
        assert!(e("https://link.example.com/").contains("is not a bare host name"));
        assert!(e("link.example.com:443").contains("is not a bare host name"));
        assert!(e(&format!("{}.com", "a".repeat(64))).contains("longer than 63"));
        assert_eq!(
            e("example.123"),
            "the top-level label \"123\" is all digits"
        );
    }

    #[test]
    fn host_and_port() {
        assert_eq!(split_host_port("redis-1:6379"), Some(("redis-1", 6379)));
        assert_eq!(split_host_port("[::1]:26379"), Some(("::1", 26379)));
        assert_eq!(split_host_port("redis-1"), None);
        assert_eq!(split_host_port(":6379"), None);
        assert_eq!(split_host_port("redis-1:0"), None);
        assert_eq!(split_host_port("redis-1:http"), None);
    }
}
