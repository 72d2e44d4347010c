//! A deployment's secrets, encrypted at rest with XChaCha20-Poly1305 under a key from
//! configuration. Each value is sealed with its deployment and name as associated data, so a
//! ciphertext copied to another row does not open. Values leave this module only as
//! `SecretString`, whose `Debug` prints nothing of them.
//!
//! A deployment's secrets are erased when it is deleted.
//!
//! Rotation: the new key becomes the current one and the old one is kept as a previous key;
//! `reseal_secrets` seals every row again under the current key, after which the previous
//! key may be dropped.

use std::collections::BTreeMap;
use std::sync::Arc;

use chacha20poly1305::aead::rand_core::RngCore;
use chacha20poly1305::aead::{Aead, AeadCore, KeyInit, OsRng, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use secrecy::{ExposeSecret, SecretString};
use serde::Serialize;
use sha2::{Digest, Sha256};
use sqlx::{Any, Row, Transaction};

use crate::{now, timed, Actor, Result, Store, StoreError};

/// Bytes of a key; configured as 64 hex digits (`openssl rand -hex 32`).
pub const KEY_BYTES: usize = 32;

/// One key: its id (a digest prefix, safe to show) and its cipher.
struct SealingKey {
    id: String,
    cipher: XChaCha20Poly1305,
}

impl SealingKey {
    fn new(bytes: &[u8; KEY_BYTES]) -> Self {
        let digest = Sha256::digest(bytes);
        Self {
            id: hex::encode(&digest[..4]),
            cipher: XChaCha20Poly1305::new(bytes.into()),
        }
    }
}

/// The keys secrets are sealed with: the current one, and the previous ones still opened.
pub struct SecretKeys {
    current: SealingKey,
    previous: Vec<SealingKey>,
}

impl std::fmt::Debug for SecretKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let previous: Vec<&str> = self.previous.iter().map(|key| key.id.as_str()).collect();
        f.debug_struct("SecretKeys")
            .field("current", &self.current.id)
            .field("previous", &previous)
            .finish()
    }
}

impl SecretKeys {
    /// Keys from their hex text; the error says which one is wrong, never what it holds.
    pub fn parse(current: &str, previous: &[&str]) -> Result<Self, String> {
        let read = |text: &str, which: &str| -> Result<SealingKey, String> {
            let bytes = hex::decode(text.trim()).map_err(|_| format!("{which} is not hex"))?;
            let bytes: [u8; KEY_BYTES] = bytes
                .try_into()
                .map_err(|_| format!("{which} must be {KEY_BYTES} bytes (64 hex digits)"))?;
            Ok(SealingKey::new(&bytes))
        };
        Ok(Self {
            current: read(current, "the key")?,
            previous: (previous.iter().enumerate())
                .map(|(index, text)| read(text, &format!("previous key {}", index + 1)))
                .collect::<Result<_, _>>()?,
        })
    }

    /// A new random key as hex text, as `ORCH_SECRET_KEY` takes it.
    pub fn random_hex() -> String {
        let mut bytes = [0u8; KEY_BYTES];
        OsRng.fill_bytes(&mut bytes);
        hex::encode(bytes)
    }

    /// The id of the key new secrets are sealed with.
    pub fn current_id(&self) -> &str {
        &self.current.id
    }

    fn seal(&self, deployment_id: &str, name: &str, value: &SecretString) -> Sealed {
        let nonce = XChaCha20Poly1305::generate_nonce(&mut OsRng);
        let aad = associated_data(deployment_id, name);
        let payload = Payload {
            msg: value.expose_secret().as_bytes(),
            aad: aad.as_bytes(),
        };
        let ciphertext = self
            .current
            .cipher
            .encrypt(&nonce, payload)
            .expect("sealing a value of bounded size cannot fail");
        Sealed {
            key_id: self.current.id.clone(),
            nonce: hex::encode(nonce),
            ciphertext: hex::encode(ciphertext),
        }
    }

