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

    /// A token for `identity`, valid for `ttl`.
    pub fn token(&self, identity: Identity, ttl: Duration) -> String {
        self.signing.mint(TokenRequest { identity, issuer: ISSUER, audience: AUDIENCE, ttl })
    }
}
