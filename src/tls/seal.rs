//! Sealing of stored private keys: AES-256-GCM under the configured master keys, with the host
//! as associated data, so a sealed key copied to another host's entry does not open.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use openssl::symm::{Cipher, decrypt_aead, encrypt_aead};
use std::collections::HashMap;

/// Why a sealed key did not open.
#[derive(Debug, thiserror::Error)]
pub enum SealError {
    /// Sealed with a master key this node does not have.
    #[error("sealed with master key {0}, which is not configured")]
    UnknownMasterKey(u32),
    /// The sealed key does not open (wrong key, or tampered).
    #[error("the stored private key does not decrypt")]
    Unseal,
}

/// Seals and opens private keys with the master keys (AES-256-GCM).
#[derive(Clone)]
pub struct Sealer {
    keys: HashMap<u32, [u8; 32]>,
    current: u32,
}

impl std::fmt::Debug for Sealer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "Sealer(current {}, {} keys)",
            self.current,
            self.keys.len()
        )
    }
}

impl Sealer {
    /// A sealer sealing with `current` and opening with any of `keys`.
    pub fn new(keys: Vec<(u32, [u8; 32])>, current: u32) -> Sealer {
        Sealer {
            keys: keys.into_iter().collect(),
            current,
        }
    }

    /// Seals `plain` for `host`; returns the key id and the base64 text.
    pub fn seal(&self, host: &str, plain: &[u8]) -> (u32, String) {
        let key = &self.keys[&self.current];
        let mut nonce = [0u8; 12];
        openssl::rand::rand_bytes(&mut nonce).expect("the OS has randomness");
        let mut tag = [0u8; 16];
        let ct = encrypt_aead(
            Cipher::aes_256_gcm(),
            key,
            Some(&nonce),
            host.as_bytes(),
            plain,
            &mut tag,
        )
        .expect("AES-256-GCM encrypts");
        let mut out = Vec::with_capacity(12 + ct.len() + 16);
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&ct);
        out.extend_from_slice(&tag);
        (self.current, STANDARD.encode(out))
    }

    /// Opens what [`Sealer::seal`] sealed for `host` with key `key_id`.
    pub fn open(&self, host: &str, key_id: u32, sealed: &str) -> Result<Vec<u8>, SealError> {
        let key = self
            .keys
            .get(&key_id)
            .ok_or(SealError::UnknownMasterKey(key_id))?;
        let raw = STANDARD.decode(sealed).map_err(|_| SealError::Unseal)?;
        if raw.len() < 28 {
            return Err(SealError::Unseal);
        }
        let (nonce, rest) = raw.split_at(12);
        let (ct, tag) = rest.split_at(rest.len() - 16);
        decrypt_aead(
            Cipher::aes_256_gcm(),
            key,
            Some(nonce),
            host.as_bytes(),
            ct,
            tag,
        )
        .map_err(|_| SealError::Unseal)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seal_round_trips_and_binds_the_host() {
        let s = Sealer::new(vec![(1, [7; 32]), (2, [9; 32])], 2);
        let (id, sealed) = s.seal("a.example.com", b"secret key");
        assert_eq!(id, 2);
        assert!(!sealed.contains("secret"));
        assert_eq!(s.open("a.example.com", 2, &sealed).unwrap(), b"secret key");
        assert!(matches!(
            s.open("b.example.com", 2, &sealed),
            Err(SealError::Unseal)
        ));
        assert!(matches!(
            s.open("a.example.com", 1, &sealed),
            Err(SealError::Unseal)
        ));
        assert!(matches!(
            s.open("a.example.com", 3, &sealed),
            Err(SealError::UnknownMasterKey(3))
        ));
    }
}
