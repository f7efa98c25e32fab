//! keygate's engine: everything a request and a use case need, with no HTTP framework.
//!
//! - [`keygate::Keygate`]: the store, the key format and hasher, the catalog, the limits — what the
//!   use cases in [`services`] run on (the CLI builds one over the database);
//! - [`engine::Engine`]: the core plus what serving needs — the credential [`cache`] and its
//!   change-log [`follower`], the [`auth::Authenticator`] (SPEC §3 checks 1–8) with its
//!   failed-attempt [`throttle`], the [`ratelimit`]er behind its trait (check 11, SPEC §5),
//!   [`idempotency`] claims (SPEC §6), [`usage`] and [`requestlog`] recording, and the
//!   background tasks;
//! - [`error::Error`]: what went wrong, with its stable code; `keygate-http` maps it to a status
//!   and a problem document.
//!
//! The front ends (`keygate-api`, `keygate-gateway`, the CLI) sit on top; nothing here imports
//! them.

pub mod auth;
pub mod background;
pub mod bus;
pub mod cache;
pub mod engine;
pub mod error;
pub mod follower;
pub mod idempotency;
pub mod keygate;
pub mod password;
pub mod principal;
pub mod ratelimit;
pub mod requestlog;
pub mod services;
pub mod settings;
pub mod throttle;
pub mod usage;
pub mod views;

pub use engine::{Dependencies, Engine, Shared};
pub use error::{Error, Exceeds, FieldError};
pub use keygate::{Keygate, SecretCheckError};
pub use principal::Principal;
pub use settings::{Limits, SessionSettings, Settings};
