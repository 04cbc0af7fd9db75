//! The permission matrix of docs/accounts.md ("Permission matrix", the enforced table, and
//! "Visibility: 404 or 403"), cell by cell, for every role and across orgs, against the real api
//! service. What each cell must answer comes from the copy of the doc's table below — never from
//! the service's own policy code. A refused request must store nothing: the directory (orgs,
//! users, channels, memberships, sessions, account tokens, directory events) is compared before
//! and after every refusal.

use std::time::Instant;

use serde_json::{json, Value};
use threadspace_devstack::{Stack, StackOptions};
use threadspace_protocol::{ChannelId, UserId};
use threadspace_tests::accounts::{self, Account, PASSWORD};
use threadspace_tests::rest_raw;

/// What a request must get.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Outcome {
    /// ✓: the route's success status.
    Allowed,
    /// —: `403 forbidden`.
    Forbidden,
    /// `403 not_member`.
    NotMember,
    /// `404 not_found`.
    NotFound,
}

use Outcome::{Allowed, Forbidden, NotFound, NotMember};

impl Outcome {
    /// The status and error code meaning this outcome, for a route answering `success`.
    fn answer(self, success: u16) -> (u16, Option<&'static str>) {
        match self {
            Allowed => (success, None),
            Forbidden => (403, Some("forbidden")),
            NotMember => (403, Some("not_member")),
            NotFound => (404, Some("not_found")),
        }
    }
}

/// The columns of the matrix, highest role first.
const ROLES: [&str; 4] = ["owner", "admin", "member", "guest"];
const OWNER: usize = 0;
const ADMIN: usize = 1;
const MEMBER: usize = 2;
const GUEST: usize = 3;

/// The rows of the matrix.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Row {
    InviteOwnerOrAdmin,
    InviteMemberOrGuest,
    ChangeAmongMemberAndGuest,
    ChangeToOrFromOwnerOrAdmin,
    SetActiveOwnerOrAdmin,
    SetActiveMemberOrGuest,
    SetSignupDomain,
    JoinPublic,
    AddWhereIn,
    AddToPublicNotIn,
    RemoveSomeoneElse,
    Leave,
    ReadWhereIn,
    ReadPublicNotIn,
    HiddenChannel,
    SearchPeople,
    SeeUnshared,
    ReadAudit,
    CreateChannel,
    BrowseChannels,
    OpenWithChannelPeople,
    OpenWithStranger,
    SendWhereIn,
    ManageBots,
    ManageOwnChannel,
    ManageOthersChannel,
    ExportOwnData,
    OrgDataRights,
    ReadErasurePolicy,
    OwnAccount,
}

/// docs/accounts.md, "Permission matrix", the enforced table (not the "Planned" one): each row's
/// action and its cells for owner, admin, member and guest as the doc writes them, then what
/// each cell means. Legend: "✓" allowed, "—" refused with `403 forbidden`, "— (404)"
/// `404 not_found`, "— (403 `not_member`)" (and "— (403)" below it) `403 not_member`.
const MATRIX: [(Row, &str, [&str; 4], [Outcome; 4]); 30] = [
    (
        Row::InviteOwnerOrAdmin,
        "Invite an owner or admin",
        ["✓", "—", "—", "—"],
        [Allowed, Forbidden, Forbidden, Forbidden],
    ),
    (
        Row::InviteMemberOrGuest,
        "Invite a member or guest",
        ["✓", "✓", "—", "—"],
        [Allowed, Allowed, Forbidden, Forbidden],
    ),
    (
        Row::ChangeAmongMemberAndGuest,
        "Change a member's or guest's role to member or guest",
        ["✓", "✓", "—", "—"],
        [Allowed, Allowed, Forbidden, Forbidden],
    ),
    (
        Row::ChangeToOrFromOwnerOrAdmin,
        "Change a role to or from owner or admin",
        ["✓", "—", "—", "—"],
        [Allowed, Forbidden, Forbidden, Forbidden],
    ),
    (
        Row::SetActiveOwnerOrAdmin,
        "Deactivate / reactivate an owner or admin",
        ["✓", "—", "—", "—"],
        [Allowed, Forbidden, Forbidden, Forbidden],
    ),
    (
        Row::SetActiveMemberOrGuest,
        "Deactivate / reactivate a member or guest",
        ["✓", "✓", "—", "—"],
        [Allowed, Allowed, Forbidden, Forbidden],
    ),
    (
        Row::SetSignupDomain,
        "Set the org's sign-up domain",
        ["✓", "—", "—", "—"],
        [Allowed, Forbidden, Forbidden, Forbidden],
    ),
    (
        Row::JoinPublic,
        "Join a public channel",
        ["✓", "✓", "✓", "— (404)"],
        [Allowed, Allowed, Allowed, NotFound],
    ),
    (
        Row::AddWhereIn,
        "Add someone to a channel the caller is in",
        ["✓", "✓", "✓", "—"],
        [Allowed, Allowed, Allowed, Forbidden],
    ),
    (
        Row::AddToPublicNotIn,
        "Add someone to a public channel the caller is not in",
        ["✓", "✓", "—", "— (404)"],
        [Allowed, Allowed, Forbidden, NotFound],
    ),
    (
        Row::RemoveSomeoneElse,
        "Remove someone else from a channel",
        ["✓", "✓", "—", "—"],
        [Allowed, Allowed, Forbidden, Forbidden],
    ),
    (Row::Leave, "Leave a channel", ["✓", "✓", "✓", "✓"], [Allowed, Allowed, Allowed, Allowed]),
    (
        Row::ReadWhereIn,
        "Read history / search a channel the caller is in",
        ["✓", "✓", "✓", "✓"],
        [Allowed, Allowed, Allowed, Allowed],
    ),
    (
        Row::ReadPublicNotIn,
        "Read history of a public channel the caller is not in",
        ["— (403 `not_member`)", "— (403)", "— (403)", "— (404)"],
        [NotMember, NotMember, NotMember, NotFound],
    ),
    (
        Row::HiddenChannel,
        "Anything on a private channel, DM or group DM the caller is not in",
        ["— (404)", "— (404)", "— (404)", "— (404)"],
        [NotFound, NotFound, NotFound, NotFound],
    ),
    (
        Row::SearchPeople,
        "Search and list the org's people",
        ["✓", "✓", "✓", "—"],
        [Allowed, Allowed, Allowed, Forbidden],
    ),
    (
        Row::SeeUnshared,
        "See a person the caller shares no channel with",
        ["✓", "✓", "✓", "— (404)"],
        [Allowed, Allowed, Allowed, NotFound],
    ),
    (Row::ReadAudit, "Read the audit log", ["✓", "✓", "—", "—"], [Allowed, Allowed, Forbidden, Forbidden]),
    (
        Row::CreateChannel,
        "Create a public or private channel",
        ["✓", "✓", "✓", "—"],
        [Allowed, Allowed, Allowed, Forbidden],
    ),
    (
        Row::BrowseChannels,
        "Browse public channels",
        ["✓", "✓", "✓", "—"],
        [Allowed, Allowed, Allowed, Forbidden],
    ),
    (
        Row::OpenWithChannelPeople,
        "Open a DM or group DM with people of the caller's channels",
        ["✓", "✓", "✓", "✓"],
        [Allowed, Allowed, Allowed, Allowed],
    ),
    (
        Row::OpenWithStranger,
        "Open a DM or group DM with someone the caller shares no channel with",
        ["✓", "✓", "✓", "— (404)"],
        [Allowed, Allowed, Allowed, NotFound],
    ),
    (
        Row::SendWhereIn,
        "Send a message over REST to a channel the caller is in",
        ["✓", "✓", "✓", "✓"],
        [Allowed, Allowed, Allowed, Allowed],
    ),
    (
        Row::ManageBots,
        "Create bots, issue and revoke their tokens and incoming webhooks",
        ["✓", "✓", "—", "—"],
        [Allowed, Allowed, Forbidden, Forbidden],
    ),
    (
        Row::ManageOwnChannel,
        "Rename, set the topic or purpose of, archive or unarchive a channel the caller created",
        ["✓", "✓", "✓", "—"],
        [Allowed, Allowed, Allowed, Forbidden],
    ),
    (
        Row::ManageOthersChannel,
        "Rename, set the topic or purpose of, archive or unarchive a channel someone else created",
        ["✓", "✓", "—", "—"],
        [Allowed, Allowed, Forbidden, Forbidden],
    ),
    (Row::ExportOwnData, "Export own data", ["✓", "✓", "✓", "✓"], [Allowed, Allowed, Allowed, Allowed]),
    (
        Row::OrgDataRights,
        "Export the org, erase someone else, set the erasure policy",
        ["✓", "—", "—", "—"],
        [Allowed, Forbidden, Forbidden, Forbidden],
    ),
    (
        Row::ReadErasurePolicy,
        "Read the org's erasure policy",
        ["✓", "✓", "—", "—"],
        [Allowed, Allowed, Forbidden, Forbidden],
    ),
    (
        Row::OwnAccount,
        "Log out, sign out everywhere, change own password, `GET /v1/me`, list own channels, edit own profile",
        ["✓", "✓", "✓", "✓"],
        [Allowed, Allowed, Allowed, Allowed],
    ),
];

