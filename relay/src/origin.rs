//! The relay's registry of live broadcasts (announced namespaces) and their tracks.
//!
//! * A publisher's PUBLISH_NAMESPACE makes its namespace a broadcast here. If the same namespace
//!   is announced again (a publisher reconnecting before its old session timed out, or a
//!   take-over, which auth allows only to a token that may publish the name), the newest session
//!   wins and the tracks being watched are handed over: each track cache gets an upstream
//!   SUBSCRIBE on the new session and the old one is cancelled, so subscribers carry on at the
//!   new publisher's first group ([`TrackCache::repoint`]). A track the new publisher does not
//!   have ends for its subscribers with [`TrackError::NotWithNewPublisher`].
//! * When the publishing session ends or sends PUBLISH_NAMESPACE_DONE, the broadcast is removed,
//!   its tracks end and namespace subscribers get NAMESPACE_DONE; unless it had taken the name
//!   over from a session that is still up: that one serves the name again, and the tracks are
//!   handed back to it the same way.
//! * A track gets one upstream SUBSCRIBE the first time anyone subscribes; later subscribers
//!   share its cache. When the last subscriber leaves, the cache is dropped and the upstream
//!   subscription cancelled.

use std::{
    collections::HashMap,
    sync::{atomic::Ordering, Arc, Mutex, Weak},
};

use moqcast_media::moq::{self, transport::coding::KeyValuePairs, TrackNamespace};
use moqcast_session::io::{self as session, Session};

use crate::{
    cache::CacheLimits,
    ingest::IngestRoutes,
    metrics::Metrics,
    policy::TrackError,
    track::{CacheBudget, TrackCache},
};

/// How the relay reaches a broadcast's publisher: its MoQ session, and the session's ingest
/// routes (where the data streams of the tracks the relay subscribes to go).
#[derive(Clone)]
pub struct Upstream {
    pub session: Session,
    pub ingest: IngestRoutes,
}

/// How long a finished upstream subscription waits for data streams PUBLISH_DONE counted but
/// that have not arrived yet.
const LATE_STREAMS: std::time::Duration = std::time::Duration::from_secs(2);

/// How long an upstream subscription that ended waits before ending its track, while a
/// previous publisher of the broadcast is on standby: the publisher leaving hands the track back
/// to that one ([`Origin::unannounce`]), which aborts the wait.
const HANDBACK_GRACE: std::time::Duration = std::time::Duration::from_secs(2);

/// Broadcasts taken over by a newer session while theirs is still up, by path, newest last.
type Standby = Arc<Mutex<HashMap<String, Vec<Arc<Broadcast>>>>>;

/// Broadcasts whose upstream went away while another may take them over (a cluster link
/// closed, [`Origin::park`]), by path, with the time until which their tracks wait.
type Parked = Arc<Mutex<HashMap<String, std::time::Instant>>>;

/// Where an upstream subscription looks, when it ends, for a reason to keep its track a while:
/// a publisher on standby, or a parked broadcast.
#[derive(Clone)]
struct Handback {
    standby: Standby,
    parked: Parked,
    path: String,
}

/// A track of a broadcast that the relay subscribed to upstream.
struct TrackEntry {
    cache: Weak<TrackCache>,
    /// The namespace it was asked for (the broadcast's, or one below it).
    namespace: TrackNamespace,
}

/// A track being handed from one publisher's broadcast to another's.
struct Moved {
    cache: Arc<TrackCache>,
    namespace: TrackNamespace,
    name: String,
}

