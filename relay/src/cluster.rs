//! Relays that act as one (`--cluster-registry redis://HOST:PORT`).
//!
//! * **The registry** is a Redis server shared by the relays: for every broadcast a relay
//!   originates (published to it by a client, over MoQ, RTMP or SRT), the key
//!   `moqcast:broadcast:PATH` holds that relay's `--cluster-advertise` URL, with a TTL
//!   (`--cluster-ttl-ms`) the relay refreshes while the broadcast lives. A relay that dies stops
//!   refreshing: its broadcasts expire. A publisher that moves to another relay overwrites the
//!   key there. A relay deletes a key when its broadcast ends, if the key is still its own. No
//!   consensus of our own: the last writer wins, and Redis holds the truth.
//! * **Links.** A relay reaches another with one MoQ session over raw QUIC (the peer's advertise
//!   URL, `moqt://HOST:PORT`), presenting `--cluster-token-file` (a relay token, checked by the
//!   peer's `--auth-key` like any client's) and verifying the peer's certificate with the system
//!   roots or the pinned `--cluster-tls-fingerprint`s. The link is an ordinary subscriber
//!   session to the peer; its SETUP names the implementation `moqcast-relay-link`, so the peer
//!   never pulls from a third relay on its behalf (no chains, no loops).
//! * **Remote broadcasts.** Every broadcast in the registry that another relay originates is
//!   announced in this relay's origin with that relay's link as its upstream, so namespace
//!   subscribers see the whole cluster's broadcasts, and the origin's usual rule applies: a
//!   track gets one upstream SUBSCRIBE (on the link) however many local subscribers it has. A
//!   subscriber asking for a broadcast the relay has not learned of yet makes it look the
//!   broadcast up at once ([`Cluster::pull`]).
//! * **Moves and failures.** When a link closes, its broadcasts are parked, not ended:
//!   subscribers stay, the tracks idle. When the registry names a new origin for a broadcast
//!   (its publisher came back elsewhere), the broadcast is announced on that relay's link and
//!   the origin hands every watched track over to it ([`crate::origin::Origin::announce`]):
//!   subscribers carry on at the new publisher's next group. A broadcast missing from the
//!   registry for a whole TTL (its relay and publisher gone) ends. While Redis is unreachable
//!   nothing is ended; each relay re-registers its broadcasts as soon as Redis is back, within
//!   a fraction of the TTL.
//! * **Roles.** An origin (`--cluster-role origin`, the default) takes publishers and registers
//!   their broadcasts; an edge (`--cluster-role edge`) takes no publisher and only serves what
//!   the origins have.

use std::{
    collections::{HashMap, HashSet},
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        Arc, Mutex, OnceLock, Weak,
    },
    time::{Duration, Instant},
};

use moqcast_media::moq::{self, transport::coding::KeyValuePairs, TrackNamespace};
use moqcast_session::{io as moqt, Role};
use redis::aio::MultiplexedConnection;
use url::Url;

use crate::{ingest::IngestRoutes, origin::Upstream, OwnedTask, RelayState};

/// What a relay does in its cluster.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Default,
    serde::Deserialize,
    serde::Serialize,
    clap::ValueEnum,
)]
#[serde(rename_all = "lowercase")]
pub enum ClusterRole {
    /// Takes publishers and registers their broadcasts; serves the others' too.
    #[default]
    Origin,
    /// Takes no publisher: serves what the origins have.
    Edge,
}

/// `--cluster-*` settings.
#[derive(Debug, Clone)]
pub struct ClusterConfig {
    /// `redis://HOST:PORT` (a `rediss://` URL for TLS is not built in).
    pub registry: String,
    /// How the other relays reach this one: `moqt://HOST:PORT`.
    pub advertise: Url,
    pub role: ClusterRole,
    /// The token presented to peers (a JWT).
    pub token: Option<String>,
    /// How long a registration lives without being refreshed.
    pub ttl: Duration,
    /// Peer certificates accepted by SHA-256 (hex); empty: the system roots.
    pub fingerprints: Vec<String>,
}

impl ClusterConfig {
    pub const DEFAULT_TTL: Duration = Duration::from_secs(10);
}

