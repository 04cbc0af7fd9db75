//! Who is calling: the one home of the rule "a bearer token names a live session in the
//! token's org" (ARCHITECTURE.md, invariant "One auth rule"). The gateway's `hello` and every
//! REST route of the api service call [`authenticate`]; neither re-implements any part of it.
//!
//! [`Keys`] is the verifying key set of a process, re-read when the JWKS file changes so that
//! keys rotate without a restart (README.md, "Running a gateway").

use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::SystemTime;

use threadspace_protocol::token::{Identity, KeyFileError, KeySet, VerifyError};
use threadspace_protocol::{error_chain, UserId};
use threadspace_store::directory::{DirectoryError, Session};
use threadspace_store::Directory;

/// Why a caller was not authenticated.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    /// The token does not verify (signature, expiry, issuer, audience, shape).
    #[error("token rejected")]
    Token(#[source] VerifyError),
    /// The token verifies but names a user who is unknown, in another org, or deactivated, or
    /// a login session that ended, or was issued before the user's `tokens_not_before`.
    #[error("token names no live session (user {user})")]
    NoSession { user: UserId },
    /// The directory could not be read: the caller may retry.
    #[error("directory unavailable")]
    Unavailable(#[source] DirectoryError),
}

impl AuthError {
    /// Whether the caller's credentials were refused (as opposed to the directory failing).
    /// Callers tell a client only `auth_failed`; the reason goes to the log.
    pub fn is_rejected(&self) -> bool {
        !matches!(self, Self::Unavailable(_))
    }
}

/// Verifies `token` and loads the caller's session: the user must exist, belong to the org the
/// token names, and not be deactivated; the token's login session (`sid`), if it names one,
/// must be live; and the token must not predate the user's `tokens_not_before` (sign out
/// everywhere, password change). Returns the token's identity with the session.
pub async fn authenticate(
    keys: &KeySet,
    directory: &Directory,
    token: &str,
) -> Result<(Identity, Session), AuthError> {
    authenticate_from(keys, token, |user, login_session| directory.session(user, login_session)).await
}

/// [`authenticate`] with the session read by `read` (user, login session) instead of straight
/// from Postgres: the gateway's hello reads through its directory cache, which answers from a
/// copy of an earlier read while Postgres is down (docs/drills.md, "Hellos without
/// PostgreSQL"). The rule applied to what `read` returns is the same.
pub async fn authenticate_from<F, Fut>(
    keys: &KeySet,
    token: &str,
    read: F,
) -> Result<(Identity, Session), AuthError>
where
    F: FnOnce(UserId, Option<i64>) -> Fut,
    Fut: Future<Output = Result<Option<Session>, DirectoryError>>,
{
    let identity = keys.verify(token).map_err(AuthError::Token)?;
    match read(identity.user, identity.session).await {
        Ok(Some(session))
            if session.user.org == identity.org
                && !session.deactivated
                && session.session_live
                && identity.issued_at >= session.tokens_not_before =>
        {
            Ok((identity, session))
        }
        Ok(_) => Err(AuthError::NoSession { user: identity.user }),
        Err(error) => Err(AuthError::Unavailable(error)),
    }
}

/// A process's verifying key set, reloaded from its JWKS file when the file changes.
pub struct Keys {
    path: PathBuf,
    issuer: String,
    audience: String,
    current: RwLock<(Arc<KeySet>, Option<SystemTime>)>,
}

impl std::fmt::Debug for Keys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Keys").field("path", &self.path).finish_non_exhaustive()
    }
}

impl Keys {
    /// Loads the key set; an unreadable or invalid file is a start-up error.
    pub fn load(path: &Path, issuer: &str, audience: &str) -> Result<Self, KeyFileError> {
        let modified = modified(path);
        let keys = KeySet::load(path, issuer, audience)?;
        Ok(Self {
            path: path.to_owned(),
            issuer: issuer.to_owned(),
            audience: audience.to_owned(),
            current: RwLock::new((Arc::new(keys), modified)),
        })
    }

    /// The current key set.
    pub fn current(&self) -> Arc<KeySet> {
        self.current.read().expect("key lock is never poisoned").0.clone()
    }

    /// Re-reads the JWKS file if it changed; a bad file keeps the old keys and logs why.
    /// Blocking file I/O: call it off the async runtime.
    pub fn reload_if_changed(&self) {
        let now = modified(&self.path);
        if now == self.current.read().expect("key lock is never poisoned").1 {
            return;
        }
        match KeySet::load(&self.path, &self.issuer, &self.audience) {
            Ok(keys) => {
                *self.current.write().expect("key lock is never poisoned") = (Arc::new(keys), now);
                tracing::info!(path = %self.path.display(), "token key set reloaded");
            }
            Err(error) => {
                tracing::warn!(error = %error_chain(&error), "token key set changed but is invalid; keeping the old keys");
                self.current.write().expect("key lock is never poisoned").1 = now;
            }
        }
    }
}

fn modified(path: &Path) -> Option<SystemTime> {
    std::fs::metadata(path).and_then(|m| m.modified()).ok()
}
