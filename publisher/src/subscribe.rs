//! Reads a broadcast back from a relay: its catalog, its audio/video tracks into an MP4, and
//! per-track statistics (objects, bytes, one-way latency from the LOC SEND_TIME property).

use std::{
    collections::BTreeMap,
    path::PathBuf,
    time::{Duration, Instant},
};

use anyhow::Context;
use moqcast_client::{
    audio_info, fetch_catalog, media_info, AudioInfo, Client, ClientTls, ReceivedObject,
    TrackSubscription, VideoInfo,
};
use moqcast_media::{
    catalog::{self, Catalog},
    loc::LocProperties,
    moq::{serve, SessionError, Subscriber},
    time::unix_micros,
    Frame, MediaKind,
};
use tokio::sync::mpsc;
use url::Url;

use crate::{caption_rx::CaptionCollector, record::Mp4Recorder, timeline::Timeline};

/// What `moqcast-subscribe` does.
#[derive(Debug, Clone)]
pub struct SubscribeOptions {
    pub url: Url,
    pub broadcast: String,
    pub tls: ClientTls,
    pub output: Option<PathBuf>,
    pub duration: Option<Duration>,
    pub print_catalog: bool,
    pub stats: bool,
    /// How long to keep retrying while the broadcast is not (yet) announced.
    pub wait: Duration,
    /// Write the final caption cues received to this WebVTT file.
    pub captions: Option<PathBuf>,
    /// Measure the delay from each utterance's end to its final cue (see [`crate::caption_rx`]).
    pub caption_latency: bool,
    /// Caption language (BCP 47 primary tag match): only a track in that language is read.
    /// Without it, the first caption track.
    pub caption_lang: Option<String>,
    /// Audio language (BCP 47 primary tag match): the audio track recorded is one in that
    /// language (the broadcast's own, else a dub in `<broadcast>/ai`). Without it, the first.
    pub audio_lang: Option<String>,
    /// How long to keep trying to get back after losing the relay (zero: give up at once).
    pub reconnect_for: Duration,
}

impl SubscribeOptions {
    fn wants_captions(&self) -> bool {
        self.captions.is_some() || self.caption_latency
    }
}

/// Per-track counters.
#[derive(Debug, Default, Clone)]
pub struct TrackStats {
    pub objects: u64,
    pub bytes: u64,
    pub groups: u64,
    pub keyframes: u64,
    /// One-way latencies in µs (publisher SEND_TIME to arrival here).
    pub latencies_us: Vec<u64>,
    /// Time from SUBSCRIBE to the first object.
    pub first_object: Option<Duration>,
    /// Whether the first video object was a keyframe.
    pub first_is_keyframe: Option<bool>,
}

impl TrackStats {
    fn percentile(&self, p: f64) -> Option<f64> {
        if self.latencies_us.is_empty() {
            return None;
        }
        let mut v = self.latencies_us.clone();
        v.sort_unstable();
        let idx = ((v.len() as f64 - 1.0) * p).round() as usize;
        Some(v[idx] as f64 / 1000.0)
    }
}

/// The outcome of a subscription run.
#[derive(Debug, Default)]
pub struct Summary {
    pub catalog: Option<Catalog>,
    pub tracks: BTreeMap<String, TrackStats>,
    /// What the caption track delivered, with `--captions` / `--caption-latency`.
    pub captions: Option<CaptionCollector>,
    /// `namespace/track` of the caption track read.
    pub caption_track: Option<String>,
    /// Times the subscription came back after losing the relay.
    pub reconnects: u64,
}

