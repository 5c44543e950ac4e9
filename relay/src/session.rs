//! One MoQ session: a publisher, a subscriber, or both (a relay peer).
//!
//! The session layer ([`moqcast_session`]) speaks draft-18: SETUP, request streams, request
//! limits, Stream Counts, GOAWAY. This module is the relay's policy on top: what a SUBSCRIBE,
//! PUBLISH, PUBLISH_NAMESPACE, SUBSCRIBE_NAMESPACE, TRACK_STATUS or FETCH of the peer gets.
//!
//! Everything a session starts (subscriptions it serves, namespaces it announces, the data it
//! ingests) is owned by this session's task set and cancelled when it ends. A malformed message
//! from the peer ends this session only; nothing is shared with other sessions except through
//! [`Origin`](crate::origin::Origin) and the track caches.

use std::{sync::Arc, time::Duration};

use moqcast_media::moq::{
    transport::{
        coding::{KeyValuePairs, Location, TrackNamespace},
        message::{FilterType, RequestErrorCode, TrackExtensions},
        setup,
    },
    TrackNamespace as Namespace,
};
use moqcast_session::{
    io::{self as moqt, IncomingRequest},
    Role,
};
use tokio::task::JoinSet;
use tracing::Instrument;

use crate::{
    auth::{AuthError, Grant},
    fanout::pump,
    ingest::IngestRoutes,
    limits::Slot,
    origin::{Announcement, LookupError, Upstream},
    policy::{Start, TrackError, Window},
    track::TrackCache,
    writer::{Backlog, DirectTarget},
    OwnedTask, RelayState,
};

/// How long a subscription waits for the upstream's first object.
const UPSTREAM_WAIT: Duration = Duration::from_secs(10);

/// How long a peer has to send SETUP after the QUIC (and WebTransport) handshake.
pub const SETUP_TIMEOUT: Duration = Duration::from_secs(10);

/// Runs a session until it ends.
pub async fn run(
    state: Arc<RelayState>,
    wt: web_transport_quinn::Session,
    conn: quinn::Connection,
    id: u64,
    grant: Option<Grant>,
) -> anyhow::Result<()> {
    let config = moqcast_session::Config {
        max_requests: state.config.max_requests_per_session,
        setup_timeout: SETUP_TIMEOUT,
        request_rate: state.config.max_request_rate,
        request_burst: state.config.max_requests_per_session as u64,
        ..Default::default()
    };
    let (session, incoming, driver) =
        moqt::establish(wt.clone(), Some(conn.clone()), Role::Server, config);
    session.count_into(state.metrics.refusals.clone());
    let _live = Live::register(&state, id, &session);
    let moqt::Incoming {
        mut requests,
        mut data,
    } = incoming;
    let backlog = Backlog::new(conn, state.config.subscriber_backlog_bytes);
    let routes = IngestRoutes::default();
    let mut tasks = JoinSet::new();
    // The session ends when its driver does (the connection closed, or the session layer closed
    // it); the rest only serves it until then.
    let work = async {
        // A WebTransport session's token was checked at CONNECT; a raw QUIC session's comes in
        // its SETUP (AUTHORIZATION TOKEN option, PATH option for the path).
        let grant = match grant {
            Some(grant) => grant,
            None => match setup_grant(&state, &session).await {
                Some(grant) => grant,
                None => return std::future::pending().await,
            },
        };
        // Another relay's cluster link: what it asks for is never pulled from a third relay.
        let peer_link = match session.ready().await {
            Ok(options) => options.0.iter().any(|kv| {
                kv.key == 0x7
                    && matches!(&kv.value, moqcast_media::moq::transport::coding::Value::BytesValue(b)
                        if b == crate::cluster::LINK_IMPLEMENTATION.as_bytes())
            }),
            Err(_) => return std::future::pending().await,
        };
        let ctx = Ctx {
            state: state.clone(),
            session: session.clone(),
            wt: wt.clone(),
            backlog,
            routes: routes.clone(),
            id,
            grant: Arc::new(grant),
            peer_link,
        };
        tokio::join!(
            expire(&ctx),
            serve(&ctx, &mut requests, &mut tasks),
            crate::ingest::run(&mut data, routes.clone()),
            crate::ingest::datagrams(wt, routes),
        );
        std::future::pending::<()>().await
    };
    let res: Result<(), moqt::Error> = tokio::select! {
        err = driver.run() => Err(err),
        () = work => Ok(()),
    };
    tasks.abort_all();
    state.origin.session_closed(id);
    res.map_err(anyhow::Error::from)
}

