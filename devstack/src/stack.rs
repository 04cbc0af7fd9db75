//! A whole ThreadSpace stack: nats-server, PostgreSQL (migrated), token keys, N gateways, the
//! api service, and optionally broker-bridges. Or the HA topology ([`StackOptions::ha`]): a
//! 3-node NATS cluster with streams at R3, PostgreSQL with two synchronous standbys (quorum
//! `ANY 1`), every client on multi-host URLs, three gateways and two bridges — with the fault
//! actions a failover drill needs (docs/drills.md).

use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus};
use std::time::Duration;

use nix::sys::signal::Signal;
use serde::{Deserialize, Serialize};
use threadspace_client::rest::http_status;
use threadspace_protocol::token::Identity;
use threadspace_protocol::{OrgId, UserId};
use threadspace_store::seed::{SeedReport, SeedSpec};

use crate::keys::{Keys, AUDIENCE, ISSUER};
use crate::nats::{NatsServer, NodePorts};
use crate::postgres::Postgres;
use crate::process::ManagedProcess;
use crate::{free_port, tools, Lifetime};

/// How to start a stack.
#[derive(Clone, Debug)]
pub struct StackOptions {
    pub gateways: usize,
    /// Extra flags passed to every gateway.
    pub gateway_args: Vec<String>,
    /// Data directory; `None` means a temporary directory removed on drop.
    pub dir: Option<PathBuf>,
    pub lifetime: Lifetime,
    /// Fixed ports (the local stack); `None` picks free ones.
    pub nats_port: Option<u16>,
    pub postgres_port: Option<u16>,
    /// First gateway port; gateway i listens on `first + i`.
    pub gateway_port: Option<u16>,
    /// The api service's port.
    pub api_port: Option<u16>,
    pub partitions: u32,
    /// broker-bridge processes (they share the partitions).
    pub bridges: usize,
    /// Extra flags passed to every bridge.
    pub bridge_args: Vec<String>,
    /// Extra flags passed to the api service.
    pub api_args: Vec<String>,
    /// nats-server nodes: 1, or a cluster of 3.
    pub nats_nodes: usize,
    /// Replicas of every stream (`--stream-replicas` of the gateways and bridges); verified
    /// after start.
    pub stream_replicas: usize,
    /// PostgreSQL streaming standbys (0, or 2 for a quorum `ANY 1`).
    pub postgres_standbys: usize,
}

impl StackOptions {
    /// A throwaway stack on free ports for a test.
    pub fn for_tests(gateways: usize) -> Self {
        Self {
            gateways,
            gateway_args: Vec::new(),
            dir: None,
            lifetime: Lifetime::Attached,
            nats_port: None,
            postgres_port: None,
            gateway_port: None,
            api_port: None,
            partitions: 16,
            bridges: 0,
            bridge_args: Vec::new(),
            api_args: Vec::new(),
            nats_nodes: 1,
            stream_replicas: 1,
            postgres_standbys: 0,
        }
    }

    /// The HA topology on free ports: 3 NATS nodes with R3 streams, PostgreSQL with two
    /// synchronous standbys, 3 gateways and 2 bridges.
    pub fn ha() -> Self {
        Self { nats_nodes: 3, stream_replicas: 3, postgres_standbys: 2, bridges: 2, ..Self::for_tests(3) }
    }

    /// Whether this is a replicated topology.
    pub fn is_ha(&self) -> bool {
        self.nats_nodes > 1 || self.postgres_standbys > 0
    }

    /// [`StackOptions::for_tests`] plus one broker-bridge with `bridge_args`.
    pub fn with_bridge(gateways: usize, bridge_args: &[&str]) -> Self {
        Self {
            bridges: 1,
            bridge_args: bridge_args.iter().map(|s| s.to_string()).collect(),
            ..Self::for_tests(gateways)
        }
    }
}

/// A broker-bridge of the stack.
#[derive(Debug)]
pub struct BridgeHandle {
    pub index: usize,
    /// Port of its /metrics, /healthz, /readyz endpoint.
    pub port: u16,
    /// `None` while stopped.
    pub process: Option<ManagedProcess>,
    args: Vec<String>,
    log: PathBuf,
}

impl BridgeHandle {
    pub fn log_tail(&self, n: usize) -> String {
        crate::process::tail(&self.log, n)
    }
}

