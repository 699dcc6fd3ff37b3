//! Following shared state into memory: what the registry mirror and the block list both do.
//! A [`Followed`] set is loaded whole when its change feed is (re)subscribed (messages sent
//! meanwhile are lost), kept current by the feed (each message names one changed member, read
//! again), loaded whole again every `resync` so a message lost any other way heals, and kept as
//! it was while Redis is away. [`Following`] runs that loop as a background service.

use super::Db;
use async_trait::async_trait;
use std::time::Duration;

/// State followed from Redis into memory.
#[async_trait]
pub trait Followed: Send + Sync {
    /// What the logs call it ("registry", "block list").
    fn name(&self) -> &'static str;
    /// The change-feed channels to subscribe to.
    fn channels(&self) -> Vec<String>;
    /// Loads everything and replaces what is in memory; how many members it holds.
    async fn load(&self) -> redis::RedisResult<usize>;
    /// Reads again what the feed's message `payload` on `channel` names.
    async fn changed(&self, channel: &str, payload: &str) -> redis::RedisResult<()>;
    /// The periodic re-sync: a full [`Followed::load`] unless the set can tell cheaply that
    /// nothing was missed.
    async fn resync(&self) -> redis::RedisResult<()> {
        self.load().await.map(|_| ())
    }
}

/// How often the change feed's connection is checked with a PING.
const PING_EVERY: Duration = Duration::from_secs(5);

/// Keeps a [`Followed`] set current from `db`, as a background service.
pub struct Following<F> {
    followed: F,
    db: Db,
    resync: Duration,
}

impl<F: Followed> Following<F> {
    /// Follows `followed` through `db`'s change feed, loading it all again every `resync`.
    pub fn new(followed: F, db: Db, resync: Duration) -> Following<F> {
        Following {
            followed,
            db,
            resync,
        }
    }

    /// What is followed.
    pub fn followed(&self) -> &F {
        &self.followed
    }

    /// Subscribes to the change feed, loads everything, then applies changes until the
    /// subscription fails.
    async fn follow(&self) -> redis::RedisResult<()> {
        use futures_util::StreamExt;
        let bound = self.db.timeout();
        let timed_out = || {
            redis::RedisError::from(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                "no answer within redis.timeout",
            ))
        };
        let channels = self.followed.channels();
        let mut pubsub = self.db.pubsub().await?;
        tokio::time::timeout(bound, pubsub.subscribe(&channels))
            .await
            .map_err(|_| timed_out())??;
        // Subscribed first, then loaded: a change made during the load is announced after it.
        self.followed.load().await?;
        let (mut sink, mut stream) = pubsub.split();
        let mut ping = tokio::time::interval(PING_EVERY);
        ping.tick().await;
        let mut resync = tokio::time::interval(self.resync);
        resync.tick().await;
        loop {
            tokio::select! {
                msg = stream.next() => {
                    let Some(msg) = msg else {
                        return Err(redis::RedisError::from(std::io::Error::new(
                            std::io::ErrorKind::ConnectionAborted,
                            "the subscription ended",
                        )));
                    };
                    if let Ok(payload) = msg.get_payload::<String>() {
                        self.followed.changed(msg.get_channel_name(), &payload).await?;
                    }
                }
                _ = ping.tick() => {
                    tokio::time::timeout(bound, sink.ping::<redis::Value>())
                        .await
                        .map_err(|_| timed_out())??;
                }
                _ = resync.tick() => {
                    self.followed.resync().await?;
                }
            }
        }
    }
}

#[async_trait]
impl<F: Followed> pingora::services::background::BackgroundService for Following<F> {
    async fn start(&self, mut shutdown: pingora::server::ShutdownWatch) {
        loop {
            tokio::select! {
                r = self.follow() => {
                    if let Err(e) = r {
                        tracing::warn!(
                            error = %e,
                            "{} change feed lost; serving the last known state, retrying",
                            self.followed.name()
                        );
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
