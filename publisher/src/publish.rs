//! Puts an ingest [`Source`] on a relay: an MSF catalog on track `catalog` and one LOC track
//! per medium (`video`, `audio`), one object per frame, one group per video GOP.
//!
//! The catalog group stays open until the catalog changes, so a subscriber (or a relay) that
//! arrives late still receives the current catalog as the newest group's first object.

use std::time::Duration;

use anyhow::Context;
use bytes::Bytes;
use moqcast_client::{BroadcastPublisher, Client, ClientTls, TrackPublisher};
use moqcast_media::{
    catalog::{self, Catalog, Track},
    loc::LocProperties,
    time::unix_micros,
    MediaKind,
};
use tokio::sync::mpsc;
use url::Url;

use crate::captions::{ExtraTrackOptions, ExtraTracks};
use crate::ingest::{IngestOptions, MediaInfo, Source};

/// Timescale of LOC TIMESTAMP properties we write: microseconds.
pub use moqcast_media::loc::TIMESCALE_US;

/// What `moqcast-publish` does.
#[derive(Debug, Clone)]
pub struct PublishOptions {
    pub url: Url,
    pub broadcast: String,
    pub tls: ClientTls,
    pub ingest: IngestOptions,
    pub duration: Option<Duration>,
    /// Caption and test-dub tracks (`--captions`, `--test-dub`), see [`crate::captions`].
    pub extra_tracks: ExtraTrackOptions,
}

/// Builds the MSF catalog for a source.
pub fn catalog_for(info: &MediaInfo) -> Catalog {
    let mut cat = Catalog::new();
    cat.generated_at = Some(unix_micros() / 1000);
    if let Some(v) = &info.video {
        let mut t = Track::new("video", catalog::packaging::LOC);
        t.role = Some(catalog::role::VIDEO.into());
        t.is_live = Some(true);
        t.codec = Some(v.codec.clone());
        t.width = Some(v.width);
        t.height = Some(v.height);
        t.framerate = Some(v.framerate);
        t.bitrate = v.bitrate;
        t.timescale = Some(TIMESCALE_US);
        t.render_group = Some(1);
        t.init_ref = Some("video".into());
        cat.set_init_data("video", &v.avcc);
        cat.tracks.push(t);
    }
    if let Some(a) = &info.audio {
        let mut t = Track::new("audio", catalog::packaging::LOC);
        t.role = Some(catalog::role::AUDIO.into());
        t.is_live = Some(true);
        t.codec = Some(a.codec.clone());
        t.samplerate = Some(a.sample_rate);
        t.channel_config = Some(a.channels.to_string());
        t.bitrate = a.bitrate;
        t.timescale = Some(TIMESCALE_US);
        t.render_group = Some(1);
        t.lang = Some("und".into());
        t.label = Some("Original".into());
        if let Some(desc) = &a.description {
            t.init_ref = Some("audio".into());
            cat.set_init_data("audio", desc);
        }
        cat.tracks.push(t);
    }
    cat
}

fn properties(pts_us: u64) -> LocProperties {
    let mut p = LocProperties::media_time(pts_us, TIMESCALE_US);
    p.send_time_us = Some(unix_micros());
    p
}

