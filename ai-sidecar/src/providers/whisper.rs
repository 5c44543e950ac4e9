//! The local Whisper model as a recognition provider.
//!
//! The model is synchronous CPU (or GPU) work: each call runs on tokio's blocking pool, one at
//! a time. A call the chain abandons (past its timeout) still runs to its end and holds the
//! model until then; the next call waits for it.

use std::sync::{Arc, Mutex};

use crate::recognize::Transcriber;
use crate::stage::{BoxFuture, Provider, ProviderError, Recognition, SpeechRequest, Transcript};

/// See the module documentation.
pub struct LocalWhisper {
    name: String,
    model: Arc<Mutex<Box<dyn Transcriber>>>,
}

impl LocalWhisper {
    pub fn new(name: &str, model: impl Transcriber) -> Self {
        Self {
            name: name.to_string(),
            model: Arc::new(Mutex::new(Box::new(model))),
        }
    }
}

impl Provider<Recognition> for LocalWhisper {
    fn name(&self) -> &str {
        &self.name
    }

    fn call(&self, request: SpeechRequest) -> BoxFuture<Result<Transcript, ProviderError>> {
        let model = self.model.clone();
        Box::pin(async move {
            let res = tokio::task::spawn_blocking(move || {
                let mut m = model
                    .lock()
                    .map_err(|_| ProviderError::Failed("the model panicked earlier".into()))?;
                m.transcribe(&request.samples, request.is_final)
                    .map_err(ProviderError::Failed)
            })
            .await
            .map_err(|e| ProviderError::Failed(format!("recognition panicked: {e}")))??;
            Ok(Transcript {
                text: res.text,
                avg_logprob: res.avg_logprob,
                no_speech_prob: res.no_speech_prob,
                language: None,
            })
        })
    }
}
