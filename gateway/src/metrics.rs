//! Every metric the gateway emits, declared in one place. Labels come from bounded sets only.

use metrics::{describe_counter, describe_gauge, describe_histogram, Unit};

pub(crate) const CONNECTIONS: &str = "threadspace_gateway_connections";
pub(crate) const CONNECTIONS_ACCEPTED: &str = "threadspace_gateway_connections_accepted_total";
pub(crate) const CONNECTIONS_REFUSED: &str = "threadspace_gateway_connections_refused_total";
/// Label `reason`: a close reason from [`close_reason`].
pub(crate) const CONNECTIONS_CLOSED: &str = "threadspace_gateway_connections_closed_total";
/// Label `code`: an [`threadspace_protocol::ErrorCode`] string.
pub(crate) const ERRORS: &str = "threadspace_gateway_errors_total";
/// Label `result`: `ok`, `duplicate`, `id_reused`, `failed`.
pub(crate) const PUBLISHED: &str = "threadspace_gateway_messages_published_total";
pub(crate) const PUBLISH_DURATION: &str = "threadspace_gateway_publish_duration_seconds";
pub(crate) const FANOUT_MESSAGES: &str = "threadspace_gateway_fanout_messages_total";
pub(crate) const FANOUT_DELIVERIES: &str = "threadspace_gateway_fanout_deliveries_total";
/// Gateway time at fanout minus the message's publish time.
pub(crate) const FANOUT_LAG: &str = "threadspace_gateway_fanout_lag_seconds";
pub(crate) const FANOUT_REDELIVERED: &str = "threadspace_gateway_fanout_redelivered_total";
pub(crate) const FANOUT_UNDECODABLE: &str = "threadspace_gateway_fanout_undecodable_total";
/// The fanout's watchdog recreated a consumer that handed over nothing while the stream grew.
pub(crate) const FANOUT_STALLS: &str = "threadspace_gateway_fanout_stalls_total";
/// The fanout's consumer handed over a record past one the stream leader holds; recreated.
pub(crate) const FANOUT_SKIPS: &str = "threadspace_gateway_fanout_skips_total";
/// A new fanout consumer landed on a replica that lags the stream leader; recreated at once.
pub(crate) const FANOUT_LAGGING_PLACEMENTS: &str = "threadspace_gateway_fanout_lagging_placements_total";
/// Records the fanout read from the stream leader, one request each, while it had no consumer.
pub(crate) const FANOUT_FROM_LEADER: &str = "threadspace_gateway_fanout_from_leader_total";
/// Label `result`: `fresh`, `replayed`, `history_required`.
pub(crate) const RESUMES: &str = "threadspace_gateway_resumes_total";
pub(crate) const REPLAYED_MESSAGES: &str = "threadspace_gateway_replayed_messages_total";
/// Replayed stream records read from the stream leader because the replay consumer's replica
/// had not applied them yet.
pub(crate) const REPLAYED_FROM_LEADER: &str = "threadspace_gateway_replayed_from_leader_total";
/// Label `result`: `ok`, `rejected`.
pub(crate) const AUTH: &str = "threadspace_gateway_auth_total";
pub(crate) const HELLO_REREADS: &str = "threadspace_gateway_hello_rereads_total";
/// Directory reads of hellos, by where the answer came from (`postgres`, `cache` while Postgres
/// was down) or why there was none (`stale`, `missing`, `unavailable`).
pub(crate) const HELLO_SESSIONS: &str = "threadspace_gateway_hello_sessions_total";
/// Copies of hello reads that could not be written to the hello cache.
pub(crate) const HELLO_CACHE_WRITE_FAILURES: &str = "threadspace_gateway_hello_cache_write_failures_total";
pub(crate) const DIRECTORY_EVENTS: &str = "threadspace_gateway_directory_events_total";
/// Label `result`: `moved`, `stale`, `not_member`, `failed`.
pub(crate) const READS: &str = "threadspace_gateway_read_markers_total";
/// Label `result`: `published`, `throttled`, `not_member`.
pub(crate) const TYPING: &str = "threadspace_gateway_typing_total";
pub(crate) const TYPING_DELIVERIES: &str = "threadspace_gateway_typing_deliveries_total";
/// Label `kind`: `delta`, `full`, `bye`.
pub(crate) const PRESENCE_BEATS_SENT: &str = "threadspace_gateway_presence_beats_sent_total";
pub(crate) const PRESENCE_BEAT_BYTES_SENT: &str = "threadspace_gateway_presence_beat_bytes_sent_total";
/// Label `kind`: `delta`, `full`, `bye`.
pub(crate) const PRESENCE_BEATS_RECEIVED: &str = "threadspace_gateway_presence_beats_received_total";
pub(crate) const PRESENCE_BEAT_BYTES_RECEIVED: &str =
    "threadspace_gateway_presence_beat_bytes_received_total";
