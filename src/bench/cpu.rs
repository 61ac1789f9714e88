//! CPU time of the node processes behind local endpoints (Linux `/proc`), so a benchmark can
//! report server CPU per operation.

use std::collections::BTreeMap;
use std::path::Path;

/// Clock ticks per second in `/proc/<pid>/stat` (Linux's USER_HZ, 100 on every mainstream
/// architecture).
const TICKS_PER_SECOND: f64 = 100.0;

/// The node processes listening on the endpoints' local ports.
#[derive(Clone, Debug, Default)]
pub struct LocalNodes {
    /// `(endpoint, pid)` for each endpoint served by a process on this machine.
    pub nodes: Vec<(String, u32)>,
}

/// CPU seconds one node process used.
#[derive(Clone, Debug)]
pub struct NodeCpu {
    /// The endpoint it serves.
    pub endpoint: String,
    /// Its process id.
    pub pid: u32,
    /// User plus system CPU seconds.
    pub seconds: f64,
}

impl LocalNodes {
    /// Finds the processes listening on the ports of `endpoints` (those on this machine).
    /// Empty where `/proc` is not readable or the endpoints are remote.
    pub fn find(endpoints: &[String]) -> Self {
        let inodes = listening_inodes();
        let owners = socket_owners();
        let mut nodes = Vec::new();
        for endpoint in endpoints {
            let Some(port) = endpoint
                .rsplit(':')
                .next()
                .and_then(|p| p.parse::<u16>().ok())
            else {
                continue;
            };
            let pid = inodes
                .iter()
                .filter(|(p, _)| *p == port)
                .find_map(|(_, inode)| owners.get(inode).copied());
            if let Some(pid) = pid {
                nodes.push((endpoint.clone(), pid));
            }
        }
        LocalNodes { nodes }
    }

    /// CPU seconds used so far by each node process still running.
    pub fn sample(&self) -> Vec<NodeCpu> {
        self.nodes
            .iter()
            .filter_map(|(endpoint, pid)| {
                Some(NodeCpu {
                    endpoint: endpoint.clone(),
                    pid: *pid,
                    seconds: cpu_seconds(*pid)?,
                })
            })
            .collect()
    }

    /// Waits until the node processes together use less than `cores` over one second (the
    /// work a bulk load left behind, such as compaction, is done), for at most `max`: how long
    /// it waited, and whether they went quiet. At once when no node is local.
    pub async fn settle(
        &self,
        cores: f64,
        max: std::time::Duration,
    ) -> (std::time::Duration, bool) {
        let started = tokio::time::Instant::now();
        let total = |samples: Vec<NodeCpu>| samples.iter().map(|n| n.seconds).sum::<f64>();
        while !self.nodes.is_empty() && started.elapsed() < max {
            let before = total(self.sample());
            tokio::time::sleep(std::time::Duration::from_secs(1)).await;
            if total(self.sample()) - before < cores {
                return (started.elapsed(), true);
            }
        }
        (started.elapsed(), self.nodes.is_empty())
    }
}

/// CPU seconds (user + system) a process has used.
pub fn cpu_seconds(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) is parenthesized and may hold spaces: count from its end.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // Fields 14 and 15 of the whole line (utime, stime) are 12 and 13 after the name.
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    Some((utime + stime) / TICKS_PER_SECOND)
}

/// `(port, socket inode)` of every listening TCP socket.
fn listening_inodes() -> Vec<(u16, u64)> {
    let mut out = Vec::new();
    for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
        let Ok(text) = std::fs::read_to_string(table) else {
            continue;
        };
        for line in text.lines().skip(1) {
            let f: Vec<&str> = line.split_whitespace().collect();
            // local_address is f[1] ("IP:PORT" in hex), state f[3] (0A = LISTEN), inode f[9].
            if f.len() < 10 || f[3] != "0A" {
                continue;
            }
            let port = f[1]
                .rsplit(':')
                .next()
                .and_then(|p| u16::from_str_radix(p, 16).ok());
            if let (Some(port), Ok(inode)) = (port, f[9].parse::<u64>()) {
                out.push((port, inode));
            }
        }
    }
    out
}

/// Socket inode to the process holding it.
fn socket_owners() -> BTreeMap<u64, u32> {
    let mut owners = BTreeMap::new();
    let Ok(procs) = std::fs::read_dir("/proc") else {
        return owners;
    };
    for entry in procs.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<u32>().ok())
        else {
            continue;
        };
        let Ok(fds) = std::fs::read_dir(Path::new("/proc").join(pid.to_string()).join("fd")) else {
            continue;
        };
        for fd in fds.flatten() {
            let Ok(target) = std::fs::read_link(fd.path()) else {
                continue;
            };
            let target = target.to_string_lossy();
            if let Some(inode) = target
                .strip_prefix("socket:[")
                .and_then(|t| t.strip_suffix(']'))
                .and_then(|t| t.parse::<u64>().ok())
            {
                owners.insert(inode, pid);
            }
        }
    }
    owners
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_process_listening_on_a_local_port() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let nodes = LocalNodes::find(&[format!("127.0.0.1:{port}")]);
        if !Path::new("/proc/net/tcp").exists() {
            return; // not Linux: nothing to find
        }
        assert_eq!(nodes.nodes.len(), 1, "{nodes:?}");
        assert_eq!(nodes.nodes[0].1, std::process::id());
        let cpu = nodes.sample();
        assert_eq!(cpu.len(), 1);
        assert!(cpu[0].seconds >= 0.0);
    }
}
