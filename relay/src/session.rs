//! One MoQ session: a publisher, a subscriber, or both (a relay peer).
//!
//! Everything a session starts (subscriptions it serves, namespaces it announces) is owned by
//! this session's task set and cancelled when it ends. A malformed message from the peer ends
//! this session only (moq-transport closes it with a protocol error); nothing is shared with
//! other sessions except through [`Origin`](crate::origin::Origin) and the track caches.

use std::{sync::Arc, time::Duration};

use moqcast_media::moq::{
    serve,
    transport::{
        coding::Location,
        data::{FetchRecord, FetchRecordObject},
        message::{FilterType, RequestErrorCode},
        session::{
            FetchOkInfo, FetchRequested, PublishReceived, Subscribed, SubscribedNamespace,
            TrackStatusRequested,
        },
    },
    Publisher, Session, Subscriber, Transport,
};
use tokio::task::JoinSet;
use tracing::Instrument;

use crate::{
    config::Forwarder,
    direct::{AliasGuard, DirectAliases},
    fanout::{pump, Backlog, DirectTarget, Output, Start, TrackCache},
    ingest::IngestRoutes,
    limits::{Slot, Slots},
    origin::{Announcement, LookupError, Upstream},
    OwnedTask, RelayState,
};

/// How long a subscription waits for the upstream's first object.
const UPSTREAM_WAIT: Duration = Duration::from_secs(10);

/// Runs a session until it ends.
pub async fn run(
    state: Arc<RelayState>,
    wt: web_transport_quinn::Session,
    transport: Transport,
    conn: quinn::Connection,
    id: u64,
) -> anyhow::Result<()> {
    // Subgroup streams the relay writes itself go straight to `wt`; moq-transport gets the
    // adapter that keeps their placeholders off the wire (see `crate::direct`).
    let aliases = DirectAliases::default();
    let direct =
        (state.config.forwarder == Forwarder::Direct).then(|| (wt.clone(), aliases.clone()));
    // Likewise the subgroup streams of the tracks the relay subscribes to here are read by the
    // relay itself (`crate::ingest`), when it writes its own streams.
    let routes = IngestRoutes::default();
    let ingest = (state.config.forwarder == Forwarder::Direct).then(|| routes.clone());
    let moq = crate::direct::Session::new(wt, aliases, routes).into_transport();
    let (session, publisher, subscriber) = Session::accept(moq, None, transport).await?;
    let backlog = Backlog::new(conn, state.config.subscriber_backlog_bytes);
    let mut tasks = JoinSet::new();

    let res = tokio::select! {
        res = session.run() => res.map_err(anyhow::Error::from),
        () = downstream(state.clone(), publisher, backlog, direct) => Ok(()),
        () = upstream(state.clone(), subscriber, id, ingest, &mut tasks) => Ok(()),
    };
    tasks.abort_all();
    state.origin.session_closed(id);
    res
}

/// Whether the relay can write this subscription's streams itself. Subscriptions that ask for
/// what only moq-transport's forwarder applies (FORWARD=0, an end group, a start inside a
/// group) go through the forwarder.
fn writes_directly(sub: &Subscribed) -> bool {
    let info = &sub.info;
    info.forward
        && info.end_group_id.is_none()
        && info
            .filter
            .as_ref()
            .is_none_or(|f| f.end_group_id.is_none())
        && info.start_location.is_none_or(|l| l.object_id == 0)
}

/// Serves the peer as a subscriber: SUBSCRIBE, SUBSCRIBE_NAMESPACE, TRACK_STATUS, FETCH.
async fn downstream(
    state: Arc<RelayState>,
    publisher: Option<Publisher>,
    backlog: Arc<Backlog>,
    direct: Option<(web_transport_quinn::Session, DirectAliases)>,
) {
    let Some(publisher) = publisher else {
        return std::future::pending().await;
    };
    publisher.accept_fetch();
    let mut tasks = JoinSet::new();
    // Subscriptions of this session, waiting for their track or being served.
    let subscriptions = Slots::new(state.config.max_subscriptions_per_session);
    let (mut p1, mut p2, mut p3, mut p4) = (
        publisher.clone(),
        publisher.clone(),
        publisher.clone(),
        publisher,
    );
    loop {
        tokio::select! {
            Some(sub) = p1.subscribed() => {
                let span = tracing::info_span!("subscription", broadcast = %sub.info.track_namespace, track = %sub.info.track_name.to_string_lossy());
                let Some(slot) = subscriptions.try_acquire() else {
                    refuse_excess(&state, sub, subscriptions.limit());
                    continue;
                };
                let target = direct
                    .as_ref()
                    .filter(|_| writes_directly(&sub))
                    .map(|(session, aliases)| {
                        let alias = sub.info.id;
                        let guard = aliases.insert(alias);
                        let accepted = guard.accepted();
                        (DirectTarget { session: session.clone(), alias, accepted }, guard)
                    });
                tasks.spawn(serve_subscription(state.clone(), sub, backlog.clone(), target, slot).instrument(span));
            }
            Some(ns) = p2.subscribed_namespace() => {
                tasks.spawn(serve_namespaces(state.clone(), ns));
            }
            Some(req) = p3.track_status_requested() => {
                tasks.spawn(serve_track_status(state.clone(), req));
            }
            Some(req) = p4.fetch_requested() => {
                tasks.spawn(serve_fetch(state.clone(), req));
            }
            Some(_) = tasks.join_next(), if !tasks.is_empty() => {}
            else => return,
        }
    }
}

