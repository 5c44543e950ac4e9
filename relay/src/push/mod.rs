//! Push ingest: broadcasts that RTMP/RTMPS ([`crate::rtmp`]), SRT ([`crate::srt`]) and WHIP
//! ([`crate::whip`], with no resume window) publishers push into the relay's origin, and who
//! holds each of them. The listeners share this core:
//! they turn a stream key into a broadcast name ([`keys`]), claim the broadcast here, and hand
//! it the track configurations and frames their demuxers make ([`moqcast_media::flv`],
//! [`moqcast_media::ts`]).
//!
//! A [`LiveBroadcast`] writes one broadcast straight into the origin's track caches, as a
//! publisher's PUBLISH would fill them: the MSF catalog on `catalog` (one group per catalog
//! version), H.264 on `video` (one group per GOP, starting at a keyframe), AAC or Opus on
//! `audio` (one group per second), one LOC object per frame with its timestamp in microseconds.
//! The broadcast is announced at its first frame, with the tracks whose configuration arrived
//! by then; a track that appears or changes later gets a new catalog version.
//!
//! [`Ingests`] maps broadcast names to the connection publishing them. When that connection
//! ends, the broadcast waits (`--rtmp-resume-ms` / `--srt-resume-ms`, 5 s by default) with its
//! tracks open, so viewers stay subscribed: the same key reconnecting within that time (over
//! either protocol) resumes it, its timeline going on from where it stopped by the wall-clock
//! time in between (RTMP timestamps restart at 0 on every connection, MPEG-TS ones anywhere).
//! A second publisher on a broadcast that is live is refused, as is a name a MoQ publisher
//! holds. Time is passed in (`now`).

pub mod keys;

use std::{
    collections::HashMap,
    sync::{atomic::Ordering, Arc, Mutex, Weak},
    time::Duration,
};

use bytes::Bytes;
use moqcast_media::{
    info::{self, AudioInfo, VideoInfo},
    loc::{LocProperties, TIMESCALE_US},
    moq::{self, TrackNamespace},
    Frame, MediaKind,
};
use tokio::time::Instant;

use crate::{
    cache::CachedObject,
    ingest::IngestRoutes,
    metrics::{IngestCounters, Metrics},
    origin::Origin,
    track::TrackCache,
};

/// Which listener a publisher came through.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    /// RTMP, and RTMPS (RTMP over TLS).
    Rtmp,
    Srt,
    /// WebRTC over WHIP ([`crate::whip`]).
    Whip,
}

impl Protocol {
    /// Lower-case name: the metric prefix and the `/broadcasts` key.
    pub fn name(self) -> &'static str {
        match self {
            Protocol::Rtmp => "rtmp",
            Protocol::Srt => "srt",
            Protocol::Whip => "whip",
        }
    }

    /// Name in log lines.
    pub fn label(self) -> &'static str {
        match self {
            Protocol::Rtmp => "RTMP",
            Protocol::Srt => "SRT",
            Protocol::Whip => "WHIP",
        }
    }

    /// This ingest's counters.
    pub fn counters(self, metrics: &Metrics) -> &IngestCounters {
        match self {
            Protocol::Rtmp => &metrics.rtmp,
            Protocol::Srt => &metrics.srt,
            Protocol::Whip => &metrics.whip,
        }
    }
}

/// Counts and logs a refused publisher: one line with the protocol, a short reason label and
/// the reason in words.
pub fn refused(metrics: &Metrics, protocol: Protocol, label: &'static str, reason: &str) {
    protocol
        .counters(metrics)
        .refused
        .fetch_add(1, Ordering::Relaxed);
    tracing::warn!(
        protocol = protocol.name(),
        reason = label,
        detail = %reason,
        "{} publisher refused",
        protocol.label()
    );
}

/// Why a publisher may not have a broadcast.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ClaimError {
    #[error("another publisher is live on {0:?}")]
    Busy(String),
    #[error("{0:?} is published by a MoQ session on this relay")]
    NameInUse(String),
}

impl ClaimError {
    pub fn reason(&self) -> &'static str {
        match self {
            ClaimError::Busy(_) => "busy",
            ClaimError::NameInUse(_) => "name_in_use",
        }
    }
}

/// Counters of one pushed broadcast, across its connections.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
pub struct IngestStats {
    pub video_frames: u64,
    pub audio_frames: u64,
    pub bytes: u64,
    /// Connections that resumed the broadcast after its first.
    pub reconnects: u64,
    /// Frames dropped: video before the first keyframe, frames before their configuration.
    pub dropped_frames: u64,
    /// Media bits per second over the last whole second.
    pub bitrate_bps: u64,
}