/// The upstream request feeding `cache`: a SUBSCRIBE to `track` on `upstream`'s session, whose
/// data streams are routed into the cache as upstream `epoch`. `handed_over`: the track was
/// moved here from another publisher, so a refusal means this one does not have it.
async fn subscribe_upstream(
    upstream: Upstream,
    namespace: TrackNamespace,
    track: String,
    cache: Weak<TrackCache>,
    epoch: u64,
    handed_over: bool,
    handback: Handback,
) -> Result<(), TrackError> {
    let Upstream { session, ingest } = upstream;
    let res = async {
        let mut sub = session
            .subscribe(namespace, &track, KeyValuePairs::default())
            .await
            .map_err(|e| match upstream_error(e) {
                TrackError::NotFound if handed_over => TrackError::NotWithNewPublisher,
                e => e,
            })?;
        let priority = sub.properties.default_publisher_priority().ok().flatten();
        let Some(c) = cache.upgrade() else {
            return Ok(());
        };
        // From here on the track's data streams are read into the cache.
        let route = ingest.insert(sub.track_alias, &c, priority, epoch);
        c.accept();
        drop(c);
        let done = sub.done().await.map_err(upstream_error)?;
        // Streams PUBLISH_DONE counted may still be on their way (draft-18 §9.12).
        let deadline = tokio::time::Instant::now() + LATE_STREAMS;
        while route.streams() < done.stream_count && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        match done.status {
            s if s == moq::transport::message::PublishDoneCode::TrackEnded as u64 => Ok(()),
            s => Err(TrackError::Closed(s)),
        }
    }
    .await;
    // A publisher that took the name over is leaving: its previous publisher, still up,
    // gets the track back (which aborts this task) rather than its subscribers losing it.
    let Handback {
        standby,
        parked,
        path,
    } = handback;
    let waiting = standby
        .lock()
        .expect("poisoned")
        .get(&path)
        .is_some_and(|v| !v.is_empty());
    if waiting && !matches!(res, Err(TrackError::NotWithNewPublisher)) {
        tokio::time::sleep(HANDBACK_GRACE).await;
    }
    // A parked broadcast's track waits for its new upstream (which aborts this task) until
    // the parking ends.
    let until = parked.lock().expect("poisoned").get(&path).copied();
    if let Some(until) = until {
        tokio::time::sleep_until(until.into()).await;
    }
    res
}

/// Maps a refused or failed upstream request to the track's error.
fn upstream_error(e: session::Error) -> TrackError {
    use moq::transport::message::RequestErrorCode as C;
    match e {
        session::Error::Refused { code, .. } if code == C::DoesNotExist as u64 => {
            TrackError::NotFound
        }
        session::Error::Refused { code, .. } if code == C::Timeout as u64 => TrackError::Timeout,
        e => TrackError::Internal(e.to_string()),
    }
}

/// A namespace came or went (for SUBSCRIBE_NAMESPACE).
#[derive(Debug, Clone)]
pub enum Announcement {
    Active(TrackNamespace),
    Ended(TrackNamespace),
}

/// One announced broadcast.
pub struct Broadcast {
    pub path: String,
    pub namespace: TrackNamespace,
    prefix: moq::transport::coding::TrackNamespacePrefix,
    pub session: u64,
    upstream: Option<Upstream>,
    /// The runtime and shard of the publisher's session: tracks read from it are ingested
    /// there, next to the publisher's connection.
    home: Option<crate::track::IngestHome>,
    /// Keyed by (full namespace path, track name): a subscriber may ask for a namespace below
    /// the announced one (prefix routing).
    tracks: Mutex<HashMap<(String, String), TrackEntry>>,
    /// Tracks pushed with PUBLISH stay cached while their publisher sends them.
    pushed: Mutex<HashMap<String, Arc<TrackCache>>>,
}

impl Broadcast {
    fn end_all(&self, err: Option<TrackError>) {
        let tracks: Vec<_> = self
            .tracks
            .lock()
            .expect("poisoned")
            .drain()
            .filter_map(|(_, t)| t.cache.upgrade())
            .collect();
        for t in tracks {
            t.end_after_drain(err.clone());
        }
        for (_, t) in self.pushed.lock().expect("poisoned").drain() {
            t.end_after_drain(err.clone());
        }
    }

    /// Names of the tracks cached now.
    pub fn track_names(&self) -> Vec<String> {
        let mut names: Vec<String> = self
            .tracks
            .lock()
            .expect("poisoned")
            .iter()
            .filter(|(_, t)| t.cache.strong_count() > 0)
            .map(|((ns, n), _)| {
                if *ns == self.path {
                    n.clone()
                } else {
                    format!("{ns}:{n}")
                }
            })
            .collect();
        names.extend(self.pushed.lock().expect("poisoned").keys().cloned());
        names.sort();
        names.dedup();
        names
    }
}

