//! The system under test: a local stack started by `threadspace-dev up` (its `stack.json`
//! and keys), and the users loadgen connects as.

use std::path::Path;
use std::time::Duration;

use anyhow::Context as _;
use threadspace_devstack::keys::Keys;
use threadspace_devstack::stack::{read_state, Stack, StackOptions, StackState};
use threadspace_protocol::token::Identity;
use threadspace_protocol::{OrgId, UserId};
use threadspace_store::seed::SeedSpec;

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
        let client = threadspace_store::connect(self.state.postgres_url()).await?;
        first_users(&client, n).await
    }

    pub fn token(&self, identity: Identity) -> String {
        self.keys.token(identity, Duration::from_secs(6 * 3600))
    }
}

/// The first `n` users by id, with their orgs; an error if fewer exist.
pub async fn first_users(client: &tokio_postgres::Client, n: usize) -> anyhow::Result<Vec<Identity>> {
    let rows = client.query("SELECT id, org_id FROM users ORDER BY id LIMIT $1", &[&(n as i64)]).await?;
    anyhow::ensure!(
        rows.len() == n,
        "only {} users exist; seed more with `./threadspace seed --orgs N`",
        rows.len()
    );
    Ok(rows.iter().map(|r| Identity::new(UserId(r.get(0)), OrgId(r.get(1)))).collect())
}

/// Starts a private stack (`options`, with room for 19,000 connections per gateway) seeded
/// with `users` users in orgs of `org_size`.
pub async fn seeded_stack(
    mut options: StackOptions,
    users: usize,
    org_size: usize,
    slug_prefix: &str,
    seed: u64,
) -> anyhow::Result<Stack> {
    options.gateway_args.extend(["--max-connections".into(), "19000".into()]);
    println!(
        "starting nats-server, PostgreSQL, {} gateways and {} bridges…",
        options.gateways, options.bridges
    );
    let stack = Stack::start(options).await?;
    let orgs = users.div_ceil(org_size);
    let started = std::time::Instant::now();
    stack
        .seed(&SeedSpec {
            orgs: orgs as u32,
            users_per_org: org_size as u32,
            slug_prefix: slug_prefix.into(),
            seed,
        })
        .await?;
    println!("seeded {orgs} orgs × {org_size} users in {:.1} s", started.elapsed().as_secs_f64());
    Ok(stack)
}
