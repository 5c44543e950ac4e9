//! Who may publish what over RTMP or SRT: a stream key (RTMP's `rtmp://HOST/live/KEY`, SRT's
//! `streamid`, read by [`crate::srt::stream_key`]) becomes a broadcast name, or the connection is
//! refused with a reason.
//!
//! In order:
//!
//! 1. A key listed in the key file (`--rtmp-keys`, TOML: `"KEY" = "BROADCAST"`) publishes its
//!    broadcast. The file is read again when it changes, so keys are added and revoked without
//!    a restart.
//! 2. With `--auth-key`, a relay token (JWT) as the stream key publishes the broadcast its
//!    `put` claim names: `TOKEN` alone when the token grants exactly one broadcast, or
//!    `BROADCAST?jwt=TOKEN` to pick one the token covers.
//! 3. With neither configured (development), the key is the broadcast name:
//!    `rtmp://host:1935/live/demo` and `srt://host:9000?streamid=demo` publish `demo`.
//!
//! With `--auth-key`, a plain name under an `--auth-public` or `--auth-public-publish` prefix is
//! accepted as in 3. Anything else is refused: an unknown key once keys or tokens are configured, a token that
//! does not verify or does not cover the broadcast, a name that is not a broadcast path.

use std::{
    collections::HashMap,
    path::{Path, PathBuf},
    sync::Mutex,
    time::SystemTime,
};

use crate::auth::{normalize, Auth, AuthError};

/// Why a stream key is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum KeyError {
    #[error("empty stream key")]
    Empty,
    #[error("unknown stream key")]
    Unknown,
    #[error("the stream key's token is refused: {0}")]
    Token(String),
    #[error("the token may not publish {0:?}")]
    NotCovered(String),
    #[error("the token grants {0}: use BROADCAST?jwt=TOKEN as the stream key")]
    Ambiguous(&'static str),
    #[error("{0:?} is not a broadcast name (letters, digits, '-', '_', '.', '/' only)")]
    BadName(String),
    #[error("the key file {path} is unusable: {reason}")]
    File { path: String, reason: String },
}

impl KeyError {
    /// A short label for the refusal metric.
    pub fn reason(&self) -> &'static str {
        match self {
            KeyError::Empty | KeyError::Unknown => "unknown_key",
            KeyError::Token(_) | KeyError::NotCovered(_) | KeyError::Ambiguous(_) => "token",
            KeyError::BadName(_) => "bad_name",
            KeyError::File { .. } => "key_file",
        }
    }
}

/// The most bytes of a broadcast name from a stream key.
const MAX_NAME: usize = 256;

/// A broadcast name as the relay's paths want it: segments of `[A-Za-z0-9._-]` joined by `/`.
pub fn check_name(name: &str) -> Result<String, KeyError> {
    let n = normalize(name);
    let ok = !n.is_empty()
        && n.len() <= MAX_NAME
        && n.split('/').all(|seg| {
            !seg.is_empty()
                && seg != "."
                && seg != ".."
                && seg
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
        });
    if ok {
        Ok(n.to_string())
    } else {
        Err(KeyError::BadName(name.chars().take(64).collect()))
    }
}

/// A key file's modification time and size when it was read, and its keys.
type Loaded = (Option<(SystemTime, u64)>, HashMap<String, String>);

/// The stream key file, read again when its modification time or size changes.
#[derive(Debug)]
pub struct KeyFile {
    path: PathBuf,
    loaded: Mutex<Loaded>,
}

impl KeyFile {
    /// Reads the file now: an unreadable or invalid file is an error at start.
    pub fn open(path: &Path) -> Result<Self, KeyError> {
        let file = Self {
            path: path.to_path_buf(),
            loaded: Mutex::new((None, HashMap::new())),
        };
        file.current()?;
        Ok(file)
    }

    fn error(&self, reason: impl ToString) -> KeyError {
        KeyError::File {
            path: self.path.display().to_string(),
            reason: reason.to_string(),
        }
    }

    /// The key map, re-read if the file changed.
    fn current(&self) -> Result<HashMap<String, String>, KeyError> {
        let meta = std::fs::metadata(&self.path).map_err(|e| self.error(e))?;
        let stamp = (
            meta.modified().unwrap_or(SystemTime::UNIX_EPOCH),
            meta.len(),
        );
        let mut loaded = self.loaded.lock().expect("poisoned");
        if loaded.0 != Some(stamp) {
            let text = std::fs::read_to_string(&self.path).map_err(|e| self.error(e))?;
            let map = parse_key_file(&text).map_err(|e| self.error(e))?;
            *loaded = (Some(stamp), map);
        }
        Ok(loaded.1.clone())
    }
}

/// Parses a key file: a TOML table of `"KEY" = "BROADCAST"`.
pub fn parse_key_file(text: &str) -> Result<HashMap<String, String>, String> {
    let table: HashMap<String, String> = toml::from_str(text).map_err(|e| e.to_string())?;
    let mut map = HashMap::with_capacity(table.len());
    for (key, name) in table {
        if key.is_empty() {
            return Err("an empty key".into());
        }
        let name = check_name(&name).map_err(|e| format!("key {:.4}...: {e}", key))?;
        map.insert(key, name);
    }
    Ok(map)
}

/// Turns stream keys into broadcast names; see the [module documentation](self).
#[derive(Debug)]
pub struct Keys {
    file: Option<KeyFile>,
}

impl Keys {
    pub fn new(file: Option<KeyFile>) -> Self {
        Self { file }
    }

    /// Whether a key file (`--rtmp-keys`) is configured.
    pub fn has_file(&self) -> bool {
        self.file.is_some()
    }

