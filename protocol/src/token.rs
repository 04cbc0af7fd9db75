//! Access tokens: short-lived Ed25519-signed JWTs (`alg` pinned to `EdDSA`, `kid` required).
//!
//! Verifiers load a JWKS file (`KeySet`) holding one or more public keys, so keys rotate by
//! adding the new key to the set, minting with it, and removing the old one after the longest
//! token lifetime. Minting tools load a `SigningKey` file (kid + PKCS#8 PEM). Password login,
//! when it comes, will mint through the same [`SigningKey::mint`].

use std::collections::HashMap;
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use ed25519_dalek::pkcs8::{DecodePrivateKey, EncodePrivateKey};
use jsonwebtoken::jwk::{
    AlgorithmParameters, CommonParameters, EllipticCurve, Jwk, JwkSet, KeyAlgorithm, OctetKeyPairParameters,
    OctetKeyPairType, PublicKeyUse,
};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

use crate::ids::{OrgId, UserId};

/// Claims of a ThreadSpace access token.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    pub iss: String,
    pub aud: String,
    /// The user id, as a decimal string (JWT convention).
    pub sub: String,
    pub org: OrgId,
    pub iat: u64,
    pub exp: u64,
    /// The login session (refresh family) the token belongs to. Absent on operator-minted
    /// tokens (`threadspace-dev token`), which the user's `tokens_not_before` still bounds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sid: Option<i64>,
}

/// Who a verified token speaks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Identity {
    pub user: UserId,
    pub org: OrgId,
    /// The login session, when the token came from a login (`sid`).
    #[serde(default)]
    pub session: Option<i64>,
    /// When the token was issued (seconds since the Unix epoch).
    #[serde(default)]
    pub issued_at: u64,
}

impl Identity {
    /// An identity without a login session (operator-minted tokens, tests).
    pub fn new(user: UserId, org: OrgId) -> Self {
        Self { user, org, session: None, issued_at: 0 }
    }
}

/// Why a token was rejected. The variants are what a caller may want to log or count; the
/// client only ever learns `auth_failed`.
#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    #[error("token header is unreadable")]
    Header(#[source] jsonwebtoken::errors::Error),
    #[error("token algorithm is not EdDSA")]
    Algorithm,
    #[error("token has no kid")]
    MissingKid,
    #[error("token kid {kid:?} is not in the key set")]
    UnknownKid { kid: String },
    #[error("token rejected")]
    Invalid(#[source] jsonwebtoken::errors::Error),
    #[error("token subject is not a user id")]
    Subject,
}

/// Errors loading or writing key files.
#[derive(Debug, thiserror::Error)]
pub enum KeyFileError {
    #[error("cannot read key file {path}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot write key file {path}")]
    Write {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("key file {path} is not valid")]
    Parse {
        path: String,
        #[source]
        source: serde_json::Error,
    },
    #[error("key {kid:?} in {path} is not an Ed25519 public key")]
    NotEd25519 { path: String, kid: String },
    #[error("key file {path} has a key without kid")]
    MissingKid { path: String },
    #[error("key file {path} holds no keys")]
    Empty { path: String },
    #[error("signing key in {path} is not a valid Ed25519 PKCS#8 key")]
    BadPrivateKey {
        path: String,
        #[source]
        source: jsonwebtoken::errors::Error,
    },
}

/// Public keys a verifier accepts, with the expected issuer and audience.
#[derive(Clone)]
pub struct KeySet {
    keys: HashMap<String, DecodingKey>,
    validation: Validation,
}

impl std::fmt::Debug for KeySet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeySet").field("kids", &self.keys.keys().collect::<Vec<_>>()).finish()
    }
}

impl KeySet {
    /// Loads a JWKS file of Ed25519 (`OKP`) keys.
    pub fn load(path: &Path, issuer: &str, audience: &str) -> Result<Self, KeyFileError> {
        let display = path.display().to_string();
        let text =
            std::fs::read(path).map_err(|source| KeyFileError::Read { path: display.clone(), source })?;
        Self::parse(&text, &display, issuer, audience)
    }

