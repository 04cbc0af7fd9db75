//! Hellos while PostgreSQL is down (docs/drills.md, "Hellos without PostgreSQL"): a gateway
//! restarted during the outage admits a user from the hello cache another gateway wrote, with
//! the channels Postgres gave them, and they chat; a user whose org's directory changed after
//! their copy, and one no gateway has seen, are refused `unavailable` (never admitted with a
//! stale view); once Postgres is back, hellos read it again.

use std::time::Duration;

use threadspace_client::{Client, ClientError, ConnectOptions, Incoming};
use threadspace_devstack::{Stack, StackOptions};
use threadspace_protocol::frames::{ErrorCode, ServerFrame, Welcome};
use threadspace_tests::accounts::{self, create_org, invite, Account};
use threadspace_tests::{metric, rest, send_and_ack, WAIT};

async fn hello(stack: &Stack, gateway: usize, account: &Account) -> Result<(Client, Welcome), ClientError> {
    let mut client = Client::connect(&ConnectOptions::new(stack.ws_url(gateway))).await?;
    let welcome = client.hello(&account.access, None, WAIT).await?;
    Ok((client, welcome))
}

/// The error code a refused hello was answered with.
async fn refused(stack: &Stack, gateway: usize, account: &Account) -> anyhow::Result<ErrorCode> {
    match hello(stack, gateway, account).await {
        Ok(_) => anyhow::bail!("the hello of user {} was admitted", account.user),
        Err(ClientError::Unexpected { got, .. }) => match *got {
            Incoming::Frame(ServerFrame::Error { code, .. }) => Ok(code),
            other => anyhow::bail!("expected an error frame, got {other:?}"),
        },
        Err(other) => anyhow::bail!("expected an error frame, got {other}"),
    }
}

async fn sessions(stack: &Stack, gateway: usize, source: &str) -> anyhow::Result<f64> {
    metric(
        stack.gateways[gateway].port,
        "threadspace_gateway_hello_sessions_total",
        &format!("source=\"{source}\""),
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_gateway_admits_from_the_hello_cache_only_what_postgres_would_have() -> anyhow::Result<()>
{
    let mut stack = Stack::start(StackOptions::for_tests(2)).await?;
    // Two orgs: nothing changes in "calm" after Ann's hello; "busy" changes after Ben's.
    let calm = create_org(&stack, "calm").await?;
    let ann = invite(&stack, &calm, "member", "ann").await?;
    let busy = create_org(&stack, "busy").await?;
    let ben = invite(&stack, &busy, "member", "ben").await?;
    let room = accounts::channel(&stack, calm.org, "room", "private", &[calm.user, ann.user]).await?;

    let (_, ann_before) = hello(&stack, 0, &ann).await?;
    let (_, ben_before) = hello(&stack, 0, &ben).await?;
    assert!(ann_before.channels.iter().any(|c| c.id == room), "{ann_before:?}");
    // After Ben's hello was copied, Busy's directory changes (Ben joins a channel, through the
    // api service, so the change is a directory event): his copy predates it.
    let later = accounts::channel(&stack, busy.org, "later", "private", &[busy.user]).await?;
    let (status, added) =
        rest(&stack, "PUT", &format!("/v1/channels/{later}/members/{}", ben.user), Some(&busy.access))
            .await?;
    anyhow::ensure!(status == 200 && added["changed"] == true, "adding Ben: {status} {added}");

    // Postgres goes away; gateway 2 crashes and comes back without it.
    stack.postgres.stop();
    stack.kill_gateway(1);
    stack.start_gateway(1).await?;

    let (mut ann_ws, ann_after) = hello(&stack, 1, &ann).await?;
    assert_eq!(ann_after.user, ann_before.user, "the same person");
    assert_eq!(ann_after.channels, ann_before.channels, "the channels Postgres gave her");
    let (seq, _, _) = send_and_ack(&mut ann_ws, room, "during", "sent while postgres is down").await?;
    assert!(seq > 0, "the chat path does not need Postgres");

    assert_eq!(refused(&stack, 1, &ben).await?, ErrorCode::Unavailable, "Ben's copy is stale");
    assert_eq!(refused(&stack, 1, &busy).await?, ErrorCode::Unavailable, "the owner never said hello");
    assert_eq!(sessions(&stack, 1, "cache").await?, 1.0);
    assert_eq!(sessions(&stack, 1, "stale").await?, 1.0);
    assert_eq!(sessions(&stack, 1, "missing").await?, 1.0);

    // Postgres is back: Ben reads the directory again, with the channel his copy lacked.
    stack.postgres.restart().await?;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    let ben_after = loop {
        match hello(&stack, 1, &ben).await {
            Ok((_, welcome)) => break welcome,
            // `unavailable` until the gateway's pool reaches the restarted Postgres.
            Err(_) if tokio::time::Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(250)).await
            }
            Err(error) => anyhow::bail!("Ben cannot say hello after Postgres came back: {error}"),
        }
    };
    assert!(!ben_before.channels.iter().any(|c| c.id == later), "{ben_before:?}");
    assert!(ben_after.channels.iter().any(|c| c.id == later), "{ben_after:?}");
    Ok(())
}
