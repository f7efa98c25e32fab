//! What keygate's two HTTP front ends share — the management API (`keygate-api`) and the gateway
//! (`keygate-gateway`) — so that neither depends on the other:
//!
//! - [`error`]: [`ApiError`], the one mapping from an engine error (or an HTTP-only refusal) to
//!   a status and an RFC 9457 problem document;
//! - [`context`]: the middleware around every request — request id, log line, request-log
//!   record, `Cache-Control: no-store` — and the facts handlers note for it;
//! - [`caller`]: from a request to the engine's `Caller` (SPEC §3 checks 1–8) and check 11;
//! - [`idempotency`]: `Idempotency-Key` over HTTP (SPEC §6), responses kept and replayed;
//! - [`headers`]: rate-limit fields and hop-by-hop headers.

pub mod caller;
pub mod context;
pub mod error;
pub mod headers;
pub mod idempotency;

pub use error::ApiError;
