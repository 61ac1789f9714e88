//! Mutual TLS on the data port (rustls with the `ring` provider).
//!
//! One port carries Raft traffic between nodes and client calls, so one rule covers both: every
//! connection, in either direction, presents a certificate chained to the cluster CA and checks
//! the other side's. A node's certificate must name the host its peers and clients dial (DNS name
//! or IP address in the subject alternative names); a client certificate needs no particular name.
//! A node or client of another cluster (another CA) is refused during the handshake, before a
//! single frame is read.
//!
//! [`Tls::connector`] and [`Tls::listener`] plug into the same [`Connector`] and [`Listener`] seams
//! the plain TCP and simulated transports use, so nothing above the byte stream changes. The
//! listener runs handshakes in their own tasks under a deadline: a client that connects and says
//! nothing holds a socket for at most [`HANDSHAKE_TIMEOUT`], never the accept loop.
//!
//! [`DevPki`] makes a throwaway CA with node and client certificates (`steadfast certs`, tests).

use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use rustls::server::WebPkiClientVerifier;
use rustls::{ClientConfig, RootCertStore, ServerConfig};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;
use tracing::{debug, warn};

use crate::future::BoxFuture;
use crate::transport::{BoxStream, Connector, Listener, TcpConnector};

/// A PEM file larger than this is refused before it is read (a chain of a few certificates is a
/// few KiB).
pub const PEM_FILE_BYTES_MAX: u64 = 1024 * 1024;

/// How long an accepted connection may take to finish its TLS handshake.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Connections whose handshake finished but that `accept` has not taken yet.
const ACCEPTED_QUEUE: usize = 128;

/// Handshakes in progress at once. Beyond this, new TCP connections are closed at once, so a
/// flood of unauthenticated connections costs a bounded number of sockets.
pub const HANDSHAKES_INFLIGHT_MAX: usize = 256;

/// Prometheus counter of refused or timed-out handshakes, by `reason`.
pub const METRIC_HANDSHAKES_FAILED: &str = "steadfast_tls_handshakes_failed_total";

/// The files [`DevPki::write_to`] writes (`ca.pem` last, so its presence means the set is whole).
pub const DEV_PKI_FILES: [&str; 6] = [
    "ca-key.pem",
    "node.pem",
    "node-key.pem",
    "client.pem",
    "client-key.pem",
    "ca.pem",
];

/// Where the PEM files are: the `[tls]` section of a node's config, or a client's flags.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsFiles {
    /// This node's (or client's) certificate chain, leaf first.
    pub cert: PathBuf,
    /// Its private key (PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
    /// The cluster CA: peers must chain to it.
    pub ca: PathBuf,
}

