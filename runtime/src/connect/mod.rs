//! Connect: the external apps tenants connect to, and the credentials
//! they hold for them.
//!
//! - `integration`: integration files (one app each), read and checked
//! - `connections`: a tenant's connections: create, test, update, delete
//! - `oauth2`: the OAuth2 client (authorization URL with PKCE, code
//!   exchange, refresh), tolerant of real providers
//! - `requests`: OAuth2 connection requests and the callback
//! - `vault`: the key ring that seals credentials at rest
pub mod connections;
pub mod integration;
pub mod oauth2;
pub mod requests;
pub mod vault;
