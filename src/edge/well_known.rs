//! The two `/.well-known/` paths every node answers from shared state: ACME HTTP-01 key
//! authorizations (whichever node the CA reaches), and the nonces of `linkedge domain verify`'s
//! Host check (the body names the Host this node saw).

use super::reply::Reply;
use super::route::{ACME_CHALLENGE, VERIFY_NONCE};
use crate::store::Db;
use bytes::Bytes;

/// Answers the well-known paths from Redis.
pub struct WellKnown {
    db: Db,
}

/// A token or nonce as linkedge writes them: 1 to 128 characters of `[A-Za-z0-9_-]`.
fn plausible(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 128
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

impl WellKnown {
    /// Reads from `db`.
    pub fn new(db: Db) -> WellKnown {
        WellKnown { db }
    }

    async fn get(&self, key: &str) -> redis::RedisResult<Option<String>> {
        let mut conn = self.db.conn().await?;
        redis::AsyncCommands::get(&mut conn, key).await
    }

    /// The reply for `path` (one of the two prefixes; anything else is 404), `host` being the
    /// normalised Host the request arrived with. A Redis failure answers 503.
    pub async fn answer(&self, path: &str, host: Option<String>) -> Reply {
        let (key, verify) = if let Some(t) = path.strip_prefix(ACME_CHALLENGE) {
            (t, false)
        } else if let Some(n) = path.strip_prefix(VERIFY_NONCE) {
            (n, true)
        } else {
            return Reply::not_found();
        };
        if !plausible(key) {
            return Reply::not_found();
        }
        let key = if verify {
            self.db.keys().verify_nonce(key)
        } else {
            self.db.keys().acme_http01(key)
        };
        match self.get(&key).await {
            Ok(Some(v)) if !verify => Reply::text(200, Bytes::from(v)),
            // The verifier compares the Host this node saw with the domain it is verifying.
            Ok(Some(_)) => Reply::json(
                200,
                &serde_json::json!({ "host": host.unwrap_or_default() }),
            ),
            Ok(None) => Reply::not_found(),
            Err(e) => {
                tracing::warn!(error = %e, "well-known look-up failed");
                Reply::unavailable()
            }
        }
    }
}
