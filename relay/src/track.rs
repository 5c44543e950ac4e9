//! The relay's copy of a track: a bounded group cache ([`GroupStore`]) plus where its
//! upstream stands, shared by every subscriber of the track; the relay-wide cache budget.
//!
//! One upstream request feeds each [`TrackCache`] (a SUBSCRIBE the relay made, or a PUBLISH it
//! accepted); [`crate::ingest`] reads the upstream's data into it, and one pump per subscriber
//! ([`crate::fanout::pump`]) copies out of it. The cache wakes pumps through a watch channel,
//! once per shard ([`TrackCache::subscribe`]).

use std::{
    collections::HashMap,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc, Mutex, TryLockError, Weak,
    },
};

use tokio::{sync::watch, time::Instant};

use crate::{
    budget,
    cache::{CacheLimits, CachedObject, GroupNumbers, GroupStore, Key},
    metrics::Metrics,
    policy::TrackError,
};

/// Where a track's upstream stands.
#[derive(Debug, Clone)]
pub enum UpstreamState {
    /// SUBSCRIBE sent, no answer yet.
    Pending,
    /// The upstream accepted (SUBSCRIBE_OK, or an accepted PUBLISH); no object yet.
    Accepted,
    /// Objects are flowing.
    Live,
    /// The upstream subscription ended (cleanly with `None`).
    Ended(Option<TrackError>),
}

/// How the upstream delivers objects (draft-18 §2.3): subgroup streams or datagrams.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Delivery {
    Subgroups,
    Datagrams,
}

struct Inner {
    store: GroupStore,
    upstream: UpstreamState,
    delivery: Option<Delivery>,
    /// The cache's group IDs for the groups of its current and earlier upstreams.
    numbers: GroupNumbers,
}

/// Where a publisher's tracks are ingested: its session's runtime, and its shard if it is on
/// one.
#[derive(Debug, Clone)]
pub struct IngestHome {
    pub runtime: tokio::runtime::Handle,
    pub shard: Option<usize>,
}

impl IngestHome {
    /// The calling task's runtime and shard.
    pub fn current() -> Option<Self> {
        tokio::runtime::Handle::try_current()
            .ok()
            .map(|runtime| Self {
                runtime,
                shard: crate::shard::current(),
            })
    }
}

/// The relay's copy of one track: recent groups plus the upstream's state.
pub struct TrackCache {
    pub broadcast: String,
    pub name: String,
    inner: Mutex<Inner>,
    changed: watch::Sender<u64>,
    /// Per shard, the local copy of `changed` its pumps wait on ([`TrackCache::subscribe`]).
    shard_changed: Mutex<Vec<Weak<watch::Sender<u64>>>>,
    /// The shard the upstream ingest runs on (`usize::MAX`: none, or not known yet).
    ingest_shard: std::sync::atomic::AtomicUsize,
    metrics: Arc<Metrics>,
    upstream_task: Mutex<Option<tokio::task::AbortHandle>>,
    /// Set when the upstream ingest finished.
    ingest_done: Arc<watch::Sender<bool>>,
    /// Subgroup streams the relay is reading itself ([`crate::ingest`]) into this cache.
    direct_streams: Arc<watch::Sender<usize>>,
    /// The relay-wide budget this cache counts against, and its id there.
    budget: Arc<CacheBudget>,
    budget_id: u64,
}

impl std::fmt::Debug for TrackCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TrackCache")
            .field("broadcast", &self.broadcast)
            .field("name", &self.name)
            .finish()
    }
}

impl Drop for TrackCache {
    fn drop(&mut self) {
        // The last subscriber left: cancel the upstream subscription (sends UNSUBSCRIBE).
        if let Some(task) = self.upstream_task.lock().expect("poisoned").take() {
            task.abort();
        }
        let bytes = self.inner.lock().map(|i| i.store.bytes()).unwrap_or(0);
        self.metrics
            .cache_bytes
            .fetch_sub(bytes as u64, Ordering::Relaxed);
        self.metrics.tracks.fetch_sub(1, Ordering::Relaxed);
        self.budget.unregister(self.budget_id);
    }
}