/// Why the cluster could not do something (logged and counted; nothing here is fatal).
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    #[error("registry: {0}")]
    Registry(String),
    #[error("link to {peer}: {reason}")]
    Link { peer: String, reason: String },
    #[error("the relay is shutting down")]
    Gone,
}

impl From<redis::RedisError> for ClusterError {
    fn from(e: redis::RedisError) -> Self {
        Self::Registry(e.to_string())
    }
}

const KEY_PREFIX: &str = "moqcast:broadcast:";
/// The MOQT IMPLEMENTATION setup option of a link's SETUP.
pub const LINK_IMPLEMENTATION: &str = "moqcast-relay-link";
/// The most one registry round trip may take.
const REGISTRY_TIMEOUT: Duration = Duration::from_secs(1);
/// The most a link's QUIC handshake and SETUP may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// How long a peer that could not be reached is left alone.
const RETRY_AFTER: Duration = Duration::from_secs(1);
/// Most registry keys read per sync.
const MAX_KEYS: usize = 100_000;

/// Deletes a key only while it still names this relay.
const RELEASE: &str = r"if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) else return 0 end";

fn key(path: &str) -> String {
    format!("{KEY_PREFIX}{path}")
}

/// The Redis registry, reconnected on demand.
struct Registry {
    client: redis::Client,
    conn: tokio::sync::Mutex<Option<MultiplexedConnection>>,
    release: redis::Script,
}

impl Registry {
    fn new(url: &str) -> Result<Self, ClusterError> {
        Ok(Self {
            client: redis::Client::open(url)?,
            conn: tokio::sync::Mutex::new(None),
            release: redis::Script::new(RELEASE),
        })
    }

    async fn conn(&self) -> Result<MultiplexedConnection, ClusterError> {
        let mut slot = self.conn.lock().await;
        if let Some(c) = slot.as_ref() {
            return Ok(c.clone());
        }
        let c = tokio::time::timeout(
            REGISTRY_TIMEOUT,
            self.client.get_multiplexed_async_connection(),
        )
        .await
        .map_err(|_| ClusterError::Registry("connecting timed out".into()))??;
        *slot = Some(c.clone());
        Ok(c)
    }

    /// Runs `f` on the connection with a deadline; a failure drops the connection (the next
    /// call reconnects).
    async fn with<T, F>(
        &self,
        f: impl FnOnce(MultiplexedConnection) -> F,
    ) -> Result<T, ClusterError>
    where
        F: std::future::Future<Output = redis::RedisResult<T>>,
    {
        let conn = self.conn().await?;
        let res = match tokio::time::timeout(REGISTRY_TIMEOUT, f(conn)).await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => Err(ClusterError::from(e)),
            Err(_) => Err(ClusterError::Registry("request timed out".into())),
        };
        if res.is_err() {
            *self.conn.lock().await = None;
        }
        res
    }

    /// Sets every path's key to `owner` for `ttl`.
    async fn register(
        &self,
        paths: &[String],
        owner: &str,
        ttl: Duration,
    ) -> Result<(), ClusterError> {
        if paths.is_empty() {
            return Ok(());
        }
        let ms = ttl.as_millis().max(1) as u64;
        let mut pipe = redis::pipe();
        for p in paths {
            pipe.cmd("SET")
                .arg(key(p))
                .arg(owner)
                .arg("PX")
                .arg(ms)
                .ignore();
        }
        self.with(|mut c| async move { pipe.query_async::<()>(&mut c).await })
            .await
    }

    /// Deletes `path`'s key if it still names `owner`.
    async fn release(&self, path: &str, owner: &str) -> Result<(), ClusterError> {
        let mut call = self.release.key(key(path));
        call.arg(owner);
        self.with(|mut c| async move { call.invoke_async::<i64>(&mut c).await.map(drop) })
            .await
    }

    /// The owners of `paths`, in order.
    async fn owners(&self, paths: &[String]) -> Result<Vec<Option<String>>, ClusterError> {
        if paths.is_empty() {
            return Ok(Vec::new());
        }
        let keys: Vec<String> = paths.iter().map(|p| key(p)).collect();
        self.with(|mut c| async move {
            redis::cmd("MGET")
                .arg(keys)
                .query_async::<Vec<Option<String>>>(&mut c)
                .await
        })
        .await
    }

    /// Every registered broadcast and its owner.
    async fn all(&self) -> Result<HashMap<String, String>, ClusterError> {
        let mut keys: Vec<String> = Vec::new();
        let mut cursor: u64 = 0;
        loop {
            let (next, batch) = self
                .with(|mut c| async move {
                    redis::cmd("SCAN")
                        .arg(cursor)
                        .arg("MATCH")
                        .arg(format!("{KEY_PREFIX}*"))
                        .arg("COUNT")
                        .arg(1000)
                        .query_async::<(u64, Vec<String>)>(&mut c)
                        .await
                })
                .await?;
            keys.extend(batch);
            cursor = next;
            if cursor == 0 || keys.len() >= MAX_KEYS {
                break;
            }
        }
        keys.sort();
        keys.dedup();
        let paths: Vec<String> = keys
            .iter()
            .filter_map(|k| k.strip_prefix(KEY_PREFIX).map(str::to_string))
            .collect();
        let mut out = HashMap::new();
        for chunk in paths.chunks(1000) {
            let owners = self.owners(chunk).await?;
            for (p, o) in chunk.iter().zip(owners) {
                if let Some(o) = o {
                    out.insert(p.clone(), o);
                }
            }
        }
        Ok(out)
    }
}

