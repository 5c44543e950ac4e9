//! Piper voices (VITS models exported to ONNX, `*.onnx` + `*.onnx.json`) run through ONNX
//! Runtime (`ort`, loading `libonnxruntime.so` at run time).
//!
//! Piper speaks phonemes, not letters. Its phonemizer is libespeak-ng (GPL): the sidecar never
//! links it, and runs the `espeak-ng` program instead (`espeak-ng -q --ipa -b 1 -v VOICE`), which
//! writes the same IPA, clause by clause, as the library call Piper makes (checked on English
//! sentences: identical strings, stress marks included). What Piper adds to that is rebuilt
//! here, as plain code ([`clauses`], [`sentences`], [`phoneme_ids`]):
//!
//! * the text is cut into clauses at `. , ; : ? !`; each clause's IPA is decomposed (NFD),
//!   cleared of espeak-ng's `(lang)` switch flags, and followed by its punctuation (`, ; :` also
//!   by a space); `. ? !` end a sentence;
//! * each sentence becomes ids through the voice's `phoneme_id_map`: BOS `^`, a pad `_` after it
//!   and after every phoneme, EOS `$`; a phoneme the map lacks is dropped (counted);
//! * each sentence is one inference (`input` int64 `[1, N]`, `input_lengths` `[1]`, `scales`
//!   f32 `[noise, length, noise_w]` from the voice's `inference`, `sid` for a multi-speaker
//!   voice); sentences are joined with 0.2 s of silence, and the whole is normalised to a peak
//!   of 0.9, as Piper scales its output.
//!
//! A voice is picked by the request's language: the voice's `language.code` (`en_US`) or
//! `espeak.voice` (`en-us`), exact tag first, then the primary language; none is
//! [`ProviderError::Unsupported`]. Sessions load once per voice, on one inference thread per
//! engine ([`Engine`]), fed by a bounded queue: a request that finds it full fails at once
//! (the chain moves on), and one abandoned by the chain (timeout) is skipped before its next
//! sentence runs.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{mpsc, Arc, OnceLock};

use serde::Deserialize;
use tokio::sync::oneshot;
use unicode_normalization::UnicodeNormalization;

use crate::lang;
use crate::stage::{BoxFuture, Provider, ProviderError, Speech, SynthRequest, Synthesis};

/// Requests waiting for the inference thread, per engine; past it a request fails at once.
pub const QUEUE: usize = 2;
/// Silence between two sentences, s (Piper's default).
pub const SENTENCE_SILENCE_S: f32 = 0.2;
/// The peak the output is normalised to.
pub const PEAK: f32 = 0.9;

/// Where `scripts/fetch-piper.sh` puts the voices: `$MOQCAST_CACHE/piper-voices`
/// (`$HOME/.cache/moqcast/piper-voices`).
pub fn default_voices_dir() -> PathBuf {
    cache_dir().join("piper-voices")
}

/// Where `scripts/fetch-piper.sh` puts ONNX Runtime:
/// `$MOQCAST_CACHE/onnxruntime/libonnxruntime.so` (`$HOME/.cache/moqcast/...`).
pub fn default_ort_dylib() -> PathBuf {
    cache_dir().join("onnxruntime/libonnxruntime.so")
}

fn cache_dir() -> PathBuf {
    if let Some(p) = std::env::var_os("MOQCAST_CACHE").filter(|p| !p.is_empty()) {
        return PathBuf::from(p);
    }
    std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("."))
        .join(".cache/moqcast")
}

/// The parts of a voice's `.onnx.json` that synthesis uses.
#[derive(Debug, Clone, Deserialize)]
pub struct VoiceConfig {
    pub audio: AudioConfig,
    #[serde(default)]
    pub espeak: Option<EspeakConfig>,
    #[serde(default)]
    pub language: Option<LanguageConfig>,
    #[serde(default)]
    pub inference: InferenceConfig,
    /// `espeak` (the only kind served here) or `text`.
    #[serde(default)]
    pub phoneme_type: Option<String>,
    /// Phoneme -> phonemes, applied before the ids (most voices have none).
    #[serde(default)]
    pub phoneme_map: BTreeMap<String, Vec<String>>,
    /// Phoneme (one character) -> ids.
    pub phoneme_id_map: HashMap<String, Vec<i64>>,
    #[serde(default = "one")]
    pub num_speakers: u32,
}

