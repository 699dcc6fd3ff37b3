//! Every node drops its cached copy of a certificate when any node changes it: a background
//! service subscribed to the store's invalidation channel (PINGed, and re-subscribed with a
//! clean cache after any loss, since messages sent meanwhile are gone).

use super::cache::Cache;
use crate::store::Db;
use async_trait::async_trait;
use std::sync::Arc;
use std::time::Duration;

/// Drops cached certificates when any node announces a change, as a background service.
pub struct Invalidator {
    cache: Arc<Cache>,
    db: Db,
}

impl Invalidator {
    /// Listens on `db`'s certificate channel and clears entries of `cache`.
    pub fn new(cache: Arc<Cache>, db: Db) -> Invalidator {
        Invalidator { cache, db }
    }

    async fn listen(&self) -> redis::RedisResult<()> {
        use futures_util::StreamExt;
        let bound = self.db.timeout();
        let timed_out = || {
            redis::RedisError::from(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                "no answer within redis.timeout",
            ))
        };
        let mut pubsub = self.db.pubsub().await?;
        tokio::time::timeout(bound, pubsub.subscribe(self.db.keys().cert_channel()))
            .await
            .map_err(|_| timed_out())??;
        // Messages sent while not subscribed are lost: start from a clean cache.
        self.cache.clear();
        tracing::info!("certificate invalidation channel subscribed");
        let (mut sink, mut stream) = pubsub.split();
        // A server that hangs (or a network that drops packets) never ends the stream: ping it.
        let mut check = tokio::time::interval(PUBSUB_PING_EVERY);
        check.tick().await;
        loop {
            tokio::select! {
                msg = stream.next() => match msg {
                    Some(msg) => {
                        if let Ok(host) = msg.get_payload::<String>() {
                            self.cache.invalidate(&host);
                        }
                    }
                    None => {
                        return Err(redis::RedisError::from(std::io::Error::new(
                            std::io::ErrorKind::ConnectionAborted,
                            "the subscription ended",
                        )));
                    }
                },
                _ = check.tick() => {
                    tokio::time::timeout(bound, sink.ping::<redis::Value>())
                        .await
                        .map_err(|_| timed_out())??;
                }
            }
        }
    }
}

/// How often the invalidation channel's connection is checked with a PING.
const PUBSUB_PING_EVERY: Duration = Duration::from_secs(5);

#[async_trait]
impl pingora::services::background::BackgroundService for Invalidator {
    async fn start(&self, mut shutdown: pingora::server::ShutdownWatch) {
        loop {
            tokio::select! {
                r = self.listen() => {
                    if let Err(e) = r {
                        tracing::warn!(error = %e, "certificate invalidation channel lost; retrying");
                    }
                }
                _ = shutdown.changed() => return,
            }
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                _ = shutdown.changed() => return,
            }
        }
    }
}
