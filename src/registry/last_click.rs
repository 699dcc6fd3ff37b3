//! When each retired domain last saw a click, for `domain show`: the customer removes a retired
//! domain once its old emails stop being clicked.
//!
//! Cheap by construction: the click path notes the time in the registry mirror's memory, only
//! for retired domains ([`Mirror::clicked`]), and this background service writes what changed to
//! one Redis hash (`<prefix>domains:last_click`) at most once per `registry.last_click_interval`
//! (default `1m`): one command per retired domain clicked meanwhile, none otherwise. A value is
//! only ever raised, so nodes writing in any order agree. A node that crashes loses at most one
//! interval of it; a clean stop writes it first.
//!
//! Reading the events stream instead would cost nothing on the click path, but the stream is
//! trimmed and shared by every domain: a bounded scan cannot see a click months old, which is
//! exactly the question for a retired domain.

use super::Mirror;
use crate::store::Db;
use async_trait::async_trait;
use redis::AsyncCommands;
use std::sync::Arc;
use std::time::Duration;

/// Sets `KEYS[1]`'s field `ARGV[1]` to `ARGV[2]` unless it already holds a later time.
const RAISE: &str = "local at = tonumber(redis.call('HGET', KEYS[1], ARGV[1]) or '0') \
    if tonumber(ARGV[2]) > at then redis.call('HSET', KEYS[1], ARGV[1], ARGV[2]) end return 0";

/// Writes the mirror's noted clicks to Redis, as a background service.
pub struct LastClicks {
    mirror: Arc<Mirror>,
    db: Db,
    every: Duration,
}

impl LastClicks {
    /// Writes `mirror`'s noted clicks to `db` every `every`.
    pub fn new(mirror: Arc<Mirror>, db: Db, every: Duration) -> LastClicks {
        LastClicks { mirror, db, every }
    }

    /// Writes every click noted since the last write; those that fail are kept for the next.
    async fn flush(&self) {
        let key = self.db.keys().domains_last_click();
        let script = redis::Script::new(RAISE);
        for (host, ms) in self.mirror.take_clicks() {
            let written: redis::RedisResult<i64> = match self.db.conn().await {
                Ok(mut conn) => {
                    script
                        .key(&key)
                        .arg(&host)
                        .arg(ms)
                        .invoke_async(&mut conn)
                        .await
                }
                Err(e) => Err(e),
            };
            if let Err(e) = written {
                tracing::warn!(host = %host, error = %e, "retired domain's last click not written; retrying");
                self.mirror.restore_click(&host, ms);
            }
        }
    }
}

/// When `host` (normalised) last saw a click, as written by any node (`None`: never, or not
/// since it was retired).
pub async fn read(db: &Db, host: &str) -> redis::RedisResult<Option<u64>> {
    db.conn()
        .await?
        .hget(db.keys().domains_last_click(), host)
        .await
}

/// Forgets `host`'s last click (it was removed from the registry).
pub async fn forget(db: &Db, host: &str) -> redis::RedisResult<()> {
    db.conn()
        .await?
        .hdel(db.keys().domains_last_click(), host)
        .await
}

#[async_trait]
impl pingora::services::background::BackgroundService for LastClicks {
    async fn start(&self, mut shutdown: pingora::server::ShutdownWatch) {
        loop {
            tokio::select! {
                _ = tokio::time::sleep(self.every) => self.flush().await,
                _ = shutdown.changed() => {
                    self.flush().await;
                    return;
                }
            }
        }
    }
}