impl Summary {
    /// A table for `--stats`.
    pub fn table(&self) -> String {
        let mut s = format!(
            "{:<10} {:>8} {:>12} {:>7} {:>10} {:>10} {:>10} {:>12}\n",
            "track",
            "objects",
            "bytes",
            "groups",
            "lat p50ms",
            "lat p99ms",
            "lat max",
            "first obj ms"
        );
        for (name, t) in &self.tracks {
            let f = |v: Option<f64>| v.map(|x| format!("{x:.1}")).unwrap_or_else(|| "-".into());
            s.push_str(&format!(
                "{:<10} {:>8} {:>12} {:>7} {:>10} {:>10} {:>10} {:>12}\n",
                name,
                t.objects,
                t.bytes,
                t.groups,
                f(t.percentile(0.5)),
                f(t.percentile(0.99)),
                f(t.percentile(1.0)),
                f(t.first_object.map(|d| d.as_secs_f64() * 1000.0)),
            ));
        }
        if let Some(c) = &self.captions {
            let f = |v: Option<f64>| {
                v.map(|x| format!("{x:.0} ms"))
                    .unwrap_or_else(|| "-".into())
            };
            s.push_str(&format!(
                "captions {}: {} final cues, {} partial; caption latency p50 {} p95 {} ({} measured)\n",
                self.caption_track.as_deref().unwrap_or("-"),
                c.cues().len(),
                c.partials,
                f(c.latency(0.5)),
                f(c.latency(0.95)),
                c.measured()
            ));
        }
        s
    }

    /// The same as one JSON object.
    pub fn json(&self) -> serde_json::Value {
        let tracks: serde_json::Map<String, serde_json::Value> = self
            .tracks
            .iter()
            .map(|(n, t)| {
                (
                    n.clone(),
                    serde_json::json!({
                        "objects": t.objects,
                        "bytes": t.bytes,
                        "groups": t.groups,
                        "keyframes": t.keyframes,
                        "latency_p50_ms": t.percentile(0.5),
                        "latency_p99_ms": t.percentile(0.99),
                        "latency_max_ms": t.percentile(1.0),
                        "first_object_ms": t.first_object.map(|d| d.as_secs_f64() * 1000.0),
                        "first_is_keyframe": t.first_is_keyframe,
                    }),
                )
            })
            .collect();
        let captions = self.captions.as_ref().map(|c| {
            serde_json::json!({
                "track": self.caption_track,
                "final_cues": c.cues().len(),
                "partial_cues": c.partials,
                "caption_latency_p50_ms": c.latency(0.5),
                "caption_latency_p95_ms": c.latency(0.95),
                "caption_latency_measured": c.measured(),
            })
        });
        serde_json::json!({ "tracks": tracks, "captions": captions, "reconnects": self.reconnects })
    }
}

/// Backoff between attempts to get back to the relay after losing it: doubling up to the most.
const RECONNECT_FIRST: Duration = Duration::from_millis(200);
const RECONNECT_MOST: Duration = Duration::from_secs(5);
/// The most one attempt waits for the QUIC handshake and SETUP (the relay may be starting).
const RECONNECT_CONNECT: Duration = Duration::from_secs(2);
/// The most one attempt waits for the broadcast to be announced again (its publisher
/// reconnecting to a restarted relay).
const RECONNECT_CATALOG: Duration = Duration::from_secs(3);

/// How long tracks that all failed wait to see whether their session ended too (the relay is
/// gone: reconnect) or stays up (the broadcast ended: finish).
const SESSION_GONE: Duration = Duration::from_millis(500);

/// A session with the relay: the session's future (drive it while subscribed) and its
/// subscriber half.
struct Link {
    session: std::pin::Pin<Box<dyn std::future::Future<Output = Result<(), SessionError>> + Send>>,
    subscriber: Subscriber,
}

impl Link {
    async fn open(client: &Client, url: &Url) -> anyhow::Result<Self> {
        let conn = client.connect(url).await?;
        Ok(Self {
            subscriber: conn.subscriber.clone(),
            session: Box::pin(conn.session.run()),
        })
    }

    /// The broadcast's catalog, retried for `wait` while it is not announced, driving the
    /// session meanwhile.
    async fn catalog(&mut self, broadcast: &str, wait: Duration) -> anyhow::Result<Catalog> {
        tokio::select! {
            res = &mut self.session => anyhow::bail!("session ended before the catalog arrived: {res:?}"),
            cat = fetch_catalog(&self.subscriber, broadcast, wait) => Ok(cat?),
        }
    }

