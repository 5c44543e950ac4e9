//! Captions one broadcast: reads its catalog and audio from the relay and publishes
//! `<broadcast>/ai`, an MSF catalog with a WebVTT caption track, which viewers of the broadcast
//! discover below its namespace (SUBSCRIBE_NAMESPACE).
//!
//! The caption track is always announced, but audio is subscribed and recognised only while
//! the caption track has subscribers: when the relay's last viewer leaves, the relay
//! unsubscribes, and the audio subscription and queued recognition stop.
//!
//! Failures are per broadcast: a broadcast without audio, with an audio codec that cannot be
//! decoded, or whose relay session fails gets a status (see [`crate::metrics::Status`]) and is
//! retried; the other broadcasts of the process are unaffected.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use bytes::Bytes;
use moqcast_client::{BroadcastPublisher, Client, TrackPublisher, TrackSubscription};
use moqcast_media::{
    caption,
    catalog::{self, Catalog},
    loc::LocProperties,
};
use url::Url;

use crate::audio_in::AudioDecoder;
use crate::cues::CueWriter;
use crate::metrics::{Metrics, Status};
use crate::recognize::{Recognized, Recognizer};
use crate::segment::{Segmenter, SegmenterConfig};

/// Settings shared by every captioned broadcast.
pub struct Shared {
    pub client: Client,
    pub url: Url,
    pub recognizer: Recognizer,
    pub metrics: Arc<Metrics>,
    pub segmenter: SegmenterConfig,
    /// BCP 47 language of the captions.
    pub language: String,
    /// How long to wait for a broadcast's catalog before reconnecting.
    pub catalog_wait: Duration,
}

/// The namespace the sidecar publishes for `broadcast`.
pub fn ai_namespace(broadcast: &str) -> String {
    format!("{}/ai", broadcast.trim_end_matches('/'))
}

/// The caption track's name for a language.
pub fn caption_track_name(language: &str) -> String {
    format!("captions-{language}")
}

/// The `<broadcast>/ai` catalog: one WebVTT caption track that depends on the broadcast's video.
pub fn ai_catalog(source: &Catalog, language: &str) -> Catalog {
    let mut cat = Catalog::new();
    let label = format!("{} (automatic)", language_label(language));
    let mut track = caption::caption_track(&caption_track_name(language), language, &label);
    let videos: Vec<String> = source.video_tracks().map(|t| t.name.clone()).collect();
    if !videos.is_empty() {
        track.depends = Some(videos);
    }
    cat.tracks.push(track);
    cat
}

fn language_label(language: &str) -> &str {
    match language.split('-').next().unwrap_or(language) {
        "en" => "English",
        "es" => "Spanish",
        "fr" => "French",
        "de" => "German",
        "pt" => "Portuguese",
        "it" => "Italian",
        "ja" => "Japanese",
        "zh" => "Chinese",
        other => other,
    }
}

/// Captions `broadcast` until `shutdown` fires, reconnecting after failures.
pub async fn run_broadcast(
    shared: Arc<Shared>,
    broadcast: String,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) {
    let span = tracing::info_span!("broadcast", broadcast = %broadcast);
    let _enter = span.enter();
    drop(_enter);
    let mut backoff = Duration::from_millis(500);
    loop {
        let attempt = async {
            let res = session_once(&shared, &broadcast).await;
            if let Err(e) = &res {
                tracing::warn!(broadcast = %broadcast, error = format!("{e:#}"), "captioning stopped; retrying");
                shared
                    .metrics
                    .set_status(&broadcast, Status::Error, Some(format!("{e:#}")));
            }
            res
        };
        tokio::select! {
            res = attempt => {
                backoff = if res.is_ok() { Duration::from_millis(500) } else { (backoff * 2).min(Duration::from_secs(5)) };
            }
            _ = shutdown.changed() => return,
        }
        tokio::select! {
            () = tokio::time::sleep(backoff) => {}
            _ = shutdown.changed() => return,
        }
    }
}

/// Why a session ended without an error worth a warning.
async fn park(shared: &Shared, broadcast: &str, status: Status, detail: String) {
    tracing::warn!(broadcast, status = ?status, "{detail}");
    shared.metrics.set_status(broadcast, status, Some(detail));
    // Check again later: the publisher may come back with another catalog.
    tokio::time::sleep(Duration::from_secs(10)).await;
}