/// A session's entry in [`RelayState::live`] while it runs; a session that starts while the
/// relay drains gets GOAWAY at once.
struct Live<'a>(&'a RelayState, u64);

impl<'a> Live<'a> {
    fn register(state: &'a RelayState, id: u64, session: &moqt::Session) -> Self {
        if state.draining.load(std::sync::atomic::Ordering::Acquire) {
            session.goaway("", Some(state.config.drain));
        }
        state
            .live
            .lock()
            .expect("poisoned")
            .insert(id, session.clone());
        Self(state, id)
    }
}

impl Drop for Live<'_> {
    fn drop(&mut self) {
        self.0.live.lock().expect("poisoned").remove(&self.1);
    }
}

/// What every request of one session needs.
#[derive(Clone)]
struct Ctx {
    state: Arc<RelayState>,
    session: moqt::Session,
    wt: web_transport_quinn::Session,
    backlog: Arc<Backlog>,
    routes: IngestRoutes,
    id: u64,
    /// What the session's token (or the public prefixes) allow.
    grant: Arc<Grant>,
    /// The peer is another relay's cluster link.
    peer_link: bool,
}

/// The grant of a raw QUIC session, from its SETUP; on a refusal the session is closed with
/// UNAUTHORIZED, EXPIRED_AUTH_TOKEN or MALFORMED_AUTH_TOKEN and `None` returned.
async fn setup_grant(state: &RelayState, session: &moqt::Session) -> Option<Grant> {
    let options = session.ready().await.ok()?;
    let refuse = |e: AuthError| {
        state
            .metrics
            .auth_refused
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        tracing::info!(error = %e, "session refused");
        session.close(e.session_code(), &e.to_string());
        None
    };
    let tokens = match setup::decode_setup_tokens(&options) {
        Ok(tokens) => tokens,
        Err(e) => {
            return refuse(AuthError::Malformed(e.to_string()));
        }
    };
    // PATH (0x1): the path a raw QUIC client asked for; tokens are scoped to it.
    let path = options
        .0
        .iter()
        .find(|kv| kv.key == 0x1)
        .and_then(|kv| match &kv.value {
            moqcast_media::moq::transport::coding::Value::BytesValue(b) => {
                Some(String::from_utf8_lossy(b).into_owned())
            }
            _ => None,
        })
        .unwrap_or_default();
    let token = tokens
        .first()
        .map(|t| String::from_utf8_lossy(t.value).into_owned());
    match state.auth.session(&path, token.as_deref()) {
        Ok(grant) => Some(grant),
        Err(e) => refuse(e),
    }
}

/// Closes the session with EXPIRED_AUTH_TOKEN when its token expires.
async fn expire(ctx: &Ctx) {
    let Some(at) = ctx.grant.expires else {
        return;
    };
    let left = at
        .duration_since(std::time::SystemTime::now())
        .unwrap_or_default();
    tokio::time::sleep(left).await;
    ctx.state
        .metrics
        .auth_expired
        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    tracing::info!("token expired: closing the session");
    ctx.session.close(
        AuthError::Expired.session_code(),
        "the authorization token expired",
    );
}

/// Whether the session's grant covers `name` (a broadcast, or a namespace prefix); when not,
/// counts it and says why, for a REQUEST_ERROR UNAUTHORIZED.
fn authorized(ctx: &Ctx, name: &str, publish: bool) -> Result<(), String> {
    let edge = ctx
        .state
        .cluster
        .as_ref()
        .is_some_and(|c| c.config.role == crate::cluster::ClusterRole::Edge);
    if publish && edge {
        tracing::info!(
            broadcast = name,
            "publisher refused: this relay is a cluster edge"
        );
        return Err(format!(
            "this relay is a cluster edge and takes no publishers: publish {name:?} to an origin relay"
        ));
    }
    let ok = if publish {
        ctx.grant.may_publish(name)
    } else {
        ctx.grant.may_subscribe(name)
    };
    if ok {
        return Ok(());
    }
    ctx.state
        .metrics
        .auth_denied
        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let what = if publish { "publish" } else { "subscribe to" };
    tracing::info!(
        broadcast = name,
        what,
        "not authorized: refusing the request"
    );
    Err(format!("not authorized to {what} {name:?}"))
}

