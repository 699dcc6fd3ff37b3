//! The SNI name a TLS connection asked for, carried from the handshake into the HTTP phase, where
//! the edge requires a tracked link's Host to be that name, unless it is one of the edge's own.

/// The normalised SNI name of a TLS connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sni(pub String);

/// What the HTTP phase learns of a connection's TLS handshake, attached to its digest.
#[derive(Debug, Default)]
pub struct Handshake {
    /// The SNI name, if the client sent a valid one.
    pub sni: Option<Sni>,
    /// The client sent no SNI, or one of the edge's own names (those `tls.cert` covers, and not
    /// a registered customer's), as a proxy or CDN a customer runs in front does: the request's
    /// Host alone says whose link it is ([`super::own`]).
    pub own_name: bool,
    /// The session was resumed (no full handshake).
    pub resumed: bool,
    /// The connection's deadline bookkeeping (`crate::limits`), set once after the handshake:
    /// an HTTP/2 request reaches its connection only through the digest its streams share.
    pub connection: std::sync::OnceLock<std::sync::Arc<dyn std::any::Any + Send + Sync>>,
}
