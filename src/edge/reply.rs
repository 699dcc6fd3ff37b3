//! The one place where outcomes and errors become HTTP responses: the edge's own answers,
//! refusals, failed proxied requests and the admin API all build a [`Reply`], which is written
//! with the same headers everywhere: `Content-Type`, `Content-Length`, `Cache-Control: no-store,
//! max-age=0` (no CDN or browser cache may hide a repeat click, or keep an admin answer), and the
//! request id when there is one. Bodies say what a client can act on; detail goes to the log.

use super::route::Refusal;
use bytes::Bytes;
use pingora::http::ResponseHeader;
use pingora::prelude::*;

/// The body of a 403 for a link minted for another Host, as the track backends word it.
pub const HOST_MISMATCH_BODY: &str = "Invalid link security token";

/// The body of the edge's own `503` (shared state unavailable).
pub const UNAVAILABLE_BODY: &str = "Service Unavailable\n";

/// The request-id header, read from clients and sent to backends and back.
pub const REQUEST_ID: &str = "x-request-id";

/// The `Cache-Control` of every response linkedge writes itself.
const NO_STORE: &str = "no-store, max-age=0";

/// A 1×1 transparent GIF, 43 bytes.
pub const PIXEL_GIF: [u8; 43] = [
    0x47, 0x49, 0x46, 0x38, 0x39, 0x61, 0x01, 0x00, 0x01, 0x00, 0x80, 0x00, 0x00, 0x00, 0x00, 0x00,
    0xff, 0xff, 0xff, 0x21, 0xf9, 0x04, 0x01, 0x00, 0x00, 0x00, 0x00, 0x2c, 0x00, 0x00, 0x00, 0x00,
    0x01, 0x00, 0x01, 0x00, 0x00, 0x02, 0x02, 0x44, 0x01, 0x00, 0x3b,
];

/// A complete response, decided before it is written.
#[derive(Debug, Clone)]
pub struct Reply {
    /// The status code.
    pub status: u16,
    /// `Content-Type`, when there is a body.
    pub content_type: Option<&'static str>,
    /// `Location`, for a redirect.
    pub location: Option<Bytes>,
    /// Send `Allow: GET, HEAD` (a 405).
    pub allow: bool,
    /// `X-Request-Id`, when the request has one.
    pub request_id: Option<String>,
    /// The body.
    pub body: Bytes,
}

impl Reply {
    /// A plain-text reply.
    pub fn text(status: u16, body: impl Into<Bytes>) -> Reply {
        Reply {
            status,
            content_type: Some("text/plain; charset=utf-8"),
            location: None,
            allow: false,
            request_id: None,
            body: body.into(),
        }
    }

    /// A JSON reply.
    pub fn json(status: u16, v: &serde_json::Value) -> Reply {
        Reply {
            content_type: Some("application/json"),
            ..Reply::text(status, v.to_string())
        }
    }

    /// A JSON error: `{"error": "<message>"}`.
    pub fn json_error(status: u16, message: impl std::fmt::Display) -> Reply {
        Reply::json(status, &serde_json::json!({ "error": message.to_string() }))
    }

    /// `/health`: 200 `{}` (a static body: no JSON built per request).
    pub fn health() -> Reply {
        Reply {
            content_type: Some("application/json"),
            ..Reply::text(200, Bytes::from_static(b"{}"))
        }
    }

    /// The 302 of a tracked click.
    pub fn redirect(url: Bytes) -> Reply {
        Reply {
            status: 302,
            content_type: None,
            location: Some(url),
            ..Reply::text(302, Bytes::new())
        }
    }

    /// The 1×1 GIF of an open pixel.
    pub fn pixel() -> Reply {
        Reply {
            content_type: Some("image/gif"),
            ..Reply::text(200, Bytes::from_static(&PIXEL_GIF))
        }
    }

    /// 404 Not Found.
    pub fn not_found() -> Reply {
        Reply::text(404, "Not Found\n")
    }

    /// 503, nothing decided: shared state was unavailable.
    pub fn unavailable() -> Reply {
        Reply::text(503, UNAVAILABLE_BODY)
    }

    /// The answer to a refused request.
    pub fn refusal(r: Refusal) -> Reply {
        match r {
            Refusal::BadHost => Reply::text(400, "Bad Request: missing or invalid Host\n"),
            Refusal::HostMismatch => Reply::text(403, HOST_MISMATCH_BODY),
            Refusal::NotFound => Reply::not_found(),
            Refusal::MethodNotAllowed => Reply {
                allow: true,
                ..Reply::text(405, "Method Not Allowed\n")
            },
            Refusal::Misdirected => {
                Reply::text(421, "Misdirected Request: this host is not served here\n")
            }
        }
    }

    /// `431`: the request's header is over `limits.max_headers` or `limits.max_header_bytes`
    /// (the same body as when the connection layer refuses an HTTP/1 head).
    pub fn header_too_large() -> Reply {
        Reply::text(
            431,
            Bytes::from_static(crate::limits::HEADER_TOO_LARGE_BODY),
        )
    }

