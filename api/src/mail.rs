//! Outgoing mail (invites, password resets, sign-up verifications) behind one trait. Locally
//! and in tests it goes to a file, one JSON line per mail; without a file it is logged with
//! its link redacted. A production transport (SMTP, a provider's API) implements [`Mailer`].

use std::io::Write as _;
use std::path::PathBuf;
use std::sync::Mutex;

use serde::Serialize;

/// One mail.
#[derive(Clone, Debug, Serialize)]
pub(crate) struct Mail {
    pub to: String,
    /// `invite`, `password_reset`, `signup`.
    pub kind: &'static str,
    pub subject: String,
    /// The link the recipient follows; it carries a secret.
    pub link: String,
    /// The secret alone (what the link's `token` parameter holds).
    pub token: String,
}

/// Where mail goes.
pub(crate) trait Mailer: Send + Sync {
    /// Sends `mail`; failures are logged, never shown to the requester (who must not learn
    /// whether an address exists).
    fn send(&self, mail: Mail);
}

/// Appends each mail as a JSON line to a file.
pub(crate) struct FileMailer {
    path: PathBuf,
    lock: Mutex<()>,
}

impl FileMailer {
    pub(crate) fn new(path: PathBuf) -> Self {
        Self { path, lock: Mutex::new(()) }
    }
}

impl Mailer for FileMailer {
    fn send(&self, mail: Mail) {
        let line = serde_json::to_string(&mail).expect("mail serializes") + "\n";
        let _guard = self.lock.lock().expect("mail lock is never poisoned");
        let written = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.path)
            .and_then(|mut file| file.write_all(line.as_bytes()));
        match written {
            Ok(()) => tracing::info!(kind = mail.kind, path = %self.path.display(), "mail written"),
            Err(error) => {
                tracing::warn!(%error, kind = mail.kind, path = %self.path.display(), "mail not written")
            }
        }
    }
}

/// Logs that a mail would go out, without its secret.
pub(crate) struct LogMailer;

impl Mailer for LogMailer {
    fn send(&self, mail: Mail) {
        tracing::info!(kind = mail.kind, subject = %mail.subject, "mail not sent (no --mail-file); link withheld");
    }
}