/// Refuses a SUBSCRIBE past the session's subscription limit with REQUEST_ERROR
/// EXCESSIVE_LOAD (0x9, draft-18 §10.6). No retry interval is suggested: the limit lifts
/// only when the subscriber ends one of its subscriptions. The session carries on.
fn refuse_excess(state: &RelayState, sub: Subscribed, limit: usize) {
    state
        .metrics
        .subscriptions_rejected
        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    tracing::info!(
        broadcast = %sub.info.track_namespace,
        track = %sub.info.track_name.to_string_lossy(),
        limit,
        "subscription limit of the session reached: refusing SUBSCRIBE"
    );
    let _ = sub.close_with_retry(
        serve::ServeError::Closed(RequestErrorCode::ExcessiveLoad as u64),
        0,
    );
}

fn start_of(sub: &Subscribed) -> Start {
    match sub.info.filter.as_ref().map(|f| f.filter_type) {
        // Unfiltered and LargestObject both start at the newest group's first object, so video
        // begins on a keyframe at once (the relay's documented choice, see docs/relay.md).
        None | Some(FilterType::LargestObject) => Start::Newest,
        Some(FilterType::NextGroupStart) => Start::NextGroup,
        Some(FilterType::AbsoluteStart | FilterType::AbsoluteRange) => sub
            .info
            .start_location
            .map(|l| Start::Group(l.group_id))
            .unwrap_or(Start::Newest),
    }
}

/// Finds (or subscribes upstream to) a track and waits for its first object.
///
/// Without a RENDEZVOUS_TIMEOUT parameter (draft-18 §10.2.2) an unknown track is refused at
/// once with DOES_NOT_EXIST; with one, the relay waits that long for a publisher to announce
/// the namespace or PUBLISH the track, then refuses with TIMEOUT.
///
/// Returns the cache and whether the request had to wait for the track to appear (then
/// everything cached is new to it; otherwise it starts at the newest group).
async fn resolve(
    state: &RelayState,
    namespace: &moqcast_media::moq::TrackNamespace,
    name: &str,
    rendezvous: Option<Duration>,
) -> Result<(Arc<TrackCache>, bool), serve::ServeError> {
    let deadline = rendezvous.map(|d| tokio::time::Instant::now() + d);
    let mut watch = state.origin.watch();
    let mut waited = false;
    let (cache, _created) = loop {
        watch.borrow_and_update();
        match state.origin.track(namespace, name) {
            Ok(found) => break found,
            Err(LookupError::NoBroadcast(_) | LookupError::NoTrack(..)) => {
                let Some(deadline) = deadline else {
                    return Err(serve::ServeError::NotFound);
                };
                waited = true;
                match tokio::time::timeout_at(deadline, watch.changed()).await {
                    Ok(Ok(())) => continue,
                    Ok(Err(_)) | Err(_) => return Err(serve::ServeError::Timeout),
                }
            }
        }
    };
    let wait = match deadline {
        Some(d) => d.max(tokio::time::Instant::now() + UPSTREAM_WAIT),
        None => tokio::time::Instant::now() + UPSTREAM_WAIT,
    };
    match tokio::time::timeout_at(wait, cache.ready()).await {
        Ok(Ok(())) => Ok((cache, waited)),
        Ok(Err(e)) => Err(e.unwrap_or(serve::ServeError::NotFound)),
        Err(_) => Err(serve::ServeError::Timeout),
    }
}

fn rendezvous_of(
    params: &moqcast_media::moq::transport::coding::KeyValuePairs,
) -> Option<Duration> {
    params
        .rendezvous_timeout()
        .ok()
        .flatten()
        .map(Duration::from_millis)
}

