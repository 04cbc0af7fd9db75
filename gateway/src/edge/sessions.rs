//! The directory read of a `hello`: from PostgreSQL, and, while PostgreSQL cannot answer, from
//! the **hello cache** — a copy of each login session's last successful read, kept in a
//! JetStream stream that every gateway shares and that outlives any one of them
//! (docs/drills.md, "Hellos without PostgreSQL"). So a gateway restarted during a Postgres
//! outage still admits the users it had before: the chat path does not need Postgres.
//!
//! **Invariant:** a copy is used only if it is as new as its org's directory: the MESSAGES
//! stream holds no directory event of the org newer than the copy's `dir_version` (the org's
//! last `dir.<partition>.<org>` record has that version or an older one, or there is none and
//! the copy is younger than the stream's retention, so no newer event can have expired). A copy
//! therefore admits exactly whom Postgres admitted at that version, and every later change
//! reaches the connection through the fanout like for any other (docs/accounts.md, "The
//! directory feed"). Time-based ends are rechecked: a copied login session stops being live at
//! its expiry.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_nats::jetstream::stream::{
    self, DirectGetErrorKind, DiscardPolicy, RawMessageErrorKind, StorageType,
};
use bytes::Bytes;
use serde::{Deserialize, Serialize};
use threadspace_protocol::frames::{ChannelInfo, UserInfo};
use threadspace_protocol::stored::decode_directory_event;
use threadspace_protocol::subjects::{
    directory_subject, hello_cache_subject, HELLO_CACHE_STREAM, HELLO_CACHE_SUBJECTS, MESSAGES_STREAM,
};
use threadspace_protocol::{error_chain, UserId};
use threadspace_store::directory::{DirectoryError, Session};
use threadspace_store::Directory;
use tracing::{debug, info, warn};

use crate::metrics as m;

/// How long a hello waits for either lookup of the cache.
const LOOKUP_TIMEOUT: Duration = Duration::from_secs(2);

/// Where hellos read sessions.
pub(crate) struct Sessions {
    directory: Directory,
    cache: Option<HelloCache>,
}

impl Sessions {
    pub(crate) fn new(directory: Directory, cache: Option<HelloCache>) -> Self {
        Self { directory, cache }
    }

    /// The session of `user` (and whether `login_session` is live), as
    /// [`Directory::session`]; when Postgres cannot answer, an up-to-date copy from the hello
    /// cache. Without one, Postgres's error: the client is told `unavailable` and retries.
    pub(crate) async fn session(
        &self,
        user: UserId,
        login_session: Option<i64>,
    ) -> Result<Option<Session>, DirectoryError> {
        let error = match self.directory.session(user, login_session).await {
            Ok(found) => {
                metrics::counter!(m::HELLO_SESSIONS, "source" => "postgres").increment(1);
                // A deactivated user's read admits nobody: it is not kept, and nothing is copied
                // of a person an erasure has begun with (it deactivates them first).
                if let (Some(cache), Some(session)) = (&self.cache, &found) {
                    if !session.deactivated {
                        cache.keep(login_session, session).await;
                    }
                }
                return Ok(found);
            }
            Err(error) => error,
        };
        let Some(cache) = &self.cache else {
            metrics::counter!(m::HELLO_SESSIONS, "source" => "unavailable").increment(1);
            return Err(error);
        };
        match cache.copy(user, login_session).await {
            Ok(session) => {
                metrics::counter!(m::HELLO_SESSIONS, "source" => "cache").increment(1);
                debug!(%user, dir_version = session.dir_version, "hello answered from the hello cache");
                Ok(Some(session))
            }
            Err(miss) => {
                // The copy's absence is not the failure: the client is told what failed.
                metrics::counter!(m::HELLO_SESSIONS, "source" => miss.label()).increment(1);
                debug!(%user, %miss, "postgres unavailable and no usable copy in the hello cache");
                Err(error)
            }
        }
    }
}

/// The hello cache: its stream, and the MESSAGES stream whose directory events date copies.
pub(crate) struct HelloCache {
    nats: async_nats::Client,
    cache: stream::Stream,
    messages: stream::Stream<()>,
    partitions: u32,
    /// The MESSAGES stream's retention: an org without a directory event in the stream has had
    /// none for at least this long.
    retention: Duration,
}