/// Moves `from`'s tracks that someone watches into `to` (when `to` has an upstream session to
/// subscribe on) and returns them for [`Origin::adopt`].
fn move_tracks(from: &Broadcast, to: &Broadcast) -> Vec<Moved> {
    let live: Vec<_> = from
        .tracks
        .lock()
        .expect("poisoned")
        .drain()
        .filter_map(|((_, name), t)| {
            t.cache.upgrade().map(|cache| Moved {
                cache,
                namespace: t.namespace,
                name,
            })
        })
        .collect();
    if to.upstream.is_some() {
        let mut tracks = to.tracks.lock().expect("poisoned");
        for m in &live {
            tracks.insert(
                (m.cache.broadcast.clone(), m.name.clone()),
                TrackEntry {
                    cache: Arc::downgrade(&m.cache),
                    namespace: m.namespace.clone(),
                },
            );
        }
    }
    live
}

/// Why a track could not be found.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum LookupError {
    #[error("no broadcast {0:?} is announced on this relay")]
    NoBroadcast(String),
    #[error("broadcast {0:?} has no track {1:?}")]
    NoTrack(String, String),
}

/// All broadcasts of this relay.
pub struct Origin {
    broadcasts: Mutex<HashMap<String, Arc<Broadcast>>>,
    /// Broadcasts taken over by a newer session while theirs is still up, newest last: when the
    /// newer one leaves, the previous one serves the name again.
    standby: Standby,
    /// Broadcasts whose tracks wait for a new upstream ([`Self::park`]).
    parked: Parked,
    events: tokio::sync::broadcast::Sender<Announcement>,
    /// Rendezvous waits (SUBSCRIBEs with RENDEZVOUS_TIMEOUT) by the broadcast path they wait
    /// for: an announcement or a PUBLISH wakes only the waiters of that name and the names below
    /// it, not every waiter of the relay.
    waiters: Mutex<HashMap<String, std::sync::Weak<tokio::sync::Notify>>>,
    limits: CacheLimits,
    /// The relay-wide cache budget every track cache counts against.
    budget: Arc<CacheBudget>,
    metrics: Arc<Metrics>,
}

impl Origin {
    pub fn new(limits: CacheLimits, budget: Arc<CacheBudget>, metrics: Arc<Metrics>) -> Self {
        Self {
            broadcasts: Mutex::new(HashMap::new()),
            standby: Arc::default(),
            parked: Arc::default(),
            events: tokio::sync::broadcast::channel(1024).0,
            waiters: Mutex::new(HashMap::new()),
            limits,
            budget,
            metrics,
        }
    }

    pub fn budget(&self) -> &Arc<CacheBudget> {
        &self.budget
    }

    fn handback(&self, path: &str) -> Handback {
        Handback {
            standby: self.standby.clone(),
            parked: self.parked.clone(),
            path: path.to_string(),
        }
    }

    /// Keeps `path`'s tracks (their subscribers waiting) when their upstream ends, until
    /// `until` or until the broadcast is announced again ([`Self::unpark`]).
    pub fn park(&self, path: &str, until: std::time::Instant) {
        let mut parked = self.parked.lock().expect("poisoned");
        let now = std::time::Instant::now();
        parked.retain(|_, t| *t > now);
        parked.insert(path.to_string(), until);
    }

    /// Ends `path`'s parking.
    pub fn unpark(&self, path: &str) {
        self.parked.lock().expect("poisoned").remove(path);
    }

    /// Registers a broadcast announced by `session`; replaces an older one of the same path.
    /// Called on the publisher's session, whose runtime then ingests the broadcast's tracks.
    pub fn announce(
        &self,
        namespace: TrackNamespace,
        session: u64,
        upstream: Option<Upstream>,
    ) -> Arc<Broadcast> {
        let path = moq::broadcast_path(&namespace);
        let b = Arc::new(Broadcast {
            path: path.clone(),
            prefix: moq::as_prefix(&namespace),
            namespace: namespace.clone(),
            session,
            upstream,
            home: crate::track::IngestHome::current(),
            tracks: Mutex::new(HashMap::new()),
            pushed: Mutex::new(HashMap::new()),
        });
        // The tracks move to the new broadcast before anyone can find it, so a subscriber
        // arriving meanwhile shares the handed-over cache rather than making another.
        let (old, moved) = {
            let mut map = self.broadcasts.lock().expect("poisoned");
            let old = map.get(&path).cloned();
            let moved = old.as_ref().map(|o| move_tracks(o, &b)).unwrap_or_default();
            map.insert(path.clone(), b.clone());
            (old, moved)
        };
        match old {
            Some(old) => {
                tracing::info!(broadcast = %path, old_session = old.session, session, tracks = moved.len(), "broadcast taken over by a new session: handing its tracks over");
                if old.session != session {
                    self.standby
                        .lock()
                        .expect("poisoned")
                        .entry(path.clone())
                        .or_default()
                        .push(old.clone());
                }
                self.adopt(&b, moved);
                // What could not be handed over (tracks pushed with PUBLISH) ends.
                old.end_all(Some(TrackError::Closed(
                    moq::transport::message::PublishDoneCode::GoingAway as u64,
                )));
            }
            None => {
                self.metrics.broadcasts.fetch_add(1, Ordering::Relaxed);
                tracing::info!(broadcast = %path, session, "broadcast announced");
            }
        }
        let _ = self.events.send(Announcement::Active(namespace));
        self.wake(&path);
        b
    }

