//! Framed, multiplexed connections, generic over the byte stream.
//!
//! [`Pool`] keeps one connection per remote address and matches responses to requests by id, so
//! every group's Raft traffic and every client call to that node share one socket. [`serve`]
//! accepts connections and answers each request in its own task, so a slow group does not block
//! the others.
//!
//! **Every call has a deadline.** A missed deadline tears the connection down: a stream that lost
//! a segment (simulated networks never retransmit) would otherwise be wedged forever, and the
//! next call reconnects.
//!
//! **Every connection opens with a hello** naming the caller's cluster ([`Hello`]). A node
//! refuses a hello of another cluster (and closes the connection), and answers Raft traffic
//! only on connections whose hello named its own cluster; a client's pool learns the cluster id
//! from its first welcome and insists on it afterwards. The stream types are behind [`Connector`] and [`Listener`] so the same
//! code runs over tokio TCP and over a simulated network.

use std::collections::BTreeMap;
use std::io;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::{mpsc, oneshot, Semaphore};
use tokio_util::codec::{FramedRead, FramedWrite, LengthDelimitedCodec, LengthDelimitedCodecError};
use tracing::{debug, warn};

use crate::future::BoxFuture;
use crate::id::{GroupId, NodeId};
use crate::identity::ClusterId;
use crate::limits;
use crate::wire::{self, Hello, Kind, RequestBody, ResponseBody, WireError};

/// A bidirectional byte stream.
pub trait Stream: AsyncRead + AsyncWrite + Send + Unpin + 'static {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin + 'static> Stream for T {}

/// A boxed stream.
pub type BoxStream = Box<dyn Stream>;

/// Opens streams to addresses.
pub trait Connector: Send + Sync + 'static {
    /// Connects to `addr`.
    fn connect(&self, addr: &str) -> BoxFuture<'_, io::Result<BoxStream>>;
}

/// Accepts streams.
pub trait Listener: Send + 'static {
    /// Waits for the next connection.
    fn accept(&mut self) -> BoxFuture<'_, io::Result<BoxStream>>;
}

/// tokio TCP.
#[derive(Debug, Default, Clone, Copy)]
pub struct TcpConnector;

impl TcpConnector {
    /// A TCP connection to `addr` with Nagle's algorithm off.
    pub async fn connect_tcp(addr: &str) -> io::Result<tokio::net::TcpStream> {
        let s = tokio::net::TcpStream::connect(addr).await?;
        s.set_nodelay(true)?;
        Ok(s)
    }
}

impl Connector for TcpConnector {
    fn connect(&self, addr: &str) -> BoxFuture<'_, io::Result<BoxStream>> {
        let addr = addr.to_string();
        Box::pin(async move { Ok(Box::new(Self::connect_tcp(&addr).await?) as BoxStream) })
    }
}

impl Listener for tokio::net::TcpListener {
    fn accept(&mut self) -> BoxFuture<'_, io::Result<BoxStream>> {
        Box::pin(async move {
            let (s, _) = tokio::net::TcpListener::accept(self).await?;
            s.set_nodelay(true)?;
            Ok(Box::new(s) as BoxStream)
        })
    }
}

fn codec() -> LengthDelimitedCodec {
    LengthDelimitedCodec::builder()
        .max_frame_length(limits::FRAME_BYTES_MAX)
        .new_codec()
}

/// Why a call did not get an answer.
#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    /// Could not connect.
    #[error("connect to {addr}: {source}")]
    Connect {
        /// Where.
        addr: String,
        /// Why.
        source: io::Error,
    },
    /// No answer before the deadline; the request may or may not have been processed.
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    /// The connection closed before the answer; the request may or may not have been processed.
    #[error("connection closed")]
    Closed,
    /// The answer did not decode.
    #[error("bad response: {0}")]
    BadResponse(WireError),
    /// The other side broke the connection off before welcoming it: it refused this client's
    /// TLS certificate (or spoke TLS where we did not). Definite, do not retry.
    #[error("{addr} broke off the connection: {reason}")]
    Rejected {
        /// Where.
        addr: String,
        /// What the stream reported.
        reason: String,
    },
    /// The other side answered with something that is not steadfast's protocol.
    #[error("{addr} is not a steadfast node ({detail})")]
    NotSteadfast {
        /// Where.
        addr: String,
        /// What it sent.
        detail: String,
    },
    /// The node refused the connection's hello (another cluster): definite, do not retry.
    #[error("{addr} refused the connection: {reason}")]
    Refused {
        /// Where.
        addr: String,
        /// Why.
        reason: WireError,
    },
}

