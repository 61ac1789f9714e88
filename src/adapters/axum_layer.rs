//! A native axum/tower session layer: [`SteadfastSessionLayer`] and the [`Session`] extractor.
//!
//! ```no_run
//! # async fn demo(client: steadfast::Client) {
//! use axum::{routing::post, Router};
//! use steadfast::adapters::axum_layer::{Session, SessionError, SteadfastSessionLayer};
//!
//! async fn add(session: Session) -> Result<String, SessionError> {
//!     // Read-modify-write under compare-and-set; re-run on a concurrent change.
//!     let n = session
//!         .update_with_retry(|data| {
//!             let mut basket: Vec<String> = data.get("basket")?.unwrap_or_default();
//!             basket.push("book".into());
//!             data.insert("basket", &basket)?;
//!             Ok(basket.len())
//!         })
//!         .await?;
//!     Ok(format!("{n} items"))
//! }
//!
//! let app: Router = Router::new()
//!     .route("/basket/add", post(add))
//!     .layer(SteadfastSessionLayer::new(client).cookie_name("sid"));
//! # let _ = app;
//! # }
//! ```
//!
//! What it does that the generic framework stores cannot:
//! - **Lazy**: nothing is read unless the handler uses the session; `delete` needs no read.
//! - **Attribute-level deltas**: only the attributes a request changed are written, so two
//!   requests changing different attributes of one session both land.
//! - **Conflicts are never silently lost**: a deferred write is a compare-and-set on the version
//!   the request loaded. If it fails, the layer re-reads; if another request changed one of the
//!   *same* attributes since this request read it, the response becomes `409 Conflict` (or the
//!   handler gets [`SessionError::Conflict`] from [`Session::save`] / immediate mode); otherwise
//!   it retries on the new version (the changes merge). [`Session::overwrite`] opts one attribute
//!   out of the check (last writer wins), [`Session::update_with_retry`] re-runs a closure on
//!   fresh data until its compare-and-set succeeds.
//! - **Deferred or immediate writes** ([`WriteMode`]): one write at the end of the request, only
//!   if something changed (skipped when the handler answered 5xx, like tower-sessions), or one
//!   write per change.
//! - **No resurrection**: a session deleted (logout) or expired while a request ran is not
//!   written again; that request's write fails with [`SessionError::Gone`] (a `409`), and the
//!   cookie is cleared.
//! - **Idle timeout and absolute deadline** are enforced by the cluster on its replicated clock.
//!   A request that only reads extends the idle deadline too: the cluster counts every read as
//!   an access (leaders batch these touches), so no extra write is needed.
//! - **Rotation and login** ([`Session::rotate_id`], [`Session::login`]): a new id, atomically,
//!   the old one dead; with a principal, "log out everywhere"
//!   ([`SteadfastSessionLayer::invalidate_principal`]).
//! - An optional **near cache** ([`SteadfastSessionLayer::near_cache`]), see [`NearCache`].

use std::collections::BTreeMap;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex as StdMutex};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::{Body, Bytes, HttpBody};
use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, HeaderValue, Request, Response, StatusCode};
use axum::response::IntoResponse;
use serde::de::DeserializeOwned;
use serde::Serialize;
use tower::{Layer, Service};

use crate::adapters::{create_options, millis_at_least_one};
use crate::client::{Client, CreateOptions, Update, Written};
use crate::command::Attributes;
use crate::error::Error;
use crate::id::SessionId;
use crate::state::SessionView;

/// Rounds of compare-and-set before giving up on a session that keeps changing.
const CONFLICT_ROUNDS_MAX: usize = 32;

/// The cookie's `SameSite` attribute.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum SameSite {
    /// Sent on same-site requests only.
    Strict,
    /// Also sent on top-level navigations from other sites (the browsers' default).
    #[default]
    Lax,
    /// Sent everywhere; browsers require `Secure` with it.
    None,
}

/// When changes reach the cluster.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum WriteMode {
    /// One write at the end of the request, only if something changed.
    #[default]
    Deferred,
    /// A write for every `insert`/`overwrite`/`remove`, before it returns.
    Immediate,
}

/// Everything the layer can be told.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SessionConfig {
    /// Cookie name.
    pub cookie_name: String,
    /// Cookie `Domain`; host-only when `None`.
    pub cookie_domain: Option<String>,
    /// Cookie `Path`.
    pub cookie_path: String,
    /// Cookie `Secure` (HTTPS only).
    pub secure: bool,
    /// Cookie `HttpOnly` (invisible to scripts).
    pub http_only: bool,
    /// Cookie `SameSite`.
    pub same_site: SameSite,
    /// Cookie `Max-Age`; `None` makes it a browser-session cookie. When set, the cookie is
    /// re-sent whenever the session is used, so it slides with the idle timeout.
    pub max_age: Option<Duration>,
    /// The session ends after this long without a request that uses it.
    pub idle_timeout: Duration,
    /// The session ends this long after it was created, however active (OWASP's absolute
    /// timeout). Rotation keeps the original deadline.
    pub absolute_timeout: Option<Duration>,
    /// Deferred or immediate writes.
    pub write_mode: WriteMode,
}