/// What is kept of one read: the session as Postgres returned it, and when.
#[derive(Debug, PartialEq, Eq, Serialize, Deserialize)]
struct Copy {
    /// When the read was made (ms since the Unix epoch).
    read_at_ms: u64,
    user: UserInfo,
    deactivated: bool,
    channels: Vec<ChannelInfo>,
    tokens_not_before: u64,
    session_live: bool,
    session_expires_at: Option<u64>,
    dir_version: u64,
}

/// Why a copy could not answer a hello.
#[derive(Debug, thiserror::Error)]
enum Miss {
    #[error("no copy of this login session's directory read")]
    Missing,
    #[error("the copy is at directory version {copy}, the org is at {org}")]
    Stale { copy: u64, org: u64 },
    #[error("the copy is older than the stream's retention ({age:?})")]
    TooOld { age: Duration },
    #[error("the copy names user {found}")]
    OtherUser { found: UserId },
    #[error("the hello cache cannot be read: {0}")]
    Unavailable(String),
}

impl Miss {
    fn label(&self) -> &'static str {
        match self {
            Self::Missing | Self::OtherUser { .. } => "missing",
            Self::Stale { .. } | Self::TooOld { .. } => "stale",
            Self::Unavailable(_) => "unavailable",
        }
    }
}

impl HelloCache {
    /// Creates the cache's stream if there is none (in memory, `replicas` copies, one record
    /// per login session, at most `max_bytes`, the oldest dropped first) and raises its replica
    /// count like the MESSAGES stream's. `retention` is the MESSAGES stream's max age.
    pub(crate) async fn open(
        nats: async_nats::Client,
        jetstream: &async_nats::jetstream::Context,
        partitions: u32,
        replicas: usize,
        max_bytes: u64,
        retention: Duration,
    ) -> Result<Self, async_nats::Error> {
        let messages = jetstream.get_stream_no_info(MESSAGES_STREAM).await?;
        let mut cache = jetstream
            .get_or_create_stream(stream::Config {
                name: HELLO_CACHE_STREAM.to_owned(),
                subjects: vec![HELLO_CACHE_SUBJECTS.to_owned()],
                storage: StorageType::Memory,
                num_replicas: replicas,
                max_messages_per_subject: 1,
                max_bytes: i64::try_from(max_bytes).unwrap_or(i64::MAX),
                discard: DiscardPolicy::Old,
                // A copy is of no use once the org's events that could date it have expired.
                max_age: retention,
                allow_direct: true,
                ..Default::default()
            })
            .await?;
        let info = cache.info().await?;
        threadspace_stream::ensure_replicas(jetstream, info, replicas).await?;
        info!(max_bytes, copies = info.state.messages, "hello cache ready");
        Ok(Self { nats, cache, messages, partitions, retention })
    }

    /// Copies a successful read. Best effort: a copy that cannot be written only means this
    /// login session cannot be admitted from the cache later.
    async fn keep(&self, login_session: Option<i64>, session: &Session) {
        let copy = Copy {
            read_at_ms: unix_ms(),
            user: session.user.clone(),
            deactivated: session.deactivated,
            channels: session.channels.clone(),
            tokens_not_before: session.tokens_not_before,
            session_live: session.session_live,
            session_expires_at: session.session_expires_at,
            dir_version: session.dir_version,
        };
        let payload = Bytes::from(serde_json::to_vec(&copy).expect("a copy serializes"));
        let subject = hello_cache_subject(session.user.id, login_session);
        // A core publish: the stream stores it; no hello waits for JetStream's acknowledgement.
        if let Err(error) = self.nats.publish(subject, payload).await {
            metrics::counter!(m::HELLO_CACHE_WRITE_FAILURES).increment(1);
            debug!(error = %error_chain(&error), "hello read not copied to the hello cache");
        }
    }

