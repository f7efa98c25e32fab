//! Black-box tests of the `keygate` binary: each test runs the real executable in its own
//! temporary directory, with its `KEYGATE_*` environment set explicitly, and talks to `serve`
//! over real HTTP.
//!
//! - `commands`: what each CLI command prints, human and `--json`.
//! - `operator`: `keys get|revoke|roll|delete ID` in whichever account holds the key, `--account`
//!   as a check, and failures as one problem document with `--json`.
//! - `lists`: `--limit` and `--cursor` on every list, followed to the end.
//! - `config`: the layering (defaults → `keygate.toml` / `KEYGATE_CONFIG` → env → flags) and
//!   the start-up errors that say what to fix.
//! - `serve`: health, `healthcheck`, SIGTERM, the interactive reference, and a CLI revocation
//!   reaching a running server.
//! - `shown_once`: a plaintext key appears in the one output that created it and nowhere else —
//!   not in other responses, logs, later CLI output or the database files.
//! - `quickstart`: the README's quickstart, step by step.
//! - `security`: private files, and a hash secret that does not match the database's.
//! - `users`: `users create|list|delete`, the password read from standard input.
//! - `cluster`: three `serve` processes on one PostgreSQL and one Redis (or a Redis Cluster):
//!   exact shared limits, revocation everywhere within 100 ms, Redis lost and back.
//!
//! Every child process is bounded in time and killed when its test ends.

mod support;

mod cluster;
mod commands;
mod config;
mod lists;
mod operator;
mod quickstart;
mod security;
mod serve;
mod shown_once;
mod users;
