//! Bulk seeding: N orgs × M users with the ThreadSpace channel layout, written with binary
//! `COPY` so that 250,000 users take seconds, not hours.
//!
//! Layout of every org (indices are the user's position in the org):
//! - `general` (public): everyone; `random` (public): every other user;
//! - `team-k` (public): users `10k .. 10k+9`;
//! - `private-k` (private): one per 25 users, 5 members picked by the seeded RNG;
//! - DMs: each user with users `i+1` and `i+3` (mod M), deduplicated;
//! - group DMs: one per 10 users, 3 or 4 members picked by the seeded RNG.
//!
//! The same spec and seed always give the same ids and memberships, so loadgen can derive
//! who should receive what without asking the database.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use futures_util::pin_mut;
use rand::rngs::StdRng;
use rand::{RngExt as _, SeedableRng as _};
use tokio_postgres::binary_copy::BinaryCopyInWriter;
use tokio_postgres::types::{ToSql, Type};

/// Handles of the first users of every org, so that demo users have names.
const NAMES: [&str; 20] = [
    "alice", "bob", "carol", "dave", "erin", "frank", "grace", "heidi", "ivan", "judy", "mallory", "niaj",
    "olivia", "peggy", "rupert", "sybil", "trent", "victor", "walter", "yolanda",
];

/// The password of every seeded user (`<handle>@<org slug>.test`): load tools log in with it
/// (`loadgen login`, a run's `api_logins`). Seeded orgs are for development and load tests only.
pub const SEED_PASSWORD: &str = "loadgen-password";

/// The argon2id hash of [`SEED_PASSWORD`] with the api service's parameters (argon2's defaults,
/// m = 19 MiB, t = 2, p = 1: docs/accounts.md), computed once per seed run so a login of a
/// seeded user costs what any login costs.
fn seed_password_hash() -> String {
    use argon2::password_hash::{PasswordHasher as _, SaltString};
    let salt = SaltString::encode_b64(&rand::random::<[u8; 16]>()).expect("16 bytes is a valid salt");
    argon2::Argon2::default()
        .hash_password(SEED_PASSWORD.as_bytes(), &salt)
        .expect("argon2 hashes")
        .to_string()
}

/// What to seed.
#[derive(Clone, Debug)]
pub struct SeedSpec {
    pub orgs: u32,
    pub users_per_org: u32,
    /// Org slugs are `<slug_prefix>-<n>` with n counting from 1.
    pub slug_prefix: String,
    /// RNG seed for the random parts of the layout.
    pub seed: u64,
}

/// What was written.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SeedReport {
    pub orgs: u64,
    pub users: u64,
    pub channels: u64,
    pub memberships: u64,
    pub elapsed: Duration,
}