    /// Connects again and waits for the broadcast to be back: one reconnection attempt.
    async fn reopen(client: &Client, opts: &SubscribeOptions) -> anyhow::Result<(Self, Catalog)> {
        let mut link = tokio::time::timeout(RECONNECT_CONNECT, Self::open(client, &opts.url))
            .await
            .map_err(|_| anyhow::anyhow!("no connection within {RECONNECT_CONNECT:?}"))??;
        let catalog = link
            .catalog(&opts.broadcast, opts.wait.min(RECONNECT_CATALOG))
            .await?;
        Ok((link, catalog))
    }
}

/// How a track reader ended.
enum ReaderEnd {
    /// The track ended (PUBLISH_DONE with TRACK_ENDED, or the subscription's stream finished).
    Clean,
    /// The subscription failed or was refused, or the session went.
    Failed(String),
}

impl ReaderEnd {
    fn of(e: &serve::ServeError) -> Self {
        use moqcast_media::moq::transport::message::PublishDoneCode;
        match e {
            serve::ServeError::Done => Self::Clean,
            serve::ServeError::Closed(code) if *code == PublishDoneCode::TrackEnded as u64 => {
                Self::Clean
            }
            e => Self::Failed(e.to_string()),
        }
    }
}

/// One reader task per media track, sending objects to `tx`.
fn read_tracks(
    subscriber: &Subscriber,
    tracks: &[(String, String, MediaKind)],
    tx: &mpsc::Sender<(String, MediaKind, ReceivedObject)>,
) -> tokio::task::JoinSet<ReaderEnd> {
    let mut readers = tokio::task::JoinSet::new();
    for (namespace, name, kind) in tracks {
        let (mut sub, driver) = TrackSubscription::new(subscriber, namespace, name);
        let (tx, name, kind) = (tx.clone(), name.clone(), *kind);
        readers.spawn(async move {
            let read = async {
                loop {
                    match sub.next().await {
                        Ok(Some(o)) => {
                            if tx.send((name.clone(), kind, o)).await.is_err() {
                                return ReaderEnd::Clean;
                            }
                        }
                        Ok(None) => return ReaderEnd::Clean,
                        Err(moqcast_client::TrackError::Serve(e)) => return ReaderEnd::of(&e),
                        Err(e) => return ReaderEnd::Failed(e.to_string()),
                    }
                }
            };
            let end = tokio::select! {
                res = driver => match res {
                    Ok(()) => ReaderEnd::Clean,
                    Err(e) => ReaderEnd::of(&e),
                },
                end = read => end,
            };
            if let ReaderEnd::Failed(e) = &end {
                tracing::warn!(track = %name, error = %e, "track ended with an error");
            }
            end
        });
    }
    readers
}

/// Where received media objects go: statistics, the recording, the caption latency.
struct Sink {
    recorder: Option<RecorderHandle>,
    /// The recording's one timeline across publishers ([`Timeline`]).
    timeline: Timeline,
    last_group: BTreeMap<String, u64>,
    subscribed_at: Instant,
}

impl Sink {
    /// Takes one object; an error when the recorder stopped.
    async fn object(
        &mut self,
        summary: &mut Summary,
        name: String,
        kind: MediaKind,
        obj: ReceivedObject,
    ) -> Result<(), String> {
        let stats = summary.tracks.entry(name.clone()).or_default();
        let props = LocProperties::from_extension_headers(&obj.properties).unwrap_or_default();
        let keyframe = match kind {
            MediaKind::Video => moqcast_media::h264::is_keyframe_avcc(&obj.payload, 4),
            MediaKind::Audio => true,
        };
        if stats.objects == 0 {
            stats.first_object = Some(self.subscribed_at.elapsed());
            stats.first_is_keyframe = Some(keyframe);
        }
        stats.objects += 1;
        stats.bytes += obj.payload.len() as u64;
        if keyframe && kind == MediaKind::Video {
            stats.keyframes += 1;
        }
        if self.last_group.get(&name) != Some(&obj.group_id) {
            stats.groups += 1;
            self.last_group.insert(name, obj.group_id);
        }
        if let Some(sent) = props.send_time_us {
            stats.latencies_us.push(unix_micros().saturating_sub(sent));
            if let (MediaKind::Audio, Some(c), Some(ts)) =
                (kind, summary.captions.as_mut(), props.timestamp_us())
            {
                c.on_audio(ts, sent);
            }
        }
        if let (Some(rec), Some(pts)) = (&self.recorder, props.timestamp_us()) {
            // A new publisher's clock (a take-over, a restart) continues the recording's.
            let Some(pts) = self.timeline.map(kind, pts) else {
                // Audio the new publisher's video has not placed yet (see [`Timeline`]).
                return Ok(());
            };
            let frame = Frame {
                pts_us: pts,
                keyframe,
                payload: obj.payload,
            };
            if rec.0.send((kind, frame)).await.is_err() {
                return Err("the recorder stopped".into());
            }
        }
        Ok(())
    }
}

