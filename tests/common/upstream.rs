//! A real HTTP/1.1 track-backend stand-in for the proxy tests, on a free loopback port, plain
//! or TLS (the development certificate). It echoes what it received as JSON, answers `/health`
//! with `{}`, streams `/download?bytes=N`, and sleeps on `/slow`. Bodies are counted, never
//! buffered, so 100 MB uploads cost it nothing.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

/// A running upstream.
pub struct Upstream {
    /// Where it listens.
    pub addr: SocketAddr,
    /// The name it puts in every echo (`server`).
    pub name: String,
    /// Requests it answered.
    pub hits: Arc<AtomicU64>,
    task: Option<JoinHandle<()>>,
}

trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

impl Upstream {
    /// Starts on a free port; `tls` serves the development certificate.
    pub async fn start(name: &str, tls: bool) -> Upstream {
        let listener = TcpListener::bind(("127.0.0.1", super::free_port()))
            .await
            .unwrap();
        Self::serve(listener, name, tls)
    }

    /// Starts again on `addr` (after [`Upstream::stop`]).
    pub async fn start_at(addr: SocketAddr, name: &str, tls: bool) -> Upstream {
        let listener = TcpListener::bind(addr).await.unwrap();
        Self::serve(listener, name, tls)
    }

    fn serve(listener: TcpListener, name: &str, tls: bool) -> Upstream {
        let addr = listener.local_addr().unwrap();
        let hits = Arc::new(AtomicU64::new(0));
        let acceptor = tls.then(|| {
            let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("certs-dev");
            let mut b =
                openssl::ssl::SslAcceptor::mozilla_intermediate_v5(openssl::ssl::SslMethod::tls())
                    .unwrap();
            b.set_certificate_chain_file(root.join("leaf.pem")).unwrap();
            b.set_private_key_file(root.join("leaf.key"), openssl::ssl::SslFiletype::PEM)
                .unwrap();
            Arc::new(b.build())
        });
        let (n, h) = (name.to_string(), hits.clone());
        let task = tokio::spawn(async move {
            // Connection tasks live in this set: aborting the server drops them all, like a
            // killed process.
            let mut conns = tokio::task::JoinSet::new();
            loop {
                let Ok((sock, _)) = listener.accept().await else {
                    continue;
                };
                let (n, h, acceptor) = (n.clone(), h.clone(), acceptor.clone());
                conns.spawn(async move {
                    let io: Box<dyn Io> = match acceptor {
                        None => Box::new(sock),
                        Some(a) => {
                            let ssl = openssl::ssl::Ssl::new(a.context()).unwrap();
                            let mut s = tokio_openssl::SslStream::new(ssl, sock).unwrap();
                            if Pin::new(&mut s).accept().await.is_err() {
                                return;
                            }
                            Box::new(s)
                        }
                    };
                    let _ = connection(io, &n, &h).await;
                });
                while conns.try_join_next().is_some() {}
            }
        });
        Upstream {
            addr,
            name: name.to_string(),
            hits,
            task: Some(task),
        }
    }

    /// Stops listening and drops every open connection.
    pub async fn stop(&mut self) {
        if let Some(t) = self.task.take() {
            t.abort();
            let _ = t.await;
        }
    }
}

impl Drop for Upstream {
    fn drop(&mut self) {
        if let Some(t) = self.task.take() {
            t.abort();
        }
    }
}

async fn connection(io: Box<dyn Io>, name: &str, hits: &AtomicU64) -> std::io::Result<()> {
    let mut r = BufReader::new(io);
    loop {
        let mut line = String::new();
        if r.read_line(&mut line).await? == 0 {
            return Ok(());
        }
        let mut parts = line.split_whitespace();
        let method = parts.next().unwrap_or("").to_string();
        let target = parts.next().unwrap_or("").to_string();
        let mut headers = serde_json::Map::new();
        let (mut len, mut chunked, mut close) = (0u64, false, false);
        loop {
            let mut h = String::new();
            r.read_line(&mut h).await?;
            let h = h.trim_end();
            if h.is_empty() {
                break;
            }
            if let Some((k, v)) = h.split_once(':') {
                let (k, v) = (k.trim().to_ascii_lowercase(), v.trim().to_string());
                match k.as_str() {
                    "content-length" => len = v.parse().unwrap_or(0),
                    "transfer-encoding" => chunked = v.eq_ignore_ascii_case("chunked"),
                    "connection" => close = v.eq_ignore_ascii_case("close"),
                    _ => {}
                }
                let joined = match headers.get(&k) {
                    Some(serde_json::Value::String(prev)) => format!("{prev}, {v}"),
                    _ => v,
                };
                headers.insert(k, joined.into());
            }
        }
        let body_bytes = if chunked {
            read_chunked(&mut r).await?
        } else {
            discard(&mut r, len).await?;
            len
        };
        hits.fetch_add(1, Ordering::Relaxed);
        let path = target.split('?').next().unwrap_or("");
        let w = r.get_mut();
        match path {
            "/health" => respond(w, 200, "application/json", b"{}").await?,
            "/slow" => {
                tokio::time::sleep(Duration::from_secs(3)).await;
                respond(w, 200, "text/plain", b"slow").await?
            }
            "/download" => {
                let n: u64 = target
                    .split("bytes=")
                    .nth(1)
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(0);
                let head = format!(
                    "HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\nContent-Length: {n}\r\n\r\n"
                );
                w.write_all(head.as_bytes()).await?;
                let chunk = vec![b'x'; 64 << 10];
                let mut left = n;
                while left > 0 {
                    let k = left.min(chunk.len() as u64) as usize;
                    w.write_all(&chunk[..k]).await?;
                    left -= k as u64;
                }
                w.flush().await?;
            }
            _ => {
                let echo = serde_json::json!({
                    "server": name,
                    "method": method,
                    "target": target,
                    "headers": headers,
                    "body_bytes": body_bytes,
                });
                respond(w, 200, "application/json", echo.to_string().as_bytes()).await?
            }
        }
        if close {
            return Ok(());
        }
    }
}

async fn respond<W: AsyncWrite + Unpin + ?Sized>(
    w: &mut W,
    status: u16,
    ctype: &str,
    body: &[u8],
) -> std::io::Result<()> {
    let head = format!(
        "HTTP/1.1 {status} OK\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    w.write_all(head.as_bytes()).await?;
    w.write_all(body).await?;
    w.flush().await
}

async fn discard<R: AsyncRead + Unpin>(r: &mut R, mut n: u64) -> std::io::Result<()> {
    let mut buf = vec![0u8; 64 << 10];
    while n > 0 {
        let k = r.read(&mut buf[..n.min(64 << 10) as usize]).await?;
        if k == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        n -= k as u64;
    }
    Ok(())
}

async fn read_chunked<R: AsyncBufReadExt + AsyncRead + Unpin>(r: &mut R) -> std::io::Result<u64> {
    let mut total = 0;
    loop {
        let mut size = String::new();
        r.read_line(&mut size).await?;
        let n = u64::from_str_radix(size.trim().split(';').next().unwrap_or("0"), 16)
            .map_err(|_| std::io::Error::other("bad chunk size"))?;
        if n == 0 {
            // Trailers until the empty line.
            loop {
                let mut t = String::new();
                r.read_line(&mut t).await?;
                if t.trim().is_empty() {
                    return Ok(total);
                }
            }
        }
        discard(r, n).await?;
        total += n;
        let mut crlf = String::new();
        r.read_line(&mut crlf).await?;
    }
}