impl Default for SessionConfig {
    fn default() -> Self {
        SessionConfig {
            cookie_name: "sid".into(),
            cookie_domain: None,
            cookie_path: "/".into(),
            secure: true,
            http_only: true,
            same_site: SameSite::Lax,
            max_age: None,
            idle_timeout: Duration::from_secs(30 * 60),
            absolute_timeout: None,
            write_mode: WriteMode::Deferred,
        }
    }
}

/// Counters, for metrics and tests.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SessionStats {
    /// Sessions read from the cluster.
    pub loads: u64,
    /// Sessions created.
    pub creates: u64,
    /// Successful updates.
    pub writes: u64,
    /// Compare-and-set failures that were retried (different attributes, or a retry closure).
    pub conflicts_retried: u64,
    /// Same-attribute conflicts reported to the handler or as a 409.
    pub conflicts_surfaced: u64,
    /// Sessions deleted.
    pub deletes: u64,
    /// Id rotations.
    pub rotations: u64,
    /// Near-cache reads whose version was still current.
    pub cache_hits: u64,
    /// Near-cache reads that found a newer version or no entry.
    pub cache_misses: u64,
}

#[derive(Debug, Default)]
struct Counters {
    loads: AtomicU64,
    creates: AtomicU64,
    writes: AtomicU64,
    conflicts_retried: AtomicU64,
    conflicts_surfaced: AtomicU64,
    deletes: AtomicU64,
    rotations: AtomicU64,
    cache_hits: AtomicU64,
    cache_misses: AtomicU64,
}

fn bump(c: &AtomicU64) {
    c.fetch_add(1, Ordering::Relaxed);
}

/// An app-side cache of sessions: `(version, attributes)` per id, written through on every write
/// this app makes, bounded (oldest entry evicted first).
///
/// **Entries are validated by version, and validation needs a linearizable read**: the client has
/// no conditional read (`read unless version == v`) yet, so a validated hit still costs the read
/// and its transfer; what it saves is rebuilding the attribute map. It never serves a version the
/// cluster has superseded, so enabling it cannot make a read stale. When the client grows a
/// conditional read, [`NearCache`] is where it plugs in (`Shared::read`) and hits become free.
#[derive(Debug)]
pub struct NearCache {
    capacity: usize,
    inner: StdMutex<CacheInner>,
}

#[derive(Debug, Default)]
struct CacheInner {
    entries: BTreeMap<SessionId, (u64, u64, Arc<Attributes>)>,
    order: BTreeMap<u64, SessionId>,
    next: u64,
}

impl NearCache {
    /// A cache of at most `capacity` sessions.
    pub fn new(capacity: usize) -> Self {
        NearCache {
            capacity: capacity.max(1),
            inner: StdMutex::default(),
        }
    }

    /// The number of cached sessions.
    pub fn len(&self) -> usize {
        self.inner.lock().expect("cache lock").entries.len()
    }

    /// Whether nothing is cached.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn put(&self, id: SessionId, version: u64, attributes: Arc<Attributes>) {
        let mut c = self.inner.lock().expect("cache lock");
        let seq = c.next;
        c.next += 1;
        if let Some((old, _, _)) = c.entries.insert(id, (seq, version, attributes)) {
            c.order.remove(&old);
        }
        c.order.insert(seq, id);
        while c.entries.len() > self.capacity {
            let Some((_, victim)) = c.order.pop_first() else {
                break;
            };
            c.entries.remove(&victim);
        }
    }

    /// The cached attributes if `version` is the cached one.
    fn validated(&self, id: SessionId, version: u64) -> Option<Arc<Attributes>> {
        let c = self.inner.lock().expect("cache lock");
        match c.entries.get(&id) {
            Some((_, v, attrs)) if *v == version => Some(attrs.clone()),
            _ => None,
        }
    }

    fn forget(&self, id: SessionId) {
        let mut c = self.inner.lock().expect("cache lock");
        if let Some((seq, _, _)) = c.entries.remove(&id) {
            c.order.remove(&seq);
        }
    }
}

/// What went wrong with a session, as the handler sees it. `IntoResponse`, so handlers can `?`.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SessionError {
    /// Another request changed this attribute after this request read it; nothing of this
    /// request's pending changes was written. Re-read and retry (409).
    #[error("session attribute {key:?} was changed by a concurrent request")]
    Conflict {
        /// The attribute both changed.
        key: String,
    },
    /// The session was deleted (logout) or expired while this request ran; it is not brought
    /// back (409, and the cookie is cleared).
    #[error("the session ended while this request ran")]
    Gone,
    /// The cluster did not answer before the deadline: the write may or may not have happened
    /// (503). The client already retried it under one request id, so it applies at most once.
    #[error("the session store did not answer in time; the outcome is unknown")]
    Unknown,
    /// A value could not be encoded.
    #[error("encoding session attribute {key:?}: {reason}")]
    Encode {
        /// The attribute.
        key: String,
        /// Why.
        reason: String,
    },
    /// A stored value could not be decoded as the requested type.
    #[error("decoding session attribute {key:?}: {reason}")]
    Decode {
        /// The attribute.
        key: String,
        /// Why.
        reason: String,
    },
    /// Any other store error.
    #[error("session store: {0}")]
    Store(Error),
    /// The handler extracted a `Session` without the layer installed.
    #[error("SteadfastSessionLayer is not installed on this route")]
    MissingLayer,
}