impl TrackCache {
    pub fn new(
        broadcast: &str,
        name: &str,
        limits: CacheLimits,
        budget: Arc<CacheBudget>,
    ) -> Arc<Self> {
        let metrics = budget.metrics.clone();
        metrics.tracks.fetch_add(1, Ordering::Relaxed);
        let cache = Arc::new(Self {
            broadcast: broadcast.into(),
            name: name.into(),
            inner: Mutex::new(Inner {
                store: GroupStore::new(limits),
                upstream: UpstreamState::Pending,
                delivery: None,
                numbers: GroupNumbers::default(),
            }),
            changed: watch::channel(0).0,
            shard_changed: Mutex::new(Vec::new()),
            ingest_shard: std::sync::atomic::AtomicUsize::new(usize::MAX),
            metrics,
            upstream_task: Mutex::new(None),
            ingest_done: Arc::new(watch::channel(false).0),
            direct_streams: Arc::new(watch::channel(0).0),
            budget_id: budget.next_id.fetch_add(1, Ordering::Relaxed),
            budget,
        });
        cache.budget.register(&cache);
        cache
    }

    /// A receiver of the cache's change counter for a pump. On a shard other than the
    /// ingest's it is the shard's local copy: one task per shard and track waits on the cache
    /// and wakes the shard's pumps, so a push from another shard wakes that shard's thread
    /// once, not once per pump (a wake from another thread costs the woken runtime an eventfd
    /// write). On the ingest's own shard, pumps wait on the cache directly.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        let Some(shard) = crate::shard::current() else {
            return self.changed.subscribe();
        };
        if self.ingest_shard.load(Ordering::Relaxed) == shard {
            return self.changed.subscribe();
        }
        let mut locals = self.shard_changed.lock().expect("poisoned");
        if locals.len() <= shard {
            locals.resize_with(shard + 1, Weak::new);
        }
        if let Some(local) = locals[shard].upgrade() {
            return local.subscribe();
        }
        let mut upstream = self.changed.subscribe();
        let local = Arc::new(watch::channel(*upstream.borrow_and_update()).0);
        locals[shard] = Arc::downgrade(&local);
        let rx = local.subscribe();
        // Ends when the shard's last pump of this track drops its receiver (`closed` re-checks,
        // so a pump subscribing meanwhile keeps it), or when the cache goes.
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    res = upstream.changed() => {
                        if res.is_err() {
                            break;
                        }
                        local.send_replace(*upstream.borrow_and_update());
                    }
                    () = local.closed() => break,
                }
            }
        });
        rx
    }

    /// Changes the cache under its lock, keeps the byte gauge and eviction counter current,
    /// wakes the pumps, and applies the relay-wide budget if the cache grew.
    fn update<R>(&self, f: impl FnOnce(&mut Inner) -> R) -> R {
        let (r, grew) = {
            let mut inner = self.inner.lock().expect("poisoned");
            let before = inner.store.bytes();
            let evicted_before = inner.store.evicted;
            let r = f(&mut inner);
            let after = inner.store.bytes();
            if after >= before {
                self.metrics
                    .cache_bytes
                    .fetch_add((after - before) as u64, Ordering::Relaxed);
            } else {
                self.metrics
                    .cache_bytes
                    .fetch_sub((before - after) as u64, Ordering::Relaxed);
            }
            let evicted = inner.store.evicted - evicted_before;
            if evicted > 0 {
                self.metrics
                    .cache_evictions
                    .fetch_add(evicted, Ordering::Relaxed);
            }
            (r, after > before)
        };
        self.changed.send_modify(|v| *v = v.wrapping_add(1));
        if grew {
            self.budget.enforce();
        }
        r
    }

    /// What the relay-wide budget may evict here: every subgroup but the newest group's while
    /// the track is live (all of them once it ended), oldest first.
    fn budget_candidates(&self) -> Vec<budget::Evictable> {
        let inner = self.inner.lock().expect("poisoned");
        let live = !matches!(inner.upstream, UpstreamState::Ended(_));
        inner.store.evictable(live)
    }

    /// Evicts up to `n` of the oldest subgroups for the relay-wide budget; (subgroups, bytes).
    fn evict_for_budget(&self, n: usize) -> (usize, usize) {
        self.update(|inner| {
            let live = !matches!(inner.upstream, UpstreamState::Ended(_));
            inner.store.evict_oldest(n, live)
        })
    }

    /// Subgroups or datagrams, once known.
    pub fn delivery(&self) -> Option<Delivery> {
        self.inner.lock().expect("poisoned").delivery
    }

    pub fn upstream(&self) -> UpstreamState {
        self.inner.lock().expect("poisoned").upstream.clone()
    }

    /// The largest (group, object) cached.
    pub fn largest(&self) -> Option<(u64, u64)> {
        self.inner.lock().expect("poisoned").store.largest()
    }

    /// Calls `f` with the store (read-only).
    pub fn with_store<R>(&self, f: impl FnOnce(&GroupStore) -> R) -> R {
        f(&self.inner.lock().expect("poisoned").store)
    }

    /// Waits until the upstream delivered something or ended; false when it ended with no data.
    pub async fn ready(&self) -> Result<(), Option<TrackError>> {
        let mut rx = self.changed.subscribe();
        loop {
            {
                let inner = self.inner.lock().expect("poisoned");
                match &inner.upstream {
                    UpstreamState::Live | UpstreamState::Accepted => return Ok(()),
                    UpstreamState::Ended(_) if !inner.store.is_empty() => return Ok(()),
                    UpstreamState::Ended(e) => return Err(e.clone()),
                    UpstreamState::Pending => {}
                }
            }
            if rx.changed().await.is_err() {
                return Err(None);
            }
        }
    }

    /// The upstream accepted the subscription.
    pub fn accept(&self) {
        self.update(|inner| {
            if matches!(inner.upstream, UpstreamState::Pending) {
                inner.upstream = UpstreamState::Accepted;
            }
        });
    }

    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// The largest object the cache takes.
    pub fn max_object_bytes(&self) -> usize {
        self.with_store(|s| s.limits().max_bytes)
    }

    /// Opens a subgroup that upstream `epoch` started ([`Self::repoint`]). Returns the group's
    /// ID in this cache ([`GroupNumbers`]), or `None` (counted and logged) if the cache
    /// refuses it: a replaced upstream's, or one it cannot take.
    pub fn open_subgroup(
        &self,
        epoch: u64,
        group: u64,
        subgroup: u64,
        priority: u8,
    ) -> Option<u64> {
        let opened = self.update(|inner| {
            let id = match inner.numbers.number(epoch, group) {
                Ok(id) => id,
                Err(e) => return Err(Refused::Number(e)),
            };
            inner.upstream = UpstreamState::Live;
            inner.delivery = Some(Delivery::Subgroups);
            inner
                .store
                .open(id, subgroup, priority, Instant::now())
                .map(|()| id)
                .map_err(Refused::Cache)
        });
        match opened {
            Ok(id) => Some(id),
            Err(Refused::Number(e)) => {
                tracing::debug!(group, error = %e, "dropping an upstream subgroup");
                None
            }
            Err(Refused::Cache(e)) => {
                self.metrics.errors.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(error = %e, "dropping upstream subgroup");
                None
            }
        }
    }

    /// Adds an object of upstream `epoch` to its open subgroup; false if the cache refuses
    /// it (counted and logged, unless that upstream was replaced), which ends the subgroup.
    pub fn push_object(&self, epoch: u64, key: Key, object: CachedObject) -> bool {
        self.metrics.objects_in.fetch_add(1, Ordering::Relaxed);
        self.metrics
            .bytes_in
            .fetch_add(object.payload.len() as u64, Ordering::Relaxed);
        let pushed = self.update(|inner| {
            if inner.numbers.epoch() != epoch {
                return Ok(false);
            }
            inner.store.push(key, object, Instant::now()).map(|()| true)
        });
        match pushed {
            Ok(pushed) => pushed,
            Err(e) => {
                self.metrics.errors.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(
                    group = key.0,
                    subgroup = key.1,
                    error = %e,
                    "dropping upstream object"
                );
                false
            }
        }
    }

    /// Ends an upstream subgroup: complete, or cut short.
    pub fn end_subgroup(&self, key: Key, clean: bool) {
        self.update(|inner| inner.store.end(key, clean));
    }

    /// Counts a subgroup stream the relay reads itself until the guard drops: a track whose
    /// upstream ended still takes in what those streams deliver, within the drain grace.
    pub fn open_direct_stream(&self) -> DirectStreamGuard {
        self.direct_streams.send_modify(|n| *n += 1);
        DirectStreamGuard(self.direct_streams.clone())
    }

    /// Ends the track (publisher left or upstream failed).
    pub fn end(&self, err: Option<TrackError>) {
        self.update(|inner| {
            if !matches!(inner.upstream, UpstreamState::Ended(_)) {
                inner.upstream = UpstreamState::Ended(err);
            }
        });
    }

    /// Ends the track if upstream `epoch` is still its upstream: one that was replaced
    /// ([`Self::repoint`]) ends nothing.
    fn end_upstream(&self, epoch: u64, err: Option<TrackError>) {
        self.update(|inner| {
            let current = inner.numbers.epoch() == epoch;
            if current && !matches!(inner.upstream, UpstreamState::Ended(_)) {
                inner.upstream = UpstreamState::Ended(err);
            }
        });
    }

    /// Moves the track to another upstream (a take-over, or the previous publisher serving the
    /// name again) without ending it for its subscribers: the current upstream task is aborted
    /// (which cancels its request and unroutes its data streams), `driver` gets the new
    /// upstream's epoch to route its data streams under, and the new upstream's groups follow
    /// the last group the cache has seen ([`GroupNumbers`]), so pumps open them as they come:
    /// subscribers go on at the new publisher's first group. Returns false, doing nothing, when
    /// the track has already ended.
    pub fn repoint<F>(
        self: &Arc<Self>,
        home: Option<&IngestHome>,
        driver: impl FnOnce(u64) -> F,
    ) -> bool
    where
        F: std::future::Future<Output = Result<(), TrackError>> + Send + 'static,
    {
        // The old upstream's unfinished subgroups end here (subscribers reset them), so its
        // late objects are not interleaved with the new publisher's groups.
        let epoch = self.update(|inner| {
            if matches!(inner.upstream, UpstreamState::Ended(_)) {
                return None;
            }
            inner.store.abort_open();
            Some(inner.numbers.next_epoch())
        });
        let Some(epoch) = epoch else {
            return false;
        };
        if let Some(task) = self.upstream_task.lock().expect("poisoned").take() {
            task.abort();
        }
        self.ingest_done.send_replace(false);
        self.spawn_upstream(home, driver(epoch));
        true
    }

    /// The epoch of the current upstream, under which its data is routed ([`Self::repoint`]).
    pub fn epoch(&self) -> u64 {
        self.inner.lock().expect("poisoned").numbers.epoch()
    }

    /// Runs `driver` (the upstream request: SUBSCRIBE or an accepted PUBLISH, whose data
    /// streams [`crate::ingest`] reads into this cache under the current [`Self::epoch`]) at
    /// `home` (the publisher's shard) or else on the current runtime. The task belongs to the
    /// cache: dropping the last handle cancels it, which cancels the upstream request.
    pub fn spawn_upstream<F>(self: &Arc<Self>, home: Option<&IngestHome>, driver: F)
    where
        F: std::future::Future<Output = Result<(), TrackError>> + Send + 'static,
    {
        let shard = match home {
            Some(h) => h.shard,
            None => crate::shard::current(),
        };
        self.ingest_shard
            .store(shard.unwrap_or(usize::MAX), Ordering::Relaxed);
        let weak = Arc::downgrade(self);
        let epoch = self.epoch();
        let span =
            tracing::info_span!("upstream", broadcast = %self.broadcast, track = %self.name, epoch);
        let done = self.ingest_done.clone();
        let mut direct = self.direct_streams.subscribe();
        let task = tracing::Instrument::instrument(
            async move {
                let res = driver.await.err();
                // The request ended (PUBLISH_DONE, session gone): the data streams the relay
                // reads may still be delivering the track's tail.
                let _ = tokio::time::timeout(DRAIN_GRACE, direct.wait_for(|n| *n == 0)).await;
                done.send_replace(true);
                if let Some(cache) = weak.upgrade() {
                    tracing::debug!(error = ?res, "upstream ended");
                    cache.end_upstream(epoch, res);
                }
            },
            span,
        );
        let task = match home {
            Some(h) => h.runtime.spawn(task),
            None => tokio::spawn(task),
        };
        *self.upstream_task.lock().expect("poisoned") = Some(task.abort_handle());
    }

    /// Ends the track once its upstream has delivered what it already received (or after a
    /// short grace period): used when the publisher's session or request ends.
    pub fn end_after_drain(self: &Arc<Self>, err: Option<TrackError>) {
        let mut done = self.ingest_done.subscribe();
        let weak = Arc::downgrade(self);
        tokio::spawn(async move {
            let _ = tokio::time::timeout(DRAIN_GRACE, done.wait_for(|d| *d)).await;
            if let Some(cache) = weak.upgrade() {
                cache.end(err);
            }
        });
    }
}