    fn open(&self, deployment_id: &str, name: &str, sealed: &Sealed) -> Result<SecretString> {
        let unopenable = || {
            StoreError::Secret(format!(
                "secret '{name}' of deployment {deployment_id} does not open with the configured keys (it was sealed with key {})",
                sealed.key_id
            ))
        };
        let key = std::iter::once(&self.current)
            .chain(&self.previous)
            .find(|key| key.id == sealed.key_id)
            .ok_or_else(unopenable)?;
        let nonce = hex::decode(&sealed.nonce).map_err(|_| StoreError::Corrupt("deployment_secrets.nonce"))?;
        if nonce.len() != 24 {
            return Err(StoreError::Corrupt("deployment_secrets.nonce"));
        }
        let ciphertext =
            hex::decode(&sealed.ciphertext).map_err(|_| StoreError::Corrupt("deployment_secrets.ciphertext"))?;
        let aad = associated_data(deployment_id, name);
        let payload = Payload {
            msg: &ciphertext,
            aad: aad.as_bytes(),
        };
        let plain = key
            .cipher
            .decrypt(XNonce::from_slice(&nonce), payload)
            .map_err(|_| unopenable())?;
        String::from_utf8(plain)
            .map(SecretString::from)
            .map_err(|_| StoreError::Corrupt("deployment_secrets.ciphertext"))
    }
}

fn associated_data(deployment_id: &str, name: &str) -> String {
    format!("orch/{deployment_id}/{name}")
}

struct Sealed {
    key_id: String,
    nonce: String,
    ciphertext: String,
}

/// Where a secret's value came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum SecretSource {
    Generated,
    Supplied,
}

impl SecretSource {
    fn as_str(self) -> &'static str {
        match self {
            Self::Generated => "generated",
            Self::Supplied => "supplied",
        }
    }

    fn parse(text: &str) -> Result<Self> {
        match text {
            "generated" => Ok(Self::Generated),
            "supplied" => Ok(Self::Supplied),
            _ => Err(StoreError::Corrupt("deployment_secrets.source")),
        }
    }
}

/// A secret to store with a new deployment (its `Debug` shows no value).
#[derive(Debug, Clone)]
pub struct NewSecret {
    pub name: String,
    pub source: SecretSource,
    pub value: SecretString,
}

/// What may be shown of a secret: everything but its value.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SecretInfo {
    pub name: String,
    pub source: SecretSource,
    pub created_at: String,
    pub revealed_at: Option<String>,
}

/// A random value of `length` letters and digits, from the operating system's generator.
pub fn generate_value(length: u32) -> SecretString {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    // Bytes at or above the largest multiple of 62 are dropped, so that every character is
    // equally likely.
    let limit = (256 / ALPHABET.len() * ALPHABET.len()) as u8;
    let mut value = String::with_capacity(length as usize);
    let mut buffer = [0u8; 64];
    while value.len() < length as usize {
        OsRng.fill_bytes(&mut buffer);
        let usable = buffer.iter().filter(|byte| **byte < limit);
        for byte in usable.take(length as usize - value.len()) {
            value.push(char::from(ALPHABET[usize::from(*byte) % ALPHABET.len()]));
        }
    }
    SecretString::from(value)
}

const SECRET_COLUMNS: &str = "name, source, key_id, nonce, ciphertext, created_at, revealed_at";

impl Store {
    /// The store, able to seal and open secrets with `keys` (none: secrets are refused).
    pub fn with_secret_keys(mut self, keys: Option<Arc<SecretKeys>>) -> Self {
        self.keys = keys;
        self
    }

    fn keys(&self) -> Result<&SecretKeys> {
        self.keys.as_deref().ok_or_else(|| {
            StoreError::Secret("no secret key is configured (ORCH_SECRET_KEY): secrets cannot be stored or read".into())
        })
    }

    /// Seals and inserts `secrets` within a deployment's creation.
    pub(crate) async fn insert_secrets(
        &self,
        tx: &mut Transaction<'static, Any>,
        deployment_id: &str,
        secrets: &[NewSecret],
        at: &str,
    ) -> Result<()> {
        if secrets.is_empty() {
            return Ok(());
        }
        let keys = self.keys()?;
        for secret in secrets {
            let sealed = keys.seal(deployment_id, &secret.name, &secret.value);
            let query = sqlx::query(
                "INSERT INTO deployment_secrets (deployment_id, name, source, key_id, nonce, ciphertext, created_at) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7)",
            )
            .bind(deployment_id)
            .bind(&secret.name)
            .bind(secret.source.as_str())
            .bind(&sealed.key_id)
            .bind(&sealed.nonce)
            .bind(&sealed.ciphertext)
            .bind(at)
            .execute(&mut **tx);
            timed("secrets.insert", query).await?;
        }
        Ok(())
    }