/// A MoQ session to another relay, whose broadcasts this relay serves.
struct Link {
    /// The session id under which its broadcasts are announced in the origin.
    id: u64,
    upstream: Upstream,
    conn: quinn::Connection,
    alive: Arc<AtomicBool>,
    /// The session's driver and the reader of its data streams.
    _task: OwnedTask<()>,
}

/// A broadcast this relay serves from another relay.
#[derive(Debug, Clone)]
struct Remote {
    peer: String,
    link: u64,
    /// Since when the registry no longer lists it.
    missing_since: Option<Instant>,
}

/// Counters for `/metrics`.
#[derive(Debug, Default)]
pub struct ClusterMetrics {
    pub link_connects: AtomicU64,
    pub link_failures: AtomicU64,
    pub link_closes: AtomicU64,
    pub registry_errors: AtomicU64,
    pub handovers: AtomicU64,
}

/// This relay's part in its cluster; see the [module documentation](self).
pub struct Cluster {
    pub config: ClusterConfig,
    registry: Registry,
    client: moqcast_client::Client,
    state: OnceLock<Weak<RelayState>>,
    /// Live links by peer URL.
    links: Mutex<HashMap<String, Arc<Link>>>,
    /// Session ids of links (live, or closed while their broadcasts are parked).
    link_ids: Mutex<HashSet<u64>>,
    /// Broadcasts served from other relays, by path.
    remote: Mutex<HashMap<String, Remote>>,
    /// Local broadcasts registered at the last sync.
    registered: Mutex<HashSet<String>>,
    /// Peers that could not be reached, and when.
    failed: Mutex<HashMap<String, Instant>>,
    /// Links set up to each peer so far (more than one: it reconnected).
    connects: Mutex<HashMap<String, u64>>,
    /// One link set up at a time.
    connecting: tokio::sync::Mutex<()>,
    /// Wakes the sync loop early (a link closed, a broadcast came or went).
    wake: tokio::sync::Notify,
    pub metrics: ClusterMetrics,
}

impl Cluster {
    pub fn new(config: ClusterConfig) -> Result<Self, ClusterError> {
        let mut tls = moqcast_client::ClientTls::default();
        for fp in &config.fingerprints {
            tls.pin_hex(fp).map_err(|e| ClusterError::Link {
                peer: String::new(),
                reason: e.to_string(),
            })?;
        }
        let client = moqcast_client::Client::new(&tls).map_err(|e| ClusterError::Link {
            peer: String::new(),
            reason: e.to_string(),
        })?;
        Ok(Self {
            registry: Registry::new(&config.registry)?,
            config,
            client,
            state: OnceLock::new(),
            links: Mutex::default(),
            link_ids: Mutex::default(),
            remote: Mutex::default(),
            registered: Mutex::default(),
            failed: Mutex::default(),
            connects: Mutex::default(),
            connecting: tokio::sync::Mutex::new(()),
            wake: tokio::sync::Notify::new(),
            metrics: ClusterMetrics::default(),
        })
    }