/// Publishes until the source ends, `duration` passes, or the session fails.
pub async fn run(opts: PublishOptions) -> anyhow::Result<()> {
    let ingest = opts.ingest.clone();
    let (source, info) = tokio::task::spawn_blocking(move || {
        let s = Source::open(ingest)?;
        let info = s.info().clone();
        Ok::<_, crate::ingest::IngestError>((s, info))
    })
    .await
    .context("ingest thread")??;
    if info.video.is_none() && info.audio.is_none() {
        anyhow::bail!("the input has neither audio nor video");
    }
    let mut catalog = catalog_for(&info);
    crate::captions::extend_catalog(&mut catalog, &opts.extra_tracks)?;

    let client = Client::new(&opts.tls)?;
    let conn = client.connect(&opts.url).await?;
    tracing::info!(url = %opts.url, broadcast = %opts.broadcast, "connected");
    let mut broadcast = BroadcastPublisher::new(&opts.broadcast);
    let mut cat_track = broadcast.create_track(moqcast_media::moq::CATALOG_TRACK)?;
    cat_track.start_group()?;
    cat_track.write(Default::default(), Bytes::from(catalog.to_json()))?;
    let mut video = match info.video {
        Some(_) => Some(broadcast.create_track("video")?),
        None => None,
    };
    let mut audio = match info.audio {
        Some(_) => Some(broadcast.create_track("audio")?),
        None => None,
    };
    let mut extras = ExtraTracks::create(opts.extra_tracks.clone(), &mut broadcast)?;

    // Frames come from a blocking thread through a small bounded queue.
    let (tx, mut rx) = mpsc::channel(64);
    let reader = std::thread::Builder::new()
        .name("ingest".into())
        .spawn(move || pull_frames(source, tx))
        .context("spawning the ingest thread")?;

    let mut publisher = conn.publisher;
    let announce = broadcast.announce(&mut publisher);
    tokio::pin!(announce);
    let session = conn.session.run();
    tokio::pin!(session);
    let deadline = async {
        match opts.duration {
            Some(d) => tokio::time::sleep(d).await,
            None => std::future::pending().await,
        }
    };
    tokio::pin!(deadline);

    let mut audio_group_start: Option<u64> = None;
    let mut frames = 0u64;
    let result = loop {
        tokio::select! {
            res = &mut session => break res.map_err(|e| anyhow::anyhow!("session ended: {e}")),
            res = &mut announce => break res.map_err(|e| anyhow::anyhow!("announce failed: {e}")),
            () = &mut deadline => break Ok(()),
            next = rx.recv() => match next {
                Some(Ok((kind, frame))) => {
                    frames += 1;
                    extras.before_frame(frame.pts_us)?;
                    let (props, payload) = (properties(frame.pts_us).to_extension_headers(), frame.payload.clone());
                    let group_before = audio_group_start;
                    write_frame(kind, frame, &mut video, &mut audio, &mut audio_group_start)?;
                    extras.after_frame(kind, group_before != audio_group_start, &props, &payload)?;
                }
                Some(Err(e)) => break Err(anyhow::anyhow!(e)),
                None => break Ok(()),
            },
        }
    };
    drop(rx);
    let _ = reader.join();
    tracing::info!(frames, "publishing ended");
    // Give subscribers a moment to drain the last group before the session closes.
    if result.is_ok() {
        if let Some(v) = video.as_mut() {
            v.finish_group();
        }
        if let Some(a) = audio.as_mut() {
            a.finish_group();
        }
        extras.finish();
        let _ = tokio::time::timeout(Duration::from_millis(300), &mut session).await;
    }
    client.close().await;
    result
}

fn pull_frames(
    mut source: Source,
    tx: mpsc::Sender<Result<(MediaKind, moqcast_media::Frame), String>>,
) {
    loop {
        let item = match source.next() {
            Ok(Some(f)) => Ok(f),
            Ok(None) => return,
            Err(e) => Err(e.to_string()),
        };
        let stop = item.is_err();
        if tx.blocking_send(item).is_err() || stop {
            return;
        }
    }
}

fn write_frame(
    kind: MediaKind,
    frame: moqcast_media::Frame,
    video: &mut Option<TrackPublisher>,
    audio: &mut Option<TrackPublisher>,
    audio_group_start: &mut Option<u64>,
) -> anyhow::Result<()> {
    let props = properties(frame.pts_us).to_extension_headers();
    match kind {
        MediaKind::Video => {
            let Some(v) = video.as_mut() else {
                return Ok(());
            };
            if frame.keyframe {
                v.start_group()?;
            }
            v.write(props, frame.payload)?;
        }
        MediaKind::Audio => {
            let Some(a) = audio.as_mut() else {
                return Ok(());
            };
            // One audio group per second of media, so late joiners start within a second.
            let start = *audio_group_start.get_or_insert(frame.pts_us);
            if frame.pts_us.saturating_sub(start) >= 1_000_000 || frame.pts_us < start {
                a.start_group()?;
                *audio_group_start = Some(frame.pts_us);
            }
            a.write(props, frame.payload)?;
        }
    }
    Ok(())
}
