//! Marian/opus-mt models through candle ([`crate::marian::MarianTranslator`]), from a local
//! directory an operator brings: any language pair there are weights for.
//!
//! A provider is one model directory. Its pairs are the configuration's `pairs`, else read from
//! the directory's name (`opus-mt-en-es`). A multi-target model (`opus-mt-en-ROMANCE`) serves
//! each target it has a `>>xx<<` token for, which is put before the text.

use std::path::Path;
use std::sync::Arc;

use crate::lang;
use crate::marian::MarianTranslator;
use crate::stage::{BoxFuture, Provider, ProviderError, TranslateRequest, Translation};

/// One loaded model, shared by the chains of its pairs.
pub type SharedMarian = Arc<MarianTranslator>;

/// Loads a model directory.
pub fn load(dir: &Path, device: &candle_core::Device) -> Result<SharedMarian, String> {
    MarianTranslator::load(dir, device)
        .map(Arc::new)
        .map_err(|e| e.to_string())
}

/// The pairs a model serves: `pairs` when configured, else from an `opus-mt-FROM-TO` name.
pub fn pairs(dir: &Path, configured: Option<&[String]>) -> Result<Vec<(String, String)>, String> {
    let parse = |p: &str| {
        p.split_once('-')
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .ok_or_else(|| format!("pair {p:?}: expected FROM-TO, for example en-es"))
    };
    match configured {
        Some(list) => list.iter().map(|p| parse(p)).collect(),
        None => {
            let name = dir.file_name().and_then(|n| n.to_str()).unwrap_or_default();
            let rest = name.strip_prefix("opus-mt-").ok_or_else(|| {
                format!(
                    "set pairs = [\"en-es\", ...] for the Marian model in {} (its name is not opus-mt-FROM-TO)",
                    dir.display()
                )
            })?;
            Ok(vec![parse(rest)?])
        }
    }
}

/// See the module documentation.
pub struct Marian {
    name: String,
    model: SharedMarian,
    /// `>>xx<< ` for a multi-target model.
    prefix: String,
}

impl Marian {
    /// The provider for `from` -> `to`, or why `model` (serving `pairs`) cannot.
    pub fn new(
        name: &str,
        model: SharedMarian,
        pairs: &[(String, String)],
        from: &str,
        to: &str,
    ) -> Result<Self, String> {
        let token = format!(">>{}<<", lang::primary(to));
        let multi = !model.language_tokens().is_empty();
        let serves = pairs.iter().any(|(f, t)| {
            lang::primary(f) == lang::primary(from)
                && (lang::primary(t) == lang::primary(to)
                    || (multi && t.chars().any(|c| c.is_ascii_uppercase())))
        });
        if !serves {
            let list: Vec<String> = pairs.iter().map(|(f, t)| format!("{f}-{t}")).collect();
            return Err(format!(
                "the Marian model in {} serves {}, not {from}->{to}",
                model.dir().display(),
                list.join(", ")
            ));
        }
        let prefix = if multi {
            if !model.language_tokens().contains(&token) {
                return Err(format!(
                    "the Marian model in {} has no {token} target token",
                    model.dir().display()
                ));
            }
            format!("{token} ")
        } else {
            String::new()
        };
        Ok(Self {
            name: name.to_string(),
            model,
            prefix,
        })
    }
}

impl Provider<Translation> for Marian {
    fn name(&self) -> &str {
        &self.name
    }

    fn call(&self, request: TranslateRequest) -> BoxFuture<Result<String, ProviderError>> {
        let model = self.model.clone();
        let text = format!("{}{}", self.prefix, request.text);
        Box::pin(async move {
            tokio::task::spawn_blocking(move || model.translate(&text))
                .await
                .map_err(|e| ProviderError::Failed(format!("translation panicked: {e}")))?
                .map_err(|e| ProviderError::Failed(e.to_string()))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pairs_come_from_the_config_or_the_directory_name() {
        let p = pairs(Path::new("/m/opus-mt-en-es"), None).unwrap();
        assert_eq!(p, vec![("en".to_string(), "es".to_string())]);
        let p = pairs(Path::new("/m/any"), Some(&["en-fr".to_string()])).unwrap();
        assert_eq!(p, vec![("en".to_string(), "fr".to_string())]);
        let e = pairs(Path::new("/m/model"), None).unwrap_err();
        assert!(e.contains("set pairs"), "{e}");
    }
}
