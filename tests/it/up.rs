//! `steadfast up` as a new user meets it: a taken port is refused at once with one line naming
//! it (it used to restart the node that could not bind forever, the cause only in node.log),
//! and stopping `up`, by SIGTERM or even SIGKILL, stops its nodes (they used to run on,
//! orphaned, holding the ports).

use std::io::BufRead;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use rustix::process::{kill_process, Pid, Signal};

use crate::support::{serial, wait_exit};

/// A port p with p+1 and p+2 free too (now; `up` checks again).
fn three_free_ports(avoid: &[u16]) -> u16 {
    for _ in 0..100 {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let p = l.local_addr().expect("addr").port();
        drop(l);
        let clash = avoid.iter().any(|a| a.abs_diff(p) < 3);
        let free = (0..3u16).all(|i| {
            p.checked_add(i)
                .is_some_and(|q| std::net::TcpListener::bind(("127.0.0.1", q)).is_ok())
        });
        if free && !clash {
            return p;
        }
    }
    panic!("no three consecutive free ports");
}

fn up_command(dir: &Path, base: u16, redis: u16) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_steadfast"));
    c.arg("up")
        .arg("--data-dir")
        .arg(dir)
        .args(["--base-port", &base.to_string()])
        .args(["--redis-base-port", &redis.to_string(), "--groups", "2"])
        .env_remove("STEADFAST_ENDPOINTS");
    c
}

/// Starts `up` and waits (bounded) until it says the cluster is up.
fn start_up(dir: &Path) -> Child {
    let base = three_free_ports(&[]);
    let redis = three_free_ports(&[base]);
    let mut up = up_command(dir, base, redis)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn up");
    let stdout = up.stdout.take().expect("stdout");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
        {
            let _ = tx.send(line);
        }
    });
    let deadline = tokio::time::Instant::now() + Duration::from_secs(90);
    loop {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        match rx.recv_timeout(left) {
            Ok(line) if line.contains("cluster is up") => break,
            Ok(_) => {}
            Err(e) => {
                let _ = up.kill();
                panic!("up did not report the cluster up: {e}");
            }
        }
    }
    // The rest of its output drains in the reader thread.
    std::thread::spawn(move || rx.into_iter().for_each(drop));
    up
}

/// The pids `up` recorded for its nodes.
fn node_pids(dir: &Path) -> Vec<Pid> {
    (1..=3)
        .map(|i| {
            let file = dir.join(format!("node{i}/node.pid"));
            let text = std::fs::read_to_string(&file).expect("pid file");
            Pid::from_raw(text.trim().parse().expect("a pid")).expect("non-zero")
        })
        .collect()
}

/// Whether `pid` is a running process (a zombie no longer runs).
fn running(pid: Pid) -> bool {
    match std::fs::read_to_string(format!("/proc/{}/stat", pid.as_raw_pid())) {
        // The state follows the parenthesised command name.
        Ok(stat) => stat
            .rsplit_once(')')
            .is_some_and(|(_, rest)| !rest.trim_start().starts_with('Z')),
        Err(_) => false,
    }
}

/// Waits (bounded) until none of `pids` runs.
fn wait_all_stopped(pids: &[Pid], what: &str) {
    for _ in 0..600 {
        if !pids.iter().any(|p| running(*p)) {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    for p in pids {
        let _ = kill_process(*p, Signal::KILL);
    }
    panic!("{what}: nodes still running after 30 s");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn up_refuses_a_taken_port_with_one_line_naming_it() {
    let _serial = serial().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let held = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = held.local_addr().expect("addr").port();
    let redis = three_free_ports(&[port]);
    let out = up_command(dir.path(), port, redis)
        .output()
        .expect("run up");
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.lines().count(), 1, "one line: {err}");
    assert!(
        err.contains(&format!("127.0.0.1:{port} is not free")) && err.contains("--base-port"),
        "{err}"
    );
    assert!(
        !dir.path().join("node1/node.log").exists(),
        "no node was started"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn up_stopped_by_sigterm_stops_its_nodes() {
    let _serial = serial().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let mut up = start_up(dir.path());
    let pids = node_pids(dir.path());
    assert!(pids.iter().all(|p| running(*p)), "nodes run under up");
    let up_pid = Pid::from_child(&up);
    kill_process(up_pid, Signal::TERM).expect("SIGTERM up");
    let status = wait_exit(&mut up, "up after SIGTERM");
    assert!(status.success(), "a clean stop: {status}");
    wait_all_stopped(&pids, "SIGTERM");
    assert!(
        !dir.path().join("node1/node.pid").exists(),
        "pid files go with their nodes"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn up_killed_outright_takes_its_nodes_with_it() {
    let _serial = serial().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let mut up = start_up(dir.path());
    let pids = node_pids(dir.path());
    up.kill().expect("SIGKILL up");
    let _ = up.wait();
    // No handler runs in `up`: the kernel's parent-death signal stops the nodes.
    wait_all_stopped(&pids, "SIGKILL");
}
