//! Real clusters for tests: `steadfast serve` processes on loopback ports with temp dirs, so a
//! test can kill -9 a node and restart it on the same data.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use steadfast::client::ClientConfig;
use steadfast::Client;

/// Cluster tests run one at a time: each starts three processes on a two-core machine.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

pub async fn serial() -> tokio::sync::MutexGuard<'static, ()> {
    SERIAL.lock().await
}

pub struct Cluster {
    pub addrs: Vec<String>,
    /// Each node's admin HTTP address.
    pub admin: Vec<String>,
    /// Each node's Redis protocol (RESP) address.
    pub redis: Vec<String>,
    dirs: Vec<PathBuf>,
    procs: Vec<Option<Child>>,
    /// Nodes started with `--join` (added after the cluster formed).
    joined: Vec<bool>,
    groups: u32,
    root: PathBuf,
    extra: Vec<String>,
    /// Flags for one node only, by index.
    node_extra: std::collections::BTreeMap<usize, Vec<String>>,
    /// Replaced identity flags for one node only, by index.
    node_overrides: std::collections::BTreeMap<usize, Vec<(String, String)>>,
    /// File systems mounted on data directories, unmounted when the cluster is dropped.
    mounts: Vec<PathBuf>,
    _root: tempfile::TempDir,
}