impl SessionError {
    /// The HTTP status this error maps to.
    pub fn status(&self) -> StatusCode {
        match self {
            SessionError::Conflict { .. } | SessionError::Gone => StatusCode::CONFLICT,
            SessionError::Store(Error::LimitReached(_)) => StatusCode::FORBIDDEN,
            SessionError::Unknown
            | SessionError::Store(Error::Unavailable(_) | Error::Timeout | Error::Io(_)) => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            _ => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

impl IntoResponse for SessionError {
    fn into_response(self) -> axum::response::Response {
        let status = self.status();
        if status.is_server_error() {
            tracing::warn!(error = %self, "session error");
        }
        let mut response = (status, format!("{self}\n")).into_response();
        // An error about the session says nothing cacheable.
        response
            .headers_mut()
            .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        response
    }
}

fn store_error(e: Error) -> SessionError {
    match e {
        Error::Timeout => SessionError::Unknown,
        Error::NotFound => SessionError::Gone,
        other => SessionError::Store(other),
    }
}

/// The layer. Clone it freely; clones share settings, counters and the near cache.
#[derive(Clone)]
pub struct SteadfastSessionLayer {
    shared: Arc<Shared>,
}

#[derive(Clone)]
struct Shared {
    client: Client,
    config: SessionConfig,
    cache: Option<Arc<NearCache>>,
    counters: Arc<Counters>,
}

impl fmt::Debug for SteadfastSessionLayer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SteadfastSessionLayer")
            .field("config", &self.shared.config)
            .field("near_cache", &self.shared.cache)
            .finish_non_exhaustive()
    }
}

impl SteadfastSessionLayer {
    /// A layer with default settings (cookie `sid`, `Secure`, `HttpOnly`, `SameSite=Lax`,
    /// 30-minute idle timeout, deferred writes).
    pub fn new(client: Client) -> Self {
        Self::with_config(client, SessionConfig::default())
    }

    /// A layer with `config`.
    pub fn with_config(client: Client, config: SessionConfig) -> Self {
        SteadfastSessionLayer {
            shared: Arc::new(Shared {
                client,
                config,
                cache: None,
                counters: Arc::default(),
            }),
        }
    }

    fn edit(mut self, f: impl FnOnce(&mut Shared)) -> Self {
        f(Arc::make_mut(&mut self.shared));
        self
    }

    /// Cookie name.
    pub fn cookie_name(self, name: impl Into<String>) -> Self {
        let name = name.into();
        self.edit(|s| s.config.cookie_name = name)
    }

    /// Cookie `Domain`.
    pub fn domain(self, domain: impl Into<String>) -> Self {
        let domain = domain.into();
        self.edit(|s| s.config.cookie_domain = Some(domain))
    }

    /// Cookie `Path`.
    pub fn path(self, path: impl Into<String>) -> Self {
        let path = path.into();
        self.edit(|s| s.config.cookie_path = path)
    }

    /// Cookie `Secure`.
    pub fn secure(self, secure: bool) -> Self {
        self.edit(|s| s.config.secure = secure)
    }

    /// Cookie `HttpOnly`.
    pub fn http_only(self, http_only: bool) -> Self {
        self.edit(|s| s.config.http_only = http_only)
    }

    /// Cookie `SameSite`.
    pub fn same_site(self, same_site: SameSite) -> Self {
        self.edit(|s| s.config.same_site = same_site)
    }

    /// Cookie `Max-Age` (a persistent cookie); `None` for a browser-session cookie.
    pub fn max_age(self, max_age: Option<Duration>) -> Self {
        self.edit(|s| s.config.max_age = max_age)
    }

    /// Idle timeout of new sessions.
    pub fn idle_timeout(self, idle: Duration) -> Self {
        self.edit(|s| s.config.idle_timeout = millis_at_least_one(idle))
    }

    /// Absolute deadline of new sessions, counted from creation.
    pub fn absolute_timeout(self, deadline: Option<Duration>) -> Self {
        self.edit(|s| s.config.absolute_timeout = deadline.map(millis_at_least_one))
    }

    /// Deferred or immediate writes.
    pub fn write_mode(self, mode: WriteMode) -> Self {
        self.edit(|s| s.config.write_mode = mode)
    }

    /// Adds a near cache of `capacity` sessions (see [`NearCache`] for what it saves today).
    pub fn near_cache(self, capacity: usize) -> Self {
        self.edit(|s| s.cache = Some(Arc::new(NearCache::new(capacity))))
    }

    /// The settings.
    pub fn config(&self) -> &SessionConfig {
        &self.shared.config
    }

    /// The client.
    pub fn client(&self) -> &Client {
        &self.shared.client
    }

    /// Counters since the layer was built.
    pub fn stats(&self) -> SessionStats {
        let c = &self.shared.counters;
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        SessionStats {
            loads: get(&c.loads),
            creates: get(&c.creates),
            writes: get(&c.writes),
            conflicts_retried: get(&c.conflicts_retried),
            conflicts_surfaced: get(&c.conflicts_surfaced),
            deletes: get(&c.deletes),
            rotations: get(&c.rotations),
            cache_hits: get(&c.cache_hits),
            cache_misses: get(&c.cache_misses),
        }
    }

