//! The local Whisper model as providers: speech recognition (`whisper`), and translation of
//! speech into English with Whisper's translate task (`whisper-translate`, multilingual models
//! such as `--model base`).
//!
//! The model is synchronous CPU (or GPU) work: each call runs on tokio's blocking pool, one at
//! a time, and both providers share the one loaded model. A call the chain abandons (past its
//! timeout) still runs to its end and holds the model until then; the next call waits for it.

use std::sync::{Arc, Mutex};

use crate::lang;
use crate::model::{Language, Task};
use crate::stage::{
    BoxFuture, Provider, ProviderError, Recognition, SpeechRequest, Transcript, TranslateRequest,
    Translation,
};
use crate::transcriber::Whisper;

/// The loaded model, shared by the providers.
pub type SharedWhisper = Arc<Mutex<Whisper>>;

async fn with_model<T: Send + 'static>(
    model: SharedWhisper,
    f: impl FnOnce(&mut Whisper) -> Result<T, ProviderError> + Send + 'static,
) -> Result<T, ProviderError> {
    tokio::task::spawn_blocking(move || {
        let mut m = model
            .lock()
            .map_err(|_| ProviderError::Failed("the model panicked earlier".into()))?;
        f(&mut m)
    })
    .await
    .map_err(|e| ProviderError::Failed(format!("the model panicked: {e}")))?
}

/// Speech recognition with the local model, in the language it was set up with (`--language`);
/// set up with `auto`, in the request's language when it has one (a broadcast's detected
/// language), else detected per utterance.
pub struct LocalWhisper {
    name: String,
    model: SharedWhisper,
}

impl LocalWhisper {
    pub fn new(name: &str, model: SharedWhisper) -> Self {
        Self {
            name: name.to_string(),
            model,
        }
    }
}

impl Provider<Recognition> for LocalWhisper {
    fn name(&self) -> &str {
        &self.name
    }

    fn call(&self, request: SpeechRequest) -> BoxFuture<Result<Transcript, ProviderError>> {
        let model = self.model.clone();
        Box::pin(with_model(model, move |w| {
            let pinned = match (&w.finals().language, &request.language) {
                (Language::Auto, Some(l)) => Some(l.clone()),
                _ => None,
            };
            // A stream's final utterances are heard after its previous ones (the audio context).
            let recognize = |w: &mut Whisper| match request.stream {
                Some(s) => w.recognize_stream(s, &request.samples, request.is_final),
                None => w.recognize(&request.samples, request.is_final),
            };
            let res = match pinned {
                Some(l) => {
                    let saved = w.finals().clone();
                    let mut fixed = saved.clone();
                    fixed.language = Language::fixed(&l);
                    w.set_finals(fixed);
                    let res = recognize(w);
                    w.set_finals(saved);
                    res
                }
                None => recognize(w),
            };
            let t = res.map_err(|e| ProviderError::Failed(e.to_string()))?;
            Ok(Transcript {
                text: t.text,
                avg_logprob: t.avg_logprob,
                no_speech_prob: t.no_speech_prob,
                language: Some(t.language),
            })
        }))
    }
}

/// English captions straight from the speech of another language: Whisper's translate task on
/// the utterance's audio (the request's text is not used).
pub struct WhisperTranslate {
    name: String,
    model: SharedWhisper,
}

impl WhisperTranslate {
    /// The reason when the model cannot serve `from` -> `to`.
    pub fn new(name: &str, model: SharedWhisper, from: &str, to: &str) -> Result<Self, String> {
        let multilingual = model
            .lock()
            .map_err(|_| "the model panicked earlier".to_string())?
            .model()
            .is_multilingual();
        if !multilingual {
            return Err(
                "the model is English-only; Whisper's translate task needs a multilingual model (--model base)"
                    .into(),
            );
        }
        if lang::primary(to) != "en" {
            return Err(format!(
                "Whisper translates speech into English only, not into {to}"
            ));
        }
        if lang::primary(from) == "en" {
            return Err("the speech is already English".into());
        }
        Ok(Self {
            name: name.to_string(),
            model,
        })
    }
}

impl Provider<Translation> for WhisperTranslate {
    fn name(&self) -> &str {
        &self.name
    }

    fn call(&self, request: TranslateRequest) -> BoxFuture<Result<String, ProviderError>> {
        let model = self.model.clone();
        Box::pin(async move {
            let Some(audio) = request.audio.clone() else {
                return Err(ProviderError::Unsupported(
                    "no audio with the caption: whisper-translate translates speech".into(),
                ));
            };
            with_model(model, move |w| {
                let saved = w.finals().clone();
                let mut translate = saved.clone();
                translate.task = Task::Translate;
                translate.language = Language::fixed(&request.from);
                w.set_finals(translate);
                let res = w.recognize(&audio, true);
                w.set_finals(saved);
                res.map(|t| t.text.trim().to_string())
                    .map_err(|e| ProviderError::Failed(e.to_string()))
            })
            .await
        })
    }
}
