//! A PostgreSQL server on loopback with durable settings: data checksums, `fsync`,
//! `full_page_writes` and `synchronous_commit` on. As root it runs as the `postgres` user,
//! since `initdb` and `postgres` refuse to run as root.
//!
//! For `--ha` and failover drills, a primary with streaming standbys: every node is named
//! (`cluster_name`, which its WAL receiver reports as `application_name`) and carries the same
//! `synchronous_standby_names = 'ANY 1 (pg1, pg2, pg3)'`, so whichever node is primary waits
//! for one standby's flush before a commit returns, and losing one standby blocks nothing
//! (docs/drills.md, "The HA topology").

use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::process::{wrap, ManagedProcess, SpawnError};
use crate::{tools, wait_for, Lifetime};

/// Database the ThreadSpace schema lives in.
pub const DATABASE: &str = "threadspace";
/// Superuser created by initdb.
pub const USER: &str = "threadspace";

/// A running PostgreSQL.
#[derive(Debug)]
pub struct Postgres {
    pub process: ManagedProcess,
    pub port: u16,
    /// URL of the ThreadSpace database.
    pub url: String,
    pub data_dir: PathBuf,
    dir: PathBuf,
    bindir: PathBuf,
    as_postgres: Option<(u32, u32)>,
    lifetime: Lifetime,
    /// False between `stop` and `restart`.
    running: bool,
    /// Settings beyond the durable defaults (`-c name=value`).
    settings: Vec<String>,
}

/// The settings of node `name` of a replicated set (see the module doc). The quorum is set
/// by [`Postgres::require_standbys`] once the standbys run: a primary with it and no standby
/// yet would wait forever on its first commit.
pub fn replicated_settings(name: &str) -> Vec<String> {
    vec![
        format!("cluster_name={name}"),
        "wal_keep_size=512MB".to_owned(),
        "wal_log_hints=on".to_owned(),
        "hot_standby_feedback=on".to_owned(),
    ]
}

#[derive(Debug, thiserror::Error)]
pub enum PostgresError {
    #[error("PostgreSQL is not installed (no /usr/lib/postgresql/*/bin/initdb; set THREADSPACE_PG_BINDIR or install Debian's postgresql)")]
    NotInstalled,
    #[error("cannot prepare {path}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("the `postgres` OS user is missing; it is needed to run PostgreSQL as root")]
    NoPostgresUser,
    #[error("initdb failed:\n{output}")]
    Initdb { output: String },
    #[error(transparent)]
    Spawn(#[from] SpawnError),
    #[error("PostgreSQL on port {port} did not accept connections; log tail:\n{log}")]
    NotReady { port: u16, log: String },
    #[error("cannot promote the standby")]
    Promote(#[source] Box<dyn std::error::Error + Send + Sync>),
    #[error("cannot query PostgreSQL")]
    Query(#[source] Box<dyn std::error::Error + Send + Sync>),
    #[error("cannot create the {DATABASE} database")]
    CreateDatabase(#[source] tokio_postgres::Error),
}

fn io(path: &Path) -> impl Fn(std::io::Error) -> PostgresError + '_ {
    move |source| PostgresError::Io { path: path.display().to_string(), source }
}

/// Runs a PostgreSQL binary as the right user. Changing credentials clears a parent-death
/// signal set before it, so an attached server gets it again after the switch.
fn command(bin: &Path, as_postgres: Option<(u32, u32)>, lifetime: Lifetime) -> Command {
    let command = Command::new(bin);
    let mut args = vec!["--reuid=postgres", "--regid=postgres", "--init-groups"];
    if lifetime == Lifetime::Attached {
        args.extend(["--pdeathsig", "KILL"]);
    }
    match as_postgres {
        Some(_) => wrap(command, &args),
        None => command,
    }
}

impl Postgres {
    /// Initializes `dir/pg` if needed and starts the server on `port`.
    pub async fn start(dir: &Path, port: u16, lifetime: Lifetime) -> Result<Self, PostgresError> {
        Self::start_with(dir, port, lifetime, Vec::new()).await
    }

    /// [`Postgres::start`] with extra settings (`name=value`).
    pub async fn start_with(
        dir: &Path,
        port: u16,
        lifetime: Lifetime,
        settings: Vec<String>,
    ) -> Result<Self, PostgresError> {
        let bindir = tools::postgres_bindir().ok_or(PostgresError::NotInstalled)?;
        std::fs::create_dir_all(dir).map_err(io(dir))?;
        let as_postgres = if tools::is_root() {
            let user = nix::unistd::User::from_name("postgres")
                .ok()
                .flatten()
                .ok_or(PostgresError::NoPostgresUser)?;
            // The postgres user must be able to reach its data directory.
            std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755)).map_err(io(dir))?;
            Some((user.uid.as_raw(), user.gid.as_raw()))
        } else {
            None
        };
        let data_dir = dir.join("pg");
        let password_file = dir.join("pg-password");
        let password = match std::fs::read_to_string(&password_file) {
            Ok(p) if data_dir.join("PG_VERSION").exists() => p.trim().to_owned(),
            _ => {
                let password: String =
                    (0..24).map(|_| char::from(b'a' + rand::random_range(0..26u8))).collect();
                std::fs::write(&password_file, &password).map_err(io(&password_file))?;
                std::fs::set_permissions(&password_file, std::fs::Permissions::from_mode(0o644))
                    .map_err(io(&password_file))?;
                initdb(&bindir, &data_dir, &password_file, as_postgres)?;
                password
            }
        };

        let process = spawn_server(
            &bindir,
            &data_dir,
            port,
            as_postgres,
            &dir.join("postgres.log"),
            lifetime,
            &settings,
        )?;
        let admin_url = format!("postgres://{USER}:{password}@127.0.0.1:{port}/postgres");
        let url = format!("postgres://{USER}:{password}@127.0.0.1:{port}/{DATABASE}");
        let pg = Self {
            process,
            port,
            url,
            data_dir,
            dir: dir.to_owned(),
            bindir,
            as_postgres,
            lifetime,
            running: true,
            settings,
        };
        let admin = wait_for(Duration::from_secs(30), || threadspace_store::connect(&admin_url))
            .await
            .map_err(|_| PostgresError::NotReady { port, log: pg.process.log_tail(20) })?;
        let exists = admin
            .query_opt("SELECT 1 FROM pg_database WHERE datname = $1", &[&DATABASE])
            .await
            .map_err(PostgresError::CreateDatabase)?
            .is_some();
        if !exists {
            admin
                .batch_execute(&format!("CREATE DATABASE {DATABASE}"))
                .await
                .map_err(PostgresError::CreateDatabase)?;
        }
        Ok(pg)
    }
}

impl Postgres {
    /// A streaming-replication standby of this server in `dir` on `port`: a base backup
    /// (`pg_basebackup -R`, so it follows this primary) started read-only with the same
    /// settings. Promote it with [`Postgres::promote`] to rehearse a switchover.
    pub async fn start_standby(&self, dir: &Path, port: u16) -> Result<Self, PostgresError> {
        self.start_standby_with(dir, port, self.settings.clone()).await
    }