    /// Parses JWKS text; `origin` names where it came from in errors (a path, usually). Public
    /// so the fuzz harness (`fuzz/src/harness.rs`) can feed it bytes without a file.
    pub fn parse(text: &[u8], origin: &str, issuer: &str, audience: &str) -> Result<Self, KeyFileError> {
        let set: JwkSet = serde_json::from_slice(text)
            .map_err(|source| KeyFileError::Parse { path: origin.to_owned(), source })?;
        Self::from_jwks(&set, issuer, audience, origin)
    }

    fn from_jwks(set: &JwkSet, issuer: &str, audience: &str, path: &str) -> Result<Self, KeyFileError> {
        let mut keys = HashMap::new();
        for jwk in &set.keys {
            let kid = jwk
                .common
                .key_id
                .clone()
                .ok_or_else(|| KeyFileError::MissingKid { path: path.to_owned() })?;
            let AlgorithmParameters::OctetKeyPair(okp) = &jwk.algorithm else {
                return Err(KeyFileError::NotEd25519 { path: path.to_owned(), kid });
            };
            if okp.curve != EllipticCurve::Ed25519 {
                return Err(KeyFileError::NotEd25519 { path: path.to_owned(), kid });
            }
            // jsonwebtoken takes any `x` here and, at verify time, panics on one shorter than
            // 32 bytes and cuts a longer one: check it is a usable Ed25519 public key now.
            let Some(public) = ed25519_public_key(&okp.x) else {
                return Err(KeyFileError::NotEd25519 { path: path.to_owned(), kid });
            };
            keys.insert(kid, DecodingKey::from_ed_der(&public));
        }
        if keys.is_empty() {
            return Err(KeyFileError::Empty { path: path.to_owned() });
        }
        let mut validation = Validation::new(Algorithm::EdDSA);
        validation.set_issuer(&[issuer]);
        validation.set_audience(&[audience]);
        validation.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
        validation.leeway = 30;
        Ok(Self { keys, validation })
    }

    /// Whether the set holds the key `kid`.
    pub fn contains(&self, kid: &str) -> bool {
        self.keys.contains_key(kid)
    }

    /// Verifies signature, algorithm, `kid`, `iss`, `aud` and `exp`.
    pub fn verify(&self, token: &str) -> Result<Identity, VerifyError> {
        let header = jsonwebtoken::decode_header(token).map_err(VerifyError::Header)?;
        if header.alg != Algorithm::EdDSA {
            return Err(VerifyError::Algorithm);
        }
        let kid = header.kid.ok_or(VerifyError::MissingKid)?;
        let key = self.keys.get(&kid).ok_or(VerifyError::UnknownKid { kid })?;
        let data =
            jsonwebtoken::decode::<Claims>(token, key, &self.validation).map_err(VerifyError::Invalid)?;
        let user = data.claims.sub.parse::<i64>().map_err(|_| VerifyError::Subject)?;
        if user <= 0 {
            return Err(VerifyError::Subject);
        }
        Ok(Identity {
            user: UserId(user),
            org: data.claims.org,
            session: data.claims.sid,
            issued_at: data.claims.iat,
        })
    }
}

/// The 32 bytes of a JWK's `x` if it is an Ed25519 public key: base64url, 32 bytes, a point on
/// the curve, and not of small order (a weak key lets anyone forge signatures).
fn ed25519_public_key(x: &str) -> Option<[u8; 32]> {
    let bytes: [u8; 32] = URL_SAFE_NO_PAD.decode(x).ok()?.try_into().ok()?;
    let key = ed25519_dalek::VerifyingKey::from_bytes(&bytes).ok()?;
    (!key.is_weak()).then_some(bytes)
}

/// A private key that mints tokens.
pub struct SigningKey {
    kid: String,
    key: EncodingKey,
    public: [u8; 32],
    /// PKCS#8 PEM of the private key, kept so the key can be written to a file.
    secret_pem: String,
}

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SigningKey").field("kid", &self.kid).finish_non_exhaustive()
    }
}

#[derive(Serialize, Deserialize)]
struct SigningKeyFile {
    kid: String,
    private_key_pem: String,
}