fn one() -> u32 {
    1
}

#[derive(Debug, Clone, Deserialize)]
pub struct AudioConfig {
    pub sample_rate: u32,
}

#[derive(Debug, Clone, Deserialize)]
pub struct EspeakConfig {
    pub voice: String,
}

#[derive(Debug, Clone, Deserialize)]
pub struct LanguageConfig {
    pub code: String,
}

#[derive(Debug, Clone, Copy, Deserialize)]
pub struct InferenceConfig {
    #[serde(default = "noise_scale")]
    pub noise_scale: f32,
    #[serde(default = "length_scale")]
    pub length_scale: f32,
    #[serde(default = "noise_w")]
    pub noise_w: f32,
}

fn noise_scale() -> f32 {
    0.667
}
fn length_scale() -> f32 {
    1.0
}
fn noise_w() -> f32 {
    0.8
}

impl Default for InferenceConfig {
    fn default() -> Self {
        Self {
            noise_scale: noise_scale(),
            length_scale: length_scale(),
            noise_w: noise_w(),
        }
    }
}

/// One voice of the directory.
#[derive(Debug, Clone)]
pub struct Voice {
    /// The file name without `.onnx` (`en_US-joe-medium`).
    pub name: String,
    pub onnx: PathBuf,
    pub config: VoiceConfig,
}

impl Voice {
    /// The espeak-ng voice that phonemizes for it.
    pub fn espeak_voice(&self) -> String {
        self.config
            .espeak
            .as_ref()
            .map(|e| e.voice.clone())
            .or_else(|| self.config.language.as_ref().map(|l| tag(&l.code)))
            .unwrap_or_else(|| "en-us".into())
    }

    /// The model's input for `text`: one id sequence per sentence (espeak-ng, then
    /// [`sentences`] and [`phoneme_ids`]).
    pub async fn ids(&self, text: &str) -> Result<Vec<Vec<i64>>, ProviderError> {
        let clauses = phonemize(&self.espeak_voice(), text).await?;
        let mut ids = Vec::new();
        let mut missing = 0;
        for s in sentences(&clauses) {
            let (i, m) = phoneme_ids(&s, &self.config.phoneme_map, &self.config.phoneme_id_map)
                .map_err(ProviderError::Failed)?;
            missing += m;
            ids.push(i);
        }
        if missing > 0 {
            tracing::debug!(voice = %self.name, missing, "phonemes not in the voice's map were dropped");
        }
        Ok(ids)
    }

    /// Its language tags, lower case with `-` (`en-us`).
    fn tags(&self) -> Vec<String> {
        let mut t = Vec::new();
        if let Some(l) = &self.config.language {
            t.push(tag(&l.code));
        }
        if let Some(e) = &self.config.espeak {
            t.push(tag(&e.voice));
        }
        t
    }
}

fn tag(s: &str) -> String {
    s.trim().replace('_', "-").to_ascii_lowercase()
}

/// The voices (`NAME.onnx` with `NAME.onnx.json`) in `dir`, sorted by name; `only`: just that
/// one. Voices that are not espeak-phonemized, or whose config does not parse, are skipped with
/// a warning.
pub fn scan(dir: &Path, only: Option<&str>) -> Result<Vec<Voice>, String> {
    let entries = std::fs::read_dir(dir).map_err(|e| {
        format!(
            "no Piper voice directory {} ({e}); scripts/setup.sh installs one, or pass --piper-voices DIR",
            dir.display()
        )
    })?;
    let mut voices = Vec::new();
    for entry in entries.flatten() {
        let path = entry.path();
        let Some(name) = path
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| n.strip_suffix(".onnx"))
            .map(str::to_string)
        else {
            continue;
        };
        if only.is_some_and(|o| o != name) {
            continue;
        }
        let json = path.with_file_name(format!("{name}.onnx.json"));
        let config = match std::fs::read(&json)
            .map_err(|e| e.to_string())
            .and_then(|b| serde_json::from_slice::<VoiceConfig>(&b).map_err(|e| e.to_string()))
        {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(voice = %path.display(), config = %json.display(), error = %e, "Piper voice skipped: no readable config");
                continue;
            }
        };
        if config.phoneme_type.as_deref().unwrap_or("espeak") != "espeak" {
            tracing::warn!(voice = %path.display(), phoneme_type = ?config.phoneme_type, "Piper voice skipped: only espeak-phonemized voices are served");
            continue;
        }
        voices.push(Voice {
            name,
            onnx: path,
            config,
        });
    }
    voices.sort_by(|a, b| a.name.cmp(&b.name));
    if voices.is_empty() {
        return Err(match only {
            Some(o) => format!(
                "no Piper voice {o} ({o}.onnx + {o}.onnx.json) in {}",
                dir.display()
            ),
            None => format!(
                "no Piper voice (NAME.onnx + NAME.onnx.json) in {}; scripts/setup.sh installs one",
                dir.display()
            ),
        });
    }
    Ok(voices)
}

