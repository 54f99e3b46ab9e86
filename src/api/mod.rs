//! The OpenAI-compatible API surface: the request view read from bodies
//! (only the fields policies need), byte-level rewrites of forwarded bodies,
//! the endpoints, and the single mapping from every error to an HTTP status
//! and OpenAI error code.

pub mod error;
pub mod json;
pub mod request;

pub use error::GatewayError;
pub mod endpoints;