    /// The answer to a proxied request that failed with `e`, naming only its request id; `None`
    /// when the client is gone (nothing to write).
    pub fn proxy_error(e: &Error, request_id: &str) -> Option<Reply> {
        let code = proxy_error_status(e);
        if code == 0 {
            return None;
        }
        let reason = http::StatusCode::from_u16(code)
            .ok()
            .and_then(|c| c.canonical_reason())
            .unwrap_or("Error");
        Some(Reply {
            request_id: (!request_id.is_empty()).then(|| request_id.to_string()),
            ..Reply::text(code, format!("{code} {reason} (request id {request_id})\n"))
        })
    }

    /// The response header, with the common headers.
    fn header(&self) -> Result<ResponseHeader> {
        let mut h = ResponseHeader::build(self.status, Some(6))?;
        if let Some(ct) = self.content_type {
            h.insert_header("Content-Type", ct)?;
        }
        h.insert_header("Content-Length", http::HeaderValue::from(self.body.len()))?;
        if let Some(loc) = &self.location {
            // Verified destinations hold no control characters; the check here costs a scan only.
            let v = http::HeaderValue::from_maybe_shared(loc.clone())
                .map_err(|_| Error::explain(ErrorType::InternalError, "invalid Location"))?;
            h.insert_header("Location", v)?;
        }
        if self.allow {
            h.insert_header("Allow", "GET, HEAD")?;
        }
        h.insert_header("Cache-Control", NO_STORE)?;
        if let Some(id) = &self.request_id {
            h.insert_header(REQUEST_ID, id)?;
        }
        Ok(h)
    }

    /// Writes the reply to a proxy session (no body for `HEAD`).
    pub async fn write(self, session: &mut Session, head: bool) -> Result<()> {
        let h = self.header()?;
        let end = head || self.body.is_empty();
        // Failing to write is the client's doing (gone, or not reading: send_timeout).
        session
            .write_response_header(Box::new(h), end)
            .await
            .map_err(|e| e.into_down())?;
        if !end {
            session
                .write_response_body(Some(self.body), true)
                .await
                .map_err(|e| e.into_down())?;
        }
        Ok(())
    }

    /// The reply as an `http` response, for Pingora's `ServeHttp` apps (the admin listener).
    pub fn into_response(self) -> http::Response<Vec<u8>> {
        let mut b = http::Response::builder()
            .status(self.status)
            .header("Content-Length", self.body.len())
            .header("Cache-Control", NO_STORE);
        if let Some(ct) = self.content_type {
            b = b.header("Content-Type", ct);
        }
        if self.allow {
            b = b.header("Allow", "GET, HEAD");
        }
        b.body(self.body.to_vec())
            .expect("static response parts are valid")
    }
}

/// The status for a failed proxied request: 502 when no backend could be reached, 504 on a
/// timeout, 400 for a malformed request, 0 when the client is gone.
fn proxy_error_status(e: &Error) -> u16 {
    if e.esource() != &ErrorSource::Upstream && e.etype() == &ErrorType::WriteTimedout {
        // The client stopped taking the response: nothing more can reach it.
        return 0;
    }
    match e.etype() {
        ErrorType::HTTPStatus(code) => *code,
        ErrorType::ConnectTimedout
        | ErrorType::ConnectRefused
        | ErrorType::ConnectNoRoute
        | ErrorType::ConnectError
        | ErrorType::TLSHandshakeFailure
        | ErrorType::TLSHandshakeTimedout
        | ErrorType::InvalidCert => 502,
        ErrorType::ReadTimedout | ErrorType::WriteTimedout => 504,
        _ => match e.esource() {
            ErrorSource::Upstream => 502,
            ErrorSource::Downstream => match e.etype() {
                ErrorType::WriteError | ErrorType::ReadError | ErrorType::ConnectionClosed => 0,
                _ => 400,
            },
            ErrorSource::Internal | ErrorSource::Unset => 500,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_reply_carries_the_common_headers() {
        for r in [
            Reply::health(),
            Reply::redirect(Bytes::from_static(b"https://shop.example/")),
            Reply::pixel(),
            Reply::refusal(Refusal::MethodNotAllowed),
            Reply::proxy_error(&Error::new(ErrorType::ConnectRefused), "abc").unwrap(),
        ] {
            let h = r.header().unwrap();
            assert_eq!(h.headers["cache-control"], NO_STORE, "{}", r.status);
            assert_eq!(h.headers["content-length"], r.body.len().to_string());
        }
        let e = Reply::proxy_error(&Error::new(ErrorType::ReadTimedout), "abc").unwrap();
        assert_eq!(e.status, 504);
        assert_eq!(e.header().unwrap().headers[REQUEST_ID], "abc");
        assert_eq!(&e.body[..], b"504 Gateway Timeout (request id abc)\n");
        let gone = Error::new(ErrorType::WriteError).into_down();
        assert!(Reply::proxy_error(&gone, "abc").is_none());
        assert_eq!(
            Reply::refusal(Refusal::MethodNotAllowed)
                .header()
                .unwrap()
                .headers["allow"],
            "GET, HEAD"
        );
    }
}
