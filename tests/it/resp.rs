//! The Redis protocol listener on a real cluster, spoken over raw TCP (replies decoded with the
//! `redis-protocol` crate): pipelining, RESP3, errors, malformed input, transactions under
//! contention, SET after DEL with and without a grace period, absolute expiry, SCAN across
//! groups, RENAME, any node serving any key, AUTH, keyspace notifications.

use std::time::Duration;

use tokio::time::Instant;

use bytes::BytesMut;
use redis_protocol::resp2::types::OwnedFrame as F2;
use redis_protocol::resp3::types::OwnedFrame as F3;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::support::{serial, Cluster};

/// A reply, normalized across RESP2 and RESP3.
#[derive(Clone, Debug, PartialEq)]
enum V {
    S(String),
    Err(String),
    Int(i64),
    Nil,
    Arr(Vec<V>),
    Map(Vec<(V, V)>),
}

fn s(text: &str) -> V {
    V::S(text.into())
}

impl V {
    fn text(&self) -> String {
        match self {
            V::S(t) => t.clone(),
            other => panic!("not a string: {other:?}"),
        }
    }

    fn int(&self) -> i64 {
        match self {
            V::Int(n) => *n,
            other => panic!("not an integer: {other:?}"),
        }
    }

    fn items(&self) -> Vec<V> {
        match self {
            V::Arr(items) => items.clone(),
            other => panic!("not an array: {other:?}"),
        }
    }

    fn is_err(&self, prefix: &str) -> bool {
        matches!(self, V::Err(e) if e.starts_with(prefix))
    }
}

fn from2(f: F2) -> V {
    match f {
        F2::SimpleString(b) | F2::BulkString(b) => V::S(String::from_utf8_lossy(&b).into()),
        F2::Error(e) => V::Err(e),
        F2::Integer(i) => V::Int(i),
        F2::Array(items) => V::Arr(items.into_iter().map(from2).collect()),
        F2::Null => V::Nil,
    }
}

fn from3(f: F3) -> V {
    match f {
        F3::SimpleString { data, .. } | F3::BlobString { data, .. } => {
            V::S(String::from_utf8_lossy(&data).into())
        }
        F3::SimpleError { data, .. } => V::Err(data),
        F3::Number { data, .. } => V::Int(data),
        F3::Null => V::Nil,
        F3::Array { data, .. } | F3::Push { data, .. } => {
            V::Arr(data.into_iter().map(from3).collect())
        }
        F3::Set { data, .. } => V::Arr(data.into_iter().map(from3).collect()),
        F3::Map { data, .. } => V::Map(
            data.into_iter()
                .map(|(k, v)| (from3(k), from3(v)))
                .collect(),
        ),
        other => panic!("unexpected RESP3 frame {other:?}"),
    }
}

/// A raw RESP connection.
struct Conn {
    stream: TcpStream,
    buf: BytesMut,
    resp3: bool,
}

fn encode(args: &[&str]) -> Vec<u8> {
    let mut out = format!("*{}\r\n", args.len()).into_bytes();
    for a in args {
        out.extend_from_slice(format!("${}\r\n{a}\r\n", a.len()).as_bytes());
    }
    out
}

impl Conn {
    async fn open(addr: &str) -> Conn {
        Conn {
            stream: TcpStream::connect(addr).await.expect("connect to RESP"),
            buf: BytesMut::new(),
            resp3: false,
        }
    }

    async fn send_raw(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).await.expect("write");
    }

    /// The next reply, or `None` if the server closed the connection.
    async fn reply(&mut self) -> Option<V> {
        loop {
            let decoded = if self.resp3 {
                redis_protocol::resp3::decode::complete::decode(&self.buf)
                    .expect("the server speaks RESP3")
                    .map(|(f, n)| (from3(f), n))
            } else {
                redis_protocol::resp2::decode::decode(&self.buf)
                    .expect("the server speaks RESP2")
                    .map(|(f, n)| (from2(f), n))
            };
            if let Some((v, n)) = decoded {
                let _ = self.buf.split_to(n);
                return Some(v);
            }
            let read =
                tokio::time::timeout(Duration::from_secs(30), self.stream.read_buf(&mut self.buf))
                    .await
                    .expect("a reply within 30 s")
                    .expect("read");
            if read == 0 {
                return None;
            }
        }
    }

    async fn cmd(&mut self, args: &[&str]) -> V {
        self.send_raw(&encode(args)).await;
        self.reply().await.expect("a reply")
    }
}