/// One cached track and where its groups stand.
struct TrackWriter {
    cache: Arc<TrackCache>,
    /// The cache's upstream epoch this writer is ([`TrackCache::repoint`]).
    epoch: u64,
    /// The open group (its id in the cache) and the next object id in it.
    open: Option<(u64, u64)>,
    next_group: u64,
    /// Audio: the timestamp that opened the current group.
    group_start_us: u64,
}

impl TrackWriter {
    fn new(cache: Arc<TrackCache>) -> Self {
        Self {
            epoch: cache.epoch(),
            cache,
            open: None,
            next_group: 0,
            group_start_us: 0,
        }
    }

    fn start_group(&mut self) -> bool {
        self.end_group();
        let group = self.next_group;
        self.next_group += 1;
        self.open = self
            .cache
            .open_subgroup(self.epoch, group, 0, 0)
            .map(|id| (id, 0));
        self.open.is_some()
    }

    fn end_group(&mut self) {
        if let Some((id, _)) = self.open.take() {
            self.cache.end_subgroup((id, 0), true);
        }
    }

    /// Appends an object to the open group (false when none is open or the cache refused).
    fn push(&mut self, properties: LocProperties, payload: Bytes) -> bool {
        let Some((id, object)) = self.open else {
            return false;
        };
        let ok = self.cache.push_object(
            self.epoch,
            (id, 0),
            CachedObject::new(object, properties.to_extension_headers(), payload),
        );
        self.open = ok.then_some((id, object + 1));
        ok
    }
}

/// Maps a stream's timestamps onto the broadcast's timeline, which keeps going across
/// reconnections.
#[derive(Debug, Default)]
struct Timeline {
    /// Added to the connection's timestamps (microseconds).
    offset_us: i64,
    /// The latest timestamp written, and when.
    last: Option<(u64, Instant)>,
    /// A new connection: its first frame sets the offset.
    resuming: bool,
}

impl Timeline {
    fn map(&mut self, pts_us: u64, now: Instant) -> u64 {
        let pts = i64::try_from(pts_us).unwrap_or(i64::MAX);
        if self.resuming {
            self.resuming = false;
            if let Some((last, at)) = self.last {
                // The new connection's first frame follows the last one by the time in between.
                let gap = now.saturating_duration_since(at).as_micros() as i64;
                let target = (last as i64).saturating_add(gap.max(1));
                self.offset_us = target - pts;
            }
        }
        let out = u64::try_from(pts.saturating_add(self.offset_us)).unwrap_or(0);
        let newest = self.last.map_or(out, |(l, _)| l.max(out));
        self.last = Some((newest, now));
        out
    }
}

/// One second, the audio group length and the bitrate window.
const SECOND_US: u64 = 1_000_000;

/// A pushed broadcast in the origin; see the [module documentation](self).
pub struct LiveBroadcast {
    pub name: String,
    namespace: TrackNamespace,
    /// Its session id in the origin (a number no MoQ session has).
    session: u64,
    /// Where pushed tracks' (unused) data-stream routes live.
    routes: IngestRoutes,
    next_alias: u64,
    catalog: Option<TrackWriter>,
    video: Option<TrackWriter>,
    audio: Option<TrackWriter>,
    video_info: Option<VideoInfo>,
    audio_info: Option<AudioInfo>,
    /// The catalog's track configurations changed since it was last written.
    catalog_stale: bool,
    timeline: Timeline,
    stats: IngestStats,
    window: (Option<Instant>, u64),
}

impl LiveBroadcast {
    fn new(name: &str, session: u64) -> Self {
        Self {
            name: name.to_string(),
            namespace: moq::namespace(name),
            session,
            routes: IngestRoutes::default(),
            next_alias: 0,
            catalog: None,
            video: None,
            audio: None,
            video_info: None,
            audio_info: None,
            catalog_stale: false,
            timeline: Timeline::default(),
            stats: IngestStats::default(),
            window: (None, 0),
        }
    }

    pub fn stats(&self) -> &IngestStats {
        &self.stats
    }

    /// Whether the broadcast is in the origin yet (it is announced at its first frame).
    pub fn announced(&self) -> bool {
        self.catalog.is_some()
    }

    /// The video configuration arrived or changed.
    pub fn set_video(&mut self, info: VideoInfo) {
        if self.video_info.as_ref() != Some(&info) {
            self.video_info = Some(info);
            self.catalog_stale = true;
        }
    }

    /// The audio configuration arrived or changed.
    pub fn set_audio(&mut self, info: AudioInfo) {
        if self.audio_info.as_ref() != Some(&info) {
            self.audio_info = Some(info);
            self.catalog_stale = true;
        }
    }