/// Waits (bounded) for `child` to exit by itself; kills it and fails the test otherwise.
pub fn wait_exit(child: &mut Child, what: &str) -> std::process::ExitStatus {
    for _ in 0..600 {
        if let Some(status) = child.try_wait().expect("try_wait") {
            return status;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    let _ = child.wait();
    panic!("{what} kept running for 30 s");
}

fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    l.local_addr().expect("addr").port()
}

impl Cluster {
    pub fn start(nodes: usize, groups: u32) -> Cluster {
        Self::start_with_args(nodes, groups, &[])
    }

    /// Starts a cluster on fresh data directories into which `steadfast restore` first
    /// installs `backup`.
    pub fn start_restored(nodes: usize, groups: u32, backup: &std::path::Path) -> Cluster {
        let mut c = Self::prepare(nodes, groups, &[]);
        for i in 0..nodes {
            let out = Command::new(env!("CARGO_BIN_EXE_steadfast"))
                .arg("restore")
                .arg("--from")
                .arg(backup)
                .args(c.node_args(i))
                .output()
                .expect("run steadfast restore");
            assert!(
                out.status.success(),
                "restore node {i}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        for i in 0..nodes {
            c.spawn(i);
        }
        c
    }

    /// Starts a cluster whose nodes get `extra` command-line flags.
    ///
    /// Ports come from binding port 0 and closing; another socket can take one before the node
    /// binds it, and the node then exits (and a node that never started leaves the groups it
    /// should initialize without a leader). Such a start is thrown away and made again on new
    /// ports and new directories.
    pub fn start_with_args(nodes: usize, groups: u32, extra: &[&str]) -> Cluster {
        Self::start_prepared(nodes, groups, extra, &|_| {})
    }

    /// Like [`start_with_args`](Self::start_with_args), running `prepare` on each attempt's
    /// cluster before its nodes start (to mount a small file system on a data directory, say).
    pub fn start_prepared(
        nodes: usize,
        groups: u32,
        extra: &[&str],
        prepare: &dyn Fn(&mut Cluster),
    ) -> Cluster {
        for _ in 0..3 {
            let mut c = Self::prepare(nodes, groups, extra);
            prepare(&mut c);
            for i in 0..nodes {
                c.spawn(i);
            }
            if c.all_listening() {
                return c;
            }
        }
        panic!("nodes kept failing to start; see their logs")
    }

    /// Waits until every node accepts connections on its data and admin ports; false if a node
    /// exited instead.
    fn all_listening(&mut self) -> bool {
        let up = |addr: &str| std::net::TcpStream::connect(addr).is_ok();
        for _ in 0..100 {
            if self.any_exited() {
                return false;
            }
            if self
                .addrs
                .iter()
                .chain(&self.admin)
                .chain(&self.redis)
                .all(|a| up(a))
            {
                // A port held by a stranger also accepts: make sure our node is still there.
                std::thread::sleep(Duration::from_millis(200));
                return !self.any_exited();
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        false
    }

    fn any_exited(&mut self) -> bool {
        self.procs
            .iter_mut()
            .flatten()
            .any(|c| matches!(c.try_wait(), Ok(Some(_))))
    }

    fn prepare(nodes: usize, groups: u32, extra: &[&str]) -> Cluster {
        let root = tempfile::tempdir().expect("tempdir");
        let addrs: Vec<String> = (0..nodes)
            .map(|_| format!("127.0.0.1:{}", free_port()))
            .collect();
        let dirs = (0..nodes)
            .map(|i| root.path().join(format!("node{}", i + 1)))
            .collect();
        Cluster {
            admin: (0..nodes)
                .map(|_| format!("127.0.0.1:{}", free_port()))
                .collect(),
            redis: (0..nodes)
                .map(|_| format!("127.0.0.1:{}", free_port()))
                .collect(),
            addrs,
            dirs,
            procs: (0..nodes).map(|_| None).collect(),
            joined: vec![false; nodes],
            groups,
            root: root.path().to_path_buf(),
            extra: extra.iter().map(|s| s.to_string()).collect(),
            node_extra: Default::default(),
            mounts: Vec::new(),
            node_overrides: Default::default(),
            _root: root,
        }
    }

    /// The identity flags `serve` and `restore` share: id, address, data, peers, groups.
    fn node_args(&self, i: usize) -> Vec<String> {
        let peers: Vec<String> = self
            .addrs
            .iter()
            .enumerate()
            .map(|(j, a)| format!("{}={a}", j + 1))
            .collect();
        vec![
            "--id".into(),
            (i + 1).to_string(),
            "--listen".into(),
            self.addrs[i].clone(),
            "--data-dir".into(),
            self.dirs[i].display().to_string(),
            "--peers".into(),
            peers.join(","),
            "--groups".into(),
            self.groups.to_string(),
            "--replicas".into(),
            self.addrs.len().min(3).to_string(),
        ]
    }

    /// Mounts a `size_mb` MiB tmpfs on node `i`'s (not yet created) data directory, so the test
    /// can fill it up: writes then really fail, even as root. Needs root (CI runs as root).
    pub fn mount_tmpfs(&mut self, i: usize, size_mb: u32) {
        std::fs::create_dir_all(&self.dirs[i]).expect("create data dir");
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size_mb}m"), "tmpfs"])
            .arg(&self.dirs[i])
            .output()
            .expect("run mount");
        assert!(
            out.status.success(),
            "mounting a tmpfs needs root: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        self.mounts.push(self.dirs[i].clone());
    }

    /// Waits up to `patience` for node `i` to exit by itself; its exit status if it did.
    pub fn wait_exit(&mut self, i: usize, patience: Duration) -> Option<std::process::ExitStatus> {
        let polls = patience.as_millis() / 50 + 1;
        for _ in 0..polls {
            let child = self.procs[i].as_mut()?;
            if let Some(status) = child.try_wait().expect("try_wait") {
                self.procs[i] = None;
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        None
    }

    /// Node `i`'s identity flags with some replaced (`(flag, value)`; new flags are appended).
    pub fn args_with(&self, i: usize, overrides: &[(&str, &str)]) -> Vec<String> {
        let mut args = self.node_args(i);
        for (flag, value) in overrides {
            match args.iter().position(|a| a == flag) {
                Some(at) => args[at + 1] = value.to_string(),
                None => args.extend([flag.to_string(), value.to_string()]),
            }
        }
        args
    }

    /// Runs `steadfast <command>` with node `i`'s identity flags (some replaced) plus `extra`;
    /// returns its output.
    pub fn run_for_node(
        &self,
        command: &str,
        i: usize,
        overrides: &[(&str, &str)],
        extra: &[&str],
    ) -> std::process::Output {
        Command::new(env!("CARGO_BIN_EXE_steadfast"))
            .arg(command)
            .args(self.args_with(i, overrides))
            .args(extra)
            .output()
            .expect("run steadfast")
    }

    /// Replaces some of node `i`'s identity flags from its next start on.
    pub fn set_node_overrides(&mut self, i: usize, overrides: &[(&str, &str)]) {
        let owned = overrides
            .iter()
            .map(|(f, v)| (f.to_string(), v.to_string()))
            .collect();
        self.node_overrides.insert(i, owned);
    }

    /// Gives node `i` extra flags from its next start on.
    pub fn set_node_flags(&mut self, i: usize, flags: &[&str]) {
        self.node_extra
            .insert(i, flags.iter().map(|f| f.to_string()).collect());
    }

    /// Node `i`'s data directory.
    pub fn data_dir(&self, i: usize) -> &std::path::Path {
        &self.dirs[i]
    }

    /// Node `i`'s log so far.
    pub fn log(&self, i: usize) -> String {
        std::fs::read_to_string(self.dirs[i].with_extension("log")).unwrap_or_default()
    }

    /// Runs `steadfast serve` for node `i` (stopped) in the foreground with some of its flags
    /// replaced (`(flag, value)`; new flags are appended), expecting it to exit by itself:
    /// returns its exit status and stderr. A node still running after 60 s is killed and the
    /// test fails.
    pub fn serve_expecting_exit(
        &self,
        i: usize,
        overrides: &[(&str, &str)],
    ) -> (std::process::ExitStatus, String) {
        assert!(self.procs[i].is_none(), "node {i} is still running");
        let args = self.args_with(i, overrides);
        let err_path = self.root.join(format!("serve-{i}-{}.err", overrides.len()));
        let err = std::fs::File::create(&err_path).expect("stderr file");
        let mut child = Command::new(env!("CARGO_BIN_EXE_steadfast"))
            .arg("serve")
            .args(&args)
            .env("RUST_LOG", "info,openraft=warn")
            .stdout(Stdio::null())
            .stderr(err)
            .spawn()
            .expect("spawn steadfast serve");
        let mut status = None;
        for _ in 0..1200 {
            if let Some(s) = child.try_wait().expect("wait") {
                status = Some(s);
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let Some(status) = status else {
            let _ = child.kill();
            let _ = child.wait();
            panic!("serve {args:?} kept running for 60 s");
        };
        let stderr = std::fs::read_to_string(&err_path).unwrap_or_default();
        (status, stderr)
    }

    fn spawn(&mut self, i: usize) {
        let owned = self.node_overrides.get(&i).cloned().unwrap_or_default();
        let overrides: Vec<(&str, &str)> = owned
            .iter()
            .map(|(f, v)| (f.as_str(), v.as_str()))
            .collect();
        let log = std::fs::File::create(self.dirs[i].with_extension("log")).expect("log file");
        let child = Command::new(env!("CARGO_BIN_EXE_steadfast"))
            .arg("serve")
            .args(self.args_with(i, &overrides))
            .args([
                "--heartbeat-ms",
                "50",
                "--election-timeout-min-ms",
                "300",
                "--election-timeout-max-ms",
                "600",
            ])
            .args(["--snapshot-every-logs", "200", "--expire-tick-ms", "200"])
            .args(&self.extra)
            .args(self.node_extra.get(&i).into_iter().flatten())
            .args(self.joined[i].then_some("--join"))
            .args(["--admin-listen", &self.admin[i]])
            .args(["--redis-listen", &self.redis[i]])
            .env("RUST_LOG", "info,openraft=warn")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn steadfast serve");
        self.procs[i] = Some(child);
    }

    /// SIGKILL: no shutdown path runs, unsynced data is lost.
    pub fn kill(&mut self, i: usize) {
        if let Some(mut c) = self.procs[i].take() {
            c.kill().expect("kill");
            c.wait().expect("wait");
        }
    }

    /// Starts one more node with `--join` (it initializes nothing); returns its index.
    pub fn add_node(&mut self) -> usize {
        let i = self.addrs.len();
        self.addrs.push(format!("127.0.0.1:{}", free_port()));
        self.admin.push(format!("127.0.0.1:{}", free_port()));
        self.redis.push(format!("127.0.0.1:{}", free_port()));
        self.dirs.push(self.root.join(format!("node{}", i + 1)));
        self.procs.push(None);
        self.joined.push(true);
        self.spawn(i);
        i
    }

    /// Deletes a stopped node's data directory (a lost disk).
    pub fn wipe(&mut self, i: usize) {
        assert!(self.procs[i].is_none(), "node {i} is still running");
        std::fs::remove_dir_all(&self.dirs[i]).expect("remove data dir");
    }

    /// `steadfast ctl` aimed at this cluster, ready for more arguments.
    pub fn ctl_command(&self) -> Command {
        let mut command = Command::new(env!("CARGO_BIN_EXE_steadfast"));
        command.arg("ctl").args([
            "--endpoints",
            &self.addrs.join(","),
            "--timeout-ms",
            "30000",
        ]);
        command
    }

    /// Runs `steadfast ctl` against this cluster with `stdin` as its input; returns its
    /// output whether it succeeded or not.
    pub fn ctl_output(&self, args: &[&str], stdin: &[u8]) -> std::process::Output {
        use std::io::Write;
        let mut child = self
            .ctl_command()
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run steadfast ctl");
        let mut input = child.stdin.take().expect("stdin");
        // A command that does not read stdin may exit first: a broken pipe here is fine.
        let _ = input.write_all(stdin);
        drop(input);
        child.wait_with_output().expect("wait for steadfast ctl")
    }

    /// Runs `steadfast ctl` against this cluster; returns its stdout, panics on failure.
    pub fn ctl(&self, args: &[&str]) -> String {
        let out = self
            .ctl_command()
            .args(args)
            .output()
            .expect("run steadfast ctl");
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(
            out.status.success(),
            "ctl {args:?} failed: {stdout}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        stdout
    }

    pub fn restart(&mut self, i: usize) {
        assert!(self.procs[i].is_none(), "node {i} is still running");
        self.spawn(i);
    }

    pub async fn client(&self) -> Client {
        Client::connect(self.client_config())
            .await
            .expect("connect")
    }

    /// The settings [`client`](Self::client) connects with (long deadlines for restarts).
    pub fn client_config(&self) -> ClientConfig {
        let mut config = ClientConfig::new(self.addrs.clone());
        config.request_timeout = Duration::from_secs(20);
        config.attempt_timeout = Duration::from_millis(1500);
        config
    }

    /// Waits until every group has a leader that all live replicas agree on; returns, per
    /// group, the leader's node id.
    pub async fn wait_leaders(&self, client: &Client) -> Vec<u64> {
        for _ in 0..300 {
            let mut leaders = vec![None; self.groups as usize];
            for (_, status) in client.status().await {
                for g in status.into_iter().flatten() {
                    if g.role == "Leader" {
                        leaders[g.group.0 as usize] = Some(g.node);
                    }
                }
            }
            if leaders.iter().all(Option::is_some) {
                return leaders.into_iter().map(|l| l.expect("checked")).collect();
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let logs: Vec<String> = self
            .dirs
            .iter()
            .map(|d| {
                let log = std::fs::read_to_string(d.with_extension("log")).unwrap_or_default();
                let tail: Vec<&str> = log.lines().rev().take(15).collect();
                format!(
                    "--- {}:\n{}",
                    d.display(),
                    tail.into_iter().rev().collect::<Vec<_>>().join("\n")
                )
            })
            .collect();
        panic!(
            "groups did not all elect a leader within 30 s\n{}",
            logs.join("\n")
        );
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for i in 0..self.procs.len() {
            self.kill(i);
        }
        for m in &self.mounts {
            let _ = Command::new("umount").arg("-l").arg(m).status();
        }
    }
}