    /// What a rendezvous wait for `namespace` waits on: notified when that broadcast, or one
    /// of its prefixes, is announced or gets a pushed track. Enable the `Notified` before
    /// looking the track up, so nothing is missed in between.
    pub fn waiter(&self, namespace: &TrackNamespace) -> Arc<tokio::sync::Notify> {
        let path = moq::broadcast_path(namespace);
        let mut map = self.waiters.lock().expect("poisoned");
        if let Some(n) = map.get(&path).and_then(std::sync::Weak::upgrade) {
            return n;
        }
        let n = Arc::new(tokio::sync::Notify::new());
        map.insert(path, Arc::downgrade(&n));
        // Forget the names nobody waits for any more, now and then.
        if map.len() >= 64 && map.len().is_power_of_two() {
            map.retain(|_, w| w.strong_count() > 0);
        }
        n
    }

    /// Wakes the waiters of `path` and of the names below it.
    fn wake(&self, path: &str) {
        let mut map = self.waiters.lock().expect("poisoned");
        map.retain(|name, w| {
            let Some(n) = w.upgrade() else {
                return false;
            };
            let below = name == path
                || path.is_empty()
                || (name.starts_with(path) && name.as_bytes().get(path.len()) == Some(&b'/'));
            if below {
                n.notify_waiters();
            }
            true
        });
    }

    /// The broadcast serving `namespace`: an exact match, else the longest announced prefix.
    pub fn find(&self, namespace: &TrackNamespace) -> Option<Arc<Broadcast>> {
        let path = moq::broadcast_path(namespace);
        let map = self.broadcasts.lock().expect("poisoned");
        if let Some(b) = map.get(&path) {
            return Some(b.clone());
        }
        map.values()
            .filter(|b| b.prefix.is_prefix_of(namespace))
            .max_by_key(|b| b.path.len())
            .cloned()
    }

    /// Removes `path` if `session` still owns it. When a session it took the name over from is
    /// still up, that one serves the name again.
    pub fn unannounce(&self, path: &str, session: u64) {
        let (removed, restored) = {
            let mut map = self.broadcasts.lock().expect("poisoned");
            let mut standby = self.standby.lock().expect("poisoned");
            let waiting = standby.entry(path.to_string()).or_default();
            waiting.retain(|b| b.session != session);
            let removed = match map.get(path) {
                Some(b) if b.session == session => map.remove(path),
                _ => None,
            };
            let restored = match removed {
                Some(_) => waiting.pop(),
                None => None,
            };
            if waiting.is_empty() {
                standby.remove(path);
            }
            let mut moved = Vec::new();
            if let (Some(r), Some(b)) = (&restored, &removed) {
                moved = move_tracks(b, r);
                map.insert(path.to_string(), r.clone());
            }
            (removed, restored.map(|r| (r, moved)))
        };
        let Some(b) = removed else {
            return;
        };
        match restored {
            Some((r, moved)) => {
                tracing::info!(broadcast = %path, session, previous_session = r.session, tracks = moved.len(), "broadcast left by its new session: the previous one serves it again");
                self.adopt(&r, moved);
                b.end_all(None);
                let _ = self.events.send(Announcement::Active(r.namespace.clone()));
                self.wake(path);
            }
            None => {
                b.end_all(None);
                self.metrics.broadcasts.fetch_sub(1, Ordering::Relaxed);
                tracing::info!(broadcast = %path, session, "broadcast ended");
                let _ = self.events.send(Announcement::Ended(b.namespace.clone()));
            }
        }
    }