impl SigningKey {
    /// A fresh random key.
    pub fn generate(kid: impl Into<String>) -> Self {
        let secret: [u8; 32] = rand::random();
        let signing = ed25519_dalek::SigningKey::from_bytes(&secret);
        let pem = signing
            .to_pkcs8_pem(Default::default())
            .expect("an in-memory Ed25519 key always encodes as PKCS#8");
        Self {
            kid: kid.into(),
            key: EncodingKey::from_ed_pem(pem.as_bytes())
                .expect("PKCS#8 produced by ed25519-dalek is accepted"),
            public: signing.verifying_key().to_bytes(),
            secret_pem: pem.to_string(),
        }
    }

    pub fn kid(&self) -> &str {
        &self.kid
    }

    /// Loads a signing key file written by [`SigningKey::write`].
    pub fn load(path: &Path) -> Result<Self, KeyFileError> {
        let display = path.display().to_string();
        let text =
            std::fs::read(path).map_err(|source| KeyFileError::Read { path: display.clone(), source })?;
        let file: SigningKeyFile = serde_json::from_slice(&text)
            .map_err(|source| KeyFileError::Parse { path: display.clone(), source })?;
        let key = EncodingKey::from_ed_pem(file.private_key_pem.as_bytes())
            .map_err(|source| KeyFileError::BadPrivateKey { path: display.clone(), source })?;
        let signing = ed25519_dalek::SigningKey::from_pkcs8_pem(&file.private_key_pem).map_err(|_| {
            KeyFileError::BadPrivateKey {
                path: display.clone(),
                source: jsonwebtoken::errors::ErrorKind::InvalidKeyFormat.into(),
            }
        })?;
        Ok(Self {
            kid: file.kid,
            key,
            public: signing.verifying_key().to_bytes(),
            secret_pem: file.private_key_pem,
        })
    }

    /// Writes the private key file (mode 0600). The public half goes into a key set, see
    /// [`write_key_set`].
    pub fn write(&self, path: &Path) -> Result<(), KeyFileError> {
        let display = path.display().to_string();
        let file = SigningKeyFile { kid: self.kid.clone(), private_key_pem: self.secret_pem.clone() };
        let text = serde_json::to_vec_pretty(&file).expect("plain struct serializes");
        write_private(path, &text).map_err(|source| KeyFileError::Write { path: display, source })
    }

    /// The public half as a JWK for a key set.
    pub fn public_jwk(&self) -> Jwk {
        Jwk {
            common: CommonParameters {
                public_key_use: Some(PublicKeyUse::Signature),
                key_algorithm: Some(KeyAlgorithm::EdDSA),
                key_id: Some(self.kid.clone()),
                ..Default::default()
            },
            algorithm: AlgorithmParameters::OctetKeyPair(OctetKeyPairParameters {
                key_type: OctetKeyPairType::OctetKeyPair,
                curve: EllipticCurve::Ed25519,
                x: URL_SAFE_NO_PAD.encode(self.public),
            }),
        }
    }

    /// Signs arbitrary claims (tools and tests that need expired or odd tokens).
    pub fn mint_claims(&self, claims: &Claims) -> String {
        let mut header = Header::new(Algorithm::EdDSA);
        header.kid = Some(self.kid.clone());
        jsonwebtoken::encode(&header, claims, &self.key).expect("Ed25519 signing cannot fail")
    }

    /// Mints a token for `identity` valid for `ttl`.
    pub fn mint(&self, claims: TokenRequest<'_>) -> String {
        let now = unix_now();
        let body = Claims {
            iss: claims.issuer.to_owned(),
            aud: claims.audience.to_owned(),
            sub: claims.identity.user.0.to_string(),
            org: claims.identity.org,
            iat: now,
            exp: now.saturating_add(claims.ttl.as_secs()),
            sid: claims.identity.session,
        };
        self.mint_claims(&body)
    }
}

/// What a minted token says.
#[derive(Clone, Copy, Debug)]
pub struct TokenRequest<'a> {
    pub identity: Identity,
    pub issuer: &'a str,
    pub audience: &'a str,
    pub ttl: Duration,
}

