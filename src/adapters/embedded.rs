//! One switch between connecting to a running cluster and running a node inside the app.
//!
//! ```no_run
//! # async fn demo() -> steadfast::error::Result<()> {
//! use steadfast::adapters::{Backend, Steadfast};
//!
//! let backend = if let Ok(endpoints) = std::env::var("STEADFAST_ENDPOINTS") {
//!     Backend::connect(endpoints.split(',').map(str::to_string).collect())
//! } else {
//!     let toml = std::fs::read_to_string("node.toml")?;
//!     Backend::Embedded { node: steadfast::config::NodeConfig::from_toml(&toml)? }
//! };
//! let store = Steadfast::start(backend).await?;
//! let client = store.client().clone(); // hand it to a session layer or store
//! # let _ = client;
//! store.shutdown().await;
//! # Ok(()) }
//! ```
//!
//! An embedded node is a full cluster member: with `peers` naming other app instances (each
//! embedding its own node) the app *is* the cluster; with a single peer it is a one-node cluster
//! (durable on disk, but not replicated). The bootstrap rule is the one `steadfast serve` uses:
//! a node whose data directory is new initializes the groups it is first replica of; a node
//! restarted on old data only rejoins. A node that lost its disk must not come back under its
//! old id (see ARCHITECTURE.md).

use std::sync::Arc;

use crate::client::{Client, ClientConfig};
use crate::clock::SystemClock;
use crate::config::NodeConfig;
use crate::error::{Error, Result};
use crate::node::{Node, NodeOptions};
use crate::raft::backend::SledBackend;
use crate::tls::{self, Tls};

/// Where an app's sessions live.
#[derive(Clone, Debug)]
#[allow(
    clippy::large_enum_variant,
    reason = "built once at startup; boxing would only make the literal noisier"
)]
pub enum Backend {
    /// An existing cluster, reached over TCP at any of `endpoints`.
    Connect {
        /// Node addresses (`host:port`); the rest of the cluster is learned from them.
        endpoints: Vec<String>,
    },
    /// A node started inside this process (it listens on `node.listen` for its peers).
    Embedded {
        /// The node's configuration, as `steadfast serve` would read it.
        node: NodeConfig,
    },
}

impl Backend {
    /// [`Backend::Connect`] to `endpoints`.
    pub fn connect(endpoints: Vec<String>) -> Self {
        Backend::Connect { endpoints }
    }
}

/// A client, and the in-process node behind it when embedded.
pub struct Steadfast {
    client: Client,
    node: Option<Node>,
}

impl std::fmt::Debug for Steadfast {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Steadfast")
            .field("client_id", &self.client.client_id())
            .field("embedded_node", &self.node.as_ref().map(Node::id))
            .finish()
    }
}

impl Steadfast {
    /// Starts the backend with default client settings.
    pub async fn start(backend: Backend) -> Result<Steadfast> {
        Self::start_with(backend, ClientConfig::new(Vec::new())).await
    }

    /// Starts the backend; `client` supplies timeouts and the client id (its endpoints are
    /// replaced by the backend's).
    pub async fn start_with(backend: Backend, mut client: ClientConfig) -> Result<Steadfast> {
        match backend {
            Backend::Connect { endpoints } => {
                client.endpoints = endpoints;
                Ok(Steadfast {
                    client: Client::connect(client).await?,
                    node: None,
                })
            }
            Backend::Embedded { node: config } => {
                config.validate()?;
                // Everything that can fail on a bad setting (TLS files, the port) runs before
                // the storage is created: a first start that fails after creating it would make
                // the next start look like a restart and never initialize the groups.
                let tls = config.tls.as_ref().map(Tls::load).transpose()?;
                let (connector, listener) = tls::bind(&config.listen, tls.as_ref()).await?;
                let identity = crate::identity::establish(crate::identity::StartIdentity {
                    config: &config,
                    cluster_id: None,
                    join: false,
                    connector: connector.clone(),
                })
                .await?;
                let fresh = !config.data_dir.join("sled").exists();
                std::fs::create_dir_all(&config.data_dir)?;
                let dir = config.data_dir.clone();
                let backend = tokio::task::spawn_blocking(move || SledBackend::open(&dir))
                    .await
                    .map_err(std::io::Error::other)??;
                if client.tls.is_none() {
                    // The node's own identity serves as the in-process client's.
                    client.tls = tls;
                }
                // Our own advertised address first, then the peers.
                let own = config
                    .peers
                    .iter()
                    .find(|p| p.id == config.id)
                    .map(|p| p.addr.clone())
                    .ok_or_else(|| Error::Config("node id is not among the peers".into()))?;
                let mut endpoints = vec![own.clone()];
                endpoints.extend(
                    config
                        .peers
                        .iter()
                        .filter(|p| p.addr != own)
                        .map(|p| p.addr.clone()),
                );
                let node = Node::start(NodeOptions {
                    config,
                    backend: Arc::new(backend),
                    clock: Arc::new(SystemClock),
                    connector,
                    listener,
                    bootstrap: fresh,
                    cluster_id: identity.cluster_id,
                })
                .await?;
                client.endpoints = endpoints;
                match Client::connect(client).await {
                    Ok(client) => Ok(Steadfast {
                        client,
                        node: Some(node),
                    }),
                    Err(e) => {
                        node.shutdown().await;
                        Err(e)
                    }
                }
            }
        }
    }

    /// The client to hand to a session layer or store.
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// The in-process node, when embedded.
    pub fn node(&self) -> Option<&Node> {
        self.node.as_ref()
    }

    /// Stops the in-process node, if any (a connected backend has nothing to stop).
    pub async fn shutdown(self) {
        if let Some(node) = self.node {
            node.shutdown().await;
        }
    }
}