    /// Removes every broadcast of a session that ended, on air or on standby.
    pub fn session_closed(&self, session: u64) {
        let mut paths: Vec<String> = self
            .broadcasts
            .lock()
            .expect("poisoned")
            .values()
            .filter(|b| b.session == session)
            .map(|b| b.path.clone())
            .collect();
        paths.extend(
            self.standby
                .lock()
                .expect("poisoned")
                .iter()
                .filter(|(_, v)| v.iter().any(|b| b.session == session))
                .map(|(p, _)| p.clone()),
        );
        for p in paths {
            self.unannounce(&p, session);
        }
    }

    pub fn get(&self, path: &str) -> Option<Arc<Broadcast>> {
        self.broadcasts.lock().expect("poisoned").get(path).cloned()
    }

    /// Announced namespaces, sorted.
    pub fn list(&self) -> Vec<Arc<Broadcast>> {
        let mut v: Vec<_> = self
            .broadcasts
            .lock()
            .expect("poisoned")
            .values()
            .cloned()
            .collect();
        v.sort_by(|a, b| a.path.cmp(&b.path));
        v
    }

    pub fn events(&self) -> tokio::sync::broadcast::Receiver<Announcement> {
        self.events.subscribe()
    }

    /// The cache of a track, subscribing upstream if nobody has yet.
    ///
    /// Returns the cache and whether this call created it (the caller is its first subscriber).
    pub fn track(
        &self,
        namespace: &TrackNamespace,
        name: &str,
    ) -> Result<(Arc<TrackCache>, bool), LookupError> {
        let path = moq::broadcast_path(namespace);
        let b = self
            .find(namespace)
            .ok_or_else(|| LookupError::NoBroadcast(path.clone()))?;
        if path == b.path {
            if let Some(t) = b.pushed.lock().expect("poisoned").get(name) {
                return Ok((t.clone(), false));
            }
        }
        let key = (path.clone(), name.to_string());
        let mut tracks = b.tracks.lock().expect("poisoned");
        if let Some(t) = tracks.get(&key).and_then(|t| t.cache.upgrade()) {
            return Ok((t, false));
        }
        let upstream = b
            .upstream
            .clone()
            .ok_or_else(|| LookupError::NoTrack(path.clone(), name.into()))?;
        let cache = TrackCache::new(&path, name, self.limits, self.budget.clone());
        cache.spawn_upstream(
            b.home.as_ref(),
            subscribe_upstream(
                upstream,
                namespace.clone(),
                name.to_string(),
                Arc::downgrade(&cache),
                cache.epoch(),
                false,
                self.handback(&b.path),
            ),
        );
        tracks.retain(|_, t| t.cache.strong_count() > 0);
        tracks.insert(
            key,
            TrackEntry {
                cache: Arc::downgrade(&cache),
                namespace: namespace.clone(),
            },
        );
        Ok((cache, true))
    }

    /// Re-points tracks [`move_tracks`] moved to `to` at its publisher; they end with
    /// GOING_AWAY when it has no session to subscribe on (a broadcast made by PUBLISH).
    fn adopt(&self, to: &Broadcast, moved: Vec<Moved>) {
        for m in moved {
            let key = (m.cache.broadcast.clone(), m.name.clone());
            let repointed = match &to.upstream {
                Some(upstream) => {
                    let weak = Arc::downgrade(&m.cache);
                    let standby = self.handback(&to.path);
                    m.cache.repoint(to.home.as_ref(), |epoch| {
                        subscribe_upstream(
                            upstream.clone(),
                            m.namespace,
                            m.name,
                            weak,
                            epoch,
                            true,
                            standby,
                        )
                    })
                }
                None => false,
            };
            if repointed {
                self.metrics
                    .tracks_handed_over
                    .fetch_add(1, Ordering::Relaxed);
            } else {
                let mut tracks = to.tracks.lock().expect("poisoned");
                if tracks
                    .get(&key)
                    .is_some_and(|t| std::ptr::eq(t.cache.as_ptr(), Arc::as_ptr(&m.cache)))
                {
                    tracks.remove(&key);
                }
                drop(tracks);
                m.cache.end_after_drain(Some(TrackError::Closed(
                    moq::transport::message::PublishDoneCode::GoingAway as u64,
                )));
            }
        }
    }

