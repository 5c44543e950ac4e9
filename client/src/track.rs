//! Publishing and subscribing to tracks over a connected session: [`BroadcastPublisher`] and
//! [`TrackPublisher`] write LOC objects one group per GOP, [`TrackSubscription`] reads a
//! track's objects back in order within each group.
//!
//! Built on moq-transport 0.17's `serve` model; with [`crate::connect`], the only part of the
//! crate that knows it.

use bytes::Bytes;
use moqcast_media::moq::{namespace, serve, ExtensionHeaders, Publisher, SessionError, Subscriber};

/// One object as read from a subscription.
#[derive(Debug, Clone)]
pub struct ReceivedObject {
    pub group_id: u64,
    pub object_id: u64,
    pub properties: ExtensionHeaders,
    pub payload: Bytes,
}

/// Errors while publishing or reading a track.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TrackError {
    #[error("track error: {0}")]
    Serve(#[from] serve::ServeError),
    #[error("track {0} is delivered in an unsupported mode (only subgroup streams are supported)")]
    UnsupportedMode(String),
}

/// Publishes the tracks of one broadcast (a namespace).
pub struct BroadcastPublisher {
    tracks: serve::TracksWriter,
    reader: Option<serve::TracksReader>,
    /// Live subscription counts of the tracks registered with [`Self::watch_subscribers`].
    watched: std::collections::HashMap<String, tokio::sync::watch::Sender<usize>>,
}

impl BroadcastPublisher {
    pub fn new(broadcast: &str) -> Self {
        // Tracks are made up front with `create_track`; nobody serves requests for others, so
        // the request queue is closed at once. Kept open, a SUBSCRIBE for an unknown track (or
        // for a deeper namespace the relay routes here by prefix, such as `<broadcast>/ai` before
        // its captioner announces it) would wait for a track that never comes instead of
        // getting DOES_NOT_EXIST; the relay then held the subscriber for its 10 s upstream wait.
        let (tracks, request, reader) = serve::Tracks::new(namespace(broadcast)).produce();
        drop(request);
        Self {
            tracks,
            reader: Some(reader),
            watched: Default::default(),
        }
    }

    /// The number of subscriptions being served for `track`, kept up to date by
    /// [`Self::announce`]: it rises on each SUBSCRIBE and falls when that subscription ends
    /// (UNSUBSCRIBE, or its session closes). Lets a publisher work only while someone listens.
    pub fn watch_subscribers(&mut self, track: &str) -> tokio::sync::watch::Receiver<usize> {
        self.watched
            .entry(track.to_string())
            .or_insert_with(|| tokio::sync::watch::channel(0).0)
            .subscribe()
    }

    /// Creates a track; `None` when a track of that name exists already.
    pub fn create_track(&mut self, name: &str) -> Result<TrackPublisher, TrackError> {
        let writer = self
            .tracks
            .create(name)
            .ok_or(serve::ServeError::Duplicate)?;
        Ok(TrackPublisher {
            subgroups: writer.subgroups()?,
            current: None,
            next_group: 0,
        })
    }

    /// Announces the namespace (PUBLISH_NAMESPACE) and answers subscriptions until the session
    /// ends. Call once; run it beside `session.run()`.
    ///
    /// Also refuses, with DOES_NOT_EXIST, the session's SUBSCRIBEs that match no announced
    /// namespace. A relay routes a track to the publisher of any prefix of its namespace
    /// (draft-18 §8), so `<broadcast>/ai` reaches this publisher until a captioner announces
    /// it; unanswered, such a request would hang until the relay gives up.
    pub async fn announce(&mut self, publisher: &mut Publisher) -> Result<(), SessionError> {
        let reader = self.reader.take().ok_or(SessionError::Internal)?;
        let mut unknown = publisher.clone();
        let refuse = refuse_unknown_subscriptions(&mut unknown);
        if self.watched.is_empty() {
            tokio::select! {
                res = publisher.publish_namespace(reader) => res,
                never = refuse => match never {},
            }
        } else {
            tokio::select! {
                res = self.announce_counted(publisher, reader) => res,
                never = refuse => match never {},
            }
        }
    }

    /// [`Self::announce`] that counts the subscriptions of the watched tracks.
    async fn announce_counted(
        &mut self,
        publisher: &mut Publisher,
        tracks: serve::TracksReader,
    ) -> Result<(), SessionError> {
        use futures::StreamExt;
        let request = publisher
            .publish_namespace_start(tracks.namespace.clone())
            .await?;
        let mut serving = futures::stream::FuturesUnordered::new();
        let mut statuses = futures::stream::FuturesUnordered::new();
        let (mut subscribes_open, mut statuses_open) = (true, true);
        loop {
            tokio::select! {
                next = request.subscribed(), if subscribes_open => match next? {
                    Some(subscribed) => {
                        let name = subscribed.info.track_name.to_string_lossy().into_owned();
                        let count = self.watched.get(&name).cloned();
                        let tracks = tracks.clone();
                        serving.push(async move {
                            if let Some(count) = &count {
                                count.send_modify(|n| *n += 1);
                            }
                            let res = Publisher::serve_subscribe(subscribed, tracks).await;
                            if let Some(count) = &count {
                                count.send_modify(|n| *n = n.saturating_sub(1));
                            }
                            if let Err(e) = res {
                                tracing::debug!(track = %name, error = %e, "subscription ended");
                            }
                        });
                    }
                    None => subscribes_open = false,
                },
                next = request.track_status_requested(), if statuses_open => match next? {
                    Some(status) => {
                        let tracks = tracks.clone();
                        statuses.push(async move {
                            if let Err(e) = Publisher::serve_track_status(status, tracks).await {
                                tracing::debug!(error = %e, "track status request failed");
                            }
                        });
                    }
                    None => statuses_open = false,
                },
                Some(()) = serving.next() => {}
                Some(()) = statuses.next() => {}
                else => return Ok(()),
            }
        }
    }
}