/// The relay-wide cache budget (`--cache-total-bytes`). Every track cache registers here; when
/// their payload together exceeds the budget, the oldest subgroups of the caches with the most
/// evictable bytes are evicted ([`crate::budget`] decides which), never the newest group of a
/// live track. Pumps still reading an evicted subgroup reset it, as for the track's own limits.
pub struct CacheBudget {
    limit: u64,
    metrics: Arc<Metrics>,
    caches: Mutex<HashMap<u64, Weak<TrackCache>>>,
    next_id: AtomicU64,
    /// Held by the one caller enforcing the budget; others need not wait.
    enforcing: Mutex<()>,
}

impl std::fmt::Debug for CacheBudget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CacheBudget")
            .field("limit", &self.limit)
            .finish()
    }
}

impl CacheBudget {
    pub fn new(limit: u64, metrics: Arc<Metrics>) -> Arc<Self> {
        metrics.cache_budget_bytes.store(limit, Ordering::Relaxed);
        Arc::new(Self {
            limit,
            metrics,
            caches: Mutex::new(HashMap::new()),
            next_id: AtomicU64::new(0),
            enforcing: Mutex::new(()),
        })
    }

    pub fn limit(&self) -> u64 {
        self.limit
    }

    /// Payload bytes held by all track caches now.
    pub fn used(&self) -> u64 {
        self.metrics.cache_bytes.load(Ordering::Relaxed)
    }