    /// Adds the secrets a changed template declares that the deployment lacks; those it has
    /// keep their values.
    #[tracing::instrument(skip(self, secrets))]
    pub async fn add_missing_secrets(&self, deployment_id: &str, secrets: &[NewSecret]) -> Result<()> {
        let known = self.secrets_of(deployment_id).await?;
        let missing: Vec<NewSecret> = (secrets.iter())
            .filter(|secret| !known.iter().any(|info| info.name == secret.name))
            .cloned()
            .collect();
        if missing.is_empty() {
            return Ok(());
        }
        let mut tx = self.begin().await?;
        self.insert_secrets(&mut tx, deployment_id, &missing, &now()).await?;
        tx.commit().await?;
        Ok(())
    }

    /// What may be shown of the deployment's secrets.
    #[tracing::instrument(skip(self))]
    pub async fn secrets_of(&self, deployment_id: &str) -> Result<Vec<SecretInfo>> {
        let rows = self.secret_rows(deployment_id).await?;
        rows.iter()
            .map(|row| {
                Ok(SecretInfo {
                    name: row.try_get("name")?,
                    source: SecretSource::parse(&row.try_get::<String, _>("source")?)?,
                    created_at: row.try_get("created_at")?,
                    revealed_at: row.try_get("revealed_at")?,
                })
            })
            .collect()
    }

    /// The deployment's secrets, opened, by name: for the provider that mounts them.
    #[tracing::instrument(skip(self))]
    pub async fn secret_values(&self, deployment_id: &str) -> Result<BTreeMap<String, SecretString>> {
        let rows = self.secret_rows(deployment_id).await?;
        if rows.is_empty() {
            return Ok(BTreeMap::new());
        }
        let keys = self.keys()?;
        rows.iter()
            .map(|row| {
                let name: String = row.try_get("name")?;
                let value = keys.open(deployment_id, &name, &sealed_of(row)?)?;
                Ok((name, value))
            })
            .collect()
    }

    async fn secret_rows(&self, deployment_id: &str) -> Result<Vec<sqlx::any::AnyRow>> {
        let sql = format!("SELECT {SECRET_COLUMNS} FROM deployment_secrets WHERE deployment_id = $1 ORDER BY name");
        let rows = timed(
            "secrets.list",
            sqlx::query(&sql).bind(deployment_id).fetch_all(self.pool()),
        )
        .await?;
        Ok(rows)
    }

    /// A generated secret's value, given once: the first call marks it revealed and records
    /// who asked (`secret.revealed`); later calls are refused, as are supplied secrets (the
    /// caller has them).
    #[tracing::instrument(skip(self, actor))]
    pub async fn reveal_secret(&self, deployment_id: &str, name: &str, actor: &Actor) -> Result<SecretString> {
        let keys = self.keys()?;
        let mut tx = self.begin().await?;
        let at = now();
        let claim = sqlx::query(
            "UPDATE deployment_secrets SET revealed_at = $3 \
             WHERE deployment_id = $1 AND name = $2 AND source = 'generated' AND revealed_at IS NULL",
        )
        .bind(deployment_id)
        .bind(name)
        .bind(&at)
        .execute(&mut *tx);
        if timed("secrets.reveal", claim).await?.rows_affected() == 0 {
            drop(tx);
            return Err(self.why_not_revealed(deployment_id, name).await);
        }
        let sql = format!("SELECT {SECRET_COLUMNS} FROM deployment_secrets WHERE deployment_id = $1 AND name = $2");
        let row = timed(
            "secrets.get",
            sqlx::query(&sql).bind(deployment_id).bind(name).fetch_one(&mut *tx),
        )
        .await?;
        let value = keys.open(deployment_id, name, &sealed_of(&row)?)?;
        let detail = serde_json::json!({"secret": name});
        crate::deployments::insert_event(&mut tx, deployment_id, "secret.revealed", actor, detail, &at).await?;
        tx.commit().await?;
        Ok(value)
    }

    async fn why_not_revealed(&self, deployment_id: &str, name: &str) -> StoreError {
        let known = match self.secrets_of(deployment_id).await {
            Ok(known) => known,
            Err(error) => return error,
        };
        match known.into_iter().find(|info| info.name == name) {
            None => StoreError::NotFound(format!("secret '{name}'")),
            Some(info) if info.source == SecretSource::Supplied => StoreError::Conflict(format!(
                "secret '{name}' was supplied by the caller; orch does not give it back"
            )),
            Some(info) => StoreError::Conflict(format!(
                "secret '{name}' was revealed at {}; it is shown only once",
                info.revealed_at.unwrap_or_default()
            )),
        }
    }