/// The voice for `language` (BCP 47): an exact tag first (`en-US` = `en_US`), then the same
/// primary language; the first by name among equals.
pub fn voice_for<'a>(voices: &'a [Voice], language: &str) -> Option<&'a Voice> {
    let want = tag(language);
    let primary = lang::primary(language);
    voices
        .iter()
        .find(|v| v.tags().contains(&want))
        .or_else(|| {
            voices
                .iter()
                .find(|v| v.tags().iter().any(|t| lang::primary(t) == primary))
        })
}

/// Clause punctuation, as espeak-ng reports it to Piper.
fn is_terminator(c: char) -> bool {
    matches!(c, '.' | ',' | ';' | ':' | '?' | '!')
}

/// Cuts `text` into clauses, each ending at a run of `. , ; : ? !` followed by white space
/// (or the end): `(clause text with its punctuation, the run's last mark)`. A last clause with
/// no punctuation has `None`.
pub fn clauses(text: &str) -> Vec<(String, Option<char>)> {
    let chars: Vec<char> = text.chars().collect();
    let mut out = Vec::new();
    let mut start = 0;
    let mut i = 0;
    while i < chars.len() {
        if is_terminator(chars[i]) {
            let mut end = i;
            while end + 1 < chars.len() && is_terminator(chars[end + 1]) {
                end += 1;
            }
            if end + 1 == chars.len() || chars[end + 1].is_whitespace() {
                let clause: String = chars[start..=end].iter().collect();
                if clause.chars().any(char::is_alphanumeric) {
                    out.push((clause.trim().to_string(), Some(chars[end])));
                }
                start = end + 1;
            }
            i = end + 1;
        } else {
            i += 1;
        }
    }
    let rest: String = chars[start..].iter().collect();
    if rest.chars().any(char::is_alphanumeric) {
        out.push((rest.trim().to_string(), None));
    }
    out
}

/// One clause's IPA as Piper's phonemes: NFD, espeak-ng's `(lang)` switch flags removed.
pub fn clause_phonemes(ipa: &str) -> Vec<char> {
    let mut out = Vec::new();
    let mut in_flag = false;
    for c in ipa.trim().nfd() {
        match c {
            '(' => in_flag = true,
            ')' if in_flag => in_flag = false,
            _ if in_flag => {}
            '\n' | '\r' | '\t' => out.push(' '),
            _ => out.push(c),
        }
    }
    out
}

/// Piper's sentences from clauses' IPA and their punctuation: `, ; :` add the mark and a space,
/// `. ? !` add the mark and end the sentence.
pub fn sentences(clauses: &[(String, Option<char>)]) -> Vec<Vec<char>> {
    let mut out = Vec::new();
    let mut current: Vec<char> = Vec::new();
    for (ipa, end) in clauses {
        current.extend(clause_phonemes(ipa));
        match end {
            Some(c @ ('.' | '?' | '!')) => {
                current.push(*c);
                out.push(std::mem::take(&mut current));
            }
            Some(c) => {
                current.push(*c);
                current.push(' ');
            }
            None => {}
        }
    }
    if current.iter().any(|c| !c.is_whitespace()) {
        out.push(current);
    }
    out
}