    fn register(&self, cache: &Arc<TrackCache>) {
        self.caches
            .lock()
            .expect("poisoned")
            .insert(cache.budget_id, Arc::downgrade(cache));
    }

    fn unregister(&self, id: u64) {
        self.caches.lock().expect("poisoned").remove(&id);
    }

    /// Evicts until the caches fit the budget, or nothing more may be evicted. Cheap when
    /// within budget. If another thread is already enforcing, returns at once: that one
    /// frees enough for both.
    pub fn enforce(&self) {
        if self.used() <= self.limit {
            return;
        }
        let _one = match self.enforcing.try_lock() {
            Ok(guard) => guard,
            Err(TryLockError::Poisoned(p)) => p.into_inner(),
            Err(TryLockError::WouldBlock) => return,
        };
        // A few passes at most: objects arriving meanwhile trigger their own call.
        for _ in 0..4 {
            let used = self.used();
            if used <= self.limit {
                return;
            }
            let caches: Vec<Arc<TrackCache>> = self
                .caches
                .lock()
                .expect("poisoned")
                .values()
                .filter_map(Weak::upgrade)
                .collect();
            let candidates: Vec<_> = caches.iter().map(|c| c.budget_candidates()).collect();
            let plan = budget::plan(&candidates, used - self.limit);
            let (mut count, mut bytes) = (0, 0);
            for (cache, n) in caches.iter().zip(plan) {
                if n > 0 {
                    let (c, b) = cache.evict_for_budget(n);
                    count += c;
                    bytes += b;
                }
            }
            if count == 0 {
                tracing::debug!(
                    used,
                    limit = self.limit,
                    "cache budget exceeded by newest groups only"
                );
                return;
            }
            self.metrics
                .cache_budget_evictions
                .fetch_add(count as u64, Ordering::Relaxed);
            self.metrics
                .cache_budget_evicted_bytes
                .fetch_add(bytes as u64, Ordering::Relaxed);
            tracing::debug!(
                subgroups = count,
                bytes,
                limit = self.limit,
                "relay cache budget: evicted"
            );
        }
    }
}