/// Subscribes, records and measures until the tracks end or `duration` passes.
///
/// When the session with the relay ends (a relay restart, the relay closing sessions at the
/// end of its drain after GOAWAY), it connects again with backoff,
/// waits for the broadcast to be back and subscribes to the same tracks, for up to
/// `reconnect_for`; the recording goes on in the same file (one timeline: [`Timeline`]). The
/// caption track is read from the first session only.
pub async fn run(opts: SubscribeOptions) -> anyhow::Result<Summary> {
    let client = Client::new(&opts.tls)?;
    let mut link = Link::open(&client, &opts.url).await?;
    let started = Instant::now();
    let deadline = async {
        match opts.duration {
            Some(d) => tokio::time::sleep(d).await,
            None => std::future::pending().await,
        }
    };
    tokio::pin!(deadline);

    // 1. The catalog (retrying while the broadcast is not announced yet).
    let catalog = tokio::select! {
        () = &mut deadline => anyhow::bail!("no catalog for {} within the duration", opts.broadcast),
        cat = link.catalog(&opts.broadcast, opts.wait) => cat?,
    };
    let mut summary = Summary {
        catalog: Some(catalog.clone()),
        ..Default::default()
    };
    if opts.print_catalog {
        println!(
            "{}",
            serde_json::to_string_pretty(&serde_json::from_slice::<serde_json::Value>(
                &catalog.to_json()
            )?)?
        );
        if opts.output.is_none() && !opts.stats {
            return Ok(summary);
        }
    }

    // 2. The media tracks: (namespace, track, kind).
    let (video, mut audio) = media_info(&catalog)?;
    let mut tracks: Vec<(String, String, MediaKind)> = Vec::new();
    if let Some(t) = catalog.video_tracks().next() {
        tracks.push((opts.broadcast.clone(), t.name.clone(), MediaKind::Video));
    }
    if let Some(lang) = &opts.audio_lang {
        let find = find_audio_track(&link.subscriber, &opts.broadcast, &catalog, opts.wait, lang);
        let (namespace, track, info) = tokio::select! {
            res = &mut link.session => anyhow::bail!("session ended before the dub's catalog arrived: {res:?}"),
            () = &mut deadline => anyhow::bail!("no {lang:?} audio track for {} within the duration", opts.broadcast),
            found = find => found?,
        };
        tracing::info!(namespace = %namespace, track = %track, codec = %info.codec, "recording the {lang} audio track");
        tracks.push((namespace, track, MediaKind::Audio));
        audio = Some(info);
    } else if let Some(t) = catalog.audio_tracks().next() {
        tracks.push((opts.broadcast.clone(), t.name.clone(), MediaKind::Audio));
    }
    if tracks.is_empty() {
        anyhow::bail!(
            "the catalog of {} lists no audio or video track",
            opts.broadcast
        );
    }

    let recorder = match &opts.output {
        Some(path) => Some(spawn_recorder(path.clone(), video, audio)?),
        None => None,
    };
    // Kept here across reconnections: the channel closes only when this function returns.
    let (obj_tx, mut obj_rx) = mpsc::channel::<(String, MediaKind, ReceivedObject)>(256);
    let mut readers = read_tracks(&link.subscriber, &tracks, &obj_tx);
    let mut captions = tokio::task::JoinSet::new();
    let (cap_tx, mut cap_rx) = mpsc::channel::<Result<ReceivedObject, String>>(64);
    if opts.wants_captions() {
        // The session must be driven while the caption catalog is fetched.
        let find = find_caption_track(
            &link.subscriber,
            &opts.broadcast,
            &catalog,
            opts.wait,
            opts.caption_lang.as_deref(),
        );
        let (namespace, track) = tokio::select! {
            res = &mut link.session => anyhow::bail!("session ended before the caption catalog arrived: {res:?}"),
            () = &mut deadline => anyhow::bail!("no caption track for {} within the duration", opts.broadcast),
            found = find => found?,
        };
        tracing::info!(namespace = %namespace, track = %track, "reading captions");
        summary.caption_track = Some(format!("{namespace}/{track}"));
        summary.captions = Some(CaptionCollector::default());
        let (mut sub, driver) = TrackSubscription::new(&link.subscriber, &namespace, &track);
        captions.spawn(async move {
            let read = async {
                loop {
                    let next = sub.next().await;
                    let end = !matches!(next, Ok(Some(_)));
                    let item = match next {
                        Ok(Some(o)) => Ok(o),
                        Ok(None) => return,
                        Err(e) => Err(e.to_string()),
                    };
                    if cap_tx.send(item).await.is_err() || end {
                        return;
                    }
                }
            };
            tokio::select! {
                res = driver => if let Err(e) = res { let _ = cap_tx.send(Err(e.to_string())).await; },
                () = read => {},
            }
        });
    } else {
        drop(cap_tx);
    }
    let mut sink = Sink {
        recorder,
        timeline: Timeline::default(),
        last_group: BTreeMap::new(),
        subscribed_at: Instant::now(),
    };
    let mut link = Some(link);
    let mut media_ended = false;
    let mut end_error = None;
    // Reconnection: since when the relay is lost (None: connected), the next attempt, backoff.
    let mut lost_since: Option<Instant> = None;
    let mut failed: Option<String> = None;
    let mut backoff = RECONNECT_FIRST;
    let retry = tokio::time::sleep(Duration::ZERO);
    tokio::pin!(retry);
    loop {
        let mut lost = None;
        tokio::select! {
            res = async { link.as_mut().expect("guarded").session.as_mut().await }, if link.is_some() => {
                lost = Some(format!("session ended: {res:?}"));
            }
            () = &mut deadline => break,
            cap = cap_rx.recv() => match cap {
                Some(Ok(obj)) => on_caption_object(&mut summary, &obj),
                Some(Err(e)) => tracing::warn!(error = %e, "caption track ended with an error"),
                None => {}
            },
            Some((name, kind, obj)) = obj_rx.recv() => {
                if let Err(e) = sink.object(&mut summary, name, kind, obj).await {
                    end_error = Some(e);
                    break;
                }
            }
            Some(end) = readers.join_next(), if !readers.is_empty() => {
                if let Ok(ReaderEnd::Failed(e)) | Err(e) = end.map_err(|e| e.to_string()) {
                    failed = Some(e);
                }
                if readers.is_empty() {
                    // Tracks that failed while the session stays up ended with the broadcast
                    // (moq-transport reports some clean ends as errors); the session ending too
                    // is the relay going away.
                    let session_ended = match (failed.take(), link.as_mut()) {
                        (Some(_), Some(l)) => {
                            tokio::time::timeout(SESSION_GONE, l.session.as_mut()).await.is_ok()
                        }
                        _ => false,
                    };
                    if session_ended {
                        lost = Some("the session ended".to_string());
                    } else {
                        // Every track ended: take what the readers queued, then finish.
                        while let Ok((name, kind, obj)) = obj_rx.try_recv() {
                            if let Err(e) = sink.object(&mut summary, name, kind, obj).await {
                                end_error = Some(e);
                                break;
                            }
                        }
                        media_ended = true;
                        break;
                    }
                }
            }
            () = &mut retry, if link.is_none() => {
                let since = *lost_since.get_or_insert_with(Instant::now);
                let attempt = tokio::select! {
                    res = Link::reopen(&client, &opts) => res,
                    () = &mut deadline => break,
                };
                match attempt {
                    Ok((l, cat)) => {
                        if cat.tracks != catalog.tracks {
                            tracing::warn!("the broadcast's catalog changed; recording the same track names");
                        }
                        readers = read_tracks(&l.subscriber, &tracks, &obj_tx);
                        link = Some(l);
                        summary.reconnects += 1;
                        tracing::info!(after = ?since.elapsed(), "resubscribed");
                        lost_since = None;
                        backoff = RECONNECT_FIRST;
                    }
                    Err(e) if since.elapsed() >= opts.reconnect_for => {
                        end_error = Some(format!("gave up reconnecting after {:?}: {e:#}", since.elapsed()));
                        break;
                    }
                    Err(e) => {
                        tracing::warn!(error = format!("{e:#}"), retry_in_ms = backoff.as_millis() as u64, "resubscribing failed");
                        retry.as_mut().reset(tokio::time::Instant::now() + backoff);
                        backoff = (backoff * 2).min(RECONNECT_MOST);
                    }
                }
            }
        }
        if let Some(why) = lost {
            readers.abort_all();
            readers = tokio::task::JoinSet::new();
            link = None;
            if opts.reconnect_for.is_zero() {
                end_error = Some(why);
                break;
            }
            tracing::warn!(reason = %why, "lost the relay: reconnecting");
            lost_since = Some(Instant::now());
            retry.as_mut().reset(tokio::time::Instant::now() + backoff);
        }
    }
    if media_ended && summary.captions.is_some() {
        // The media ended: the last final cues follow within a few seconds.
        loop {
            tokio::select! {
                () = &mut deadline => break,
                res = tokio::time::timeout(CAPTION_GRACE, cap_rx.recv()) => match res {
                    Ok(Some(Ok(obj))) => on_caption_object(&mut summary, &obj),
                    Ok(Some(Err(e))) => { tracing::warn!(error = %e, "caption track ended with an error"); break; }
                    Ok(None) | Err(_) => break,
                },
            }
        }
    }
    readers.abort_all();
    captions.abort_all();
    drop(link);
    if let (Some(path), Some(c)) = (&opts.captions, &summary.captions) {
        std::fs::write(path, c.webvtt()).with_context(|| format!("writing {}", path.display()))?;
        tracing::info!(path = %path.display(), cues = c.cues().len(), "captions written");
    }
    if let Some((tx, handle)) = sink.recorder {
        drop(tx);
        handle
            .join()
            .map_err(|_| anyhow::anyhow!("recorder thread panicked"))?
            .context("finishing the recording")?;
    }
    client.close().await;
    tracing::info!(elapsed = ?started.elapsed(), error = ?end_error, reconnects = summary.reconnects, "subscription ended");
    if summary.tracks.values().all(|t| t.objects == 0) {
        anyhow::bail!(
            "received no media from {}{}",
            opts.broadcast,
            end_error.map(|e| format!(" ({e})")).unwrap_or_default()
        );
    }
    Ok(summary)
}