    /// Deletes one session by id, from outside a request (admin "kill session").
    pub async fn delete_session(&self, id: SessionId) -> Result<(), SessionError> {
        self.shared.delete(id).await
    }

    /// "Log out everywhere": ends every session of `principal` (tagged by [`Session::login`]);
    /// returns how many ended. Requests still running on them get [`SessionError::Gone`].
    pub async fn invalidate_principal(&self, principal: &str) -> Result<u64, SessionError> {
        self.shared
            .client
            .invalidate_principal(principal)
            .await
            .map_err(store_error)
    }

    /// The live sessions of `principal` (for a "your devices" page).
    pub async fn sessions_of(&self, principal: &str) -> Result<Vec<SessionId>, SessionError> {
        self.shared
            .client
            .sessions_of(principal)
            .await
            .map_err(store_error)
    }
}

impl Shared {
    /// A linearizable read, through the near cache when there is one.
    async fn read(&self, id: SessionId) -> Result<Option<Loaded>, SessionError> {
        bump(&self.counters.loads);
        let Some(view) = self.client.get(id).await.map_err(store_error)? else {
            if let Some(cache) = &self.cache {
                cache.forget(id);
            }
            return Ok(None);
        };
        let mut loaded = Loaded::from_view(view);
        if let Some(cache) = &self.cache {
            // Plug-in point for a conditional read: ask the cluster for the session only if its
            // version differs from the cached one.
            match cache.validated(id, loaded.version) {
                Some(attrs) => {
                    bump(&self.counters.cache_hits);
                    loaded.attributes = attrs;
                }
                None => {
                    bump(&self.counters.cache_misses);
                    cache.put(id, loaded.version, loaded.attributes.clone());
                }
            }
        }
        Ok(Some(loaded))
    }

    fn cache_put(&self, loaded: &Loaded) {
        if let Some(cache) = &self.cache {
            cache.put(loaded.id, loaded.version, loaded.attributes.clone());
        }
    }

    fn cache_forget(&self, id: SessionId) {
        if let Some(cache) = &self.cache {
            cache.forget(id);
        }
    }

    async fn delete(&self, id: SessionId) -> Result<(), SessionError> {
        self.cache_forget(id);
        match self.client.delete(id, None).await {
            Ok(_) | Err(Error::NotFound) => {
                bump(&self.counters.deletes);
                Ok(())
            }
            Err(e) => Err(store_error(e)),
        }
    }

    fn create_options(&self) -> CreateOptions {
        create_options(Some(self.config.idle_timeout), self.config.absolute_timeout)
    }

    fn set_cookie(&self, id: SessionId) -> Option<HeaderValue> {
        let c = &self.config;
        let mut s = format!("{}={id}; Path={}", c.cookie_name, c.cookie_path);
        if let Some(domain) = &c.cookie_domain {
            s.push_str("; Domain=");
            s.push_str(domain);
        }
        if let Some(max_age) = c.max_age {
            s.push_str(&format!("; Max-Age={}", max_age.as_secs()));
        }
        self.cookie_flags(&mut s);
        HeaderValue::from_str(&s).ok()
    }

    fn clear_cookie(&self) -> Option<HeaderValue> {
        let c = &self.config;
        let mut s = format!(
            "{}=; Path={}; Max-Age=0; Expires=Thu, 01 Jan 1970 00:00:00 GMT",
            c.cookie_name, c.cookie_path
        );
        if let Some(domain) = &c.cookie_domain {
            s.push_str("; Domain=");
            s.push_str(domain);
        }
        self.cookie_flags(&mut s);
        HeaderValue::from_str(&s).ok()
    }

    fn cookie_flags(&self, s: &mut String) {
        let c = &self.config;
        if c.http_only {
            s.push_str("; HttpOnly");
        }
        if c.secure {
            s.push_str("; Secure");
        }
        s.push_str(match c.same_site {
            SameSite::Strict => "; SameSite=Strict",
            SameSite::Lax => "; SameSite=Lax",
            SameSite::None => "; SameSite=None",
        });
    }
}

/// The session id in the request's cookies, if any parses. Untrusted input: fuzzed by the
/// `session_id_parse` target.
pub fn cookie_session_id(headers: &HeaderMap, name: &str) -> Option<SessionId> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|line| line.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .filter(|(n, _)| *n == name)
        .find_map(|(_, v)| v.trim().trim_matches('"').parse().ok())
}

impl<S> Layer<S> for SteadfastSessionLayer {
    type Service = SteadfastSessionService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        SteadfastSessionService {
            inner,
            shared: self.shared.clone(),
        }
    }
}

/// The service the layer wraps around a router or handler.
#[derive(Clone)]
pub struct SteadfastSessionService<S> {
    inner: S,
    shared: Arc<Shared>,
}

impl<S> fmt::Debug for SteadfastSessionService<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SteadfastSessionService")
            .finish_non_exhaustive()
    }
}