/// Why an upstream's subgroup or datagram was not cached.
enum Refused {
    Number(crate::cache::NumberError),
    Cache(crate::cache::CacheError),
}

/// How long a departing upstream's already-received objects are still taken in.
const DRAIN_GRACE: std::time::Duration = std::time::Duration::from_secs(2);

/// Holds one count of [`TrackCache::open_direct_stream`].
#[derive(Debug)]
pub struct DirectStreamGuard(Arc<watch::Sender<usize>>);

impl Drop for DirectStreamGuard {
    fn drop(&mut self) {
        self.0.send_modify(|n| *n -= 1);
    }
}

/// Datagrams are cached like subgroup objects, one cache entry per group (subgroup
/// [`DATAGRAM_SUBGROUP`]).
pub const DATAGRAM_SUBGROUP: u64 = u64::MAX;

impl TrackCache {
    /// Caches one object that arrived as a datagram (draft-18 §10.3) from upstream `epoch`.
    pub fn push_datagram(
        &self,
        epoch: u64,
        group: u64,
        object: CachedObject,
        priority: u8,
        end_of_group: bool,
    ) {
        self.metrics.objects_in.fetch_add(1, Ordering::Relaxed);
        self.metrics
            .bytes_in
            .fetch_add(object.payload.len() as u64, Ordering::Relaxed);
        let res = self.update(|inner| {
            let group = inner
                .numbers
                .number(epoch, group)
                .map_err(Refused::Number)?;
            let key = (group, DATAGRAM_SUBGROUP);
            inner.upstream = UpstreamState::Live;
            inner.delivery = Some(Delivery::Datagrams);
            let now = Instant::now();
            if inner.store.get(key).is_none() {
                inner
                    .store
                    .open(group, DATAGRAM_SUBGROUP, priority, now)
                    .map_err(Refused::Cache)?;
            }
            inner.store.push(key, object, now).map_err(Refused::Cache)?;
            if end_of_group {
                inner.store.end(key, true);
            }
            Ok::<(), Refused>(())
        });
        match res {
            Ok(()) => {}
            Err(Refused::Number(e)) => tracing::debug!(error = %e, "dropping upstream datagram"),
            Err(Refused::Cache(e)) => {
                self.metrics.errors.fetch_add(1, Ordering::Relaxed);
                tracing::debug!(error = %e, "dropping upstream datagram");
            }
        }
    }
}

