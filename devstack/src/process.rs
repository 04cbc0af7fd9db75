//! A child process with a name, a log file and a stop signal; killed on drop unless detached.

use std::fs::OpenOptions;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use crate::Lifetime;

/// A running child.
#[derive(Debug)]
pub struct ManagedProcess {
    name: String,
    /// `None` once waited for or detached.
    child: Option<Child>,
    pid: u32,
    log: PathBuf,
}

#[derive(Debug, thiserror::Error)]
#[error("cannot start {name} ({program})")]
pub struct SpawnError {
    pub name: String,
    pub program: String,
    #[source]
    pub source: std::io::Error,
}

impl ManagedProcess {
    /// Spawns `command` with stdout and stderr appended to `log`. Attached processes get a
    /// parent-death SIGKILL (through `setpriv`) so a crashed test leaves nothing behind.
    pub fn spawn(name: &str, command: Command, log: &Path, lifetime: Lifetime) -> Result<Self, SpawnError> {
        let program = command.get_program().to_string_lossy().into_owned();
        let error = |source| SpawnError { name: name.to_owned(), program: program.clone(), source };
        let file = OpenOptions::new().create(true).append(true).open(log).map_err(error)?;
        let mut command = match lifetime {
            Lifetime::Attached if Path::new("/usr/bin/setpriv").exists() => {
                wrap(command, &["--pdeathsig", "KILL"])
            }
            _ => command,
        };
        command.stdin(Stdio::null()).stdout(file.try_clone().map_err(error)?).stderr(file);
        if lifetime == Lifetime::Detached {
            use std::os::unix::process::CommandExt as _;
            // Own process group: a Ctrl-C in the terminal that ran `up` does not reach it.
            command.process_group(0);
        }
        let child = command.spawn().map_err(error)?;
        let pid = child.id();
        tracing::debug!(name, pid, log = %log.display(), "process started");
        Ok(Self { name: name.to_owned(), child: Some(child), pid, log: log.to_owned() })
    }

    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// The last `n` lines of the log, for error messages.
    pub fn log_tail(&self, n: usize) -> String {
        tail(&self.log, n)
    }

    /// Whether the process has exited (reaping it if so).
    pub fn exited(&mut self) -> Option<ExitStatus> {
        self.child.as_mut().and_then(|c| c.try_wait().ok().flatten())
    }

    /// Sends a signal.
    pub fn signal(&self, signal: Signal) {
        let _ = kill(Pid::from_raw(self.pid as i32), signal);
    }

    /// SIGKILL now and reap.
    pub fn kill(&mut self) -> Option<ExitStatus> {
        let mut child = self.child.take()?;
        tracing::debug!(name = %self.name, pid = self.pid, "killing process");
        let _ = child.kill();
        child.wait().ok()
    }

    /// Waits for the process to exit on its own, up to `timeout`.
    pub fn wait_timeout(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Some(status) = self.exited() {
                self.child = None;
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }

    /// Leaves the process running; returns its pid.
    pub fn detach(mut self) -> u32 {
        self.child = None;
        self.pid
    }
}

impl Drop for ManagedProcess {
    fn drop(&mut self) {
        if self.child.is_some() {
            self.kill();
        }
    }
}

/// Prefixes `command` with `setpriv <args>`.
pub fn wrap(command: Command, args: &[&str]) -> Command {
    let mut wrapped = Command::new("/usr/bin/setpriv");
    wrapped.args(args).arg(command.get_program()).args(command.get_args());
    for (key, value) in command.get_envs() {
        match value {
            Some(value) => wrapped.env(key, value),
            None => wrapped.env_remove(key),
        };
    }
    if let Some(dir) = command.get_current_dir() {
        wrapped.current_dir(dir);
    }
    wrapped
}

/// The last `n` lines of a file.
pub fn tail(path: &Path, n: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// Whether a pid is alive (for detached processes).
pub fn alive(pid: u32) -> bool {
    kill(Pid::from_raw(pid as i32), None).is_ok()
}