    /// The broadcast `key` may publish, or why not. `auth` is the relay's token auth.
    pub fn resolve(&self, key: &str, auth: &Auth) -> Result<String, KeyError> {
        if key.is_empty() {
            return Err(KeyError::Empty);
        }
        if let Some(file) = &self.file {
            if let Some(name) = file.current()?.get(key) {
                return Ok(name.clone());
            }
        }
        if auth.enabled() {
            return resolve_token(key, auth);
        }
        if self.file.is_some() {
            return Err(KeyError::Unknown);
        }
        check_name(key)
    }
}

/// A token as the stream key: `TOKEN` or `BROADCAST?jwt=TOKEN`.
fn resolve_token(key: &str, auth: &Auth) -> Result<String, KeyError> {
    let (name, token) = match key.split_once("?jwt=") {
        Some((name, token)) => (Some(check_name(name)?), token),
        None => (None, key),
    };
    // A key that is no JWT (three base64url parts) is a name, which anonymous publishers may
    // use under the `--auth-public*` prefixes, or else an unknown key (not a bad token).
    if name.is_none() && token.split('.').count() != 3 {
        let name = check_name(key).map_err(|_| KeyError::Unknown)?;
        return match auth.session("", None) {
            Ok(grant) if grant.may_publish(&name) => Ok(name),
            _ => Err(KeyError::Unknown),
        };
    }
    let grant = auth.session("", Some(token)).map_err(|e| match e {
        AuthError::Missing => KeyError::Unknown,
        e => KeyError::Token(e.to_string()),
    })?;
    // What the token adds to the anonymous grant names the broadcast.
    let anonymous = auth.session("", None).unwrap_or_default();
    let granted: Vec<&String> = grant
        .publish
        .iter()
        .filter(|p| !anonymous.publish.contains(p))
        .collect();
    match name {
        Some(name) if grant.may_publish(&name) => Ok(name),
        Some(name) => Err(KeyError::NotCovered(name)),
        None => match granted.as_slice() {
            [] => Err(KeyError::NotCovered(String::new())),
            [one] if !one.is_empty() => check_name(one),
            [_] => Err(KeyError::Ambiguous("every broadcast name")),
            _ => Err(KeyError::Ambiguous("several broadcast names")),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn without_keys_or_tokens_the_key_is_the_broadcast_name() {
        let keys = Keys::new(None);
        let open = Auth::open();
        assert_eq!(keys.resolve("demo", &open), Ok("demo".into()));
        assert_eq!(keys.resolve("/live/a/", &open), Ok("live/a".into()));
        assert_eq!(keys.resolve("", &open), Err(KeyError::Empty));
        for bad in ["a b", "../x", "a//b", "ünï", "a?b"] {
            assert!(
                matches!(keys.resolve(bad, &open), Err(KeyError::BadName(_))),
                "{bad}"
            );
        }
    }

    #[test]
    fn the_key_file_maps_keys_and_refuses_others_and_is_reread() {
        let dir = std::env::temp_dir().join(format!("moqcast-rtmp-keys-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("keys.toml");
        std::fs::write(&path, "\"s3cret\" = \"studio/a\"\n").unwrap();
        let keys = Keys::new(Some(KeyFile::open(&path).unwrap()));
        let open = Auth::open();
        assert_eq!(keys.resolve("s3cret", &open), Ok("studio/a".into()));
        assert_eq!(keys.resolve("demo", &open), Err(KeyError::Unknown));
        // A new key (a different size, so the change is seen within one mtime tick).
        std::fs::write(&path, "\"s3cret\" = \"studio/a\"\n\"other-key\" = \"b\"\n").unwrap();
        assert_eq!(keys.resolve("other-key", &open), Ok("b".into()));
        assert!(parse_key_file("\"k\" = \"bad name\"").is_err());
        assert!(parse_key_file("k = 3").is_err());
        assert!(KeyFile::open(&dir.join("missing.toml")).is_err());
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_token_as_the_key_publishes_the_broadcast_it_grants() {
        use moq_token::{Algorithm, Claims, Key};
        let dir = std::env::temp_dir().join(format!("moqcast-rtmp-jwt-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let key = Key::generate(
            Algorithm::HS256,
            Some(moq_token::KeyId::decode("k").unwrap()),
        )
        .unwrap();
        key.to_file(dir.join("k.jwk")).unwrap();
        let auth = Auth::new(&crate::auth::AuthConfig {
            key: Some(dir.clone()),
            public_publish: vec!["anon".into()],
            ..Default::default()
        })
        .unwrap();
        let keys = Keys::new(None);
        let one = key
            .sign(&Claims::default().with_root("live").with_publish(["alice"]))
            .unwrap();
        assert_eq!(keys.resolve(&one, &auth), Ok("live/alice".into()));
        assert_eq!(
            keys.resolve(&format!("live/alice/cam2?jwt={one}"), &auth),
            Ok("live/alice/cam2".into())
        );
        assert!(matches!(
            keys.resolve(&format!("live/bob?jwt={one}"), &auth),
            Err(KeyError::NotCovered(_))
        ));
        let any = key.sign(&Claims::default().with_publish([""])).unwrap();
        assert!(matches!(
            keys.resolve(&any, &auth),
            Err(KeyError::Ambiguous(_))
        ));
        // A token signed by another key, and plain names outside the public prefixes.
        let other = Key::generate(
            Algorithm::HS256,
            Some(moq_token::KeyId::decode("k").unwrap()),
        )
        .unwrap()
        .sign(&Claims::default().with_publish(["alice"]))
        .unwrap();
        assert!(matches!(
            keys.resolve(&other, &auth),
            Err(KeyError::Token(_))
        ));
        assert_eq!(keys.resolve("demo", &auth), Err(KeyError::Unknown));
        assert_eq!(keys.resolve("anon/x", &auth), Ok("anon/x".into()));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