    /// Ties the cluster to its relay (once, at start).
    pub fn attach(&self, state: &Arc<RelayState>) {
        let _ = self.state.set(Arc::downgrade(state));
    }

    fn relay(&self) -> Result<Arc<RelayState>, ClusterError> {
        self.state
            .get()
            .and_then(Weak::upgrade)
            .ok_or(ClusterError::Gone)
    }

    fn advertise(&self) -> &str {
        self.config.advertise.as_str()
    }

    /// Whether `session` is one of this relay's links (its broadcasts are remote).
    pub fn is_link(&self, session: u64) -> bool {
        self.link_ids.lock().expect("poisoned").contains(&session)
    }

    /// The relay a broadcast announced by `session` comes from, when that is a link.
    pub fn served_from(&self, session: u64) -> Option<String> {
        self.remote
            .lock()
            .expect("poisoned")
            .values()
            .find(|r| r.link == session)
            .map(|r| r.peer.clone())
    }

    /// How often the sync loop runs.
    fn period(&self) -> Duration {
        (self.config.ttl / 4).clamp(Duration::from_millis(200), Duration::from_secs(2))
    }

    /// Keeps the registry and the remote broadcasts in step until the relay stops: every
    /// quarter TTL, and at once when a broadcast comes or goes here or a link closes.
    pub async fn run(self: Arc<Self>) {
        let Ok(state) = self.relay() else {
            return;
        };
        let mut events = state.origin.events();
        drop(state);
        loop {
            if let Err(e) = self.sync().await {
                match e {
                    ClusterError::Gone => return,
                    e => {
                        self.metrics.registry_errors.fetch_add(1, Ordering::Relaxed);
                        tracing::warn!(error = %e, "cluster sync failed");
                    }
                }
            }
            tokio::select! {
                () = tokio::time::sleep(self.period()) => {}
                () = self.wake.notified() => {}
                ev = events.recv() => {
                    if matches!(ev, Err(tokio::sync::broadcast::error::RecvError::Closed)) {
                        return;
                    }
                }
            }
        }
    }

    /// One pass: registers this relay's broadcasts, learns the others'.
    async fn sync(&self) -> Result<(), ClusterError> {
        let state = self.relay()?;
        let local: Vec<String> = state
            .origin
            .list()
            .into_iter()
            .filter(|b| !self.is_link(b.session))
            .map(|b| b.path.clone())
            .collect();
        if self.config.role == ClusterRole::Origin {
            self.registry
                .register(&local, self.advertise(), self.config.ttl)
                .await?;
            let now: HashSet<String> = local.iter().cloned().collect();
            let gone: Vec<String> = {
                let mut registered = self.registered.lock().expect("poisoned");
                let gone = registered.difference(&now).cloned().collect();
                *registered = now;
                gone
            };
            for path in gone {
                self.registry.release(&path, self.advertise()).await?;
                tracing::info!(broadcast = %path, "cluster: broadcast unregistered");
            }
        }
        let all = self.registry.all().await?;
        let local: HashSet<String> = local.into_iter().collect();
        for (path, owner) in &all {
            if owner == self.advertise() || local.contains(path) {
                continue;
            }
            let current = self.remote.lock().expect("poisoned").get(path).cloned();
            let fresh = current
                .as_ref()
                .is_some_and(|r| &r.peer == owner && self.link_alive(r.link));
            if fresh {
                if let Some(r) = self.remote.lock().expect("poisoned").get_mut(path) {
                    r.missing_since = None;
                }
                continue;
            }
            if let Err(e) = self.adopt(&state, path, owner).await {
                tracing::debug!(broadcast = %path, error = %e, "cluster: broadcast not reachable yet");
            }
        }
        // Broadcasts gone from the registry for a whole TTL end; so do the ones a local
        // publisher now has.
        let ttl = self.config.ttl;
        let mut ended = Vec::new();
        {
            let mut remote = self.remote.lock().expect("poisoned");
            remote.retain(|path, r| {
                if local.contains(path) {
                    return false;
                }
                if all.contains_key(path) {
                    return true;
                }
                let since = *r.missing_since.get_or_insert_with(Instant::now);
                if since.elapsed() >= ttl {
                    ended.push((path.clone(), r.link));
                    return false;
                }
                true
            });
        }
        for (path, link) in ended {
            tracing::info!(broadcast = %path, "cluster: broadcast gone from the registry: ending it");
            state.origin.unannounce(&path, link);
        }
        self.collect_links(&state);
        Ok(())
    }

