//! A `nats-server` with JetStream on loopback, configured for durability: `sync_interval:
//! always`, so a PubAck means the message is on disk (docs/design.md §7.1, the Jepsen 2025 finding).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::process::{ManagedProcess, SpawnError};
use crate::{tools, wait_for, Lifetime};

/// A running nats-server.
#[derive(Debug)]
pub struct NatsServer {
    pub process: ManagedProcess,
    pub port: u16,
    pub url: String,
    pub dir: PathBuf,
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

/// The config file for a local JetStream server storing under `dir`.
pub fn config_text(dir: &Path, port: u16) -> String {
    format!(
        r#"# Written by threadspace-devstack.
server_name: "threadspace-local-{port}"
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
"#,
        store = dir.join("jetstream").display()
    )
}

impl NatsServer {
    /// Starts nats-server with its data under `dir` and waits until JetStream answers.
    pub async fn start(dir: &Path, port: u16, lifetime: Lifetime) -> Result<Self, NatsError> {
        std::fs::create_dir_all(dir)
            .map_err(|source| NatsError::Config { dir: dir.display().to_string(), source })?;
        let config = dir.join("nats.conf");
        std::fs::write(&config, config_text(dir, port))
            .map_err(|source| NatsError::Config { dir: dir.display().to_string(), source })?;
        let mut command = Command::new(tools::nats_server());
        command.arg("-c").arg(&config);
        let process = ManagedProcess::spawn("nats-server", command, &dir.join("nats.log"), lifetime)?;
        let url = format!("nats://127.0.0.1:{port}");
        let server = Self { process, port, url, dir: dir.to_owned() };
        server.wait_ready().await?;
        Ok(server)
    }

    /// Stops the server (SIGTERM, then SIGKILL after 10 s) and starts it again on the same port
    /// and data directory, as a crash-and-restart or a rolling restart would.
    pub async fn restart(&mut self, lifetime: Lifetime) -> Result<(), NatsError> {
        self.process.signal(nix::sys::signal::Signal::SIGTERM);
        if self.process.wait_timeout(Duration::from_secs(10)).is_none() {
            self.process.kill();
        }
        let mut command = Command::new(tools::nats_server());
        command.arg("-c").arg(self.dir.join("nats.conf"));
        self.process = ManagedProcess::spawn("nats-server", command, &self.dir.join("nats.log"), lifetime)?;
        self.wait_ready().await
    }

    async fn wait_ready(&self) -> Result<(), NatsError> {
        let url = self.url.clone();
        let ready = wait_for(Duration::from_secs(20), || {
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
