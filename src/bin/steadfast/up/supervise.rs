//! One node of `steadfast up`: start it, restart it when it dies (a `kill -9` in a demo), give
//! up with its last log lines when it keeps dying right after starting (a taken port, a bad
//! data directory), and stop it with SIGTERM when `up` stops.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{anyhow, Context};
use tokio::process::Child;
use tokio::sync::watch;

/// A node that exits sooner than this after starting did not really start.
const QUICK_EXIT: Duration = Duration::from_secs(10);
/// Quick exits in a row after which `up` gives up instead of restarting again.
const QUICK_EXITS_MAX: u32 = 3;
/// Pause before restarting a node that died.
const RESTART_PAUSE: Duration = Duration::from_secs(3);
/// How long a node may take to shut down after SIGTERM before it is killed.
const STOP_PATIENCE: Duration = Duration::from_secs(10);
/// Lines of a dead node's log shown when `up` gives up on it.
const LOG_TAIL_LINES: usize = 20;

/// One node of `up`, and how to (re)start it.
pub struct NodeProcess {
    /// 1, 2 or 3, as people and the node's `--id` call it.
    pub number: usize,
    /// `steadfast serve …` for this node; stdout and stderr are set per start.
    pub command: tokio::process::Command,
    /// Where the node's output goes (appended across restarts).
    pub log: PathBuf,
    /// Holds the running node's pid, for a PID-exact `kill` (removed when it exits).
    pub pid_file: PathBuf,
    /// Restart the node when it dies (false: `--no-restart`, the cluster stops instead).
    pub restart: bool,
}

/// Runs `node` until `stop` flips (then stops it: `Ok`), or until it cannot be kept running
/// (an error saying why, after its last log lines went to stderr).
pub async fn supervise(
    mut node: NodeProcess,
    mut stop: watch::Receiver<bool>,
) -> anyhow::Result<()> {
    let mut quick_exits = 0;
    // What this `up` adds to the log; the tail shown leaves out the lines of earlier runs.
    let log_start = std::fs::metadata(&node.log).map_or(0, |m| m.len());
    loop {
        let started = tokio::time::Instant::now();
        let mut child = node.spawn()?;
        let status = tokio::select! {
            _ = stop.changed() => return node.stop(child).await,
            status = child.wait() => status.context("waiting for a node")?,
        };
        let _ = std::fs::remove_file(&node.pid_file);
        if *stop.borrow() {
            return Ok(());
        }
        quick_exits = if started.elapsed() < QUICK_EXIT {
            quick_exits + 1
        } else {
            0
        };
        if !node.restart || quick_exits >= QUICK_EXITS_MAX {
            node.print_log_tail(log_start);
            return Err(match node.restart {
                false => anyhow!("node {} exited ({status})", node.number),
                true => anyhow!(
                    "node {} exited ({status}) {quick_exits} times within {} s of starting; \
                     see {}",
                    node.number,
                    QUICK_EXIT.as_secs(),
                    node.log.display()
                ),
            });
        }
        eprintln!(
            "steadfast up: node {} exited ({status}); restarting it in {} s",
            node.number,
            RESTART_PAUSE.as_secs()
        );
        tokio::select! {
            _ = stop.changed() => return Ok(()),
            _ = tokio::time::sleep(RESTART_PAUSE) => {}
        }
    }
}

impl NodeProcess {
    fn spawn(&mut self) -> anyhow::Result<Child> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .with_context(|| format!("opening {}", self.log.display()))?;
        self.command.stdout(log.try_clone()?).stderr(log);
        let child = self.command.spawn().context("starting a node")?;
        if let Some(pid) = child.id() {
            std::fs::write(&self.pid_file, format!("{pid}\n"))
                .with_context(|| format!("writing {}", self.pid_file.display()))?;
        }
        Ok(child)
    }

    /// SIGTERM (the node shuts down cleanly), then SIGKILL if it takes too long.
    async fn stop(&self, mut child: Child) -> anyhow::Result<()> {
        terminate(&child);
        if tokio::time::timeout(STOP_PATIENCE, child.wait())
            .await
            .is_err()
        {
            child.start_kill()?;
            child.wait().await?;
        }
        let _ = std::fs::remove_file(&self.pid_file);
        Ok(())
    }

    /// The last lines of the node's log written since byte `from`, on stderr: why it died is
    /// usually there.
    fn print_log_tail(&self, from: u64) {
        let Ok(bytes) = std::fs::read(&self.log) else {
            return;
        };
        let from = usize::try_from(from).unwrap_or(0).min(bytes.len());
        let text = String::from_utf8_lossy(&bytes[from..]);
        let lines: Vec<&str> = text.lines().collect();
        let tail = &lines[lines.len().saturating_sub(LOG_TAIL_LINES)..];
        eprintln!(
            "steadfast up: node {} exited; the end of {}:",
            self.number,
            self.log.display()
        );
        for line in tail {
            eprintln!("  {line}");
        }
    }
}

#[cfg(unix)]
fn terminate(child: &Child) {
    use rustix::process::{kill_process, Pid, Signal};
    let pid = child
        .id()
        .and_then(|p| i32::try_from(p).ok())
        .and_then(Pid::from_raw);
    if let Some(pid) = pid {
        let _ = kill_process(pid, Signal::TERM);
    }
}

#[cfg(not(unix))]
fn terminate(_child: &Child) {}
