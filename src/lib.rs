//! linkedge: the HTTPS edge of an email link-tracking service, on Pingora.
//!
//! A tracked link arrives on a customer's branded domain; the edge verifies its signature for
//! the Host it arrived on ([`token`]), hands a click event to the [`events`] queue without
//! waiting, and redirects ([`edge`]). Events reach a Redis stream through a background writer,
//! with an on-disk spool while Redis is away. Everything else is proxied to the Host's region
//! ([`upstream`]). Modules are listed from the bottom of the dependency order up: each imports
//! only from modules listed before it.

pub mod host;
pub mod metrics;
pub mod time;
pub mod systemd;
pub mod token;
pub mod privacy;
pub mod dns;
pub mod store;
pub mod registry;
pub mod mint;
pub mod rewrite;
pub mod blocks;
pub mod agent;
pub mod tls;
pub mod config;
pub mod events;
pub mod acme;
pub mod upstream;
pub mod limits;
pub mod edge;
pub mod control;
pub mod server;
pub mod cli;