    fn link_alive(&self, id: u64) -> bool {
        self.links
            .lock()
            .expect("poisoned")
            .values()
            .any(|l| l.id == id && l.alive.load(Ordering::Acquire))
    }

    /// Forgets closed links that no broadcast uses any more.
    fn collect_links(&self, state: &RelayState) {
        let used: HashSet<u64> = self
            .remote
            .lock()
            .expect("poisoned")
            .values()
            .map(|r| r.link)
            .collect();
        let live: HashSet<u64> = self
            .links
            .lock()
            .expect("poisoned")
            .values()
            .map(|l| l.id)
            .collect();
        let stale: Vec<u64> = self
            .link_ids
            .lock()
            .expect("poisoned")
            .iter()
            .copied()
            .filter(|id| !used.contains(id) && !live.contains(id))
            .collect();
        for id in stale {
            state.origin.session_closed(id);
            self.link_ids.lock().expect("poisoned").remove(&id);
        }
    }

    /// Serves `path` from `owner`: announces it in the origin on `owner`'s link (handing the
    /// watched tracks over when another upstream had it).
    async fn adopt(
        &self,
        state: &Arc<RelayState>,
        path: &str,
        owner: &str,
    ) -> Result<(), ClusterError> {
        let link = self.link(owner).await?;
        let replaced = self
            .remote
            .lock()
            .expect("poisoned")
            .insert(
                path.to_string(),
                Remote {
                    peer: owner.to_string(),
                    link: link.id,
                    missing_since: None,
                },
            )
            .is_some();
        state.origin.unpark(path);
        state
            .origin
            .announce(moq::namespace(path), link.id, Some(link.upstream.clone()));
        if replaced {
            self.metrics.handovers.fetch_add(1, Ordering::Relaxed);
        }
        tracing::info!(broadcast = %path, peer = %owner, handover = replaced, "cluster: serving a broadcast from another relay");
        Ok(())
    }

    /// Looks `namespace` (or the broadcast it is under) up in the registry at once, for a
    /// subscriber that asked for it: true when it is now served here.
    pub async fn pull(&self, namespace: &TrackNamespace) -> bool {
        let Ok(state) = self.relay() else {
            return false;
        };
        let path = moq::broadcast_path(namespace);
        let mut candidates = vec![path.clone()];
        let mut p = path.as_str();
        while let Some((head, _)) = p.rsplit_once('/') {
            candidates.push(head.to_string());
            p = head;
        }
        let owners = match self.registry.owners(&candidates).await {
            Ok(o) => o,
            Err(e) => {
                self.metrics.registry_errors.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(error = %e, "cluster: registry lookup failed");
                return false;
            }
        };
        for (path, owner) in candidates.iter().zip(owners) {
            let Some(owner) = owner else { continue };
            if owner == self.advertise() {
                return false;
            }
            return match self.adopt(&state, path, &owner).await {
                Ok(()) => true,
                Err(e) => {
                    tracing::warn!(broadcast = %path, error = %e, "cluster: pulling a broadcast failed");
                    false
                }
            };
        }
        false
    }

