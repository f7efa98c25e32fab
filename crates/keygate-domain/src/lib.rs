//! keygate's domain: the rules of API keys, free of I/O.
//!
//! Everything here is a pure function over plain types: identifiers, the key format and its
//! checksum, keyed hashing, scopes and the catalog, IP allowlists, the stored models and the
//! authorization policy (SPEC §3 checks 2–10). No database, no HTTP, no clock: callers pass
//! `now` in. That keeps the rules unit-testable and benchmarkable alone.

pub mod gcra;
pub mod ids;
pub mod ip;
pub mod key;
pub mod model;
pub mod policy;
pub mod request;
pub mod scope;
pub mod time;

pub use ids::{AccountId, EventId, KeyId, RequestId, SessionId, TenantId, UserId};
pub use key::{Environment, KeyFormat, KeyFormatError, KeyHash, KeyHasher, PlaintextKey};
pub use model::{
    Account, AccountStatus, ApiKey, AuditEvent, KeyStatus, Role, Session, Tenant, TenantStatus, UnknownRole, User,
};
pub use policy::{AuthFailure, KeyBounds, RequestFacts};
pub use scope::{Catalog, Scope, Scopes};