/// Why TLS could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A file could not be read.
    #[error("reading {path}: {source}")]
    Read {
        /// Which file.
        path: PathBuf,
        /// Why.
        source: io::Error,
    },
    /// A file is larger than [`PEM_FILE_BYTES_MAX`].
    #[error("{path} is {bytes} bytes; a PEM file may have at most {PEM_FILE_BYTES_MAX}")]
    TooLarge {
        /// Which file.
        path: PathBuf,
        /// Its size.
        bytes: u64,
    },
    /// A PEM file did not hold what it should.
    #[error("{what}: {detail}")]
    Pem {
        /// Which input (a path, or "certificate", "key", "CA").
        what: String,
        /// What is wrong.
        detail: String,
    },
    /// rustls refused the material (a key that does not match its certificate, a bad CA).
    #[error("TLS setup: {0}")]
    Rustls(#[from] rustls::Error),
    /// The client-certificate verifier could not be built from the CA.
    #[error("TLS client verifier: {0}")]
    Verifier(#[from] rustls::server::VerifierBuilderError),
    /// Certificate generation failed.
    #[error("generating certificates: {0}")]
    Generate(#[from] rcgen::Error),
}

/// Loaded TLS material: the server side (accepting, client certificate required) and the client
/// side (dialing, presenting this certificate) of one identity.
#[derive(Clone, Debug)]
pub struct Tls {
    server: Arc<ServerConfig>,
    client: Arc<ClientConfig>,
}

impl Tls {
    /// Loads the PEM files.
    pub fn load(files: &TlsFiles) -> Result<Tls, TlsError> {
        let cert = read_pem_file(&files.cert)?;
        let key = read_pem_file(&files.key)?;
        let ca = read_pem_file(&files.ca)?;
        Self::from_pem_named(
            (&cert, &files.cert.display().to_string()),
            (&key, &files.key.display().to_string()),
            (&ca, &files.ca.display().to_string()),
        )
    }

    /// Builds from PEM text already in memory.
    pub fn from_pem(cert: &[u8], key: &[u8], ca: &[u8]) -> Result<Tls, TlsError> {
        Self::from_pem_named((cert, "certificate"), (key, "key"), (ca, "CA"))
    }

    fn from_pem_named(
        (cert, cert_name): (&[u8], &str),
        (key, key_name): (&[u8], &str),
        (ca, ca_name): (&[u8], &str),
    ) -> Result<Tls, TlsError> {
        let chain = certificates(cert, cert_name)?;
        let key = PrivateKeyDer::from_pem_slice(key).map_err(|e| TlsError::Pem {
            what: key_name.to_string(),
            detail: format!("no usable private key ({e})"),
        })?;
        let mut roots = RootCertStore::empty();
        for c in certificates(ca, ca_name)? {
            roots.add(c)?;
        }
        let roots = Arc::new(roots);
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let verifier =
            WebPkiClientVerifier::builder_with_provider(roots.clone(), provider.clone()).build()?;
        let server = ServerConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()?
            .with_client_cert_verifier(verifier)
            .with_single_cert(chain.clone(), key.clone_key())?;
        let client = ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()?
            .with_root_certificates(roots)
            .with_client_auth_cert(chain, key)?;
        Ok(Tls {
            server: Arc::new(server),
            client: Arc::new(client),
        })
    }

    /// Dials with TCP, then does the TLS handshake as a client presenting this identity.
    pub fn connector(&self) -> TlsConnector {
        TlsConnector {
            inner: tokio_rustls::TlsConnector::from(self.client.clone()),
        }
    }

    /// Accepts TCP connections from `listener` and hands out those that complete a handshake with
    /// a certificate chained to the CA. Fails outside a tokio runtime.
    pub fn listener(&self, listener: tokio::net::TcpListener) -> io::Result<TlsListener> {
        let runtime = tokio::runtime::Handle::try_current().map_err(io::Error::other)?;
        let acceptor = tokio_rustls::TlsAcceptor::from(self.server.clone());
        let (tx, rx) = mpsc::channel(ACCEPTED_QUEUE);
        let task = runtime.spawn(accept_loop(listener, acceptor, tx));
        Ok(TlsListener {
            rx,
            task: task.abort_handle(),
        })
    }
}

/// Binds the data port at `listen` and picks the matching connector for dialing peers: mutual
/// TLS as `tls`, or plain TCP when `None`.
pub async fn bind(
    listen: &str,
    tls: Option<&Tls>,
) -> io::Result<(Arc<dyn Connector>, Box<dyn Listener>)> {
    let tcp = tokio::net::TcpListener::bind(listen).await?;
    Ok(match tls {
        Some(tls) => (Arc::new(tls.connector()), Box::new(tls.listener(tcp)?)),
        None => (Arc::new(TcpConnector), Box::new(tcp)),
    })
}

fn read_pem_file(path: &Path) -> Result<Vec<u8>, TlsError> {
    let read = |source| TlsError::Read {
        path: path.to_path_buf(),
        source,
    };
    let bytes = std::fs::metadata(path).map_err(read)?.len();
    if bytes > PEM_FILE_BYTES_MAX {
        return Err(TlsError::TooLarge {
            path: path.to_path_buf(),
            bytes,
        });
    }
    std::fs::read(path).map_err(read)
}

fn certificates(pem: &[u8], what: &str) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsError::Pem {
            what: what.to_string(),
            detail: e.to_string(),
        })?;
    if certs.is_empty() {
        return Err(TlsError::Pem {
            what: what.to_string(),
            detail: "no certificate in it".into(),
        });
    }
    Ok(certs)
}

/// A [`Connector`] that speaks TLS over TCP.
#[derive(Clone)]
pub struct TlsConnector {
    inner: tokio_rustls::TlsConnector,
}

impl Connector for TlsConnector {
    fn connect(&self, addr: &str) -> BoxFuture<'_, io::Result<BoxStream>> {
        let addr = addr.to_string();
        Box::pin(async move {
            let name = server_name(&addr)?;
            let tcp = TcpConnector::connect_tcp(&addr).await?;
            let tls = self.inner.connect(name, tcp).await?;
            Ok(Box::new(tls) as BoxStream)
        })
    }
}

/// The name a certificate must carry to be the server at `addr` ("host:port", "[v6]:port").
fn server_name(addr: &str) -> io::Result<ServerName<'static>> {
    let host = match addr.rsplit_once(':') {
        Some((host, port)) if port.parse::<u16>().is_ok() => host,
        _ => addr,
    };
    let host = host.trim_start_matches('[').trim_end_matches(']');
    ServerName::try_from(host.to_string()).map_err(|e| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{addr:?} has no host name a certificate can match: {e}"),
        )
    })
}

/// A [`Listener`] whose streams have completed a mutual-TLS handshake.
pub struct TlsListener {
    rx: mpsc::Receiver<BoxStream>,
    task: tokio::task::AbortHandle,
}