    /// The copy of `user`'s read for `login_session`, if it is as new as the org's directory
    /// (the module invariant).
    async fn copy(&self, user: UserId, login_session: Option<i64>) -> Result<Session, Miss> {
        let record =
            lookup(&self.cache, hello_cache_subject(user, login_session)).await?.ok_or(Miss::Missing)?;
        let copy: Copy = serde_json::from_slice(&record)
            .map_err(|e| Miss::Unavailable(format!("a copy does not decode: {e}")))?;
        if copy.user.id != user {
            return Err(Miss::OtherUser { found: copy.user.id });
        }
        let org_subject = directory_subject(self.partitions, copy.user.org);
        // From the stream leader: a direct get may be answered by a replica that has not
        // applied the org's newest event yet, and a stale "newest" would admit a copy it must
        // refuse (ARCHITECTURE.md, "Resume and the fanout consumer": replicas lag).
        match leader_lookup(&self.messages, org_subject.clone()).await? {
            Some(payload) => {
                let event = decode_directory_event(&org_subject, &payload, self.partitions)
                    .map_err(|e| Miss::Unavailable(format!("the org's last directory event: {e}")))?;
                if event.version > copy.dir_version {
                    return Err(Miss::Stale { copy: copy.dir_version, org: event.version });
                }
            }
            None => {
                let age = Duration::from_millis(unix_ms().saturating_sub(copy.read_at_ms));
                if age >= self.retention {
                    return Err(Miss::TooOld { age });
                }
            }
        }
        let now = unix_ms() / 1000;
        Ok(Session {
            user: copy.user,
            deactivated: copy.deactivated,
            channels: copy.channels,
            tokens_not_before: copy.tokens_not_before,
            session_live: copy.session_live && copy.session_expires_at.is_none_or(|at| at > now),
            session_expires_at: copy.session_expires_at,
            dir_version: copy.dir_version,
        })
    }
}

/// The payload of the last record of `stream` on `subject`; `None` if there is none.
async fn lookup<I>(stream: &stream::Stream<I>, subject: String) -> Result<Option<Bytes>, Miss> {
    match tokio::time::timeout(LOOKUP_TIMEOUT, stream.direct_get_last_for_subject(subject)).await {
        Ok(Ok(message)) => Ok(Some(message.payload)),
        Ok(Err(error)) if error.kind() == DirectGetErrorKind::NotFound => Ok(None),
        Ok(Err(error)) => Err(Miss::Unavailable(error_chain(&error))),
        Err(_) => Err(Miss::Unavailable(format!("no answer within {LOOKUP_TIMEOUT:?}"))),
    }
}

/// Like [`lookup`], answered by the stream leader (`STREAM.MSG.GET`), which has every stored
/// record.
async fn leader_lookup<I>(stream: &stream::Stream<I>, subject: String) -> Result<Option<Bytes>, Miss> {
    match tokio::time::timeout(LOOKUP_TIMEOUT, stream.get_last_raw_message_by_subject(&subject)).await {
        Ok(Ok(message)) => Ok(Some(message.payload)),
        Ok(Err(error)) if error.kind() == RawMessageErrorKind::NoMessageFound => Ok(None),
        Ok(Err(error)) => Err(Miss::Unavailable(error_chain(&error))),
        Err(_) => Err(Miss::Unavailable(format!("no answer within {LOOKUP_TIMEOUT:?}"))),
    }
}

/// Opens the hello cache, or runs without one (`--hello-cache-max-bytes 0`, or a stream that
/// cannot be made: hellos then need Postgres, as they did before the cache).
pub(crate) async fn open_cache(
    nats: &async_nats::Client,
    jetstream: &async_nats::jetstream::Context,
    partitions: u32,
    replicas: usize,
    max_bytes: u64,
    retention: Duration,
) -> Option<HelloCache> {
    if max_bytes == 0 {
        info!("hello cache off (--hello-cache-max-bytes 0): hellos need Postgres");
        return None;
    }
    match HelloCache::open(nats.clone(), jetstream, partitions, replicas, max_bytes, retention).await {
        Ok(cache) => Some(cache),
        Err(error) => {
            warn!(error = %error_chain(error.as_ref()), "hello cache unavailable: hellos need Postgres");
            None
        }
    }
}

fn unix_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use threadspace_protocol::frames::ChannelKind;
    use threadspace_protocol::{ChannelId, OrgId};

    #[test]
    fn a_copy_round_trips_every_field_a_hello_needs() {
        let copy = Copy {
            read_at_ms: 1_700_000_000_000,
            user: UserInfo {
                id: UserId(7),
                org: OrgId(3),
                handle: "ada".into(),
                display_name: "Ada".into(),
                role: "member".into(),
            },
            deactivated: false,
            channels: vec![ChannelInfo {
                id: ChannelId(11),
                kind: ChannelKind::Public,
                name: Some("general".into()),
                last_read: 42,
            }],
            tokens_not_before: 1_600_000_000,
            session_live: true,
            session_expires_at: Some(1_800_000_000),
            dir_version: 9,
        };
        let bytes = serde_json::to_vec(&copy).expect("serializes");
        assert_eq!(serde_json::from_slice::<Copy>(&bytes).expect("decodes"), copy);
    }
}
