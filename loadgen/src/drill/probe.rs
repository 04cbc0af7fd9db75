//! The drill's probe: a connection of its own that sends a few messages the instant before each
//! fault strikes, so that every fault provably finds sends in flight (docs/drills.md, "Proof").
//! Its sends are tracked like the virtual users' and judged with them: each must end acked
//! and archived once, or unacknowledged and archived at most once.

use std::time::Duration;

use threadspace_client::{Client, ConnectOptions, Incoming};
use threadspace_protocol::frames::{ClientFrame, ServerFrame};
use threadspace_protocol::token::Identity;
use threadspace_protocol::ChannelId;
use tokio::sync::{mpsc, oneshot};

use crate::run::{SendOutcome, SendRecord};
use crate::unix_micros;

/// Sends the probe fires before each strike.
const BURST: usize = 3;

enum Command {
    /// Send a burst through gateway `usize`; answer once the frames are written.
    Fire(usize, oneshot::Sender<()>),
    Finish,
}

/// A running probe.
pub(super) struct Probe {
    commands: mpsc::UnboundedSender<Command>,
    task: tokio::task::JoinHandle<Vec<SendRecord>>,
}

impl Probe {
    /// Connects `identity` (a member of `channel`) and starts listening for its answers.
    /// Its ids end in `suffix`, like the run's.
    pub(super) fn start(urls: Vec<String>, identity: Identity, token: String, suffix: String) -> Self {
        let (commands, rx) = mpsc::unbounded_channel();
        let task = tokio::spawn(listen(urls, identity, token, suffix, rx));
        Self { commands, task }
    }

    /// Fires a burst through gateway `gateway` (an index); returns once it is on the wire.
    pub(super) async fn fire(&self, gateway: usize) {
        let (done, written) = oneshot::channel();
        if self.commands.send(Command::Fire(gateway, done)).is_ok() {
            let _ = tokio::time::timeout(Duration::from_secs(5), written).await;
        }
    }

    /// Waits `settle` for late answers and returns every probe send.
    pub(super) async fn finish(self, settle: Duration) -> Vec<SendRecord> {
        tokio::time::sleep(settle).await;
        let _ = self.commands.send(Command::Finish);
        self.task.await.unwrap_or_default()
    }
}

/// A probe connection on gateway `gateway`, and the channel it sends to.
async fn connect(urls: &[String], gateway: usize, token: &str) -> Option<(Client, ChannelId)> {
    let mut client = Client::connect(&ConnectOptions::new(urls[gateway].clone())).await.ok()?;
    let welcome = client.hello(token, None, Duration::from_secs(10)).await.ok()?;
    let channel = welcome.channels.first()?.id;
    Some((client, channel))
}

async fn listen(
    urls: Vec<String>,
    identity: Identity,
    token: String,
    suffix: String,
    mut commands: mpsc::UnboundedReceiver<Command>,
) -> Vec<SendRecord> {
    let mut sends: Vec<SendRecord> = Vec::new();
    let mut session: Option<(Client, ChannelId, usize)> = None;
    loop {
        let item = match session.as_mut() {
            Some((client, _, _)) => tokio::select! {
                command = commands.recv() => Err(command),
                item = client.recv(Duration::from_secs(3600)) => Ok(item),
            },
            None => Err(commands.recv().await),
        };
        match item {
            Err(None | Some(Command::Finish)) => return sends,
            Err(Some(Command::Fire(gateway, done))) => {
                if session.as_ref().is_none_or(|(_, _, on)| *on != gateway) {
                    session = connect(&urls, gateway, &token).await.map(|(c, ch)| (c, ch, gateway));
                }
                if let Some((client, channel, _)) = &session {
                    for _ in 0..BURST {
                        let id = format!("lgprobe{}{suffix}", sends.len());
                        let intended_us = unix_micros();
                        let frame = ClientFrame::Send {
                            reference: id.clone(),
                            channel: *channel,
                            client_msg_id: id.clone(),
                            body: format!("lg:{intended_us}"),
                        };
                        // Only a send on the wire is in flight.
                        if client.send(&frame).await.is_err() {
                            continue;
                        }
                        sends.push(SendRecord {
                            client_msg_id: id,
                            user: identity.user,
                            channel: *channel,
                            gateway,
                            intended_us,
                            outcome: SendOutcome::Unanswered,
                        });
                    }
                }
                let _ = done.send(());
            }
            Ok(Ok(Incoming::Frame(ServerFrame::Ack { client_msg_id, seq, .. }))) => {
                answer(&mut sends, &client_msg_id, SendOutcome::Acked { seq, at_us: unix_micros() })
            }
            Ok(Ok(Incoming::Frame(ServerFrame::Error { code, reference: Some(reference), .. }))) => {
                let outcome = SendOutcome::Refused { code: code.as_str().to_owned(), at_us: unix_micros() };
                answer(&mut sends, &reference, outcome)
            }
            Ok(Ok(Incoming::Frame(_))) => {}
            // The connection ended (its gateway was struck): the next burst reconnects.
            Ok(_) => session = None,
        }
    }
}

fn answer(sends: &mut [SendRecord], id: &str, outcome: SendOutcome) {
    if let Some(send) = sends.iter_mut().rev().find(|s| s.client_msg_id == id) {
        if send.outcome == SendOutcome::Unanswered {
            send.outcome = outcome;
        }
    }
}