/// Serves one subscription; `_slot` holds its place under the session's subscription limit
/// until it ends.
async fn serve_subscription(
    state: Arc<RelayState>,
    sub: Subscribed,
    backlog: Arc<Backlog>,
    direct: Option<(DirectTarget, AliasGuard)>,
    _slot: Slot,
) {
    // The alias stays marked as direct until PUBLISH_DONE went out (end of this function).
    let (direct, _alias) = direct.unzip();
    let name = sub.info.track_name.to_string_lossy().into_owned();
    let rendezvous = rendezvous_of(&sub.info.params);
    let (cache, waited) = match resolve(&state, &sub.info.track_namespace, &name, rendezvous).await
    {
        Ok(c) => c,
        Err(e) => {
            tracing::debug!(error = %e, "subscription refused");
            let _ = sub.close(e);
            return;
        }
    };
    let mut start = start_of(&sub);
    if waited && start == Start::Newest {
        // The subscription was waiting before the track existed: everything cached is new.
        start = Start::Oldest;
    }
    let (writer, reader) =
        serve::Track::new(sub.info.track_namespace.clone(), name.as_str()).produce();
    // The private track's mode (subgroups or datagrams) follows the upstream's once known.
    let mut out = Output::Pending(Some(writer), direct);
    state
        .metrics
        .subscriptions_total
        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    // The gauge goes down however this task ends, aborted with its session included.
    let _active = ActiveSubscription::new(state.metrics.clone());
    tracing::debug!(?start, "subscription started");

    // SUBSCRIBE_OK carries no Largest Location: the relay starts the subscriber itself (see
    // `start_of`), so the forwarder must not filter again against a stale position.
    // moq-transport's side and the pump run as tasks of their own, owned here (aborted when
    // this ends). In one `select!` each would be polled, or its join handle checked, at every
    // object the pump is woken for; this task wakes only when one of them ends.
    let mut serve = OwnedTask(tokio::spawn(
        sub.serve_with_largest_location(reader, None)
            .instrument(tracing::Span::current()),
    ));
    let coalesce = state
        .placement
        .as_ref()
        .and_then(|p| crate::shard::Coalesce::new(p, state.config.coalesce));
    let mut pumping = OwnedTask(tokio::spawn(
        async move {
            let res = pump(cache, &mut out, start, backlog, coalesce).await;
            out.close(res.err());
        }
        .instrument(tracing::Span::current()),
    ));
    tokio::select! {
        res = &mut serve.0 => {
            tracing::debug!(result = ?res.ok().and_then(Result::err), "subscription ended by the subscriber");
        }
        _ = &mut pumping.0 => {
            // Let the forwarder flush and send PUBLISH_DONE.
            let _ = tokio::time::timeout(Duration::from_secs(5), &mut serve.0).await;
        }
    }
}

/// Counts one served subscription in `moqcast_subscriptions` while it lives.
struct ActiveSubscription(Arc<crate::metrics::Metrics>);

impl ActiveSubscription {
    fn new(metrics: Arc<crate::metrics::Metrics>) -> Self {
        metrics
            .subscriptions
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Self(metrics)
    }
}

impl Drop for ActiveSubscription {
    fn drop(&mut self) {
        self.0
            .subscriptions
            .fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
    }
}

async fn serve_namespaces(state: Arc<RelayState>, mut ns: SubscribedNamespace) {
    let prefix = ns.info.namespace_prefix.clone();
    let mut events = state.origin.events();
    if ns.ok().is_err() {
        return;
    }
    for b in state.origin.list() {
        if prefix.is_prefix_of(&b.namespace) && ns.namespace(&b.namespace).is_err() {
            return;
        }
    }
    loop {
        tokio::select! {
            ev = events.recv() => match ev {
                Ok(Announcement::Active(n)) if prefix.is_prefix_of(&n) => {
                    if ns.namespace(&n).is_err() { return; }
                }
                Ok(Announcement::Ended(n)) if prefix.is_prefix_of(&n) => {
                    if ns.namespace_done(&n).is_err() { return; }
                }
                Ok(_) => {}
                Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {
                    // Resynchronise: announce what exists now (duplicates are ignored).
                    for b in state.origin.list() {
                        if prefix.is_prefix_of(&b.namespace) { let _ = ns.namespace(&b.namespace); }
                    }
                }
                Err(_) => return,
            },
            _ = ns.closed() => return,
        }
    }
}

async fn serve_track_status(state: Arc<RelayState>, mut req: TrackStatusRequested) {
    let namespace = req.request_msg.track_namespace.clone();
    let name = req.request_msg.track_name.to_string_lossy().into_owned();
    let cache = match resolve(
        &state,
        &namespace,
        &name,
        rendezvous_of(&req.request_msg.params),
    )
    .await
    {
        Ok((c, _)) => c,
        Err(e) => {
            let _ = req.respond_error(RequestErrorCode::DoesNotExist as u64, &e.to_string());
            return;
        }
    };
    // A throw-away track whose only state is the cached largest location.
    let (writer, reader) = serve::Track::new(namespace, name.as_str()).produce();
    let mut keep = Vec::new();
    if let (Ok(mut groups), Some((g, o))) = (writer.subgroups(), cache.largest()) {
        if let Ok(mut w) = groups.create(serve::Subgroup {
            group_id: g,
            subgroup_id: 0,
            priority: 0,
        }) {
            if let Ok(obj) = w.create_with_id(o, 0, None) {
                keep.push(obj);
            }
            let _ = req.respond_ok(&reader);
            return;
        }
    }
    let _ = req.respond_ok(&reader);
}