async fn cluster(extra: &[&str]) -> Cluster {
    let c = Cluster::start_with_args(3, 4, extra);
    let client = c.client().await;
    c.wait_leaders(&client).await;
    c
}

#[tokio::test(flavor = "multi_thread")]
async fn strings_pipelining_errors_and_any_node_serves_any_key() {
    let _g = serial().await;
    let c = cluster(&[]).await;
    let mut a = Conn::open(&c.redis[0]).await;
    assert_eq!(a.cmd(&["PING"]).await, s("PONG"));
    assert_eq!(a.cmd(&["SET", "greeting", "hello"]).await, s("OK"));
    assert_eq!(a.cmd(&["GET", "greeting"]).await, s("hello"));
    for other in &c.redis[1..] {
        let mut b = Conn::open(other).await;
        assert_eq!(b.cmd(&["GET", "greeting"]).await, s("hello"), "via {other}");
    }
    assert_eq!(a.cmd(&["SET", "greeting", "x", "NX"]).await, V::Nil);
    assert_eq!(a.cmd(&["SET", "absent", "x", "XX"]).await, V::Nil);
    assert_eq!(a.cmd(&["SET", "greeting", "hi", "GET"]).await, s("hello"));
    assert_eq!(a.cmd(&["SETNX", "greeting", "no"]).await, V::Int(0));
    assert_eq!(
        a.cmd(&["MGET", "greeting", "absent"]).await,
        V::Arr(vec![s("hi"), V::Nil])
    );
    assert_eq!(a.cmd(&["GETDEL", "greeting"]).await, s("hi"));
    assert_eq!(a.cmd(&["EXISTS", "greeting"]).await, V::Int(0));

    // 200 pipelined commands in one write, over several groups: answers in order.
    let mut batch = Vec::new();
    for i in 0..100 {
        batch.extend(encode(&["SET", &format!("p{i}"), &i.to_string()]));
        batch.extend(encode(&["GET", &format!("p{i}")]));
    }
    a.send_raw(&batch).await;
    for i in 0..100 {
        assert_eq!(a.reply().await, Some(s("OK")), "SET p{i}");
        assert_eq!(a.reply().await, Some(s(&i.to_string())), "GET p{i}");
    }
    // Pipelined commands on distinct keys run concurrently; on one key, in order.
    let mut batch = Vec::new();
    for i in 0..20 {
        batch.extend(encode(&["SET", "same", &i.to_string()]));
        batch.extend(encode(&["SET", &format!("other{i}"), "x"]));
    }
    batch.extend(encode(&["GET", "same"]));
    batch.extend(encode(&["DEL", "same"]));
    batch.extend(encode(&["GET", "same"]));
    a.send_raw(&batch).await;
    for _ in 0..40 {
        assert_eq!(a.reply().await, Some(s("OK")));
    }
    assert_eq!(
        a.reply().await,
        Some(s("19")),
        "the last SET of the pipeline"
    );
    assert_eq!(a.reply().await, Some(V::Int(1)));
    assert_eq!(a.reply().await, Some(V::Nil), "DEL before GET");
    let keys: Vec<String> = (0..100).map(|i| format!("p{i}")).collect();
    let mut del = vec!["DEL"];
    del.extend(keys.iter().map(String::as_str));
    assert_eq!(a.cmd(&del).await, V::Int(100), "DEL across every group");

    // Errors name the command; wrong types answer WRONGTYPE; limits answer -ERR.
    let unknown = a.cmd(&["FLUSHALL"]).await;
    assert!(
        matches!(&unknown, V::Err(e) if e.contains("'flushall'")),
        "{unknown:?}"
    );
    assert!(a
        .cmd(&["GET"])
        .await
        .is_err("ERR wrong number of arguments for 'get'"));
    assert_eq!(a.cmd(&["HSET", "h", "f", "v"]).await, V::Int(1));
    assert!(a.cmd(&["GET", "h"]).await.is_err("WRONGTYPE"));
    assert_eq!(a.cmd(&["TYPE", "h"]).await, s("hash"));
    let huge = "x".repeat(70 * 1024);
    assert!(a
        .cmd(&["SET", "big", &huge])
        .await
        .is_err("ERR value too large"));
    let long_key = "k".repeat(2000);
    assert!(a
        .cmd(&["SET", &long_key, "v"])
        .await
        .is_err("ERR key of 2000 bytes"));
    assert_eq!(a.cmd(&["SELECT", "0"]).await, s("OK"));
    assert!(a.cmd(&["SELECT", "1"]).await.is_err("ERR DB index"));
    assert_eq!(a.cmd(&["CLIENT", "SETNAME", "tester"]).await, s("OK"));
    assert_eq!(a.cmd(&["CLIENT", "GETNAME"]).await, s("tester"));
    assert!(a.cmd(&["INFO"]).await.text().contains("redis_version:"));
    // Still fine after all those errors.
    assert_eq!(a.cmd(&["ECHO", "still here"]).await, s("still here"));
    assert_eq!(a.cmd(&["QUIT"]).await, s("OK"));
    assert_eq!(a.reply().await, None, "QUIT closes");
}

