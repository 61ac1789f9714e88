//! `steadfast ctl backup`: a point-in-time backup of every group, written atomically.

use std::path::Path;

use anyhow::Context;
use steadfast::clock::Clock;
use steadfast::{Client, GroupId};

use crate::output::{count, group_line, out};
use crate::progress::Progress;

pub async fn run(client: &Client, file: &Path) -> anyhow::Result<()> {
    let groups = client.topology().groups;
    let mut records = Vec::with_capacity(groups as usize);
    let mut sessions = 0;
    let progress = Progress::bar(u64::from(groups), "groups");
    for g in 0..groups {
        progress.set_message(format!("backing up group {g}"));
        let (record, taken) = steadfast::backup::fetch_group(client, GroupId(g))
            .await
            .with_context(|| format!("backing up group {g}"))?;
        progress.line(format_args!(
            "{} ({} bytes)",
            group_line(taken.group, taken.sessions, taken.index),
            taken.bytes
        ))?;
        progress.inc(1);
        sessions += taken.sessions;
        records.push(record);
    }
    progress.set_message(format!("writing {}", file.display()));
    let bytes = steadfast::backup::assemble(&records, steadfast::clock::SystemClock.now_ms())?;
    steadfast::backup::write_atomically(file, &bytes)
        .with_context(|| format!("writing {}", file.display()))?;
    drop(progress);
    out!(
        "backup of {}, {}, {} bytes written to {}",
        count(groups as usize, "group"),
        count(sessions, "session"),
        bytes.len(),
        file.display()
    );
    Ok(())
}