    /// The live link to `peer`, connecting it if needed.
    async fn link(&self, peer: &str) -> Result<Arc<Link>, ClusterError> {
        let live = |this: &Self| {
            this.links
                .lock()
                .expect("poisoned")
                .get(peer)
                .filter(|l| l.alive.load(Ordering::Acquire))
                .cloned()
        };
        if let Some(l) = live(self) {
            return Ok(l);
        }
        let _one = self.connecting.lock().await;
        if let Some(l) = live(self) {
            return Ok(l);
        }
        let err = |reason: String| ClusterError::Link {
            peer: peer.to_string(),
            reason,
        };
        if let Some(at) = self.failed.lock().expect("poisoned").get(peer) {
            if at.elapsed() < RETRY_AFTER {
                return Err(err("failed a moment ago".into()));
            }
        }
        let res = self.connect(peer).await;
        match &res {
            Ok(link) => {
                self.metrics.link_connects.fetch_add(1, Ordering::Relaxed);
                *self
                    .connects
                    .lock()
                    .expect("poisoned")
                    .entry(peer.to_string())
                    .or_default() += 1;
                self.failed.lock().expect("poisoned").remove(peer);
                self.links
                    .lock()
                    .expect("poisoned")
                    .insert(peer.to_string(), link.clone());
                tracing::info!(peer, link = link.id, "cluster: linked to a relay");
            }
            Err(e) => {
                self.metrics.link_failures.fetch_add(1, Ordering::Relaxed);
                self.failed
                    .lock()
                    .expect("poisoned")
                    .insert(peer.to_string(), Instant::now());
                tracing::warn!(peer, error = %e, "cluster: linking to a relay failed");
            }
        }
        res
    }

    async fn connect(&self, peer: &str) -> Result<Arc<Link>, ClusterError> {
        let err = |reason: String| ClusterError::Link {
            peer: peer.to_string(),
            reason,
        };
        let state = self.relay()?;
        let url: Url = peer.parse().map_err(|e| err(format!("bad URL: {e}")))?;
        if url.scheme() != "moqt" {
            return Err(err(
                "links use raw QUIC: the advertise URL must be moqt://".into()
            ));
        }
        let conn = tokio::time::timeout(CONNECT_TIMEOUT, self.client.connect_quic(&url))
            .await
            .map_err(|_| err("QUIC handshake timed out".into()))?
            .map_err(|e| err(e.to_string()))?;
        let wt = web_transport_quinn::Session::raw(
            conn.clone(),
            url,
            web_transport_quinn::proto::ConnectResponse::default(),
        );
        let mut options = KeyValuePairs::default();
        if let Some(token) = &self.config.token {
            // AUTHORIZATION TOKEN: USE_VALUE (3), token type 0 (agreed out of band), the JWT.
            let mut value = vec![0x03, 0x00];
            value.extend_from_slice(token.as_bytes());
            options.set_bytesvalue(0x3, value);
        }
        options.set_bytesvalue(0x7, LINK_IMPLEMENTATION.as_bytes().to_vec());
        let config = moqcast_session::Config {
            setup_options: options,
            ..Default::default()
        };
        let (session, incoming, driver) =
            moqt::establish(wt.clone(), Some(conn.clone()), Role::Client, config);
        let ingest = IngestRoutes::default();
        let id = state.next_session_id();
        let alive = Arc::new(AtomicBool::new(true));
        let task = {
            let (ingest, alive, peer) = (ingest.clone(), alive.clone(), peer.to_string());
            let relay = Arc::downgrade(&state);
            tokio::spawn(async move {
                let moqt::Incoming { requests, mut data } = incoming;
                // The peer has nothing to ask of a link: its requests are refused (dropped).
                drop(requests);
                let error = tokio::select! {
                    e = driver.run() => e.to_string(),
                    () = async {
                        tokio::join!(
                            crate::ingest::run(&mut data, ingest.clone()),
                            crate::ingest::datagrams(wt, ingest),
                        );
                        std::future::pending::<()>().await
                    } => String::new(),
                };
                alive.store(false, Ordering::Release);
                tracing::warn!(peer, link = id, error, "cluster: link closed");
                if let Some(state) = relay.upgrade() {
                    if let Some(cluster) = &state.cluster {
                        cluster.link_closed(&state, &peer, id);
                    }
                }
            })
        };
        self.link_ids.lock().expect("poisoned").insert(id);
        let link = Arc::new(Link {
            id,
            upstream: Upstream {
                session: session.clone(),
                ingest,
            },
            conn,
            alive,
            _task: OwnedTask(task),
        });
        match tokio::time::timeout(CONNECT_TIMEOUT, session.ready()).await {
            Ok(Ok(_)) => Ok(link),
            Ok(Err(e)) => {
                self.link_ids.lock().expect("poisoned").remove(&id);
                Err(err(format!("SETUP failed: {e}")))
            }
            Err(_) => {
                self.link_ids.lock().expect("poisoned").remove(&id);
                Err(err("SETUP timed out".into()))
            }
        }
    }

