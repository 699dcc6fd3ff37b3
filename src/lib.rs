//! linkedge: the HTTPS edge of an email link-tracking service, on Pingora.
//!
//! A tracked link arrives on a customer's branded domain; the edge verifies its signature for
//! the Host it arrived on ([`token`]), hands a click event to the [`events`] queue without
//! waiting, and redirects ([`edge`]). Events reach a Redis stream through a background writer,
//! with an on-disk spool while Redis is away.

pub mod acme;
pub mod admin;
pub mod certs;
pub mod client_ip;
pub mod config;
pub mod db;
pub mod domains;
pub mod edge;
pub mod events;
pub mod limits;
pub mod metrics;
pub mod regions;
pub mod server;
pub mod tls;
pub mod token;
pub mod verify;
