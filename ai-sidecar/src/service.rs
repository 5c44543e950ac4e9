//! Captions one broadcast: reads its catalog and audio from the relay and publishes
//! `<broadcast>/ai`, an MSF catalog with WebVTT caption tracks, which viewers of the broadcast
//! discover below its namespace (SUBSCRIBE_NAMESPACE): `captions-<lang>` of the speech's
//! language, and one `captions-<lang>` per translation target, whose cues keep the source cues'
//! ids and media times.
//!
//! The caption tracks are always announced, but audio is subscribed and recognised only while
//! one of them has subscribers, and a language is translated only while its own track has
//! some: when the relay's last viewer leaves, the relay unsubscribes, and the audio
//! subscription, queued recognition and translation stop. Translation never holds the source
//! captions back (see [`crate::translate`]).
//!
//! Failures are per broadcast: a broadcast without audio, with an audio codec that cannot be
//! decoded, or whose relay session fails gets a status (see [`crate::metrics::Status`]) and is
//! retried; the other broadcasts of the process are unaffected.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex};
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
use crate::dubbing::{dub_track_name, DubEvent, DubLane, DubOutput};
use crate::lang;
use crate::metrics::{Metrics, Status};
use crate::providers::Providers;
use crate::recognize::{Recognized, Recognizer};
use crate::segment::{Segmenter, SegmenterConfig};
use crate::stage::{Chain, Synthesis, Translation};
use crate::translate::{LaneEvent, LanguageLane, Queue, SourceCue};

/// Settings shared by every captioned broadcast.
pub struct Shared {
    pub client: Client,
    pub url: Url,
    pub recognizer: Recognizer,
    pub metrics: Arc<Metrics>,
    pub segmenter: SegmenterConfig,
    /// BCP 47 language of the speech and the source captions, or `auto`: detected from each
    /// broadcast's first speech, and the source track named after it.
    pub language: String,
    /// The translated caption tracks.
    pub translations: Translations,
    /// Bounds of each translation queue.
    pub translate_queue: usize,
    pub translate_max_wait: Duration,
    /// How long to wait for a broadcast's catalog before reconnecting.
    pub catalog_wait: Duration,
    /// The dubbed audio tracks.
    pub dubs: Dubs,
}

/// The dubbed audio tracks (`--dub`): a language is dubbed where its captions are translated
/// and its synthesis chain has a provider.
#[derive(Clone, Default)]
pub struct Dubs {
    pub chains: Vec<(String, Chain<Synthesis>)>,
    /// Level of the original audio mixed under the voice (`None`: not mixed).
    pub original_db: Option<f32>,
    /// How far the dub runs behind the source audio.
    pub delay: Duration,
    /// Cues waiting for synthesis per dub.
    pub queue: usize,
}

/// The `altGroup` of the original audio and its dubs when the source catalog has none (the
/// one moqcast-publish sets).
pub use moqcast_media::info::AUDIO_ALT_GROUP;

/// A target language and the chain that translates into it.
pub struct TranslationTarget {
    pub lang: String,
    pub chain: Chain<Translation>,
}

/// The target languages (`--translate`) and their chains by language pair, built on first need:
/// with `--language auto` the source language is known only once it is detected. A pair that no
/// provider serves is reported once (log and `/status`) and left out; the other tracks are
/// served.
pub struct Translations {
    targets: Vec<String>,
    chain: Vec<String>,
    providers: Providers,
    metrics: Arc<Metrics>,
    built: Mutex<BTreeMap<Pair, Option<Chain<Translation>>>>,
}

/// A language pair (from, to).
type Pair = (String, String);

impl Translations {
    /// `targets` translated by the providers `chain` names.
    pub fn new(
        targets: Vec<String>,
        chain: Vec<String>,
        providers: Providers,
        metrics: Arc<Metrics>,
    ) -> Self {
        Self {
            targets,
            chain,
            providers,
            metrics,
            built: Mutex::new(BTreeMap::new()),
        }
    }