#[tokio::test(flavor = "multi_thread")]
async fn resp3_hashes_sets_and_malformed_input_closes_only_that_connection() {
    let _g = serial().await;
    let c = cluster(&[]).await;
    let mut a = Conn::open(&c.redis[1]).await;
    a.send_raw(&encode(&["HELLO", "3"])).await;
    a.resp3 = true;
    let V::Map(hello) = a.reply().await.expect("HELLO answers") else {
        panic!("HELLO 3 answers a map");
    };
    assert!(hello.contains(&(s("proto"), V::Int(3))), "{hello:?}");
    assert_eq!(
        a.cmd(&["HSET", "cart", "book", "1", "pen", "2"]).await,
        V::Int(2)
    );
    assert_eq!(a.cmd(&["HINCRBY", "cart", "pen", "3"]).await, V::Int(5));
    // RESP3 maps are unordered.
    let V::Map(mut all) = a.cmd(&["HGETALL", "cart"]).await else {
        panic!("HGETALL answers a map in RESP3");
    };
    all.sort_by_key(|(k, _)| k.text());
    assert_eq!(all, vec![(s("book"), s("1")), (s("pen"), s("5"))]);
    assert_eq!(
        a.cmd(&["HMGET", "cart", "pen", "none"]).await,
        V::Arr(vec![s("5"), V::Nil])
    );
    assert_eq!(a.cmd(&["HDEL", "cart", "book"]).await, V::Int(1));
    assert_eq!(a.cmd(&["HLEN", "cart"]).await, V::Int(1));
    assert_eq!(a.cmd(&["GET", "nothing"]).await, V::Nil);
    assert_eq!(a.cmd(&["SADD", "idx", "s1", "s2", "s1"]).await, V::Int(2));
    assert_eq!(a.cmd(&["SCARD", "idx"]).await, V::Int(2));
    assert_eq!(a.cmd(&["SREM", "idx", "s1"]).await, V::Int(1));
    assert_eq!(a.cmd(&["SMEMBERS", "idx"]).await, V::Arr(vec![s("s2")]));

    let mut other = Conn::open(&c.redis[1]).await;
    assert_eq!(other.cmd(&["PING"]).await, s("PONG"));
    let mut bad = Conn::open(&c.redis[1]).await;
    bad.send_raw(b"*1\r\n*1\r\n*1\r\n").await;
    let reply = bad.reply().await.expect("an error line before closing");
    assert!(reply.is_err("ERR Protocol error"), "{reply:?}");
    assert_eq!(
        bad.reply().await,
        None,
        "the malformed connection is closed"
    );
    let mut oversized = Conn::open(&c.redis[1]).await;
    oversized.send_raw(b"*1\r\n$999999999\r\n").await;
    let reply = oversized.reply().await.expect("an error line");
    assert!(
        reply.is_err("ERR Protocol error: invalid bulk length"),
        "{reply:?}"
    );
    assert_eq!(
        other.cmd(&["PING", "ok"]).await,
        s("ok"),
        "other connections unharmed"
    );
    assert_eq!(a.cmd(&["HGET", "cart", "pen"]).await, s("5"));
}

