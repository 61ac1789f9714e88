//! `steadfast ctl`: talk to a running cluster (status, sessions, principals, membership,
//! backups, events). Each subcommand is one call (or a short sequence) of the library.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::{Args, Subcommand};
use steadfast::{Client, GroupId};

use crate::output::out;
use crate::progress::Progress;
use format::Format;

mod format;
mod session;

#[derive(Args, Debug)]
pub struct CtlArgs {
    #[command(flatten)]
    endpoints: crate::Endpoints,
    /// Overall deadline per command, in milliseconds.
    #[arg(long, default_value_t = 10_000)]
    timeout_ms: u64,
    /// Output: `table` for people, `json` for scripts (status, session get, principal list,
    /// watch: one JSON object per event and line).
    #[arg(
        short = 'w',
        long = "write-out",
        value_enum,
        default_value_t,
        global = true
    )]
    write_out: Format,
    #[command(subcommand)]
    command: CtlCmd,
}

#[derive(Subcommand, Debug)]
enum CtlCmd {
    /// Per group and node: role, leader, term, log and applied index, members.
    Status,
    /// Session operations.
    #[command(subcommand)]
    Session(session::SessionCmd),
    /// A user's sessions.
    #[command(subcommand)]
    Principal(PrincipalCmd),
    /// Set a group's voters (membership change through joint consensus).
    Voters {
        /// The group.
        group: u32,
        /// The new voters: id (address as configured) or id=addr, e.g. 1 2 4=10.0.0.4:7000.
        #[arg(required = true)]
        voters: Vec<String>,
    },
    /// Move every group replica of node OLD to node NEW (a node started with `serve --join`),
    /// e.g. to replace a node whose disk was lost. Safe to rerun until it reports no work.
    ReplaceNode {
        /// The node leaving.
        old: u64,
        /// The node taking its place.
        new: u64,
        /// NEW's address, unless the cluster's nodes are configured with it.
        #[arg(long)]
        addr: Option<String>,
    },
    /// Write a point-in-time backup of every group (linearizable per group) to a file.
    Backup {
        /// Where to write it (written to FILE.tmp, synced, then renamed).
        #[arg(long)]
        out: PathBuf,
    },
    /// Stream a group's events (created, updated, touched, expired, deleted, rotated), one
    /// line each; runs until interrupted unless --limit is given.
    Watch {
        /// The group.
        #[arg(long, default_value_t = 0)]
        group: u32,
        /// The first log index to show (0 = everything retained).
        #[arg(long, default_value_t = 0)]
        from: u64,
        /// Exit after this many events.
        #[arg(long)]
        limit: Option<usize>,
    },
}

#[derive(Subcommand, Debug)]
enum PrincipalCmd {
    /// List the live sessions of a user.
    List {
        /// The user name.
        principal: String,
    },
    /// End every session of a user ("log out everywhere").
    Invalidate {
        /// The user name.
        principal: String,
    },
}

pub async fn run(args: CtlArgs) -> anyhow::Result<()> {
    let mut config = args.endpoints.client_config()?;
    config.request_timeout = Duration::from_millis(args.timeout_ms);
    if matches!(
        args.command,
        CtlCmd::Voters { .. } | CtlCmd::ReplaceNode { .. } | CtlCmd::Backup { .. }
    ) {
        // One attempt may take long (catching a new voter up, encoding a large image); a
        // retry would start the same work over on the node, which keeps running the first.
        config.attempt_timeout = config.request_timeout;
    }
    let client = Client::connect(config).await.context("connecting")?;
    let format = args.write_out;
    match args.command {
        CtlCmd::Status => status(&client, format).await?,
        CtlCmd::Session(cmd) => session::run(&client, cmd, format).await?,
        CtlCmd::Principal(PrincipalCmd::List { principal }) => {
            principal_list(&client, &principal, format).await?
        }
        CtlCmd::Principal(PrincipalCmd::Invalidate { principal }) => {
            let n = client.invalidate_principal(&principal).await?;
            let n = usize::try_from(n).unwrap_or(usize::MAX);
            out!(
                "ended {} of {principal}",
                crate::output::count(n, "session")
            );
        }
        CtlCmd::Backup { out } => crate::backup::run(&client, &out).await?,
        CtlCmd::Voters { group, voters } => {
            let voters = parse_voters(&voters)?;
            let m = client.change_membership(GroupId(group), &voters).await?;
            out!(
                "group {group}: voters {:?} learners {:?} (log index {})",
                m.voters,
                m.learners,
                m.log_index.map_or("-".into(), |i| i.to_string())
            );
        }
        CtlCmd::ReplaceNode { old, new, addr } => {
            let patience = Duration::from_millis(args.timeout_ms);
            replace_node(&client, (old, new), &addr.unwrap_or_default(), patience).await?
        }
        CtlCmd::Watch { group, from, limit } => {
            watch(&client, (group, from), limit, format).await?
        }
    }
    Ok(())
}