/// How long to wait for more final cues after the media ended.
const CAPTION_GRACE: Duration = Duration::from_secs(10);

fn on_caption_object(summary: &mut Summary, obj: &ReceivedObject) {
    if let Some(c) = summary.captions.as_mut() {
        if let Err(e) = c.on_object(&obj.payload, unix_micros()) {
            tracing::warn!(error = %e, "bad caption object skipped");
        }
    }
}

/// The caption track to read: one in the live captioner's `<broadcast>/ai` namespace if it
/// publishes one within `wait`, else one of the broadcast's own. `lang` picks among several.
pub async fn find_caption_track(
    subscriber: &Subscriber,
    broadcast: &str,
    own: &Catalog,
    wait: Duration,
    lang: Option<&str>,
) -> anyhow::Result<(String, String)> {
    let pick = |cat: &Catalog| -> Option<String> {
        let tracks: Vec<&catalog::Track> = cat.caption_tracks().collect();
        let primary = |t: &&catalog::Track| {
            t.lang
                .as_deref()
                .unwrap_or("")
                .split('-')
                .next()
                .map(str::to_ascii_lowercase)
        };
        let wanted = lang.map(|l| l.split('-').next().unwrap_or(l).to_ascii_lowercase());
        match wanted {
            // A language asked for is that language or nothing (a translated track may be
            // missing because no translator serves it; the source captions are no stand-in).
            Some(_) => tracks.iter().find(|t| primary(t) == wanted),
            None => tracks.first(),
        }
        .map(|t| t.name.clone())
    };
    let ai = format!("{}/ai", broadcast.trim_end_matches('/'));
    let own_track = pick(own);
    // With captions of its own, only glance at the captioner's namespace.
    let ai_wait = if own_track.is_some() {
        wait.min(Duration::from_secs(2))
    } else {
        wait
    };
    match fetch_catalog(subscriber, &ai, ai_wait).await {
        Ok(cat) => {
            if let Some(t) = pick(&cat) {
                return Ok((ai, t));
            }
        }
        Err(e) => tracing::debug!(error = %e, "no live captioner catalog"),
    }
    match own_track {
        Some(t) => Ok((broadcast.to_string(), t)),
        None => match lang {
            Some(l) => anyhow::bail!(
                "neither {broadcast:?} nor a captioner in {ai:?} published a caption track in {l:?} within {wait:?} (is moqcast-sidecar running with --translate {l}?)"
            ),
            None => anyhow::bail!(
                "{broadcast:?} has no caption track, and no captioner published one in {ai:?} within {wait:?} (is moqcast-sidecar running?)"
            ),
        },
    }
}

