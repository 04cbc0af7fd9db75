//! A `nats-server` with JetStream on loopback, configured for durability: `sync_interval:
//! always`, so a PubAck means the message is on disk (docs/design.md §7.1, the Jepsen 2025 finding).
//! Alone, or as one node of a cluster (`--ha`: three nodes, streams at R3) whose nodes can be
//! killed, paused, wiped and started again for failover drills (docs/drills.md).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::process::{ManagedProcess, SpawnError};
use crate::{tools, wait_for, Lifetime};

/// A JetStream context on any node of `urls` (comma-separated, as every client takes them),
/// giving up after 3 s: for the stack's checks, `status` and drills.
pub async fn jetstream(urls: &str) -> Result<async_nats::jetstream::Context, String> {
    let servers = threadspace_service::nats_addrs(urls).map_err(|e| format!("bad NATS URL {urls:?}: {e}"))?;
    let client = async_nats::ConnectOptions::new()
        .connection_timeout(Duration::from_secs(3))
        .connect(servers)
        .await
        .map_err(|e| format!("cannot connect to NATS at {urls}: {e}"))?;
    Ok(async_nats::jetstream::new(client))
}

/// The current state of `stream`, read through `jetstream`.
pub async fn stream_info(
    jetstream: &async_nats::jetstream::Context,
    stream: &str,
) -> Result<async_nats::jetstream::stream::Info, String> {
    let mut handle = jetstream.get_stream(stream).await.map_err(|e| format!("stream {stream}: {e}"))?;
    handle.info().await.cloned().map_err(|e| format!("stream {stream}: {e}"))
}

/// A running nats-server.
#[derive(Debug)]
pub struct NatsServer {
    pub process: ManagedProcess,
    pub port: u16,
    pub url: String,
    pub dir: PathBuf,
    /// Its `server_name` (the name JetStream reports as a stream's leader).
    pub name: String,
    /// The port of its monitoring endpoints (`/healthz`, `/jsz`), for a cluster node.
    pub monitor_port: Option<u16>,
    lifetime: Lifetime,
}

/// A node's place in a cluster: its name, the port its routes listen on, every node's route
/// port (its own included, as nats-server ignores a route to itself), and the port of its
/// monitoring endpoints.
#[derive(Clone, Debug)]
pub struct ClusterNode {
    pub name: String,
    pub cluster_port: u16,
    pub routes: Vec<u16>,
    pub monitor_port: u16,
}

/// The ports of one cluster node: clients, routes, monitoring.
#[derive(Clone, Copy, Debug)]
pub struct NodePorts {
    pub client: u16,
    pub cluster: u16,
    pub monitor: u16,
}