/// The ids of one sentence: `^ _ (phoneme _)* $`, through the voice's `phoneme_map` and
/// `phoneme_id_map`. Returns the ids and how many phonemes the map lacked (dropped).
pub fn phoneme_ids(
    sentence: &[char],
    phoneme_map: &BTreeMap<String, Vec<String>>,
    id_map: &HashMap<String, Vec<i64>>,
) -> Result<(Vec<i64>, usize), String> {
    let special = |s: &str| {
        id_map
            .get(s)
            .cloned()
            .ok_or_else(|| format!("the voice's phoneme_id_map has no {s:?}"))
    };
    let (bos, eos, pad) = (special("^")?, special("$")?, special("_")?);
    let mut ids = bos;
    ids.extend(&pad);
    let mut missing = 0;
    let mut buf = [0u8; 4];
    for c in sentence {
        let s: &str = c.encode_utf8(&mut buf);
        let mapped: Vec<&str> = match phoneme_map.get(s) {
            Some(m) => m.iter().map(String::as_str).collect(),
            None => vec![s],
        };
        for p in mapped {
            match id_map.get(p) {
                Some(v) => {
                    ids.extend(v);
                    ids.extend(&pad);
                }
                None => missing += 1,
            }
        }
    }
    ids.extend(eos);
    Ok((ids, missing))
}

/// Runs `espeak-ng -q --ipa` on `input` (one line per clause expected).
async fn espeak_ipa(voice: &str, input: &str) -> Result<Vec<String>, ProviderError> {
    let out = super::speech::run_espeak(&["-q", "--ipa", "-b", "1", "-v", voice], input).await?;
    Ok(String::from_utf8_lossy(&out)
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(str::to_string)
        .collect())
}

/// The IPA of each clause of `text`: one espeak-ng run for all of them, one line each; when
/// espeak-ng cut the text otherwise, one run per clause.
pub async fn phonemize(
    voice: &str,
    text: &str,
) -> Result<Vec<(String, Option<char>)>, ProviderError> {
    let cl = clauses(text);
    if cl.is_empty() {
        return Err(ProviderError::Unsupported("nothing to say".into()));
    }
    let joined: Vec<&str> = cl.iter().map(|(t, _)| t.as_str()).collect();
    let lines = espeak_ipa(voice, &joined.join("\n")).await?;
    if lines.len() == cl.len() {
        return Ok(lines.into_iter().zip(cl.iter().map(|(_, e)| *e)).collect());
    }
    let mut out = Vec::with_capacity(cl.len());
    for (t, end) in cl {
        out.push((espeak_ipa(voice, &t).await?.join(" "), end));
    }
    Ok(out)
}

/// Loads ONNX Runtime from `dylib`, once per process (the first library that loads serves
/// every later call); a missing file is reported without touching ONNX Runtime.
pub fn init_ort(dylib: &Path) -> Result<(), String> {
    static INIT: OnceLock<Result<(), String>> = OnceLock::new();
    if !dylib.is_file() {
        return Err(format!(
            "no ONNX Runtime at {} (scripts/setup.sh installs it from the onnxruntime wheel; or set ORT_DYLIB_PATH)",
            dylib.display()
        ));
    }
    INIT.get_or_init(|| {
        let path = dylib.display().to_string();
        // ort panics when the library does not load: a panic here is an unusable library.
        match std::panic::catch_unwind(|| ort::init_from(path).with_name("moqcast-piper").commit())
        {
            Ok(Ok(_)) => {
                tracing::info!(dylib = %dylib.display(), "ONNX Runtime loaded");
                Ok(())
            }
            Ok(Err(e)) => Err(format!("ONNX Runtime at {}: {e}", dylib.display())),
            Err(_) => Err(format!(
                "ONNX Runtime at {} could not be loaded (not an onnxruntime library?)",
                dylib.display()
            )),
        }
    })
    .clone()
}

/// What the inference thread does.
enum Job {
    /// Load a voice's session (warm-up); answered when it is loaded (or failed).
    Load(usize, oneshot::Sender<()>),
    Speak {
        voice: usize,
        sentences: Vec<Vec<i64>>,
        reply: oneshot::Sender<Result<Vec<f32>, String>>,
    },
}