/// Refuses `$req` with UNAUTHORIZED (and goes on to the next request) unless the grant covers
/// `$name`.
macro_rules! authorize {
    ($ctx:expr, $req:expr, $name:expr, $publish:expr) => {
        if let Err(why) = authorized($ctx, &$name, $publish) {
            $req.reject(RequestErrorCode::Unauthorized as u64, &why);
            continue;
        }
    };
}

/// Serves the peer's requests until the session ends.
async fn serve(
    ctx: &Ctx,
    requests: &mut tokio::sync::mpsc::Receiver<IncomingRequest>,
    tasks: &mut JoinSet<()>,
) {
    // Subscriptions of this session, waiting for their track or being served.
    let subscriptions = crate::limits::Slots::new(ctx.state.config.max_subscriptions_per_session);
    loop {
        tokio::select! {
            req = requests.recv() => match req {
                Some(IncomingRequest::Subscribe(sub)) => {
                    authorize!(ctx, sub, sub.msg.track_namespace.to_utf8_path(), false);
                    let span = tracing::info_span!("subscription", broadcast = %sub.msg.track_namespace, track = %sub.msg.track_name.to_string_lossy());
                    let Some(slot) = subscriptions.try_acquire() else {
                        refuse_excess(&ctx.state, sub, subscriptions.limit());
                        continue;
                    };
                    tasks.spawn(serve_subscription(ctx.clone(), sub, slot).instrument(span));
                }
                Some(IncomingRequest::SubscribeNamespace(ns)) => {
                    authorize!(ctx, ns, ns.msg.track_namespace_prefix.to_string(), false);
                    tasks.spawn(serve_namespaces(ctx.state.clone(), ns));
                }
                Some(IncomingRequest::TrackStatus(req)) => {
                    authorize!(ctx, req, req.msg.track_namespace.to_utf8_path(), false);
                    tasks.spawn(serve_track_status(ctx.state.clone(), req));
                }
                Some(IncomingRequest::Fetch(req)) => {
                    if let Some(f) = &req.msg.standalone_fetch {
                        authorize!(ctx, req, f.track_namespace.to_utf8_path(), false);
                    }
                    tasks.spawn(serve_fetch(ctx.state.clone(), req));
                }
                Some(IncomingRequest::PublishNamespace(pn)) => {
                    authorize!(ctx, pn, pn.msg.track_namespace.to_utf8_path(), true);
                    accept_namespace(ctx, pn, tasks)
                }
                Some(IncomingRequest::Publish(pr)) => {
                    authorize!(ctx, pr, pr.msg.track_namespace.to_utf8_path(), true);
                    accept_publish(ctx, pr, tasks).await
                }
                None => return,
            },
            Some(_) = tasks.join_next(), if !tasks.is_empty() => {}
        }
    }
}

/// Refuses a SUBSCRIBE past the session's subscription limit with REQUEST_ERROR
/// EXCESSIVE_LOAD (0x9, draft-18 §9.6). No retry interval is suggested: the limit lifts
/// only when the subscriber ends one of its subscriptions. The session carries on.
fn refuse_excess(state: &RelayState, sub: moqt::SubscribeRequest, limit: usize) {
    state
        .metrics
        .subscriptions_rejected
        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    tracing::info!(
        broadcast = %sub.msg.track_namespace,
        track = %sub.msg.track_name.to_string_lossy(),
        limit,
        "subscription limit of the session reached: refusing SUBSCRIBE"
    );
    sub.reject(
        RequestErrorCode::ExcessiveLoad as u64,
        &format!("at most {limit} subscriptions per session"),
    );
}