#[derive(Debug, thiserror::Error)]
pub enum NatsError {
    #[error("cannot write the nats-server config in {dir}")]
    Config {
        dir: String,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Spawn(#[from] SpawnError),
    #[error("nats-server on port {port} did not become ready with JetStream; log tail:\n{log}")]
    NotReady { port: u16, log: String },
}

/// The config file for a local JetStream server storing under `dir`, alone or as `node` of a
/// cluster.
pub fn config_text(dir: &Path, port: u16, node: Option<&ClusterNode>) -> String {
    let name = node.map_or_else(|| format!("threadspace-local-{port}"), |n| n.name.clone());
    let cluster = node.map_or_else(String::new, |node| {
        let routes: Vec<String> =
            node.routes.iter().map(|p| format!("    \"nats-route://127.0.0.1:{p}\"")).collect();
        format!(
            r#"# Monitoring (/healthz, /jsz) on loopback only: it has no authentication.
http: "127.0.0.1:{monitor_port}"
cluster {{
  name: "threadspace-local"
  listen: "127.0.0.1:{cluster_port}"
  routes: [
{routes}
  ]
}}
"#,
            cluster_port = node.cluster_port,
            monitor_port = node.monitor_port,
            routes = routes.join("\n")
        )
    });
    format!(
        r#"# Written by threadspace-devstack.
server_name: "{name}"
listen: "127.0.0.1:{port}"
max_payload: 1MB
write_deadline: "10s"
jetstream {{
  store_dir: "{store}"
  # PubAck only after fsync: without it an acknowledged message can be lost on a crash.
  sync_interval: always
  max_memory_store: 256MB
  max_file_store: 8GB
}}
{cluster}"#,
        store = dir.join("jetstream").display()
    )
}

impl NatsServer {
    /// Starts nats-server with its data under `dir` and waits until JetStream answers.
    pub async fn start(dir: &Path, port: u16, lifetime: Lifetime) -> Result<Self, NatsError> {
        let server = Self::spawn(dir, port, None, lifetime)?;
        server.wait_ready().await?;
        Ok(server)
    }

    /// Starts a cluster of one node per [`NodePorts`], with its data under `dir/n<i>`, and
    /// waits until every node's JetStream answers (which needs a meta leader, so a quorum of
    /// the nodes).
    pub async fn start_cluster(
        dir: &Path,
        ports: &[NodePorts],
        lifetime: Lifetime,
    ) -> Result<Vec<Self>, NatsError> {
        let routes: Vec<u16> = ports.iter().map(|p| p.cluster).collect();
        let mut nodes = Vec::new();
        for (i, p) in ports.iter().enumerate() {
            let name = format!("n{}", i + 1);
            let node = ClusterNode {
                name: name.clone(),
                cluster_port: p.cluster,
                routes: routes.clone(),
                monitor_port: p.monitor,
            };
            nodes.push(Self::spawn(&dir.join(&name), p.client, Some(&node), lifetime)?);
        }
        for node in &nodes {
            node.wait_ready().await?;
        }
        Ok(nodes)
    }

    fn spawn(
        dir: &Path,
        port: u16,
        node: Option<&ClusterNode>,
        lifetime: Lifetime,
    ) -> Result<Self, NatsError> {
        std::fs::create_dir_all(dir)
            .map_err(|source| NatsError::Config { dir: dir.display().to_string(), source })?;
        let config = dir.join("nats.conf");
        std::fs::write(&config, config_text(dir, port, node))
            .map_err(|source| NatsError::Config { dir: dir.display().to_string(), source })?;
        let name = node.map_or_else(|| format!("threadspace-local-{port}"), |n| n.name.clone());
        let process = Self::spawn_process(dir, &name, lifetime)?;
        let url = format!("nats://127.0.0.1:{port}");
        let monitor_port = node.map(|n| n.monitor_port);
        Ok(Self { process, port, url, dir: dir.to_owned(), name, monitor_port, lifetime })
    }

    fn spawn_process(dir: &Path, name: &str, lifetime: Lifetime) -> Result<ManagedProcess, SpawnError> {
        let mut command = Command::new(tools::nats_server());
        command.arg("-c").arg(dir.join("nats.conf"));
        ManagedProcess::spawn(&format!("nats-server {name}"), command, &dir.join("nats.log"), lifetime)
    }

    /// SIGKILLs the node (a crash: nothing is flushed that was not already).
    pub fn kill(&mut self) {
        self.process.kill();
    }

    /// Removes the node's JetStream data (after [`NatsServer::kill`]): it rejoins empty and
    /// must catch up from its peers.
    pub fn wipe(&self) -> std::io::Result<()> {
        match std::fs::remove_dir_all(self.dir.join("jetstream")) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        }
    }

    /// Starts the node again (after a kill) on its port and data directory, and waits until
    /// its JetStream answers.
    pub async fn start_again(&mut self) -> Result<(), NatsError> {
        self.process = Self::spawn_process(&self.dir, &self.name, self.lifetime)?;
        self.wait_ready().await
    }

    /// Stops the server (SIGTERM, then SIGKILL after 10 s) and starts it again on the same port
    /// and data directory, as a crash-and-restart or a rolling restart would.
    pub async fn restart(&mut self, lifetime: Lifetime) -> Result<(), NatsError> {
        self.process.signal(nix::sys::signal::Signal::SIGTERM);
        if self.process.wait_timeout(Duration::from_secs(10)).is_none() {
            self.process.kill();
        }
        self.lifetime = lifetime;
        self.process = Self::spawn_process(&self.dir, &self.name, lifetime)?;
        self.wait_ready().await
    }

    /// Whether the node is healthy by its own account: nats-server's `/healthz`, which also
    /// fails while a stream or consumer the node hosts is still catching up. A stream's info
    /// reports such a replica `current` long before it holds the stream again: a wiped node
    /// was reported current within 8 s and took up to 92 s to copy back a 300,000-message stream
    /// (docs/drills.md, "What the drills found"). `Err` says why not; a node without a
    /// monitoring port (a single node) is taken as healthy.
    pub async fn health(&self) -> Result<(), String> {
        let Some(port) = self.monitor_port else { return Ok(()) };
        match threadspace_client::rest::http_get(port, "/healthz").await {
            Some((200, _)) => Ok(()),
            Some((status, body)) => Err(format!("/healthz answered {status}: {}", body.trim())),
            None => Err(format!("/healthz on port {port} did not answer")),
        }
    }

    /// The JetStream meta group's leader as this node's `/jsz` names it; `None` while the group
    /// has none, or for a node that does not answer or has no monitoring port.
    pub async fn meta_leader(&self) -> Option<String> {
        let Some((200, body)) = threadspace_client::rest::http_get(self.monitor_port?, "/jsz").await else {
            return None;
        };
        let jsz: serde_json::Value = serde_json::from_str(&body).ok()?;
        jsz["meta_cluster"]["leader"].as_str().filter(|l| !l.is_empty()).map(str::to_owned)
    }

    async fn wait_ready(&self) -> Result<(), NatsError> {
        let url = self.url.clone();
        let ready = wait_for(Duration::from_secs(30), || {
            let url = url.clone();
            async move {
                let client = async_nats::connect(url).await.map_err(|e| e.to_string())?;
                let jetstream = async_nats::jetstream::new(client);
                jetstream.query_account().await.map_err(|e| e.to_string())?;
                Ok::<(), String>(())
            }
        })
        .await;
        ready.map_err(|_| NatsError::NotReady { port: self.port, log: self.process.log_tail(20) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cluster_nodes_serve_monitoring_on_loopback_only_and_a_single_node_none() {
        let node = ClusterNode { name: "n2".into(), cluster_port: 12, routes: vec![2, 12], monitor_port: 13 };
        let text = config_text(Path::new("/data"), 11, Some(&node));
        assert!(text.contains("\nhttp: \"127.0.0.1:13\"\n"), "{text}");
        assert!(text.contains("listen: \"127.0.0.1:12\""), "{text}");
        assert!(
            !config_text(Path::new("/data"), 11, None).contains("http"),
            "a single node has no monitoring"
        );
    }
}