/// Writes a JWKS file holding the public halves of `keys` (atomically: a process re-reading it
/// never sees half a file).
pub fn write_key_set(path: &Path, keys: &[&SigningKey]) -> Result<(), KeyFileError> {
    let set = JwkSet { keys: keys.iter().map(|k| k.public_jwk()).collect() };
    let text = serde_json::to_vec_pretty(&set).expect("JWKS serializes");
    write_atomically(path, &text, 0o644)
        .map_err(|source| KeyFileError::Write { path: path.display().to_string(), source })
}

fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    write_atomically(path, bytes, 0o600)
}

/// Writes `bytes` to a temporary file beside `path` with `mode`, then renames it over `path`.
fn write_atomically(path: &Path, bytes: &[u8], mode: u32) -> std::io::Result<()> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let temporary = path.with_file_name(format!(".{name}.{}.tmp", std::process::id()));
    let mut file =
        std::fs::OpenOptions::new().write(true).create(true).truncate(true).mode(mode).open(&temporary)?;
    file.write_all(bytes)?;
    file.sync_all()?;
    std::fs::rename(&temporary, path)
}

fn unix_now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    const ISS: &str = "threadspace-test";
    const AUD: &str = "threadspace-gateway";

    fn identity() -> Identity {
        Identity::new(UserId(42), OrgId(7))
    }

    fn request(ttl: Duration) -> TokenRequest<'static> {
        TokenRequest { identity: identity(), issuer: ISS, audience: AUD, ttl }
    }

    fn key_set(keys: &[&SigningKey], dir: &Path) -> KeySet {
        let path = dir.join("keys.json");
        write_key_set(&path, keys).expect("writes");
        KeySet::load(&path, ISS, AUD).expect("loads")
    }

    fn tempdir() -> tempfile::TempDir {
        tempfile::Builder::new().prefix("ts-token-").tempdir().expect("temp dir")
    }

    #[test]
    fn minted_token_verifies() {
        let dir = tempdir();
        let key = SigningKey::generate("k1");
        let set = key_set(&[&key], dir.path());
        let verified = set.verify(&key.mint(request(Duration::from_secs(60)))).expect("valid");
        assert_eq!((verified.user, verified.org, verified.session), (UserId(42), OrgId(7), None));
        assert!(verified.issued_at.abs_diff(unix_now()) <= 2, "iat is now: {}", verified.issued_at);
        let with_session = Identity { session: Some(9), ..identity() };
        let minted = key.mint(TokenRequest { identity: with_session, ..request(Duration::from_secs(60)) });
        assert_eq!(set.verify(&minted).expect("valid").session, Some(9), "the sid claim round-trips");
    }

    #[test]
    fn signing_key_file_round_trips() {
        let dir = tempdir();
        let key = SigningKey::generate("k9");
        key.write(&dir.path().join("signing.json")).expect("writes");
        let loaded = SigningKey::load(&dir.path().join("signing.json")).expect("loads");
        let set = key_set(&[&key], dir.path());
        assert_eq!(loaded.kid(), "k9");
        assert!(set.verify(&loaded.mint(request(Duration::from_secs(60)))).is_ok());
    }

    #[test]
    fn rejects_forged_expired_wrong_audience_and_unknown_kid() {
        let dir = tempdir();
        let key = SigningKey::generate("k1");
        let set = key_set(&[&key], dir.path());

        let forger = SigningKey::generate("k1");
        let forged = forger.mint(request(Duration::from_secs(60)));
        assert!(matches!(set.verify(&forged), Err(VerifyError::Invalid(_))));

        // Leeway is 30 s: an exp far in the past.
        let old = Claims {
            iss: ISS.into(),
            aud: AUD.into(),
            sub: "42".into(),
            org: OrgId(7),
            iat: 1,
            exp: 2,
            sid: None,
        };
        assert!(matches!(set.verify(&key.mint_claims(&old)), Err(VerifyError::Invalid(_))));

        let wrong_aud = key.mint(TokenRequest { audience: "elsewhere", ..request(Duration::from_secs(60)) });
        assert!(matches!(set.verify(&wrong_aud), Err(VerifyError::Invalid(_))));

        let wrong_iss = key.mint(TokenRequest { issuer: "evil", ..request(Duration::from_secs(60)) });
        assert!(matches!(set.verify(&wrong_iss), Err(VerifyError::Invalid(_))));

        let other = SigningKey::generate("k2");
        assert!(matches!(
            set.verify(&other.mint(request(Duration::from_secs(60)))),
            Err(VerifyError::UnknownKid { .. })
        ));

        assert!(matches!(set.verify("not.a.token"), Err(VerifyError::Header(_))));
    }

    #[test]
    fn rejects_hs256_algorithm_confusion() {
        let dir = tempdir();
        let key = SigningKey::generate("k1");
        let set = key_set(&[&key], dir.path());
        let claims = Claims {
            iss: ISS.into(),
            aud: AUD.into(),
            sub: "1".into(),
            org: OrgId(1),
            iat: unix_now(),
            exp: unix_now() + 60,
            sid: None,
        };
        let mut header = Header::new(Algorithm::HS256);
        header.kid = Some("k1".into());
        let token = jsonwebtoken::encode(&header, &claims, &EncodingKey::from_secret(b"public"))
            .expect("hs256 encodes");
        assert!(matches!(set.verify(&token), Err(VerifyError::Algorithm)));
    }

    #[test]
    fn rotation_accepts_both_keys_in_the_set() {
        let dir = tempdir();
        let old = SigningKey::generate("2026-01");
        let new = SigningKey::generate("2026-02");
        let set = key_set(&[&old, &new], dir.path());
        assert!(set.verify(&old.mint(request(Duration::from_secs(60)))).is_ok());
        assert!(set.verify(&new.mint(request(Duration::from_secs(60)))).is_ok());
    }

    /// Fuzz finding (jwks target): a JWKS key whose `x` decodes to fewer than 32 bytes loaded,
    /// and then every token naming its kid panicked inside jsonwebtoken's EdDSA verifier
    /// (`range end index 32 out of range`); longer keys were silently cut to 32 bytes.
    #[test]
    fn a_key_of_the_wrong_length_is_refused_at_load() {
        let key = SigningKey::generate("k1");
        let token = key.mint(request(Duration::from_secs(60)));
        let x = URL_SAFE_NO_PAD.encode(key.public);
        let long = URL_SAFE_NO_PAD.encode([&key.public[..], &[0u8]].concat());
        for bad_x in [&x[..20], "", long.as_str()] {
            let jwks = format!(r#"{{"keys":[{{"kty":"OKP","crv":"Ed25519","kid":"k1","x":"{bad_x}"}}]}}"#);
            match KeySet::parse(jwks.as_bytes(), "test", ISS, AUD) {
                Err(error) => assert!(matches!(error, KeyFileError::NotEd25519 { .. }), "{error:?}"),
                Ok(set) => {
                    panic!("key of {} base64 chars loaded; verify gave {:?}", bad_x.len(), set.verify(&token))
                }
            }
        }
    }

    /// A small-order ("weak") public key lets anyone forge signatures: refused at load.
    #[test]
    fn a_weak_key_is_refused_at_load() {
        let mut identity_point = [0u8; 32];
        identity_point[0] = 1;
        let jwks = format!(
            r#"{{"keys":[{{"kty":"OKP","crv":"Ed25519","kid":"k1","x":"{}"}}]}}"#,
            URL_SAFE_NO_PAD.encode(identity_point)
        );
        assert!(matches!(
            KeySet::parse(jwks.as_bytes(), "test", ISS, AUD),
            Err(KeyFileError::NotEd25519 { .. })
        ));
    }

    #[test]
    fn bad_key_files_say_what_is_wrong() {
        let dir = tempdir();
        let path = dir.path().join("bad.json");
        std::fs::write(&path, b"{\"keys\": []}").expect("writes");
        assert!(matches!(KeySet::load(&path, ISS, AUD), Err(KeyFileError::Empty { .. })));
        std::fs::write(&path, b"nonsense").expect("writes");
        assert!(matches!(KeySet::load(&path, ISS, AUD), Err(KeyFileError::Parse { .. })));
        assert!(matches!(
            KeySet::load(&dir.path().join("missing.json"), ISS, AUD),
            Err(KeyFileError::Read { .. })
        ));
    }
}
