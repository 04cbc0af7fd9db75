//! Every metric the api service emits, declared in one place. Labels come from bounded sets
//! only (`route` is the matched route template, never the raw path).

use metrics::{describe_counter, describe_gauge, describe_histogram, Unit};

/// Labels `route` (template, or `unmatched`), `method`, `status` (the code's class: `2xx`…).
pub(crate) const REQUESTS: &str = "threadspace_api_requests_total";
/// Label `route`.
pub(crate) const REQUEST_DURATION: &str = "threadspace_api_request_duration_seconds";
/// Label `kind`: `page` or `search`.
pub(crate) const HISTORY_DURATION: &str = "threadspace_api_history_duration_seconds";
/// Label `result`: `ok`, `rejected`.
pub(crate) const AUTH: &str = "threadspace_api_auth_total";
/// Label `change`: `joined`, `left`.
pub(crate) const MEMBERSHIP_CHANGES: &str = "threadspace_api_membership_changes_total";
pub(crate) const READY: &str = "threadspace_api_ready";
/// Label `scope`: `ip`, `user`, `bot_credential`, `login`.
pub(crate) const RATE_LIMITED: &str = "threadspace_api_rate_limited_total";
/// Label `result`: `ok`, `failed`, `throttled`.
pub(crate) const LOGINS: &str = "threadspace_api_logins_total";
pub(crate) const PASSWORD_HASH_DURATION: &str = "threadspace_api_password_hash_duration_seconds";
/// Label `result`: `rotated`, `reused`, `refused`.
pub(crate) const REFRESHES: &str = "threadspace_api_refreshes_total";
/// Label `result`: `published`, `swept`.
pub(crate) const DIRECTORY_EVENTS: &str = "threadspace_api_directory_events_total";
/// Orgs whose directory events stayed unpublished over 2 s, at the sweeper's last look: above
/// zero for long, the feed is stuck (ended sessions and removals do not reach the gateways).
pub(crate) const DIRECTORY_STALE_ORGS: &str = "threadspace_api_directory_stale_orgs";
/// Label `kind`: `invite`, `password_reset`, `signup`.
pub(crate) const MAILS: &str = "threadspace_api_mails_total";
/// Labels `via` (`rest`, `webhook`) and `result` (`ok`, `duplicate`, `id_reused`, `failed`).
pub(crate) const MESSAGES_SENT: &str = "threadspace_api_messages_sent_total";
/// Publish to PubAck latency of REST and webhook sends.
pub(crate) const PUBLISH_DURATION: &str = "threadspace_api_publish_duration_seconds";
/// Label `action` (the documented audit actions, docs/accounts.md).
pub(crate) const AUDIT_EVENTS: &str = "threadspace_api_audit_events_total";
pub(crate) const AUDIT_WRITE_FAILURES: &str = "threadspace_api_audit_write_failures_total";
/// Labels: `kind` (`export_user`, `export_org`, `erase_user`), `result` (`done`, `failed`).
pub(crate) const DATA_JOBS: &str = "threadspace_api_data_jobs_total";
/// Labels: `kind`.
pub(crate) const DATA_JOB_DURATION: &str = "threadspace_api_data_job_duration_seconds";
pub(crate) const EXPORT_BYTES: &str = "threadspace_api_export_bytes_total";
/// Labels: `kind` (a registry kind's name, or `search`).
pub(crate) const ERASED_RECORDS: &str = "threadspace_api_erased_records_total";

/// Registers descriptions so `/metrics` documents itself, and creates the counters at zero so
/// `rate()` sees their first event.
pub(crate) fn describe() {
    describe_counter!(REQUESTS, "REST requests answered, by route, method and status class");
    describe_histogram!(REQUEST_DURATION, Unit::Seconds, "Time to answer a REST request, by route");
    describe_histogram!(HISTORY_DURATION, Unit::Seconds, "Postgres time of a history page or search");
    describe_counter!(AUTH, "Bearer token authentications, by result");
    describe_counter!(MEMBERSHIP_CHANGES, "Membership changes committed, by change");
    describe_counter!(RATE_LIMITED, "Requests refused with 429, by scope (ip, user, bot_credential, login)");
    describe_counter!(LOGINS, "Password logins, by result");
    describe_histogram!(
        PASSWORD_HASH_DURATION,
        Unit::Seconds,
        "Time to hash or verify a password, queueing included"
    );
    describe_counter!(REFRESHES, "Refresh-token presentations, by result (reused: the session was revoked)");
    describe_counter!(
        DIRECTORY_EVENTS,
        "Directory events put into the stream, by result (swept: left behind by a failure)"
    );
    describe_counter!(MAILS, "Mails handed to the mailer, by kind");
    describe_counter!(AUDIT_EVENTS, "Audit records written, by action");
    describe_counter!(MESSAGES_SENT, "Messages sent over REST and webhooks, by way and result");
    describe_histogram!(
        PUBLISH_DURATION,
        Unit::Seconds,
        "Publish to PubAck latency of REST and webhook sends"
    );
    for via in ["rest", "webhook"] {
        for result in ["ok", "duplicate", "id_reused", "failed"] {
            metrics::counter!(MESSAGES_SENT, "via" => via, "result" => result).absolute(0);
        }
    }
    describe_counter!(AUDIT_WRITE_FAILURES, "Audit records that could not be written (the action stood)");
    metrics::counter!(AUDIT_WRITE_FAILURES).absolute(0);
    describe_gauge!(
        DIRECTORY_STALE_ORGS,
        "Orgs with directory events unpublished for over 2 s at the sweeper's last look"
    );
    metrics::gauge!(DIRECTORY_STALE_ORGS).set(0.0);
    for scope in ["ip", "user", "login"] {
        metrics::counter!(RATE_LIMITED, "scope" => scope).absolute(0);
    }
    for result in ["ok", "failed", "throttled"] {
        metrics::counter!(LOGINS, "result" => result).absolute(0);
    }
    for result in ["rotated", "reused", "refused"] {
        metrics::counter!(REFRESHES, "result" => result).absolute(0);
    }
    for result in ["published", "swept"] {
        metrics::counter!(DIRECTORY_EVENTS, "result" => result).absolute(0);
    }
    describe_gauge!(READY, "1 while the service answers requests, 0 while starting or draining");
    describe_counter!(DATA_JOBS, "Export and erasure jobs finished, by kind and result");
    describe_histogram!(DATA_JOB_DURATION, Unit::Seconds, "Time an export or erasure job ran, by kind");
    describe_counter!(EXPORT_BYTES, "Bytes of export documents produced");
    describe_counter!(ERASED_RECORDS, "Records an erasure deleted or scrubbed, by kind of data");
    for kind in ["export_user", "export_org", "erase_user"] {
        for result in ["done", "failed"] {
            metrics::counter!(DATA_JOBS, "kind" => kind, "result" => result).absolute(0);
        }
    }
    for result in ["ok", "rejected"] {
        metrics::counter!(AUTH, "result" => result).absolute(0);
    }
    for change in ["joined", "left"] {
        metrics::counter!(MEMBERSHIP_CHANGES, "change" => change).absolute(0);
    }
}