    fn track(&mut self, origin: &Origin, name: &str) -> TrackWriter {
        let alias = self.next_alias;
        self.next_alias += 1;
        TrackWriter::new(origin.publish_track(
            &self.namespace,
            name,
            self.session,
            (&self.routes, alias),
        ))
    }

    /// Writes a new catalog version (and creates tracks that are new) if the configurations
    /// changed.
    fn refresh_catalog(&mut self, origin: &Origin) {
        if !self.catalog_stale {
            return;
        }
        self.catalog_stale = false;
        if self.catalog.is_none() {
            let writer = self.track(origin, moq::CATALOG_TRACK);
            self.catalog = Some(writer);
        }
        if self.video_info.is_some() && self.video.is_none() {
            self.video = Some(self.track(origin, info::VIDEO_TRACK));
        }
        if self.audio_info.is_some() && self.audio.is_none() {
            self.audio = Some(self.track(origin, info::AUDIO_TRACK));
        }
        let json = info::catalog(
            self.video_info.as_ref(),
            self.audio_info.as_ref(),
            moqcast_media::time::unix_micros() / 1000,
        )
        .to_json();
        let catalog = self.catalog.as_mut().expect("created above");
        // A group per version, left open so the newest group is the current catalog.
        if catalog.start_group() {
            catalog.push(LocProperties::default(), Bytes::from(json));
        }
    }

    /// One frame of the connection's timeline. Announces the broadcast at the first one.
    pub fn frame(
        &mut self,
        origin: &Origin,
        metrics: &IngestCounters,
        kind: MediaKind,
        frame: Frame,
        now: Instant,
    ) {
        self.refresh_catalog(origin);
        let writer = match kind {
            MediaKind::Video => self.video.as_mut(),
            MediaKind::Audio => self.audio.as_mut(),
        };
        let Some(writer) = writer else {
            self.stats.dropped_frames += 1;
            return;
        };
        let pts_us = self.timeline.map(frame.pts_us, now);
        let start = match kind {
            // A GOP per group: a decoder can start at any group.
            MediaKind::Video => frame.keyframe,
            MediaKind::Audio => {
                writer.open.is_none()
                    || pts_us < writer.group_start_us
                    || pts_us - writer.group_start_us >= SECOND_US
            }
        };
        if start {
            writer.start_group();
            writer.group_start_us = pts_us;
        }
        let mut properties = LocProperties::media_time(pts_us, TIMESCALE_US);
        properties.send_time_us = Some(moqcast_media::time::unix_micros());
        let bytes = frame.payload.len() as u64;
        if !writer.push(properties, frame.payload) {
            // Video before its first keyframe (or after the cache refused the group).
            self.stats.dropped_frames += 1;
            return;
        }
        match kind {
            MediaKind::Video => {
                self.stats.video_frames += 1;
                metrics.video_frames.fetch_add(1, Ordering::Relaxed);
            }
            MediaKind::Audio => {
                self.stats.audio_frames += 1;
                metrics.audio_frames.fetch_add(1, Ordering::Relaxed);
            }
        }
        self.stats.bytes += bytes;
        metrics.bytes.fetch_add(bytes, Ordering::Relaxed);
        self.count_bitrate(bytes, now);
    }

    fn count_bitrate(&mut self, bytes: u64, now: Instant) {
        let (start, sum) = &mut self.window;
        let began = *start.get_or_insert(now);
        let elapsed = now.saturating_duration_since(began);
        if elapsed >= Duration::from_secs(1) {
            self.stats.bitrate_bps = *sum * 8 * SECOND_US / (elapsed.as_micros() as u64).max(1);
            *start = Some(now);
            *sum = 0;
        }
        *sum += bytes;
    }

    /// The connection ended: close the open groups; the tracks stay, for a reconnection.
    fn pause(&mut self) {
        for w in [&mut self.video, &mut self.audio].into_iter().flatten() {
            w.end_group();
        }
        self.timeline.resuming = true;
        self.window = (None, 0);
        self.stats.bitrate_bps = 0;
    }
}

/// Who holds a broadcast.
enum Holder {
    /// A connection publishes it.
    Connected(u64),
    /// Its connection ended at this time; it ends unless one resumes it by then.
    Waiting {
        since: Instant,
        /// Ends the broadcast when the resume window is over; dropped (cancelled) on resume.
        _expiry: crate::OwnedTask<()>,
    },
}

struct Entry {
    live: Arc<Mutex<LiveBroadcast>>,
    holder: Holder,
    /// The protocol of the connection that holds it, or held it last.
    protocol: Protocol,
}

