//! Progress bars of the long operations (`ctl backup`, `restore`, `ctl replace-node`, `bench`'s
//! preload): drawn on a terminal, and absent when the output is piped, so a script or a log file
//! gets the command's lines and nothing else. (`replace-node` piped: `membership.rs`.)

use std::process::{Command, Output};

use crate::support::{serial, Cluster};

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Neither stream carries what a bar is drawn with: escape sequences or carriage returns.
pub fn assert_plain(what: &str, out: &Output) {
    for (stream, bytes) in [("stdout", &out.stdout), ("stderr", &out.stderr)] {
        assert!(
            !bytes.iter().any(|b| *b == 0x1b || *b == b'\r'),
            "{what}: piped {stream} carries terminal control bytes: {:?}",
            text(bytes)
        );
    }
}

fn succeeded(what: &str, out: Output) -> Output {
    assert!(
        out.status.success(),
        "{what} failed: {}{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    out
}

fn steadfast(args: &[&str]) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_steadfast"));
    command.args(args);
    command
}

/// `args` run by `steadfast` on a pseudo-terminal (util-linux `script`), as a person at a
/// terminal runs it; returns what the terminal showed (stdout and stderr together).
fn on_a_terminal(args: &[&str]) -> String {
    let line = std::iter::once(env!("CARGO_BIN_EXE_steadfast"))
        .chain(args.iter().copied())
        .collect::<Vec<_>>()
        .join(" ");
    let out = Command::new("script")
        .args(["--quiet", "--return", "--command", &line, "/dev/null"])
        // A person's terminal has a type; without one (CI's environment may lack it) the bar
        // library treats the terminal as dumb and draws nothing.
        .env("TERM", "xterm")
        .stdin(std::process::Stdio::null())
        .output()
        .expect("run script(1) (util-linux, Debian's bsdutils)");
    let shown = text(&out.stdout);
    assert!(out.status.success(), "{line} on a terminal failed: {shown}");
    shown
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn long_operations_draw_progress_on_a_terminal_only() {
    let _serial = serial().await;
    let groups = 4;
    let cluster = Cluster::start(3, groups);
    let client = cluster.client().await;
    cluster.wait_leaders(&client).await;
    let endpoints = cluster.addrs.join(",");
    let dir = tempfile::tempdir().expect("tempdir");

    tracing::info!("--- bench --preload, piped: its report, no bar");
    let bench_args = [
        "bench",
        "--endpoints",
        &endpoints,
        "--preload",
        "400",
        "--preload-concurrency",
        "8",
        "--clients",
        "2",
        "--duration-secs",
        "1",
    ];
    let out = succeeded("bench", steadfast(&bench_args).output().expect("bench"));
    assert_plain("bench --preload", &out);
    assert!(
        text(&out.stderr).contains("preload: 400 sessions"),
        "{}",
        text(&out.stderr)
    );
    assert!(
        text(&out.stdout).contains("clients=2"),
        "{}",
        text(&out.stdout)
    );

    tracing::info!("--- ctl backup, piped: one line per group, no bar");
    let file = dir.path().join("cluster.bak");
    let file = file.to_str().expect("utf-8");
    let out = succeeded(
        "ctl backup",
        cluster
            .ctl_command()
            .args(["backup", "--out", file])
            .output()
            .expect("ctl backup"),
    );
    assert_plain("ctl backup", &out);
    let listing = text(&out.stdout);
    assert_eq!(
        listing.lines().filter(|l| l.starts_with("group ")).count(),
        groups as usize,
        "{listing}"
    );

    tracing::info!("--- restore, piped: its summary, no bar");
    let target = dir.path().join("restored");
    let restore_args = [
        "restore",
        "--from",
        file,
        "--id",
        "1",
        "--listen",
        "127.0.0.1:1",
        "--peers",
        "1=127.0.0.1:1",
        "--groups",
        "4",
        "--replicas",
        "1",
        "--data-dir",
        target.to_str().expect("utf-8"),
    ];
    let out = succeeded(
        "restore",
        steadfast(&restore_args).output().expect("restore"),
    );
    assert_plain("restore", &out);
    assert!(
        text(&out.stdout).contains(&format!("restored {groups} group replicas")),
        "{}",
        text(&out.stdout)
    );

    tracing::info!("--- the same backup on a terminal: a bar, and the same lines");
    let again = dir.path().join("again.bak");
    let mut ctl: Vec<&str> = vec!["ctl", "--endpoints", &endpoints];
    ctl.extend(["backup", "--out", again.to_str().expect("utf-8")]);
    let shown = on_a_terminal(&ctl);
    assert!(
        shown.contains("\u{1b}["),
        "a terminal gets a drawn bar: {shown:?}"
    );
    assert_eq!(
        shown.lines().filter(|l| l.contains("group 3: ")).count(),
        1,
        "each group line once, not garbled by the bar: {shown:?}"
    );
    assert!(shown.contains("backup of 4 groups"), "{shown:?}");
}