    /// Seals every secret not sealed with the current key again under it (after a key
    /// rotation); returns how many were.
    #[tracing::instrument(skip(self))]
    pub async fn reseal_secrets(&self) -> Result<usize> {
        let keys = self.keys()?;
        let rows = timed(
            "secrets.stale",
            sqlx::query(&format!(
                "SELECT deployment_id, {SECRET_COLUMNS} FROM deployment_secrets WHERE key_id <> $1"
            ))
            .bind(keys.current_id())
            .fetch_all(self.pool()),
        )
        .await?;
        for row in &rows {
            let deployment_id: String = row.try_get("deployment_id")?;
            let name: String = row.try_get("name")?;
            let value = keys.open(&deployment_id, &name, &sealed_of(row)?)?;
            let sealed = keys.seal(&deployment_id, &name, &value);
            let query = sqlx::query(
                "UPDATE deployment_secrets SET key_id = $3, nonce = $4, ciphertext = $5 WHERE deployment_id = $1 AND name = $2",
            )
            .bind(&deployment_id)
            .bind(&name)
            .bind(&sealed.key_id)
            .bind(&sealed.nonce)
            .bind(&sealed.ciphertext)
            .execute(self.pool());
            timed("secrets.reseal", query).await?;
        }
        Ok(rows.len())
    }
}

/// Erases a deployment's secrets, within the transaction that marks it deleted: nothing of a
/// deleted deployment needs them, and a sealed value kept is a value that can leak.
pub(crate) async fn erase_secrets(tx: &mut Transaction<'static, Any>, deployment_id: &str) -> Result<()> {
    let query = sqlx::query("DELETE FROM deployment_secrets WHERE deployment_id = $1")
        .bind(deployment_id)
        .execute(&mut **tx);
    timed("secrets.erase", query).await?;
    Ok(())
}

fn sealed_of(row: &sqlx::any::AnyRow) -> Result<Sealed> {
    Ok(Sealed {
        key_id: row.try_get("key_id")?,
        nonce: row.try_get("nonce")?,
        ciphertext: row.try_get("ciphertext")?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f";
    const OTHER: &str = "ff0102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f";

    #[test]
    fn a_sealed_value_opens_only_in_its_own_row_and_with_a_known_key() {
        let keys = SecretKeys::parse(KEY, &[]).unwrap();
        let value = SecretString::from("hunter2");
        let sealed = keys.seal("d1", "db", &value);
        assert!(!sealed.ciphertext.contains(&hex::encode("hunter2")));
        assert_eq!(keys.open("d1", "db", &sealed).unwrap().expose_secret(), "hunter2");
        assert!(matches!(keys.open("d2", "db", &sealed), Err(StoreError::Secret(_))));
        assert!(matches!(keys.open("d1", "other", &sealed), Err(StoreError::Secret(_))));
        let rotated = SecretKeys::parse(OTHER, &[KEY]).unwrap();
        assert_eq!(rotated.open("d1", "db", &sealed).unwrap().expose_secret(), "hunter2");
        let without = SecretKeys::parse(OTHER, &[]).unwrap();
        let error = without.open("d1", "db", &sealed).unwrap_err().to_string();
        assert!(
            error.contains(keys.current_id()) && !error.contains("hunter2"),
            "{error}"
        );
    }

    #[test]
    fn keys_are_checked_without_showing_them() {
        let error = SecretKeys::parse("abcd", &[]).unwrap_err();
        assert!(error.contains("64 hex digits") && !error.contains("abcd"), "{error}");
        assert!(SecretKeys::parse(KEY, &["zz"]).unwrap_err().contains("previous key 1"));
        assert!(!format!("{:?}", SecretKeys::parse(KEY, &[]).unwrap()).contains(KEY));
    }

    #[test]
    fn generated_values_have_their_length_and_differ() {
        let (a, b) = (generate_value(32), generate_value(32));
        assert_eq!(a.expose_secret().len(), 32);
        assert!(a.expose_secret().chars().all(|c| c.is_ascii_alphanumeric()));
        assert_ne!(a.expose_secret(), b.expose_secret());
    }
}
