//! OpenAI-compatible HTTP endpoints: chat completions (an LLM translates captions, any language
//! pair) and audio transcriptions (remote speech recognition). The same APIs are served by
//! OpenAI, by most hosted LLM services and by local servers (vLLM, llama.cpp, Ollama,
//! faster-whisper-server, LocalAI), so one provider reaches all of them.
//!
//! The HTTP client is `reqwest` with rustls (ring, as the rest of the workspace) and no default
//! features. Requests carry no timeout of their own: the chain abandons a call past its
//! timeout by dropping it, which closes the request.

use std::sync::Arc;

use serde::Deserialize;

use crate::lang;
use crate::stage::{
    BoxFuture, Provider, ProviderError, Recognition, SpeechRequest, Transcript, TranslateRequest,
    Translation,
};

/// Where an endpoint is and how to authenticate.
#[derive(Debug, Clone)]
pub struct Endpoint {
    /// The API base, for example `https://api.openai.com/v1` or `http://127.0.0.1:8000/v1`.
    pub base: String,
    pub model: String,
    /// Sent as `Authorization: Bearer ...` when set.
    pub api_key: Option<String>,
}

impl Endpoint {
    pub(crate) fn url(&self, path: &str) -> String {
        format!("{}/{path}", self.base.trim_end_matches('/'))
    }
}

/// An HTTP client for the providers (rustls with the ring provider, as the workspace uses).
pub fn http_client() -> Result<reqwest::Client, String> {
    // reqwest without default features takes the process's default rustls provider.
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder()
        .connect_timeout(std::time::Duration::from_secs(5))
        .build()
        .map_err(|e| format!("cannot build an HTTP client: {e}"))
}

pub(crate) async fn post(
    endpoint: &Endpoint,
    req: reqwest::RequestBuilder,
) -> Result<bytes::Bytes, ProviderError> {
    let req = match &endpoint.api_key {
        Some(k) => req.bearer_auth(k),
        None => req,
    };
    let resp = req
        .send()
        .await
        .map_err(|e| ProviderError::Failed(format!("request failed: {e}")))?;
    let status = resp.status();
    let body = resp
        .bytes()
        .await
        .map_err(|e| ProviderError::Failed(format!("reading the answer: {e}")))?;
    if !status.is_success() {
        let text = String::from_utf8_lossy(&body);
        let text: String = text.chars().take(200).collect();
        return Err(ProviderError::Failed(format!("HTTP {status}: {text}")));
    }
    Ok(body)
}

/// Translation by an LLM through `POST {base}/chat/completions`.
pub struct OpenAiChat {
    name: String,
    client: reqwest::Client,
    endpoint: Arc<Endpoint>,
}

impl OpenAiChat {
    pub fn new(name: &str, client: reqwest::Client, endpoint: Endpoint) -> Self {
        Self {
            name: name.to_string(),
            client,
            endpoint: Arc::new(endpoint),
        }
    }
}

/// The chat messages for one caption: an instruction, then the recent captions as context.
pub fn chat_messages(r: &TranslateRequest) -> serde_json::Value {
    let from = lang::english_name(&r.from);
    let to = lang::english_name(&r.to);
    let system = format!(
        "You translate the live captions of a broadcast from {from} to {to}. Reply with the \
         {to} translation of the caption you are given and nothing else: no notes, no quotes, \
         no earlier captions. A caption may continue a sentence an earlier caption began: \
         translate it so that the two read as one."
    );
    let user = if r.context.is_empty() {
        r.text.clone()
    } else {
        let mut u = String::from("Earlier captions and their translations, for context:\n");
        for (src, tr) in &r.context {
            u.push_str(&format!("{src} => {tr}\n"));
        }
        u.push_str("\nCaption to translate:\n");
        u.push_str(&r.text);
        u
    };
    serde_json::json!([
        { "role": "system", "content": system },
        { "role": "user", "content": user },
    ])
}

#[derive(Deserialize)]
struct ChatResponse {
    choices: Vec<Choice>,
}

#[derive(Deserialize)]
struct Choice {
    message: Message,
}

#[derive(Deserialize)]
struct Message {
    content: Option<String>,
}

impl Provider<Translation> for OpenAiChat {
    fn name(&self) -> &str {
        &self.name
    }