pub(crate) const PRESENCE_BEAT_GAPS: &str = "threadspace_gateway_presence_beat_gaps_total";
pub(crate) const PRESENCE_EXPIRIES: &str = "threadspace_gateway_presence_gateway_expiries_total";
pub(crate) const PRESENCE_EXPIRED_USERS: &str = "threadspace_gateway_presence_expired_users_total";
pub(crate) const PRESENCE_LOCAL_CHANGES: &str = "threadspace_gateway_presence_local_changes_total";
/// Label `status`: `online`, `idle`, `offline`.
pub(crate) const PRESENCE_CHANGES: &str = "threadspace_gateway_presence_changes_total";
pub(crate) const PRESENCE_COALESCED: &str = "threadspace_gateway_presence_coalesced_total";
pub(crate) const PRESENCE_FRAMES: &str = "threadspace_gateway_presence_frames_total";
/// Label `status`: `online`, `idle`.
pub(crate) const PRESENCE_USERS: &str = "threadspace_gateway_presence_users";
pub(crate) const PRESENCE_GATEWAYS: &str = "threadspace_gateway_presence_gateways";
/// Label `status`: `online`, `idle`.
pub(crate) const PRESENCE_SIGNALS: &str = "threadspace_gateway_presence_signals_total";
pub(crate) const READY: &str = "threadspace_gateway_ready";