impl Drop for TlsListener {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Listener for TlsListener {
    fn accept(&mut self) -> BoxFuture<'_, io::Result<BoxStream>> {
        Box::pin(async move {
            self.rx
                .recv()
                .await
                .ok_or_else(|| io::Error::other("TLS accept loop stopped"))
        })
    }
}

/// Accepts TCP connections and runs each handshake in its own task (at most
/// [`HANDSHAKES_INFLIGHT_MAX`] at once, each under [`HANDSHAKE_TIMEOUT`]). The tasks live in a
/// `JoinSet` owned here, so dropping the listener (which aborts this loop) ends them too.
async fn accept_loop(
    listener: tokio::net::TcpListener,
    acceptor: tokio_rustls::TlsAcceptor,
    tx: mpsc::Sender<BoxStream>,
) {
    let slots = Arc::new(tokio::sync::Semaphore::new(HANDSHAKES_INFLIGHT_MAX));
    let mut handshakes = tokio::task::JoinSet::new();
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            Some(_) = handshakes.join_next(), if !handshakes.is_empty() => continue,
        };
        let (tcp, from) = match accepted {
            Ok(accepted) => accepted,
            Err(e) => {
                warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            metrics::counter!(METRIC_HANDSHAKES_FAILED, "reason" => "busy").increment(1);
            debug!(%from, "too many TLS handshakes in progress; closing");
            continue;
        };
        if let Err(e) = tcp.set_nodelay(true) {
            debug!(error = %e, "set_nodelay");
        }
        let acceptor = acceptor.clone();
        let tx = tx.clone();
        handshakes.spawn(async move {
            // Failures are logged at debug (a port scanner would flood warn) and counted.
            match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                Ok(Ok(tls)) => {
                    drop(slot);
                    let _ = tx.send(Box::new(tls) as BoxStream).await;
                }
                Ok(Err(e)) => {
                    metrics::counter!(METRIC_HANDSHAKES_FAILED, "reason" => "refused").increment(1);
                    debug!(%from, error = %e, "TLS handshake refused");
                }
                Err(_) => {
                    metrics::counter!(METRIC_HANDSHAKES_FAILED, "reason" => "timeout").increment(1);
                    debug!(%from, "TLS handshake timed out");
                }
            }
        });
    }
}

/// A throwaway public-key infrastructure for development and tests: a CA, one node certificate
/// valid for every host given, and one client certificate, all as PEM text.
#[derive(Clone, Debug)]
pub struct DevPki {
    /// The CA certificate (`ca.pem`): every node and client trusts it.
    pub ca_cert: String,
    /// The CA's private key (`ca-key.pem`): keep it offline; it signs new certificates.
    pub ca_key: String,
    /// The node certificate (`node.pem`), valid for the hosts given.
    pub node_cert: String,
    /// Its key (`node-key.pem`).
    pub node_key: String,
    /// A client certificate (`client.pem`) for app servers, `ctl` and `bench`.
    pub client_cert: String,
    /// Its key (`client-key.pem`).
    pub client_key: String,
}

impl DevPki {
    /// Generates fresh keys and certificates valid from `not_before` to `not_after`; the node
    /// certificate names every entry of `hosts` (DNS names or IP addresses).
    pub fn generate(
        cluster: &str,
        hosts: &[String],
        not_before: time::OffsetDateTime,
        not_after: time::OffsetDateTime,
    ) -> Result<DevPki, TlsError> {
        use rcgen::{
            BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer,
            KeyPair, KeyUsagePurpose,
        };
        let mut ca = CertificateParams::new(Vec::<String>::new())?;
        ca.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        ca.distinguished_name
            .push(DnType::CommonName, format!("steadfast CA {cluster}"));
        ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        ca.not_before = not_before;
        ca.not_after = not_after;
        let ca_key = KeyPair::generate()?;
        let ca_cert = ca.self_signed(&ca_key)?;
        let issuer = Issuer::new(ca, ca_key);

        let leaf = |sans: Vec<String>,
                    name: String,
                    usage: Vec<ExtendedKeyUsagePurpose>|
         -> Result<(String, String), TlsError> {
            let mut params = CertificateParams::new(sans)?;
            params.distinguished_name.push(DnType::CommonName, name);
            params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
            params.extended_key_usages = usage;
            params.use_authority_key_identifier_extension = true;
            params.not_before = not_before;
            params.not_after = not_after;
            let key = KeyPair::generate()?;
            let cert = params.signed_by(&key, &issuer)?;
            Ok((cert.pem(), key.serialize_pem()))
        };
        // A node is a server to its peers and clients, and a client when it dials a peer.
        let (node_cert, node_key) = leaf(
            hosts.to_vec(),
            format!("steadfast node {cluster}"),
            vec![
                ExtendedKeyUsagePurpose::ServerAuth,
                ExtendedKeyUsagePurpose::ClientAuth,
            ],
        )?;
        let (client_cert, client_key) = leaf(
            Vec::new(),
            format!("steadfast client {cluster}"),
            vec![ExtendedKeyUsagePurpose::ClientAuth],
        )?;
        Ok(DevPki {
            ca_cert: ca_cert.pem(),
            ca_key: issuer.key().serialize_pem(),
            node_cert,
            node_key,
            client_cert,
            client_key,
        })
    }

