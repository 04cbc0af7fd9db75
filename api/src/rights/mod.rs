//! Data rights (docs/api.md, "Data rights"): exports of a person's or an org's data and the
//! erasure of a person, run as background jobs ([`worker`]) over one **registry** of the kinds of
//! data ThreadSpace keeps. Each kind ([`DataKind`]) says what it puts into an export and what it
//! does on an erasure; a new kind of data (files, reactions, threads) plugs in by adding itself to
//! [`REGISTRY`], and the docs' list of what an export holds and what an erasure reaches is this
//! list.
//!
//! **Invariant:** an erasure erases nothing of a person's messages before every message they can
//! have sent is where the erasure looks for it: they are deactivated first (their sockets close and
//! their tokens stop working), then the erasure waits `--erasure-settle` (longer than any publish
//! timeout, so no send of theirs is still in flight), notes the stream's last sequence, and waits
//! until the broker-bridge has archived through it. Every message of theirs is then in the stream's
//! retained tail, the archive, or the dead-letter stream, and each kind erases its copy.

mod kinds;
mod stream;
pub(crate) mod worker;

use std::sync::Mutex;
use std::time::Duration;

use futures_util::future::BoxFuture;
use serde_json::{json, Value};
use threadspace_protocol::{OrgId, UserId};
use threadspace_store::directory::DirectoryError;
use threadspace_store::rights::ErasureSubject;

use crate::parts::Changes;

/// What the data-rights jobs use.
#[derive(Clone)]
pub(crate) struct Rights {
    pub changes: Changes,
    /// `--erasure-settle`: how long after deactivating a person an erasure waits for their
    /// in-flight sends.
    pub settle: Duration,
    /// `--erasure-bridge-wait`: how long an erasure waits for the broker-bridge to catch up.
    pub bridge_wait: Duration,
    /// `--export-max-bytes`: the largest export document.
    pub max_export_bytes: usize,
    /// `--export-retention`: how long a finished export can be downloaded.
    pub export_retention: Duration,
}

impl Rights {
    fn store(&self) -> &threadspace_store::Accounts {
        &self.changes.store
    }

    fn jetstream(&self) -> &async_nats::jetstream::Context {
        &self.changes.feed.jetstream
    }

    fn partitions(&self) -> u32 {
        self.changes.feed.partitions
    }
}

/// Whose data an export covers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Scope {
    /// One person's own data.
    User(OrgId, UserId),
    /// The org's (docs/api.md lists what an org export holds).
    Org(OrgId),
}

/// An erasure under way: its job, who, under which policy, and what the kinds found on the way.
#[derive(Debug)]
pub(crate) struct Erasure {
    pub job: threadspace_store::jobs::Job,
    pub subject: ErasureSubject,
    /// The stream's last sequence once the person could send no more.
    pub through_seq: u64,
    /// Seqs of the person's messages found in the stream, by this attempt and earlier ones
    /// (the search index may hold some the archive never took).
    pub found_seqs: Mutex<Vec<i64>>,
}

/// What an erasure did to one kind of data.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// This many records deleted.
    Deleted(u64),
    /// This many records stripped of what identified the person; the records stay.
    Scrubbed(u64),
    /// Kept, and why (the org's policy, or nothing personal is left in it).
    Kept(&'static str),
}

impl Outcome {
    fn to_json(&self) -> Value {
        match self {
            Self::Deleted(n) => json!({"deleted": n}),
            Self::Scrubbed(n) => json!({"scrubbed": n}),
            Self::Kept(why) => json!({"kept": why}),
        }
    }
}

