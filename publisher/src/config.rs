//! The configuration of `moqcast-publish` and `moqcast-subscribe`: one struct per binary, read
//! from the command line and the environment (clap, defaults shown by `--help`), and
//! (de)serializable with serde (`deny_unknown_fields`), so that the settings a run used can be
//! written down and read back.
//!
//! [`PublishConfig::options`] and [`SubscribeConfig::options`] turn them into what the library
//! runs.

use std::{path::PathBuf, time::Duration};

use anyhow::Context;
use clap::Parser;
use moqcast_client::cli::TlsArgs;
use serde::{Deserialize, Serialize};
use url::Url;

use crate::{
    captions::{parse_webvtt, ExtraTrackOptions},
    ingest::{IngestOptions, Input},
    publish::PublishOptions,
    subscribe::SubscribeOptions,
};

/// Publish live audio/video to a MoQ relay as an MSF catalog plus LOC tracks.
#[derive(Debug, Clone, PartialEq, Parser, Serialize, Deserialize)]
#[command(name = "moqcast-publish", version)]
#[serde(deny_unknown_fields)]
pub struct PublishConfig {
    /// Relay URL: https://host:port/ (WebTransport) or moqt://host:port (raw QUIC).
    #[arg(long, env = "MOQCAST_URL")]
    #[serde(with = "moqcast_client::cli::url_text")]
    pub url: Url,
    /// Broadcast name (the MoQ namespace), e.g. "demo".
    #[arg(long, env = "MOQCAST_BROADCAST")]
    pub broadcast: String,
    /// "testsrc" (test pattern + tone), a media file, or "-" for fMP4/MPEG-TS on stdin.
    #[arg(long, default_value = "testsrc")]
    #[serde(default = "testsrc")]
    pub input: String,
    /// Repeat a file input forever.
    #[arg(long = "loop")]
    #[serde(default, rename = "loop")]
    pub looping: bool,
    /// Stop after this many seconds.
    #[arg(long)]
    #[serde(default)]
    pub duration: Option<f64>,
    /// A WebVTT file to publish as a caption track `captions-<lang>`; cue times count from
    /// the start of the publication.
    #[arg(long, value_name = "FILE.vtt")]
    #[serde(default)]
    pub captions: Option<PathBuf>,
    /// BCP 47 language of --captions.
    #[arg(long, default_value = "en", requires = "captions")]
    #[serde(default = "english")]
    pub captions_lang: String,
    /// Also publish the original audio as a second audio track `audio-<LANG>` ("Dub (LANG,
    /// test)") in the same altGroup, to exercise a viewer's audio menu.
    #[arg(long, value_name = "LANG")]
    #[serde(default)]
    pub test_dub: Option<String>,
    /// How to trust the relay's certificate (in serde, an object of its own: `"tls": {...}`).
    #[command(flatten)]
    #[serde(default)]
    pub tls: TlsArgs,
}

fn testsrc() -> String {
    "testsrc".into()
}

fn english() -> String {
    "en".into()
}

impl PublishConfig {
    /// What to publish; reads the `--captions` file.
    pub fn options(&self) -> anyhow::Result<PublishOptions> {
        let input = match self.input.as_str() {
            "testsrc" => Input::TestSrc,
            "-" => Input::Stdin,
            path => Input::File(PathBuf::from(path)),
        };
        let captions = match &self.captions {
            Some(path) => {
                let text = std::fs::read_to_string(path).with_context(|| {
                    format!("could not read the captions file {}", path.display())
                })?;
                let cues = parse_webvtt(&text)
                    .with_context(|| format!("captions file {}", path.display()))?;
                Some((cues, self.captions_lang.clone()))
            }
            None => None,
        };
        Ok(PublishOptions {
            url: self.url.clone(),
            broadcast: self.broadcast.clone(),
            tls: self.tls.client_tls()?,
            ingest: IngestOptions {
                input,
                looping: self.looping,
                realtime: true,
            },
            duration: seconds(self.duration, "duration")?,
            extra_tracks: ExtraTrackOptions {
                captions,
                test_dub: self.test_dub.clone(),
            },
        })
    }
}

