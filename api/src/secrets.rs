//! Secrets: random link and refresh tokens (only their SHA-256 is stored), and passwords
//! hashed with argon2id off the async runtime (docs/accounts.md, "Passwords").

use std::sync::Arc;

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::{Algorithm, Argon2, Params, Version};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use sha2::{Digest as _, Sha256};
use tokio::sync::Semaphore;

/// argon2id parameters: 19 MiB of memory, 2 passes, 1 lane — OWASP's recommended minimum
/// (docs/accounts.md). About 25 ms per hash on one core of the reference machine.
const MEMORY_KIB: u32 = 19 * 1024;
const PASSES: u32 = 2;
const LANES: u32 = 1;

/// Shortest and longest accepted password, in characters.
pub(crate) const PASSWORD_CHARS: std::ops::RangeInclusive<usize> = 8..=256;

/// A fresh 256-bit secret, URL-safe (links, refresh tokens).
pub(crate) fn new_secret() -> String {
    URL_SAFE_NO_PAD.encode(rand::random::<[u8; 32]>())
}

/// What the database stores of a secret.
pub(crate) fn digest(secret: &str) -> Vec<u8> {
    Sha256::digest(secret.as_bytes()).to_vec()
}

fn argon2() -> Argon2<'static> {
    let params = Params::new(MEMORY_KIB, PASSES, LANES, None).expect("argon2 parameters are valid");
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
}

/// Hashes and verifies passwords on the blocking pool, at most `concurrency` at a time, so a
/// login burst queues instead of starving the runtime or the memory.
#[derive(Clone)]
pub(crate) struct Passwords {
    permits: Arc<Semaphore>,
    /// A hash of a random password: verified against when the account does not exist, so a
    /// wrong email costs what a wrong password does (no account-existence timing oracle).
    decoy: Arc<String>,
}

/// The hashing task panicked or the pool is shut down.
#[derive(Debug, thiserror::Error)]
#[error("password hashing failed")]
pub(crate) struct HashError;

impl Passwords {
    pub(crate) fn new(concurrency: usize) -> Self {
        let salt = SaltString::encode_b64(&rand::random::<[u8; 16]>()).expect("16 bytes is a valid salt");
        let decoy =
            argon2().hash_password(new_secret().as_bytes(), &salt).expect("argon2 hashes").to_string();
        Self { permits: Arc::new(Semaphore::new(concurrency.max(1))), decoy: Arc::new(decoy) }
    }

    /// The PHC string of `password`.
    pub(crate) async fn hash(&self, password: String) -> Result<String, HashError> {
        let _permit = self.permits.acquire().await.map_err(|_| HashError)?;
        tokio::task::spawn_blocking(move || {
            let salt = SaltString::encode_b64(&rand::random::<[u8; 16]>()).expect("16 bytes is a valid salt");
            argon2().hash_password(password.as_bytes(), &salt).map(|h| h.to_string()).map_err(|_| HashError)
        })
        .await
        .map_err(|_| HashError)?
    }

    /// Whether `password` matches `stored` (`None`: no such account — still costs one hash).
    pub(crate) async fn verify(&self, password: String, stored: Option<String>) -> Result<bool, HashError> {
        let _permit = self.permits.acquire().await.map_err(|_| HashError)?;
        let exists = stored.is_some();
        let phc = stored.unwrap_or_else(|| self.decoy.as_ref().clone());
        let matched = tokio::task::spawn_blocking(move || {
            PasswordHash::new(&phc)
                .is_ok_and(|hash| argon2().verify_password(password.as_bytes(), &hash).is_ok())
        })
        .await
        .map_err(|_| HashError)?;
        Ok(exists && matched)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_password_verifies_against_its_own_hash_only() {
        let passwords = Passwords::new(1);
        let hash = passwords.hash("correct horse".into()).await.expect("hashes");
        assert!(hash.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"), "{hash}");
        assert!(passwords.verify("correct horse".into(), Some(hash.clone())).await.expect("verifies"));
        assert!(!passwords.verify("wrong horse".into(), Some(hash)).await.expect("verifies"));
        assert!(!passwords.verify("correct horse".into(), None).await.expect("verifies"));
    }

    #[test]
    fn secrets_are_random_and_stored_as_digests() {
        let (a, b) = (new_secret(), new_secret());
        assert_ne!(a, b);
        assert_eq!(a.len(), 43);
        assert_eq!(digest(&a).len(), 32);
        assert_ne!(digest(&a), digest(&b));
    }
}
