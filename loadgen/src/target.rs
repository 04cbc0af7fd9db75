//! The system under test: a local stack started by `threadspace-dev up` (its `stack.json`
//! and keys), and the users loadgen connects as.

use std::path::Path;
use std::time::Duration;

use anyhow::Context as _;
use threadspace_devstack::keys::Keys;
use threadspace_devstack::stack::{read_state, StackState};
use threadspace_protocol::token::Identity;
use threadspace_protocol::{OrgId, UserId};

/// A running stack and a way to mint tokens for its users.
pub struct Target {
    pub state: StackState,
    pub keys: Keys,
}

impl Target {
    pub fn open(dir: &Path) -> anyhow::Result<Self> {
        let state = read_state(dir).with_context(|| {
            format!("no running stack recorded in {} (run `./threadspace up`)", dir.display())
        })?;
        let keys = Keys::load_or_create(&dir.join("keys")).context("cannot load the stack's keys")?;
        Ok(Self { state, keys })
    }

    /// The first `n` users by id, with their orgs (seed more with `threadspace-dev seed`).
    pub async fn users(&self, n: usize) -> anyhow::Result<Vec<Identity>> {
        let client = threadspace_store::connect(&self.state.postgres.url).await?;
        let rows = client.query("SELECT id, org_id FROM users ORDER BY id LIMIT $1", &[&(n as i64)]).await?;
        anyhow::ensure!(
            rows.len() == n,
            "only {} users exist; seed more with `./threadspace seed --orgs N`",
            rows.len()
        );
        Ok(rows.iter().map(|r| Identity { user: UserId(r.get(0)), org: OrgId(r.get(1)) }).collect())
    }

    pub fn token(&self, identity: Identity) -> String {
        self.keys.token(identity, Duration::from_secs(6 * 3600))
    }
}
