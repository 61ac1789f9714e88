//! `steadfast ctl` as people and scripts use it, on a real cluster: `-w table|json`, readable
//! `watch` lines and `--limit`, values from files and stdin, clear lines for bad input, and a
//! reader that closes the pipe early (`| head`).

use std::io::BufRead;
use std::process::{Child, Stdio};

use crate::support::{serial, wait_exit, Cluster};

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// The id a `session create` printed (`<id> version=<v>`).
fn created_id(out: &str) -> String {
    out.split_whitespace()
        .next()
        .unwrap_or_else(|| panic!("no id in {out:?}"))
        .to_string()
}

fn stderr_of(child: &mut Child) -> String {
    let mut err = String::new();
    if let Some(mut e) = child.stderr.take() {
        let _ = std::io::Read::read_to_string(&mut e, &mut err);
    }
    err
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ctl_prints_tables_for_people_and_json_for_scripts() {
    let _serial = serial().await;
    let cluster = Cluster::start(3, 1);
    let client = cluster.client().await;
    cluster.wait_leaders(&client).await;

    tracing::info!("--- status: a table by default, JSON on request");
    let table = cluster.ctl(&["status"]);
    assert!(table.lines().any(|l| l.starts_with("group")), "{table}");
    assert!(!table.contains('['), "members are listed plainly: {table}");
    let json: serde_json::Value =
        serde_json::from_str(&cluster.ctl(&["-w", "json", "status"])).expect("status json");
    let groups = json["groups"].as_array().expect("groups");
    assert_eq!(
        groups.len(),
        3,
        "one entry per node for the one group: {json}"
    );
    assert!(groups.iter().any(|g| g["role"] == "Leader"), "{json}");

    tracing::info!("--- a value from a file and one from stdin");
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("cart.json");
    let big = "x".repeat(60 * 1024);
    std::fs::write(&file, &big).expect("write value");
    let value_file = format!("cart={}", file.display());
    let id = created_id(&cluster.ctl(&["session", "create", "--value-file", &value_file]));
    let put = cluster.ctl_output(
        &["session", "put", &id, "note=hi", "--value-file", "memo=-"],
        b"from stdin\n",
    );
    assert!(put.status.success(), "{}", text(&put.stderr));
    let got: serde_json::Value =
        serde_json::from_str(&cluster.ctl(&["session", "get", &id, "-w", "json"])).expect("json");
    assert_eq!(got["attributes"]["cart"].as_str(), Some(big.as_str()));
    assert_eq!(got["attributes"]["memo"], "from stdin\n");
    assert_eq!(got["attributes"]["note"], "hi");
    let table = cluster.ctl(&["session", "get", &id]);
    assert!(table.contains("attribute    note=hi"), "{table}");
    assert!(table.contains("attribute    memo=from stdin\\n"), "{table}");

    tracing::info!("--- bad input: one clear line each, nothing written");
    let too_big = vec![b'y'; 1024 * 1024];
    let refused = cluster.ctl_output(&["session", "put", &id, "--value-file", "cart=-"], &too_big);
    assert_eq!(refused.status.code(), Some(1));
    let err = text(&refused.stderr);
    assert!(err.contains("over the session limit"), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    let empty = cluster.ctl_output(&["session", "put", &id, "=x"], b"");
    assert_eq!(empty.status.code(), Some(1));
    assert!(
        text(&empty.stderr).contains("attribute name is empty"),
        "{empty:?}"
    );
    let after: serde_json::Value =
        serde_json::from_str(&cluster.ctl(&["session", "get", &id, "-w", "json"])).expect("json");
    assert_eq!(after["version"], got["version"], "no write happened");

    tracing::info!("--- backup and restore --check list groups alike, in the singular");
    let file = dir.path().join("one.bak");
    let backup = cluster.ctl(&["backup", "--out", file.to_str().expect("utf-8")]);
    let line = backup.lines().next().expect("a group line");
    assert!(
        line.starts_with("group 0: 1 session at log index "),
        "{backup}"
    );
    assert!(
        backup.contains("backup of 1 group, 1 session, "),
        "{backup}"
    );
    let check = std::process::Command::new(env!("CARGO_BIN_EXE_steadfast"))
        .args(["restore", "--check", "--from"])
        .arg(&file)
        .output()
        .expect("restore --check");
    let check = text(&check.stdout);
    assert!(
        check.starts_with(line.split(" (").next().expect("line")),
        "{check}"
    );
    assert!(
        check.contains("backup is valid (1 group, 1 session)"),
        "{check}"
    );

    tracing::info!("--- principal list: an unknown user says so; JSON is a list");
    let nobody = cluster.ctl(&["principal", "list", "nobody"]);
    assert_eq!(nobody.trim(), "\"nobody\" has no live sessions");
    let json: serde_json::Value =
        serde_json::from_str(&cluster.ctl(&["principal", "list", "nobody", "-w", "json"]))
            .expect("json");
    assert_eq!(json["sessions"], serde_json::json!([]));

    tracing::info!("--- watch: readable lines, --limit ends it");
    let lines = cluster.ctl(&["watch", "--group", "0", "--from", "0", "--limit", "2"]);
    assert_eq!(lines.lines().count(), 2, "{lines}");
    assert!(
        lines.lines().next().expect("line").contains(" created  "),
        "{lines}"
    );
    assert!(!lines.contains("Created("), "no debug output: {lines}");
    let json = cluster.ctl(&["-w", "json", "watch", "--limit", "1"]);
    let event: serde_json::Value = serde_json::from_str(json.trim()).expect("one json line");
    assert_eq!(event["kind"], "created");
    assert_eq!(event["id"].as_str().map(str::len), Some(32));
}

/// `ctl watch … | head -1` used to end in a panic ("failed printing to stdout: Broken pipe",
/// exit 101) at the next event: `println!` panics on a closed stdout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ctl_ends_quietly_when_its_reader_closes_the_pipe() {
    let _serial = serial().await;
    let cluster = Cluster::start(3, 1);
    let client = cluster.client().await;
    cluster.wait_leaders(&client).await;
    let id = created_id(&cluster.ctl(&["session", "create", "cart=book"]));

    tracing::info!("--- watch: read one line, close the pipe, cause another event");
    let mut watch = cluster
        .ctl_command()
        .args(["watch", "--group", "0", "--from", "0"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn watch");
    let mut reader = std::io::BufReader::new(watch.stdout.take().expect("stdout"));
    let mut first = String::new();
    reader.read_line(&mut first).expect("first event");
    assert!(first.contains(" created  "), "{first}");
    drop(reader); // `head -1` exits
    let mut n = 0;
    // Each write is an event the watcher must try to print; it exits at the first one.
    while watch.try_wait().expect("try_wait").is_none() && n < 200 {
        cluster.ctl(&["session", "put", &id, &format!("n={n}")]);
        n += 1;
    }
    let status = wait_exit(&mut watch, "ctl watch");
    let err = stderr_of(&mut watch);
    assert!(status.success(), "{status}: {err}");
    assert!(!err.contains("panicked"), "{err}");

    tracing::info!("--- session get into a pipe already closed");
    let mut get = cluster
        .ctl_command()
        .args(["session", "get", &id])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn get");
    drop(get.stdout.take());
    let status = wait_exit(&mut get, "ctl session get");
    let err = stderr_of(&mut get);
    assert!(status.success(), "{status}: {err}");
    assert!(err.is_empty(), "quiet: {err}");
}

/// Bad usage of the other commands: one line saying what is missing.
#[test]
fn serve_without_arguments_names_the_missing_flag() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_steadfast"))
        .arg("serve")
        .env_remove("STEADFAST_CONFIG")
        .env_remove("STEADFAST_ID")
        .output()
        .expect("run serve");
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert_eq!(
        err.trim(),
        "steadfast: configuration: --id is missing (or `id` in the --config file)"
    );
}