/// One relay session: catalog, publication, and captioning while subscribed.
async fn session_once(shared: &Shared, broadcast: &str) -> anyhow::Result<()> {
    shared.metrics.set_status(broadcast, Status::Waiting, None);
    let conn = shared
        .client
        .connect(&shared.url)
        .await
        .with_context(|| format!("connecting to {}", shared.url))?;
    let subscriber = conn.subscriber.clone();
    let mut publisher = conn.publisher;
    let session = conn.session.run();
    tokio::pin!(session);

    let source = tokio::select! {
        res = &mut session => anyhow::bail!("relay session ended: {res:?}"),
        cat = moqcast_client::fetch_catalog(&subscriber, broadcast, shared.catalog_wait) => cat?,
    };
    let Some(audio_track) = source.audio_tracks().next().cloned() else {
        park(
            shared,
            broadcast,
            Status::NoAudio,
            format!("the catalog of {broadcast:?} lists no audio track: nothing to caption"),
        )
        .await;
        return Ok(());
    };
    let info = moqcast_client::audio_info(&source, &audio_track)?;
    // An unknown codec and an unusable codec configuration alike: nothing here can decode it.
    if let Err(e) = AudioDecoder::new(&info) {
        park(
            shared,
            broadcast,
            Status::UnsupportedAudio,
            format!("audio track {:?} of {broadcast:?}: {e}", audio_track.name),
        )
        .await;
        return Ok(());
    }

    let ai = ai_namespace(broadcast);
    let track_name = caption_track_name(&shared.language);
    let mut bp = BroadcastPublisher::new(&ai);
    let mut cat_track = bp.create_track(catalog::CATALOG_TRACK_NAME)?;
    cat_track.start_group()?;
    cat_track.write(
        Default::default(),
        Bytes::from(ai_catalog(&source, &shared.language).to_json()),
    )?;
    let mut captions = bp.create_track(&track_name)?;
    let mut subscribers = bp.watch_subscribers(&track_name);
    let announce = bp.announce(&mut publisher);
    tokio::pin!(announce);
    tracing::info!(broadcast, namespace = %ai, track = %track_name, audio = %audio_track.name, codec = %info.codec, "caption track published");

    let mut writer = CueWriter::default();
    loop {
        shared.metrics.set_status(broadcast, Status::Idle, None);
        // Idle: nobody subscribes to the captions, nothing runs.
        while *subscribers.borrow_and_update() == 0 {
            shared.metrics.with(broadcast, |b| b.subscribers = 0);
            tokio::select! {
                res = &mut session => anyhow::bail!("relay session ended: {res:?}"),
                res = &mut announce => anyhow::bail!("publishing {ai} ended: {res:?}"),
                changed = subscribers.changed() => changed.context("caption track closed")?,
            }
        }
        shared
            .metrics
            .set_status(broadcast, Status::Captioning, None);
        let decoder = AudioDecoder::new(&info)?;
        let run = caption(
            shared,
            broadcast,
            &subscriber,
            &audio_track.name,
            decoder,
            &mut captions,
            &mut writer,
            &mut subscribers,
        );
        tokio::select! {
            res = &mut session => anyhow::bail!("relay session ended: {res:?}"),
            res = &mut announce => anyhow::bail!("publishing {ai} ended: {res:?}"),
            res = run => match res? {
                Captioned::Unsubscribed => tracing::info!(broadcast, "no caption subscribers left; recognition stopped"),
                Captioned::AudioEnded => {
                    tracing::info!(broadcast, "the broadcast's audio ended");
                    return Ok(());
                }
            },
        }
    }
}

enum Captioned {
    Unsubscribed,
    AudioEnded,
}

/// Arrival times of recent audio objects by media time, to measure caption delay.
#[derive(Default)]
struct Arrivals(VecDeque<(u64, Instant)>);

impl Arrivals {
    fn push(&mut self, media_us: u64) {
        self.0.push_back((media_us, Instant::now()));
        while self.0.len() > 4096 {
            self.0.pop_front();
        }
    }

    /// When the audio ending at `end_us` had arrived.
    fn at(&self, end_us: u64) -> Option<Instant> {
        self.0
            .iter()
            .find(|(t, _)| *t + 40_000 >= end_us)
            .map(|(_, i)| *i)
    }
}

