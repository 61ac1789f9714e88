//! The admin dashboard in a real headless browser: Debian's Chromium loads the page from a
//! running 3-node cluster, runs its JavaScript (the page fetches `/dashboard.json` by itself
//! and renders it), and dumps the DOM. The test reads every group's leader and every node's
//! health from that DOM, kills a node, and polls until the page shows it unhealthy while the
//! survivors lead every group.
//!
//! Without Chromium the test fails (CI installs it), unless `STEADFAST_SKIP_BROWSER=1`.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use steadfast::client::CreateOptions;
use steadfast::command::Attributes;
use steadfast::Client;
use tokio::time::Instant;

use crate::support::{serial, Cluster};
use crate::web_http::send;

/// Debian's Chromium (`.ci/run` installs the `chromium` package).
const CHROMIUM: &str = "/usr/bin/chromium";
/// Virtual time a page load gets before the DOM is dumped: the page polls once a second, so
/// it renders several reports (the poll counter proves it refreshes by itself).
const VIRTUAL_TIME_BUDGET_MS: u64 = 4_000;
/// The most one browser run may take on a busy two-core machine before it is killed.
const BROWSER_RUN_MAX: Duration = Duration::from_secs(90);
/// The most one phase (waiting for the page to show a state) may take.
const PHASE_MAX: Duration = Duration::from_secs(120);
/// Sessions created, so the page has counts to show.
const SESSIONS: u64 = 12;

/// One table row of the rendered page: its attributes and its cells' text.
#[derive(Debug)]
struct Row {
    attrs: BTreeMap<String, String>,
    cells: Vec<String>,
}

/// What the rendered page shows.
#[derive(Debug, Default)]
struct Page {
    /// Per group: the leader shown (`None`: "none") and the row's cells.
    groups: BTreeMap<u32, (Option<u64>, Vec<String>)>,
    /// Per node: shown healthy.
    nodes: BTreeMap<u64, bool>,
    /// Per node, the row's cells: node, address, health, leads, last answer, problems.
    node_cells: BTreeMap<u64, Vec<String>>,
    /// Per operation in the requests table, the row's cells: op, ok/s, failed/s, total, p50,
    /// p99.
    ops: BTreeMap<String, Vec<String>>,
    /// Reports the page rendered since it loaded.
    polls: u64,
}

