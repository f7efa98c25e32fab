//! SQL backends (skeleton; being filled in).

use async_trait::async_trait;
use keygate_domain::model::{Account, ApiKey, AuditEvent, Tenant};
use keygate_domain::time::Timestamp;
use keygate_domain::{AccountId, KeyHash, KeyId, TenantId};

use crate::{
    AccountStore, AuditFilter, AuditLog, Change, ChangeFeed, KeyFilter, KeyStore, KeyUsage, Page, Result, Store,
    StoreError, TenantFilter, TenantStore,
};

pub struct SqliteStore {
    pool: sqlx::SqlitePool,
}

impl SqliteStore {
    /// # Errors
    /// The database cannot be opened.
    pub async fn open(url: &str) -> Result<Self, sqlx::Error> {
        Ok(Self { pool: sqlx::SqlitePool::connect(url).await? })
    }
}

pub struct PgStore {
    pool: sqlx::PgPool,
}

impl PgStore {
    /// # Errors
    /// The database cannot be reached.
    pub async fn open(url: &str) -> Result<Self, sqlx::Error> {
        Ok(Self { pool: sqlx::PgPool::connect(url).await? })
    }
}

fn unfinished() -> StoreError {
    StoreError::Corrupt("not implemented yet".to_owned())
}

macro_rules! skeleton {
    ($Store:ident, $backend:literal) => {
        #[async_trait]
        impl AccountStore for $Store {
            async fn create_account(&self, _: &Account, _: &ApiKey, _: &AuditEvent) -> Result<()> { Err(unfinished()) }
            async fn get_account(&self, _: AccountId) -> Result<Option<Account>> { Err(unfinished()) }
            async fn operator_account(&self) -> Result<Option<Account>> { Err(unfinished()) }
            async fn list_accounts(&self, _: &Page) -> Result<Vec<Account>> { Err(unfinished()) }
            async fn update_account(&self, _: &Account, _: &AuditEvent) -> Result<()> { Err(unfinished()) }
        }
        #[async_trait]
        impl TenantStore for $Store {
            async fn create_tenant(&self, _: &Tenant, _: &AuditEvent) -> Result<()> { Err(unfinished()) }
            async fn get_tenant(&self, _: AccountId, _: TenantId) -> Result<Option<Tenant>> { Err(unfinished()) }
            async fn get_tenants(&self, _: AccountId, _: &[TenantId]) -> Result<Vec<Tenant>> { Err(unfinished()) }
            async fn list_tenants(&self, _: AccountId, _: &TenantFilter, _: &Page) -> Result<Vec<Tenant>> { Err(unfinished()) }
            async fn update_tenant(&self, _: &Tenant, _: &AuditEvent) -> Result<()> { Err(unfinished()) }
        }
        #[async_trait]
        impl KeyStore for $Store {
            async fn create_key(&self, _: &ApiKey, _: &AuditEvent) -> Result<()> { Err(unfinished()) }
            async fn get_key(&self, _: AccountId, _: KeyId) -> Result<Option<ApiKey>> { Err(unfinished()) }
            async fn find_key_by_hash(&self, _: &KeyHash) -> Result<Option<(ApiKey, Account)>> { Err(unfinished()) }
            async fn list_keys(&self, _: AccountId, _: &KeyFilter, _: &Page) -> Result<Vec<ApiKey>> { Err(unfinished()) }
            async fn update_key(&self, _: &ApiKey, _: &AuditEvent) -> Result<()> { Err(unfinished()) }
            async fn roll_key(&self, _: &ApiKey, _: &ApiKey, _: &AuditEvent) -> Result<()> { Err(unfinished()) }
            async fn delete_key(&self, _: AccountId, _: KeyId, _: &AuditEvent) -> Result<bool> { Err(unfinished()) }
            async fn record_key_usage(&self, _: &[KeyUsage]) -> Result<()> { Err(unfinished()) }
        }
        #[async_trait]
        impl AuditLog for $Store {
            async fn list_audit_events(&self, _: AccountId, _: &AuditFilter, _: &Page) -> Result<Vec<AuditEvent>> { Err(unfinished()) }
        }
        #[async_trait]
        impl ChangeFeed for $Store {
            async fn changes_since(&self, _: i64, _: u32) -> Result<Vec<Change>> { Err(unfinished()) }
            async fn latest_change(&self) -> Result<i64> { Err(unfinished()) }
            async fn purge_changes(&self, _: Timestamp) -> Result<u64> { Err(unfinished()) }
        }
        #[async_trait]
        impl Store for $Store {
            fn backend(&self) -> &'static str { $backend }
            async fn ping(&self) -> Result<()> {
                sqlx::query("SELECT 1").execute(&self.pool).await.map(drop).map_err(StoreError::Unavailable)
            }
            async fn migrate(&self) -> Result<()> { Ok(()) }
            async fn close(&self) { self.pool.close().await }
        }
    };
}

skeleton!(SqliteStore, "sqlite");
skeleton!(PgStore, "postgres");