type Pending = Arc<Mutex<BTreeMap<u64, oneshot::Sender<Bytes>>>>;

struct Conn {
    /// Frames to write.
    tx: mpsc::UnboundedSender<Bytes>,
    /// Callers waiting for responses, by request id.
    pending: Pending,
    /// Set by the reader when the stream ends, so the pool reconnects.
    closed: Arc<std::sync::atomic::AtomicBool>,
    /// The read error that ended the stream, if one did (a TLS alert, a frame that is not ours).
    failure: Arc<Mutex<Option<io::Error>>>,
    /// Reader and writer tasks, aborted when the connection is torn down.
    tasks: Vec<tokio::task::AbortHandle>,
}

impl Drop for Conn {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

/// A connection slot: locked while connecting so concurrent callers share one connection.
type Slot = Arc<tokio::sync::Mutex<Option<Arc<Conn>>>>;

/// One connection per remote address, shared by every caller.
#[derive(Clone)]
pub struct Pool {
    connector: Arc<dyn Connector>,
    conns: Arc<Mutex<BTreeMap<String, Slot>>>,
    next_id: Arc<AtomicU64>,
    /// What every new connection opens with. A client's pool starts without a cluster id and
    /// keeps the first one a node welcomes it with, so every later connection (to any node)
    /// must be of that same cluster.
    hello: Arc<Mutex<Hello>>,
}

impl Pool {
    /// A client's pool connecting through `connector`; it learns the cluster id from the first
    /// node that answers.
    pub fn new(connector: Arc<dyn Connector>) -> Self {
        Self::with_hello(connector, None, None)
    }

    /// A pool whose connections say they are of `cluster_id` (and, for a node, which one).
    pub fn with_hello(
        connector: Arc<dyn Connector>,
        cluster_id: Option<ClusterId>,
        node: Option<NodeId>,
    ) -> Self {
        Pool {
            connector,
            conns: Arc::default(),
            next_id: Arc::new(AtomicU64::new(1)),
            hello: Arc::new(Mutex::new(Hello { cluster_id, node })),
        }
    }

    /// The cluster this pool's connections belong to (configured or learned), if known yet.
    pub fn cluster_id(&self) -> Option<ClusterId> {
        self.hello.lock().expect("hello lock").cluster_id.clone()
    }

    /// Sends `body` to `addr` for `group` and waits up to `timeout` for the answer.
    pub async fn call(
        &self,
        addr: &str,
        group: GroupId,
        body: &RequestBody,
        timeout: Duration,
    ) -> Result<ResponseBody, TransportError> {
        let work = async {
            let conn = self.connection(addr).await?;
            self.exchange(&conn, group, body).await
        };
        match tokio::time::timeout(timeout, work).await {
            Ok(Err(TransportError::Closed)) => {
                self.forget(addr).await;
                Err(TransportError::Closed)
            }
            Ok(r) => r,
            Err(_) => {
                debug!(addr, "call timed out; dropping the connection");
                self.forget(addr).await;
                Err(TransportError::Timeout(timeout))
            }
        }
    }

    /// Sends one request on `conn` and waits for its answer.
    async fn exchange(
        &self,
        conn: &Conn,
        group: GroupId,
        body: &RequestBody,
    ) -> Result<ResponseBody, TransportError> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        conn.pending.lock().expect("pending lock").insert(id, tx);
        let frame = wire::encode(Kind::Request, id, group, body);
        if conn.tx.send(frame).is_err() {
            return Err(TransportError::Closed);
        }
        let reply = rx.await.map_err(|_| TransportError::Closed)?;
        wire::decode_body::<ResponseBody>(&reply).map_err(TransportError::BadResponse)
    }