/// The sentence under the legend: "Nobody may change their own role, deactivate or erase
/// themselves (`403`)."
const SELF_RULE: &str = "Nobody may change their own role, deactivate or erase themselves";
const ON_ONESELF: [Outcome; 4] = [Forbidden, Forbidden, Forbidden, Forbidden];

/// "Visibility: 404 or 403": "Another org's resources never exist for the caller: 404, exactly
/// as an id that was never used — whether it is a channel, a user or anything later."
const ANOTHER_ORG_RULE: &str = "Another org's resources never exist for the caller: 404";
const ANOTHER_ORGS: [Outcome; 4] = [NotFound, NotFound, NotFound, NotFound];

/// "Within the org, a resource the caller cannot see is also 404: a private channel, DM or group
/// DM they are not in, and for a guest any channel they were not added to."
const GUEST_RULE: &str = "for a guest any channel they were not added to";
const GUEST_NOT_ADDED: Outcome = NotFound;

/// The expected outcome of `row` for the role in column `role`.
fn expected(row: Row, role: usize) -> Outcome {
    MATRIX.iter().find(|r| r.0 == row).map(|r| r.3[role]).expect("every row is in MATRIX")
}

fn action(row: Row) -> &'static str {
    MATRIX.iter().find(|r| r.0 == row).map(|r| r.1).expect("every row is in MATRIX")
}

/// A user id and a channel id that were never used.
const UNUSED_ID: i64 = 9_000_000_000_000;

/// The copy above is the doc's table, cell for cell, and each cell's meaning follows its text;
/// the rules the test copies as sentences are still in the doc.
#[test]
fn the_copied_matrix_is_the_docs_enforced_table() {
    let doc = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/accounts.md"))
        .expect("docs/accounts.md is readable");
    let section = doc.split("## Permission matrix").nth(1).expect("the doc has a permission matrix");
    // The first table of the section is the enforced one; it ends at the first non-table line.
    let rows: Vec<Vec<String>> = section
        .lines()
        .skip_while(|line| !line.starts_with("| Action |"))
        .take_while(|line| line.starts_with('|'))
        .filter(|line| !line.starts_with("|---"))
        .skip(1)
        .map(|line| line.trim().trim_matches('|').split('|').map(|cell| cell.trim().to_owned()).collect())
        .collect();
    let copy: Vec<Vec<String>> = MATRIX
        .iter()
        .map(|(_, action, cells, _)| {
            std::iter::once(*action).chain(cells.iter().copied()).map(str::to_owned).collect()
        })
        .collect();
    assert_eq!(rows, copy, "the test's copy of the permission matrix differs from docs/accounts.md");
    for (_, action, cells, outcomes) in MATRIX {
        for (role, (cell, outcome)) in cells.iter().zip(outcomes).enumerate() {
            let consistent = match *cell {
                "✓" => outcome == Allowed,
                "—" => outcome == Forbidden,
                "— (404)" => outcome == NotFound,
                text if text.starts_with("— (403") => outcome == NotMember,
                _ => false,
            };
            assert!(consistent, "{action}, {}: {cell:?} read as {outcome:?}", ROLES[role]);
        }
    }
    let flat = doc.split_whitespace().collect::<Vec<_>>().join(" ");
    for rule in [SELF_RULE, ANOTHER_ORG_RULE, GUEST_RULE] {
        assert!(flat.contains(rule), "docs/accounts.md no longer says {rule:?}");
    }
}

/// A request of one cell.
struct Call {
    method: &'static str,
    path: String,
    body: Option<Value>,
    /// The status of an allowed answer.
    success: u16,
}

impl Call {
    fn new(method: &'static str, path: impl Into<String>) -> Self {
        Self { method, path: path.into(), body: None, success: 200 }
    }

    fn get(path: impl Into<String>) -> Self {
        Self::new("GET", path)
    }

    fn put(path: impl Into<String>) -> Self {
        Self::new("PUT", path)
    }

    fn post(path: impl Into<String>) -> Self {
        Self::new("POST", path)
    }

    fn delete(path: impl Into<String>) -> Self {
        Self::new("DELETE", path)
    }

    fn json(mut self, body: Value) -> Self {
        self.body = Some(body);
        self
    }

    fn succeeding(mut self, status: u16) -> Self {
        self.success = status;
        self
    }

