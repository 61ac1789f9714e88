//! `steadfast recover --force-new-cluster`: make a stopped survivor a one-node cluster when a
//! majority is lost for good (the library's `recover` does the work; this prints what it did).

use clap::Args;
use steadfast::identity::ClusterId;

use crate::output::{count, out};
use crate::serve::ServeArgs;

#[derive(Args, Debug)]
pub struct RecoverArgs {
    /// Required: you know the other members are gone for good (if part of the old cluster
    /// still runs, both would accept writes).
    #[arg(long, required = true)]
    force_new_cluster: bool,
    /// The survivor, configured as it was served (its peers and groups); `--cluster-id` names
    /// the new cluster (random if absent).
    #[command(flatten)]
    node: ServeArgs,
}

pub async fn run(args: RecoverArgs) -> anyhow::Result<()> {
    anyhow::ensure!(args.force_new_cluster, "recover needs --force-new-cluster");
    let cluster_id = args
        .node
        .cluster_id
        .clone()
        .unwrap_or_else(|| ClusterId::random("recovered"));
    let config = args.node.load_config()?;
    let done = steadfast::recover::force_new_cluster(&config, cluster_id).await?;
    for g in &done.groups {
        let last = g.last_log.map_or("empty log".to_string(), |(t, i)| {
            format!("last log term {t} index {i}")
        });
        out!(
            "group {}: {last}; {} kept",
            g.group.0,
            count(g.sessions, "session")
        );
    }
    let c = &done.config;
    out!(
        "node {} is now the one-node cluster {}; its old directory is kept at {}",
        c.id,
        done.cluster_id,
        done.kept.display()
    );
    let exe = crate::up::own_path();
    out!(
        "start it with: {exe} serve --id {id} --listen {listen} --data-dir {dir} --peers \
         {id}={addr} --groups {groups} --replicas 1",
        id = c.id,
        listen = c.listen,
        dir = c.data_dir.display(),
        addr = c.peers[0].addr,
        groups = c.groups
    );
    out!(
        "then add nodes with `serve --join` and `ctl voters` / `ctl replace-node`; the old members \
         are refused by cluster id"
    );
    Ok(())
}