/// Where the subscription starts and ends, from its SUBSCRIPTION_FILTER and FORWARD
/// parameters (draft-18 §5.1.2, §9.2.8, §9.2.9).
fn window_of(params: &KeyValuePairs) -> Window {
    let filter = params.subscription_filter().ok().flatten();
    let start = match filter.as_ref().map(|f| f.filter_type) {
        // Unfiltered and LargestObject both start at the newest group's first object, so video
        // begins on a keyframe at once (the relay's documented choice, see docs/relay.md).
        None | Some(FilterType::LargestObject) => Start::Newest,
        Some(FilterType::NextGroupStart) => Start::NextGroup,
        Some(FilterType::AbsoluteStart | FilterType::AbsoluteRange) => filter
            .as_ref()
            .and_then(|f| f.start_location)
            .map(|l| Start::Group(l.group_id, l.object_id))
            .unwrap_or(Start::Newest),
    };
    Window {
        start,
        end_group: filter.and_then(|f| f.end_group_id),
        forward: params.forward().ok().flatten().unwrap_or(true),
    }
}

/// Finds (or subscribes upstream to) a track and waits for its first object.
///
/// Without a RENDEZVOUS_TIMEOUT parameter (draft-18 §9.2.4) an unknown track is refused at
/// once with DOES_NOT_EXIST; with one, the relay waits that long for a publisher to announce
/// the namespace or PUBLISH the track, then refuses with TIMEOUT.
///
/// Returns the cache and whether the request had to wait for the track to appear (then
/// everything cached is new to it; otherwise it starts at the newest group).
async fn resolve(
    state: &RelayState,
    namespace: &TrackNamespace,
    name: &str,
    rendezvous: Option<Duration>,
    pull: bool,
) -> Result<(Arc<TrackCache>, bool), TrackError> {
    // In a cluster, a broadcast not known here is looked up in the registry once.
    let mut pull = state.cluster.as_ref().filter(|_| pull);
    let deadline = rendezvous.map(|d| tokio::time::Instant::now() + d);
    // Woken only when this name (or a prefix of it) is announced or gets a PUBLISH.
    let waiter = deadline.map(|_| state.origin.waiter(namespace));
    let mut waited = false;
    let (cache, _created) = loop {
        let notified = waiter.as_ref().map(|w| w.notified());
        tokio::pin!(notified);
        if let Some(n) = notified.as_mut().as_pin_mut() {
            n.enable();
        }
        match state.origin.track(namespace, name) {
            Ok(found) => break found,
            Err(LookupError::NoBroadcast(_)) if pull.is_some() => {
                if let Some(cluster) = pull.take() {
                    // Then the lookup runs again, whatever the registry said.
                    let _ = tokio::time::timeout(UPSTREAM_WAIT, cluster.pull(namespace)).await;
                }
            }
            Err(LookupError::NoBroadcast(_) | LookupError::NoTrack(..)) => {
                let (Some(deadline), Some(n)) = (deadline, notified.as_pin_mut()) else {
                    return Err(TrackError::NotFound);
                };
                waited = true;
                if tokio::time::timeout_at(deadline, n).await.is_err() {
                    return Err(TrackError::Timeout);
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
        Ok(Err(e)) => Err(e.unwrap_or(TrackError::NotFound)),
        Err(_) => Err(TrackError::Timeout),
    }
}

fn rendezvous_of(params: &KeyValuePairs) -> Option<Duration> {
    params
        .rendezvous_timeout()
        .ok()
        .flatten()
        .map(Duration::from_millis)
}

/// Serves one subscription; `_slot` holds its place under the session's subscription limit
/// until it ends.
async fn serve_subscription(ctx: Ctx, sub: moqt::SubscribeRequest, _slot: Slot) {
    let state = &ctx.state;
    let name = sub.msg.track_name.to_string_lossy().into_owned();
    let namespace = sub.msg.track_namespace.clone();
    let mut window = window_of(&sub.msg.params);
    let (cache, waited) = match resolve(
        state,
        &namespace,
        &name,
        rendezvous_of(&sub.msg.params),
        !ctx.peer_link,
    )
    .await
    {
        Ok(c) => c,
        Err(e) => {
            tracing::debug!(error = %e, "subscription refused");
            sub.reject(e.request_error_code(), &e.to_string());
            return;
        }
    };
    if waited && window.start == Start::Newest {
        // The subscription was waiting before the track existed: everything cached is new.
        window.start = Start::Oldest;
    }
    // The Track Alias is the subscription's Request ID: unique in this session.
    let alias = sub.request_id();
    // SUBSCRIBE_OK carries no Largest Location: the relay starts the subscriber itself (see
    // `window_of`), and `@moq/net` misreads that parameter (docs/relay.md, "Interop").
    let mut serving = match sub
        .accept(alias, KeyValuePairs::default(), TrackExtensions::default())
        .await
    {
        Ok(s) => s,
        Err(e) => {
            tracing::debug!(error = %e, "could not accept SUBSCRIBE");
            return;
        }
    };
    state
        .metrics
        .subscriptions_total
        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    // The gauge goes down however this task ends, aborted with its session included.
    let _active = ActiveSubscription::new(state.metrics.clone());
    tracing::debug!(?window, "subscription started");
    let target = DirectTarget {
        session: ctx.wt.clone(),
        alias,
        streams: serving.counter(),
    };
    let coalesce = state
        .placement
        .as_ref()
        .and_then(|p| crate::shard::Coalesce::new(p, state.config.coalesce));
    // The pump runs as a task of its own (aborted when this ends): in one `select!` with the
    // request stream it would be polled whenever the other is.
    let backlog = ctx.backlog.clone();
    let mut pumping = OwnedTask(tokio::spawn(
        async move { pump(cache, &target, window, backlog, coalesce).await }
            .instrument(tracing::Span::current()),
    ));
    tokio::select! {
        why = serving.cancelled() => {
            tracing::debug!(%why, "subscription ended by the subscriber");
            drop(pumping);
        }
        res = &mut pumping.0 => {
            let err = res.unwrap_or(Err(TrackError::Cancel)).err();
            let status = TrackError::publish_done_status(err.as_ref());
            let reason = err.map(|e| e.to_string()).unwrap_or_default();
            match serving.done(status, &reason) {
                Ok(streams) => tracing::debug!(status, streams, "PUBLISH_DONE"),
                Err(e) => tracing::debug!(error = %e, "could not send PUBLISH_DONE"),
            }
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

/// The namespace fields after `prefix`, as NAMESPACE carries them (draft-18 §9.18).
fn suffix(
    namespace: &Namespace,
    prefix: &moqcast_media::moq::transport::coding::TrackNamespacePrefix,
) -> moqcast_media::moq::transport::coding::TrackNamespacePrefix {
    namespace.strip_prefix(prefix).unwrap_or_default()
}

async fn serve_namespaces(state: Arc<RelayState>, req: moqt::NamespaceSubscriptionRequest) {
    let prefix = req.msg.track_namespace_prefix.clone();
    let mut events = state.origin.events();
    let Ok(mut feed) = req.accept() else {
        return;
    };
    for b in state.origin.list() {
        if prefix.is_prefix_of(&b.namespace)
            && feed.namespace(suffix(&b.namespace, &prefix)).is_err()
        {
            return;
        }
    }
    loop {
        tokio::select! {
            ev = events.recv() => match ev {
                Ok(Announcement::Active(n)) if prefix.is_prefix_of(&n) => {
                    if feed.namespace(suffix(&n, &prefix)).is_err() { return; }
                }
                Ok(Announcement::Ended(n)) if prefix.is_prefix_of(&n) => {
                    if feed.namespace_done(suffix(&n, &prefix)).is_err() { return; }
                }
                Ok(_) => {}
                Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {
                    // Resynchronise: announce what exists now (the viewer ignores duplicates).
                    for b in state.origin.list() {
                        if prefix.is_prefix_of(&b.namespace) {
                            let _ = feed.namespace(suffix(&b.namespace, &prefix));
                        }
                    }
                }
                Err(_) => return,
            },
            _ = feed.cancelled() => return,
        }
    }
}

async fn serve_track_status(state: Arc<RelayState>, req: moqt::TrackStatusRequest) {
    let namespace = req.msg.track_namespace.clone();
    let name = req.msg.track_name.to_string_lossy().into_owned();
    let cache = match resolve(
        &state,
        &namespace,
        &name,
        rendezvous_of(&req.msg.params),
        true,
    )
    .await
    {
        Ok((c, _)) => c,
        Err(e) => {
            req.reject(RequestErrorCode::DoesNotExist as u64, &e.to_string());
            return;
        }
    };
    let mut params = KeyValuePairs::default();
    if let Some((g, o)) = cache.largest() {
        let _ = params.set_largest_object(Location::new(g, o));
    }
    req.respond(params, TrackExtensions::default());
}

async fn serve_fetch(state: Arc<RelayState>, req: moqt::FetchRequest) {
    let Some(range) = req.msg.standalone_fetch.clone() else {
        // Joining FETCH needs the joined subscription's state: not served.
        req.reject(
            RequestErrorCode::NotSupported as u64,
            "only standalone FETCH is supported",
        );
        return;
    };
    let name = range.track_name.to_string_lossy().into_owned();
    let cache = match resolve(&state, &range.track_namespace, &name, None, true).await {
        Ok((c, _)) => c,
        Err(e) => {
            req.reject(RequestErrorCode::DoesNotExist as u64, &e.to_string());
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
    let mut objects = cache.with_store(|s| {
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
    objects.sort_by_key(|(g, _, _, o)| (*g, o.id));
    let Some(last) = objects.last() else {
        req.reject(
            RequestErrorCode::InvalidRange as u64,
            "the requested range is not cached",
        );
        return;
    };
    let end_location = Location::new(last.0, last.3.id + 1);
    let request_id = req.request_id();
    let Ok((_serving, mut stream)) = req.accept(false, end_location).await else {
        return;
    };
    let mut writer = moqcast_session::draft18::FetchWriter::default();
    let Ok(header) = moqcast_session::draft18::FetchWriter::header(request_id) else {
        return;
    };
    let mut buf = header.to_vec();
    for (group, subgroup, priority, o) in objects {
        let subgroup = if subgroup == crate::track::DATAGRAM_SUBGROUP {
            0
        } else {
            subgroup
        };
        if writer
            .object(
                group,
                subgroup,
                o.id,
                priority,
                o.status,
                &o.properties,
                &o.payload,
                &mut buf,
            )
            .is_err()
        {
            let _ = stream.reset(moqcast_media::moq::wire::RESET_CANCELLED);
            return;
        }
        if buf.len() >= 64 * 1024 {
            if stream.write_all(&buf).await.is_err() {
                return;
            }
            buf.clear();
        }
    }
    if stream.write_all(&buf).await.is_ok() {
        let _ = stream.finish();
    }
}

/// PUBLISH_NAMESPACE: the namespace becomes a broadcast whose tracks the relay subscribes to
/// on this session.
fn accept_namespace(ctx: &Ctx, pn: moqt::NamespaceRequest, tasks: &mut JoinSet<()>) {
    let namespace = pn.msg.track_namespace.clone();
    let path = moqcast_media::moq::broadcast_path(&namespace);
    if path.is_empty() || path.len() > 1024 {
        pn.reject(
            RequestErrorCode::NamespaceTooLarge as u64,
            "namespace must be 1..=1024 bytes",
        );
        return;
    }
    let Ok(mut announced) = pn.accept() else {
        return;
    };
    let upstream = Upstream {
        session: ctx.session.clone(),
        ingest: ctx.routes.clone(),
    };
    ctx.state.origin.announce(namespace, ctx.id, Some(upstream));
    let state = ctx.state.clone();
    let session = ctx.id;
    tasks.spawn(async move {
        announced.withdrawn().await;
        state.origin.unannounce(&path, session);
    });
}

/// PUBLISH: the peer pushes one track; its data streams are read into a cache while the
/// PUBLISH lasts.
async fn accept_publish(ctx: &Ctx, pr: moqt::PublishRequest, tasks: &mut JoinSet<()>) {
    let namespace = pr.msg.track_namespace.clone();
    let name = pr.msg.track_name.to_string_lossy().into_owned();
    let alias = pr.msg.track_alias;
    let mut published = match pr.accept(KeyValuePairs::default()).await {
        Ok(p) => p,
        Err(e) => {
            tracing::debug!(error = %e, "could not accept PUBLISH");
            return;
        }
    };
    let cache = ctx
        .state
        .origin
        .publish_track(&namespace, &name, ctx.id, (&ctx.routes, alias));
    let state = ctx.state.clone();
    let path = moqcast_media::moq::broadcast_path(&namespace);
    tasks.spawn(async move {
        let _ = published.done().await;
        state.origin.unpublish_track(&path, &name, &cache);
    });
}