    fn describe(&self) -> String {
        match &self.body {
            Some(body) => format!("{} {} {body}", self.method, self.path),
            None => format!("{} {}", self.method, self.path),
        }
    }
}

/// The checker: runs cells, keeps every failure (so one run reports all of them), counts cells.
struct Matrix<'s> {
    stack: &'s Stack,
    /// The org's owner: creates targets and channels (never the target of a cell).
    setup: Account,
    next: usize,
    cells: usize,
    failures: Vec<String>,
}

impl<'s> Matrix<'s> {
    fn new(stack: &'s Stack, setup: Account) -> Self {
        Self { stack, setup, next: 0, cells: 0, failures: Vec::new() }
    }

    /// One cell: the caller (in column `role`, with `token`) sends `call`, which must get
    /// `expected`; a refusal must leave the directory as it was. Returns the answer's body when
    /// it was as expected.
    async fn cell(
        &mut self,
        what: &str,
        role: usize,
        token: &str,
        expected: Outcome,
        call: &Call,
    ) -> anyhow::Result<Option<Value>> {
        self.cells += 1;
        let label = format!("[{what}] as {}: {}", ROLES[role], call.describe());
        let before = directory_state(self.stack).await?;
        let bytes = call.body.as_ref().map(serde_json::to_vec).transpose()?;
        let answer = rest_raw(
            self.stack,
            call.method,
            &call.path,
            Some(token),
            bytes.as_deref().map(|b| ("application/json", b)),
        )
        .await;
        let (status, body) = match answer {
            Ok((status, body, _)) => (status, body),
            Err(error) => {
                self.failures.push(format!("{label}: expected {expected:?}, but {error:#}"));
                return Ok(None);
            }
        };
        let want = expected.answer(call.success);
        if (status, body["error"]["code"].as_str()) != want {
            self.failures.push(format!("{label}: expected {expected:?} {want:?}, got {status} {body}"));
            return Ok(None);
        }
        if expected != Allowed {
            let after = directory_state(self.stack).await?;
            if after != before {
                self.failures.push(format!(
                    "{label}: refused with {status} as expected, yet stored a change: {}",
                    difference(&before, &after)
                ));
            }
        }
        Ok(Some(body))
    }

    /// A cell of the matrix; returns the body of an allowed answer (to check its effect).
    async fn matrix(
        &mut self,
        row: Row,
        role: usize,
        token: &str,
        call: &Call,
    ) -> anyhow::Result<Option<Value>> {
        let outcome = expected(row, role);
        let body = self.cell(action(row), role, token, outcome, call).await?;
        Ok(body.filter(|_| outcome == Allowed))
    }

    /// Records a failed effect check of an allowed cell.
    fn effect(&mut self, holds: bool, what: impl FnOnce() -> String) {
        if !holds {
            self.failures.push(what());
        }
    }

    fn name(&mut self, prefix: &str) -> String {
        self.next += 1;
        format!("{prefix}{}", self.next)
    }

    /// A new account of `role` in the org (invited by the owner, accepted, never logged in).
    async fn user(&mut self, role: &str) -> anyhow::Result<UserId> {
        let handle = self.name("t");
        new_user(self.stack, &self.setup, role, &handle).await
    }

    /// A new channel of the org with `members`.
    async fn channel(&mut self, kind: &str, members: &[UserId]) -> anyhow::Result<ChannelId> {
        let name = self.name("c");
        accounts::channel(self.stack, self.setup.org, &name, kind, members).await
    }

    /// A new public channel created by `creator` (directly in the directory: guests cannot
    /// create channels, yet the matrix has a cell for one they created) with `members`.
    async fn channel_by(&mut self, creator: UserId, members: &[UserId]) -> anyhow::Result<ChannelId> {
        let name = self.name("c");
        let channel = accounts::channel(self.stack, self.setup.org, &name, "public", members).await?;
        let client = self.stack.pool.get().await?;
        client
            .execute("UPDATE channels SET created_by = $2 WHERE id = $1", &[&channel.0, &creator.0])
            .await?;
        Ok(channel)
    }

    /// A bot the owner creates in `channel`.
    async fn bot(&mut self, channel: ChannelId) -> anyhow::Result<i64> {
        let handle = self.name("bot");
        let body = json!({"handle": handle, "display_name": "Bot", "channels": [channel.0]});
        let bytes = serde_json::to_vec(&body)?;
        let (status, made, _) = rest_raw(
            self.stack,
            "POST",
            "/v1/bots",
            Some(&self.setup.access),
            Some(("application/json", &bytes)),
        )
        .await?;
        anyhow::ensure!(status == 201, "setup: the owner creates a bot: {status} {made}");
        made["id"].as_i64().ok_or_else(|| anyhow::anyhow!("setup: no bot id in {made}"))
    }

    /// A live token the owner issues `bot` in `channel`.
    async fn credential(&mut self, bot: i64, channel: ChannelId) -> anyhow::Result<i64> {
        let body = json!({"name": "setup", "channels": [channel.0], "scopes": ["read"]});
        let bytes = serde_json::to_vec(&body)?;
        let path = format!("/v1/bots/{bot}/tokens");
        let (status, issued, _) =
            rest_raw(self.stack, "POST", &path, Some(&self.setup.access), Some(("application/json", &bytes)))
                .await?;
        anyhow::ensure!(status == 201, "setup: the owner issues a token: {status} {issued}");
        issued["credential"]["id"]
            .as_i64()
            .ok_or_else(|| anyhow::anyhow!("setup: no credential id in {issued}"))
    }

    /// The owner deactivates `user` (setting up a reactivation cell).
    async fn deactivate(&self, user: UserId) -> anyhow::Result<()> {
        let path = format!("/v1/users/{user}/deactivate");
        let (status, body, _) = rest_raw(self.stack, "POST", &path, Some(&self.setup.access), None).await?;
        anyhow::ensure!(status == 200, "setup: the owner deactivates {user}: {status} {body}");
        Ok(())
    }

    async fn account(&self, user: UserId) -> anyhow::Result<(String, bool)> {
        let client = self.stack.pool.get().await?;
        let row = client
            .query_one("SELECT role, deactivated_at IS NULL FROM users WHERE id = $1", &[&user.0])
            .await?;
        Ok((row.get(0), row.get(1)))
    }

    async fn is_member(&self, channel: ChannelId, user: UserId) -> anyhow::Result<bool> {
        let client = self.stack.pool.get().await?;
        let row = client
            .query_one(
                "SELECT EXISTS (SELECT 1 FROM channel_members WHERE channel_id = $1 AND user_id = $2)",
                &[&channel.0, &user.0],
            )
            .await?;
        Ok(row.get(0))
    }

