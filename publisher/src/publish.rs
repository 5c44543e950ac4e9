//! Puts an ingest [`Source`] on a relay: an MSF catalog on track `catalog` and one LOC track
//! per medium (`video`, `audio`), one object per frame, one group per video GOP.
//!
//! The catalog group stays open until the catalog changes, so a subscriber (or a relay) that
//! arrives late still receives the current catalog as the newest group's first object.

use std::time::Duration;

use anyhow::Context;
use bytes::Bytes;
use moqcast_client::{BroadcastPublisher, Client, ClientTls, TrackPublisher};
use moqcast_media::{catalog::Catalog, loc::LocProperties, time::unix_micros, MediaKind};
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

/// Builds the MSF catalog for a source ([`moqcast_media::info::catalog`]).
pub fn catalog_for(info: &MediaInfo) -> Catalog {
    moqcast_media::info::catalog(
        info.video.as_ref(),
        info.audio.as_ref(),
        unix_micros() / 1000,
    )
}

fn properties(pts_us: u64) -> LocProperties {
    let mut p = LocProperties::media_time(pts_us, TIMESCALE_US);
    p.send_time_us = Some(unix_micros());
    p
}

/// Backoff between reconnection attempts after the relay went away: doubling up to the most.
const RECONNECT_FIRST: Duration = Duration::from_millis(200);
const RECONNECT_MOST: Duration = Duration::from_secs(5);

/// Publishes until the source ends or `duration` passes. When the session ends (the relay
/// restarted, the network changed), it reconnects with backoff and publishes the broadcast
/// again, starting its video at the next keyframe; frames read meanwhile are dropped (a live
/// source does not wait). The first connection failing, or the relay refusing the broadcast,
/// is an error.
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
    let catalog = Bytes::from(catalog.to_json());

    let client = Client::new(&opts.tls)?;
    let mut live = Some(Live::connect(&client, &opts, &info, &catalog).await?);
    tracing::info!(url = %opts.url, broadcast = %opts.broadcast, "connected");

    // Frames come from a blocking thread through a small bounded queue.
    let (tx, mut rx) = mpsc::channel(64);
    let reader = std::thread::Builder::new()
        .name("ingest".into())
        .spawn(move || pull_frames(source, tx))
        .context("spawning the ingest thread")?;

    let deadline = async {
        match opts.duration {
            Some(d) => tokio::time::sleep(d).await,
            None => std::future::pending().await,
        }
    };
    tokio::pin!(deadline);
    let mut backoff = RECONNECT_FIRST;
    let retry = tokio::time::sleep(Duration::ZERO);
    tokio::pin!(retry);

    let mut frames = 0u64;
    let result = loop {
        tokio::select! {
            ended = async { (&mut live.as_mut().expect("guarded").task).await }, if live.is_some() => {
                match ended {
                    Ok(Ended::Refused(e)) => break Err(anyhow::anyhow!("the relay refused the broadcast: {e}")),
                    Ok(Ended::Session(e)) => tracing::warn!(error = %e, "session ended: reconnecting"),
                    Err(e) => tracing::warn!(error = %e, "session task ended: reconnecting"),
                }
                live = None;
                retry.as_mut().reset(tokio::time::Instant::now() + backoff);
            }
            () = &mut retry, if live.is_none() => {
                match Live::connect(&client, &opts, &info, &catalog).await {
                    Ok(l) => {
                        tracing::info!(url = %opts.url, broadcast = %opts.broadcast, "reconnected");
                        live = Some(l);
                        backoff = RECONNECT_FIRST;
                    }
                    Err(e) => {
                        backoff = (backoff * 2).min(RECONNECT_MOST);
                        tracing::warn!(error = format!("{e:#}"), retry_in_ms = backoff.as_millis() as u64, "reconnecting failed");
                        retry.as_mut().reset(tokio::time::Instant::now() + backoff);
                    }
                }
            }
            () = &mut deadline => break Ok(()),
            next = rx.recv() => match next {
                Some(Ok((kind, frame))) => {
                    frames += 1;
                    if let Some(l) = live.as_mut() {
                        l.write(kind, frame)?;
                    }
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
    if let (Ok(()), Some(l)) = (&result, live.as_mut()) {
        l.finish();
        let _ = tokio::time::timeout(Duration::from_millis(300), &mut l.task).await;
    }
    client.close().await;
    result
}

/// Why a connection's session task ended.
enum Ended {
    /// The session ended: reconnect.
    Session(String),
    /// The relay refused the announcement (for example UNAUTHORIZED): give up.
    Refused(String),
}

/// One connection to the relay and the broadcast's tracks on it.
struct Live {
    task: tokio::task::JoinHandle<Ended>,
    _catalog: TrackPublisher,
    video: Option<TrackPublisher>,
    audio: Option<TrackPublisher>,
    extras: ExtraTracks,
    audio_group_start: Option<u64>,
    /// The video track waits for a keyframe to start its first group.
    video_started: bool,
}

impl Live {
    async fn connect(
        client: &Client,
        opts: &PublishOptions,
        info: &MediaInfo,
        catalog: &Bytes,
    ) -> anyhow::Result<Self> {
        let conn = client.connect(&opts.url).await?;
        let mut broadcast = BroadcastPublisher::new(&opts.broadcast);
        let mut cat_track = broadcast.create_track(moqcast_media::moq::CATALOG_TRACK)?;
        cat_track.start_group()?;
        cat_track.write(Default::default(), catalog.clone())?;
        let video = match info.video {
            Some(_) => Some(broadcast.create_track("video")?),
            None => None,
        };
        let audio = match info.audio {
            Some(_) => Some(broadcast.create_track("audio")?),
            None => None,
        };
        let extras = ExtraTracks::create(opts.extra_tracks.clone(), &mut broadcast)?;
        let (session, mut publisher) = (conn.session, conn.publisher);
        let task = tokio::spawn(async move {
            tokio::select! {
                res = session.run() => Ended::Session(match res {
                    Ok(()) => "closed".into(),
                    Err(e) => e.to_string(),
                }),
                res = broadcast.announce(&mut publisher) => match res {
                    Ok(()) => Ended::Session("announcement ended".into()),
                    Err(e) => Ended::Refused(e.to_string()),
                },
            }
        });
        Ok(Self {
            task,
            _catalog: cat_track,
            video,
            audio,
            extras,
            audio_group_start: None,
            video_started: false,
        })
    }

    fn write(&mut self, kind: MediaKind, frame: moqcast_media::Frame) -> anyhow::Result<()> {
        if kind == MediaKind::Video && !self.video_started {
            if !frame.keyframe {
                return Ok(());
            }
            self.video_started = true;
        }
        self.extras.before_frame(frame.pts_us)?;
        let (props, payload) = (
            properties(frame.pts_us).to_extension_headers(),
            frame.payload.clone(),
        );
        let group_before = self.audio_group_start;
        write_frame(
            kind,
            frame,
            &mut self.video,
            &mut self.audio,
            &mut self.audio_group_start,
        )?;
        self.extras.after_frame(
            kind,
            group_before != self.audio_group_start,
            &props,
            &payload,
        )?;
        Ok(())
    }

    fn finish(&mut self) {
        if let Some(v) = self.video.as_mut() {
            v.finish_group();
        }
        if let Some(a) = self.audio.as_mut() {
            a.finish_group();
        }
        self.extras.finish();
    }
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