impl<S, ReqBody, ResBody> Service<Request<ReqBody>> for SteadfastSessionService<S>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    ReqBody: Send + 'static,
    ResBody: HttpBody<Data = Bytes> + Send + 'static,
    ResBody::Error: Into<axum::BoxError>,
{
    type Response = Response<Body>;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Response<Body>, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request<ReqBody>) -> Self::Future {
        let cookie_id = cookie_session_id(request.headers(), &self.shared.config.cookie_name);
        let session = Session::new(self.shared.clone(), cookie_id);
        request.extensions_mut().insert(session.clone());
        // Call the service that was driven ready, keep a fresh clone for the next call.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        Box::pin(async move {
            let response = inner.call(request).await?;
            Ok(session.finish(response.map(Body::new)).await)
        })
    }
}

/// A session as the cluster returned it.
#[derive(Clone, Debug)]
struct Loaded {
    id: SessionId,
    version: u64,
    attributes: Arc<Attributes>,
}

impl Loaded {
    fn from_view(v: SessionView) -> Self {
        Loaded {
            id: v.id,
            version: v.version,
            attributes: Arc::new(v.attributes),
        }
    }
}

#[derive(Clone, Debug)]
enum Phase {
    /// The handler has not used the session yet.
    NotLoaded,
    /// No stored session: none in the cookie, it was gone, or this request deleted it.
    Missing,
    /// A stored session.
    Live(Loaded),
}

/// What a pending change is checked against when it is written.
#[derive(Clone, Debug)]
enum Check {
    /// The value the handler could have seen; a different stored value is a conflict.
    Seen(Option<Vec<u8>>),
    /// Last writer wins.
    Overwrite,
}

#[derive(Clone, Debug)]
struct Change {
    value: Option<Vec<u8>>,
    check: Check,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum CookieAction {
    Keep,
    Set,
    Clear,
}

#[derive(Debug)]
struct State {
    cookie_id: Option<SessionId>,
    phase: Phase,
    pending: BTreeMap<String, Change>,
    cookie: CookieAction,
}

impl State {
    fn loaded_value(&self, key: &str) -> Option<Vec<u8>> {
        match &self.phase {
            Phase::Live(l) => l.attributes.get(key).cloned(),
            _ => None,
        }
    }

    fn value(&self, key: &str) -> Option<Vec<u8>> {
        match self.pending.get(key) {
            Some(change) => change.value.clone(),
            None => self.loaded_value(key),
        }
    }

    /// Loaded attributes with the pending changes applied.
    fn current(&self) -> Attributes {
        let mut attrs = match &self.phase {
            Phase::Live(l) => (*l.attributes).clone(),
            _ => Attributes::new(),
        };
        for (k, c) in &self.pending {
            match &c.value {
                Some(v) => attrs.insert(k.clone(), v.clone()),
                None => attrs.remove(k),
            };
        }
        attrs
    }

    fn pending_update(&self, version: u64) -> Update {
        let mut update = Update::default().if_version(version);
        for (k, c) in &self.pending {
            match &c.value {
                Some(v) => {
                    update.set.insert(k.clone(), v.clone());
                }
                None => {
                    update.remove.insert(k.clone());
                }
            }
        }
        update
    }

    /// The write at `written` made the stored session equal to `attributes`.
    fn written(&mut self, written: Written, attributes: Attributes) {
        if let Phase::Live(l) = &mut self.phase {
            l.version = written.version;
            l.attributes = Arc::new(attributes);
        }
        self.pending.clear();
    }

    /// The session ended under this request.
    fn gone(&mut self) {
        self.phase = Phase::Missing;
        self.pending.clear();
        self.cookie = CookieAction::Clear;
    }

    fn live_id(&self) -> Option<SessionId> {
        match &self.phase {
            Phase::Live(l) => Some(l.id),
            _ => None,
        }
    }
}

/// The request's session. Extract it in a handler (`session: Session`); clones share state.
#[derive(Clone)]
pub struct Session {
    shared: Arc<Shared>,
    state: Arc<tokio::sync::Mutex<State>>,
}

impl fmt::Debug for Session {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Session").finish_non_exhaustive()
    }
}

impl<S: Send + Sync> FromRequestParts<S> for Session {
    type Rejection = SessionError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        parts
            .extensions
            .get::<Session>()
            .cloned()
            .ok_or(SessionError::MissingLayer)
    }
}

/// A session's attributes inside [`Session::update_with_retry`]: typed access to the current
/// values, recording changes.
#[derive(Debug)]
pub struct SessionData {
    attributes: Attributes,
    changes: BTreeMap<String, Option<Vec<u8>>>,
}

impl SessionData {
    /// The value of `key`, decoded.
    pub fn get<T: DeserializeOwned>(&self, key: &str) -> Result<Option<T>, SessionError> {
        self.attributes
            .get(key)
            .map(|bytes| decode(key, bytes))
            .transpose()
    }

    /// Sets `key`.
    pub fn insert<T: Serialize + ?Sized>(
        &mut self,
        key: &str,
        value: &T,
    ) -> Result<(), SessionError> {
        let bytes = encode(key, value)?;
        self.attributes.insert(key.to_string(), bytes.clone());
        self.changes.insert(key.to_string(), Some(bytes));
        Ok(())
    }

    /// Removes `key`.
    pub fn remove(&mut self, key: &str) {
        self.attributes.remove(key);
        self.changes.insert(key.to_string(), None);
    }

