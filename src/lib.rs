//! sluice: an AI gateway appliance. A thread-per-core, io_uring,
//! OpenAI-compatible proxy in front of self-hosted model servers.
//! See docs/architecture.md for the modules and a request's way through.

pub mod admin;
pub mod alerts;
pub mod api;
pub mod audit;
pub mod cluster;
pub mod config;
pub mod http;
pub mod metrics;
pub mod mock;
pub mod pipeline;
pub mod runtime;
pub mod store;
pub mod tls;
pub mod upstream;