/// A gateway of the stack.
#[derive(Debug)]
pub struct GatewayHandle {
    pub index: usize,
    pub port: u16,
    /// `None` while stopped.
    pub process: Option<ManagedProcess>,
    args: Vec<String>,
    log: PathBuf,
}

impl GatewayHandle {
    /// The WebSocket URL.
    pub fn ws_url(&self) -> String {
        format!("ws://127.0.0.1:{}/v1/ws", self.port)
    }

    /// The HTTP base URL.
    pub fn http_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub fn log_tail(&self, n: usize) -> String {
        crate::process::tail(&self.log, n)
    }
}

/// The api service of the stack (the REST API).
#[derive(Debug)]
pub struct ApiHandle {
    pub port: u16,
    /// `None` while stopped.
    pub process: Option<ManagedProcess>,
    args: Vec<String>,
    log: PathBuf,
    /// Where the api service writes mail (invites, resets, sign-up links): one JSON line each.
    pub mail: PathBuf,
}

impl ApiHandle {
    /// The HTTP base URL.
    pub fn http_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub fn log_tail(&self, n: usize) -> String {
        crate::process::tail(&self.log, n)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum StackError {
    #[error("cannot create the stack directory")]
    Dir(#[source] std::io::Error),
    #[error("no free port")]
    Port(#[source] std::io::Error),
    #[error(transparent)]
    Nats(#[from] crate::nats::NatsError),
    #[error(transparent)]
    Postgres(#[from] crate::postgres::PostgresError),
    #[error(transparent)]
    Store(#[from] threadspace_store::StoreError),
    #[error(transparent)]
    Keys(#[from] threadspace_protocol::token::KeyFileError),
    #[error(transparent)]
    Spawn(#[from] crate::process::SpawnError),
    #[error("gateway {index} did not become ready on port {port}; log tail:\n{log}")]
    GatewayNotReady { index: usize, port: u16, log: String },
    #[error("the api service did not become ready on port {port}; log tail:\n{log}")]
    ApiNotReady { port: u16, log: String },
    #[error("bridge {index} did not become ready on port {port}; log tail:\n{log}")]
    BridgeNotReady { index: usize, port: u16, log: String },
    #[error(transparent)]
    Seed(#[from] threadspace_store::seed::SeedError),
    #[error("stream replicas: {0}")]
    Replicas(String),
    #[error("PostgreSQL failover: {0}")]
    Failover(String),
}

/// A running stack. Dropping it (attached) kills gateways, then NATS, then PostgreSQL, then
/// removes a temporary directory.
#[derive(Debug)]
pub struct Stack {
    pub gateways: Vec<GatewayHandle>,
    pub api: ApiHandle,
    pub bridges: Vec<BridgeHandle>,
    /// The (first) nats-server node.
    pub nats: NatsServer,
    /// The other nodes of a cluster.
    pub nats_peers: Vec<NatsServer>,
    /// The current primary (a failover swaps a promoted standby in).
    pub postgres: Postgres,
    pub standbys: Vec<Postgres>,
    pub keys: Keys,
    pub dir: PathBuf,
    pub pool: threadspace_store::Pool,
    pub options: StackOptions,
    _temp: Option<tempfile::TempDir>,
}

/// What `threadspace-dev` records about a detached stack.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct StackState {
    pub dir: PathBuf,
    pub nats: ProcessState,
    /// The other nodes of a NATS cluster (`--ha`).
    #[serde(default)]
    pub nats_peers: Vec<ProcessState>,
    pub postgres: ProcessState,
    /// PostgreSQL standbys (`--ha`).
    #[serde(default)]
    pub standbys: Vec<ProcessState>,
    /// Every client's NATS and PostgreSQL URLs (multi-host with `--ha`).
    #[serde(default)]
    pub nats_url: Option<String>,
    #[serde(default)]
    pub postgres_url: Option<String>,
    pub gateways: Vec<ProcessState>,
    #[serde(default)]
    pub bridges: Vec<ProcessState>,
    #[serde(default)]
    pub api: Option<ProcessState>,
}

impl StackState {
    /// Every client's PostgreSQL URL (multi-host with `--ha`).
    pub fn postgres_url(&self) -> &str {
        self.postgres_url.as_deref().unwrap_or(&self.postgres.url)
    }

    /// Every client's NATS URL (every node with `--ha`).
    pub fn nats_url(&self) -> &str {
        self.nats_url.as_deref().unwrap_or(&self.nats.url)
    }
}

/// One detached process.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ProcessState {
    pub pid: u32,
    pub port: u16,
    pub url: String,
}

impl Stack {
    /// Starts everything and waits until every gateway is ready.
    pub async fn start(options: StackOptions) -> Result<Self, StackError> {
        let (dir, temp) = match &options.dir {
            Some(dir) => {
                std::fs::create_dir_all(dir).map_err(StackError::Dir)?;
                (dir.canonicalize().map_err(StackError::Dir)?, None)
            }
            None => {
                let temp =
                    tempfile::Builder::new().prefix("threadspace-").tempdir().map_err(StackError::Dir)?;
                (temp.path().to_owned(), Some(temp))
            }
        };
        let port = |fixed: Option<u16>| fixed.map_or_else(free_port, Ok).map_err(StackError::Port);
        let nats_port = port(options.nats_port)?;
        let pg_port = port(options.postgres_port)?;
        let (nats_dir, pg_dir) = (dir.join("nats"), dir.join("postgres"));
        let nats = async {
            if options.nats_nodes <= 1 {
                return Ok(vec![NatsServer::start(&nats_dir, nats_port, options.lifetime).await?]);
            }
            // Fixed ports put node i on port + 10 i, its routes on port + 10 i + 1 and its
            // monitoring on port + 10 i + 2.
            let mut ports = Vec::new();
            for i in 0..options.nats_nodes as u16 {
                let fixed = |first: u16, offset: u16| {
                    first.checked_add(offset).ok_or_else(|| {
                        StackError::Port(std::io::Error::other(format!(
                            "port {first} + {offset} is past 65535"
                        )))
                    })
                };
                let node = match options.nats_port {
                    Some(first) => NodePorts {
                        client: fixed(first, 10 * i)?,
                        cluster: fixed(first, 10 * i + 1)?,
                        monitor: fixed(first, 10 * i + 2)?,
                    },
                    None => NodePorts {
                        client: if i == 0 { nats_port } else { free_port().map_err(StackError::Port)? },
                        cluster: free_port().map_err(StackError::Port)?,
                        monitor: free_port().map_err(StackError::Port)?,
                    },
                };
                ports.push(node);
            }
            Ok::<_, StackError>(NatsServer::start_cluster(&nats_dir, &ports, options.lifetime).await?)
        };
        let nodes = options.postgres_standbys + 1;
        let settings = if options.postgres_standbys > 0 {
            crate::postgres::replicated_settings("pg1")
        } else {
            Vec::new()
        };
        let (nats, postgres) =
            tokio::join!(nats, Postgres::start_with(&pg_dir, pg_port, options.lifetime, settings));
        let (mut nats, postgres) = (nats?, postgres?);
        let nats_peers = nats.split_off(1);
        let nats = nats.pop().expect("one node at least");
        let mut standbys = Vec::new();
        for i in 0..options.postgres_standbys {
            let port = match options.postgres_port {
                Some(first) => first.checked_add(1 + i as u16).ok_or_else(|| {
                    StackError::Port(std::io::Error::other(format!("port {first} + {} is past 65535", 1 + i)))
                })?,
                None => free_port().map_err(StackError::Port)?,
            };
            let name = format!("pg{}", i + 2);
            let settings = crate::postgres::replicated_settings(&name);
            standbys.push(
                postgres.start_standby_with(&dir.join(format!("postgres-{name}")), port, settings).await?,
            );
        }
        if !standbys.is_empty() {
            for node in std::iter::once(&postgres).chain(&standbys) {
                node.require_standbys(nodes).await?;
            }
        }
        let mut client = threadspace_store::connect(&postgres.url).await?;
        threadspace_store::migrate(&mut client).await?;
        let pool = threadspace_store::pool(&postgres_url_of(&postgres, &standbys), 4)?;
        let keys = Keys::load_or_create(&dir.join("keys"))?;
        // Its port is picked (or checked) once the gateways have theirs: see `start`'s end.
        let api = ApiHandle {
            port: 0,
            process: None,
            args: Vec::new(),
            log: dir.join("api.log"),
            mail: dir.join("mail.jsonl"),
        };
        let mut stack = Self {
            gateways: Vec::new(),
            api,
            bridges: Vec::new(),
            nats,
            nats_peers,
            postgres,
            standbys,
            keys,
            dir,
            pool,
            options: options.clone(),
            _temp: temp,
        };
        // The api service serves the web client, so its origin is the one browsers bring to
        // the gateways: allowed unless the caller chose the origins.
        let api_port = port(options.api_port)?;
        stack.api.port = api_port;
        let mut gateway_args = options.gateway_args.clone();
        if !gateway_args.iter().any(|a| a == "--allowed-origins") {
            gateway_args.push("--allowed-origins".into());
            gateway_args.push(format!("http://127.0.0.1:{api_port},http://localhost:{api_port}"));
        }
        for index in 0..options.gateways {
            let port = match options.gateway_port {
                Some(first) => first + index as u16,
                None => free_port().map_err(StackError::Port)?,
            };
            let handle = stack.gateway_handle(index, port, &gateway_args);
            stack.gateways.push(handle);
            stack.start_gateway(index).await?;
        }
        stack.api.args = api_args(api_port, &stack, &options.api_args);
        stack.start_api().await?;
        for index in 0..options.bridges {
            let port = free_port().map_err(StackError::Port)?;
            let handle = stack.bridge_handle(index, port, &options.bridge_args);
            stack.bridges.push(handle);
            stack.start_bridge(index).await?;
        }
        stack.verify_replicas().await?;
        Ok(stack)
    }

    /// Every client's NATS URL: the nodes, comma-separated.
    pub fn nats_url(&self) -> String {
        self.nats_servers().map(|n| n.url.as_str()).collect::<Vec<_>>().join(",")
    }

    /// Every client's PostgreSQL URL: with standbys, every node with
    /// `target_session_attrs=read-write`, so a client finds whichever node is primary.
    pub fn postgres_url(&self) -> String {
        postgres_url_of(&self.postgres, &self.standbys)
    }

    /// Every NATS node, in order: node `i` of [`Stack::nats_node`] is the `i`th.
    pub fn nats_servers(&self) -> impl Iterator<Item = &NatsServer> {
        std::iter::once(&self.nats).chain(&self.nats_peers)
    }

    /// NATS node `i` (0 is [`Stack::nats`]).
    pub fn nats_node(&mut self, i: usize) -> &mut NatsServer {
        if i == 0 {
            &mut self.nats
        } else {
            &mut self.nats_peers[i - 1]
        }
    }

    /// How many NATS nodes the stack runs.
    pub fn nats_nodes(&self) -> usize {
        1 + self.nats_peers.len()
    }

    /// The name of the NATS node leading `stream` (`None` while it has no leader).
    pub async fn stream_leader(&self, stream: &str) -> Result<Option<String>, StackError> {
        let info =
            crate::nats::stream_info(&self.jetstream().await?, stream).await.map_err(StackError::Replicas)?;
        Ok(info.cluster.as_ref().and_then(|c| c.leader.clone()))
    }

    /// A JetStream context on the stack's NATS nodes.
    pub async fn jetstream(&self) -> Result<async_nats::jetstream::Context, StackError> {
        crate::nats::jetstream(&self.nats_url()).await.map_err(StackError::Replicas)
    }

    /// Fails PostgreSQL over: SIGKILLs the primary, promotes the standby that received the most
    /// WAL (with `ANY 1` it holds every acknowledged commit), points the other standbys at it
    /// and makes it [`Stack::postgres`]. Returns the old primary, stopped, for
    /// [`Stack::rebuild_standby`]; clients find the new primary through their multi-host URLs.
    pub async fn fail_over_postgres(&mut self) -> Result<Postgres, StackError> {
        if self.standbys.is_empty() {
            return Err(StackError::Failover("the stack has no standby to promote".into()));
        }
        self.postgres.kill();
        // A standby that does not answer is skipped: the other can still be promoted.
        let mut best = (0, i64::MIN);
        for (i, standby) in self.standbys.iter().enumerate() {
            let lsn = standby.received_lsn().await.unwrap_or(-1);
            if lsn > best.1 {
                best = (i, lsn);
            }
        }
        let promoted = self.standbys.remove(best.0);
        promoted.promote().await?;
        let old = std::mem::replace(&mut self.postgres, promoted);
        let port = self.postgres.port;
        for standby in &mut self.standbys {
            standby.follow(port).await?;
        }
        Ok(old)
    }

    /// Makes `node` (a failed old primary) a standby of the current primary again, from a
    /// fresh base backup in its own directory and on its own port.
    pub async fn rebuild_standby(&mut self, node: Postgres) -> Result<(), StackError> {
        let (dir, port, settings) = (node.dir().to_owned(), node.port, node.settings().to_vec());
        drop(node);
        let standby = self.postgres.start_standby_with(&dir, port, settings).await?;
        self.standbys.push(standby);
        Ok(())
    }

    /// Checks that every stream the platform uses has the configured replica count and, in a
    /// cluster, a leader (docs/drills.md): a stream kept at R1 where R3 is configured is an
    /// error, not a silent downgrade.
    pub async fn verify_replicas(&self) -> Result<(), StackError> {
        let jetstream = self.jetstream().await?;
        // Gateways create MESSAGES and bridges the dead letters: a stack without them has none.
        let mut names = Vec::new();
        if !self.gateways.is_empty() {
            names.push(threadspace_protocol::subjects::MESSAGES_STREAM);
        }
        if !self.bridges.is_empty() {
            names.push(threadspace_protocol::subjects::DEAD_LETTER_STREAM);
        }
        for name in names {
            let mut stream = jetstream
                .get_stream(name)
                .await
                .map_err(|e| StackError::Replicas(format!("stream {name} is missing: {e}")))?;
            let info = stream.info().await.map_err(|e| StackError::Replicas(e.to_string()))?;
            threadspace_stream::check_replicas(info, self.options.stream_replicas)
                .map_err(|e| StackError::Replicas(e.to_string()))?;
        }
        Ok(())
    }

    /// Starts (or restarts) the api service and waits for its `/readyz`.
    pub async fn start_api(&mut self) -> Result<(), StackError> {
        let port = self.api.port;
        let not_ready = |log| StackError::ApiNotReady { port, log };
        let process = spawn_ready(
            "threadspace-api",
            "api",
            &self.api.args,
            &self.api.log,
            port,
            self.options.lifetime,
            not_ready,
        )
        .await?;
        self.api.process = Some(process);
        Ok(())
    }

    fn bridge_handle(&self, index: usize, port: u16, extra: &[String]) -> BridgeHandle {
        let mut args: Vec<String> = [
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--nats-url",
            &self.nats_url(),
            "--postgres-url",
            &self.postgres_url(),
            "--stream-replicas",
            &self.options.stream_replicas.to_string(),
            "--partitions",
            &self.options.partitions.to_string(),
            "--processes",
            &self.options.bridges.to_string(),
            "--process-index",
            &index.to_string(),
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        args.extend(extra.iter().cloned());
        BridgeHandle {
            index,
            port,
            process: None,
            args,
            log: self.dir.join(format!("bridge-{}.log", index + 1)),
        }
    }

    /// Starts (or restarts) bridge `index` and waits for its `/readyz`.
    pub async fn start_bridge(&mut self, index: usize) -> Result<(), StackError> {
        let lifetime = self.options.lifetime;
        let handle = &mut self.bridges[index];
        let port = handle.port;
        let name = format!("bridge-{}", index + 1);
        let not_ready = |log| StackError::BridgeNotReady { index, port, log };
        let process =
            spawn_ready("threadspace-bridge", &name, &handle.args, &handle.log, port, lifetime, not_ready)
                .await?;
        handle.process = Some(process);
        Ok(())
    }

    /// Replaces bridge `index`'s `--postgres-url` (takes effect at its next start), e.g. with a
    /// multi-host URL for a switchover rehearsal.
    pub fn set_bridge_postgres_url(&mut self, index: usize, url: &str) {
        let args = &mut self.bridges[index].args;
        if let Some(pos) = args.iter().position(|a| a == "--postgres-url") {
            args[pos + 1] = url.to_owned();
        }
    }

    /// SIGKILLs bridge `index`.
    pub fn kill_bridge(&mut self, index: usize) {
        if let Some(mut process) = self.bridges[index].process.take() {
            process.kill();
        }
    }

    /// SIGTERMs bridge `index` and waits up to `grace` for it to exit; its exit status.
    pub fn terminate_bridge(&mut self, index: usize, grace: Duration) -> Option<ExitStatus> {
        let mut process = self.bridges[index].process.take()?;
        process.signal(Signal::SIGTERM);
        let status = process.wait_timeout(grace);
        if status.is_none() {
            process.kill();
        }
        status
    }

    fn gateway_handle(&self, index: usize, port: u16, extra: &[String]) -> GatewayHandle {
        let mut args: Vec<String> = [
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--gateway-id",
            &format!("gw-{}", index + 1),
            "--nats-url",
            &self.nats_url(),
            "--postgres-url",
            &self.postgres_url(),
            "--stream-replicas",
            &self.options.stream_replicas.to_string(),
            "--jwks",
            &self.keys.jwks.display().to_string(),
            "--token-issuer",
            ISSUER,
            "--token-audience",
            AUDIENCE,
            "--partitions",
            &self.options.partitions.to_string(),
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        args.extend(extra.iter().cloned());
        GatewayHandle {
            index,
            port,
            process: None,
            args,
            log: self.dir.join(format!("gateway-{}.log", index + 1)),
        }
    }

    /// Starts (or restarts) gateway `index` and waits for `/readyz`.
    pub async fn start_gateway(&mut self, index: usize) -> Result<(), StackError> {
        let lifetime = self.options.lifetime;
        let handle = &mut self.gateways[index];
        let port = handle.port;
        let name = format!("gateway-{}", index + 1);
        let not_ready = |log| StackError::GatewayNotReady { index, port, log };
        let process =
            spawn_ready("threadspace-gateway", &name, &handle.args, &handle.log, port, lifetime, not_ready)
                .await?;
        handle.process = Some(process);
        Ok(())
    }

    /// SIGKILLs gateway `index` (a crash without a word).
    pub fn kill_gateway(&mut self, index: usize) {
        if let Some(mut process) = self.gateways[index].process.take() {
            process.kill();
        }
    }

    /// SIGTERMs gateway `index` and waits up to `grace` for it to exit; its exit status.
    pub fn terminate_gateway(&mut self, index: usize, grace: Duration) -> Option<ExitStatus> {
        let mut process = self.gateways[index].process.take()?;
        process.signal(Signal::SIGTERM);
        let status = process.wait_timeout(grace);
        if status.is_none() {
            process.kill();
        }
        status
    }

    /// WebSocket URL of gateway `index`.
    pub fn ws_url(&self, index: usize) -> String {
        self.gateways[index].ws_url()
    }

    /// A one-hour token for a user.
    pub fn token(&self, user: UserId, org: OrgId) -> String {
        self.keys.token(Identity::new(user, org), Duration::from_secs(3600))
    }

    /// Seeds orgs and users with the standard layout.
    pub async fn seed(&self, spec: &SeedSpec) -> Result<SeedReport, StackError> {
        let mut client = threadspace_store::connect(&self.postgres.url).await?;
        Ok(threadspace_store::seed::seed(&mut client, spec).await?)
    }

    /// A directory handle on the stack's database.
    pub fn directory(&self) -> threadspace_store::Directory {
        threadspace_store::Directory::new(self.pool.clone())
    }

    /// Leaves every process running and returns what `down` needs to stop them.
    pub fn detach(mut self) -> StackState {
        let gateways = std::mem::take(&mut self.gateways)
            .into_iter()
            .map(|g| {
                let url = g.ws_url();
                ProcessState { pid: g.process.map(|p| p.detach()).unwrap_or(0), port: g.port, url }
            })
            .collect();
        let bridges = std::mem::take(&mut self.bridges)
            .into_iter()
            .map(|b| ProcessState {
                pid: b.process.map(|p| p.detach()).unwrap_or(0),
                port: b.port,
                url: format!("http://127.0.0.1:{}/metrics", b.port),
            })
            .collect();
        let api = self.api.process.take().map(|p| ProcessState {
            pid: p.detach(),
            port: self.api.port,
            url: self.api.http_url(),
        });
        let (nats_url, postgres_url) = (self.nats_url(), self.postgres_url());
        let Self { nats, nats_peers, postgres, standbys, dir, .. } = self;
        let nats_state = |n: NatsServer| ProcessState { pid: n.process.detach(), port: n.port, url: n.url };
        let pg_state = |p: Postgres| ProcessState { pid: p.process.detach(), port: p.port, url: p.url };
        StackState {
            bridges,
            api,
            dir,
            nats: nats_state(nats),
            nats_peers: nats_peers.into_iter().map(nats_state).collect(),
            postgres: pg_state(postgres),
            standbys: standbys.into_iter().map(pg_state).collect(),
            nats_url: Some(nats_url),
            postgres_url: Some(postgres_url),
            gateways,
        }
    }
}

/// The api service's flags: the stack's NATS, PostgreSQL, token keys, partitions, mail file,
/// its own URL (links in mail lead to the web client it serves) and the gateways' WebSocket
/// URLs (the web client's).
/// Every client of a local stack is 127.0.0.1, so the per-IP request rate is raised (loadgen's
/// history pages come from there too). A flag in `extra` replaces the default of the same name.
fn api_args(port: u16, stack: &Stack, extra: &[String]) -> Vec<String> {
    let gateway_urls: Vec<String> =
        stack.gateways.iter().map(|g| format!("ws://127.0.0.1:{}/v1/ws", g.port)).collect();
    let gateway_urls = if gateway_urls.is_empty() { "/v1/ws".to_owned() } else { gateway_urls.join(",") };
    let defaults = [
        ("--listen", format!("127.0.0.1:{port}")),
        ("--nats-url", stack.nats_url()),
        ("--postgres-url", stack.postgres_url()),
        ("--jwks", stack.keys.jwks.display().to_string()),
        ("--signing-key", stack.keys.signing_path.display().to_string()),
        ("--token-issuer", ISSUER.to_owned()),
        ("--token-audience", AUDIENCE.to_owned()),
        ("--partitions", stack.options.partitions.to_string()),
        ("--mail-file", stack.api.mail.display().to_string()),
        ("--public-url", format!("http://127.0.0.1:{port}")),
        ("--gateway-url", gateway_urls),
        ("--rate-per-ip", "100000".to_owned()),
        ("--rate-per-user", "1000".to_owned()),
    ];
    let mut args = Vec::new();
    for (flag, value) in defaults {
        if !extra.iter().any(|e| e == flag) {
            args.push(flag.to_owned());
            args.push(value);
        }
    }
    args.extend(extra.iter().cloned());
    args
}

/// Spawns one of the workspace's binaries and waits (30 s) for its `/readyz` on `port`; if it
/// does not get ready, kills it and returns `not_ready(log tail)`.
async fn spawn_ready(
    binary: &str,
    name: &str,
    args: &[String],
    log: &Path,
    port: u16,
    lifetime: Lifetime,
    not_ready: impl FnOnce(String) -> StackError,
) -> Result<ManagedProcess, StackError> {
    let mut command = Command::new(tools::threadspace_bindir().join(binary));
    command.args(args);
    if std::env::var_os("RUST_LOG").is_none() {
        command.env("RUST_LOG", "info");
    }
    let mut process = ManagedProcess::spawn(name, command, log, lifetime)?;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        // A process that exited (e.g. its port was taken) is not ready, even if something
        // else answers on that port.
        if let Some(status) = process.exited() {
            let tail = crate::process::tail(log, 30);
            return Err(not_ready(format!("{name} exited ({status}) before it was ready:\n{tail}")));
        }
        if http_status(port, "/readyz").await == Some(200) {
            break;
        }
        if tokio::time::Instant::now() > deadline {
            process.kill();
            return Err(not_ready(crate::process::tail(log, 30)));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok(process)
}

/// A multi-host URL over `primary` and `standbys` (just the primary's URL without standbys).
fn postgres_url_of(primary: &Postgres, standbys: &[Postgres]) -> String {
    if standbys.is_empty() {
        return primary.url.clone();
    }
    let hosts: Vec<String> =
        std::iter::once(primary).chain(standbys).map(|p| format!("127.0.0.1:{}", p.port)).collect();
    let (head, _) = primary.url.split_once('@').expect("a URL with credentials");
    format!("{head}@{}/{}?target_session_attrs=read-write", hosts.join(","), crate::postgres::DATABASE)
}

/// Reads a detached stack's state file.
pub fn read_state(dir: &Path) -> Option<StackState> {
    let text = std::fs::read(dir.join("stack.json")).ok()?;
    serde_json::from_slice(&text).ok()
}