/// The primary subtag of a BCP 47 tag, lower case (`es-MX` -> `es`).
fn primary_language(tag: &str) -> String {
    tag.split('-').next().unwrap_or(tag).to_ascii_lowercase()
}

/// The audio track in `lang` to record, with its decoder configuration: one of the broadcast's
/// own (a multi-language broadcast), else the dub a sidecar publishes in `<broadcast>/ai`
/// (`moqcast-sidecar --dub LANG`), waited for up to `wait`.
pub async fn find_audio_track(
    subscriber: &Subscriber,
    broadcast: &str,
    own: &Catalog,
    wait: Duration,
    lang: &str,
) -> anyhow::Result<(String, String, AudioInfo)> {
    let wanted = primary_language(lang);
    let pick = |cat: &Catalog| -> Option<anyhow::Result<(String, AudioInfo)>> {
        let t = cat
            .audio_tracks()
            .find(|t| t.lang.as_deref().map(primary_language).as_deref() == Some(&wanted))?;
        Some(
            audio_info(cat, t)
                .map(|info| (t.name.clone(), info))
                .with_context(|| format!("the {lang:?} audio track {:?}", t.name)),
        )
    };
    if let Some(found) = pick(own) {
        let (track, info) = found?;
        return Ok((broadcast.to_string(), track, info));
    }
    let ai = format!("{}/ai", broadcast.trim_end_matches('/'));
    let cat = fetch_catalog(subscriber, &ai, wait).await.with_context(|| {
        format!("{broadcast:?} has no {lang:?} audio track, and no sidecar published {ai:?} within {wait:?} (is moqcast-sidecar running with --dub {lang}?)")
    })?;
    match pick(&cat) {
        Some(found) => {
            let (track, info) = found?;
            Ok((ai, track, info))
        }
        None => anyhow::bail!(
            "neither {broadcast:?} nor {ai:?} has an audio track in {lang:?} (is moqcast-sidecar running with --dub {lang}?)"
        ),
    }
}

type RecorderHandle = (
    mpsc::Sender<(MediaKind, Frame)>,
    std::thread::JoinHandle<anyhow::Result<()>>,
);

fn spawn_recorder(
    path: PathBuf,
    video: Option<VideoInfo>,
    audio: Option<AudioInfo>,
) -> anyhow::Result<RecorderHandle> {
    let mut rec = Mp4Recorder::create(&path, video.as_ref(), audio.as_ref())
        .with_context(|| format!("creating {}", path.display()))?;
    let (tx, mut rx) = mpsc::channel::<(MediaKind, Frame)>(512);
    let handle = std::thread::Builder::new()
        .name("recorder".into())
        .spawn(move || {
            while let Some((kind, frame)) = rx.blocking_recv() {
                rec.write(kind, &frame)?;
            }
            rec.finish()?;
            Ok(())
        })?;
    Ok((tx, handle))
}