    /// Whether `key` is set.
    pub fn contains_key(&self, key: &str) -> bool {
        self.attributes.contains_key(key)
    }

    /// The attribute names.
    pub fn keys(&self) -> impl Iterator<Item = &str> {
        self.attributes.keys().map(String::as_str)
    }
}

fn encode<T: Serialize + ?Sized>(key: &str, value: &T) -> Result<Vec<u8>, SessionError> {
    rmp_serde::to_vec_named(value).map_err(|e| SessionError::Encode {
        key: key.to_string(),
        reason: e.to_string(),
    })
}

fn decode<T: DeserializeOwned>(key: &str, bytes: &[u8]) -> Result<T, SessionError> {
    rmp_serde::from_slice(bytes).map_err(|e| SessionError::Decode {
        key: key.to_string(),
        reason: e.to_string(),
    })
}

impl Session {
    fn new(shared: Arc<Shared>, cookie_id: Option<SessionId>) -> Self {
        Session {
            shared,
            state: Arc::new(tokio::sync::Mutex::new(State {
                cookie_id,
                phase: Phase::NotLoaded,
                pending: BTreeMap::new(),
                cookie: CookieAction::Keep,
            })),
        }
    }

    /// Reads the session on first use.
    async fn ensure_loaded(&self, st: &mut State) -> Result<(), SessionError> {
        if let Phase::NotLoaded = st.phase {
            st.phase = match st.cookie_id {
                None => Phase::Missing,
                Some(id) => match self.shared.read(id).await? {
                    Some(loaded) => Phase::Live(loaded),
                    None => {
                        st.cookie = CookieAction::Clear;
                        Phase::Missing
                    }
                },
            };
        }
        Ok(())
    }

    /// The value of `key`, decoded; `None` if unset.
    pub async fn get<T: DeserializeOwned>(&self, key: &str) -> Result<Option<T>, SessionError> {
        let mut st = self.state.lock().await;
        self.ensure_loaded(&mut st).await?;
        st.value(key).map(|b| decode(key, &b)).transpose()
    }

    /// The attribute names.
    pub async fn keys(&self) -> Result<Vec<String>, SessionError> {
        let mut st = self.state.lock().await;
        self.ensure_loaded(&mut st).await?;
        Ok(st.current().into_keys().collect())
    }

    /// The session's id, if it is stored (creating one happens at the first write).
    pub async fn id(&self) -> Result<Option<SessionId>, SessionError> {
        let mut st = self.state.lock().await;
        self.ensure_loaded(&mut st).await?;
        Ok(st.live_id())
    }

    /// The stored version this request last saw or wrote.
    pub async fn version(&self) -> Result<Option<u64>, SessionError> {
        let mut st = self.state.lock().await;
        self.ensure_loaded(&mut st).await?;
        Ok(match &st.phase {
            Phase::Live(l) => Some(l.version),
            _ => None,
        })
    }

    /// Sets `key`. Written at the end of the request (or now, in immediate mode) under a
    /// conflict check: if another request changes `key` after this one read the session, the
    /// write fails with [`SessionError::Conflict`] instead of overwriting it.
    pub async fn insert<T: Serialize + ?Sized>(
        &self,
        key: &str,
        value: &T,
    ) -> Result<(), SessionError> {
        let bytes = encode(key, value)?;
        self.change(key, Some(bytes), false).await
    }

    /// Sets `key`, last writer wins (for values no one derives from the old one, such as a
    /// "last seen" time).
    pub async fn overwrite<T: Serialize + ?Sized>(
        &self,
        key: &str,
        value: &T,
    ) -> Result<(), SessionError> {
        let bytes = encode(key, value)?;
        self.change(key, Some(bytes), true).await
    }

    /// Removes `key` (conflict-checked like [`Session::insert`]).
    pub async fn remove(&self, key: &str) -> Result<(), SessionError> {
        self.change(key, None, false).await
    }

    async fn change(
        &self,
        key: &str,
        value: Option<Vec<u8>>,
        overwrite: bool,
    ) -> Result<(), SessionError> {
        let mut st = self.state.lock().await;
        self.ensure_loaded(&mut st).await?;
        let seen = st.loaded_value(key);
        let change = st.pending.entry(key.to_string()).or_insert(Change {
            value: None,
            check: Check::Seen(seen),
        });
        change.value = value;
        if overwrite {
            change.check = Check::Overwrite;
        }
        if self.shared.config.write_mode == WriteMode::Immediate {
            self.flush(&mut st).await?;
        }
        Ok(())
    }

    /// Writes pending changes now (deferred mode writes them at the end of the request).
    pub async fn save(&self) -> Result<(), SessionError> {
        let mut st = self.state.lock().await;
        self.flush(&mut st).await
    }

    /// Ends the session ("log out"): deletes it from the cluster now and clears the cookie.
    /// Needs no read. Changes made afterwards in the same request go to a new session.
    pub async fn delete(&self) -> Result<(), SessionError> {
        let mut st = self.state.lock().await;
        let id = match &st.phase {
            Phase::Live(l) => Some(l.id),
            Phase::NotLoaded => st.cookie_id,
            Phase::Missing => None,
        };
        st.pending.clear();
        if let Some(id) = id {
            self.shared.delete(id).await?;
        }
        st.phase = Phase::Missing;
        st.cookie = CookieAction::Clear;
        Ok(())
    }

