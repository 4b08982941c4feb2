//! API keys and the server's own secrets. Rare, small writes outside the hot path: they
//! go straight to the pool instead of through the run writer.

use sqlx::Row;

use super::{Engine, sql};
use crate::store::{ApiKeyInfo, KeyRecord, StoreError};

impl Engine {
    pub(in crate::store) async fn insert_key(
        &self,
        key: &ApiKeyInfo,
        secret_hash: &str,
    ) -> Result<(), StoreError> {
        sqlx::query(sql::INSERT_KEY)
            .bind(&key.id)
            .bind(&key.tenant)
            .bind(&key.scopes)
            .bind(key.name.as_deref())
            .bind(secret_hash)
            .bind(key.created_at)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    pub(in crate::store) async fn list_keys(&self) -> Result<Vec<ApiKeyInfo>, StoreError> {
        let rows = sqlx::query(sql::LIST_KEYS).fetch_all(&self.pool).await?;
        rows.iter()
            .map(|r| {
                Ok(ApiKeyInfo {
                    id: r.try_get("id")?,
                    tenant: r.try_get("tenant")?,
                    scopes: r.try_get("scopes")?,
                    name: r.try_get("name")?,
                    created_at: r.try_get("created_at")?,
                    revoked_at: r.try_get("revoked_at")?,
                })
            })
            .collect()
    }

    /// Whether a live key with this id was revoked now.
    pub(in crate::store) async fn revoke_key(
        &self,
        id: &str,
        now: i64,
    ) -> Result<bool, StoreError> {
        let done = sqlx::query(sql::REVOKE_KEY)
            .bind(id)
            .bind(now)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected() > 0)
    }

    pub(in crate::store) async fn find_key(
        &self,
        id: &str,
    ) -> Result<Option<KeyRecord>, StoreError> {
        let row = sqlx::query(sql::FIND_API_KEY)
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        row.map(|r| {
            Ok(KeyRecord {
                tenant: r.try_get("tenant")?,
                scopes: r.try_get("scopes")?,
                secret_hash: r.try_get("secret_hash")?,
                revoked: r.try_get::<Option<i64>, _>("revoked_at")?.is_some(),
            })
        })
        .transpose()
    }

    pub(in crate::store) async fn count_keys(&self) -> Result<u64, StoreError> {
        let n: i64 = sqlx::query_scalar(sql::COUNT_KEYS)
            .fetch_one(&self.pool)
            .await?;
        Ok(n as u64)
    }

    /// The secret named `name`; the first process to ask stores `candidate` as it, and
    /// every process then reads the same value.
    pub(in crate::store) async fn server_secret(
        &self,
        name: &str,
        candidate: &str,
    ) -> Result<String, StoreError> {
        sqlx::query(sql::INSERT_SECRET)
            .bind(name)
            .bind(candidate)
            .execute(&self.pool)
            .await?;
        Ok(sqlx::query_scalar(sql::GET_SECRET)
            .bind(name)
            .fetch_one(&self.pool)
            .await?)
    }
}
