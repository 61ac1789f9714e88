//! What the examples share: their command line, their logging and their client.

use steadfast::client::ClientConfig;
use steadfast::tls::{Tls, TlsFiles};

/// The value after `name` on the command line, if given.
pub fn flag(args: &[String], name: &str) -> Option<String> {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1).cloned())
}

/// Logs to stderr, filtered by `RUST_LOG` (default `info`, openraft's chatter off).
pub fn init_tracing() {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "info,openraft=warn".into()),
        )
        .init();
}

/// `--endpoints` (or `STEADFAST_ENDPOINTS`, or the local `up` cluster), with mutual TLS when
/// the `STEADFAST_TLS_*` variables are set.
#[allow(dead_code, reason = "the shop example runs its own node instead")]
pub fn client_config(args: &[String]) -> anyhow::Result<ClientConfig> {
    let endpoints = flag(args, "--endpoints")
        .or_else(|| std::env::var("STEADFAST_ENDPOINTS").ok())
        .unwrap_or_else(|| "127.0.0.1:7001,127.0.0.1:7002,127.0.0.1:7003".into());
    let config = ClientConfig::new(endpoints.split(',').map(str::to_string).collect());
    let var = |name| std::env::var_os(name).map(std::path::PathBuf::from);
    Ok(
        match (
            var("STEADFAST_TLS_CERT"),
            var("STEADFAST_TLS_KEY"),
            var("STEADFAST_TLS_CA"),
        ) {
            (Some(cert), Some(key), Some(ca)) => {
                config.with_tls(Tls::load(&TlsFiles { cert, key, ca })?)
            }
            _ => config,
        },
    )
}