    /// A link closed: its broadcasts are parked (subscribers stay) until the registry says
    /// where they went, or that they are gone.
    fn link_closed(&self, state: &RelayState, peer: &str, id: u64) {
        self.metrics.link_closes.fetch_add(1, Ordering::Relaxed);
        {
            let mut links = self.links.lock().expect("poisoned");
            if links.get(peer).is_some_and(|l| l.id == id) {
                links.remove(peer);
            }
        }
        let parked: Vec<String> = self
            .remote
            .lock()
            .expect("poisoned")
            .iter()
            .filter(|(_, r)| r.link == id)
            .map(|(p, _)| p.clone())
            .collect();
        let until = Instant::now() + self.config.ttl + Duration::from_secs(2);
        for path in &parked {
            state.origin.park(path, until);
        }
        if !parked.is_empty() {
            tracing::info!(
                peer,
                broadcasts = parked.len(),
                "cluster: broadcasts parked until the registry says where they went"
            );
        }
        self.wake.notify_one();
    }

    /// Prometheus text of the cluster: links, remote broadcasts, and each link's tracks, bytes
    /// and round-trip time.
    pub fn render(&self) -> String {
        use std::fmt::Write;
        let m = &self.metrics;
        let links: Vec<(String, Arc<Link>)> = self
            .links
            .lock()
            .expect("poisoned")
            .iter()
            .map(|(p, l)| (p.clone(), l.clone()))
            .collect();
        let remote = self.remote.lock().expect("poisoned").len();
        let mut out = String::new();
        let _ = writeln!(out, "# HELP moqcast_cluster_links Live links to other relays.\n# TYPE moqcast_cluster_links gauge\nmoqcast_cluster_links {}", links.len());
        let _ = writeln!(out, "# HELP moqcast_cluster_remote_broadcasts Broadcasts served from other relays.\n# TYPE moqcast_cluster_remote_broadcasts gauge\nmoqcast_cluster_remote_broadcasts {remote}");
        for (name, help, v) in [
            ("link_connects_total", "Links set up.", &m.link_connects),
            (
                "link_failures_total",
                "Links that could not be set up.",
                &m.link_failures,
            ),
            ("link_closes_total", "Links that closed.", &m.link_closes),
            (
                "registry_errors_total",
                "Registry (Redis) requests that failed.",
                &m.registry_errors,
            ),
            (
                "handovers_total",
                "Broadcasts moved to another relay's link.",
                &m.handovers,
            ),
        ] {
            let _ = writeln!(out, "# HELP moqcast_cluster_{name} {help}\n# TYPE moqcast_cluster_{name} counter\nmoqcast_cluster_{name} {}", v.load(Ordering::Relaxed));
        }
        // A labelled family: HELP, TYPE, then one sample per peer.
        let mut family = |name: &str, kind: &str, help: &str, samples: Vec<(String, String)>| {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
            for (peer, v) in samples {
                let _ = writeln!(out, "{name}{{peer=\"{peer}\"}} {v}");
            }
        };
        let per_link = |f: &dyn Fn(&Link) -> String| -> Vec<(String, String)> {
            links.iter().map(|(p, l)| (p.clone(), f(l))).collect()
        };
        family(
            "moqcast_cluster_link_tracks",
            "gauge",
            "Tracks subscribed upstream over a link.",
            per_link(&|l| l.upstream.ingest.len().to_string()),
        );
        family(
            "moqcast_cluster_link_received_bytes_total",
            "counter",
            "Bytes received over a link.",
            per_link(&|l| l.conn.stats().udp_rx.bytes.to_string()),
        );
        let mut connects: Vec<(String, String)> = self
            .connects
            .lock()
            .expect("poisoned")
            .iter()
            .map(|(p, n)| (p.clone(), n.to_string()))
            .collect();
        connects.sort();
        family(
            "moqcast_cluster_peer_connects_total",
            "counter",
            "Links set up to a peer (reconnections after the first).",
            connects,
        );
        family(
            "moqcast_cluster_link_rtt_seconds",
            "gauge",
            "A link's smoothed round-trip time.",
            per_link(&|l| format!("{:.6}", l.conn.rtt().as_secs_f64())),
        );
        out
    }
}
