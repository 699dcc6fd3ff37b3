//! The SNI name a TLS connection asked for, carried from the handshake into the HTTP phase, where
//! the edge requires a tracked link's Host to be that name.

/// The normalised SNI name of a TLS connection, attached to its digest after the handshake.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sni(pub String);
