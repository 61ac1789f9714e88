//! Mutual TLS on the data port: a cluster whose nodes talk Raft to each other over TLS serves
//! clients holding a certificate from the cluster CA, and refuses plain clients and clients of
//! another CA.

use std::process::Command;
use std::time::Duration;

use steadfast::client::{ClientConfig, CreateOptions, Update};
use steadfast::command::Attributes;
use steadfast::tls::{DevPki, Tls, TlsFiles};
use steadfast::{Client, Error};

use crate::support::{serial, Cluster};

fn pki(dir: &std::path::Path, cluster: &str) -> (TlsFiles, TlsFiles) {
    let from = time::OffsetDateTime::UNIX_EPOCH;
    let to = from + time::Duration::days(365 * 200);
    DevPki::generate(cluster, &["127.0.0.1".into()], from, to)
        .expect("generate")
        .write_to(dir)
        .expect("write")
}

fn config(c: &Cluster, tls: Option<&TlsFiles>) -> ClientConfig {
    let mut config = c.client_config();
    config.tls = tls.map(|f| Tls::load(f).expect("load client tls"));
    config
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_on_mutual_tls_serves_its_clients_and_refuses_strangers() {
    let _serial = serial().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let (node, client_files) = pki(&dir.path().join("ours"), "ours");
    let (_, stranger) = pki(&dir.path().join("theirs"), "theirs");
    let path = |p: &std::path::Path| p.display().to_string();
    let mut c = Cluster::start_with_args(
        3,
        2,
        &[
            "--tls-cert",
            &path(&node.cert),
            "--tls-key",
            &path(&node.key),
            "--tls-ca",
            &path(&node.ca),
        ],
    );

    // Elections and replication run between the nodes over TLS.
    let client = Client::connect(config(&c, Some(&client_files)))
        .await
        .expect("a client of the cluster CA connects");
    let leaders = c.wait_leaders(&client).await;
    let (id, w) = client
        .create(
            Attributes::from([("cart".into(), b"book".to_vec())]),
            CreateOptions::default(),
        )
        .await
        .expect("create");
    let w2 = client
        .update(
            id,
            Update::default()
                .set("cart", "book,pen")
                .if_version(w.version),
        )
        .await
        .expect("update");
    assert!(w2.version > w.version);

    // Connections that never start a handshake hold no one up: the accept loop does not wait
    // for them, so a client arriving after them is served well before their 10 s run out.
    let silent: Vec<std::net::TcpStream> = c
        .addrs
        .iter()
        .flat_map(|a| (0..3).map(move |_| std::net::TcpStream::connect(a).expect("tcp")))
        .collect();
    let mut prompt = config(&c, Some(&client_files));
    prompt.request_timeout = Duration::from_secs(5);
    let prompt = Client::connect(prompt)
        .await
        .expect("served despite silent connections");
    prompt
        .get(id)
        .await
        .expect("read despite silent connections");
    drop(silent);

    // A write still commits with the session group's leader gone: the two survivors replicate
    // to each other over TLS.
    let group = id.group(client.topology().groups).0 as usize;
    let leader = leaders[group] as usize - 1;
    c.kill(leader);
    let w3 = client
        .update(
            id,
            Update::default().set("paid", "yes").if_version(w2.version),
        )
        .await
        .expect("update after the leader died");
    let got = client.get(id).await.expect("get").expect("present");
    assert_eq!(got.version, w3.version);
    assert_eq!(
        got.attributes.get("cart").map(Vec::as_slice),
        Some(&b"book,pen"[..])
    );
    c.restart(leader);

    // Plain TCP is refused, with a hint.
    let mut plain = config(&c, None);
    // Long enough for a handshake on a busy machine; a refusal is definite and comes at once.
    plain.request_timeout = Duration::from_secs(15);
    match Client::connect(plain).await {
        Err(Error::Unavailable(m)) => assert!(m.contains("TLS"), "{m}"),
        Err(other) => panic!("unexpected error for a plain client: {other}"),
        Ok(_) => panic!("a plain client was served"),
    }
    // A certificate from another CA is refused.
    let mut theirs = config(&c, Some(&stranger));
    // Long enough for a handshake on a busy machine; a refusal is definite and comes at once.
    theirs.request_timeout = Duration::from_secs(15);
    match Client::connect(theirs).await {
        // Our client refuses the node's certificate during the handshake.
        Err(Error::Io(e)) => assert!(e.to_string().contains("certificate"), "{e}"),
        Err(other) => panic!("unexpected error for a client of another CA: {other}"),
        Ok(_) => panic!("a client of another CA was served"),
    }
    // The other CA's client certificate is refused even by a client that trusts our CA.
    let mixed = TlsFiles {
        ca: client_files.ca.clone(),
        ..stranger.clone()
    };
    let mut mixed_config = config(&c, Some(&mixed));
    // Long enough for a handshake on a busy machine; a refusal is definite and comes at once.
    mixed_config.request_timeout = Duration::from_secs(15);
    match Client::connect(mixed_config).await {
        // The node refuses the certificate and closes: a definite refusal, not a timeout.
        Err(Error::Unavailable(m)) => assert!(m.contains("closed"), "{m}"),
        Err(Error::Io(_)) => {}
        Err(other) => panic!("unexpected error for a foreign client certificate: {other}"),
        Ok(_) => panic!("a certificate of another CA was accepted"),
    }

    // `ctl` takes the client identity from the environment.
    let out = Command::new(env!("CARGO_BIN_EXE_steadfast"))
        .args(["ctl", "--endpoints", &c.addrs.join(","), "session", "get"])
        .arg(id.to_string())
        .env("STEADFAST_TLS_CERT", &client_files.cert)
        .env("STEADFAST_TLS_KEY", &client_files.key)
        .env("STEADFAST_TLS_CA", &client_files.ca)
        .output()
        .expect("run ctl");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains("book,pen"),
        "ctl over TLS: {stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn a_node_refuses_plain_tcp_on_a_public_address_unless_told() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = Command::new(env!("CARGO_BIN_EXE_steadfast"))
        .args(["serve", "--id", "1", "--listen", "0.0.0.0:0"])
        .args(["--peers", "1=10.0.0.1:7001", "--data-dir"])
        .arg(dir.path().join("node"))
        .output()
        .expect("run serve");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "plain serve on 0.0.0.0 started");
    assert!(stderr.contains("refusing to serve plain TCP"), "{stderr}");
    assert!(
        !dir.path().join("node").exists(),
        "nothing is written before refusing"
    );
}

#[test]
fn a_node_that_cannot_bind_creates_no_storage() {
    // Otherwise its next start would see a data directory, take itself for a restarted node and
    // never initialize its groups.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = taken.local_addr().expect("addr").to_string();
    let dir = tempfile::tempdir().expect("tempdir");
    let out = Command::new(env!("CARGO_BIN_EXE_steadfast"))
        .args(["serve", "--id", "1", "--listen", &addr])
        .args(["--peers", &format!("1={addr}"), "--replicas", "1"])
        .arg("--data-dir")
        .arg(dir.path().join("node"))
        .output()
        .expect("run serve");
    assert!(!out.status.success(), "serve started on a taken port");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("binding"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!dir.path().join("node").join("sled").exists());
}
