//! Finds the external programs: nats-server, PostgreSQL's binaries, and ThreadSpace's own.
//! Each can be overridden by an environment variable (read only here).

use std::path::{Path, PathBuf};

/// The repository root (devstack lives one level below it).
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("devstack sits inside the repository").to_path_buf()
}

/// `nats-server`: `$THREADSPACE_NATS_SERVER`, the project's pinned install, or `PATH`.
pub fn nats_server() -> PathBuf {
    if let Some(path) = std::env::var_os("THREADSPACE_NATS_SERVER") {
        return PathBuf::from(path);
    }
    let pinned = repo_root().join(".threadspace/tools/venv/bin/nats-server");
    if pinned.exists() {
        return pinned;
    }
    PathBuf::from("nats-server")
}

/// Directory of `initdb` and `postgres`: `$THREADSPACE_PG_BINDIR`, or the newest
/// `/usr/lib/postgresql/<v>/bin` (Debian keeps them off `PATH`).
pub fn postgres_bindir() -> Option<PathBuf> {
    if let Some(path) = std::env::var_os("THREADSPACE_PG_BINDIR") {
        return Some(PathBuf::from(path));
    }
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .filter_map(|entry| {
            let entry = entry.ok()?;
            let version = entry.file_name().to_str()?.parse::<u32>().ok()?;
            let bin = entry.path().join("bin");
            bin.join("initdb").exists().then_some((version, bin))
        })
        .collect();
    versions.sort();
    versions.pop().map(|(_, bin)| bin)
}

/// Directory of ThreadSpace's binaries: `$THREADSPACE_BIN_DIR`, the running executable's
/// directory, or its parent (test binaries live in `target/<profile>/deps`).
pub fn threadspace_bindir() -> PathBuf {
    if let Some(path) = std::env::var_os("THREADSPACE_BIN_DIR") {
        return PathBuf::from(path);
    }
    let exe = std::env::current_exe().unwrap_or_default();
    let dir = exe.parent().map(Path::to_path_buf).unwrap_or_default();
    if dir.join("threadspace-gateway").exists() {
        return dir;
    }
    dir.parent().map(Path::to_path_buf).unwrap_or(dir)
}

/// Whether this process runs as root (PostgreSQL refuses to; we then run it as `postgres`).
pub fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}