/// Why a job failed. The message is shown to whoever asked: words, never personal data.
#[derive(Debug, thiserror::Error)]
pub(crate) enum RightsError {
    #[error("the directory is unavailable")]
    Store(#[from] DirectoryError),
    #[error("the message stream is unavailable: {0}")]
    Stream(String),
    #[error("the export is larger than the limit of {limit} bytes")]
    TooLarge { limit: usize },
    #[error("the broker-bridge has not archived through stream sequence {through} within {waited:?}; is it running?")]
    BridgeBehind { through: u64, waited: Duration },
    #[error("the user no longer exists")]
    NoSubject,
    #[error("{0}")]
    Contended(&'static str),
    #[error("someone this export is about was erased while it ran; ask for a new export")]
    SubjectErased,
}

impl RightsError {
    /// Whether trying again cannot help (anything else may pass: a store or stream that was
    /// unavailable, a bridge that was behind).
    pub(crate) fn is_permanent(&self) -> bool {
        matches!(self, Self::NoSubject | Self::TooLarge { .. } | Self::SubjectErased)
    }
}

/// One kind of data ThreadSpace keeps.
pub(crate) trait DataKind: Sync {
    /// Its key in an export document and in an erasure's summary.
    fn name(&self) -> &'static str;

    /// What it contributes to an export of `scope`; `None` (the default): nothing, the key is
    /// left out.
    fn export<'a>(
        &'a self,
        _rights: &'a Rights,
        _scope: Scope,
    ) -> BoxFuture<'a, Result<Option<Value>, RightsError>> {
        Box::pin(async { Ok(None) })
    }

    /// Erases (or keeps, per the org's policy) the person's data of this kind. Runs again if
    /// the job is retried: it must be idempotent.
    fn erase<'a>(
        &'a self,
        rights: &'a Rights,
        erasure: &'a Erasure,
    ) -> BoxFuture<'a, Result<Outcome, RightsError>>;
}

/// Every kind of data, in the order an erasure goes through them: the copies in the stream
/// first (so the archive's copy is deleted after them), then the profile (the kinds before it
/// match the person's address, which it scrubs), and last the export documents (an export that
/// finishes after the profile is scrubbed is refused, one before is deleted here).
pub(crate) static REGISTRY: &[&dyn DataKind] = &[
    &stream::StreamTail,
    &stream::DeadLetters,
    &stream::HelloCache,
    &kinds::Messages,
    &kinds::ReadMarkers,
    &kinds::Sessions,
    &kinds::Audit,
    &kinds::Memberships,
    &kinds::Profile,
    &kinds::Exports,
];

/// Deactivates the person an erasure is about (closing their sockets through the directory
/// feed), retrying while their role changes under it. Nothing if they already are.
pub(crate) async fn deactivate(changes: &Changes, subject: &ErasureSubject) -> Result<(), RightsError> {
    let mut role = subject.role.clone();
    for _ in 0..3 {
        match changes.store.set_active(subject.org, subject.user, &role, false).await {
            Ok(Some(event)) => {
                changes.feed.announce(&event).await;
                return Ok(());
            }
            Ok(None) => return Ok(()),
            Err(DirectoryError::Conflict { .. }) => {
                let now = changes.store.erasure_subject(subject.org, subject.user).await?;
                role = now.ok_or(RightsError::NoSubject)?.role;
            }
            Err(e) => return Err(e.into()),
        }
    }
    Err(RightsError::Contended("the user's role kept changing; retry the erasure"))
}

/// The names of the registry's kinds, in order (the docs list these).
#[cfg(test)]
pub(crate) fn kind_names() -> Vec<&'static str> {
    REGISTRY.iter().map(|k| k.name()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_has_its_own_name_and_the_profile_and_exports_are_erased_last() {
        let names = kind_names();
        let mut unique = names.clone();
        unique.sort_unstable();
        unique.dedup();
        assert_eq!(unique.len(), names.len(), "duplicate kind names: {names:?}");
        assert_eq!(&names[names.len() - 2..], ["profile", "exports"], "{names:?}");
        assert_eq!(names.first(), Some(&"stream"), "{names:?}");
    }

    #[test]
    fn outcomes_say_what_happened() {
        assert_eq!(Outcome::Deleted(3).to_json(), json!({"deleted": 3}));
        assert_eq!(Outcome::Scrubbed(1).to_json(), json!({"scrubbed": 1}));
        assert_eq!(Outcome::Kept("why").to_json(), json!({"kept": "why"}));
    }
}