    fn finish(self, test: &str, started: Instant) -> anyhow::Result<()> {
        println!("{test}: {} cells checked in {:?}", self.cells, started.elapsed());
        anyhow::ensure!(
            self.failures.is_empty(),
            "{} of {} cells disagree with docs/accounts.md:\n{}",
            self.failures.len(),
            self.cells,
            self.failures.join("\n")
        );
        Ok(())
    }
}

/// `inviter` invites `handle` with `role` and the invitee accepts (without logging in).
async fn new_user(stack: &Stack, inviter: &Account, role: &str, handle: &str) -> anyhow::Result<UserId> {
    let bytes = serde_json::to_vec(&json!({"role": role}))?;
    let (status, invite, _) =
        rest_raw(stack, "POST", "/v1/invites", Some(&inviter.access), Some(("application/json", &bytes)))
            .await?;
    anyhow::ensure!(status == 201, "setup: invite {handle} as {role}: {status} {invite}");
    let acceptance = json!({
        "token": invite["token"], "email": format!("{handle}@{}.test", inviter.slug), "handle": handle,
        "display_name": format!("User {handle}"), "password": PASSWORD,
    });
    let bytes = serde_json::to_vec(&acceptance)?;
    let (status, user, _) =
        rest_raw(stack, "POST", "/v1/invites/accept", None, Some(("application/json", &bytes))).await?;
    anyhow::ensure!(
        status == 201 && user["role"] == role,
        "setup: accept the invite of {handle}: {status} {user}"
    );
    let id = user["id"].as_i64().ok_or_else(|| anyhow::anyhow!("setup: no id in {user}"))?;
    Ok(UserId(id))
}

/// Everything a request could change in the directory, as sorted lines (timestamps only as
/// "set or not", except `tokens_not_before`).
async fn directory_state(stack: &Stack) -> anyhow::Result<Vec<String>> {
    let client = stack.pool.get().await?;
    let rows = client
        .query(
            "SELECT 'org ' || id::text || ' version ' || dir_version::text
                    || ' signup_domain ' || coalesce(signup_domain, '-') FROM orgs
             UNION ALL SELECT 'user ' || id::text || ' ' || role
                    || CASE WHEN deactivated_at IS NULL THEN ' active' ELSE ' deactivated' END
                    || ' tokens_not_before ' || coalesce(tokens_not_before::text, '-') FROM users
             UNION ALL SELECT 'channel ' || id::text || ' ' || kind || ' ' || coalesce(name, '-')
                    || ' topic ' || topic || ' purpose ' || purpose
                    || CASE WHEN archived_at IS NULL THEN '' ELSE ' archived' END FROM channels
             UNION ALL SELECT 'member ' || channel_id::text || ' ' || user_id::text FROM channel_members
             UNION ALL SELECT 'session ' || id::text
                    || CASE WHEN revoked_at IS NULL THEN ' live' ELSE ' ended' END FROM auth_sessions
             UNION ALL SELECT 'account_tokens ' || count(*)::text FROM account_tokens
             UNION ALL SELECT 'bot_credential ' || id::text
                    || CASE WHEN revoked_at IS NULL THEN ' live' ELSE ' revoked' END FROM bot_credentials
             UNION ALL SELECT 'directory_events ' || count(*)::text FROM directory_events
             UNION ALL SELECT 'data_job ' || id::text || ' ' || kind FROM data_jobs
             UNION ALL SELECT 'org ' || id::text || ' erasure_policy ' || erasure_policy FROM orgs",
            &[],
        )
        .await?;
    let mut lines: Vec<String> = rows.iter().map(|row| row.get(0)).collect();
    lines.sort();
    Ok(lines)
}

fn difference(before: &[String], after: &[String]) -> String {
    let gone = before.iter().filter(|line| !after.contains(line)).map(|line| format!("-{line}"));
    let new = after.iter().filter(|line| !before.contains(line)).map(|line| format!("+{line}"));
    gone.chain(new).collect::<Vec<_>>().join(", ")
}

/// An org with one logged-in account per role (the actors, column order); the owner invites
/// the admin, the admin the member and the guest.
async fn org_with_every_role(stack: &Stack, slug: &str) -> anyhow::Result<[Account; 4]> {
    let owner = accounts::create_org(stack, slug).await?;
    let admin = accounts::invite(stack, &owner, "admin", "admin").await?;
    let member = accounts::invite(stack, &admin, "member", "member").await?;
    let guest = accounts::invite(stack, &admin, "guest", "guest").await?;
    Ok([owner, admin, member, guest])
}

/// Waits (up to 30 s) for the job `queued` answered to end; its last state.
async fn finished(stack: &Stack, token: &str, queued: &Value) -> anyhow::Result<Value> {
    let path = format!("/v1/jobs/{}", queued["id"]);
    let deadline = Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let (status, job, _) = rest_raw(stack, "GET", &path, Some(token), None).await?;
        anyhow::ensure!(status == 200, "GET {path}: {status} {job}");
        if job["state"] == "done" || job["state"] == "failed" {
            return Ok(job);
        }
        anyhow::ensure!(Instant::now() < deadline, "job {path} did not end within 30 s: {job}");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}