    /// [`Postgres::start_standby`] with its own settings (a replicated node's name).
    pub async fn start_standby_with(
        &self,
        dir: &Path,
        port: u16,
        settings: Vec<String>,
    ) -> Result<Self, PostgresError> {
        std::fs::create_dir_all(dir).map_err(io(dir))?;
        if self.as_postgres.is_some() {
            std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755)).map_err(io(dir))?;
        }
        let data_dir = dir.join("pg");
        // A rebuilt node starts from a fresh base backup.
        match std::fs::remove_dir_all(&data_dir) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(io(&data_dir)(e)),
            _ => {}
        }
        std::fs::create_dir_all(&data_dir).map_err(io(&data_dir))?;
        std::fs::set_permissions(&data_dir, std::fs::Permissions::from_mode(0o700)).map_err(io(&data_dir))?;
        if let Some((uid, gid)) = self.as_postgres {
            nix::unistd::chown(&data_dir, Some(uid.into()), Some(gid.into()))
                .map_err(|e| PostgresError::Io { path: data_dir.display().to_string(), source: e.into() })?;
        }
        let password = std::fs::read_to_string(self.dir.join("pg-password")).map_err(io(&self.dir))?;
        // The node keeps the password file: it may be rebuilt or promoted later.
        let password_file = dir.join("pg-password");
        if password_file != self.dir.join("pg-password") {
            std::fs::write(&password_file, password.trim()).map_err(io(&password_file))?;
            std::fs::set_permissions(&password_file, std::fs::Permissions::from_mode(0o644))
                .map_err(io(&password_file))?;
        }
        let mut backup = command(&self.bindir.join("pg_basebackup"), self.as_postgres, Lifetime::Detached);
        backup
            .arg("-D")
            .arg(&data_dir)
            .args([
                "-h",
                "127.0.0.1",
                "-p",
                &self.port.to_string(),
                "-U",
                USER,
                "-R",
                "-X",
                "stream",
                "-c",
                "fast",
            ])
            .env("PGPASSWORD", password.trim());
        let output = backup.output().map_err(io(&self.bindir))?;
        if !output.status.success() {
            return Err(PostgresError::Initdb {
                output: format!("pg_basebackup: {}", String::from_utf8_lossy(&output.stderr)),
            });
        }
        let log = dir.join("postgres.log");
        let process =
            spawn_server(&self.bindir, &data_dir, port, self.as_postgres, &log, self.lifetime, &settings)?;
        let url = self.url.replace(&format!(":{}/", self.port), &format!(":{port}/"));
        let standby = Self {
            process,
            port,
            url: url.clone(),
            data_dir,
            dir: dir.to_owned(),
            bindir: self.bindir.clone(),
            as_postgres: self.as_postgres,
            lifetime: self.lifetime,
            running: true,
            settings,
        };
        wait_for(Duration::from_secs(30), || threadspace_store::connect(&url))
            .await
            .map_err(|_| PostgresError::NotReady { port, log: standby.process.log_tail(20) })?;
        Ok(standby)
    }

    /// Promotes a standby to primary (`pg_promote`, waiting until it accepts writes).
    pub async fn promote(&self) -> Result<(), PostgresError> {
        let promote = async {
            let client = threadspace_store::connect(&self.url).await?;
            let promoted: bool = client.query_one("SELECT pg_promote(true, 30)", &[]).await?.get(0);
            if !promoted {
                return Err("pg_promote did not finish within 30 s".into());
            }
            Ok::<_, Box<dyn std::error::Error + Send + Sync>>(())
        };
        promote.await.map_err(PostgresError::Promote)
    }

    /// Makes commits wait for one of the `nodes` nodes' flush (`ANY 1 (pg1, …)`, stored by
    /// `ALTER SYSTEM` so it survives restarts and base backups). Run on every node: a standby
    /// keeps it for the day it is promoted.
    pub async fn require_standbys(&self, nodes: usize) -> Result<(), PostgresError> {
        let names: Vec<String> = (1..=nodes).map(|i| format!("pg{i}")).collect();
        let set = async {
            let client = threadspace_store::connect(&self.url).await?;
            let sql = format!("ALTER SYSTEM SET synchronous_standby_names = 'ANY 1 ({})'", names.join(", "));
            // Two statements: ALTER SYSTEM refuses to run in a transaction block.
            client.batch_execute(&sql).await?;
            client.batch_execute("SELECT pg_reload_conf()").await?;
            Ok::<_, Box<dyn std::error::Error + Send + Sync>>(())
        };
        set.await.map_err(PostgresError::Query)
    }

    /// SIGKILLs the server (a crash; its shared memory goes with it).
    pub fn kill(&mut self) {
        self.process.kill();
        self.running = false;
    }

    /// Whether the server was started and not stopped or killed since.
    pub fn is_running(&self) -> bool {
        self.running
    }

    /// The data directory's parent (where its log and password file are).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The settings it runs with beyond the durable defaults.
    pub fn settings(&self) -> &[String] {
        &self.settings
    }

    /// The WAL timeline it writes (a primary) or replays (a standby): each promotion starts
    /// a new one.
    pub async fn timeline(&self) -> Result<u32, PostgresError> {
        timeline_at(&self.url).await
    }

    /// How far a standby has received WAL (bytes from 0/0); 0 on a primary.
    pub async fn received_lsn(&self) -> Result<i64, PostgresError> {
        let read = async {
            let client = threadspace_store::connect(&self.url).await?;
            let row = client
                .query_one("SELECT COALESCE((pg_last_wal_receive_lsn() - '0/0'::pg_lsn)::bigint, 0)", &[])
                .await?;
            Ok::<_, Box<dyn std::error::Error + Send + Sync>>(row.get::<_, i64>(0))
        };
        read.await.map_err(PostgresError::Query)
    }

    /// Points a standby at another primary (after a promotion): rewrites the port in its
    /// `primary_conninfo` and restarts it, since the WAL receiver must reconnect.
    pub async fn follow(&mut self, primary_port: u16) -> Result<(), PostgresError> {
        let auto = self.data_dir.join("postgresql.auto.conf");
        let text = std::fs::read_to_string(&auto).map_err(io(&auto))?;
        let text: String = text
            .lines()
            .map(|line| {
                if !line.starts_with("primary_conninfo") {
                    return format!("{line}\n");
                }
                let rewritten = line
                    .split(' ')
                    .map(|part| {
                        if part.starts_with("port=") {
                            format!("port={primary_port}")
                        } else {
                            part.to_owned()
                        }
                    })
                    .collect::<Vec<_>>()
                    .join(" ");
                format!("{rewritten}\n")
            })
            .collect();
        std::fs::write(&auto, text).map_err(io(&auto))?;
        self.stop();
        self.restart().await
    }

    /// Fast shutdown (SIGINT: open transactions roll back, clients are disconnected); waits
    /// up to 30 s for the server to exit, then kills it.
    pub fn stop(&mut self) {
        if !self.running {
            return;
        }
        self.process.signal(nix::sys::signal::Signal::SIGINT);
        if self.process.wait_timeout(Duration::from_secs(30)).is_none() {
            self.process.kill();
        }
        self.running = false;
    }

    /// Starts the server again on the same port and data directory (after `stop`) and waits
    /// until it accepts connections.
    pub async fn restart(&mut self) -> Result<(), PostgresError> {
        if self.running {
            return Ok(());
        }
        let log = self.dir.join("postgres.log");
        self.process = spawn_server(
            &self.bindir,
            &self.data_dir,
            self.port,
            self.as_postgres,
            &log,
            self.lifetime,
            &self.settings,
        )?;
        self.running = true;
        let url = self.url.clone();
        wait_for(Duration::from_secs(30), || threadspace_store::connect(&url))
            .await
            .map_err(|_| PostgresError::NotReady { port: self.port, log: self.process.log_tail(20) })?;
        Ok(())
    }
}

