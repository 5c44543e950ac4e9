//! Reads a broadcast back from a relay: its catalog, its audio/video tracks into an MP4, and
//! per-track statistics (objects, bytes, one-way latency from the LOC SEND_TIME property).

use std::{
    collections::BTreeMap,
    path::PathBuf,
    time::{Duration, Instant},
};

use anyhow::Context;
use moqcast_client::{
    fetch_catalog, media_info, AudioInfo, Client, ClientTls, ReceivedObject, TrackSubscription,
    VideoInfo,
};
use moqcast_media::{
    catalog::{self, Catalog},
    loc::LocProperties,
    moq::Subscriber,
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
        serde_json::json!({ "tracks": tracks, "captions": captions })
    }
}

/// Subscribes, records and measures until the tracks end or `duration` passes.
pub async fn run(opts: SubscribeOptions) -> anyhow::Result<Summary> {
    let client = Client::new(&opts.tls)?;
    let conn = client.connect(&opts.url).await?;
    let subscriber = conn.subscriber.clone();
    let session = conn.session.run();
    tokio::pin!(session);
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
        res = &mut session => anyhow::bail!("session ended before the catalog arrived: {res:?}"),
        () = &mut deadline => anyhow::bail!("no catalog for {} within the duration", opts.broadcast),
        cat = fetch_catalog(&subscriber, &opts.broadcast, opts.wait) => cat?,
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

    // 2. The media tracks.
    let (video, audio) = media_info(&catalog)?;
    let mut tracks: Vec<(String, MediaKind)> = Vec::new();
    if let Some(t) = catalog.video_tracks().next() {
        tracks.push((t.name.clone(), MediaKind::Video));
    }
    if let Some(t) = catalog.audio_tracks().next() {
        tracks.push((t.name.clone(), MediaKind::Audio));
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
    let (obj_tx, mut obj_rx) =
        mpsc::channel::<(String, MediaKind, Result<ReceivedObject, String>)>(256);
    let mut readers = tokio::task::JoinSet::new();
    for (name, kind) in &tracks {
        let (mut sub, driver) = TrackSubscription::new(&subscriber, &opts.broadcast, name);
        let tx = obj_tx.clone();
        let name = name.clone();
        let kind = *kind;
        readers.spawn(async move {
            let read = async {
                loop {
                    match sub.next().await {
                        Ok(Some(o)) => {
                            if tx.send((name.clone(), kind, Ok(o))).await.is_err() {
                                return;
                            }
                        }
                        Ok(None) => return,
                        Err(e) => {
                            let _ = tx.send((name.clone(), kind, Err(e.to_string()))).await;
                            return;
                        }
                    }
                }
            };
            tokio::select! {
                res = driver => if let Err(e) = res { let _ = tx.send((name.clone(), kind, Err(e.to_string()))).await; },
                () = read => {},
            }
        });
    }
    drop(obj_tx);
    let (cap_tx, mut cap_rx) = mpsc::channel::<Result<ReceivedObject, String>>(64);
    if opts.wants_captions() {
        // The session must be driven while the caption catalog is fetched.
        let find = find_caption_track(
            &subscriber,
            &opts.broadcast,
            &catalog,
            opts.wait,
            opts.caption_lang.as_deref(),
        );
        let (namespace, track) = tokio::select! {
            res = &mut session => anyhow::bail!("session ended before the caption catalog arrived: {res:?}"),
            () = &mut deadline => anyhow::bail!("no caption track for {} within the duration", opts.broadcast),
            found = find => found?,
        };
        tracing::info!(namespace = %namespace, track = %track, "reading captions");
        summary.caption_track = Some(format!("{namespace}/{track}"));
        summary.captions = Some(CaptionCollector::default());
        let (mut sub, driver) = TrackSubscription::new(&subscriber, &namespace, &track);
        readers.spawn(async move {
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
    let subscribed_at = Instant::now();
    let mut media_ended = false;

    let mut last_group: BTreeMap<String, u64> = BTreeMap::new();
    let mut timeline = Timeline::default();
    let mut end_error = None;
    loop {
        tokio::select! {
            res = &mut session => { end_error = Some(format!("session ended: {res:?}")); break; }
            () = &mut deadline => break,
            cap = cap_rx.recv() => match cap {
                Some(Ok(obj)) => on_caption_object(&mut summary, &obj),
                Some(Err(e)) => tracing::warn!(error = %e, "caption track ended with an error"),
                None => {}
            },
            next = obj_rx.recv() => {
                let Some((name, kind, res)) = next else { media_ended = true; break };
                let obj = match res {
                    Ok(o) => o,
                    Err(e) => { tracing::warn!(track = %name, error = %e, "track ended with an error"); continue; }
                };
                let stats = summary.tracks.entry(name.clone()).or_default();
                let props = LocProperties::from_extension_headers(&obj.properties).unwrap_or_default();
                let keyframe = match kind {
                    MediaKind::Video => moqcast_media::h264::is_keyframe_avcc(&obj.payload, 4),
                    MediaKind::Audio => true,
                };
                if stats.objects == 0 {
                    stats.first_object = Some(subscribed_at.elapsed());
                    stats.first_is_keyframe = Some(keyframe);
                }
                stats.objects += 1;
                stats.bytes += obj.payload.len() as u64;
                if keyframe && kind == MediaKind::Video {
                    stats.keyframes += 1;
                }
                if last_group.get(&name) != Some(&obj.group_id) {
                    stats.groups += 1;
                    last_group.insert(name.clone(), obj.group_id);
                }
                if let Some(sent) = props.send_time_us {
                    stats.latencies_us.push(unix_micros().saturating_sub(sent));
                    if let (MediaKind::Audio, Some(c), Some(ts)) = (kind, summary.captions.as_mut(), props.timestamp_us()) {
                        c.on_audio(ts, sent);
                    }
                }
                if let (Some(rec), Some(pts)) = (&recorder, props.timestamp_us()) {
                    // A new publisher's clock (a take-over) continues the recording's.
                    let (raw, seen) = (pts, timeline.discontinuities);
                    let pts = timeline.map(kind, pts);
                    if timeline.discontinuities > seen {
                        tracing::info!(?kind, raw, pts, "the publisher's clock changed: the recording's timeline goes on");
                    }
                    let frame = Frame { pts_us: pts, keyframe, payload: obj.payload };
                    if rec.0.send((kind, frame)).await.is_err() {
                        end_error = Some("the recorder stopped".into());
                        break;
                    }
                }
            }
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
    if let (Some(path), Some(c)) = (&opts.captions, &summary.captions) {
        std::fs::write(path, c.webvtt()).with_context(|| format!("writing {}", path.display()))?;
        tracing::info!(path = %path.display(), cues = c.cues().len(), "captions written");
    }
    if let Some((tx, handle)) = recorder {
        drop(tx);
        handle
            .join()
            .map_err(|_| anyhow::anyhow!("recorder thread panicked"))?
            .context("finishing the recording")?;
    }
    client.close().await;
    tracing::info!(elapsed = ?started.elapsed(), error = ?end_error, "subscription ended");
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
