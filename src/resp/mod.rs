//! A Redis protocol (RESP2/RESP3) listener: every node speaks the subset of Redis that session
//! libraries use, so a framework's Redis session store gets a replicated, linearizable store
//! by changing one URL.
//!
//! - [`codec`]: bounded request decoding and reply encoding.
//! - [`keyspace`]: key name to session id and group (hash tags), SCAN cursors, globs.
//! - [`plan`]: key commands as key operations ([`crate::command::redis::RedisOp`]).
//! - [`exec`]: running them on the cluster through the native [`Client`] (any node serves any
//!   key: the client forwards to the key's group leader and retries under one request id).
//! - [`connection`]: one connection's loop and state; [`info`]: introspection replies.
//! - [`pubsub`]: keyspace notifications (`SUBSCRIBE`/`PSUBSCRIBE`) from the groups' events.
//!
//! The state-machine side (what a key operation does) is `crate::state::redis`.

pub mod codec;
pub mod connection;
pub mod exec;
pub mod info;
pub mod keyspace;
pub mod plan;
pub mod pubsub;

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;

use tokio::io::AsyncWriteExt;
use tokio::task::JoinHandle;

use crate::client::Client;
use crate::limits;
use crate::transport::Listener;

/// How the RESP listener serves.
#[derive(Clone, Debug, Default)]
pub struct RespOptions {
    /// The password `AUTH` wants (user `default`); none = no authentication (and `AUTH` fails).
    pub password: Option<String>,
    /// The namespace whose settings apply ("" = `default`).
    pub namespace: String,
    /// The namespace's `redis_delete_grace_ms` (0 = off).
    pub delete_grace_ms: u64,
}

/// What every connection of one listener shares.
pub struct Shared {
    /// Runs commands on the cluster.
    pub executor: exec::Executor,
    /// The settings.
    pub options: RespOptions,
    /// The listening port (for `INFO`).
    pub port: u16,
    /// Keyspace notifications for subscribed connections.
    pub hub: Arc<pubsub::Hub>,
    open: AtomicUsize,
}

impl Shared {
    /// Connections open now.
    pub fn connections(&self) -> usize {
        self.open.load(Ordering::Relaxed)
    }
}

/// Serves RESP on `listener` (TCP, or mutual TLS when the node's TLS is on) until the task is
/// aborted. `port` is reported by `INFO`.
pub fn spawn(
    mut listener: Box<dyn Listener>,
    port: u16,
    client: Client,
    options: RespOptions,
) -> JoinHandle<()> {
    let hub = pubsub::Hub::new(client.clone());
    let executor = exec::Executor::new(client, options.namespace.clone(), options.delete_grace_ms);
    let shared = Arc::new(Shared {
        executor,
        options,
        port,
        hub,
        open: AtomicUsize::new(0),
    });
    let ids = AtomicU64::new(1);
    tokio::spawn(async move {
        loop {
            let mut stream = match listener.accept().await {
                Ok(s) => s,
                Err(e) => {
                    tracing::debug!(error = %e, "RESP accept failed");
                    continue;
                }
            };
            let id = ids.fetch_add(1, Ordering::Relaxed);
            let shared = shared.clone();
            if shared.open.fetch_add(1, Ordering::AcqRel) >= limits::RESP_CONNECTIONS_MAX {
                shared.open.fetch_sub(1, Ordering::AcqRel);
                tokio::spawn(async move {
                    let _ = stream
                        .write_all(b"-ERR max number of clients reached\r\n")
                        .await;
                });
                continue;
            }
            tokio::spawn(async move {
                connection::serve(stream, shared.clone(), id).await;
                shared.open.fetch_sub(1, Ordering::AcqRel);
            });
        }
    })
}

/// A node's RESP listener, bound (before the node creates its storage, so a taken port fails
/// the start early) and waiting for the node to serve.
pub struct Bound {
    listener: Box<dyn Listener>,
    port: u16,
    client: crate::client::ClientConfig,
    options: RespOptions,
}

/// Binds `config.redis.listen`, with mutual TLS when `tls` is given (the node's own identity,
/// also used by the listener's client to reach the cluster); `None` when no address is set.
pub async fn bind(
    config: &crate::config::NodeConfig,
    tls: Option<&crate::tls::Tls>,
) -> crate::error::Result<Option<Bound>> {
    let Some(addr) = &config.redis.listen else {
        return Ok(None);
    };
    let (_, listener) = crate::tls::bind(addr, tls).await?;
    let port = addr
        .rsplit(':')
        .next()
        .and_then(|p| p.parse().ok())
        .unwrap_or(0);
    // Dial this node as its peers do (a wildcard listen address is no name a certificate has).
    let own = config
        .peers
        .iter()
        .find(|p| p.id == config.id)
        .map_or_else(|| config.listen.clone(), |p| p.addr.clone());
    let mut client = crate::client::ClientConfig::new(vec![own]);
    client.tls = tls.cloned();
    client.namespace = config.redis.namespace.clone();
    let namespace = if config.redis.namespace.is_empty() {
        "default"
    } else {
        config.redis.namespace.as_str()
    };
    let delete_grace_ms = config
        .namespaces
        .get(namespace)
        .and_then(|n| n.redis_delete_grace_ms)
        .unwrap_or(0);
    let options = RespOptions {
        password: config.redis.password.clone(),
        namespace: config.redis.namespace.clone(),
        delete_grace_ms,
    };
    Ok(Some(Bound {
        listener,
        port,
        client,
        options,
    }))
}

impl Bound {
    /// Connects the listener's client to the (started) node and starts serving.
    pub async fn start(self) -> crate::error::Result<JoinHandle<()>> {
        let client = Client::connect(self.client).await?;
        tracing::info!(port = self.port, "RESP (Redis protocol) listening");
        Ok(spawn(self.listener, self.port, client, self.options))
    }
}
