//! Where a running cluster is and how to reach it: the flags `ctl` and `bench` share.

use std::path::PathBuf;

use clap::Args;
use steadfast::client::ClientConfig;
use steadfast::identity::ClusterId;
use steadfast::tls::{Tls, TlsFiles};

/// Where a running cluster is: shared by `ctl` and `bench`.
#[derive(Args, Debug)]
pub struct Endpoints {
    /// Cluster endpoints, comma separated.
    #[arg(
        long = "endpoints",
        env = "STEADFAST_ENDPOINTS",
        value_delimiter = ',',
        default_value = "127.0.0.1:7001,127.0.0.1:7002,127.0.0.1:7003"
    )]
    pub list: Vec<String>,
    /// Refuse nodes of any other cluster (default: the first node's cluster).
    #[arg(long, env = "STEADFAST_CLUSTER_ID")]
    pub cluster_id: Option<ClusterId>,
    /// Mutual TLS: this client's certificate (PEM).
    #[arg(long, env = "STEADFAST_TLS_CERT", requires_all = ["tls_key", "tls_ca"])]
    pub tls_cert: Option<PathBuf>,
    /// This client's private key (PEM).
    #[arg(long, env = "STEADFAST_TLS_KEY", requires_all = ["tls_cert", "tls_ca"])]
    pub tls_key: Option<PathBuf>,
    /// The cluster CA (PEM).
    #[arg(long, env = "STEADFAST_TLS_CA", requires_all = ["tls_cert", "tls_key"])]
    pub tls_ca: Option<PathBuf>,
}

impl Endpoints {
    /// Client settings for these endpoints, with TLS when configured.
    pub fn client_config(&self) -> anyhow::Result<ClientConfig> {
        let mut config = ClientConfig::new(self.list.clone());
        config.cluster_id = self.cluster_id.clone();
        config.fail_fast = true;
        Ok(match (&self.tls_cert, &self.tls_key, &self.tls_ca) {
            (Some(cert), Some(key), Some(ca)) => config.with_tls(Tls::load(&TlsFiles {
                cert: cert.clone(),
                key: key.clone(),
                ca: ca.clone(),
            })?),
            _ => config,
        })
    }
}
