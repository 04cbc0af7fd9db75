//! The parts of the api service that handlers extract (axum sub-states): each handler names
//! the parts it uses — `State<Auth>`, `State<Archive>`… — and never receives the whole.

use std::path::PathBuf;
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

use axum::extract::FromRef;
use metrics_exporter_prometheus::PrometheusHandle;
use threadspace_protocol::token::{Identity, SigningKey, TokenRequest};
use tokio_util::sync::CancellationToken;

use crate::caller::Auth;
use crate::feed::Feed;
use crate::limits::FailureThrottle;
use crate::mail::Mailer;
use crate::secrets::Passwords;

/// The pool for history and search (its connections carry a statement timeout).
#[derive(Clone)]
pub(crate) struct Archive(pub threadspace_store::Pool);

/// Where directory changes go: the directory with its outbox, and the feed that publishes it.
#[derive(Clone)]
pub(crate) struct Changes {
    pub store: threadspace_store::Accounts,
    pub feed: Feed,
}

/// What sending a message over REST uses: the stream it is stored in (the gateways' rule,
/// `threadspace_stream::publish`) and the largest body (`--max-body-bytes`).
#[derive(Clone)]
pub(crate) struct Sending {
    pub publisher: threadspace_stream::Publisher,
    pub max_body_bytes: usize,
}

/// Mints access tokens: the service owns the signing key, and re-reads its file when it
/// changes, so keys rotate without downtime (docs/accounts.md, "Signing keys").
pub(crate) struct Minter {
    path: PathBuf,
    /// The key in use and the file's modification time it was read at.
    key: RwLock<(Arc<SigningKey>, Option<SystemTime>)>,
    issuer: String,
    audience: String,
    pub ttl: Duration,
}

impl Minter {
    pub(crate) fn new(
        path: PathBuf,
        key: SigningKey,
        issuer: String,
        audience: String,
        ttl: Duration,
    ) -> Self {
        let modified = std::fs::metadata(&path).and_then(|m| m.modified()).ok();
        Self { path, key: RwLock::new((Arc::new(key), modified)), issuer, audience, ttl }
    }

    pub(crate) fn mint(&self, identity: Identity) -> String {
        let key = self.key.read().expect("key lock is never poisoned").0.clone();
        key.mint(TokenRequest { identity, issuer: &self.issuer, audience: &self.audience, ttl: self.ttl })
    }

    /// Switches to the key file's new key once it changed — but only to a key the verifiers
    /// already publish (`verifying`): a token minted with a key the gateways do not know yet
    /// would be refused. Until then the old key stays in use and the switch is retried.
    /// Blocking file I/O: call it off the async runtime.
    pub(crate) fn reload_if_changed(&self, verifying: &threadspace_protocol::token::KeySet) {
        let modified = std::fs::metadata(&self.path).and_then(|m| m.modified()).ok();
        if modified == self.key.read().expect("key lock is never poisoned").1 {
            return;
        }
        match SigningKey::load(&self.path) {
            Ok(key) if verifying.contains(key.kid()) => {
                tracing::info!(kid = key.kid(), "signing key switched");
                *self.key.write().expect("key lock is never poisoned") = (Arc::new(key), modified);
            }
            Ok(key) => {
                tracing::warn!(
                    kid = key.kid(),
                    "new signing key is not in the JWKS yet; still minting with the old one"
                );
            }
            Err(error) => tracing::warn!(
                error = %threadspace_protocol::error_chain(&error),
                "signing key file changed but cannot be read; still minting with the old one"
            ),
        }
    }
}

/// Lifetimes of what account routes issue.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Lifetimes {
    pub session: Duration,
    pub refresh_grace: Duration,
    pub invite: Duration,
    pub mail_token: Duration,
}

/// What the account routes use: passwords, token minting, mail, failure delays.
#[derive(Clone)]
pub(crate) struct Credentials {
    pub passwords: Passwords,
    pub minter: Arc<Minter>,
    pub mailer: Arc<dyn Mailer>,
    /// Failed logins.
    pub throttle: Arc<FailureThrottle>,
    /// Reset and sign-up mail requests (every request counts): kept apart from logins, so a
    /// burst of resets from an office IP never delays that IP's logins.
    pub mail_throttle: Arc<FailureThrottle>,
    pub lifetimes: Lifetimes,
    /// Base URL for links in mail.
    pub public_url: Arc<str>,
}

/// Rings the data-rights worker when a job is queued (`crate::rights::worker`).
#[derive(Clone)]
pub(crate) struct Jobs {
    pub wake: Arc<tokio::sync::Notify>,
}

/// The Prometheus handle, when a recorder is installed.
#[derive(Clone)]
pub(crate) struct Telemetry(pub Option<PrometheusHandle>);

/// Cancelled when the service starts draining.
#[derive(Clone)]
pub(crate) struct Draining(pub CancellationToken);

/// The service's parts. Handlers extract the ones they use (`State<Auth>`, `State<Archive>`…);
/// none takes the whole.
#[derive(Clone)]
pub(crate) struct Parts {
    pub auth: Auth,
    pub archive: Archive,
    pub changes: Changes,
    pub sending: Sending,
    pub credentials: Credentials,
    pub telemetry: Telemetry,
    pub draining: Draining,
    pub jobs: Jobs,
}

macro_rules! part {
    ($field:ident: $ty:ty) => {
        impl FromRef<Parts> for $ty {
            fn from_ref(parts: &Parts) -> Self {
                parts.$field.clone()
            }
        }
    };
}
part!(auth: Auth);
part!(archive: Archive);
part!(changes: Changes);
part!(sending: Sending);
part!(credentials: Credentials);
part!(telemetry: Telemetry);
part!(draining: Draining);
part!(jobs: Jobs);
