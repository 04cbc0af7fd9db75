//! The kinds of data kept in Postgres (`threadspace_store::rights` holds their queries).

use futures_util::future::BoxFuture;
use serde_json::{json, Value};
use threadspace_store::rights::ErasurePolicy;

use super::{DataKind, Erasure, Outcome, Rights, RightsError, Scope};

/// The person's profile (an org export: everyone's).
pub(crate) struct Profile;

impl DataKind for Profile {
    fn name(&self) -> &'static str {
        "profile"
    }

    fn export<'a>(
        &'a self,
        rights: &'a Rights,
        scope: Scope,
    ) -> BoxFuture<'a, Result<Option<Value>, RightsError>> {
        Box::pin(async move {
            Ok(Some(match scope {
                Scope::User(org, user) => rights.store().export_profile(org, user).await?,
                Scope::Org(org) => rights.store().export_people(org).await?,
            }))
        })
    }

    fn erase<'a>(
        &'a self,
        rights: &'a Rights,
        erasure: &'a Erasure,
    ) -> BoxFuture<'a, Result<Outcome, RightsError>> {
        Box::pin(async move {
            let changed = rights.store().erase_profile(erasure.subject.org, erasure.subject.user).await?;
            Ok(Outcome::Scrubbed(u64::from(changed)))
        })
    }
}

/// Channel memberships (an org export: the public and private channels with their members).
pub(crate) struct Memberships;

impl DataKind for Memberships {
    fn name(&self) -> &'static str {
        "channels"
    }

    fn export<'a>(
        &'a self,
        rights: &'a Rights,
        scope: Scope,
    ) -> BoxFuture<'a, Result<Option<Value>, RightsError>> {
        Box::pin(async move {
            Ok(Some(match scope {
                Scope::User(org, user) => rights.store().export_memberships(org, user).await?,
                Scope::Org(org) => rights.store().export_channels(org).await?,
            }))
        })
    }

    fn erase<'a>(&'a self, _: &'a Rights, _: &'a Erasure) -> BoxFuture<'a, Result<Outcome, RightsError>> {
        // A membership links the scrubbed account's id to a channel, nothing more: member
        // lists show "Erased user", as others' history does.
        Box::pin(async { Ok(Outcome::Kept("a membership names only the scrubbed account")) })
    }
}

/// Archived messages and their search index.
pub(crate) struct Messages;

impl DataKind for Messages {
    fn name(&self) -> &'static str {
        "messages"
    }

    fn export<'a>(
        &'a self,
        rights: &'a Rights,
        scope: Scope,
    ) -> BoxFuture<'a, Result<Option<Value>, RightsError>> {
        Box::pin(async move {
            let (channels, sender) = match scope {
                Scope::User(org, user) => (rights.store().org_channel_ids(org).await?, Some(user)),
                Scope::Org(org) => (rights.store().public_channel_ids(org).await?, None),
            };
            // Channel by channel, each along the archive's `(channel_id, seq)` index.
            let (mut rows, mut bytes) = (Vec::new(), 0usize);
            for channel in channels {
                let mut after = 0;
                loop {
                    let (page, last, size) = rights.store().export_messages(channel, sender, after).await?;
                    if page.is_empty() {
                        break;
                    }
                    bytes += size;
                    if bytes > rights.max_export_bytes {
                        return Err(RightsError::TooLarge { limit: rights.max_export_bytes });
                    }
                    rows.extend(page);
                    after = last;
                }
            }
            Ok(Some(Value::Array(rows)))
        })
    }

    fn erase<'a>(
        &'a self,
        rights: &'a Rights,
        erasure: &'a Erasure,
    ) -> BoxFuture<'a, Result<Outcome, RightsError>> {
        Box::pin(async move {
            if erasure.subject.policy == ErasurePolicy::Anonymise {
                return Ok(Outcome::Kept("the org's policy is anonymise: messages stay, by \"Erased user\""));
            }
            let channels = rights.store().org_channel_ids(erasure.subject.org).await?;
            let extra = erasure.found_seqs.lock().expect("seq list lock is never poisoned").clone();
            let (archived, indexed) =
                rights.store().erase_messages(&channels, erasure.subject.user, &extra).await?;
            metrics::counter!(crate::metrics::ERASED_RECORDS, "kind" => "search").increment(indexed);
            Ok(Outcome::Deleted(archived))
        })
    }
}

