//! The response cache (issue 11); `verify` checks semantic candidates.
pub mod verify;