/// Registers descriptions so `/metrics` documents itself.
pub(crate) fn describe() {
    describe_gauge!(CONNECTIONS, "Open client WebSocket connections");
    describe_counter!(READS, "Read markers from local clients, by result");
    describe_counter!(TYPING, "Typing indicators from local clients, by result");
    describe_counter!(TYPING_DELIVERIES, "Typing indicators queued to local connections");
    describe_counter!(CONNECTIONS_ACCEPTED, "WebSocket connections upgraded");
    describe_counter!(CONNECTIONS_REFUSED, "TCP connections refused at the connection limit");
    describe_counter!(CONNECTIONS_CLOSED, "WebSocket connections closed, by reason");
    describe_counter!(ERRORS, "Error frames sent to clients, by code");
    describe_counter!(PUBLISHED, "Client messages published to JetStream, by result");
    describe_histogram!(PUBLISH_DURATION, Unit::Seconds, "Publish to PubAck latency");
    describe_counter!(FANOUT_MESSAGES, "Stored messages read by this gateway's fanout consumer");
    describe_counter!(FANOUT_DELIVERIES, "Message frames queued to local connections");
    describe_histogram!(FANOUT_LAG, Unit::Seconds, "Publish time to fanout time");
    describe_counter!(
        FANOUT_REDELIVERED,
        "Stream records the fanout had already delivered (skipped, not duplicated)"
    );
    describe_counter!(FANOUT_UNDECODABLE, "Stream records the fanout could not decode");
    describe_counter!(
        FANOUT_STALLS,
        "Fanout consumers recreated because they stalled (the stream grew, or could not answer) or went back before their start"
    );
    describe_counter!(
        FANOUT_SKIPS,
        "Fanout consumers recreated because they skipped a record the stream leader holds"
    );
    describe_counter!(
        FANOUT_LAGGING_PLACEMENTS,
        "New fanout consumers recreated because JetStream placed them on a replica that lags the stream leader"
    );
    describe_counter!(
        FANOUT_FROM_LEADER,
        "Stream records the fanout read from the stream leader while it could not create its consumer"
    );
    describe_counter!(RESUMES, "Hellos by resume outcome");
    describe_counter!(REPLAYED_MESSAGES, "Messages replayed to resuming clients");
    describe_counter!(
        REPLAYED_FROM_LEADER,
        "Stream records a resume read from the stream leader because its consumer's replica lagged"
    );
    describe_counter!(AUTH, "Token verifications, by result");
    describe_counter!(
        HELLO_REREADS,
        "Hellos whose directory read predated a directory event already applied, read again"
    );
    describe_counter!(
        HELLO_SESSIONS,
        "Directory reads of hellos, by source: postgres, cache (Postgres down, an up-to-date copy), stale (Postgres down, the copy predates a directory change), missing (Postgres down, no copy), unavailable (Postgres and the cache down)"
    );
    describe_counter!(HELLO_CACHE_WRITE_FAILURES, "Hello reads that could not be copied to the hello cache");
    describe_counter!(
        DIRECTORY_EVENTS,
        "Directory events read from the stream, by change (member, role, deactivated, reactivated, sessions_ended, channel_updated, channel_archived, channel_unarchived; repeated: a version applied before)"
    );
    describe_counter!(PRESENCE_BEATS_SENT, "Presence heartbeats published by this gateway, by kind");
    describe_counter!(PRESENCE_BEAT_BYTES_SENT, "Bytes of presence heartbeats published");
    describe_counter!(PRESENCE_BEATS_RECEIVED, "Presence heartbeats received from all gateways, by kind");
    describe_counter!(PRESENCE_BEAT_BYTES_RECEIVED, "Bytes of presence heartbeats received");
    describe_counter!(PRESENCE_BEAT_GAPS, "Heartbeats found missing (repaired by the next full snapshot)");
    describe_counter!(PRESENCE_EXPIRIES, "Gateways expired after 3 silent heartbeat intervals");
    describe_counter!(PRESENCE_EXPIRED_USERS, "Users dropped with an expired gateway");
    describe_counter!(PRESENCE_LOCAL_CHANGES, "Presence changes of local users published");
    describe_counter!(PRESENCE_CHANGES, "Merged presence changes announced to local clients, by status");
    describe_counter!(PRESENCE_COALESCED, "Presence changes that cancelled out within one window");
    describe_counter!(PRESENCE_FRAMES, "Presence frames queued to local connections");
    describe_gauge!(PRESENCE_USERS, "Users online or idle anywhere, by status");
    describe_gauge!(PRESENCE_GATEWAYS, "Gateways in the presence table");
    describe_counter!(PRESENCE_SIGNALS, "Client presence signals, by status");
    describe_gauge!(READY, "1 while the gateway accepts connections, 0 while starting or draining");
}

/// Every value [`close_reason`] returns (the `reason` label of [`CONNECTIONS_CLOSED`]).
pub(crate) const CLOSE_REASONS: [&str; 13] = [
    "normal",
    "session_ended",
    "draining",
    "protocol_error",
    "too_large",
    "internal",
    "idle_timeout",
    "auth_failed",
    "hello_timeout",
    "hello_required",
    "slow_consumer",
    "rate_limited",
    "disconnected",
];

