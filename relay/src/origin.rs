//! The relay's registry of live broadcasts (announced namespaces) and their tracks.
//!
//! * A publisher's PUBLISH_NAMESPACE makes its namespace a broadcast here. If the same namespace
//!   is announced again (a publisher reconnecting before its old session timed out), the newest
//!   session wins: the old session's tracks end (subscribers get PUBLISH_DONE and resubscribe).
//! * When the publishing session ends or sends PUBLISH_NAMESPACE_DONE, the broadcast is removed,
//!   its tracks end and namespace subscribers get NAMESPACE_DONE.
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
    tracks: Mutex<HashMap<(String, String), Weak<TrackCache>>>,
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
            .filter_map(|(_, t)| t.upgrade())
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
            .filter(|(_, t)| t.strong_count() > 0)
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
    standby: Mutex<HashMap<String, Vec<Arc<Broadcast>>>>,
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
            standby: Mutex::new(HashMap::new()),
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
        let old = self
            .broadcasts
            .lock()
            .expect("poisoned")
            .insert(path.clone(), b.clone());
        match old {
            Some(old) => {
                tracing::info!(broadcast = %path, old_session = old.session, session, "broadcast taken over by a new session");
                if old.session != session {
                    self.standby
                        .lock()
                        .expect("poisoned")
                        .entry(path.clone())
                        .or_default()
                        .push(old.clone());
                }
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
            if let Some(r) = &restored {
                map.insert(path.to_string(), r.clone());
            }
            (removed, restored)
        };
        let Some(b) = removed else {
            return;
        };
        b.end_all(None);
        match restored {
            Some(r) => {
                tracing::info!(broadcast = %path, session, previous_session = r.session, "broadcast left by its new session: the previous one serves it again");
                let _ = self.events.send(Announcement::Active(r.namespace.clone()));
                self.wake(path);
            }
            None => {
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
        if let Some(t) = tracks.get(&key).and_then(Weak::upgrade) {
            return Ok((t, false));
        }
        let upstream = b
            .upstream
            .clone()
            .ok_or_else(|| LookupError::NoTrack(path.clone(), name.into()))?;
        let cache = TrackCache::new(&path, name, self.limits, self.budget.clone());
        let Upstream { session, ingest } = upstream;
        let weak = Arc::downgrade(&cache);
        let (namespace, track) = (namespace.clone(), name.to_string());
        cache.spawn_upstream(b.home.as_ref(), async move {
            let mut sub = session
                .subscribe(namespace, &track, KeyValuePairs::default())
                .await
                .map_err(upstream_error)?;
            let priority = sub.properties.default_publisher_priority().ok().flatten();
            let Some(c) = weak.upgrade() else {
                return Ok(());
            };
            // From here on the track's data streams are read into the cache.
            let route = ingest.insert(sub.track_alias, &c, priority);
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
        });
        tracks.retain(|_, t| t.strong_count() > 0);
        tracks.insert(key, Arc::downgrade(&cache));
        Ok((cache, true))
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
        let route = ingest.0.insert(ingest.1, &cache, None);
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