impl TrackCache {
    /// Calls `f` with the store, how the upstream ended (`None` while it lives), and whether
    /// the track is delivered as datagrams: what a subscriber's policy needs, under one lock.
    pub(crate) fn view<R>(
        &self,
        f: impl FnOnce(&GroupStore, Option<Option<TrackError>>, bool) -> R,
    ) -> R {
        let inner = self.inner.lock().expect("poisoned");
        let ended = match &inner.upstream {
            UpstreamState::Ended(e) => Some(e.clone()),
            _ => None,
        };
        f(
            &inner.store,
            ended,
            inner.delivery == Some(Delivery::Datagrams),
        )
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use bytes::Bytes;

    use super::*;
    use crate::cache::CacheLimits;

    fn limits() -> CacheLimits {
        CacheLimits {
            max_bytes: 10_000,
            max_groups: 100,
            max_age: Duration::from_secs(600),
        }
    }

    /// Opens group `g` at `at` with one object of `bytes`.
    fn group(c: &TrackCache, g: u64, bytes: usize, at: Instant) {
        c.update(|inner| {
            inner.store.open(g, 0, 0, at).unwrap();
            let obj = CachedObject::new(0, Default::default(), Bytes::from(vec![0u8; bytes]));
            inner.store.push((g, 0), obj, at).unwrap();
        });
    }

    fn groups(c: &TrackCache) -> Vec<u64> {
        c.with_store(|s| s.keys().iter().map(|k| k.0).collect())
    }

    #[test]
    fn relay_budget_evicts_oldest_groups_of_the_largest_cache() {
        let metrics = Arc::new(Metrics::default());
        let budget = CacheBudget::new(5_000, metrics.clone());
        let video = TrackCache::new("b", "video", limits(), budget.clone());
        let audio = TrackCache::new("b", "audio", limits(), budget.clone());
        let t0 = Instant::now();
        let at = |ms| t0 + Duration::from_millis(ms);
        group(&audio, 0, 200, at(0));
        group(&audio, 1, 200, at(1000));
        group(&video, 0, 1500, at(0));
        group(&video, 1, 1500, at(1000));
        assert_eq!(metrics.cache_bytes.load(Ordering::Relaxed), 3400);
        // 3400 + 1500 = 4900: still within the budget.
        group(&video, 2, 1500, at(2000));
        assert_eq!(metrics.cache_budget_evictions.load(Ordering::Relaxed), 0);
        // 6400: over by 1400; video holds the most evictable bytes: its oldest group goes.
        group(&video, 3, 1500, at(3000));
        assert_eq!(groups(&video), vec![1, 2, 3]);
        assert_eq!(
            groups(&audio),
            vec![0, 1],
            "the small cache keeps its history"
        );
        assert_eq!(metrics.cache_bytes.load(Ordering::Relaxed), 4900);
        assert_eq!(metrics.cache_budget_evictions.load(Ordering::Relaxed), 1);
        assert_eq!(
            metrics.cache_budget_evicted_bytes.load(Ordering::Relaxed),
            1500
        );
        assert_eq!(metrics.cache_evictions.load(Ordering::Relaxed), 0);
        assert!(budget.used() <= budget.limit());
    }

    #[test]
    fn relay_budget_never_evicts_the_newest_group_of_a_live_track() {
        let metrics = Arc::new(Metrics::default());
        let budget = CacheBudget::new(1_000, metrics.clone());
        let t0 = Instant::now();
        let tracks: Vec<_> = (0..3)
            .map(|i| TrackCache::new("b", &format!("t{i}"), limits(), budget.clone()))
            .collect();
        for (i, t) in tracks.iter().enumerate() {
            group(t, 0, 600, t0 + Duration::from_millis(i as u64));
        }
        // 1800 bytes over a 1000-byte budget, but each is its track's newest group.
        assert_eq!(metrics.cache_bytes.load(Ordering::Relaxed), 1800);
        assert_eq!(metrics.cache_budget_evictions.load(Ordering::Relaxed), 0);
        for t in &tracks {
            assert_eq!(groups(t), vec![0]);
        }
        // A track that ended may lose its newest group at the next enforcement.
        tracks[0].end(None);
        group(&tracks[1], 1, 100, t0 + Duration::from_millis(10));
        assert!(groups(&tracks[0]).is_empty());
        assert!(
            !groups(&tracks[1]).is_empty() && groups(&tracks[1]).contains(&1),
            "live tracks keep their newest group"
        );
        assert!(metrics.cache_bytes.load(Ordering::Relaxed) <= 1000);
        // Dropped caches leave the budget and the gauge.
        drop(tracks);
        assert_eq!(metrics.cache_bytes.load(Ordering::Relaxed), 0);
        assert!(budget.caches.lock().unwrap().is_empty());
    }

    #[test]
    fn per_track_evictions_are_counted() {
        let metrics = Arc::new(Metrics::default());
        let budget = CacheBudget::new(1 << 30, metrics.clone());
        let t = TrackCache::new(
            "b",
            "v",
            CacheLimits {
                max_groups: 2,
                ..limits()
            },
            budget,
        );
        let t0 = Instant::now();
        for g in 0..5 {
            group(&t, g, 10, t0);
        }
        assert_eq!(groups(&t), vec![3, 4]);
        assert_eq!(metrics.cache_evictions.load(Ordering::Relaxed), 3);
        assert_eq!(metrics.cache_budget_evictions.load(Ordering::Relaxed), 0);
    }

    /// A take-over re-points a live track: the old upstream task is aborted and can no longer
    /// end the track or add to it, its unfinished group is cut, and the new upstream's groups
    /// (numbered from 0 again) follow the last group the subscriber saw; its policy opens them
    /// at once, and its subscription goes on.
    #[tokio::test]
    async fn a_repointed_track_carries_its_subscribers_over_to_the_new_upstream() {
        use crate::policy::{reset, Policy, Start, Window};
        let metrics = Arc::new(Metrics::default());
        let budget = CacheBudget::new(1 << 30, metrics.clone());
        let c = TrackCache::new("b", "video", limits(), budget);
        let (old_alive, old_gone) = tokio::sync::oneshot::channel::<()>();
        c.spawn_upstream(None, async move {
            let _alive = old_alive;
            std::future::pending().await
        });
        let obj = |id| CachedObject::new(id, Default::default(), Bytes::from_static(b"frame"));
        assert_eq!(c.open_subgroup(0, 7, 0, 0), Some(7));
        assert!(c.push_object(0, (7, 0), obj(0)));
        c.end_subgroup((7, 0), true);
        assert_eq!(c.open_subgroup(0, 8, 0, 0), Some(8));
        assert!(c.push_object(0, (8, 0), obj(0)));
        let mut viewer = Policy::new(Window::live(Start::Newest));
        let plan = c.view(|s, ended, _| viewer.plan(s, ended, u64::MAX));
        assert_eq!(plan.open, vec![((8, 0), 0)]);

        let (started, epoch) = tokio::sync::oneshot::channel();
        let repointed = c.repoint(None, move |epoch| async move {
            let _ = started.send(epoch);
            std::future::pending().await
        });
        assert!(repointed);
        assert_eq!(epoch.await.unwrap(), 1);
        assert!(old_gone.await.is_err(), "the old upstream task is aborted");
        // The old upstream's late objects and groups are refused, quietly.
        assert!(!c.push_object(0, (8, 0), obj(1)));
        assert_eq!(c.open_subgroup(0, 9, 0, 0), None);
        assert_eq!(metrics.errors.load(Ordering::Relaxed), 0);
        // The new publisher starts at group 0: it follows group 8.
        assert_eq!(c.open_subgroup(1, 0, 0, 0), Some(9));
        assert!(c.push_object(1, (9, 0), obj(0)));
        let plan = c.view(|s, ended, _| viewer.plan(s, ended, u64::MAX));
        assert_eq!(plan.reset, vec![((8, 0), reset::TOO_FAR_BEHIND)]);
        assert_eq!(plan.open, vec![((9, 0), 0)]);
        assert_eq!(plan.send.len(), 1);
        assert!(plan.done.is_none(), "the subscription goes on");
        // The replaced upstream ending late ends nothing; the current one ends the track.
        c.end_upstream(0, Some(TrackError::Closed(0x4)));
        assert!(matches!(c.upstream(), UpstreamState::Live));
        c.end_upstream(1, None);
        assert!(matches!(c.upstream(), UpstreamState::Ended(None)));
        assert!(
            !c.repoint(None, |_| async { Ok(()) }),
            "an ended track stays ended"
        );
    }
}