fn spawn_server(
    bindir: &Path,
    data_dir: &Path,
    port: u16,
    as_postgres: Option<(u32, u32)>,
    log: &Path,
    lifetime: Lifetime,
    settings: &[String],
) -> Result<ManagedProcess, PostgresError> {
    let mut server = command(&bindir.join("postgres"), as_postgres, lifetime);
    server.arg("-D").arg(data_dir);
    for setting in [
        "listen_addresses=127.0.0.1".to_owned(),
        format!("port={port}"),
        "unix_socket_directories=".to_owned(),
        "fsync=on".to_owned(),
        "full_page_writes=on".to_owned(),
        "synchronous_commit=on".to_owned(),
        "max_connections=300".to_owned(),
        "shared_buffers=128MB".to_owned(),
        "log_min_messages=warning".to_owned(),
        // Commit times per row: loadgen measures the bridge's stored → committed lag with it.
        "track_commit_timestamp=on".to_owned(),
    ]
    .iter()
    .chain(settings)
    {
        server.arg("-c").arg(setting);
    }
    Ok(ManagedProcess::spawn("postgres", server, log, lifetime)?)
}

fn initdb(
    bindir: &Path,
    data_dir: &Path,
    password_file: &Path,
    as_postgres: Option<(u32, u32)>,
) -> Result<(), PostgresError> {
    std::fs::create_dir_all(data_dir).map_err(io(data_dir))?;
    std::fs::set_permissions(data_dir, std::fs::Permissions::from_mode(0o700)).map_err(io(data_dir))?;
    if let Some((uid, gid)) = as_postgres {
        nix::unistd::chown(data_dir, Some(uid.into()), Some(gid.into()))
            .map_err(|e| PostgresError::Io { path: data_dir.display().to_string(), source: e.into() })?;
    }
    let mut init = command(&bindir.join("initdb"), as_postgres, Lifetime::Detached);
    init.arg("-D")
        .arg(data_dir)
        .arg("-U")
        .arg(USER)
        .arg(format!("--pwfile={}", password_file.display()))
        .args([
            "--auth-host=scram-sha-256",
            "--auth-local=peer",
            "--data-checksums",
            "-E",
            "UTF8",
            "--locale=C.UTF-8",
        ]);
    let output = init.output().map_err(io(&bindir.join("initdb")))?;
    if !output.status.success() {
        return Err(PostgresError::Initdb {
            output: format!(
                "{}{}",
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr)
            ),
        });
    }
    Ok(())
}

/// The WAL timeline of the server at `url`: the one a primary writes, or a standby replays.
/// Each promotion starts a new one.
pub async fn timeline_at(url: &str) -> Result<u32, PostgresError> {
    let read = async {
        let client = threadspace_store::connect(url).await?;
        let row = client
            .query_one(
                "SELECT CASE WHEN pg_is_in_recovery() THEN (SELECT received_tli FROM pg_stat_wal_receiver) \
                 ELSE ('x' || substr(pg_walfile_name(pg_current_wal_lsn()), 1, 8))::bit(32)::int END",
                &[],
            )
            .await?;
        Ok::<_, Box<dyn std::error::Error + Send + Sync>>(row.get::<_, Option<i32>>(0).unwrap_or(0) as u32)
    };
    read.await.map_err(PostgresError::Query)
}
