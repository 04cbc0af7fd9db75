//! Presence convergence after a fault that moves clients (docs/drills.md, "The verdict"): from
//! the strike until presence is whole again — every user of every org shown online or idle by
//! every gateway. The drill's users never leave (a fault's clients reconnect), so a user shown
//! offline is a view that has not converged.
//!
//! Each look is what a client that connects now is told: one `hello` per org on each gateway
//! (as one of the org's users, whose `welcome` carries the org's presence snapshot), closed at
//! once. A gateway that does not answer (it is down, draining, or starting) is skipped.

use std::collections::{BTreeSet, HashMap};
use std::time::Duration;

use threadspace_client::{Client, ConnectOptions};
use threadspace_protocol::frames::PresenceStatus;
use threadspace_protocol::{OrgId, UserId};
use tokio::sync::watch;

use crate::unix_micros;

/// Time between looks.
const LOOK_EVERY: Duration = Duration::from_millis(500);
/// How long after the recovery the watch waits for presence to become whole.
const AFTER_RECOVERY: Duration = Duration::from_secs(30);

/// Who looks, and whom they must see.
#[derive(Clone)]
pub(super) struct Observers {
    urls: Vec<String>,
    /// Per org: a token of one of its users, and every user of the org in the run.
    orgs: Vec<(String, BTreeSet<UserId>)>,
}

impl Observers {
    /// From the run's users: `(org, user, token)`.
    pub(super) fn new(urls: Vec<String>, users: impl IntoIterator<Item = (OrgId, UserId, String)>) -> Self {
        let mut by_org: HashMap<OrgId, (String, BTreeSet<UserId>)> = HashMap::new();
        for (org, user, token) in users {
            by_org.entry(org).or_insert_with(|| (token, BTreeSet::new())).1.insert(user);
        }
        let mut orgs: Vec<_> = by_org.into_iter().collect();
        orgs.sort_by_key(|(org, _)| org.0);
        Self { urls, orgs: orgs.into_iter().map(|(_, o)| o).collect() }
    }

    /// Whether every reachable gateway shows every user of every org present; `None` when no
    /// gateway answered.
    async fn whole(&self) -> Option<bool> {
        let mut answered = false;
        for url in &self.urls {
            for (token, users) in &self.orgs {
                let Some(present) = snapshot(url, token).await else { continue };
                answered = true;
                if !users.is_subset(&present) {
                    return Some(false);
                }
            }
        }
        answered.then_some(true)
    }
}

/// The users a new connection on `url` is told are online or idle; `None` if it got no welcome.
async fn snapshot(url: &str, token: &str) -> Option<BTreeSet<UserId>> {
    let mut client = Client::connect(&ConnectOptions::new(url.to_owned())).await.ok()?;
    let welcome = client.hello(token, None, Duration::from_secs(2)).await.ok()?;
    let _ = client.close(threadspace_protocol::frames::close_code::NORMAL).await;
    Some(
        welcome
            .presence
            .into_iter()
            .filter(|e| matches!(e.status, PresenceStatus::Online | PresenceStatus::Idle))
            .map(|e| e.user)
            .collect(),
    )
}

/// Watches from just before a strike until presence is whole after `recovered` turns true:
/// the longest stretch (ms) from a look that was not whole to the next whole look (0: every
/// look was whole); `None` if it was not whole again within [`AFTER_RECOVERY`] of the recovery.
/// A rolling restart breaks presence, if at all, once per gateway: the longest stretch is the
/// one the SLO (presence within 10 s) speaks of, not the restart's whole length.
pub(super) async fn converge(observers: Observers, mut recovered: watch::Receiver<bool>) -> Option<u64> {
    let mut recovered_at = None;
    let mut broken_since: Option<u64> = None;
    let mut longest = 0u64;
    loop {
        let looked_at = unix_micros();
        let whole = observers.whole().await;
        match (whole, broken_since) {
            (Some(false), None) => broken_since = Some(looked_at),
            (Some(true), Some(since)) => {
                longest = longest.max(unix_micros().saturating_sub(since) / 1000);
                broken_since = None;
            }
            _ => {}
        }
        if recovered_at.is_none() && *recovered.borrow_and_update() {
            recovered_at = Some(tokio::time::Instant::now());
        }
        if let Some(at) = recovered_at {
            if whole == Some(true) {
                return Some(longest);
            }
            if at.elapsed() > AFTER_RECOVERY {
                return None;
            }
        }
        tokio::time::sleep(LOOK_EVERY).await;
    }
}