#[derive(Debug, thiserror::Error)]
pub enum SeedError {
    #[error("invalid seed spec: {0}")]
    Spec(&'static str),
    #[error("seeding failed while {step}")]
    Postgres {
        step: &'static str,
        #[source]
        source: tokio_postgres::Error,
    },
}

/// One org's rows, before they are written.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct OrgPlan {
    pub org_id: i64,
    pub slug: String,
    /// (id, handle, display name, role)
    pub users: Vec<(i64, String, String, &'static str)>,
    /// (id, kind, name)
    pub channels: Vec<(i64, &'static str, Option<String>)>,
    /// (channel id, user id)
    pub members: Vec<(i64, i64)>,
}

/// Plans one org. `first_user_id` and `first_channel_id` are the ids its rows start at.
pub fn plan_org(
    org_id: i64,
    slug: String,
    users_per_org: u32,
    first_user_id: i64,
    first_channel_id: i64,
    rng: &mut StdRng,
) -> OrgPlan {
    let m = i64::from(users_per_org);
    let mut plan = OrgPlan { org_id, slug, ..Default::default() };
    for i in 0..m {
        let handle = match NAMES.get(i as usize) {
            Some(name) => (*name).to_owned(),
            None => format!("user-{}", i + 1),
        };
        let display = capitalize(&handle);
        let role = match i {
            0 => "owner",
            1 => "admin",
            _ => "member",
        };
        plan.users.push((first_user_id + i, handle, display, role));
    }
    let user = |i: i64| first_user_id + i;
    let mut next_channel = first_channel_id;
    let mut channel = |plan: &mut OrgPlan, kind: &'static str, name: Option<String>, members: &[i64]| {
        let id = next_channel;
        next_channel += 1;
        plan.channels.push((id, kind, name));
        for &i in members {
            plan.members.push((id, user(i)));
        }
    };

    let everyone: Vec<i64> = (0..m).collect();
    channel(&mut plan, "public", Some("general".into()), &everyone);
    let evens: Vec<i64> = (0..m).step_by(2).collect();
    channel(&mut plan, "public", Some("random".into()), &evens);
    for team in 0..(m + 9) / 10 {
        let members: Vec<i64> = (team * 10..((team + 1) * 10).min(m)).collect();
        channel(&mut plan, "public", Some(format!("team-{}", team + 1)), &members);
    }
    if m >= 2 {
        for k in 0..(m / 25).max(1) {
            let members = pick_distinct(rng, m, 5.min(m));
            channel(&mut plan, "private", Some(format!("private-{}", k + 1)), &members);
        }
        let mut pairs = BTreeSet::new();
        for i in 0..m {
            for step in [1, 3] {
                let j = (i + step) % m;
                if i != j {
                    pairs.insert((i.min(j), i.max(j)));
                }
            }
        }
        for (a, b) in pairs {
            channel(&mut plan, "dm", None, &[a, b]);
        }
    }
    if m >= 3 {
        for _ in 0..(m / 10).max(1) {
            let size = if m >= 4 { rng.random_range(3..=4) } else { 3 };
            let members = pick_distinct(rng, m, size);
            channel(&mut plan, "group_dm", None, &members);
        }
    }
    plan
}

fn pick_distinct(rng: &mut StdRng, m: i64, n: i64) -> Vec<i64> {
    let mut picked = BTreeSet::new();
    while (picked.len() as i64) < n {
        picked.insert(rng.random_range(0..m));
    }
    picked.into_iter().collect()
}

fn capitalize(handle: &str) -> String {
    let mut chars = handle.chars();
    match chars.next() {
        Some(first) => first.to_uppercase().chain(chars).collect(),
        None => String::new(),
    }
}

/// Seeds `spec` into the database in one transaction.
pub async fn seed(client: &mut tokio_postgres::Client, spec: &SeedSpec) -> Result<SeedReport, SeedError> {
    if spec.orgs == 0 || spec.users_per_org == 0 {
        return Err(SeedError::Spec("orgs and users per org must be at least 1"));
    }
    if spec.users_per_org > 100_000 {
        return Err(SeedError::Spec("users per org must be at most 100000"));
    }
    if !spec.slug_prefix.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        || spec.slug_prefix.is_empty()
        || spec.slug_prefix.len() > 40
    {
        return Err(SeedError::Spec("slug prefix must be 1 to 40 characters of [a-z0-9-]"));
    }
    let started = Instant::now();
    let pg = |step| move |source| SeedError::Postgres { step, source };
    let tx = client.transaction().await.map_err(pg("starting the transaction"))?;
    let next_id = |table: &'static str| format!("SELECT coalesce(max(id), 0) + 1 FROM {table}");
    let first_org: i64 = tx.query_one(&next_id("orgs"), &[]).await.map_err(pg("reading ids"))?.get(0);
    let mut next_user: i64 = tx.query_one(&next_id("users"), &[]).await.map_err(pg("reading ids"))?.get(0);
    let mut next_channel: i64 =
        tx.query_one(&next_id("channels"), &[]).await.map_err(pg("reading ids"))?.get(0);
    let existing: i64 = tx
        .query_one("SELECT count(*) FROM orgs WHERE slug LIKE $1 || '-%'", &[&spec.slug_prefix])
        .await
        .map_err(pg("reading orgs"))?
        .get(0);

    let mut rng = StdRng::seed_from_u64(spec.seed);
    let mut report = SeedReport::default();
    let orgs_sink =
        tx.copy_in("COPY orgs (id, slug, name) FROM STDIN BINARY").await.map_err(pg("copying orgs"))?;
    let orgs_writer = BinaryCopyInWriter::new(orgs_sink, &[Type::INT8, Type::TEXT, Type::TEXT]);
    pin_mut!(orgs_writer);
    let mut plans = Vec::with_capacity(spec.orgs as usize);
    for k in 0..i64::from(spec.orgs) {
        let org_id = first_org + k;
        let slug = format!("{}-{}", spec.slug_prefix, existing + k + 1);
        let name = format!("{} {}", capitalize(&spec.slug_prefix), existing + k + 1);
        orgs_writer
            .as_mut()
            .write(&[&org_id as &(dyn ToSql + Sync), &slug, &name])
            .await
            .map_err(pg("copying orgs"))?;
        let plan = plan_org(org_id, slug, spec.users_per_org, next_user, next_channel, &mut rng);
        next_user += plan.users.len() as i64;
        next_channel += plan.channels.len() as i64;
        plans.push(plan);
    }
    report.orgs = orgs_writer.finish().await.map_err(pg("copying orgs"))?;

    let password_hash = seed_password_hash();
    let users_sink = tx
        .copy_in(
            "COPY users (id, org_id, handle, display_name, role, email, password_hash) FROM STDIN BINARY",
        )
        .await
        .map_err(pg("copying users"))?;
    let users_writer = BinaryCopyInWriter::new(
        users_sink,
        &[Type::INT8, Type::INT8, Type::TEXT, Type::TEXT, Type::TEXT, Type::TEXT, Type::TEXT],
    );
    pin_mut!(users_writer);
    for plan in &plans {
        for (id, handle, display, role) in &plan.users {
            let email = format!("{handle}@{}.test", plan.slug);
            users_writer
                .as_mut()
                .write(&[
                    id as &(dyn ToSql + Sync),
                    &plan.org_id,
                    handle,
                    display,
                    role,
                    &email,
                    &password_hash,
                ])
                .await
                .map_err(pg("copying users"))?;
        }
    }
    report.users = users_writer.finish().await.map_err(pg("copying users"))?;

    let channels_sink = tx
        .copy_in("COPY channels (id, org_id, kind, name) FROM STDIN BINARY")
        .await
        .map_err(pg("copying channels"))?;
    let channels_writer =
        BinaryCopyInWriter::new(channels_sink, &[Type::INT8, Type::INT8, Type::TEXT, Type::TEXT]);
    pin_mut!(channels_writer);
    for plan in &plans {
        for (id, kind, name) in &plan.channels {
            channels_writer
                .as_mut()
                .write(&[id as &(dyn ToSql + Sync), &plan.org_id, kind, name])
                .await
                .map_err(pg("copying channels"))?;
        }
    }
    report.channels = channels_writer.finish().await.map_err(pg("copying channels"))?;

    let members_sink = tx
        .copy_in("COPY channel_members (channel_id, user_id) FROM STDIN BINARY")
        .await
        .map_err(pg("copying memberships"))?;
    let members_writer = BinaryCopyInWriter::new(members_sink, &[Type::INT8, Type::INT8]);
    pin_mut!(members_writer);
    for plan in &plans {
        for (channel, user) in &plan.members {
            members_writer
                .as_mut()
                .write(&[channel as &(dyn ToSql + Sync), user])
                .await
                .map_err(pg("copying memberships"))?;
        }
    }
    report.memberships = members_writer.finish().await.map_err(pg("copying memberships"))?;
    // Seeded DMs and group DMs get their key (docs/api.md, "Channels"): opening the same
    // people's conversation over the API finds the seeded one. Where the layout drew the same
    // people twice, the first keeps it.
    let org_ids: Vec<i64> = plans.iter().map(|p| p.org_id).collect();
    tx.execute(
        "WITH keyed AS (
             SELECT c.id, c.org_id,
                    (SELECT string_agg(m.user_id::text, ',' ORDER BY m.user_id)
                     FROM channel_members m WHERE m.channel_id = c.id) AS k
             FROM channels c WHERE c.org_id = ANY($1) AND c.kind IN ('dm', 'group_dm')
         ), ranked AS (
             SELECT id, k, row_number() OVER (PARTITION BY org_id, k ORDER BY id) AS n FROM keyed WHERE k IS NOT NULL
         )
         UPDATE channels c SET dm_key = ranked.k FROM ranked WHERE ranked.id = c.id AND ranked.n = 1",
        &[&org_ids],
    )
    .await
    .map_err(pg("keying conversations"))?;