async fn serve_fetch(state: Arc<RelayState>, req: FetchRequested) {
    let Ok(Some(range)) = req.resolve().await else {
        return;
    };
    let name = range.track_name.to_string_lossy().into_owned();
    let cache = match resolve(&state, &range.track_namespace, &name, None).await {
        Ok((c, _)) => c,
        Err(e) => {
            let _ = req.reject(RequestErrorCode::DoesNotExist, &e.to_string());
            return;
        }
    };
    let start = range.start_location;
    // End in request encoding: {group, 0} means through the whole group, else object + 1.
    let end = range.end_location;
    let within = |g: u64, o: u64| {
        let l = Location::new(g, o);
        l >= start
            && if end.object_id == 0 {
                g <= end.group_id
            } else {
                l < end
            }
    };
    let objects = cache.with_store(|s| {
        let mut v = Vec::new();
        for key in s.keys() {
            let g = s.get(key).expect("listed");
            for o in &g.objects {
                if within(g.id, o.id) {
                    v.push((g.id, g.subgroup, g.priority, o.clone()));
                }
            }
        }
        v
    });
    let Some(last) = objects.last() else {
        let _ = req.reject(
            RequestErrorCode::InvalidRange,
            "the requested range is not cached",
        );
        return;
    };
    let end_location = Location::new(last.0, last.3.id + 1);
    let Ok(mut w) = req
        .respond(FetchOkInfo {
            end_of_track: false,
            end_location,
            params: Default::default(),
            track_extensions: Default::default(),
        })
        .await
    else {
        return;
    };
    for (group, subgroup, priority, o) in objects {
        let rec = FetchRecord::Object(FetchRecordObject {
            group_id: group,
            subgroup_id: Some(subgroup),
            object_id: o.id,
            publisher_priority: priority,
            extension_headers: o.properties.clone(),
            payload_length: o.payload.len() as u64,
        });
        if w.write_record(&rec).await.is_err() || w.write_payload(&o.payload).await.is_err() {
            return;
        }
    }
    let _ = w.finish().await;
}

/// Serves the peer as a publisher: PUBLISH_NAMESPACE and PUBLISH.
async fn upstream(
    state: Arc<RelayState>,
    subscriber: Option<Subscriber>,
    session: u64,
    ingest: Option<IngestRoutes>,
    tasks: &mut JoinSet<()>,
) {
    let Some(subscriber) = subscriber else {
        return std::future::pending().await;
    };
    let (mut s1, mut s2) = (subscriber.clone(), subscriber.clone());
    loop {
        tokio::select! {
            Some(mut pn) = s1.published_namespace() => {
                let namespace = pn.info.namespace.clone();
                let path = moqcast_media::moq::broadcast_path(&namespace);
                if path.is_empty() || path.len() > 1024 {
                    let _ = pn.reject(RequestErrorCode::NamespaceTooLarge as u64, "namespace must be 1..=1024 bytes");
                    continue;
                }
                if pn.ok().is_err() {
                    continue;
                }
                let upstream = Upstream { subscriber: subscriber.clone(), ingest: ingest.clone() };
                state.origin.announce(namespace, session, Some(upstream));
                let origin = state.clone();
                tasks.spawn(async move {
                    let _ = pn.closed().await;
                    origin.origin.unannounce(&path, session);
                });
            }
            Some(pr) = s2.publish_received() => {
                accept_publish(&state, pr, session, ingest.as_ref(), tasks);
            }
            Some(_) = tasks.join_next(), if !tasks.is_empty() => {}
            else => return std::future::pending().await,
        }
    }
}

fn accept_publish(
    state: &Arc<RelayState>,
    mut pr: PublishReceived,
    session: u64,
    ingest: Option<&IngestRoutes>,
    tasks: &mut JoinSet<()>,
) {
    let namespace = pr.namespace().clone();
    let name = pr.name().to_string_lossy().into_owned();
    let reader = match pr.ok(true) {
        Ok(r) => r,
        Err(e) => {
            tracing::debug!(error = %e, "could not accept PUBLISH");
            return;
        }
    };
    let cache = state.origin.publish_track(
        &namespace,
        &name,
        reader,
        session,
        ingest.map(|r| (r, pr.track_alias())),
    );
    let origin = state.clone();
    let path = moqcast_media::moq::broadcast_path(&namespace);
    tasks.spawn(async move {
        let _ = pr.closed().await;
        origin.origin.unpublish_track(&path, &name, &cache);
    });
}
