//! The one way linkedge opens a Redis connection: multiplexed, with a bound on connecting and
//! on every command, so no caller can hang on a Redis that stopped answering.

use redis::aio::MultiplexedConnection;
use std::time::Duration;

/// Connects to `url`; `connect` bounds the connection, `response` every command on it.
pub async fn connect(
    url: &str,
    connect: Duration,
    response: Duration,
) -> redis::RedisResult<MultiplexedConnection> {
    let conf = redis::AsyncConnectionConfig::new()
        .set_connection_timeout(Some(connect))
        .set_response_timeout(Some(response));
    redis::Client::open(url)?
        .get_multiplexed_async_connection_with_config(&conf)
        .await
}
