//! The metrics and admin listener: `/metrics` (Prometheus text) and `/health`. Bind it to a
//! private address; it is never served on the public listeners.

use async_trait::async_trait;
use http::Response;
use pingora::apps::http_app::ServeHttp;
use pingora::protocols::http::ServerSession;

/// The admin application.
pub struct Admin;

#[async_trait]
impl ServeHttp for Admin {
    async fn response(&self, session: &mut ServerSession) -> Response<Vec<u8>> {
        let (status, ctype, body) = match session.req_header().uri.path() {
            "/metrics" => (200, "text/plain; version=0.0.4", crate::metrics::render()),
            "/health" => (200, "application/json", b"{}".to_vec()),
            _ => (404, "text/plain", b"Not Found\n".to_vec()),
        };
        Response::builder()
            .status(status)
            .header("Content-Type", ctype)
            .header("Content-Length", body.len())
            .body(body)
            .expect("static response parts are valid")
    }
}
