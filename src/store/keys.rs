//! [`Store`]'s API keys and the secrets every process of a database shares.

use super::*;

impl Store {
    /// Stores a new API key (its secret only as `secret_hash`).
    pub async fn insert_key(&self, key: &ApiKeyInfo, secret_hash: &str) -> Result<(), StoreError> {
        on_engine!(self, e => e.insert_key(key, secret_hash).await)
    }
    /// Every API key, oldest first, revoked ones included.
    pub async fn list_keys(&self) -> Result<Vec<ApiKeyInfo>, StoreError> {
        on_engine!(self, e => e.list_keys().await)
    }
    /// Revokes a live key; `false` when no live key has this id.
    pub async fn revoke_key(&self, id: &str) -> Result<bool, StoreError> {
        let now = self.now_ms();
        on_engine!(self, e => e.revoke_key(id, now).await)
    }
    /// The key with this id, revoked or not.
    pub async fn find_key(&self, id: &str) -> Result<Option<KeyRecord>, StoreError> {
        on_engine!(self, e => e.find_key(id).await)
    }
    /// How many keys were ever made, revoked ones included.
    pub async fn count_keys(&self) -> Result<u64, StoreError> {
        on_engine!(self, e => e.count_keys().await)
    }
    /// A secret every process of this database shares, made by whichever asks first
    /// (`candidate` is kept if none exists yet).
    pub async fn server_secret(&self, name: &str, candidate: &str) -> Result<String, StoreError> {
        on_engine!(self, e => e.server_secret(name, candidate).await)
    }
}