#[tokio::test(flavor = "multi_thread")]
async fn watch_multi_exec_lets_exactly_one_of_two_racing_transactions_win() {
    let _g = serial().await;
    let c = cluster(&[]).await;
    let mut setup = Conn::open(&c.redis[0]).await;
    assert_eq!(setup.cmd(&["SET", "{acct}:balance", "0"]).await, s("OK"));
    for round in 0..10 {
        let mut conns = Vec::new();
        for i in 0..2 {
            let mut conn = Conn::open(&c.redis[i]).await;
            assert_eq!(conn.cmd(&["WATCH", "{acct}:balance"]).await, s("OK"));
            let seen: i64 = conn
                .cmd(&["GET", "{acct}:balance"])
                .await
                .text()
                .parse()
                .expect("n");
            assert_eq!(conn.cmd(&["MULTI"]).await, s("OK"));
            let next = (seen + 1).to_string();
            assert_eq!(
                conn.cmd(&["SET", "{acct}:balance", &next]).await,
                s("QUEUED")
            );
            assert_eq!(
                conn.cmd(&["HSET", "{acct}:log", &format!("r{round}"), &i.to_string()])
                    .await,
                s("QUEUED")
            );
            conns.push(conn);
        }
        // Both watched the same version; EXEC them at once.
        let (mut x, mut y) = (conns.remove(0), conns.remove(0));
        let (rx, ry) = tokio::join!(x.cmd(&["EXEC"]), y.cmd(&["EXEC"]));
        let wins = [&rx, &ry].into_iter().filter(|r| **r != V::Nil).count();
        assert_eq!(wins, 1, "round {round}: {rx:?} {ry:?}");
        let winner = if rx != V::Nil { &rx } else { &ry };
        assert_eq!(winner.items()[0], s("OK"));
    }
    assert_eq!(
        setup.cmd(&["GET", "{acct}:balance"]).await,
        s("10"),
        "one increment per round"
    );
    assert_eq!(setup.cmd(&["HLEN", "{acct}:log"]).await, V::Int(10));
    // Keys of different groups in one transaction are refused like Redis Cluster does.
    let mut tx = Conn::open(&c.redis[2]).await;
    let mut cross = None;
    for i in 0..50 {
        assert_eq!(tx.cmd(&["MULTI"]).await, s("OK"));
        tx.cmd(&["SET", "{acct}:balance", "0"]).await;
        tx.cmd(&["SET", &format!("other{i}"), "0"]).await;
        let r = tx.cmd(&["EXEC"]).await;
        if r.is_err("CROSSSLOT") {
            cross = Some(i);
            break;
        }
    }
    assert!(cross.is_some(), "some key lands in another of 4 groups");
    assert_eq!(
        tx.cmd(&["EXEC"]).await,
        V::Err("ERR EXEC without MULTI".into())
    );
    assert_eq!(tx.cmd(&["MULTI"]).await, s("OK"));
    assert!(tx.cmd(&["NOSUCHCMD"]).await.is_err("ERR unknown command"));
    assert!(tx.cmd(&["EXEC"]).await.is_err("EXECABORT"));
}