/// Read markers.
pub(crate) struct ReadMarkers;

impl DataKind for ReadMarkers {
    fn name(&self) -> &'static str {
        "read_markers"
    }

    fn export<'a>(
        &'a self,
        rights: &'a Rights,
        scope: Scope,
    ) -> BoxFuture<'a, Result<Option<Value>, RightsError>> {
        Box::pin(async move {
            match scope {
                Scope::User(_, user) => Ok(Some(rights.store().export_read_markers(user).await?)),
                Scope::Org(_) => Ok(None),
            }
        })
    }

    fn erase<'a>(
        &'a self,
        rights: &'a Rights,
        erasure: &'a Erasure,
    ) -> BoxFuture<'a, Result<Outcome, RightsError>> {
        Box::pin(async move {
            Ok(Outcome::Deleted(rights.store().erase_read_markers(erasure.subject.user).await?))
        })
    }
}

/// Login sessions, refresh tokens, invites and reset links, a bot's credentials.
pub(crate) struct Sessions;

impl DataKind for Sessions {
    fn name(&self) -> &'static str {
        "sessions"
    }

    fn export<'a>(
        &'a self,
        rights: &'a Rights,
        scope: Scope,
    ) -> BoxFuture<'a, Result<Option<Value>, RightsError>> {
        Box::pin(async move {
            match scope {
                Scope::User(_, user) => Ok(Some(rights.store().export_sessions(user).await?)),
                Scope::Org(_) => Ok(None),
            }
        })
    }

    fn erase<'a>(
        &'a self,
        rights: &'a Rights,
        erasure: &'a Erasure,
    ) -> BoxFuture<'a, Result<Outcome, RightsError>> {
        Box::pin(async move {
            let subject = &erasure.subject;
            Ok(Outcome::Deleted(rights.store().erase_sessions(subject.user, subject.email.as_deref()).await?))
        })
    }
}

/// The audit log's records by or about the person.
pub(crate) struct Audit;

impl DataKind for Audit {
    fn name(&self) -> &'static str {
        "audit"
    }

    fn export<'a>(
        &'a self,
        rights: &'a Rights,
        scope: Scope,
    ) -> BoxFuture<'a, Result<Option<Value>, RightsError>> {
        Box::pin(async move {
            match scope {
                Scope::User(org, user) => Ok(Some(rights.store().export_audit(org, user).await?)),
                // The audit log has its own reader (`GET /v1/audit`); it is not org data to
                // hand out in bulk.
                Scope::Org(_) => Ok(None),
            }
        })
    }

    fn erase<'a>(
        &'a self,
        rights: &'a Rights,
        erasure: &'a Erasure,
    ) -> BoxFuture<'a, Result<Outcome, RightsError>> {
        Box::pin(async move {
            let s = &erasure.subject;
            Ok(Outcome::Scrubbed(rights.store().erase_audit(s.org, s.user, s.email.as_deref()).await?))
        })
    }
}

/// Export documents: the person's own, and the org's (which hold everyone's profile). An export
/// does not contain exports.
pub(crate) struct Exports;

impl DataKind for Exports {
    fn name(&self) -> &'static str {
        "exports"
    }

    fn erase<'a>(
        &'a self,
        rights: &'a Rights,
        erasure: &'a Erasure,
    ) -> BoxFuture<'a, Result<Outcome, RightsError>> {
        Box::pin(async move {
            let (org, user) = (erasure.subject.org, erasure.subject.user);
            Ok(Outcome::Deleted(rights.store().erase_exports(org, user).await?))
        })
    }
}

/// The export document's header.
pub(crate) fn header(job: i64, scope: Scope) -> serde_json::Map<String, Value> {
    let (scope, org, user) = match scope {
        Scope::User(org, user) => ("user", org, Some(user.0)),
        Scope::Org(org) => ("org", org, None),
    };
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    let fields = [
        ("format", json!("threadspace.export.v1")),
        ("job", json!(job)),
        ("scope", json!(scope)),
        ("org", json!(org.0)),
        ("user", json!(user)),
        ("generated_at_ms", json!(now_ms)),
    ];
    fields.into_iter().map(|(key, value)| (key.to_owned(), value)).collect()
}