async fn replace_node(
    client: &Client,
    (old, new): (u64, u64),
    addr: &str,
    patience: Duration,
) -> anyhow::Result<()> {
    use steadfast::cluster::ReplaceStep;
    let progress = Progress::spinner(format!("node {old} -> {new}: reading the voters"));
    let mut printed = Ok(());
    let changed =
        steadfast::cluster::replace_node(client, (old, new), addr, patience, |step| match step {
            ReplaceStep::Moving { group, index, of } => progress.set_message(format!(
                "node {old} -> {new}: group {} ({} of {of}): catching node {new} up",
                group.0,
                index + 1
            )),
            // Progress as it happens; a closed stdout ends the command after this step.
            ReplaceStep::Moved { group, reply } => {
                if printed.is_ok() {
                    printed =
                        progress.line(format_args!("group {}: voters {:?}", group.0, reply.voters));
                }
            }
        })
        .await?;
    printed?;
    drop(progress);
    out!("node {old} replaced by node {new} in {changed} groups");
    Ok(())
}

async fn watch(
    client: &Client,
    (group, from): (u32, u64),
    limit: Option<usize>,
    format: Format,
) -> anyhow::Result<()> {
    use futures_util::StreamExt;
    if limit == Some(0) {
        return Ok(());
    }
    let stream = client.watch(GroupId(group), from);
    let mut stream = std::pin::pin!(stream);
    let mut seen = 0;
    while let Some(event) = stream.next().await {
        let e = event.with_context(|| format!("watching group {group}"))?;
        match format {
            Format::Table => out!("{}", format::event_line(&e)),
            Format::Json => out!("{}", format::event_json(&e)),
        }
        seen += 1;
        if limit.is_some_and(|l| seen >= l) {
            break;
        }
    }
    Ok(())
}

async fn principal_list(client: &Client, principal: &str, format: Format) -> anyhow::Result<()> {
    let ids = client.sessions_of(principal).await?;
    match format {
        Format::Json => {
            let ids: Vec<String> = ids.iter().map(|id| id.to_string()).collect();
            out!(
                "{}",
                serde_json::json!({ "principal": principal, "sessions": ids })
            );
        }
        // An unknown user and one without live sessions look alike to the cluster.
        Format::Table if ids.is_empty() => out!("{principal:?} has no live sessions"),
        Format::Table => {
            for id in ids {
                out!("{id}");
            }
        }
    }
    Ok(())
}

async fn status(client: &Client, format: Format) -> anyhow::Result<()> {
    let cluster = client.cluster_id();
    let answers = client.status().await;
    if format == Format::Json {
        let mut groups = Vec::new();
        let mut unreachable = Vec::new();
        for (addr, result) in &answers {
            match result {
                Ok(list) => groups.extend(list.iter().map(format::status_json)),
                Err(e) => unreachable.push(serde_json::json!({
                    "endpoint": addr, "error": e.to_string()
                })),
            }
        }
        let json = serde_json::json!({
            "cluster": cluster.map(|c| c.to_string()),
            "groups": groups,
            "unreachable": unreachable,
        });
        out!("{}", serde_json::to_string_pretty(&json)?);
        return Ok(());
    }
    if let Some(cluster) = cluster {
        out!("cluster {cluster}");
    }
    out!("{}", format::status_header());
    for (addr, result) in answers {
        match result {
            Ok(groups) => {
                for g in groups {
                    out!("{}", format::status_row(&g));
                }
            }
            Err(e) => out!("{addr}: unreachable ({e})"),
        }
    }
    Ok(())
}

fn parse_voters(items: &[String]) -> anyhow::Result<Vec<(u64, String)>> {
    items
        .iter()
        .map(|item| {
            let (id, addr) = item.split_once('=').unwrap_or((item, ""));
            let id = id
                .trim()
                .parse()
                .with_context(|| format!("voter {item:?} is not id or id=addr"))?;
            Ok((id, addr.trim().to_string()))
        })
        .collect()
}