    fn call(&self, request: TranslateRequest) -> BoxFuture<Result<String, ProviderError>> {
        let client = self.client.clone();
        let endpoint = self.endpoint.clone();
        Box::pin(async move {
            let body = serde_json::json!({
                "model": endpoint.model,
                "temperature": 0,
                "messages": chat_messages(&request),
            });
            let req = client.post(endpoint.url("chat/completions")).json(&body);
            let bytes = post(&endpoint, req).await?;
            let resp: ChatResponse = serde_json::from_slice(&bytes)
                .map_err(|e| ProviderError::Failed(format!("unexpected answer: {e}")))?;
            let text = resp
                .choices
                .into_iter()
                .next()
                .and_then(|c| c.message.content)
                .ok_or_else(|| ProviderError::Failed("the answer has no choices".into()))?;
            let text = text.trim();
            let text = text
                .strip_prefix('"')
                .and_then(|t| t.strip_suffix('"'))
                .unwrap_or(text);
            Ok(text.trim().to_string())
        })
    }
}

/// Speech recognition through `POST {base}/audio/transcriptions` (multipart, a WAV file,
/// `response_format=verbose_json` for the language and per-segment confidences).
pub struct OpenAiTranscribe {
    name: String,
    client: reqwest::Client,
    endpoint: Arc<Endpoint>,
}

impl OpenAiTranscribe {
    pub fn new(name: &str, client: reqwest::Client, endpoint: Endpoint) -> Self {
        Self {
            name: name.to_string(),
            client,
            endpoint: Arc::new(endpoint),
        }
    }
}

/// 16 kHz mono samples as a 16-bit PCM WAV file.
pub fn wav_16k(samples: &[f32]) -> Vec<u8> {
    moqcast_media::wav::write_pcm16(samples, 16_000)
}

#[derive(Deserialize)]
struct TranscriptionResponse {
    text: String,
    #[serde(default)]
    language: Option<String>,
    #[serde(default)]
    segments: Vec<Segment>,
}

#[derive(Deserialize)]
struct Segment {
    #[serde(default)]
    avg_logprob: Option<f32>,
    #[serde(default)]
    no_speech_prob: Option<f32>,
}

fn mean(v: impl Iterator<Item = f32>) -> f32 {
    let (sum, n) = v.fold((0.0, 0usize), |(s, n), x| (s + x, n + 1));
    if n == 0 {
        0.0
    } else {
        sum / n as f32
    }
}

impl Provider<Recognition> for OpenAiTranscribe {
    fn name(&self) -> &str {
        &self.name
    }

    fn call(&self, request: SpeechRequest) -> BoxFuture<Result<Transcript, ProviderError>> {
        let client = self.client.clone();
        let endpoint = self.endpoint.clone();
        Box::pin(async move {
            let file = reqwest::multipart::Part::bytes(wav_16k(&request.samples))
                .file_name("audio.wav")
                .mime_str("audio/wav")
                .map_err(|e| ProviderError::Failed(e.to_string()))?;
            let mut form = reqwest::multipart::Form::new()
                .part("file", file)
                .text("model", endpoint.model.clone())
                .text("response_format", "verbose_json")
                .text("temperature", "0");
            if let Some(l) = &request.language {
                form = form.text("language", lang::primary(l));
            }
            let req = client
                .post(endpoint.url("audio/transcriptions"))
                .multipart(form);
            let bytes = post(&endpoint, req).await?;
            let resp: TranscriptionResponse = serde_json::from_slice(&bytes)
                .map_err(|e| ProviderError::Failed(format!("unexpected answer: {e}")))?;
            Ok(Transcript {
                text: resp.text.trim().to_string(),
                avg_logprob: mean(resp.segments.iter().filter_map(|s| s.avg_logprob)),
                no_speech_prob: mean(resp.segments.iter().filter_map(|s| s.no_speech_prob)),
                language: resp.language.map(|l| lang::from_name(&l)),
            })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wav_header_and_samples() {
        let w = wav_16k(&[0.0, 1.0, -1.0]);
        assert_eq!(&w[..4], b"RIFF");
        assert_eq!(w.len(), 44 + 6);
        assert_eq!(u32::from_le_bytes(w[40..44].try_into().unwrap()), 6);
        assert_eq!(i16::from_le_bytes([w[46], w[47]]), 32767);
        assert_eq!(i16::from_le_bytes([w[48], w[49]]), -32767);
    }

    #[test]
    fn chat_prompt_carries_the_context() {
        let r = TranslateRequest {
            text: "and it was warm.".into(),
            from: "en".into(),
            to: "es".into(),
            context: vec![("The day was sunny".into(), "El día era soleado".into())],
            audio: None,
        };
        let m = chat_messages(&r);
        let system = m[0]["content"].as_str().unwrap();
        assert!(system.contains("from English to Spanish"), "{system}");
        let user = m[1]["content"].as_str().unwrap();
        assert!(user.contains("The day was sunny => El día era soleado"));
        assert!(user.ends_with("Caption to translate:\nand it was warm."));
    }
}