    /// Opens a connection with its hello; a refusal is definite.
    async fn greet(&self, addr: &str, conn: &Conn) -> Result<(), TransportError> {
        let hello = self.hello.lock().expect("hello lock").clone();
        let refused = |reason| TransportError::Refused {
            addr: addr.to_string(),
            reason,
        };
        let not_steadfast = |detail: String| TransportError::NotSteadfast {
            addr: addr.to_string(),
            detail,
        };
        let answer = match self
            .exchange(conn, GroupId(0), &RequestBody::Hello(hello.clone()))
            .await
        {
            Ok(answer) => answer,
            Err(TransportError::Closed) => {
                return Err(match conn.failure.lock().expect("failure lock").take() {
                    Some(e)
                        if e.get_ref()
                            .is_some_and(|i| i.is::<LengthDelimitedCodecError>()) =>
                    {
                        not_steadfast(format!("it sent bytes that are not our frames: {e}"))
                    }
                    Some(e) => TransportError::Rejected {
                        addr: addr.to_string(),
                        reason: e.to_string(),
                    },
                    None => TransportError::Closed,
                })
            }
            Err(TransportError::BadResponse(e)) => return Err(not_steadfast(e.to_string())),
            Err(e) => return Err(e),
        };
        match answer {
            ResponseBody::Welcome { cluster_id, .. } => match &hello.cluster_id {
                Some(ours) if *ours != cluster_id => Err(refused(WireError::WrongCluster {
                    ours: ours.to_string(),
                    theirs: cluster_id.to_string(),
                })),
                Some(_) => Ok(()),
                None => {
                    let mut h = self.hello.lock().expect("hello lock");
                    match &h.cluster_id {
                        // Another connection learned it first: it must be the same.
                        Some(learned) if *learned != cluster_id => {
                            Err(refused(WireError::WrongCluster {
                                ours: learned.to_string(),
                                theirs: cluster_id.to_string(),
                            }))
                        }
                        _ => {
                            h.cluster_id = Some(cluster_id);
                            Ok(())
                        }
                    }
                }
            },
            ResponseBody::Error(reason @ WireError::WrongCluster { .. }) => Err(refused(reason)),
            other => Err(not_steadfast(format!(
                "it answered a hello with {}",
                response_name(&other)
            ))),
        }
    }

    fn slot(&self, addr: &str) -> Slot {
        self.conns
            .lock()
            .expect("pool lock")
            .entry(addr.to_string())
            .or_default()
            .clone()
    }

    async fn forget(&self, addr: &str) {
        *self.slot(addr).lock().await = None;
    }

    async fn connection(&self, addr: &str) -> Result<Arc<Conn>, TransportError> {
        let slot = self.slot(addr);
        let mut guard = slot.lock().await;
        if let Some(c) = guard.as_ref() {
            if !c.tx.is_closed() && !c.closed.load(Ordering::Acquire) {
                return Ok(c.clone());
            }
        }
        let stream =
            self.connector
                .connect(addr)
                .await
                .map_err(|source| TransportError::Connect {
                    addr: addr.to_string(),
                    source,
                })?;
        let conn = Arc::new(open(stream));
        self.greet(addr, &conn).await?;
        *guard = Some(conn.clone());
        Ok(conn)
    }
}

/// A response's variant name (for errors; never its contents).
fn response_name(body: &ResponseBody) -> &'static str {
    match body {
        ResponseBody::Append(_) => "Append",
        ResponseBody::Vote(_) => "Vote",
        ResponseBody::InstallSnapshot(_) => "InstallSnapshot",
        ResponseBody::Written(_) => "Written",
        ResponseBody::Read(_) => "Read",
        ResponseBody::Status(_) => "Status",
        ResponseBody::Topology(_) => "Topology",
        ResponseBody::Sessions(_) => "Sessions",
        ResponseBody::Events { .. } => "Events",
        ResponseBody::Error(_) => "Error",
        ResponseBody::Membership(_) => "Membership",
        ResponseBody::BackupChunk { .. } => "BackupChunk",
        ResponseBody::Welcome { .. } => "Welcome",
        ResponseBody::RedisKeys { .. } => "RedisKeys",
    }
}

fn open(stream: BoxStream) -> Conn {
    let (read, write) = tokio::io::split(stream);
    let (tx, rx) = mpsc::unbounded_channel::<Bytes>();
    let pending: Pending = Arc::default();
    let writer = tokio::spawn(write_frames(write, rx));
    let waiting = pending.clone();
    let closed = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let reader_closed = closed.clone();
    let failure = Arc::new(Mutex::new(None));
    let reader_failure = failure.clone();
    let reader = tokio::spawn(async move {
        let mut frames = FramedRead::new(read, codec());
        while let Some(next) = frames.next().await {
            let frame = match next {
                Ok(frame) => frame.freeze(),
                Err(e) => {
                    *reader_failure.lock().expect("failure lock") = Some(e);
                    break;
                }
            };
            let Ok(header) = wire::decode_header(&frame) else {
                break;
            };
            if header.kind != Kind::Response {
                break;
            }
            if let Some(tx) = waiting
                .lock()
                .expect("pending lock")
                .remove(&header.request_id)
            {
                let _ = tx.send(frame);
            }
        }
        reader_closed.store(true, Ordering::Release);
        // Dropping every waiter's sender tells them the connection is gone.
        waiting.lock().expect("pending lock").clear();
    });
    Conn {
        tx,
        pending,
        closed,
        failure,
        tasks: vec![writer.abort_handle(), reader.abort_handle()],
    }
}