    /// The targets that captions in `from` can be translated into, with their chains (a target
    /// in `from` itself is the source track).
    pub fn from_source(&self, from: &str) -> Vec<TranslationTarget> {
        let mut out = Vec::new();
        for to in &self.targets {
            if lang::primary(to) == lang::primary(from) {
                continue;
            }
            let mut built = self.built.lock().expect("translations lock");
            let chain = built
                .entry((from.to_string(), to.clone()))
                .or_insert_with(|| self.build(from, to))
                .clone();
            if let Some(chain) = chain {
                out.push(TranslationTarget {
                    lang: to.clone(),
                    chain,
                });
            }
        }
        out
    }

    fn build(&self, from: &str, to: &str) -> Option<Chain<Translation>> {
        let (chain, missing) = self.providers.translation(&self.chain, from, to);
        let why = missing
            .iter()
            .map(|u| format!("{}: {}", u.provider, u.reason))
            .collect::<Vec<_>>()
            .join("; ");
        match &chain {
            Some(c) => {
                for u in &missing {
                    tracing::warn!(track = %caption_track_name(to), provider = %u.provider, reason = %u.reason, "provider left out of the translation chain");
                }
                tracing::info!(track = %caption_track_name(to), from, chain = ?c.providers(), "translated captions");
                let status = c.clone();
                self.metrics.add_chain(move || status.status());
            }
            None => tracing::warn!(
                "cannot serve {}: no provider of the translation chain {:?} can translate {from}->{to} ({why}); the other caption tracks are served",
                caption_track_name(to),
                self.chain,
            ),
        }
        self.metrics.add_unavailable(missing);
        chain
    }
}

/// The namespace the sidecar publishes for `broadcast`.
pub fn ai_namespace(broadcast: &str) -> String {
    format!("{}/ai", broadcast.trim_end_matches('/'))
}

/// The caption track's name for a language.
pub fn caption_track_name(language: &str) -> String {
    format!("captions-{language}")
}