/// Subscribes to the audio and publishes cues until the last caption subscriber leaves or the
/// audio ends.
#[allow(clippy::too_many_arguments)]
async fn caption(
    shared: &Shared,
    broadcast: &str,
    subscriber: &moqcast_media::moq::Subscriber,
    audio_track: &str,
    mut decoder: AudioDecoder,
    captions: &mut TrackPublisher,
    writer: &mut CueWriter,
    subscribers: &mut tokio::sync::watch::Receiver<usize>,
) -> anyhow::Result<Captioned> {
    let (lane, mut results) = shared.recognizer.lane(broadcast);
    let mut segmenter = Segmenter::new(shared.segmenter.clone());
    let (mut audio, driver) = TrackSubscription::new(subscriber, broadcast, audio_track);
    let driver = tokio::spawn(driver);
    let _abort = AbortOnDrop(driver.abort_handle());
    let mut arrivals = Arrivals::default();
    let mut audio_done = false;
    let mut finals_pending = 0usize;
    let mut drain_deadline = None;
    loop {
        shared
            .metrics
            .with(broadcast, |b| b.subscribers = *subscribers.borrow() as u64);
        tokio::select! {
            changed = subscribers.changed() => {
                changed.context("caption track closed")?;
                if *subscribers.borrow() == 0 {
                    // Give a viewer that switches tracks a moment before stopping.
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    if *subscribers.borrow() == 0 {
                        return Ok(Captioned::Unsubscribed);
                    }
                }
            }
            obj = audio.next(), if !audio_done => match obj {
                Ok(Some(obj)) => {
                    let props = LocProperties::from_extension_headers(&obj.properties).unwrap_or_default();
                    let Some(ts) = props.timestamp_us() else {
                        shared.metrics.with(broadcast, |b| b.decode_errors += 1);
                        continue;
                    };
                    match decoder.decode(&obj.payload) {
                        Ok(samples) => {
                            arrivals.push(ts + samples.len() as u64 * 1_000_000 / 16_000);
                            shared.metrics.with(broadcast, |b| b.audio_ms += samples.len() as u64 / 16);
                            for u in segmenter.push(ts, &samples) {
                                finals_pending += usize::from(u.is_final);
                                lane.submit(u);
                            }
                        }
                        Err(e) => {
                            tracing::debug!(broadcast, error = %e, "audio object skipped");
                            shared.metrics.with(broadcast, |b| b.decode_errors += 1);
                        }
                    }
                }
                Ok(None) | Err(_) => {
                    audio_done = true;
                    if let Some(u) = segmenter.flush() {
                        finals_pending += 1;
                        lane.submit(u);
                    }
                    if finals_pending == 0 {
                        return Ok(Captioned::AudioEnded);
                    }
                    drain_deadline = Some(tokio::time::Instant::now() + Duration::from_secs(20));
                }
            },
            () = async { tokio::time::sleep_until(drain_deadline.expect("set")).await }, if drain_deadline.is_some() => {
                return Ok(Captioned::AudioEnded);
            }
            r = results.recv() => {
                let Some(r) = r else { anyhow::bail!("the recognizer stopped") };
                if r.is_final {
                    finals_pending = finals_pending.saturating_sub(1 + r.merged.len());
                }
                publish(shared, broadcast, captions, writer, &arrivals, &r)?;
                if audio_done && finals_pending == 0 {
                    return Ok(Captioned::AudioEnded);
                }
            }
        }
    }
}

fn publish(
    shared: &Shared,
    broadcast: &str,
    captions: &mut TrackPublisher,
    writer: &mut CueWriter,
    arrivals: &Arrivals,
    r: &Recognized,
) -> anyhow::Result<()> {
    let Some(obj) = writer.on_result(r) else {
        return Ok(());
    };
    if obj.new_group {
        captions.start_group()?;
    }
    let props = LocProperties::wall_clock(moqcast_media::time::unix_micros());
    captions.write(props.to_extension_headers(), Bytes::from(obj.payload))?;
    let delay = arrivals.at(r.end_us).map(|t| t.elapsed());
    for cue in &obj.cues {
        tracing::info!(
            broadcast,
            id = cue.id.as_deref().unwrap_or(""),
            start_ms = cue.start_ms,
            end_ms = cue.end_ms,
            is_final = cue.is_final,
            inference_ms = r.inference.as_millis() as u64,
            delay_ms = delay.map(|d| d.as_millis() as u64),
            text = %cue.text,
            "cue"
        );
    }
    shared.metrics.with(broadcast, |b| {
        if r.is_final {
            b.final_cues += 1;
            if let Some(d) = delay {
                b.final_delay_ms_sum += d.as_millis() as u64;
                b.final_delay_count += 1;
            }
        } else {
            b.partial_cues += 1;
        }
    });
    Ok(())
}

struct AbortOnDrop(tokio::task::AbortHandle);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ai_catalog_declares_a_webvtt_caption_track() {
        let mut source = Catalog::new();
        let mut v = catalog::Track::new("video", catalog::packaging::LOC);
        v.role = Some(catalog::role::VIDEO.into());
        source.tracks.push(v);
        let cat = ai_catalog(&source, "en");
        let parsed = Catalog::parse(&cat.to_json()).unwrap();
        let t = parsed.caption_tracks().next().expect("a caption track");
        assert_eq!(t.name, "captions-en");
        assert_eq!(t.lang.as_deref(), Some("en"));
        assert_eq!(t.label.as_deref(), Some("English (automatic)"));
        assert_eq!(t.event_type.as_deref(), Some(caption::WEBVTT_EVENT_TYPE));
        assert_eq!(t.depends.as_deref(), Some(&["video".to_string()][..]));
        assert_eq!(ai_namespace("live/demo/"), "live/demo/ai");
    }
}
