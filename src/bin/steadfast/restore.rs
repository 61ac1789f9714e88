//! `steadfast restore`: validate a backup file, or install it into this node's empty data
//! directory (the library's `restore` does the work).

use std::path::PathBuf;

use anyhow::Context;
use clap::Args;
use steadfast::GroupId;

use crate::output::{group_line, out};
use crate::progress::Progress;
use crate::serve::ServeArgs;

#[derive(Args, Debug)]
pub struct RestoreArgs {
    /// The backup file (`steadfast ctl backup --out FILE`).
    #[arg(long)]
    from: PathBuf,
    /// Only read and validate the backup; print what it holds.
    #[arg(long)]
    check: bool,
    /// Print only the last line (`up --restore` prints the listing once, for all nodes).
    #[arg(long, hide = true)]
    quiet: bool,
    /// The node to restore, configured exactly as it will be served.
    #[command(flatten)]
    node: ServeArgs,
}

pub async fn run(args: RestoreArgs) -> anyhow::Result<()> {
    let reading = Progress::spinner(format!("reading {}", args.from.display()));
    let bytes =
        std::fs::read(&args.from).with_context(|| format!("reading {}", args.from.display()))?;
    let backup = steadfast::backup::decode(&bytes)
        .with_context(|| format!("reading {}", args.from.display()))?;
    drop(reading);
    if !args.quiet {
        for g in &backup.groups {
            out!("{}", group_line(g.group, g.state.sessions.len(), g.index));
        }
    }
    let sessions: usize = backup.groups.iter().map(|g| g.state.sessions.len()).sum();
    if args.check {
        out!(
            "backup is valid ({}, {})",
            crate::output::count(backup.header.groups as usize, "group"),
            crate::output::count(sessions, "session")
        );
        return Ok(());
    }
    let config = args.node.load_config()?;
    let cluster_id = match args.node.cluster_id.clone() {
        Some(id) => id,
        None => steadfast::restore::restored_cluster_id(&backup, &config),
    };
    let mine = (0..backup.header.groups)
        .filter(|g| config.placement(GroupId(*g)).contains(&config.id))
        .count();
    let progress = Progress::bar(mine as u64, "groups");
    progress.set_message(format!("node {}: restoring", config.id));
    let restored =
        steadfast::restore::restore_node(&backup, &config, cluster_id.clone(), |_| progress.inc(1))
            .await?;
    drop(progress);
    if args.quiet {
        return Ok(());
    }
    out!(
        "node {}: restored {restored} group replicas into {} as cluster {cluster_id}; start it \
         with `steadfast serve` (same settings)",
        config.id,
        config.data_dir.display()
    );
    Ok(())
}