    /// Read-modify-write under compare-and-set: runs `f` on the current attributes (this
    /// request's pending changes included) and writes its changes, together with the pending
    /// ones, conditionally on the version `f` saw; if another request wrote in between, re-reads
    /// and runs `f` again. `f` may run several times, so it should only compute. Returns what the
    /// successful run of `f` returned. Pending changes keep their own conflict check.
    pub async fn update_with_retry<R>(
        &self,
        mut f: impl FnMut(&mut SessionData) -> Result<R, SessionError>,
    ) -> Result<R, SessionError> {
        let mut st = self.state.lock().await;
        self.ensure_loaded(&mut st).await?;
        for _ in 0..CONFLICT_ROUNDS_MAX {
            let mut data = SessionData {
                attributes: st.current(),
                changes: BTreeMap::new(),
            };
            let result = f(&mut data)?;
            let Phase::Live(loaded) = &st.phase else {
                // Nothing stored: create it with everything.
                for (k, v) in data.changes {
                    st.pending.insert(
                        k,
                        Change {
                            value: v,
                            check: Check::Overwrite,
                        },
                    );
                }
                self.flush(&mut st).await?;
                return Ok(result);
            };
            let (id, version) = (loaded.id, loaded.version);
            let mut update = st.pending_update(version);
            for (k, v) in data.changes {
                match v {
                    Some(bytes) => {
                        update.remove.remove(&k);
                        update.set.insert(k, bytes);
                    }
                    None => {
                        update.set.remove(&k);
                        update.remove.insert(k);
                    }
                }
            }
            if update.set.is_empty() && update.remove.is_empty() {
                return Ok(result);
            }
            match self.shared.client.update(id, update).await {
                Ok(written) => {
                    bump(&self.shared.counters.writes);
                    st.written(written, data.attributes);
                    if let Phase::Live(l) = &st.phase {
                        self.shared.cache_put(l);
                    }
                    return Ok(result);
                }
                Err(Error::Conflict { .. }) => {
                    bump(&self.shared.counters.conflicts_retried);
                    self.refresh_after_conflict(&mut st).await?;
                }
                Err(e) => return Err(self.failed(&mut st, e)),
            }
        }
        Err(SessionError::Store(Error::Unavailable(
            "the session kept changing; gave up".into(),
        )))
    }

    /// Gives the session a new id, keeping its data (call it at login, against session
    /// fixation). The old id is dead afterwards: a request still holding it finds no session,
    /// and its writes fail with [`SessionError::Gone`]. Pending changes are written first. A
    /// session not stored yet gets a fresh id at its first write anyway, so this is then a no-op.
    ///
    /// One atomic `Client::rotate` (within a group; across groups the old id dies first, so two
    /// live copies never exist).
    pub async fn rotate_id(&self) -> Result<(), SessionError> {
        self.rotate(None).await
    }

    /// Logs `principal` in: rotates the session to a fresh id in the principal's home group and
    /// tags it with the principal, atomically (`Client::login`), so
    /// [`SteadfastSessionLayer::invalidate_principal`] ("log out everywhere") and
    /// [`SteadfastSessionLayer::sessions_of`] find it. The per-principal session limit of the
    /// client's namespace applies (a refusal is `SessionError::Store(Error::LimitReached)`, a
    /// 403). Creates the session if none is stored yet.
    pub async fn login(&self, principal: &str) -> Result<(), SessionError> {
        self.rotate(Some(principal)).await
    }

    async fn rotate(&self, principal: Option<&str>) -> Result<(), SessionError> {
        let mut st = self.state.lock().await;
        self.ensure_loaded(&mut st).await?;
        self.flush(&mut st).await?;
        let client = &self.shared.client;
        let new_id = match (&st.phase, principal) {
            (Phase::Live(old), principal) => {
                let old_id = old.id;
                let rotated = match principal {
                    Some(p) => client.login(old_id, p).await,
                    None => client.rotate(old_id).await,
                };
                self.shared.cache_forget(old_id);
                match rotated {
                    Ok((new_id, _)) => new_id,
                    Err(e) => return Err(self.failed(&mut st, e)),
                }
            }
            (_, None) => return Ok(()),
            (_, Some(p)) => {
                let mut options = self.shared.create_options();
                options.principal = Some(p.to_string());
                let (id, _) = client
                    .create(Attributes::new(), options)
                    .await
                    .map_err(store_error)?;
                bump(&self.shared.counters.creates);
                id
            }
        };
        bump(&self.shared.counters.rotations);
        // Re-read: the rotation carried along whatever other requests wrote before it.
        let Some(fresh) = self.shared.read(new_id).await? else {
            st.gone();
            return Err(SessionError::Gone);
        };
        st.phase = Phase::Live(fresh);
        st.cookie = CookieAction::Set;
        Ok(())
    }

    /// Maps a write error, noting a session that ended under this request.
    fn failed(&self, st: &mut State, e: Error) -> SessionError {
        if matches!(e, Error::NotFound) {
            if let Some(id) = st.live_id() {
                self.shared.cache_forget(id);
            }
            st.gone();
        }
        store_error(e)
    }