/// Answers every SUBSCRIBE of `publisher`'s session that matched none of its announced
/// namespaces with DOES_NOT_EXIST, for as long as the session lasts; never returns.
async fn refuse_unknown_subscriptions(publisher: &mut Publisher) -> std::convert::Infallible {
    while let Some(subscribed) = publisher.subscribed().await {
        let namespace = subscribed.info.track_namespace.to_string();
        let name = subscribed.info.track_name.to_string_lossy().into_owned();
        tracing::debug!(%namespace, track = %name, "refusing a SUBSCRIBE for a namespace not published here");
        let _ = subscribed.close(serve::ServeError::NotFound);
    }
    std::future::pending().await
}

/// Writes LOC objects into one track, one group per GOP (or per catalog version).
pub struct TrackPublisher {
    subgroups: serve::SubgroupsWriter,
    current: Option<serve::SubgroupWriter>,
    next_group: u64,
}

impl TrackPublisher {
    /// Starts a new group; the previous one is finished.
    pub fn start_group(&mut self) -> Result<u64, TrackError> {
        self.current.take();
        let group_id = self.next_group;
        self.next_group += 1;
        let writer = self.subgroups.create(serve::Subgroup {
            group_id,
            subgroup_id: 0,
            priority: 0,
        })?;
        self.current = Some(writer);
        Ok(group_id)
    }

    /// Appends an object to the current group (starting one if none is open).
    pub fn write(
        &mut self,
        properties: ExtensionHeaders,
        payload: Bytes,
    ) -> Result<(), TrackError> {
        if self.current.is_none() {
            self.start_group()?;
        }
        let group = self.current.as_mut().expect("a group is open");
        let ext = (!properties.is_empty()).then_some(properties);
        let mut object = group.create(payload.len(), ext)?;
        object.write(payload)?;
        Ok(())
    }

    /// Finishes the current group without starting another.
    pub fn finish_group(&mut self) {
        self.current.take();
    }
}

/// Subscribes to one track and yields its objects in order within each group.
pub struct TrackSubscription {
    reader: serve::TrackReader,
    subgroups: Option<serve::SubgroupsReader>,
    groups: futures::stream::FuturesUnordered<GroupRead>,
}

/// One pending read of a group: the next object (or its end) and the group reader back.
type GroupRead = std::pin::Pin<
    Box<
        dyn std::future::Future<
                Output = (
                    Result<Option<ReceivedObject>, serve::ServeError>,
                    serve::SubgroupReader,
                ),
            > + Send,
    >,
>;

impl TrackSubscription {
    /// Sends SUBSCRIBE for `track` of `broadcast`. The returned future drives the
    /// subscription request and must be polled (spawned) while reading.
    pub fn new(
        subscriber: &Subscriber,
        broadcast: &str,
        track: &str,
    ) -> (
        Self,
        impl std::future::Future<Output = Result<(), serve::ServeError>> + Send + 'static,
    ) {
        let (writer, reader) = serve::Track::new(namespace(broadcast), track).produce();
        let mut subscriber = subscriber.clone();
        let driver = async move { subscriber.subscribe(writer).await };
        (
            Self {
                reader,
                subgroups: None,
                groups: Default::default(),
            },
            driver,
        )
    }

    /// The next object of any open group, or `None` when the track ended.
    ///
    /// Cancel-safe: objects are not lost if the future is dropped between polls, except the
    /// one being read when a group's future is dropped mid-read (the whole group future is
    /// kept in `self`, so this does not happen in practice).
    pub async fn next(&mut self) -> Result<Option<ReceivedObject>, TrackError> {
        use futures::StreamExt;
        if self.subgroups.is_none() {
            match self.reader.mode().await? {
                serve::TrackReaderMode::Subgroups(s) => self.subgroups = Some(s),
                _ => {
                    return Err(TrackError::UnsupportedMode(
                        self.reader.name.to_string_lossy().into_owned(),
                    ))
                }
            }
        }
        loop {
            let subgroups = self.subgroups.as_mut().expect("mode resolved");
            tokio::select! {
                next = subgroups.next() => match next? {
                    Some(group) => self.groups.push(Box::pin(read_one(group))),
                    None => {
                        // Track ended: drain the open groups.
                        while let Some((res, group)) = self.groups.next().await {
                            if let Ok(Some(obj)) = res {
                                self.groups.push(Box::pin(read_one(group)));
                                return Ok(Some(obj));
                            }
                        }
                        return Ok(None);
                    }
                },
                Some((res, group)) = self.groups.next(), if !self.groups.is_empty() => {
                    match res {
                        Ok(Some(obj)) => {
                            self.groups.push(Box::pin(read_one(group)));
                            return Ok(Some(obj));
                        }
                        // End of group or a reset group stream: drop that group only.
                        Ok(None) | Err(_) => continue,
                    }
                }
            }
        }
    }
}

async fn read_one(
    mut group: serve::SubgroupReader,
) -> (
    Result<Option<ReceivedObject>, serve::ServeError>,
    serve::SubgroupReader,
) {
    let res = async {
        let Some(mut object) = group.next().await? else {
            return Ok(None);
        };
        let payload = object.read_all().await?;
        Ok(Some(ReceivedObject {
            group_id: group.group_id,
            object_id: object.object_id,
            properties: object.extension_headers.clone(),
            payload,
        }))
    }
    .await;
    (res, group)
}