    /// Writes the six PEM files into `dir` (keys readable by the owner only) and returns the
    /// node's and the client's [`TlsFiles`].
    pub fn write_to(&self, dir: &Path) -> io::Result<(TlsFiles, TlsFiles)> {
        std::fs::create_dir_all(dir)?;
        let texts = [
            &self.ca_key,
            &self.node_cert,
            &self.node_key,
            &self.client_cert,
            &self.client_key,
            &self.ca_cert,
        ];
        for (name, text) in DEV_PKI_FILES.iter().zip(texts) {
            write_file(&dir.join(name), text.as_bytes(), name.ends_with("-key.pem"))?;
        }
        std::fs::File::open(dir)?.sync_all()?;
        Ok(Self::files(dir))
    }

    /// The node's and the client's [`TlsFiles`] of a set [`write_to`](Self::write_to) wrote in
    /// `dir`.
    pub fn files(dir: &Path) -> (TlsFiles, TlsFiles) {
        let files = |cert: &str, key: &str| TlsFiles {
            cert: dir.join(cert),
            key: dir.join(key),
            ca: dir.join("ca.pem"),
        };
        (
            files("node.pem", "node-key.pem"),
            files("client.pem", "client-key.pem"),
        )
    }

    /// The node identity, in memory.
    pub fn node(&self) -> Result<Tls, TlsError> {
        Tls::from_pem(
            self.node_cert.as_bytes(),
            self.node_key.as_bytes(),
            self.ca_cert.as_bytes(),
        )
    }

    /// The client identity, in memory.
    pub fn client(&self) -> Result<Tls, TlsError> {
        Tls::from_pem(
            self.client_cert.as_bytes(),
            self.client_key.as_bytes(),
            self.ca_cert.as_bytes(),
        )
    }
}

fn write_file(path: &Path, bytes: &[u8], secret: bool) -> io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    if secret {
        options.mode(0o600);
    }
    let mut file = options.open(path)?;
    if secret {
        // `mode` applies only to a file this call creates; an existing one keeps its own.
        file.set_permissions(std::fs::Permissions::from_mode(0o600))?;
    }
    file.write_all(bytes)?;
    file.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_names_come_from_the_host_part() {
        assert_eq!(
            server_name("10.0.0.2:7000").unwrap(),
            ServerName::try_from("10.0.0.2").unwrap()
        );
        assert_eq!(
            server_name("[::1]:7000").unwrap(),
            ServerName::try_from("::1").unwrap()
        );
        assert_eq!(
            server_name("node-1.internal:7000").unwrap(),
            ServerName::try_from("node-1.internal").unwrap()
        );
        assert!(server_name("bad host:7000").is_err());
    }

    #[test]
    fn bad_material_is_a_clear_error() {
        let pki = DevPki::generate(
            "t",
            &["127.0.0.1".into()],
            time::OffsetDateTime::UNIX_EPOCH,
            time::OffsetDateTime::UNIX_EPOCH + time::Duration::days(365 * 100),
        )
        .expect("pki");
        assert!(pki.node().is_ok());
        let err = Tls::from_pem(b"", pki.node_key.as_bytes(), pki.ca_cert.as_bytes()).unwrap_err();
        assert!(err.to_string().contains("no certificate"), "{err}");
        let err =
            Tls::from_pem(pki.node_cert.as_bytes(), b"junk", pki.ca_cert.as_bytes()).unwrap_err();
        assert!(err.to_string().contains("private key"), "{err}");
        // The client's key does not match the node's certificate.
        let err = Tls::from_pem(
            pki.node_cert.as_bytes(),
            pki.client_key.as_bytes(),
            pki.ca_cert.as_bytes(),
        )
        .unwrap_err();
        assert!(matches!(err, TlsError::Rustls(_)), "{err}");
        let dir = tempfile::tempdir().expect("dir");
        let big = dir.path().join("big.pem");
        std::fs::write(&big, vec![b'a'; PEM_FILE_BYTES_MAX as usize + 1]).expect("write");
        let files = TlsFiles {
            cert: big.clone(),
            key: big.clone(),
            ca: big,
        };
        assert!(matches!(
            Tls::load(&files).unwrap_err(),
            TlsError::TooLarge { .. }
        ));
    }
}