    /// After a failed compare-and-set: re-read, and fail if a pending change's attribute was
    /// changed by someone else since this request saw it.
    async fn refresh_after_conflict(&self, st: &mut State) -> Result<(), SessionError> {
        let Some(id) = st.live_id() else {
            return Ok(());
        };
        let Some(now) = self.shared.read(id).await? else {
            st.gone();
            return Err(SessionError::Gone);
        };
        let clash = st.pending.iter().find_map(|(k, c)| match &c.check {
            Check::Seen(seen) if now.attributes.get(k) != seen.as_ref() => Some(k.clone()),
            _ => None,
        });
        st.phase = Phase::Live(now);
        if let Some(key) = clash {
            bump(&self.shared.counters.conflicts_surfaced);
            st.pending.clear();
            return Err(SessionError::Conflict { key });
        }
        Ok(())
    }

    /// Writes the pending changes: creates the session if none is stored, otherwise a
    /// compare-and-set on the loaded version, retried after a conflict on other attributes.
    async fn flush(&self, st: &mut State) -> Result<(), SessionError> {
        if st.pending.is_empty() {
            return Ok(());
        }
        self.ensure_loaded(st).await?;
        if !matches!(st.phase, Phase::Live(_)) {
            let attributes: Attributes = std::mem::take(&mut st.pending)
                .into_iter()
                .filter_map(|(k, c)| c.value.map(|v| (k, v)))
                .collect();
            if attributes.is_empty() {
                return Ok(());
            }
            let (id, written) = self
                .shared
                .client
                .create(attributes.clone(), self.shared.create_options())
                .await
                .map_err(store_error)?;
            bump(&self.shared.counters.creates);

            let loaded = Loaded {
                id,
                version: written.version,
                attributes: Arc::new(attributes),
            };
            self.shared.cache_put(&loaded);
            st.phase = Phase::Live(loaded);
            st.cookie = CookieAction::Set;
            return Ok(());
        }
        for _ in 0..CONFLICT_ROUNDS_MAX {
            let Phase::Live(loaded) = &st.phase else {
                return Err(SessionError::Gone);
            };
            let (id, update) = (loaded.id, st.pending_update(loaded.version));
            match self.shared.client.update(id, update).await {
                Ok(written) => {
                    bump(&self.shared.counters.writes);
                    let attributes = st.current();
                    st.written(written, attributes);
                    if let Phase::Live(l) = &st.phase {
                        self.shared.cache_put(l);
                    }
                    return Ok(());
                }
                Err(Error::Conflict { .. }) => {
                    bump(&self.shared.counters.conflicts_retried);
                    self.refresh_after_conflict(st).await?;
                }
                Err(e) => return Err(self.failed(st, e)),
            }
        }
        Err(SessionError::Store(Error::Unavailable(
            "the session kept changing; gave up".into(),
        )))
    }

    /// End of the request: deferred write, cookie.
    async fn finish(&self, mut response: Response<Body>) -> Response<Body> {
        let mut st = self.state.lock().await;
        if response.status().is_server_error() {
            if !st.pending.is_empty() {
                tracing::debug!("handler failed; session changes discarded");
                st.pending.clear();
            }
        } else if let Err(e) = self.flush(&mut st).await {
            response = e.into_response();
        }
        self.cookie_headers(&st, response.headers_mut());
        response
    }

    fn cookie_headers(&self, st: &State, headers: &mut HeaderMap) {
        let value = match (&st.phase, st.cookie) {
            (Phase::Live(l), CookieAction::Set) => self.shared.set_cookie(l.id),
            // A persistent cookie slides with the session's activity.
            (Phase::Live(l), _) if self.shared.config.max_age.is_some() => {
                self.shared.set_cookie(l.id)
            }
            (Phase::Missing, CookieAction::Clear) if st.cookie_id.is_some() => {
                self.shared.clear_cookie()
            }
            _ => None,
        };
        if let Some(v) = value {
            headers.append(header::SET_COOKIE, v);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cookie_parsing_finds_our_cookie_among_others() {
        let id = SessionId::generate();
        let mut h = HeaderMap::new();
        h.append(header::COOKIE, HeaderValue::from_static("a=1; sid=zzz"));
        h.append(
            header::COOKIE,
            HeaderValue::from_str(&format!("theme=dark; sid={id}")).expect("header"),
        );
        assert_eq!(cookie_session_id(&h, "sid"), Some(id));
        assert_eq!(cookie_session_id(&h, "other"), None);
    }

    #[test]
    fn near_cache_is_bounded_and_validates_versions() {
        let cache = NearCache::new(2);
        let a = SessionId::from_bytes([1; 16]);
        cache.put(a, 5, Arc::default());
        assert!(cache.validated(a, 5).is_some());
        assert!(cache.validated(a, 6).is_none());
        cache.put(SessionId::from_bytes([2; 16]), 1, Arc::default());
        cache.put(SessionId::from_bytes([3; 16]), 1, Arc::default());
        assert_eq!(cache.len(), 2);
        assert!(cache.validated(a, 5).is_none(), "oldest evicted");
    }
}