    /// Registers a track its publisher pushed with PUBLISH (creating the broadcast if needed).
    pub fn publish_track(
        &self,
        namespace: &TrackNamespace,
        name: &str,
        session: u64,
        ingest: (&IngestRoutes, u64),
    ) -> Arc<TrackCache> {
        let path = moq::broadcast_path(namespace);
        let b = match self.get(&path) {
            Some(b) if b.session == session => b,
            _ => self.announce(namespace.clone(), session, None),
        };
        let cache = TrackCache::new(&path, name, self.limits, self.budget.clone());
        // The track's data streams are read into the cache while its PUBLISH lasts.
        let route = ingest.0.insert(ingest.1, &cache, None, cache.epoch());
        cache.spawn_upstream(b.home.as_ref(), async move {
            let _route = route;
            std::future::pending().await
        });
        cache.accept();
        if let Some(old) = b
            .pushed
            .lock()
            .expect("poisoned")
            .insert(name.into(), cache.clone())
        {
            old.end_after_drain(None);
        }
        self.wake(&path);
        cache
    }

    /// Forgets a pushed track whose PUBLISH ended.
    pub fn unpublish_track(&self, path: &str, name: &str, cache: &Arc<TrackCache>) {
        if let Some(b) = self.get(path) {
            let mut pushed = b.pushed.lock().expect("poisoned");
            if pushed.get(name).is_some_and(|c| Arc::ptr_eq(c, cache)) {
                pushed.remove(name);
            }
        }
        cache.end_after_drain(None);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn origin() -> Origin {
        let metrics = Arc::new(Metrics::default());
        let budget = CacheBudget::new(1 << 20, metrics.clone());
        Origin::new(CacheLimits::default(), budget, metrics)
    }

    fn ready(n: &mut std::pin::Pin<&mut tokio::sync::futures::Notified<'_>>) -> bool {
        use std::future::Future;
        let waker = futures::task::noop_waker();
        let mut cx = std::task::Context::from_waker(&waker);
        n.as_mut().poll(&mut cx).is_ready()
    }

    /// An announcement wakes the rendezvous waits of its name and the names below it only,
    /// not every waiting SUBSCRIBE of the relay (issue 26: 5,000 waiters woken by every
    /// announcement cost a bystander 25 ms of p50).
    #[tokio::test]
    async fn an_announcement_wakes_only_the_waiters_of_its_name() {
        let origin = origin();
        let ns = |p: &str| TrackNamespace::from_utf8_path(p);
        let (below, exact, other) = (
            origin.waiter(&ns("live/a/ai")),
            origin.waiter(&ns("live/a")),
            origin.waiter(&ns("live/ab")),
        );
        let (mut b, mut e, mut o) = (
            Box::pin(below.notified()),
            Box::pin(exact.notified()),
            Box::pin(other.notified()),
        );
        for n in [&mut b, &mut e, &mut o] {
            n.as_mut().enable();
        }
        let _b = origin.announce(ns("live/a"), 1, None);
        assert!(ready(&mut b.as_mut()) && ready(&mut e.as_mut()));
        assert!(!ready(&mut o.as_mut()), "live/ab is not below live/a");
        // Waiters of one name share one entry; entries nobody holds are forgotten.
        assert!(Arc::ptr_eq(&exact, &origin.waiter(&ns("live/a"))));
        drop((b, e, o));
        drop((below, exact, other));
        let _c = origin.announce(ns("other"), 2, None);
        assert!(origin.waiters.lock().unwrap().is_empty());
    }

    /// Take-over leaves no hole: when the session that took a name over leaves while the
    /// previous publisher is still connected, the previous one serves the name again; when the
    /// previous one leaves first, it is forgotten.
    #[tokio::test]
    async fn a_name_taken_over_returns_to_its_previous_publisher() {
        let origin = origin();
        let ns = TrackNamespace::from_utf8_path("live/v");
        origin.announce(ns.clone(), 1, None);
        origin.announce(ns.clone(), 2, None);
        assert_eq!(origin.get("live/v").unwrap().session, 2);
        origin.session_closed(2);
        assert_eq!(origin.get("live/v").map(|b| b.session), Some(1));
        assert_eq!(origin.metrics.broadcasts.load(Ordering::Relaxed), 1);

        origin.announce(ns.clone(), 3, None);
        origin.session_closed(1); // on standby: forgotten
        origin.session_closed(3);
        assert!(origin.get("live/v").is_none());
        assert_eq!(origin.metrics.broadcasts.load(Ordering::Relaxed), 0);
        assert!(origin.standby.lock().unwrap().is_empty());
    }
}