/// Loads `url` in a fresh headless Chromium and returns the DOM after the page's scripts ran.
async fn dump_dom(url: &str) -> Result<String, String> {
    let profile = tempfile::tempdir().expect("profile dir");
    let mut command = tokio::process::Command::new(CHROMIUM);
    command
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
        ])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .arg(format!("--virtual-time-budget={VIRTUAL_TIME_BUDGET_MS}"))
        .args(["--dump-dom", url])
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true);
    let out = match tokio::time::timeout(BROWSER_RUN_MAX, command.output()).await {
        Err(_) => return Err(format!("chromium ran over {BROWSER_RUN_MAX:?}")),
        Ok(out) => out.map_err(|e| format!("running {CHROMIUM}: {e}"))?,
    };
    if !out.status.success() {
        let stderr = String::from_utf8_lossy(&out.stderr);
        let tail: Vec<&str> = stderr.lines().rev().take(5).collect();
        return Err(format!("chromium exited with {}: {tail:?}", out.status));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The rows of every table inside `<main>` (the script after it holds the same words).
fn rows(dom: &str) -> Vec<Row> {
    let main = dom
        .split_once("<main>")
        .and_then(|(_, rest)| rest.split_once("</main>"))
        .map_or("", |(main, _)| main);
    main.split("<tr ")
        .skip(1)
        .filter_map(|row| {
            let (tag, rest) = row.split_once('>')?;
            let attrs = tag
                .split("\" ")
                .filter_map(|a| a.split_once("=\""))
                .map(|(k, v)| (k.trim().to_string(), v.trim_end_matches('"').to_string()))
                .collect();
            let body = rest.split("</tr>").next().unwrap_or("");
            let cells = body.split("<td").skip(1).map(text_of).collect();
            Some(Row { attrs, cells })
        })
        .collect()
}

/// The text of one `<td ...>...</td>`, tags inside it dropped.
fn text_of(cell: &str) -> String {
    let inner = cell.split_once('>').map_or("", |(_, rest)| rest);
    let inner = inner.split("</td>").next().unwrap_or("");
    let mut text = String::new();
    let mut in_tag = false;
    for c in inner.chars() {
        match c {
            '<' => in_tag = true,
            '>' => in_tag = false,
            c if !in_tag => text.push(c),
            _ => {}
        }
    }
    text
}

fn parse(dom: &str) -> Page {
    let mut page = Page::default();
    for row in rows(dom) {
        let attr = |k: &str| row.attrs.get(k).map(String::as_str);
        if let Some(g) = attr("data-group").and_then(|g| g.parse().ok()) {
            let leader = attr("data-leader").and_then(|l| l.parse().ok());
            page.groups.insert(g, (leader, row.cells.clone()));
        } else if let Some(n) = attr("data-node").and_then(|n| n.parse().ok()) {
            page.nodes.insert(n, attr("data-health") == Some("healthy"));
            page.node_cells.insert(n, row.cells.clone());
        } else if let Some(op) = attr("data-op") {
            page.ops.insert(op.to_string(), row.cells.clone());
        }
    }
    page.polls = dom
        .split_once("id=\"polls\">")
        .and_then(|(_, rest)| rest.split('<').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    page
}

/// Each group's leader now, as the leaders themselves report (the highest term wins).
async fn current_leaders(client: &Client, groups: u32) -> Vec<Option<u64>> {
    let mut best: Vec<Option<(u64, u64)>> = vec![None; groups as usize];
    for (_, status) in client.status().await {
        for g in status.into_iter().flatten() {
            let slot = &mut best[g.group.0 as usize];
            if g.role == "Leader" && slot.is_none_or(|(term, _)| term < g.term) {
                *slot = Some((g.term, g.node));
            }
        }
    }
    best.into_iter().map(|b| b.map(|(_, node)| node)).collect()
}

/// Loads the page until `check` accepts what it shows (None) or [`PHASE_MAX`] passes (then
/// fails with the last reason and page).
async fn until_page(url: &str, what: &str, mut check: impl AsyncFnMut(&Page) -> Option<String>) {
    let deadline = Instant::now() + PHASE_MAX;
    let mut last = String::from("no page yet");
    while Instant::now() < deadline {
        match dump_dom(url).await {
            Ok(dom) => {
                let page = parse(&dom);
                match check(&page).await {
                    None => return,
                    Some(why) => last = format!("{why}; page: {page:?}"),
                }
            }
            Err(e) => last = e,
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    panic!("the dashboard never showed {what} within {PHASE_MAX:?}: {last}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_shows_leaders_and_a_killed_node_turning_unhealthy() {
    if !std::path::Path::new(CHROMIUM).exists() {
        if std::env::var("STEADFAST_SKIP_BROWSER").as_deref() == Ok("1") {
            eprintln!(
                "dashboard browser test SKIPPED: {CHROMIUM} missing, STEADFAST_SKIP_BROWSER=1"
            );
            return;
        }
        panic!(
            "{CHROMIUM} is missing: install Debian's chromium (`apt-get install chromium`; \
             .ci/run does) or set STEADFAST_SKIP_BROWSER=1 to skip this test"
        );
    }
    let _serial = serial().await;
    const GROUPS: u32 = 3;
    let mut cluster = Cluster::start(3, GROUPS);
    let client = cluster.client().await;
    cluster.wait_leaders(&client).await;
    for _ in 0..SESSIONS {
        client
            .create(Attributes::new(), CreateOptions::default())
            .await
            .expect("create");
    }

    tracing::info!("--- the page and its report are served, self-contained");
    let admin: SocketAddr = cluster.admin[0].parse().expect("admin address");
    for path in ["/", "/dashboard"] {
        let page = send(admin, "GET", path, None).await.expect("admin answers");
        assert_eq!(page.status, 200, "{path}");
        assert!(page.body.contains("fetch('dashboard.json'"), "{path}");
    }
    let url = format!("http://{}/", cluster.admin[0]);

    tracing::info!("--- every group with its leader, every node healthy, the page refreshing");
    until_page(&url, "every group's leader", async |page: &Page| {
        let leaders = current_leaders(&client, GROUPS).await;
        let shown: Vec<Option<u64>> = (0..GROUPS)
            .map(|g| page.groups.get(&g).and_then(|(l, _)| *l))
            .collect();
        if shown != leaders || leaders.contains(&None) {
            return Some(format!("leaders shown {shown:?}, cluster says {leaders:?}"));
        }
        if page.nodes.len() != 3 || !page.nodes.values().all(|h| *h) {
            return Some("not every node shown healthy".into());
        }
        // Cells: group, leader, role, term, commit, applied, members, learners, sessions.
        let mut sessions = 0;
        for (g, (_, cells)) in &page.groups {
            let num = |i: usize| cells.get(i).and_then(|c| c.parse::<u64>().ok());
            let (Some(commit), Some(applied)) = (num(4), num(5)) else {
                return Some(format!("group {g}: no commit/applied index"));
            };
            assert!(
                commit >= applied,
                "group {g}: commit {commit} < applied {applied}"
            );
            assert_eq!(cells.get(6).map(String::as_str), Some("1, 2, 3"), "members");
            sessions += num(8).unwrap_or(0);
        }
        if sessions != SESSIONS {
            return Some(format!("{sessions} sessions shown of {SESSIONS}"));
        }
        // The peers' probes are requests this node serves: the rates table has them, with a
        // rate and latencies read back from the metrics.
        let Some(status) = page.ops.get("status") else {
            return Some("no status row in the requests table".into());
        };
        let rate = |i: usize| status.get(i).and_then(|c| c.parse::<f64>().ok());
        if rate(1).is_none_or(|r| r <= 0.0) || rate(4).is_none() || rate(5).is_none() {
            return Some(format!(
                "status row without a rate or latencies: {status:?}"
            ));
        }
        (page.polls < 2).then(|| format!("the page rendered {} reports", page.polls))
    })
    .await;

    tracing::info!("--- node 3 killed: shown unhealthy, the survivors lead every group");
    cluster.kill(2);
    let killed = Instant::now();
    until_page(&url, "node 3 unhealthy", async |page: &Page| {
        let health: Vec<(u64, bool)> = page.nodes.iter().map(|(n, h)| (*n, *h)).collect();
        if health != [(1, true), (2, true), (3, false)] {
            return Some(format!("health shown {health:?}"));
        }
        // Unreachable, with why, and no longer shown leading anything.
        let cells = &page.node_cells[&3];
        if !cells[3].is_empty() || !cells[5].contains("no answer") {
            return Some(format!("node 3's row: {cells:?}"));
        }
        let leaders: Vec<Option<u64>> = page.groups.values().map(|(l, _)| *l).collect();
        let survivors = leaders.iter().all(|l| matches!(l, Some(1 | 2)));
        (!survivors || leaders.len() != GROUPS as usize)
            .then(|| format!("leaders shown {leaders:?}"))
    })
    .await;
    eprintln!(
        "node 3 shown unhealthy {:?} after the kill",
        killed.elapsed()
    );
}
