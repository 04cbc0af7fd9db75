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

/// Registers descriptions so `/metrics` documents itself, and creates the counters at zero so
/// `rate()` sees their first event.
pub(crate) fn describe() {
    describe_counter!(REQUESTS, "REST requests answered, by route, method and status class");
    describe_histogram!(REQUEST_DURATION, Unit::Seconds, "Time to answer a REST request, by route");
    describe_histogram!(HISTORY_DURATION, Unit::Seconds, "Postgres time of a history page or search");
    describe_counter!(AUTH, "Bearer token authentications, by result");
    describe_counter!(MEMBERSHIP_CHANGES, "Membership changes committed, by change");
    describe_gauge!(READY, "1 while the service answers requests, 0 while starting or draining");
    for result in ["ok", "rejected"] {
        metrics::counter!(AUTH, "result" => result).absolute(0);
    }
    for change in ["joined", "left"] {
        metrics::counter!(MEMBERSHIP_CHANGES, "change" => change).absolute(0);
    }
}
