//! Recording to the audit log (docs/accounts.md, "Audit log") and pruning it by retention.
//! A record is written after the action it describes has committed; a failed write is logged
//! and counted (`threadspace_api_audit_write_failures_total`), never turned into a failed
//! request: the action already happened.

use std::time::Duration;

use threadspace_store::audit::AuditEntry;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::metrics as m;
use crate::parts::Changes;

/// Appends `entry` to its org's audit log.
pub(crate) async fn record(changes: &Changes, entry: AuditEntry) {
    match changes.store.audit(&entry).await {
        Ok(()) => metrics::counter!(m::AUDIT_EVENTS, "action" => entry.action).increment(1),
        Err(e) => {
            metrics::counter!(m::AUDIT_WRITE_FAILURES).increment(1);
            warn!(action = entry.action, org = %entry.org, error = %threadspace_protocol::error_chain(&e),
                  "audit record not written");
        }
    }
}

/// Deletes records older than `retention`, at start and then hourly, until `stop`.
pub(crate) async fn prune(store: threadspace_store::Accounts, retention: Duration, stop: CancellationToken) {
    let mut every = tokio::time::interval(Duration::from_secs(3600));
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            _ = every.tick() => {}
        }
        match store.prune_audit(retention).await {
            Ok(0) => {}
            Ok(n) => info!(deleted = n, ?retention, "audit records past retention deleted"),
            Err(e) => {
                warn!(error = %threadspace_protocol::error_chain(&e), "audit retention failed; retrying in an hour")
            }
        }
    }
}
