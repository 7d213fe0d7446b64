//! Credentials at rest: AES-256-GCM with a random 96-bit nonce, the organization and service ids
//! as associated data (a ciphertext cannot be moved to another row), and a key id in the envelope
//! so keys can rotate: the current key encrypts, every configured key decrypts.
//!
//! The `encryption_key` variable is either one base64 key (id `k1`) or a comma-separated list
//! `id:base64,…` whose first entry is current.
//! Uses `base::settings` (the `Secret` the key arrives in) only.

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use rand::RngCore;
use serde::{Deserialize, Serialize};
use subtle::ConstantTimeEq;
use uuid::Uuid;

use crate::base::settings::Secret;

const MAGIC: &[u8; 3] = b"GS1";

/// Why a key ring or a ciphertext was refused. Never carries key or plaintext bytes.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CryptoError {
    #[error("encryption_key is malformed: {0}")]
    BadKey(&'static str),
    #[error("ciphertext is malformed")]
    Malformed,
    #[error("ciphertext was written with key id {0}, which is not configured")]
    UnknownKey(String),
    #[error("decryption failed (wrong key or tampered data)")]
    Decrypt,
    #[error("encryption failed")]
    Encrypt,
}

/// The configured keys: the first encrypts, all decrypt.
pub struct Keyring {
    keys: Vec<(String, [u8; 32])>,
}

impl std::fmt::Debug for Keyring {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let ids: Vec<&str> = self.keys.iter().map(|(id, _)| id.as_str()).collect();
        f.debug_struct("Keyring").field("key_ids", &ids).finish()
    }
}

fn decode_key(b64: &str) -> Result<[u8; 32], CryptoError> {
    let bytes = STANDARD
        .decode(b64.trim())
        .map_err(|_| CryptoError::BadKey("not base64"))?;
    bytes
        .try_into()
        .map_err(|_| CryptoError::BadKey("a key must be 32 bytes"))
}

impl Keyring {
    pub fn parse(value: &Secret) -> Result<Keyring, CryptoError> {
        let v = value.expose().trim();
        let mut keys = Vec::new();
        if v.contains(':') {
            for part in v.split(',').map(str::trim).filter(|p| !p.is_empty()) {
                let (id, b64) = part
                    .split_once(':')
                    .ok_or(CryptoError::BadKey("expected id:base64"))?;
                if id.is_empty()
                    || id.len() > 32
                    || !id
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
                {
                    return Err(CryptoError::BadKey("key ids are 1-32 of [A-Za-z0-9_-]"));
                }
                if keys.iter().any(|(k, _)| k == id) {
                    return Err(CryptoError::BadKey("duplicate key id"));
                }
                keys.push((id.to_owned(), decode_key(b64)?));
            }
        } else {
            keys.push(("k1".to_owned(), decode_key(v)?));
        }
        if keys.is_empty() {
            return Err(CryptoError::BadKey("no key"));
        }
        Ok(Keyring { keys })
    }

    /// The id of the key new ciphertexts are written with.
    pub fn current_id(&self) -> &str {
        &self.keys[0].0
    }

    fn cipher(key: &[u8; 32]) -> Result<Aes256Gcm, CryptoError> {
        Aes256Gcm::new_from_slice(key).map_err(|_| CryptoError::BadKey("a key must be 32 bytes"))
    }

    pub fn encrypt(&self, plaintext: &[u8], aad: &[u8]) -> Result<Vec<u8>, CryptoError> {
        let (id, key) = &self.keys[0];
        let mut nonce = [0u8; 12];
        rand::rng().fill_bytes(&mut nonce);
        let ct = Self::cipher(key)?
            .encrypt(
                &Nonce::from(nonce),
                Payload {
                    msg: plaintext,
                    aad,
                },
            )
            .map_err(|_| CryptoError::Encrypt)?;
        let mut out = Vec::with_capacity(4 + id.len() + 12 + ct.len());
        out.extend_from_slice(MAGIC);
        out.push(id.len() as u8);
        out.extend_from_slice(id.as_bytes());
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&ct);
        Ok(out)
    }

    /// The key id a ciphertext was written with.
    pub fn key_id_of(envelope: &[u8]) -> Result<&str, CryptoError> {
        let rest = envelope.strip_prefix(MAGIC).ok_or(CryptoError::Malformed)?;
        let (&len, rest) = rest.split_first().ok_or(CryptoError::Malformed)?;
        let id = rest.get(..usize::from(len)).ok_or(CryptoError::Malformed)?;
        std::str::from_utf8(id).map_err(|_| CryptoError::Malformed)
    }

    pub fn decrypt(&self, envelope: &[u8], aad: &[u8]) -> Result<Vec<u8>, CryptoError> {
        let id = Self::key_id_of(envelope)?;
        let body = &envelope[MAGIC.len() + 1 + id.len()..];
        if body.len() < 12 + 16 {
            return Err(CryptoError::Malformed);
        }
        let (nonce, ct) = body.split_at(12);
        let nonce: [u8; 12] = nonce.try_into().map_err(|_| CryptoError::Malformed)?;
        let (_, key) = self
            .keys
            .iter()
            .find(|(k, _)| k == id)
            .ok_or_else(|| CryptoError::UnknownKey(id.to_owned()))?;
        Self::cipher(key)?
            .decrypt(&Nonce::from(nonce), Payload { msg: ct, aad })
            .map_err(|_| CryptoError::Decrypt)
    }
}