/// One pushed broadcast as `/broadcasts` and `/metrics` show it.
#[derive(Debug, Clone)]
pub struct Listed {
    pub name: String,
    pub protocol: Protocol,
    /// A connection publishes it now (else it waits for one to resume it).
    pub connected: bool,
    pub stats: IngestStats,
}

impl Listed {
    /// The counters and `connected`, as JSON.
    pub fn to_json(&self) -> serde_json::Value {
        let mut v = serde_json::to_value(&self.stats).unwrap_or_default();
        v["connected"] = self.connected.into();
        v
    }
}

/// The pushed broadcasts of the relay; see the [module documentation](self).
pub struct Ingests {
    entries: Mutex<HashMap<String, Entry>>,
    /// Stream keys to broadcast names, for both listeners.
    keys: keys::Keys,
    /// How long a broadcast whose connection ended waits to be resumed, by the protocol of the
    /// connection that left.
    resume_rtmp: Duration,
    resume_srt: Duration,
    /// Origin session ids for broadcasts: counting down from the top, never a MoQ session's.
    next_session: std::sync::atomic::AtomicU64,
    /// Ids of the connections of both listeners.
    next_connection: std::sync::atomic::AtomicU64,
}

/// A connection's hold on its broadcast. Dropping it releases the broadcast: it waits to be
/// resumed, then leaves the origin.
pub struct Claim {
    pub live: Arc<Mutex<LiveBroadcast>>,
    /// Whether this connection resumed a broadcast that was waiting.
    pub resumed: bool,
    pub protocol: Protocol,
    ingests: Arc<Ingests>,
    origin: Weak<crate::RelayState>,
    name: String,
    connection: u64,
}

impl Drop for Claim {
    fn drop(&mut self) {
        self.ingests
            .release(&self.name, self.connection, self.origin.clone());
    }
}

impl Claim {
    /// Writes one event of the publisher's demuxer into the broadcast.
    pub fn apply(&self, state: &crate::RelayState, event: moqcast_media::flv::Event, now: Instant) {
        use moqcast_media::flv::Event;
        let mut live = self.live.lock().expect("poisoned");
        match event {
            Event::VideoConfig(info) => live.set_video(info),
            Event::AudioConfig(info) => live.set_audio(info),
            Event::Frame(kind, frame) => live.frame(
                &state.origin,
                self.protocol.counters(&state.metrics),
                kind,
                frame,
                now,
            ),
        }
    }

    /// The broadcast's name.
    pub fn name(&self) -> &str {
        &self.name
    }
}

impl Ingests {
    /// `keys` turn stream keys into names; `resume_rtmp` and `resume_srt`: how long a broadcast waits for its publisher to come
    /// back after an RTMP or an SRT connection ended.
    pub fn new(keys: keys::Keys, resume_rtmp: Duration, resume_srt: Duration) -> Arc<Self> {
        Arc::new(Self {
            entries: Mutex::new(HashMap::new()),
            keys,
            resume_rtmp,
            resume_srt,
            next_session: std::sync::atomic::AtomicU64::new(u64::MAX),
            next_connection: std::sync::atomic::AtomicU64::new(1),
        })
    }

    /// What stream keys publish.
    pub fn keys(&self) -> &keys::Keys {
        &self.keys
    }

    /// A new connection id (unique across both listeners).
    pub fn connection_id(&self) -> u64 {
        self.next_connection.fetch_add(1, Ordering::Relaxed)
    }

    fn resume(&self, protocol: Protocol) -> Duration {
        match protocol {
            Protocol::Rtmp => self.resume_rtmp,
            Protocol::Srt => self.resume_srt,
            // A WHIP session ends with DELETE or ICE failure; publishers start a new one.
            Protocol::Whip => Duration::ZERO,
        }
    }

    /// Takes broadcast `name` for `connection`: a new one, or one waiting to be resumed.
    pub fn claim(
        self: &Arc<Self>,
        state: &Arc<crate::RelayState>,
        name: &str,
        connection: u64,
        protocol: Protocol,
    ) -> Result<Claim, ClaimError> {
        let mut entries = self.entries.lock().expect("poisoned");
        let (live, resumed) = match entries.get_mut(name) {
            Some(Entry {
                holder: Holder::Connected(_),
                ..
            }) => return Err(ClaimError::Busy(name.to_string())),
            Some(entry) => {
                // Dropping the waiting holder cancels its expiry.
                entry.holder = Holder::Connected(connection);
                entry.protocol = protocol;
                entry.live.lock().expect("poisoned").stats.reconnects += 1;
                protocol
                    .counters(&state.metrics)
                    .reconnects
                    .fetch_add(1, Ordering::Relaxed);
                (entry.live.clone(), true)
            }
            None => {
                if state.origin.get(name).is_some() {
                    return Err(ClaimError::NameInUse(name.to_string()));
                }
                let session = self
                    .next_session
                    .fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
                let live = Arc::new(Mutex::new(LiveBroadcast::new(name, session)));
                entries.insert(
                    name.to_string(),
                    Entry {
                        live: live.clone(),
                        holder: Holder::Connected(connection),
                        protocol,
                    },
                );
                (live, false)
            }
        };
        Ok(Claim {
            live,
            resumed,
            protocol,
            ingests: self.clone(),
            origin: Arc::downgrade(state),
            name: name.to_string(),
            connection,
        })
    }