fn is_owner_or_admin(role: &str) -> bool {
    matches!(role, "owner" | "admin")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invites_roles_activation_and_signup_domain_follow_the_matrix_for_every_role() -> anyhow::Result<()> {
    let started = Instant::now();
    let mut options = StackOptions::for_tests(1);
    // Erasures wait this long for in-flight sends (there are none here).
    options.api_args = ["--publish-timeout", "1s", "--erasure-settle", "1s"].map(String::from).to_vec();
    let stack = Stack::start(options).await?;
    let actors = org_with_every_role(&stack, "acme").await?;
    let mut m = Matrix::new(&stack, actors[OWNER].clone());

    // Invites, for each role the invite gives.
    for (role, actor) in actors.iter().enumerate() {
        for invited in ROLES {
            let row =
                if is_owner_or_admin(invited) { Row::InviteOwnerOrAdmin } else { Row::InviteMemberOrGuest };
            let call = Call::post("/v1/invites").json(json!({"role": invited})).succeeding(201);
            if let Some(invite) = m.matrix(row, role, &actor.access, &call).await? {
                m.effect(invite["role"] == invited && invite["token"].is_string(), || {
                    format!(
                        "[{}] as {}: the invite is not for a {invited}: {invite}",
                        action(row),
                        ROLES[role]
                    )
                });
            }
        }
    }

    // Role changes: every change between two different roles, each on a fresh target.
    for (role, actor) in actors.iter().enumerate() {
        for from in ROLES {
            for to in ROLES.into_iter().filter(|to| *to != from) {
                let row = if is_owner_or_admin(from) || is_owner_or_admin(to) {
                    Row::ChangeToOrFromOwnerOrAdmin
                } else {
                    Row::ChangeAmongMemberAndGuest
                };
                let target = m.user(from).await?;
                let call = Call::put(format!("/v1/users/{target}/role")).json(json!({"role": to}));
                if let Some(user) = m.matrix(row, role, &actor.access, &call).await? {
                    let (stored, _) = m.account(target).await?;
                    m.effect(user["role"] == to && stored == to, || {
                        format!(
                            "[{}] as {}: {from} → {to} answered {user}, stored {stored}",
                            action(row),
                            ROLES[role]
                        )
                    });
                }
            }
        }
    }

    // Deactivation and reactivation of every role, each on a fresh target (deactivated by the
    // owner first for a reactivation).
    for (role, actor) in actors.iter().enumerate() {
        for target_role in ROLES {
            let row = if is_owner_or_admin(target_role) {
                Row::SetActiveOwnerOrAdmin
            } else {
                Row::SetActiveMemberOrGuest
            };
            for reactivate in [false, true] {
                let target = m.user(target_role).await?;
                if reactivate {
                    m.deactivate(target).await?;
                }
                let verb = if reactivate { "reactivate" } else { "deactivate" };
                let call = Call::post(format!("/v1/users/{target}/{verb}"));
                if let Some(user) = m.matrix(row, role, &actor.access, &call).await? {
                    let (_, active) = m.account(target).await?;
                    m.effect(user["deactivated"] == !reactivate && active == reactivate, || {
                        format!(
                            "[{}] as {}: {verb} a {target_role} answered {user}, stored active = {active}",
                            action(row),
                            ROLES[role]
                        )
                    });
                }
            }
        }
    }

    // The sign-up domain: every role sets one, then (in reverse order, so the owner's stays
    // set while the others try) clears it.
    for (role, actor) in actors.iter().enumerate() {
        let domain = format!("{}.example.com", ROLES[role]);
        let call = Call::put("/v1/org/signup-domain").json(json!({"domain": domain}));
        if let Some(org) = m.matrix(Row::SetSignupDomain, role, &actor.access, &call).await? {
            m.effect(org["signup_domain"] == domain.as_str(), || format!("sign-up domain {domain}: {org}"));
        }
    }
    for (role, actor) in actors.iter().enumerate().rev() {
        let call = Call::put("/v1/org/signup-domain").json(json!({"domain": null}));
        if let Some(org) = m.matrix(Row::SetSignupDomain, role, &actor.access, &call).await? {
            m.effect(org["signup_domain"].is_null(), || format!("cleared sign-up domain: {org}"));
        }
    }

    // Data rights: one's own export; the org's export, a person's erasure (a fresh member each
    // time) and the erasure policy. An allowed job is waited for, so its background work cannot
    // show up as a change in a later refusal's comparison.
    for (role, actor) in actors.iter().enumerate() {
        let own = Call::post("/v1/me/export").succeeding(202);
        if let Some(job) = m.matrix(Row::ExportOwnData, role, &actor.access, &own).await? {
            let done = finished(&stack, &actor.access, &job).await?;
            m.effect(
                done["kind"] == "export_user" && done["user"] == actor.user.0 && done["state"] == "done",
                || format!("[{}] as {}: {done}", action(Row::ExportOwnData), ROLES[role]),
            );
        }
        let org = Call::post("/v1/org/export").succeeding(202);
        if let Some(job) = m.matrix(Row::OrgDataRights, role, &actor.access, &org).await? {
            let done = finished(&stack, &actor.access, &job).await?;
            m.effect(done["kind"] == "export_org" && done["state"] == "done", || {
                format!("org export: {done}")
            });
        }
        let target = m.user("member").await?;
        let erase = Call::post(format!("/v1/users/{target}/erase")).succeeding(202);
        if let Some(job) = m.matrix(Row::OrgDataRights, role, &actor.access, &erase).await? {
            let done = finished(&stack, &actor.access, &job).await?;
            let (_, active) = m.account(target).await?;
            m.effect(done["kind"] == "erase_user" && done["state"] == "done" && !active, || {
                format!("erasure of {target}: {done}, active = {active}")
            });
        }
        let set = Call::put("/v1/org/erasure-policy").json(json!({"messages": "delete"}));
        if let Some(policy) = m.matrix(Row::OrgDataRights, role, &actor.access, &set).await? {
            m.effect(policy["messages"] == "delete", || format!("PUT /v1/org/erasure-policy: {policy}"));
        }
        let read = Call::get("/v1/org/erasure-policy");
        if let Some(policy) = m.matrix(Row::ReadErasurePolicy, role, &actor.access, &read).await? {
            m.effect(policy["messages"] == "delete", || format!("GET /v1/org/erasure-policy: {policy}"));
        }
    }

    // Nobody may change their own role or deactivate themselves: accounts of their own, so a
    // wrongly allowed change cannot alter the actors above.
    for (role, role_name) in ROLES.into_iter().enumerate() {
        let own = accounts::invite(&stack, &actors[OWNER], role_name, &format!("self-{role_name}")).await?;
        let mut calls: Vec<Call> = ROLES
            .into_iter()
            .filter(|to| *to != role_name)
            .map(|to| Call::put(format!("/v1/users/{}/role", own.user)).json(json!({"role": to})))
            .collect();
        calls.push(Call::post(format!("/v1/users/{}/deactivate", own.user)));
        calls.push(Call::post(format!("/v1/users/{}/reactivate", own.user)));
        calls.push(Call::post(format!("/v1/users/{}/erase", own.user)));
        for call in &calls {
            m.cell(SELF_RULE, role, &own.access, ON_ONESELF[role], call).await?;
        }
    }

    // Last, as they end the actors' sessions: `GET /v1/me`, changing one's password, logging
    // out, signing out everywhere.
    let row = Row::OwnAccount;
    let new_password = "another horse battery";
    for (role, actor) in actors.iter().enumerate() {
        if let Some(me) = m.matrix(row, role, &actor.access, &Call::get("/v1/me")).await? {
            m.effect(me["user"]["id"] == actor.user.0 && me["user"]["role"] == ROLES[role], || {
                format!("[{}] as {}: GET /v1/me: {me}", action(row), ROLES[role])
            });
        }
        if let Some(list) = m.matrix(row, role, &actor.access, &Call::get("/v1/channels")).await? {
            // Everyone but a guest starts in `general`.
            let names: Vec<&str> = list["channels"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|c| c["name"].as_str())
                .collect();
            m.effect(names.contains(&"general") == (role != GUEST), || {
                format!("[{}] as {}: GET /v1/channels: {list}", action(row), ROLES[role])
            });
        }
        let edit =
            Call::new("PATCH", "/v1/me/profile").json(json!({"title": format!("The {}", ROLES[role])}));
        if let Some(me) = m.matrix(row, role, &actor.access, &edit).await? {
            m.effect(me["id"] == actor.user.0 && me["title"] == format!("The {}", ROLES[role]), || {
                format!("[{}] as {}: PATCH /v1/me/profile: {me}", action(row), ROLES[role])
            });
        }
        let call = Call::post("/v1/auth/password")
            .json(json!({"current_password": PASSWORD, "new_password": new_password}));
        let Some(tokens) = m.matrix(row, role, &actor.access, &call).await? else { continue };
        let access = tokens["access_token"].as_str().unwrap_or_default().to_owned();
        let (old, new) =
            (accounts::me_status(&stack, &actor.access).await?, accounts::me_status(&stack, &access).await?);
        m.effect((old, new) == (401, 200), || {
            format!(
                "[{}] as {}: after a password change the old token gets {old}, the new {new}",
                action(row),
                ROLES[role]
            )
        });
        if m.matrix(row, role, &access, &Call::post("/v1/auth/logout").succeeding(204)).await?.is_some() {
            let after = accounts::me_status(&stack, &access).await?;
            m.effect(after == 401, || {
                format!("[{}] as {}: logged out, yet the token gets {after}", action(row), ROLES[role])
            });
        }
        let (status, tokens) = accounts::login(&stack, &actor.slug, &actor.email, new_password).await?;
        anyhow::ensure!(status == 200, "login of {} with the new password: {status} {tokens}", actor.email);
        let access = tokens["access_token"].as_str().unwrap_or_default().to_owned();
        let call = Call::post("/v1/auth/sign-out-everywhere").succeeding(204);
        if m.matrix(row, role, &access, &call).await?.is_some() {
            let after = accounts::me_status(&stack, &access).await?;
            m.effect(after == 401, || {
                format!(
                    "[{}] as {}: signed out everywhere, yet the token gets {after}",
                    action(row),
                    ROLES[role]
                )
            });
        }
    }

    m.finish("invites, roles, activation, sign-up domain, own account", started)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn channel_membership_and_history_follow_the_matrix_and_other_orgs_do_not_exist() -> anyhow::Result<()>
{
    let started = Instant::now();
    let stack = Stack::start(StackOptions::for_tests(1)).await?;
    let actors = org_with_every_role(&stack, "acme").await?;
    let ids: Vec<UserId> = actors.iter().map(|a| a.user).collect();
    let mut m = Matrix::new(&stack, actors[OWNER].clone());
    // Bystanders: members who are never actors.
    let bob = m.user("member").await?;
    let carol = m.user("member").await?;
    let dave = m.user("member").await?;
    let eve = m.user("member").await?;
    // In no channel at all (guests do not join `general`).
    let loner = m.user("guest").await?;

    // Shared channels (only read, or refused).
    let everyone = [&ids[..], &[bob]].concat();
    let all_hands = m.channel("public", &everyone).await?;
    let inner = m.channel("private", &everyone).await?;
    let outside = m.channel("public", &[carol]).await?;
    let owner_only = m.channel("private", &[ids[OWNER]]).await?;
    let owner_member_dm = m.channel("dm", &[ids[OWNER], ids[MEMBER]]).await?;
    let secret = m.channel("private", &[bob, carol]).await?;
    let dm_of_others = m.channel("dm", &[bob, carol]).await?;
    let group_of_others = m.channel("group_dm", &[bob, carol, dave]).await?;

    let history = |c: ChannelId| Call::get(format!("/v1/channels/{c}/messages"));
    let search = |c: ChannelId| Call::get(format!("/v1/search?q=hello&channel={c}"));
    let add = |c: ChannelId, u: UserId| Call::put(format!("/v1/channels/{c}/members/{u}"));
    let remove = |c: ChannelId, u: UserId| Call::delete(format!("/v1/channels/{c}/members/{u}"));

    for (role, actor) in actors.iter().enumerate() {
        let token = actor.access.as_str();
        let me = actor.user;

        // Read history / search a channel the caller is in: public, private, a DM and a group DM.
        let mut mine = vec![
            all_hands,
            inner,
            m.channel("dm", &[me, bob]).await?,
            m.channel("group_dm", &[me, bob, carol]).await?,
        ];
        if role == OWNER {
            mine.push(owner_only);
        }
        if role == OWNER || role == MEMBER {
            mine.push(owner_member_dm);
        }
        for &c in &mine {
            if let Some(page) = m.matrix(Row::ReadWhereIn, role, token, &history(c)).await? {
                m.effect(page["channel"] == c.0 && page["messages"].is_array(), || {
                    format!("history of {c}: {page}")
                });
            }
            if let Some(hits) = m.matrix(Row::ReadWhereIn, role, token, &search(c)).await? {
                m.effect(hits["hits"].is_array(), || format!("search of {c}: {hits}"));
            }
        }

        // People: the org's list, someone the caller shares a channel with (Bob shares
        // `all_hands` with every actor), someone they share none with (Eve).
        let people = Call::get("/v1/users?limit=200");
        if let Some(list) = m.matrix(Row::SearchPeople, role, token, &people).await? {
            let listed: Vec<i64> =
                list["users"].as_array().into_iter().flatten().filter_map(|u| u["id"].as_i64()).collect();
            m.effect(listed.contains(&eve.0) && listed.contains(&me.0), || format!("GET /v1/users: {list}"));
            // Addresses only for owners and admins (and one's own).
            let emails = list["users"].as_array().into_iter().flatten().filter(|u| u["id"] != me.0);
            let shown = emails.filter(|u| !u["email"].is_null()).count();
            m.effect((shown > 0) == (role <= ADMIN), || {
                format!("as {}: {shown} other people's addresses listed", ROLES[role])
            });
        }
        let found = Call::get(format!("/v1/users?q={}", "t"));
        m.matrix(Row::SearchPeople, role, token, &found).await?;
        if let Some(log) =
            m.matrix(Row::ReadAudit, role, token, &Call::get("/v1/audit?action=org.created")).await?
        {
            // The org's own records only: it starts with its creation.
            let actions: Vec<&str> =
                log["events"].as_array().into_iter().flatten().filter_map(|e| e["action"].as_str()).collect();
            m.effect(actions.contains(&"org.created"), || format!("GET /v1/audit: {log}"));
        }
        // Channels and conversations: a channel of one's own, the browser, a DM with Bob (who
        // shares `all_hands` with every actor) and a group DM with Bob and the loner (in no
        // channel: a stranger to everyone).
        let create = Call::post("/v1/channels")
            .json(json!({"name": format!("own-{}", ROLES[role]), "kind": "public"}))
            .succeeding(201);
        if let Some(made) = m.matrix(Row::CreateChannel, role, token, &create).await? {
            m.effect(made["members"] == json!([me.0]), || format!("POST /v1/channels: {made}"));
        }
        if let Some(list) =
            m.matrix(Row::BrowseChannels, role, token, &Call::get("/v1/browse/channels")).await?
        {
            m.effect(list["channels"].is_array(), || format!("GET /v1/browse/channels: {list}"));
        }
        // Sending over REST to a channel of one's own (every role is in `all_hands`).
        let send = Call::post(format!("/v1/channels/{all_hands}/messages"))
            .json(json!({"client_msg_id": format!("matrix-{}", ROLES[role]), "body": "hello over REST"}))
            .succeeding(201);
        if let Some(sent) = m.matrix(Row::SendWhereIn, role, token, &send).await? {
            m.effect(sent["seq"].as_u64().is_some_and(|s| s > 0) && sent["sender"] == me.0, || {
                format!("POST /v1/channels/{all_hands}/messages: {sent}")
            });
        }
        // Managing bots: create one in `all_hands`, issue it a token and a webhook, revoke one.
        let new_bot = Call::post("/v1/bots")
            .json(json!({"handle": format!("bot-{}", ROLES[role]), "display_name": "Bot", "channels": [all_hands.0]}))
            .succeeding(201);
        let made = m.matrix(Row::ManageBots, role, token, &new_bot).await?;
        // Refused callers are checked against a bot the owner made.
        let bot = match &made {
            Some(bot) => bot["id"].as_i64().unwrap_or(0),
            None => m.bot(all_hands).await?,
        };
        m.matrix(Row::ManageBots, role, token, &Call::get("/v1/bots")).await?;
        let issue = Call::post(format!("/v1/bots/{bot}/tokens"))
            .json(json!({"name": "ci", "channels": [all_hands.0], "scopes": ["post"]}))
            .succeeding(201);
        if let Some(issued) = m.matrix(Row::ManageBots, role, token, &issue).await? {
            m.effect(issued["secret"].as_str().is_some_and(|s| s.starts_with("tsb_")), || {
                format!("POST /v1/bots/{bot}/tokens: {issued}")
            });
        }
        let hook = Call::post(format!("/v1/bots/{bot}/webhooks"))
            .json(json!({"name": "alerts", "channel": all_hands.0}))
            .succeeding(201);
        m.matrix(Row::ManageBots, role, token, &hook).await?;
        let credential = m.credential(bot, all_hands).await?;
        let revoke = Call::delete(format!("/v1/bots/{bot}/credentials/{credential}"));
        if let Some(revoked) = m.matrix(Row::ManageBots, role, token, &revoke).await? {
            m.effect(revoked["revoked"] == true, || format!("revoke {credential}: {revoked}"));
        }
        // A channel's lifecycle: one the caller created, and one Bob created; the caller is in
        // both. Each is renamed-topic'd, archived and unarchived.
        for (row, creator) in [(Row::ManageOwnChannel, me), (Row::ManageOthersChannel, bob)] {
            let channel = m.channel_by(creator, &[me, bob]).await?;
            let topic = Call::new("PATCH", format!("/v1/channels/{channel}"))
                .json(json!({"topic": format!("set by the {}", ROLES[role])}));
            if let Some(done) = m.matrix(row, role, token, &topic).await? {
                m.effect(done["channel"]["topic"] == format!("set by the {}", ROLES[role]), || {
                    format!("PATCH /v1/channels/{channel}: {done}")
                });
            }
            for (verb, archived) in [("archive", true), ("unarchive", false)] {
                let call = Call::post(format!("/v1/channels/{channel}/{verb}"));
                if let Some(done) = m.matrix(row, role, token, &call).await? {
                    m.effect(done["channel"]["archived"] == archived, || format!("{verb} {channel}: {done}"));
                }
            }
        }
        let with_bob = Call::post("/v1/conversations").json(json!({"members": [bob.0]})).succeeding(201);
        if let Some(dm) = m.matrix(Row::OpenWithChannelPeople, role, token, &with_bob).await? {
            m.effect(dm["kind"] == "dm", || format!("DM with bob: {dm}"));
        }
        let with_loner =
            Call::post("/v1/conversations").json(json!({"members": [loner.0, bob.0]})).succeeding(201);
        if let Some(group) = m.matrix(Row::OpenWithStranger, role, token, &with_loner).await? {
            m.effect(group["kind"] == "group_dm", || format!("group DM with the loner: {group}"));
        }
        let unshared = Call::get(format!("/v1/users/{loner}"));
        if let Some(person) = m.matrix(Row::SeeUnshared, role, token, &unshared).await? {
            m.effect(person["id"] == loner.0, || format!("GET /v1/users/{loner}: {person}"));
        }
        // A person the caller shares a channel with is visible to every role.
        let shared = m
            .cell(
                "see a person in the caller's channel",
                role,
                token,
                Allowed,
                &Call::get(format!("/v1/users/{bob}")),
            )
            .await?;
        m.effect(shared.is_some_and(|p| p["id"] == bob.0), || {
            format!("as {}: GET /v1/users/{bob}", ROLES[role])
        });

        // Read history (and search) of a public channel the caller is not in.
        m.matrix(Row::ReadPublicNotIn, role, token, &history(outside)).await?;
        m.matrix(Row::ReadPublicNotIn, role, token, &search(outside)).await?;

        // Anything on a private channel, DM or group DM the caller is not in: read, search,
        // join, add someone, remove a member, leave.
        let mut hidden = vec![(secret, bob), (dm_of_others, bob), (group_of_others, bob)];
        if role != OWNER {
            hidden.push((owner_only, ids[OWNER]));
        }
        if role == ADMIN || role == GUEST {
            hidden.push((owner_member_dm, ids[OWNER]));
        }
        for (c, member_of_it) in hidden {
            for call in
                [history(c), search(c), add(c, me), add(c, eve), remove(c, member_of_it), remove(c, me)]
            {
                m.matrix(Row::HiddenChannel, role, token, &call).await?;
            }
        }

        // Join a public channel.
        let c = m.channel("public", &[]).await?;
        if let Some(change) = m.matrix(Row::JoinPublic, role, token, &add(c, me)).await? {
            let member = m.is_member(c, me).await?;
            m.effect(member && change["changed"] == true, || {
                format!("joined {c}: {change}, member: {member}")
            });
        }

        // Add someone to a channel the caller is in (public, private).
        for kind in ["public", "private"] {
            let c = m.channel(kind, &[me]).await?;
            if let Some(change) = m.matrix(Row::AddWhereIn, role, token, &add(c, bob)).await? {
                let member = m.is_member(c, bob).await?;
                m.effect(member, || format!("added bob to {kind} {c}: {change}, yet not a member"));
            }
        }

        // Add someone to a public channel the caller is not in.
        let c = m.channel("public", &[carol]).await?;
        if let Some(change) = m.matrix(Row::AddToPublicNotIn, role, token, &add(c, bob)).await? {
            let member = m.is_member(c, bob).await?;
            m.effect(member, || format!("added bob to public {c} (not in it): {change}, yet not a member"));
        }

        // Remove someone else from a channel: public and private ones the caller is in, and a
        // public one the caller is not in (which a guest does not see: 404).
        for (kind, caller_in) in [("public", true), ("private", true), ("public", false)] {
            let members = if caller_in { vec![me, bob] } else { vec![bob] };
            let c = m.channel(kind, &members).await?;
            let outcome = if !caller_in && role == GUEST {
                GUEST_NOT_ADDED
            } else {
                expected(Row::RemoveSomeoneElse, role)
            };
            let what = format!("{} ({kind}, caller in it: {caller_in})", action(Row::RemoveSomeoneElse));
            if let Some(change) = m.cell(&what, role, token, outcome, &remove(c, bob)).await? {
                if outcome == Allowed {
                    let member = m.is_member(c, bob).await?;
                    m.effect(!member, || {
                        format!("[{what}] as {}: {change}, bob still a member", ROLES[role])
                    });
                }
            }
        }

        // Leave a channel (public, private).
        for kind in ["public", "private"] {
            let c = m.channel(kind, &[me, bob]).await?;
            if let Some(change) = m.matrix(Row::Leave, role, token, &remove(c, me)).await? {
                let member = m.is_member(c, me).await?;
                m.effect(!member, || format!("left {kind} {c}: {change}, yet still a member"));
            }
        }
    }

    // Another org: its channels and users do not exist for any role of this one — the same
    // answer as for an id that was never used — and nothing of it changes.
    let other = accounts::create_org(&stack, "other").await?;
    let other_member = new_user(&stack, &other, "member", "member2").await?;
    let other_outsider = new_user(&stack, &other, "member", "outsider2").await?;
    let other_gone = new_user(&stack, &other, "member", "gone2").await?;
    let (status, body, _) =
        rest_raw(&stack, "POST", &format!("/v1/users/{other_gone}/deactivate"), Some(&other.access), None)
            .await?;
    anyhow::ensure!(status == 200, "setup: deactivate gone2 in the other org: {status} {body}");
    let lobby = accounts::channel(&stack, other.org, "lobby", "public", &[other.user, other_member]).await?;
    let vault = accounts::channel(&stack, other.org, "vault", "private", &[other_member]).await?;
    let unused_channel = ChannelId(UNUSED_ID);
    let unused_user = UserId(UNUSED_ID);
    for (role, actor) in actors.iter().enumerate() {
        let me = actor.user;
        let role_change =
            |u: UserId, to: &str| Call::put(format!("/v1/users/{u}/role")).json(json!({"role": to}));
        let set_active = |u: UserId, verb: &str| Call::post(format!("/v1/users/{u}/{verb}"));
        // (what, the call on the other org's id, the same call on an unused id, that id pair)
        let cases: Vec<(&str, Call, Call, (i64, i64))> = vec![
            ("read its public channel", history(lobby), history(unused_channel), (lobby.0, UNUSED_ID)),
            ("read its private channel", history(vault), history(unused_channel), (vault.0, UNUSED_ID)),
            ("search its channel", search(lobby), search(unused_channel), (lobby.0, UNUSED_ID)),
            ("join its public channel", add(lobby, me), add(unused_channel, me), (lobby.0, UNUSED_ID)),
            (
                "add its user to its channel",
                add(lobby, other_outsider),
                add(unused_channel, other_outsider),
                (lobby.0, UNUSED_ID),
            ),
            (
                "remove its member from its channel",
                remove(lobby, other_member),
                remove(unused_channel, other_member),
                (lobby.0, UNUSED_ID),
            ),
            ("leave its channel", remove(lobby, me), remove(unused_channel, me), (lobby.0, UNUSED_ID)),
            (
                "add its user to the caller's channel",
                add(all_hands, other_outsider),
                add(all_hands, unused_user),
                (other_outsider.0, UNUSED_ID),
            ),
            (
                "remove its user from the caller's channel",
                remove(all_hands, other_member),
                remove(all_hands, unused_user),
                (other_member.0, UNUSED_ID),
            ),
            (
                "see its user",
                Call::get(format!("/v1/users/{other_member}")),
                Call::get(format!("/v1/users/{UNUSED_ID}")),
                (other_member.0, UNUSED_ID),
            ),
            (
                "change its member's role",
                role_change(other_member, "guest"),
                role_change(unused_user, "guest"),
                (other_member.0, UNUSED_ID),
            ),
            (
                "change its owner's role",
                role_change(other.user, "member"),
                role_change(unused_user, "member"),
                (other.user.0, UNUSED_ID),
            ),
            (
                "deactivate its member",
                set_active(other_member, "deactivate"),
                set_active(unused_user, "deactivate"),
                (other_member.0, UNUSED_ID),
            ),
            (
                "deactivate its owner",
                set_active(other.user, "deactivate"),
                set_active(unused_user, "deactivate"),
                (other.user.0, UNUSED_ID),
            ),
            (
                "reactivate its deactivated user",
                set_active(other_gone, "reactivate"),
                set_active(unused_user, "reactivate"),
                (other_gone.0, UNUSED_ID),
            ),
        ];
        for (what, foreign, unused, (foreign_id, unused_id)) in cases {
            let what = format!("{ANOTHER_ORG_RULE}: {what}");
            let token = actor.access.as_str();
            let on_foreign = m.cell(&what, role, token, ANOTHER_ORGS[role], &foreign).await?;
            let on_unused =
                m.cell(&format!("{what} (an unused id)"), role, token, ANOTHER_ORGS[role], &unused).await?;
            if let (Some(on_foreign), Some(on_unused)) = (on_foreign, on_unused) {
                // Exactly as an id that was never used: the same answer but for the id.
                let said: Value = serde_json::from_str(
                    &on_foreign.to_string().replace(&foreign_id.to_string(), &unused_id.to_string()),
                )?;
                m.effect(said == on_unused, || {
                    format!(
                        "[{what}] as {}: the answer differs from an unused id's: {on_foreign} vs {on_unused}",
                        ROLES[role]
                    )
                });
            }
        }
    }
    // The other org still works as before for its own people.
    let (status, page, _) =
        rest_raw(&stack, "GET", &format!("/v1/channels/{lobby}/messages"), Some(&other.access), None).await?;
    m.effect(status == 200, || format!("the other org's owner reads its lobby: {status} {page}"));
    let (role, active) = m.account(other_member).await?;
    m.effect((role.as_str(), active) == ("member", true), || {
        format!("member2 is now {role}, active {active}")
    });
    let (_, gone_active) = m.account(other_gone).await?;
    m.effect(!gone_active, || "gone2 was reactivated".into());
    let still = (m.is_member(lobby, other_member).await?, m.is_member(lobby, other_outsider).await?);
    m.effect(still == (true, false), || format!("lobby membership changed: member2, outsider2 = {still:?}"));

    m.finish("channels, visibility, other orgs", started)
}
