//! Token keys of a stack: a signing key file and the JWKS the gateways verify with.

use std::path::{Path, PathBuf};
use std::time::Duration;

use threadspace_protocol::token::{write_key_set, Identity, KeyFileError, SigningKey, TokenRequest};

/// Issuer the local stack uses.
pub const ISSUER: &str = "threadspace-local";
/// Audience the gateways require.
pub const AUDIENCE: &str = "threadspace-gateway";

/// A stack's keys on disk.
#[derive(Debug)]
pub struct Keys {
    pub jwks: PathBuf,
    pub signing_path: PathBuf,
    pub signing: SigningKey,
}

impl Keys {
    /// Loads `dir/signing-key.json` and `dir/jwks.json`, creating them on first use.
    pub fn load_or_create(dir: &Path) -> Result<Self, KeyFileError> {
        std::fs::create_dir_all(dir)
            .map_err(|source| KeyFileError::Write { path: dir.display().to_string(), source })?;
        let signing_path = dir.join("signing-key.json");
        let jwks = dir.join("jwks.json");
        let signing = if signing_path.exists() {
            SigningKey::load(&signing_path)?
        } else {
            let key = SigningKey::generate(format!("local-{}", rand::random::<u32>()));
            key.write(&signing_path)?;
            key
        };
        if !jwks.exists() {
            write_key_set(&jwks, &[&signing])?;
        }
        Ok(Self { jwks, signing_path, signing })
    }

    /// Rotation, step 1: a new key, published in the JWKS beside the current one but not used
    /// yet. Verifiers re-read the JWKS within 5 s; then [`Keys::switch`].
    pub fn publish_next(&self) -> Result<SigningKey, KeyFileError> {
        let next = SigningKey::generate(format!("local-{}", rand::random::<u32>()));
        write_key_set(&self.jwks, &[&self.signing, &next])?;
        Ok(next)
    }

    /// Rotation, step 2: mint with `next` from now on (the api service re-reads the file
    /// within 5 s). Tokens of the old key stay valid while the JWKS still holds it.
    pub fn switch(&mut self, next: SigningKey) -> Result<(), KeyFileError> {
        next.write(&self.signing_path)?;
        self.signing = next;
        Ok(())
    }

    /// Rotation, step 3, once every token of the old key expired: only the current key stays
    /// in the JWKS.
    pub fn retire_others(&self) -> Result<(), KeyFileError> {
        write_key_set(&self.jwks, &[&self.signing])
    }

    /// A token for `identity`, valid for `ttl`.
    pub fn token(&self, identity: Identity, ttl: Duration) -> String {
        self.signing.mint(TokenRequest { identity, issuer: ISSUER, audience: AUDIENCE, ttl })
    }
}
