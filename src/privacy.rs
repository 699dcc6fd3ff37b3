//! How much of the client's address an event keeps (`events.client_ip`): all of it, its network
//! (`/24` of IPv4, `/48` of IPv6), a keyed hash (HMAC-SHA256 under a rotatable key, the key id
//! written with it, so consumers can still count distinct clients), or nothing. Pure functions;
//! the machine-click verdict is computed from the full address before it is reduced.

use hmac::{Hmac, Mac};
use sha2::Sha256;
use std::net::IpAddr;

/// A client address hashed under key `key`: the first 16 bytes of HMAC-SHA256.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IpHash {
    /// The id of the key that hashed it.
    pub key: u32,
    /// The digest.
    pub digest: [u8; 16],
}

impl IpHash {
    /// As written in the event's `ip` field: `k<id>:<32 hex digits>`, into `out`; the length.
    pub fn write(&self, out: &mut [u8; 48]) -> usize {
        use std::io::Write;
        let mut c = std::io::Cursor::new(&mut out[..]);
        let _ = write!(c, "k{}:", self.key);
        for b in self.digest {
            let _ = write!(c, "{b:02x}");
        }
        c.position() as usize
    }
}

/// The configured reduction.
#[derive(Clone, Default)]
pub enum Privacy {
    /// The address as seen.
    #[default]
    Full,
    /// The network: `/24` for IPv4, `/48` for IPv6.
    Truncated,
    /// A keyed hash under the current key.
    Hashed {
        /// The current key's id.
        key: u32,
        /// The current key.
        mac: Hmac<Sha256>,
    },
    /// No address.
    None,
}

impl std::fmt::Debug for Privacy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Privacy::Full => f.write_str("Full"),
            Privacy::Truncated => f.write_str("Truncated"),
            Privacy::Hashed { key, .. } => write!(f, "Hashed(key {key}, <redacted>)"),
            Privacy::None => f.write_str("None"),
        }
    }
}

impl Privacy {
    /// Hashing under `secret`, whose id is `key`.
    pub fn hashed(key: u32, secret: &[u8]) -> Privacy {
        Privacy::Hashed {
            key,
            mac: Hmac::<Sha256>::new_from_slice(secret).expect("HMAC takes any key length"),
        }
    }

    /// What an event keeps of `ip`: an address (full or its network), or a hash.
    pub fn reduce(&self, ip: Option<IpAddr>) -> (Option<IpAddr>, Option<IpHash>) {
        let Some(ip) = ip else {
            return (None, None);
        };
        match self {
            Privacy::Full => (Some(ip), None),
            Privacy::Truncated => (Some(network(ip)), None),
            Privacy::None => (None, None),
            Privacy::Hashed { key, mac } => {
                let mut m = mac.clone();
                match ip {
                    IpAddr::V4(v4) => m.update(&v4.octets()),
                    IpAddr::V6(v6) => m.update(&v6.octets()),
                }
                let full = m.finalize().into_bytes();
                let mut digest = [0u8; 16];
                digest.copy_from_slice(&full[..16]);
                (None, Some(IpHash { key: *key, digest }))
            }
        }
    }
}

/// `/24` of an IPv4 address, `/48` of an IPv6 one.
fn network(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(v4) => {
            let mut o = v4.octets();
            o[3] = 0;
            IpAddr::from(o)
        }
        IpAddr::V6(v6) => {
            let mut o = v6.octets();
            o[6..].fill(0);
            IpAddr::from(o)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_mode_keeps_what_it_says() {
        let v4: IpAddr = "198.51.100.77".parse().unwrap();
        let v6: IpAddr = "2001:db8:1234:5678::9".parse().unwrap();
        assert_eq!(Privacy::Full.reduce(Some(v4)), (Some(v4), None));
        assert_eq!(
            Privacy::Truncated.reduce(Some(v4)).0,
            Some("198.51.100.0".parse().unwrap())
        );
        assert_eq!(
            Privacy::Truncated.reduce(Some(v6)).0,
            Some("2001:db8:1234::".parse().unwrap())
        );
        assert_eq!(Privacy::None.reduce(Some(v4)), (None, None));
        let h = Privacy::hashed(3, b"test-key-not-a-secret-0123456789");
        let (ip, a) = h.reduce(Some(v4));
        assert_eq!(ip, None);
        let a = a.unwrap();
        // Stable per address and key, different across addresses and keys.
        assert_eq!(h.reduce(Some(v4)).1, Some(a));
        assert_ne!(h.reduce(Some(v6)).1, Some(a));
        let other = Privacy::hashed(4, b"another-key-not-a-secret-0123456");
        assert_ne!(other.reduce(Some(v4)).1.unwrap().digest, a.digest);
        let mut buf = [0u8; 48];
        let n = a.write(&mut buf);
        let text = std::str::from_utf8(&buf[..n]).unwrap();
        assert!(text.starts_with("k3:") && text.len() == 35, "{text}");
    }
}