/// A voice directory served by one inference thread. The thread ends when the engine is
/// dropped (after the sentence it is running).
pub struct Engine {
    dir: PathBuf,
    voices: Arc<Vec<Voice>>,
    jobs: mpsc::SyncSender<Job>,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine")
            .field("dir", &self.dir)
            .field(
                "voices",
                &self.voices.iter().map(|v| &v.name).collect::<Vec<_>>(),
            )
            .finish()
    }
}

impl Engine {
    /// The voices of `dir` (`only`: that voice), run by ONNX Runtime from `ort_dylib` on
    /// `threads` threads; or why the provider cannot serve (no directory, no voice, no
    /// espeak-ng, no ONNX Runtime).
    pub fn open(
        dir: &Path,
        only: Option<&str>,
        ort_dylib: &Path,
        threads: usize,
    ) -> Result<Self, String> {
        let voices = Arc::new(scan(dir, only)?);
        if std::process::Command::new("espeak-ng")
            .arg("--version")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_err()
        {
            return Err(
                "espeak-ng is not installed: Piper's phonemes come from it (Debian: apt-get install espeak-ng)"
                    .into(),
            );
        }
        init_ort(ort_dylib)?;
        let (tx, rx) = mpsc::sync_channel(QUEUE);
        let v = voices.clone();
        std::thread::Builder::new()
            .name("piper".into())
            .spawn(move || worker(&v, &rx, threads.max(1)))
            .map_err(|e| format!("starting the Piper thread: {e}"))?;
        tracing::info!(dir = %dir.display(), voices = ?voices.iter().map(|v| &v.name).collect::<Vec<_>>(), "Piper voices");
        Ok(Self {
            dir: dir.to_path_buf(),
            voices,
            jobs: tx,
        })
    }