/// Writes queued frames, flushing once per burst so many frames share one syscall.
async fn write_frames(
    write: tokio::io::WriteHalf<BoxStream>,
    mut rx: mpsc::UnboundedReceiver<Bytes>,
) {
    let mut sink = FramedWrite::new(write, codec());
    while let Some(frame) = rx.recv().await {
        if sink.feed(frame).await.is_err() {
            return;
        }
        while let Ok(more) = rx.try_recv() {
            if sink.feed(more).await.is_err() {
                return;
            }
        }
        if SinkExt::<Bytes>::flush(&mut sink).await.is_err() {
            return;
        }
    }
}

/// Answers requests.
pub trait Handler: Send + Sync + 'static {
    /// Handles one request for `group` (never a [`Hello`]).
    fn handle(&self, group: GroupId, body: RequestBody) -> BoxFuture<'static, ResponseBody>;

    /// Answers a connection's hello: [`ResponseBody::Welcome`] to go on, an error to refuse
    /// (the connection is then closed).
    fn hello(&self, hello: &Hello) -> ResponseBody;

    /// The cluster this handler serves: Raft traffic is accepted only on connections whose
    /// hello named it.
    fn cluster_id(&self) -> &ClusterId;
}

/// Accepts connections forever, answering each request with `handler`.
pub async fn serve(mut listener: Box<dyn Listener>, handler: Arc<dyn Handler>) {
    loop {
        match listener.accept().await {
            Ok(stream) => {
                tokio::spawn(serve_connection(stream, handler.clone()));
            }
            Err(e) => {
                warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    }
}

async fn serve_connection(stream: BoxStream, handler: Arc<dyn Handler>) {
    let (read, write) = tokio::io::split(stream);
    let (tx, rx) = mpsc::unbounded_channel::<Bytes>();
    let writer = tokio::spawn(write_frames(write, rx));
    let inflight = Arc::new(Semaphore::new(limits::CONNECTION_REQUESTS_INFLIGHT_MAX));
    let mut frames = FramedRead::new(read, codec());
    // Whether this connection's hello named our cluster (only then may it carry Raft traffic).
    let mut peer = false;
    while let Some(next) = frames.next().await {
        let frame = match next {
            Ok(f) => f.freeze(),
            Err(e) => {
                debug!(error = %e, "closing connection on a framing error");
                break;
            }
        };
        let header = match wire::decode_header(&frame) {
            Ok(h) => h,
            Err(e) => {
                let _ = tx.send(wire::encode(
                    Kind::Response,
                    0,
                    GroupId(0),
                    &ResponseBody::Error(e),
                ));
                continue;
            }
        };
        let reply = |body: ResponseBody| {
            wire::encode(Kind::Response, header.request_id, header.group, &body)
        };
        if header.version != wire::PROTOCOL_VERSION {
            let e = WireError::ProtocolVersion {
                got: header.version,
                supported: wire::PROTOCOL_VERSION,
            };
            let _ = tx.send(reply(ResponseBody::Error(e)));
            continue;
        }
        if header.kind != Kind::Request {
            let e = WireError::Malformed("expected a request".into());
            let _ = tx.send(reply(ResponseBody::Error(e)));
            continue;
        }
        let body = match wire::decode_body::<RequestBody>(&frame) {
            Ok(b) => b,
            Err(e) => {
                let _ = tx.send(reply(ResponseBody::Error(e)));
                continue;
            }
        };
        let body = match body {
            RequestBody::Hello(hello) => {
                let answer = handler.hello(&hello);
                let refused = matches!(answer, ResponseBody::Error(_));
                let _ = tx.send(reply(answer));
                if refused {
                    break;
                }
                peer = hello.cluster_id.as_ref() == Some(handler.cluster_id());
                continue;
            }
            RequestBody::Raft(_) if !peer => {
                // Raft traffic only from a peer that said it is of this cluster.
                let e = WireError::WrongCluster {
                    ours: handler.cluster_id().to_string(),
                    theirs: "none (no hello naming a cluster)".into(),
                };
                let _ = tx.send(reply(ResponseBody::Error(e)));
                break;
            }
            other => other,
        };
        let Ok(permit) = inflight.clone().acquire_owned().await else {
            break;
        };
        let handler = handler.clone();
        let tx = tx.clone();
        tokio::spawn(async move {
            let response = handler.handle(header.group, body).await;
            let _ = tx.send(wire::encode(
                Kind::Response,
                header.request_id,
                header.group,
                &response,
            ));
            drop(permit);
        });
    }
    drop(tx);
    let _ = writer.await;
}