/// The `<broadcast>/ai` catalog: the recognised captions in `language`, then one translated
/// caption track per target, each depending on the broadcast's video tracks; then one dubbed
/// audio track per language of `dubs` (Opus described by `opus`), in the `altGroup` of the
/// source's audio (or [`AUDIO_ALT_GROUP`] where it has none).
pub fn ai_catalog(
    source: &Catalog,
    language: &str,
    targets: &[String],
    dubs: &[String],
    opus: &moqcast_media::info::AudioInfo,
) -> Catalog {
    let mut cat = Catalog::new();
    let videos: Vec<String> = source.video_tracks().map(|t| t.name.clone()).collect();
    let labelled = std::iter::once((language, lang::recognised_label(language))).chain(
        targets
            .iter()
            .map(|t| (t.as_str(), lang::translated_label(t))),
    );
    for (l, label) in labelled {
        let mut track = caption::caption_track(&caption_track_name(l), l, &label);
        if !videos.is_empty() {
            track.depends = Some(videos.clone());
        }
        cat.tracks.push(track);
    }
    let alt_group = source
        .audio_tracks()
        .find_map(|t| t.alt_group)
        .unwrap_or(AUDIO_ALT_GROUP);
    for l in dubs {
        let name = dub_track_name(l);
        let mut t = catalog::Track::new(&name, catalog::packaging::LOC);
        t.role = Some(catalog::role::AUDIO.into());
        t.is_live = Some(true);
        t.codec = Some(opus.codec.clone());
        t.samplerate = Some(opus.sample_rate);
        t.channel_config = Some(opus.channels.to_string());
        t.bitrate = opus.bitrate;
        t.timescale = Some(moqcast_media::loc::TIMESCALE_US);
        t.render_group = Some(1);
        t.lang = Some(l.clone());
        t.label = Some(lang::dubbed_label(l));
        t.alt_group = Some(alt_group);
        if let Some(desc) = &opus.description {
            t.init_ref = Some(name.clone());
            cat.set_init_data(&name, desc);
        }
        cat.tracks.push(t);
    }
    cat
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

    let language = if shared.language == "auto" {
        shared.metrics.set_status(
            broadcast,
            Status::Waiting,
            Some("detecting the spoken language".into()),
        );
        let detect = detect_language(shared, broadcast, &subscriber, &audio_track.name, &info);
        tokio::select! {
            res = &mut session => anyhow::bail!("relay session ended: {res:?}"),
            lang = detect => lang?,
        }
    } else {
        shared.language.clone()
    };
    let translations = shared.translations.from_source(&language);
    let ai = ai_namespace(broadcast);
    let targets: Vec<String> = translations.iter().map(|t| t.lang.clone()).collect();
    let dubs: Vec<(String, Chain<Synthesis>)> = shared
        .dubs
        .chains
        .iter()
        .filter(|(l, _)| targets.contains(l))
        .cloned()
        .collect();
    let opus = match dubs.is_empty() {
        true => None,
        false => match crate::opus_out::OpusEncoder::new() {
            Ok(e) => Some(e.info()),
            Err(e) => {
                // Without an encoder there is no dub; the captions are served all the same.
                tracing::error!(broadcast, error = %e, "cannot publish dubbed audio");
                None
            }
        },
    };
    let dubs = if opus.is_some() { dubs } else { Vec::new() };
    let dub_langs: Vec<String> = dubs.iter().map(|(l, _)| l.clone()).collect();
    let mut bp = BroadcastPublisher::new(&ai);
    let mut cat_track = bp.create_track(catalog::CATALOG_TRACK_NAME)?;
    cat_track.start_group()?;
    cat_track.write(
        Default::default(),
        Bytes::from(
            ai_catalog(
                &source,
                &language,
                &targets,
                &dub_langs,
                opus.as_ref().unwrap_or(&moqcast_media::info::AudioInfo {
                    codec: "opus".into(),
                    sample_rate: 48_000,
                    channels: 1,
                    description: None,
                    bitrate: None,
                }),
            )
            .to_json(),
        ),
    )?;
    let mut tracks = Tracks {
        source: CaptionTrack::create(&mut bp, &language)?,
        targets: targets
            .iter()
            .map(|l| CaptionTrack::create(&mut bp, l))
            .collect::<anyhow::Result<_>>()?,
        dubs: dubs
            .into_iter()
            .map(|(l, chain)| DubTrack::create(&mut bp, &l, chain))
            .collect::<anyhow::Result<_>>()?,
    };
    let announce = bp.announce(&mut publisher);
    tokio::pin!(announce);
    tracing::info!(broadcast, namespace = %ai, source = %caption_track_name(&language), translated = ?targets, dubbed = ?dub_langs, audio = %audio_track.name, codec = %info.codec, "caption tracks published");

    loop {
        shared.metrics.set_status(broadcast, Status::Idle, None);
        // Idle: nobody subscribes to any caption track, nothing runs.
        while tracks.subscribers() == 0 {
            tracks.report(&shared.metrics, broadcast);
            tokio::select! {
                res = &mut session => anyhow::bail!("relay session ended: {res:?}"),
                res = &mut announce => anyhow::bail!("publishing {ai} ended: {res:?}"),
                changed = tracks.changed() => changed?,
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
            &mut tracks,
            &translations,
        );
        let res = tokio::select! {
            res = &mut session => anyhow::bail!("relay session ended: {res:?}"),
            res = &mut announce => anyhow::bail!("publishing {ai} ended: {res:?}"),
            res = run => res,
        };
        tracks.stop_dubs();
        match res? {
            Captioned::Unsubscribed => {
                tracing::info!(
                    broadcast,
                    "no caption subscribers left; recognition stopped"
                )
            }
            Captioned::AudioEnded => {
                tracing::info!(broadcast, "the broadcast's audio ended");
                return Ok(());
            }
        }
    }
}

/// One published caption track.
struct CaptionTrack {
    lang: String,
    track: TrackPublisher,
    writer: CueWriter,
    subscribers: tokio::sync::watch::Receiver<usize>,
}

impl CaptionTrack {
    fn create(bp: &mut BroadcastPublisher, lang: &str) -> anyhow::Result<Self> {
        let name = caption_track_name(lang);
        Ok(Self {
            lang: lang.to_string(),
            track: bp.create_track(&name)?,
            writer: CueWriter::default(),
            subscribers: bp.watch_subscribers(&name),
        })
    }

    fn subscribers(&self) -> usize {
        *self.subscribers.borrow()
    }

    fn write(&mut self, obj: &crate::cues::CueObject) -> anyhow::Result<()> {
        if obj.new_group {
            self.track.start_group()?;
        }
        let props = LocProperties::wall_clock(moqcast_media::time::unix_micros());
        self.track.write(
            props.to_extension_headers(),
            Bytes::from(obj.payload.clone()),
        )?;
        Ok(())
    }
}

/// One published dub track, and its synthesis while it has subscribers.
struct DubTrack {
    lang: String,
    chain: Chain<Synthesis>,
    track: TrackPublisher,
    subscribers: tokio::sync::watch::Receiver<usize>,
    running: Option<(DubLane, DubOutput)>,
}

impl DubTrack {
    fn create(
        bp: &mut BroadcastPublisher,
        lang: &str,
        chain: Chain<Synthesis>,
    ) -> anyhow::Result<Self> {
        let name = dub_track_name(lang);
        Ok(Self {
            lang: lang.to_string(),
            chain,
            track: bp.create_track(&name)?,
            subscribers: bp.watch_subscribers(&name),
            running: None,
        })
    }

    fn subscribers(&self) -> usize {
        *self.subscribers.borrow()
    }

    /// Starts speaking when the track gained subscribers, stops when it lost them.
    fn sync(
        &mut self,
        shared: &Shared,
        broadcast: &str,
        events: &tokio::sync::mpsc::Sender<DubEvent>,
    ) {
        match (self.subscribers() > 0, self.running.is_some()) {
            (true, false) => {
                match DubOutput::new(&self.lang, shared.dubs.original_db, shared.dubs.delay) {
                    Ok(out) => {
                        tracing::info!(broadcast, lang = %self.lang, provider = ?self.chain.serving(), delay_ms = shared.dubs.delay.as_millis() as u64, "dubbing");
                        let lane = DubLane::start(
                            self.chain.clone(),
                            &self.lang,
                            shared.dubs.queue,
                            events.clone(),
                        );
                        self.running = Some((lane, out));
                    }
                    Err(e) => {
                        tracing::error!(broadcast, lang = %self.lang, error = format!("{e:#}"), "cannot dub")
                    }
                }
            }
            (false, true) => {
                tracing::info!(broadcast, lang = %self.lang, "no subscribers left; dubbing stopped");
                self.running = None;
            }
            _ => {}
        }
    }
}

/// The source caption track, the translated ones and the dubs.
struct Tracks {
    source: CaptionTrack,
    targets: Vec<CaptionTrack>,
    dubs: Vec<DubTrack>,
}

impl Tracks {
    fn all(&self) -> impl Iterator<Item = &CaptionTrack> {
        std::iter::once(&self.source).chain(&self.targets)
    }

    /// Subscriptions to any caption or dub track.
    fn subscribers(&self) -> usize {
        self.all().map(CaptionTrack::subscribers).sum::<usize>()
            + self.dubs.iter().map(DubTrack::subscribers).sum::<usize>()
    }

    /// Whether `lang`'s translation is wanted: its caption track or its dub has subscribers.
    fn wants_translation(&self, lang: &str) -> bool {
        self.targets
            .iter()
            .any(|t| t.lang == lang && t.subscribers() > 0)
            || self
                .dubs
                .iter()
                .any(|d| d.lang == lang && d.subscribers() > 0)
    }

    fn stop_dubs(&mut self) {
        for d in &mut self.dubs {
            d.running = None;
        }
    }

    /// Waits until a track's subscriber count changes.
    async fn changed(&mut self) -> anyhow::Result<()> {
        let captions = std::iter::once(&mut self.source)
            .chain(&mut self.targets)
            .map(|t| &mut t.subscribers);
        let dubs = self.dubs.iter_mut().map(|d| &mut d.subscribers);
        let waits = captions.chain(dubs).map(|w| Box::pin(w.changed()));
        let (res, _, _) = futures::future::select_all(waits).await;
        res.context("caption track closed")
    }

    fn report(&self, metrics: &Metrics, broadcast: &str) {
        metrics.with(broadcast, |b| {
            b.subscribers = self.source.subscribers() as u64;
            for t in &self.targets {
                b.translations
                    .entry(t.lang.clone())
                    .or_default()
                    .subscribers = t.subscribers() as u64;
            }
            for d in &self.dubs {
                b.dubs.entry(d.lang.clone()).or_default().subscribers = d.subscribers() as u64;
            }
        });
    }
}

/// With `--language auto`: the language of the broadcast's speech, the first one heard in two
/// utterances (a single utterance can mislead: one cut mid-word by joining a live broadcast was
/// heard as Japanese). Subscribes to the audio until then, once per relay session, with or
/// without caption subscribers.
async fn detect_language(
    shared: &Shared,
    broadcast: &str,
    subscriber: &moqcast_media::moq::Subscriber,
    audio_track: &str,
    info: &moqcast_client::AudioInfo,
) -> anyhow::Result<String> {
    let mut decoder = AudioDecoder::new(info)?;
    let (lane, mut results) = shared.recognizer.lane(broadcast);
    let mut segmenter = Segmenter::new(shared.segmenter.clone());
    let (mut audio, driver) = TrackSubscription::new(subscriber, broadcast, audio_track);
    let driver = tokio::spawn(driver);
    let _abort = AbortOnDrop(driver.abort_handle());
    let mut heard: Vec<String> = Vec::new();
    loop {
        tokio::select! {
            obj = audio.next() => {
                let Some(obj) = obj? else { anyhow::bail!("the audio ended before anyone spoke") };
                let props = LocProperties::from_extension_headers(&obj.properties).unwrap_or_default();
                let (Some(ts), Ok(samples)) = (props.timestamp_us(), decoder.decode(&obj.payload)) else {
                    continue;
                };
                for u in segmenter.push(ts, &samples).into_iter().filter(|u| u.is_final) {
                    lane.submit(u);
                }
            }
            r = results.recv() => {
                let Some(r) = r else { anyhow::bail!("the recognizer stopped") };
                if let (false, Some(l)) = (r.text.is_empty(), r.language) {
                    tracing::debug!(broadcast, language = %l, heard = %r.text, "language heard");
                    if heard.contains(&l) {
                        tracing::info!(broadcast, language = %l, heard = %r.text, "spoken language detected");
                        return Ok(l);
                    }
                    heard.push(l);
                }
            }
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
/// audio ends; translates into each language while its track has subscribers.
async fn caption(
    shared: &Shared,
    broadcast: &str,
    subscriber: &moqcast_media::moq::Subscriber,
    audio_track: &str,
    mut decoder: AudioDecoder,
    tracks: &mut Tracks,
    translations: &[TranslationTarget],
) -> anyhow::Result<Captioned> {
    // A detected language stays the broadcast's for the session.
    let (lane, mut results) = if shared.language == "auto" {
        shared.recognizer.lane_in(broadcast, &tracks.source.lang)
    } else {
        shared.recognizer.lane(broadcast)
    };
    let mut segmenter = Segmenter::new(shared.segmenter.clone());
    let (mut audio, driver) = TrackSubscription::new(subscriber, broadcast, audio_track);
    let driver = tokio::spawn(driver);
    let _abort = AbortOnDrop(driver.abort_handle());
    let mut arrivals = Arrivals::default();
    let mut audio_done = false;
    let mut finals_pending = 0usize;
    let mut drain_deadline = None;
    let (events_tx, mut events) = tokio::sync::mpsc::channel(32);
    let mut lanes = Lanes::default();
    lanes.sync(shared, broadcast, tracks, translations, &events_tx);
    let (dub_tx, mut dub_events) = tokio::sync::mpsc::channel(16);
    for d in &mut tracks.dubs {
        d.sync(shared, broadcast, &dub_tx);
    }
    loop {
        tracks.report(&shared.metrics, broadcast);
        tokio::select! {
            changed = tracks.changed() => {
                changed?;
                lanes.sync(shared, broadcast, tracks, translations, &events_tx);
                for d in &mut tracks.dubs {
                    d.sync(shared, broadcast, &dub_tx);
                }
                if tracks.subscribers() == 0 {
                    // Give a viewer that switches tracks a moment before stopping.
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    if tracks.subscribers() == 0 {
                        return Ok(Captioned::Unsubscribed);
                    }
                    lanes.sync(shared, broadcast, tracks, translations, &events_tx);
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
                            for d in &mut tracks.dubs {
                                if let Some((_, out)) = &mut d.running {
                                    let n = out.source_audio(ts, &samples, &mut d.track)?;
                                    if n > 0 {
                                        shared.metrics.with_dub(broadcast, &d.lang, |m| m.packets += n);
                                    }
                                }
                            }
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
                if let Some(cue) = publish(shared, broadcast, &mut tracks.source, &arrivals, &r)? {
                    lanes.submit(cue);
                }
                if audio_done && finals_pending == 0 {
                    return Ok(Captioned::AudioEnded);
                }
            }
            Some(event) = events.recv() => {
                if let LaneEvent::Translated(t) = &event {
                    for d in &tracks.dubs {
                        if let (true, Some((lane, _))) = (d.lang == t.lang, &d.running) {
                            lane.submit(t.clone());
                        }
                    }
                }
                publish_translation(shared, broadcast, tracks, &arrivals, event)?;
            }
            Some(event) = dub_events.recv() => {
                dub_event(shared, broadcast, tracks, event);
            }
        }
    }
}

/// The translation lanes of one broadcast, one per target language with subscribers.
#[derive(Default)]
struct Lanes(Vec<LanguageLane>);

impl Lanes {
    /// Starts the lanes of languages that gained subscribers, stops those that lost them.
    fn sync(
        &mut self,
        shared: &Shared,
        broadcast: &str,
        tracks: &Tracks,
        targets: &[TranslationTarget],
        events: &tokio::sync::mpsc::Sender<LaneEvent>,
    ) {
        for target in targets {
            let running = self.0.iter().position(|l| l.lang() == target.lang);
            match (tracks.wants_translation(&target.lang), running) {
                (true, None) => {
                    tracing::info!(broadcast, lang = %target.lang, provider = ?target.chain.serving(), "translating");
                    self.0.push(LanguageLane::start(
                        target.chain.clone(),
                        &tracks.source.lang,
                        &target.lang,
                        Queue::new(shared.translate_queue, shared.translate_max_wait),
                        events.clone(),
                    ));
                }
                (false, Some(i)) => {
                    tracing::info!(broadcast, lang = %target.lang, "no subscribers left; translation stopped");
                    self.0.remove(i);
                }
                _ => {}
            }
        }
    }

    fn submit(&self, cue: SourceCue) {
        for lane in &self.0 {
            lane.submit(cue.clone());
        }
    }
}

/// Publishes a recognition result on the source track; returns the final cue to translate.
fn publish(
    shared: &Shared,
    broadcast: &str,
    source: &mut CaptionTrack,
    arrivals: &Arrivals,
    r: &Recognized,
) -> anyhow::Result<Option<SourceCue>> {
    let Some(obj) = source.writer.on_result(r) else {
        return Ok(None);
    };
    source.write(&obj)?;
    let delay = arrivals.at(r.end_us).map(|t| t.elapsed());
    let mut translate = None;
    for cue in &obj.cues {
        tracing::info!(
            broadcast,
            lang = %source.lang,
            id = cue.id.as_deref().unwrap_or(""),
            start_ms = cue.start_ms,
            end_ms = cue.end_ms,
            is_final = cue.is_final,
            inference_ms = r.inference.as_millis() as u64,
            delay_ms = delay.map(|d| d.as_millis() as u64),
            text = %cue.text,
            "cue"
        );
        if r.is_final
            && !cue.text.is_empty()
            && cue.id == obj.cues.last().and_then(|c| c.id.clone())
        {
            translate = Some(SourceCue {
                utterance: r.utterance,
                start_us: r.start_us,
                end_us: r.end_us,
                text: cue.text.clone(),
                audio: r.audio.clone(),
            });
        }
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
    Ok(translate)
}

/// Publishes what a translation lane reports.
fn publish_translation(
    shared: &Shared,
    broadcast: &str,
    tracks: &mut Tracks,
    arrivals: &Arrivals,
    event: LaneEvent,
) -> anyhow::Result<()> {
    let m = &shared.metrics;
    match event {
        LaneEvent::Translated(t) => {
            let Some(track) = tracks.targets.iter_mut().find(|x| x.lang == t.lang) else {
                return Ok(());
            };
            let Some(obj) = track.writer.on_translated(&t) else {
                return Ok(());
            };
            track.write(&obj)?;
            let delay = arrivals.at(t.end_us).map(|a| a.elapsed());
            tracing::info!(
                broadcast,
                lang = %t.lang,
                id = %format!("u{}", t.utterance),
                start_ms = t.start_us / 1000,
                end_ms = t.end_us / 1000,
                translate_ms = t.took.as_millis() as u64,
                delay_ms = delay.map(|d| d.as_millis() as u64),
                text = %t.text,
                "translated cue"
            );
            m.with_translation(broadcast, &t.lang, |x| {
                x.cues += 1;
                if let Some(d) = delay {
                    x.delay_ms_sum += d.as_millis() as u64;
                    x.delay_count += 1;
                }
            });
        }
        LaneEvent::Skipped { lang, cues } => {
            tracing::debug!(broadcast, %lang, cues, "translation fell behind; cues skipped");
            m.with_translation(broadcast, &lang, |x| x.skipped += cues);
        }
        LaneEvent::Failed { lang, .. } => {
            m.with_translation(broadcast, &lang, |x| x.failed += 1);
        }
    }
    Ok(())
}

/// Places a dub lane's speech, or counts why there is none.
fn dub_event(shared: &Shared, broadcast: &str, tracks: &mut Tracks, event: DubEvent) {
    let m = &shared.metrics;
    match event {
        DubEvent::Spoken(cue) => {
            let Some(d) = tracks.dubs.iter_mut().find(|d| d.lang == cue.lang) else {
                return;
            };
            let Some((_, out)) = &mut d.running else {
                return;
            };
            let (utterance, start_us, end_us, took) =
                (cue.utterance, cue.start_us, cue.end_us, cue.took);
            let speech_ms = cue.samples.len() as u64 / 48;
            let placed = out.speech(cue);
            let c = out.counters().clone();
            match &placed {
                Some(p) => tracing::info!(
                    broadcast,
                    lang = %d.lang,
                    id = %format!("u{utterance}"),
                    start_ms = start_us / 1000,
                    end_ms = end_us / 1000,
                    placed_ms = p.start_us / 1000,
                    speech_ms,
                    factor = p.factor,
                    cut_ms = p.cut_ms,
                    late_ms = p.late_ms,
                    synth_ms = took.as_millis() as u64,
                    "dubbed cue"
                ),
                None => {
                    tracing::info!(broadcast, lang = %d.lang, id = %format!("u{utterance}"), "dubbed cue came after its end; skipped")
                }
            }
            m.with_dub(broadcast, &d.lang, |x| {
                x.spoken += u64::from(placed.is_some());
                x.expired = c.expired;
                x.late = c.late;
                x.late_ms = c.late_ms;
                x.stretched = c.stretched;
                x.cut = c.cut;
                x.synth_ms_sum += took.as_millis() as u64;
                x.synth_count += 1;
            });
        }
        DubEvent::Skipped { lang, cues } => {
            tracing::debug!(broadcast, %lang, cues, "synthesis fell behind; cues skipped");
            m.with_dub(broadcast, &lang, |x| x.skipped += cues);
        }
        DubEvent::Failed { lang, .. } => m.with_dub(broadcast, &lang, |x| x.failed += 1),
    }
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
    fn ai_catalog_declares_the_source_and_translated_caption_tracks() {
        let mut source = Catalog::new();
        let mut v = catalog::Track::new("video", catalog::packaging::LOC);
        v.role = Some(catalog::role::VIDEO.into());
        source.tracks.push(v);
        let opus = moqcast_media::info::AudioInfo {
            codec: "opus".into(),
            sample_rate: 48_000,
            channels: 1,
            description: Some(moqcast_media::info::opus_head(1, 312, 48_000)),
            bitrate: Some(32_000),
        };
        let mut a = catalog::Track::new("audio", catalog::packaging::LOC);
        a.role = Some(catalog::role::AUDIO.into());
        source.tracks.push(a);
        let cat = ai_catalog(
            &source,
            "en",
            &["es".to_string(), "fr".to_string()],
            &["es".to_string()],
            &opus,
        );
        let parsed = Catalog::parse(&cat.to_json()).unwrap();
        let tracks: Vec<_> = parsed.caption_tracks().collect();
        let shown: Vec<_> = tracks
            .iter()
            .map(|t| {
                (
                    t.name.as_str(),
                    t.lang.as_deref().unwrap(),
                    t.label.as_deref().unwrap(),
                )
            })
            .collect();
        assert_eq!(
            shown,
            vec![
                ("captions-en", "en", "English (automatic)"),
                ("captions-es", "es", "Español (traducción automática)"),
                ("captions-fr", "fr", "Français (traduction automatique)"),
            ]
        );
        for t in tracks {
            assert_eq!(t.event_type.as_deref(), Some(caption::WEBVTT_EVENT_TYPE));
            assert_eq!(t.role.as_deref(), Some(catalog::role::CAPTION));
            assert_eq!(t.depends.as_deref(), Some(&["video".to_string()][..]));
        }
        let dub = parsed.track("audio-es").unwrap();
        assert_eq!(dub.label.as_deref(), Some("Spanish (dubbed)"));
        assert_eq!(dub.lang.as_deref(), Some("es"));
        assert_eq!(dub.alt_group, Some(AUDIO_ALT_GROUP));
        assert_eq!(dub.codec.as_deref(), Some("opus"));
        assert_eq!(dub.samplerate, Some(48_000));
        assert_eq!(
            parsed.init_data_bytes(dub).unwrap().as_deref(),
            opus.description.as_deref()
        );
        assert_eq!(parsed.audio_tracks().count(), 1);
        assert_eq!(ai_namespace("live/demo/"), "live/demo/ai");
    }
}
