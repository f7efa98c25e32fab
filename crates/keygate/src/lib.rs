//! The keygate binary's library half: the configuration file and its validation ([`config`]),
//! the wiring of the API and the gateway on one engine ([`server::app`]), and serving, on one
//! listener or one thread per core ([`workers`]). `main.rs` is the command line on top; the
//! end-to-end suites in `tests/` start servers through this.

pub mod config;
pub mod server;
pub mod workers;

pub use config::{Config, Settings};
pub use workers::serve_per_core;