/// Creates every counter at zero, with every value of its bounded label set, so each series
/// exists from the first scrape. A labelled counter otherwise appears at its first event, with
/// value 1, and `rate()`/`increase()` see no increase from a series' first sample: the first
/// failed publish or slow-consumer close would be invisible to the alerts. (`ERRORS`, labelled
/// by the protocol's error codes, appears on first use.)
pub(crate) fn register_zero() {
    for name in [
        CONNECTIONS_ACCEPTED,
        CONNECTIONS_REFUSED,
        FANOUT_MESSAGES,
        FANOUT_DELIVERIES,
        FANOUT_REDELIVERED,
        FANOUT_UNDECODABLE,
        FANOUT_STALLS,
        FANOUT_SKIPS,
        FANOUT_LAGGING_PLACEMENTS,
        FANOUT_FROM_LEADER,
        REPLAYED_MESSAGES,
        REPLAYED_FROM_LEADER,
        DIRECTORY_EVENTS,
        HELLO_REREADS,
        HELLO_CACHE_WRITE_FAILURES,
        TYPING_DELIVERIES,
        PRESENCE_BEAT_BYTES_SENT,
        PRESENCE_BEAT_BYTES_RECEIVED,
        PRESENCE_BEAT_GAPS,
        PRESENCE_EXPIRIES,
        PRESENCE_EXPIRED_USERS,
        PRESENCE_LOCAL_CHANGES,
        PRESENCE_COALESCED,
        PRESENCE_FRAMES,
    ] {
        metrics::counter!(name).absolute(0);
    }
    let labelled: [(&'static str, &'static str, &[&'static str]); 11] = [
        (CONNECTIONS_CLOSED, "reason", &CLOSE_REASONS),
        (PUBLISHED, "result", &["ok", "duplicate", "id_reused", "failed"]),
        (RESUMES, "result", &["fresh", "replayed", "history_required"]),
        (AUTH, "result", &["ok", "rejected"]),
        (HELLO_SESSIONS, "source", &["postgres", "cache", "stale", "missing", "unavailable"]),
        (READS, "result", &["moved", "stale", "not_member", "failed"]),
        (TYPING, "result", &["published", "throttled", "not_member"]),
        (PRESENCE_BEATS_SENT, "kind", &["delta", "full", "bye"]),
        (PRESENCE_BEATS_RECEIVED, "kind", &["delta", "full", "bye"]),
        (PRESENCE_CHANGES, "status", &["online", "idle", "offline"]),
        (PRESENCE_SIGNALS, "status", &["online", "idle"]),
    ];
    for (name, label, values) in labelled {
        for &value in values {
            metrics::counter!(name, label => value).absolute(0);
        }
    }
}

/// The label of a directory change, for `DIRECTORY_EVENTS`.
pub(crate) fn directory_change(change: &threadspace_protocol::stored::DirectoryChange) -> &'static str {
    use threadspace_protocol::stored::DirectoryChange as C;
    match change {
        C::Member { .. } => "member",
        C::Role { .. } => "role",
        C::Deactivated { .. } => "deactivated",
        C::Reactivated { .. } => "reactivated",
        C::SessionsEnded { .. } => "sessions_ended",
        C::ChannelUpdated { .. } => "channel_updated",
        C::ChannelArchived { .. } => "channel_archived",
        C::ChannelUnarchived { .. } => "channel_unarchived",
    }
}

/// Bounded label for a close code.
pub(crate) fn close_reason(code: u16) -> &'static str {
    use threadspace_protocol::frames::close_code as c;
    match code {
        c::NORMAL => "normal",
        c::GOING_AWAY => "draining",
        c::PROTOCOL_ERROR => "protocol_error",
        c::TOO_LARGE => "too_large",
        c::INTERNAL => "internal",
        c::IDLE_TIMEOUT => "idle_timeout",
        c::AUTH_FAILED => "auth_failed",
        c::HELLO_TIMEOUT => "hello_timeout",
        c::SESSION_ENDED => "session_ended",
        c::HELLO_REQUIRED => "hello_required",
        c::SLOW_CONSUMER => "slow_consumer",
        c::RATE_LIMITED => "rate_limited",
        _ => "disconnected",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn close_reasons_lists_every_reason() {
        for code in 0..=u16::MAX {
            assert!(CLOSE_REASONS.contains(&close_reason(code)), "{code} → {}", close_reason(code));
        }
    }

    #[test]
    fn counters_are_exported_at_zero_before_their_first_event() {
        let recorder = metrics_exporter_prometheus::PrometheusBuilder::new().build_recorder();
        let handle = recorder.handle();
        metrics::with_local_recorder(&recorder, || {
            describe();
            register_zero();
        });
        let text = handle.render();
        for series in [
            format!("{PUBLISHED}{{result=\"failed\"}} 0"),
            format!("{CONNECTIONS_CLOSED}{{reason=\"slow_consumer\"}} 0"),
            format!("{CONNECTIONS_REFUSED} 0"),
            format!("{AUTH}{{result=\"rejected\"}} 0"),
        ] {
            assert!(text.lines().any(|l| l == series), "{series} missing from:\n{text}");
        }
    }
}