    fn release(self: &Arc<Self>, name: &str, connection: u64, state: Weak<crate::RelayState>) {
        let mut entries = self.entries.lock().expect("poisoned");
        let Some(entry) = entries.get_mut(name) else {
            return;
        };
        if !matches!(entry.holder, Holder::Connected(c) if c == connection) {
            return;
        }
        let announced = {
            let mut live = entry.live.lock().expect("poisoned");
            live.pause();
            live.announced()
        };
        let protocol = entry.protocol;
        let resume = self.resume(protocol);
        if !announced || resume.is_zero() || tokio::runtime::Handle::try_current().is_err() {
            let entry = entries.remove(name).expect("present");
            drop(entries);
            end(&entry, state);
            return;
        }
        let since = Instant::now();
        let expiry = {
            let (ingests, name) = (Arc::downgrade(self), name.to_string());
            tokio::spawn(async move {
                tokio::time::sleep(resume).await;
                if let Some(ingests) = ingests.upgrade() {
                    ingests.expire(&name, since, state);
                }
            })
        };
        entry.holder = Holder::Waiting {
            since,
            _expiry: crate::OwnedTask(expiry),
        };
        tracing::info!(
            broadcast = %name,
            protocol = protocol.name(),
            resume_ms = resume.as_millis() as u64,
            "{} publisher left: waiting for it to reconnect",
            protocol.label()
        );
    }

    fn expire(&self, name: &str, since: Instant, state: Weak<crate::RelayState>) {
        let mut entries = self.entries.lock().expect("poisoned");
        let waiting = matches!(
            entries.get(name),
            Some(Entry { holder: Holder::Waiting { since: at, .. }, .. }) if *at == since
        );
        if waiting {
            let entry = entries.remove(name).expect("present");
            drop(entries);
            tracing::info!(
                broadcast = %name,
                protocol = entry.protocol.name(),
                "{} publisher did not reconnect: broadcast ended",
                entry.protocol.label()
            );
            // (The expiry task dropped with the entry is this one, which ends here anyway.)
            let live = entry.live.lock().expect("poisoned");
            if let Some(state) = state.upgrade() {
                state.origin.unannounce(&live.name, live.session);
            }
        }
    }

    /// The broadcasts, by name, each with whether a connection publishes it now and its counters.
    pub fn list(&self) -> Vec<Listed> {
        let entries = self.entries.lock().expect("poisoned");
        let mut v: Vec<Listed> = entries
            .iter()
            .map(|(name, e)| Listed {
                name: name.clone(),
                protocol: e.protocol,
                connected: matches!(e.holder, Holder::Connected(_)),
                stats: e.live.lock().expect("poisoned").stats.clone(),
            })
            .collect();
        v.sort_by(|a, b| a.name.cmp(&b.name));
        v
    }
}

/// Ends a broadcast now: it leaves the origin.
fn end(entry: &Entry, state: Weak<crate::RelayState>) {
    let live = entry.live.lock().expect("poisoned");
    if let Some(state) = state.upgrade() {
        state.origin.unannounce(&live.name, live.session);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_timeline_goes_on_across_a_reconnection_by_the_time_in_between() {
        let t0 = Instant::now();
        let mut t = Timeline::default();
        assert_eq!(t.map(0, t0), 0);
        assert_eq!(t.map(2_000_000, t0 + Duration::from_secs(2)), 2_000_000);
        t.resuming = true;
        // The new connection starts at 0 again, 1.5 s after the last frame.
        let at = t0 + Duration::from_millis(3500);
        assert_eq!(t.map(0, at), 3_500_000);
        assert_eq!(t.map(40_000, at + Duration::from_millis(40)), 3_540_000);
        // B-frames may go back within the connection; the newest stays the reference.
        assert_eq!(t.map(20_000, at + Duration::from_millis(40)), 3_520_000);
        assert_eq!(t.last.unwrap().0, 3_540_000);
    }
}