/// Associated data binding a service's credentials to its row.
pub fn service_aad(org: Uuid, service: Uuid) -> Vec<u8> {
    let mut aad = Vec::with_capacity(32);
    aad.extend_from_slice(org.as_bytes());
    aad.extend_from_slice(service.as_bytes());
    aad
}

/// A service's secrets, as encrypted in `device_services.credentials`.
#[derive(Default, Clone, Serialize, Deserialize)]
pub struct Credentials {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_key: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub webhook_secret: Option<String>,
    /// The previous webhook secret, still accepted during rotation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub webhook_secret_previous: Option<String>,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("api_key_set", &self.api_key.is_some())
            .field("webhook_secret_set", &self.webhook_secret.is_some())
            .field(
                "webhook_secret_previous_set",
                &self.webhook_secret_previous.is_some(),
            )
            .finish()
    }
}

impl Credentials {
    pub fn seal(&self, ring: &Keyring, org: Uuid, service: Uuid) -> Result<Vec<u8>, CryptoError> {
        let plain = serde_json::to_vec(self).map_err(|_| CryptoError::Encrypt)?;
        ring.encrypt(&plain, &service_aad(org, service))
    }

    pub fn open(
        ring: &Keyring,
        org: Uuid,
        service: Uuid,
        envelope: &[u8],
    ) -> Result<Credentials, CryptoError> {
        let plain = ring.decrypt(envelope, &service_aad(org, service))?;
        serde_json::from_slice(&plain).map_err(|_| CryptoError::Malformed)
    }

    /// The public view: whether each secret is set and its last 4 characters.
    pub fn summary(&self) -> serde_json::Value {
        fn last4(s: &Option<String>) -> serde_json::Value {
            match s {
                Some(v) => {
                    let chars: Vec<char> = v.chars().collect();
                    let tail: String = chars[chars.len().saturating_sub(4)..].iter().collect();
                    serde_json::Value::String(tail)
                }
                None => serde_json::Value::Null,
            }
        }
        serde_json::json!({
            "api_key_set": self.api_key.is_some(),
            "api_key_last4": last4(&self.api_key),
            "webhook_secret_set": self.webhook_secret.is_some(),
            "webhook_secret_last4": last4(&self.webhook_secret),
            "webhook_secret_previous_set": self.webhook_secret_previous.is_some(),
        })
    }
}

/// Constant-time comparison of a presented secret with the expected one.
pub fn secrets_equal(presented: &[u8], expected: &[u8]) -> bool {
    presented.ct_eq(expected).into()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(byte: u8) -> String {
        STANDARD.encode([byte; 32])
    }

    #[test]
    fn round_trip_and_binding_to_the_row() {
        let ring = Keyring::parse(&Secret::new(key(7))).unwrap();
        let (org, svc) = (Uuid::new_v4(), Uuid::new_v4());
        let creds = Credentials {
            api_key: Some("golioth-key-ABCD".into()),
            ..Default::default()
        };
        let sealed = creds.seal(&ring, org, svc).unwrap();
        assert!(!sealed.windows(4).any(|w| w == b"ABCD"));
        let opened = Credentials::open(&ring, org, svc, &sealed).unwrap();
        assert_eq!(opened.api_key.as_deref(), Some("golioth-key-ABCD"));
        // Moved to another service or organization: refused.
        assert_eq!(
            Credentials::open(&ring, org, Uuid::new_v4(), &sealed).unwrap_err(),
            CryptoError::Decrypt
        );
        // Tampered: refused.
        let mut bad = sealed.clone();
        let last = bad.len() - 1;
        bad[last] ^= 1;
        assert_eq!(
            Credentials::open(&ring, org, svc, &bad).unwrap_err(),
            CryptoError::Decrypt
        );
        assert!(!format!("{opened:?}").contains("ABCD"));
        assert_eq!(opened.summary()["api_key_last4"], "ABCD");
    }

    #[test]
    fn rotation_new_key_encrypts_old_key_still_decrypts() {
        let old = Keyring::parse(&Secret::new(format!("k1:{}", key(1)))).unwrap();
        let sealed = old.encrypt(b"secret", b"aad").unwrap();
        let rotated = Keyring::parse(&Secret::new(format!("k2:{},k1:{}", key(2), key(1)))).unwrap();
        assert_eq!(rotated.current_id(), "k2");
        assert_eq!(rotated.decrypt(&sealed, b"aad").unwrap(), b"secret");
        let resealed = rotated.encrypt(b"secret", b"aad").unwrap();
        assert_eq!(Keyring::key_id_of(&resealed).unwrap(), "k2");
        assert_eq!(
            old.decrypt(&resealed, b"aad").unwrap_err(),
            CryptoError::UnknownKey("k2".into())
        );
    }

    #[test]
    fn bad_keys_and_envelopes() {
        assert!(Keyring::parse(&Secret::new("short")).is_err());
        assert!(Keyring::parse(&Secret::new(format!("a:{},a:{}", key(1), key(2)))).is_err());
        let ring = Keyring::parse(&Secret::new(key(3))).unwrap();
        assert_eq!(
            ring.decrypt(b"nope", b"").unwrap_err(),
            CryptoError::Malformed
        );
        assert_eq!(
            ring.decrypt(b"GS1", b"").unwrap_err(),
            CryptoError::Malformed
        );
        assert!(!format!("{ring:?}").contains(&key(3)));
    }
}