#[tokio::test(flavor = "multi_thread")]
async fn set_after_del_creates_the_key_again_and_expiry_is_absolute() {
    let _g = serial().await;
    let c = cluster(&[]).await;
    let mut a = Conn::open(&c.redis[0]).await;
    assert_eq!(a.cmd(&["SET", "sess:1", "basket"]).await, s("OK"));
    assert_eq!(a.cmd(&["DEL", "sess:1"]).await, V::Int(1));
    assert_eq!(
        a.cmd(&["SET", "sess:1", "again"]).await,
        s("OK"),
        "no grace: Redis behaviour"
    );
    assert_eq!(a.cmd(&["GET", "sess:1"]).await, s("again"));

    // Reads do not extend a deadline: read it all the time, it still goes at its deadline.
    let start = Instant::now();
    assert_eq!(a.cmd(&["SET", "sess:2", "v", "PX", "1500"]).await, s("OK"));
    let mut last_pttl = i64::MAX;
    let gone = loop {
        match a.cmd(&["GET", "sess:2"]).await {
            V::Nil => break start.elapsed(),
            v => assert_eq!(v, s("v")),
        }
        let pttl = a.cmd(&["PTTL", "sess:2"]).await.int();
        assert!(
            pttl <= last_pttl,
            "PTTL never rises: {pttl} after {last_pttl}"
        );
        last_pttl = pttl;
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "sess:2 never expired"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(
        gone >= Duration::from_millis(1400),
        "expired early: {gone:?}"
    );
    assert_eq!(a.cmd(&["TTL", "sess:2"]).await, V::Int(-2));
    assert_eq!(a.cmd(&["SET", "sess:3", "v", "EX", "100"]).await, s("OK"));
    let ttl = a.cmd(&["TTL", "sess:3"]).await.int();
    assert!((98..=100).contains(&ttl), "{ttl}");
    assert_eq!(a.cmd(&["PERSIST", "sess:3"]).await, V::Int(1));
    assert_eq!(a.cmd(&["TTL", "sess:3"]).await, V::Int(-1));
    assert_eq!(a.cmd(&["EXPIRE", "sess:3", "-1"]).await, V::Int(1));
    assert_eq!(
        a.cmd(&["EXISTS", "sess:3"]).await,
        V::Int(0),
        "a past deadline deletes"
    );
    assert_eq!(a.cmd(&["SETEX", "sess:4", "100", "v"]).await, s("OK"));
    assert_eq!(a.cmd(&["GETEX", "sess:4", "PERSIST"]).await, s("v"));
    assert_eq!(a.cmd(&["TTL", "sess:4"]).await, V::Int(-1));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_grace_period_keeps_a_logged_out_session_from_coming_back_and_auth_is_required() {
    let _g = serial().await;
    let c = cluster(&[
        "--redis-delete-grace-ms",
        "2000",
        "--redis-password",
        "s3cret",
    ])
    .await;
    let mut a = Conn::open(&c.redis[0]).await;
    assert!(a.cmd(&["GET", "k"]).await.is_err("NOAUTH"));
    assert!(a.cmd(&["AUTH", "wrong"]).await.is_err("WRONGPASS"));
    assert_eq!(a.cmd(&["AUTH", "s3cret"]).await, s("OK"));
    assert_eq!(a.cmd(&["SET", "sess:9", "logged-in"]).await, s("OK"));
    assert_eq!(a.cmd(&["DEL", "sess:9"]).await, V::Int(1), "logout");
    let late_save = a.cmd(&["SET", "sess:9", "stale basket", "EX", "60"]).await;
    assert!(late_save.is_err("ERR key was deleted"), "{late_save:?}");
    let mut b = Conn::open(&c.redis[2]).await;
    assert_eq!(b.cmd(&["AUTH", "default", "s3cret"]).await, s("OK"));
    assert_eq!(b.cmd(&["GET", "sess:9"]).await, V::Nil, "not resurrected");
    // Regression (the simulation's RESP scenarios, seeds 7, 8, 9 and 11 of their first sweep):
    // a RENAME across groups onto a key deleted within the grace period is refused, and the
    // source used to be lost: its put-back was refused by the same grace period (the take-out
    // had just tombstoned it).
    let group = |k: &str| steadfast::resp::keyspace::key_id(k.as_bytes(), 4).group(4);
    let source = (0..)
        .map(|i| format!("basket:{i}"))
        .find(|k| group(k) != group("sess:9"))
        .expect("a key in another group");
    assert_eq!(a.cmd(&["SET", &source, "kept"]).await, s("OK"));
    let refused = a.cmd(&["RENAME", &source, "sess:9"]).await;
    assert!(refused.is_err("ERR key was deleted"), "{refused:?}");
    assert_eq!(a.cmd(&["GET", &source]).await, s("kept"), "put back");
    assert_eq!(b.cmd(&["GET", "sess:9"]).await, V::Nil);
    // Once the grace period is over, the key may be created again.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        match b.cmd(&["SET", "sess:9", "new login"]).await {
            V::S(ok) if ok == "OK" => break,
            v => assert!(v.is_err("ERR key was deleted"), "{v:?}"),
        }
        assert!(Instant::now() < deadline, "grace period never ended");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(a.cmd(&["GET", "sess:9"]).await, s("new login"));
}

#[tokio::test(flavor = "multi_thread")]
async fn scan_covers_every_group_and_rename_moves_keys_and_a_dead_node_is_survived() {
    let _g = serial().await;
    let mut c = cluster(&[]).await;
    let mut a = Conn::open(&c.redis[0]).await;
    for i in 0..60 {
        let key = format!("{}:{i}", if i % 2 == 0 { "sess" } else { "user" });
        if i % 3 == 0 {
            assert_eq!(a.cmd(&["HSET", &key, "f", "v"]).await, V::Int(1));
        } else {
            assert_eq!(a.cmd(&["SET", &key, "v"]).await, s("OK"));
        }
    }
    let mut cursor = "0".to_string();
    let mut seen = Vec::new();
    let mut steps = 0;
    loop {
        let r = a
            .cmd(&["SCAN", &cursor, "MATCH", "sess:*", "COUNT", "7"])
            .await
            .items();
        cursor = r[0].text();
        seen.extend(r[1].items().into_iter().map(|v| v.text()));
        steps += 1;
        if cursor == "0" {
            break;
        }
        assert!(steps < 1000, "SCAN never ended");
    }
    seen.sort();
    let mut want: Vec<String> = (0..60).step_by(2).map(|i| format!("sess:{i}")).collect();
    want.sort();
    assert_eq!(seen, want, "every matching key exactly once");
    assert!(
        steps > 4,
        "COUNT 7 over 60 keys in 4 groups takes several steps"
    );
    assert_eq!(a.cmd(&["DBSIZE"]).await, V::Int(60));
    let hashes = a
        .cmd(&["SCAN", "0", "TYPE", "hash", "COUNT", "1000"])
        .await
        .items();
    assert!(hashes[1].items().iter().all(|k| {
        let n: usize = k.text().split(':').nth(1).expect("n").parse().expect("n");
        n.is_multiple_of(3)
    }));
    assert_eq!(a.cmd(&["KEYS", "user:1?"]).await.items().len(), 5);

    // RENAME: atomic with a shared hash tag, fail-safe across groups; the TTL moves along.
    assert_eq!(a.cmd(&["SET", "{u}:a", "1", "EX", "100"]).await, s("OK"));
    assert_eq!(a.cmd(&["RENAME", "{u}:a", "{u}:b"]).await, s("OK"));
    assert_eq!(a.cmd(&["GET", "{u}:b"]).await, s("1"));
    assert!(a.cmd(&["TTL", "{u}:b"]).await.int() > 90);
    for i in 0..20 {
        let to = format!("renamed{i}");
        assert_eq!(a.cmd(&["RENAME", "{u}:b", &to]).await, s("OK"));
        assert_eq!(a.cmd(&["GET", &to]).await, s("1"));
        assert_eq!(a.cmd(&["EXISTS", "{u}:b"]).await, V::Int(0));
        assert_eq!(a.cmd(&["RENAME", &to, "{u}:b"]).await, s("OK"));
    }
    assert!(a
        .cmd(&["RENAME", "nope", "x"])
        .await
        .is_err("ERR no such key"));

    // A node dies: clients of the other nodes keep reading and writing every key.
    c.kill(2);
    let mut b = Conn::open(&c.redis[1]).await;
    let deadline = Instant::now() + Duration::from_secs(30);
    for i in 0..60 {
        let key = format!("sess:{i}");
        if i % 3 != 0 && i % 2 == 0 {
            loop {
                let r = b.cmd(&["SET", &key, "after"]).await;
                if r == s("OK") {
                    break;
                }
                assert!(Instant::now() < deadline, "{key}: {r:?}");
            }
            assert_eq!(a.cmd(&["GET", &key]).await, s("after"));
        }
    }
}

/// The next `n` replies of a subscribed connection, each a flat list of its parts as text.
async fn frames(conn: &mut Conn, n: usize) -> Vec<Vec<String>> {
    let mut out = Vec::new();
    for _ in 0..n {
        let frame = conn.reply().await.expect("the subscriber stays connected");
        out.push(
            frame
                .items()
                .iter()
                .map(|part| match part {
                    V::Int(i) => i.to_string(),
                    V::Nil => "nil".into(),
                    other => other.text(),
                })
                .collect(),
        );
    }
    out
}

fn texts(parts: &[&str]) -> Vec<String> {
    parts.iter().map(|p| p.to_string()).collect()
}

/// Keyspace notifications come from the groups' committed events: a subscriber on one node is
/// told of a DEL sent to another node (keys in every group), and of an expiry that only the
/// leaders' purge commits (nobody reads the key). Each wait is one bounded read.
#[tokio::test(flavor = "multi_thread")]
async fn subscribers_are_told_of_deletions_and_expiries_in_every_group() {
    let _g = serial().await;
    let c = cluster(&[]).await;
    tracing::info!("--- Spring Session's start: CONFIG GET, then SET notify-keyspace-events");
    let mut w = Conn::open(&c.redis[1]).await;
    assert_eq!(
        w.cmd(&["CONFIG", "GET", "notify-keyspace-events"]).await,
        V::Arr(vec![s("notify-keyspace-events"), s("gxKE")])
    );
    assert_eq!(
        w.cmd(&["CONFIG", "SET", "notify-keyspace-events", "Egx"])
            .await,
        s("OK")
    );
    assert!(w
        .cmd(&["CONFIG", "SET", "notify-keyspace-events", "Q"])
        .await
        .is_err("ERR"));

    tracing::info!("--- a RESP2 subscriber on node 1: two channels and a pattern");
    let mut sub = Conn::open(&c.redis[0]).await;
    let (del, expired) = ("__keyevent@0__:del", "__keyevent@0__:expired");
    sub.send_raw(&encode(&["SUBSCRIBE", del, expired])).await;
    assert_eq!(
        frames(&mut sub, 2).await,
        [
            texts(&["subscribe", del, "1"]),
            texts(&["subscribe", expired, "2"])
        ]
    );
    let pattern = "__keyspace@*__:sess:*";
    sub.send_raw(&encode(&["PSUBSCRIBE", pattern])).await;
    assert_eq!(
        frames(&mut sub, 1).await,
        [texts(&["psubscribe", pattern, "3"])]
    );
    assert!(sub
        .cmd(&["GET", "x"])
        .await
        .is_err("ERR Can't execute 'get'"));
    assert_eq!(sub.cmd(&["PING"]).await, V::Arr(vec![s("pong"), s("")]));

    tracing::info!("--- DEL on node 2 of keys in every group: a del notification for each");
    let keys: Vec<String> = (0..8).map(|i| format!("sess:{i}")).collect();
    for k in &keys {
        assert_eq!(w.cmd(&["SET", k, "v"]).await, s("OK"));
    }
    let mut command = vec!["DEL"];
    command.extend(keys.iter().map(String::as_str));
    assert_eq!(w.cmd(&command).await, V::Int(8));
    let mut got = frames(&mut sub, 16).await;
    got.sort();
    let mut want: Vec<Vec<String>> = keys
        .iter()
        .flat_map(|k| {
            let channel = format!("__keyspace@0__:{k}");
            [
                texts(&["message", del, k.as_str()]),
                texts(&["pmessage", pattern, channel.as_str(), "del"]),
            ]
        })
        .collect();
    want.sort();
    assert_eq!(got, want);

    tracing::info!("--- SET PX 300, never read: an expired notification once it expires");
    let start = Instant::now();
    assert_eq!(w.cmd(&["SET", "sess:x", "v", "PX", "300"]).await, s("OK"));
    let got = frames(&mut sub, 2).await;
    assert!(start.elapsed() >= Duration::from_millis(300), "{got:?}");
    assert_eq!(
        got,
        [
            texts(&["pmessage", pattern, "__keyspace@0__:sess:x", "expired"]),
            texts(&["message", expired, "sess:x"])
        ]
    );

    tracing::info!("--- unsubscribing from everything leaves subscribed mode");
    sub.send_raw(&encode(&["UNSUBSCRIBE"])).await;
    assert_eq!(
        frames(&mut sub, 2).await,
        [
            texts(&["unsubscribe", del, "2"]),
            texts(&["unsubscribe", expired, "1"])
        ]
    );
    sub.send_raw(&encode(&["PUNSUBSCRIBE"])).await;
    assert_eq!(
        frames(&mut sub, 1).await,
        [texts(&["punsubscribe", pattern, "0"])]
    );
    assert_eq!(sub.cmd(&["GET", "sess:x"]).await, V::Nil);

    tracing::info!("--- RESP3: push frames, and any command while subscribed");
    let mut sub3 = Conn::open(&c.redis[2]).await;
    sub3.resp3 = true;
    assert!(matches!(sub3.cmd(&["HELLO", "3"]).await, V::Map(_)));
    sub3.send_raw(&encode(&["SUBSCRIBE", del])).await;
    assert_eq!(
        frames(&mut sub3, 1).await,
        [texts(&["subscribe", del, "1"])]
    );
    assert_eq!(sub3.cmd(&["PING"]).await, s("PONG"));
    assert_eq!(sub3.cmd(&["SET", "sess:3", "v"]).await, s("OK"));
    sub3.send_raw(&encode(&["DEL", "sess:3"])).await;
    // The DEL's reply and the notification may come in either order.
    let mut both = vec![
        sub3.reply().await.expect("a reply"),
        sub3.reply().await.expect("a notification"),
    ];
    both.sort_by_key(|v| matches!(v, V::Arr(_)));
    assert_eq!(
        both,
        [V::Int(1), V::Arr(vec![s("message"), s(del), s("sess:3")])]
    );
}