/// Subscribe to a broadcast on a MoQ relay: record it to MP4, print its catalog or statistics.
#[derive(Debug, Clone, PartialEq, Parser, Serialize, Deserialize)]
#[command(name = "moqcast-subscribe", version)]
#[serde(deny_unknown_fields)]
pub struct SubscribeConfig {
    /// Relay URL: https://host:port/ (WebTransport) or moqt://host:port (raw QUIC).
    #[arg(long, env = "MOQCAST_URL")]
    #[serde(with = "moqcast_client::cli::url_text")]
    pub url: Url,
    /// Broadcast name.
    #[arg(long, env = "MOQCAST_BROADCAST")]
    pub broadcast: String,
    /// Record audio and video into this MP4 file.
    #[arg(long)]
    #[serde(default)]
    pub output: Option<PathBuf>,
    /// Stop after this many seconds.
    #[arg(long)]
    #[serde(default)]
    pub duration: Option<f64>,
    /// Print the catalog JSON.
    #[arg(long)]
    #[serde(default)]
    pub catalog: bool,
    /// Print per-track objects, bytes and one-way latency at the end.
    #[arg(long)]
    #[serde(default)]
    pub stats: bool,
    /// Print the statistics as one JSON object on the last line.
    #[arg(long)]
    #[serde(default)]
    pub json: bool,
    /// Seconds to keep retrying while the broadcast is not announced yet.
    #[arg(long, default_value_t = 10.0)]
    #[serde(default = "ten")]
    pub wait: f64,
    /// Write the final caption cues received to this WebVTT file (the live captioner's
    /// `<broadcast>/ai` track if there is one, else the broadcast's own).
    #[arg(long)]
    #[serde(default)]
    pub captions: Option<PathBuf>,
    /// Print the delay from the end of each utterance in the audio to its final cue (p50, p95).
    #[arg(long)]
    #[serde(default)]
    pub caption_latency: bool,
    /// Caption language (BCP 47, for example `es` for the sidecar's `--translate es` track):
    /// only a track in that language is read.
    #[arg(long)]
    #[serde(default)]
    pub caption_lang: Option<String>,
    /// Record the audio track in this language (BCP 47, for example `es` for the sidecar's
    /// `--dub es` track) in place of the original: one of the broadcast's own audio tracks in
    /// that language, else the dubbed track a sidecar publishes in `<broadcast>/ai`.
    #[arg(long)]
    #[serde(default)]
    pub audio_lang: Option<String>,
    /// Seconds to keep trying to get back after losing the relay (a restart, the end of its
    /// drain after GOAWAY): reconnects with backoff and resubscribes, recording into the same
    /// file. 0: end at once.
    #[arg(long, default_value_t = 30.0)]
    #[serde(default = "thirty")]
    pub reconnect_for: f64,
    /// How to trust the relay's certificate (in serde, an object of its own: `"tls": {...}`).
    #[command(flatten)]
    #[serde(default)]
    pub tls: TlsArgs,
}

fn thirty() -> f64 {
    30.0
}

fn ten() -> f64 {
    10.0
}

impl SubscribeConfig {
    /// What to read and measure.
    pub fn options(&self) -> anyhow::Result<SubscribeOptions> {
        Ok(SubscribeOptions {
            url: self.url.clone(),
            broadcast: self.broadcast.clone(),
            tls: self.tls.client_tls()?,
            output: self.output.clone(),
            duration: seconds(self.duration, "duration")?,
            print_catalog: self.catalog,
            stats: self.stats || self.json,
            wait: seconds(Some(self.wait), "wait")?.unwrap_or_default(),
            captions: self.captions.clone(),
            caption_latency: self.caption_latency,
            caption_lang: self.caption_lang.clone(),
            audio_lang: self.audio_lang.clone(),
            reconnect_for: seconds(Some(self.reconnect_for), "reconnect-for")?.unwrap_or_default(),
        })
    }
}

/// Seconds from a flag, which must be a finite number of at least 0.
fn seconds(v: Option<f64>, flag: &str) -> anyhow::Result<Option<Duration>> {
    v.map(|v| {
        Duration::try_from_secs_f64(v)
            .with_context(|| format!("--{flag} {v}: expected seconds >= 0"))
    })
    .transpose()
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn publish_defaults_come_from_one_place_and_show_in_help() {
        let cfg = PublishConfig::try_parse_from([
            "moqcast-publish",
            "--url",
            "moqt://127.0.0.1:4443",
            "--broadcast",
            "demo",
        ])
        .unwrap();
        assert_eq!(cfg.input, "testsrc");
        assert_eq!(cfg.captions_lang, "en");
        let help = PublishConfig::command().render_long_help().to_string();
        assert!(help.contains("[default: testsrc]"), "{help}");

        // The same settings written out and read back; unknown keys are refused.
        let json = serde_json::to_value(&cfg).unwrap();
        assert_eq!(json["loop"], false);
        let back: PublishConfig = serde_json::from_value(json).unwrap();
        assert_eq!(back, cfg);
        let minimal: PublishConfig =
            serde_json::from_str(r#"{"url": "moqt://127.0.0.1:4443", "broadcast": "demo"}"#)
                .unwrap();
        assert_eq!(minimal, cfg);
        assert!(serde_json::from_str::<PublishConfig>(
            r#"{"url": "moqt://127.0.0.1:4443", "broadcast": "demo", "bogus": 1}"#
        )
        .is_err());

        let opts = cfg.options().unwrap();
        assert_eq!(opts.ingest.input, Input::TestSrc);
        assert!(opts.ingest.realtime);
    }

    #[test]
    fn subscribe_config_turns_into_options() {
        let cfg = SubscribeConfig::try_parse_from([
            "moqcast-subscribe",
            "--url",
            "https://localhost:4443/",
            "--broadcast",
            "demo",
            "--json",
            "--duration",
            "2.5",
            "--tls-disable-verify",
        ])
        .unwrap();
        let help = SubscribeConfig::command().render_long_help().to_string();
        assert!(help.contains("[default: 10]"), "{help}");
        let opts = cfg.options().unwrap();
        assert!(opts.stats, "--json implies the statistics");
        assert_eq!(opts.duration, Some(Duration::from_millis(2500)));
        assert_eq!(opts.wait, Duration::from_secs(10));
        assert!(opts.tls.disable_verify);
        let back: SubscribeConfig =
            serde_json::from_value(serde_json::to_value(&cfg).unwrap()).unwrap();
        assert_eq!(back, cfg);

        let mut bad = cfg;
        bad.wait = -1.0;
        let err = bad.options().unwrap_err();
        assert!(err.to_string().contains("--wait -1"), "{err}");
    }
}