    // Identity columns must continue after the explicitly assigned ids.
    for table in ["orgs", "users", "channels"] {
        tx.execute(
            &format!("SELECT setval(pg_get_serial_sequence('{table}', 'id'), (SELECT max(id) FROM {table}))"),
            &[],
        )
        .await
        .map_err(pg("advancing id sequences"))?;
    }
    tx.commit().await.map_err(pg("committing"))?;
    report.elapsed = started.elapsed();
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(m: u32) -> OrgPlan {
        plan_org(1, "demo-1".into(), m, 100, 1_000, &mut StdRng::seed_from_u64(7))
    }

    #[test]
    fn layout_of_a_fifty_user_org() {
        let plan = plan(50);
        assert_eq!(plan.users.len(), 50);
        assert_eq!(plan.users[0].1, "alice");
        assert_eq!(plan.users[0].3, "owner");
        assert_eq!(plan.users[25].1, "user-26");
        let named: Vec<_> = plan.channels.iter().filter_map(|c| c.2.clone()).collect();
        assert!(named.starts_with(&["general".into(), "random".into(), "team-1".into()]));
        assert_eq!(named.iter().filter(|n| n.starts_with("team-")).count(), 5);
        assert_eq!(named.iter().filter(|n| n.starts_with("private-")).count(), 2);
        let general = plan.channels[0].0;
        assert_eq!(plan.members.iter().filter(|(c, _)| *c == general).count(), 50);
        let dms = plan.channels.iter().filter(|c| c.1 == "dm").count();
        assert_eq!(dms, 100, "each user pairs with i+1 and i+3: 2M distinct pairs for M=50");
        for (id, kind, _) in &plan.channels {
            let n = plan.members.iter().filter(|(c, _)| c == id).count();
            match *kind {
                "dm" => assert_eq!(n, 2),
                "group_dm" => assert!((3..=4).contains(&n)),
                "private" => assert_eq!(n, 5),
                _ => assert!(n >= 1),
            }
        }
    }

    #[test]
    fn memberships_are_unique_and_ids_contiguous() {
        let plan = plan(37);
        let unique: BTreeSet<_> = plan.members.iter().collect();
        assert_eq!(unique.len(), plan.members.len());
        let ids: Vec<i64> = plan.channels.iter().map(|c| c.0).collect();
        assert_eq!(ids, (1_000..1_000 + ids.len() as i64).collect::<Vec<_>>());
    }

    #[test]
    fn same_seed_same_layout_and_tiny_orgs_work() {
        assert_eq!(plan(23), plan(23));
        let one = plan(1);
        assert_eq!(one.channels.iter().filter(|c| c.1 == "dm").count(), 0);
        let two = plan(2);
        assert_eq!(two.channels.iter().filter(|c| c.1 == "dm").count(), 1);
    }
}