    pub fn voices(&self) -> &[Voice] {
        &self.voices
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn index_for(&self, language: &str) -> Option<usize> {
        let v = voice_for(&self.voices, language)?;
        self.voices.iter().position(|x| x.name == v.name)
    }

    /// Speaks `text` in `language` (see the module documentation).
    pub fn speak(&self, text: &str, language: &str) -> BoxFuture<Result<Speech, ProviderError>> {
        let Some(index) = self.index_for(language) else {
            let err = ProviderError::Unsupported(format!(
                "no Piper voice for {language} in {} (voices: {})",
                self.dir.display(),
                self.voices
                    .iter()
                    .map(|v| v.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
            return Box::pin(async move { Err(err) });
        };
        let voice = self.voices[index].clone();
        let jobs = self.jobs.clone();
        let text = text.to_string();
        Box::pin(async move {
            let ids = voice.ids(&text).await?;
            let (reply, answer) = oneshot::channel();
            jobs.try_send(Job::Speak {
                voice: index,
                sentences: ids,
                reply,
            })
            .map_err(|e| match e {
                mpsc::TrySendError::Full(_) => ProviderError::Failed(format!(
                    "piper: {QUEUE} requests already waiting for inference"
                )),
                mpsc::TrySendError::Disconnected(_) => {
                    ProviderError::Failed("piper: the inference thread is gone".into())
                }
            })?;
            let samples = answer
                .await
                .map_err(|_| ProviderError::Failed("piper: the inference thread is gone".into()))?
                .map_err(|e| ProviderError::Failed(format!("piper {}: {e}", voice.name)))?;
            Ok(Speech {
                samples,
                rate: voice.config.audio.sample_rate,
            })
        })
    }

    /// Loads the session of `language`'s voice now (off the runtime); ready when it is loaded.
    pub fn warm(&self, language: &str) -> BoxFuture<()> {
        let Some(i) = self.index_for(language) else {
            return Box::pin(async {});
        };
        let (done, loaded) = oneshot::channel();
        let sent = self.jobs.try_send(Job::Load(i, done)).is_ok();
        Box::pin(async move {
            if sent {
                let _ = loaded.await;
            }
        })
    }
}

/// The inference thread: sessions loaded once per voice, jobs in order.
fn worker(voices: &[Voice], jobs: &mpsc::Receiver<Job>, threads: usize) {
    let mut sessions: HashMap<usize, ort::session::Session> = HashMap::new();
    while let Ok(job) = jobs.recv() {
        let (index, sentences, reply) = match job {
            Job::Load(i, done) => {
                if let Err(e) = session(&mut sessions, voices, i, threads) {
                    tracing::warn!(voice = %voices[i].name, error = %e, "Piper voice did not load");
                }
                let _ = done.send(());
                continue;
            }
            Job::Speak {
                voice,
                sentences,
                reply,
            } => (voice, sentences, reply),
        };
        let voice = &voices[index];
        let result = session(&mut sessions, voices, index, threads).and_then(|s| {
            let has_sid = s.inputs.iter().any(|i| i.name == "sid");
            let gap = (SENTENCE_SILENCE_S * voice.config.audio.sample_rate as f32) as usize;
            let mut audio: Vec<f32> = Vec::new();
            for (n, ids) in sentences.into_iter().enumerate() {
                if reply.is_closed() {
                    return Err("abandoned".into());
                }
                if n > 0 {
                    audio.resize(audio.len() + gap, 0.0);
                }
                audio.extend(infer(s, &voice.config.inference, ids, has_sid)?);
            }
            Ok(audio)
        });
        let _ = reply.send(result.map(|mut a| {
            normalise(&mut a);
            a
        }));
    }
}

fn session<'a>(
    sessions: &'a mut HashMap<usize, ort::session::Session>,
    voices: &[Voice],
    i: usize,
    threads: usize,
) -> Result<&'a mut ort::session::Session, String> {
    use std::collections::hash_map::Entry;
    match sessions.entry(i) {
        Entry::Occupied(e) => Ok(e.into_mut()),
        Entry::Vacant(e) => {
            let v = &voices[i];
            let t0 = std::time::Instant::now();
            let s = ort::session::Session::builder()
                .and_then(|b| b.with_intra_threads(threads))
                .and_then(|b| b.with_inter_threads(1))
                .and_then(|b| b.commit_from_file(&v.onnx))
                .map_err(|e| format!("loading {}: {e}", v.onnx.display()))?;
            tracing::info!(voice = %v.name, took_ms = t0.elapsed().as_millis() as u64, threads, "Piper voice loaded");
            Ok(e.insert(s))
        }
    }
}

/// One sentence through the model.
fn infer(
    session: &mut ort::session::Session,
    inference: &InferenceConfig,
    ids: Vec<i64>,
    has_sid: bool,
) -> Result<Vec<f32>, String> {
    use ort::value::Tensor;
    let err = |e: ort::Error| e.to_string();
    let n = ids.len();
    let input = Tensor::from_array(([1usize, n], ids)).map_err(err)?;
    let lengths = Tensor::from_array(([1usize], vec![n as i64])).map_err(err)?;
    let scales = Tensor::from_array((
        [3usize],
        vec![
            inference.noise_scale,
            inference.length_scale,
            inference.noise_w,
        ],
    ))
    .map_err(err)?;
    let outputs = if has_sid {
        let sid = Tensor::from_array(([1usize], vec![0i64])).map_err(err)?;
        session.run(ort::inputs![
            "input" => input,
            "input_lengths" => lengths,
            "scales" => scales,
            "sid" => sid,
        ])
    } else {
        session.run(ort::inputs![
            "input" => input,
            "input_lengths" => lengths,
            "scales" => scales,
        ])
    }
    .map_err(err)?;
    let (_, audio) = outputs[0].try_extract_tensor::<f32>().map_err(err)?;
    Ok(audio.to_vec())
}

/// Scales to a peak of [`PEAK`] (Piper scales its output to full range the same way; quiet
/// output is not raised more than 90x).
pub fn normalise(audio: &mut [f32]) {
    let peak = audio.iter().fold(0.0f32, |m, x| m.max(x.abs())).max(0.01);
    let k = PEAK / peak;
    for x in audio {
        *x *= k;
    }
}

/// The `piper` synthesis provider: an [`Engine`] shared by every language's chain.
#[derive(Debug)]
pub struct Piper {
    name: String,
    engine: Arc<Engine>,
    /// The language of the chain it serves: the voice a warm-up loads.
    language: Option<String>,
}

impl Piper {
    pub fn new(name: &str, engine: Arc<Engine>) -> Self {
        Self {
            name: name.to_string(),
            engine,
            language: None,
        }
    }

    /// For a chain of `language`: its warm-up loads only that language's voice.
    pub fn for_language(mut self, language: &str) -> Self {
        self.language = Some(language.to_string());
        self
    }

    pub fn engine(&self) -> &Arc<Engine> {
        &self.engine
    }
}

impl Provider<Synthesis> for Piper {
    fn name(&self) -> &str {
        &self.name
    }

    fn call(&self, request: SynthRequest) -> BoxFuture<Result<Speech, ProviderError>> {
        match super::speech::check_text(&request) {
            Ok(text) => self.engine.speak(&text, &request.language),
            Err(e) => Box::pin(async move { Err(e) }),
        }
    }

    /// Loads the voice of the chain's language ([`Piper::for_language`]), or every voice.
    fn warm(&self) -> BoxFuture<()> {
        let languages: Vec<String> = match &self.language {
            Some(l) => vec![l.clone()],
            None => self
                .engine
                .voices()
                .iter()
                .filter_map(|v| v.tags().into_iter().next())
                .collect(),
        };
        let loads: Vec<_> = languages.iter().map(|l| self.engine.warm(l)).collect();
        Box::pin(async move {
            for l in loads {
                l.await;
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id_map() -> HashMap<String, Vec<i64>> {
        // A slice of en_US-joe-medium's map.
        [
            ("_", 0),
            ("^", 1),
            ("$", 2),
            (" ", 3),
            ("!", 4),
            (",", 8),
            (".", 10),
            ("?", 13),
            ("h", 20),
            ("l", 24),
            ("o", 27),
            ("w", 35),
            ("d", 17),
            ("ə", 59),
            ("ˈ", 120),
            ("ʊ", 100),
            ("ɜ", 62),
            ("ː", 122),
            ("c", 16),
            ("\u{327}", 140),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), vec![v]))
        .collect()
    }

    #[test]
    fn clauses_end_at_punctuation_followed_by_space() {
        assert_eq!(
            clauses("Hello world, this is 3.5 m. How are you?! Fine"),
            vec![
                ("Hello world,".to_string(), Some(',')),
                ("this is 3.5 m.".to_string(), Some('.')),
                ("How are you?!".to_string(), Some('!')),
                ("Fine".to_string(), None),
            ]
        );
        assert_eq!(clauses(" ... , "), vec![]);
        assert_eq!(clauses("Sí."), vec![("Sí.".to_string(), Some('.'))]);
    }

    #[test]
    fn sentences_carry_piper_punctuation() {
        let s = sentences(&[
            ("həlˈoʊ wˈɜːld".into(), Some(',')),
            ("ðɪs".into(), Some('.')),
            ("(en)hˈaʊ(es) ɑːɹ".into(), Some('?')),
            ("fˈaɪn".into(), None),
        ]);
        let text: Vec<String> = s.iter().map(|c| c.iter().collect()).collect();
        // The flags go, the words they mark stay.
        assert_eq!(text, vec!["həlˈoʊ wˈɜːld, ðɪs.", "hˈaʊ ɑːɹ?", "fˈaɪn"]);
        // NFD: a precomposed letter becomes letter + combining mark.
        assert_eq!(clause_phonemes("ç"), vec!['c', '\u{327}']);
    }

    #[test]
    fn ids_are_bos_pad_phoneme_pad_eos() {
        let (ids, missing) = phoneme_ids(
            &"həlˈoʊ.".chars().collect::<Vec<_>>(),
            &BTreeMap::new(),
            &id_map(),
        )
        .unwrap();
        assert_eq!(
            ids,
            vec![1, 0, 20, 0, 59, 0, 24, 0, 120, 0, 27, 0, 100, 0, 10, 0, 2]
        );
        assert_eq!(missing, 0);
        // An unknown phoneme is dropped with its pad, and counted.
        let (ids, missing) = phoneme_ids(&['h', 'Q', 'l'], &BTreeMap::new(), &id_map()).unwrap();
        assert_eq!(ids, vec![1, 0, 20, 0, 24, 0, 2]);
        assert_eq!(missing, 1);
        // phoneme_map first: one phoneme may become several.
        let map = BTreeMap::from([("x".to_string(), vec!["h".to_string(), "o".to_string()])]);
        let (ids, _) = phoneme_ids(&['x'], &map, &id_map()).unwrap();
        assert_eq!(ids, vec![1, 0, 20, 0, 27, 0, 2]);
        assert!(phoneme_ids(&['h'], &BTreeMap::new(), &HashMap::new()).is_err());
    }

    fn voice(name: &str, code: &str, espeak: &str) -> Voice {
        Voice {
            name: name.into(),
            onnx: PathBuf::from(format!("{name}.onnx")),
            config: VoiceConfig {
                audio: AudioConfig {
                    sample_rate: 22_050,
                },
                espeak: Some(EspeakConfig {
                    voice: espeak.into(),
                }),
                language: Some(LanguageConfig { code: code.into() }),
                inference: InferenceConfig::default(),
                phoneme_type: None,
                phoneme_map: BTreeMap::new(),
                phoneme_id_map: id_map(),
                num_speakers: 1,
            },
        }
    }

    #[test]
    fn voices_by_language() {
        let voices = vec![
            voice("en_GB-alan-medium", "en_GB", "en-gb-x-rp"),
            voice("en_US-joe-medium", "en_US", "en-us"),
            voice("es_MX-claude-high", "es_MX", "es-419"),
        ];
        let name = |l: &str| voice_for(&voices, l).map(|v| v.name.as_str());
        assert_eq!(name("en-US"), Some("en_US-joe-medium"));
        assert_eq!(name("en_us"), Some("en_US-joe-medium"));
        assert_eq!(name("en-GB"), Some("en_GB-alan-medium"));
        assert_eq!(name("en"), Some("en_GB-alan-medium"), "first by name");
        assert_eq!(name("es"), Some("es_MX-claude-high"));
        assert_eq!(name("fr"), None);
        assert_eq!(voices[1].espeak_voice(), "en-us");
    }

    #[test]
    fn the_packaged_voice_config_parses() {
        let json = r#"{"audio":{"sample_rate":22050,"quality":"medium"},"espeak":{"voice":"en-us"},
            "inference":{"noise_scale":0.667,"length_scale":1,"noise_w":0.8},"phoneme_type":"espeak",
            "phoneme_map":{},"num_symbols":256,"num_speakers":1,"speaker_id_map":{},"piper_version":"1.0.0",
            "language":{"code":"en_US","family":"en","region":"US"},"dataset":"joe",
            "phoneme_id_map":{"_":[0],"^":[1],"$":[2]}}"#;
        let c: VoiceConfig = serde_json::from_str(json).unwrap();
        assert_eq!(c.audio.sample_rate, 22_050);
        assert_eq!(c.inference.noise_w, 0.8);
        assert_eq!(c.phoneme_id_map["$"], vec![2]);
        let c: VoiceConfig =
            serde_json::from_str(r#"{"audio":{"sample_rate":16000},"phoneme_id_map":{}}"#).unwrap();
        assert_eq!(c.inference.noise_scale, 0.667, "Piper's defaults");
        assert_eq!(c.num_speakers, 1);
    }

    #[test]
    fn normalise_scales_the_peak() {
        let mut a = vec![0.1, -0.45, 0.2];
        normalise(&mut a);
        assert!((a[1] + PEAK).abs() < 1e-6);
        let mut quiet = vec![0.0; 10];
        normalise(&mut quiet);
        assert!(quiet.iter().all(|x| *x == 0.0));
    }

    #[tokio::test]
    async fn espeak_ng_gives_one_line_per_clause() {
        let c = phonemize("en-us", "Hello world, this is a test. Fine!")
            .await
            .unwrap();
        assert_eq!(
            c,
            vec![
                ("həlˈoʊ wˈɜːld".to_string(), Some(',')),
                ("ðɪs ɪz ɐ tˈɛst".to_string(), Some('.')),
                ("fˈaɪn".to_string(), Some('!')),
            ]
        );
        // "Dr." is a clause of its own for espeak-ng and here alike; "3.5" is not cut.
        let c = phonemize("en-us", "Dr. Smith paid 3.5 dollars")
            .await
            .unwrap();
        assert_eq!(c.len(), 2, "{c:?}");
        assert!(c[1].0.contains("pɔɪnt"), "{c:?}");
    }
}
