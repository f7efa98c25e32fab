//! keygate's management and verify API over HTTP (axum): the router as the table of contents
//! ([`routes`]), the extractors that authenticate and parse ([`auth`], [`extract`],
//! [`idempotent`]), the OpenAPI document, Swagger UI and metrics.
//!
//! Handlers are thin: extract, call a use case of the engine, render its view. Errors become
//! problem documents in one place, `keygate_http::error`. The gateway is not here: the binary
//! mounts it as the fallback ([`app_with`]), and passes it this API's paths ([`own_paths`]) so that no
//! route of its can shadow one of keygate's.

pub mod auth;
pub mod extract;
pub mod idempotent;
pub mod metrics;
pub mod routes;
pub mod state;

pub use routes::{app, app_with, openapi, openapi_for, own_paths};
pub use state::AppState;
