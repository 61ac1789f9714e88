//! Backups and disaster recovery on real processes: back a cluster up, lose every node, restore
//! into new data directories and find every session at its version.

use std::collections::BTreeMap;
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use steadfast::backup::GroupImage;
use steadfast::client::{CreateOptions, Update};
use steadfast::command::Attributes;
use steadfast::transport::{Pool, TcpConnector};
use steadfast::wire::{ClientRequest, RequestBody, ResponseBody, WireError};
use steadfast::{limits, Error, GroupId, SessionId};

use crate::support::{serial, Cluster};

fn one(name: &str, value: &str) -> Attributes {
    Attributes::from([(name.to_string(), value.as_bytes().to_vec())])
}

fn restore_cmd(backup: &std::path::Path, extra: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_steadfast"))
        .arg("restore")
        .arg("--from")
        .arg(backup)
        .args(extra)
        .output()
        .expect("run steadfast restore")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_restored_from_a_backup_has_every_session_at_its_version() {
    let _serial = serial().await;
    let groups = 4;
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("sessions.bak");
    let mut expected: BTreeMap<SessionId, (u64, Vec<u8>)> = BTreeMap::new();
    let deleted;
    let after;
    {
        let cluster = Cluster::start(3, groups);
        let client = cluster.client().await;
        cluster.wait_leaders(&client).await;
        for i in 0..30 {
            let (id, w) = client
                .create(one("cart", &format!("item{i}")), CreateOptions::default())
                .await
                .expect("create");
            expected.insert(id, (w.version, format!("item{i}").into_bytes()));
        }
        let (&first, _) = expected.iter().next().expect("sessions");
        let w = client
            .update(first, Update::default().set("cart", "updated"))
            .await
            .expect("update");
        expected.insert(first, (w.version, b"updated".to_vec()));
        let (d, _) = client
            .create(one("cart", "gone"), CreateOptions::default())
            .await
            .expect("create");
        client.delete(d, None).await.expect("delete");
        deleted = d;

        let out = cluster.ctl(&["backup", "--out", file.to_str().expect("utf-8")]);
        assert!(out.contains("30 sessions"), "{out}");

        // Written after the backup: must not come back, nor may its version be reissued.
        let (id, w) = client
            .create(one("cart", "late"), CreateOptions::default())
            .await
            .expect("create");
        after = (id, w.version);
    } // every node killed; their data directories go with the temp dir

    let check = restore_cmd(&file, &["--check"]);
    assert!(check.status.success(), "{check:?}");
    assert!(String::from_utf8_lossy(&check.stdout).contains("backup is valid"));

    tracing::info!("--- a new cluster from the backup");
    let cluster = Cluster::start_restored(3, groups, &file);
    let client = cluster.client().await;
    cluster.wait_leaders(&client).await;
    let mut newest = 0;
    for (id, (version, cart)) in &expected {
        let view = client.get(*id).await.expect("read").expect("restored");
        assert_eq!(view.version, *version, "{id}");
        assert_eq!(&view.attributes["cart"], cart, "{id}");
        newest = newest.max(*version);
    }
    assert!(client.get(after.0).await.expect("read").is_none());
    match client
        .create_with_id(deleted, Attributes::new(), CreateOptions::default())
        .await
    {
        Err(Error::Exists) => {}
        other => panic!("the deleted id's tombstone must survive the restore: {other:?}"),
    }
    // Versions keep rising past every version handed out before the disaster, including those
    // of writes acknowledged after the backup (which the restore does not have).
    let highest_seen = newest.max(after.1);
    for _ in 0..8 {
        let (_, w) = client
            .create(one("cart", "new"), CreateOptions::default())
            .await
            .expect("create after restore");
        assert!(w.version > highest_seen, "{} <= {highest_seen}", w.version);
    }
    drop(cluster);

    tracing::info!("--- damaged backups and non-empty targets are refused with a clear error");
    let mut bytes = std::fs::read(&file).expect("read backup");
    // A byte inside group 0's record: after the magic, the header and the record's length.
    let header_len = u32::from_be_bytes(bytes[16..20].try_into().expect("4 bytes")) as usize;
    let at = 20 + header_len + 8 + 10;
    bytes[at] ^= 0x5a;
    let damaged = dir.path().join("damaged.bak");
    std::fs::write(&damaged, &bytes).expect("write");
    let out = restore_cmd(&damaged, &["--check"]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("checksum mismatch"), "{stderr}");
    bytes[at] ^= 0x5a;
    std::fs::write(&damaged, &bytes[..bytes.len() - 7]).expect("write");
    let out = restore_cmd(&damaged, &["--check"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("truncated"));
    assert!(newest > 0);

    let target = dir.path().join("node1");
    let node = [
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
    // A failed earlier attempt left its staging directory behind: it is cleared, and the
    // restore lands in the target only when complete.
    let staging = dir.path().join("node1.restoring");
    std::fs::create_dir_all(staging.join("sled")).expect("leftover");
    std::fs::write(staging.join("sled").join("junk"), b"half a restore").expect("leftover");
    let first = restore_cmd(&file, &node);
    assert!(first.status.success(), "{first:?}");
    assert!(
        !staging.exists(),
        "the staging directory is renamed into place"
    );
    assert!(target.join("sled").exists());
    let again = restore_cmd(&file, &node);
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("is not empty"));
    // A trailing slash names the same directory (the staging one goes beside it, not inside).
    let slashed = format!("{}/", dir.path().join("node2").display());
    let mut node2 = node;
    node2[11] = &slashed;
    let out = restore_cmd(&file, &node2);
    assert!(out.status.success(), "{out:?}");
    assert!(dir.path().join("node2").join("sled").exists());
    assert!(!dir.path().join("node2").join(".restoring").exists());
    assert!(!dir.path().join("node2.restoring").exists());
    let mut wrong = node;
    wrong[7] = "8";
    let out = restore_cmd(&file, &wrong);
    assert!(String::from_utf8_lossy(&out.stderr).contains("4 groups"));
}

/// One backup request straight to `addr`.
async fn backup_call(pool: &Pool, addr: &str, token: u64, offset: u64) -> ResponseBody {
    let body = RequestBody::Client(ClientRequest::Backup { token, offset });
    pool.call(addr, GroupId(0), &body, Duration::from_secs(10))
        .await
        .expect("answer")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_backups_in_flight_do_not_evict_each_other() {
    let _serial = serial().await;
    let cluster = Cluster::start(3, 1);
    let client = cluster.client().await;
    let leader = cluster.wait_leaders(&client).await[0];
    // About 1.9 MiB of sessions, so an image takes two chunks.
    let big = "x".repeat(60 * 1024);
    for _ in 0..32 {
        client
            .create(one("blob", &big), CreateOptions::default())
            .await
            .expect("create");
    }
    let addr = &cluster.addrs[leader as usize - 1];
    let pool = Pool::new(Arc::new(TcpConnector));
    let first_chunk = |r: ResponseBody| match r {
        ResponseBody::BackupChunk {
            token,
            total,
            bytes,
        } => (token, total, bytes),
        other => panic!("expected a backup chunk: {other:?}"),
    };
    // Backup A takes its first chunk, then backup B starts before A comes back for the rest.
    let (a, a_total, a_bytes) = first_chunk(backup_call(&pool, addr, 0, 0).await);
    assert!(a_total > a_bytes.len() as u64, "the image spans chunks");
    let (b, _, b_bytes) = first_chunk(backup_call(&pool, addr, 0, 0).await);
    assert_ne!(a, b);
    for (token, got) in [(a, a_bytes), (b, b_bytes)] {
        let (t, total, rest) = first_chunk(backup_call(&pool, addr, token, got.len() as u64).await);
        assert_eq!(t, token);
        assert_eq!(got.len() + rest.len(), total as usize);
        let whole = [got, rest].concat();
        let image: GroupImage =
            steadfast::codec::decode(&whole, limits::SNAPSHOT_BYTES_MAX).expect("whole image");
        assert_eq!(image.state.sessions.len(), 32);
    }
    // A finished backup's image is released.
    match backup_call(&pool, addr, a, 0).await {
        ResponseBody::Error(WireError::Invalid(_)) => {}
        other => panic!("a finished backup's image is still served: {other:?}"),
    }
}
