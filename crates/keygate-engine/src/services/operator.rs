//! What only the operator's command line does. It holds the database already, so it may name
//! any account's key by id alone; requests never come here (over HTTP every object is looked up
//! within the caller's own account, SPEC §8).

use keygate_domain::{AccountId, KeyId};

use super::Principal;
use crate::error::Error;
use crate::keygate::Keygate;

impl Keygate {
    /// The command line acting for the account that holds key `id`: pass it to `get_key`,
    /// `revoke_key`, `roll_key` or `delete_key`, whose audit events then name that account.
    /// With `within`, the key must be that account's (a check, not a search).
    ///
    /// # Errors
    /// 404 `not_found` when no account holds a key with this id, or `within` is another account.
    pub async fn cli_principal_for_key(&self, id: &str, within: Option<AccountId>) -> Result<Principal, Error> {
        let not_found = || Error::NotFound("API key");
        let id: KeyId = id.trim().parse().map_err(|_| not_found())?;
        let key = self.store.find_key_by_id(id).await?.ok_or_else(not_found)?;
        if within.is_some_and(|account| account != key.account_id) {
            return Err(not_found());
        }
        // A key's account exists (a foreign key); `None` would be corrupt data, not a miss.
        let account = self
            .store
            .get_account(key.account_id)
            .await?
            .ok_or_else(|| Error::Internal(format!("key {id} has no account")))?;
        Ok(Principal::cli(account))
    }
}
