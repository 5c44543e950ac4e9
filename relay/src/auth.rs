//! Who may publish and watch what: signed tokens (JWT) whose claims scope a session to broadcast
//! prefixes, and the prefixes open to anonymous sessions.
//!
//! Tokens are moq-dev's (`moq-token`): claims `root`, `put`, `get`, `exp`, `iat`, keys as JWKs
//! (HMAC, RSA, ECDSA, EdDSA), so a token minted for moq-dev's relay works here and ours there.
//! A session's token arrives as `?jwt=` on the WebTransport URL or as the AUTHORIZATION TOKEN
//! setup option on raw QUIC; its claims are scoped to the connection's path (the URL path, or
//! the PATH setup option) with [`moq_token::Claims::authorize`], and the relay checks every
//! PUBLISH_NAMESPACE, PUBLISH, SUBSCRIBE, SUBSCRIBE_NAMESPACE, FETCH and TRACK_STATUS against the
//! resulting [`Grant`]. Broadcast names stay absolute: a grant of `room` under the path `demo`
//! covers the broadcast `demo/room` and everything below it.
//!
//! With no key configured everything is open (development). With keys, only the configured
//! public prefixes are open to sessions without a token. The key file or directory is read
//! again when it changes (checked at most once a second), so keys rotate without a restart.

use std::{
    path::{Path, PathBuf},
    sync::Mutex,
    time::{Duration, Instant, SystemTime},
};

use moq_token::{Key, KeySet};

/// How often the key file or directory is checked for changes, at most.
const KEY_RECHECK: Duration = Duration::from_secs(1);

/// Auth settings of the relay (`--auth-key`, `--auth-public*`).
#[derive(Debug, Clone, Default)]
pub struct AuthConfig {
    /// A JWK file, a JWK Set file, or a directory of them (`*.jwk`, `*.json`).
    pub key: Option<PathBuf>,
    /// Prefixes anonymous sessions may publish and subscribe under.
    pub public: Vec<String>,
    /// Prefixes anonymous sessions may subscribe under.
    pub public_subscribe: Vec<String>,
    /// Prefixes anonymous sessions may publish under.
    pub public_publish: Vec<String>,
}

/// Why a session or a request is refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum AuthError {
    #[error("a token is required (none given and nothing here is public)")]
    Missing,
    #[error("the token has expired")]
    Expired,
    #[error("malformed token: {0}")]
    Malformed(String),
    #[error("token refused: {0}")]
    Invalid(String),
    #[error("the token grants nothing under the path {0:?}")]
    NoAccess(String),
}

impl AuthError {
    /// The draft-18 session close code (§3.6) for a session refused with this error.
    pub fn session_code(&self) -> u64 {
        match self {
            AuthError::Expired => 0x18,      // EXPIRED_AUTH_TOKEN
            AuthError::Malformed(_) => 0x16, // MALFORMED_AUTH_TOKEN
            _ => 0x2,                        // UNAUTHORIZED
        }
    }

    /// The HTTP status a WebTransport CONNECT is refused with.
    pub fn http_status(&self) -> u16 {
        match self {
            AuthError::Missing | AuthError::Expired | AuthError::Malformed(_) => 401,
            AuthError::Invalid(_) | AuthError::NoAccess(_) => 403,
        }
    }
}

/// What one session may do: absolute broadcast prefixes ("" is everything), and until when.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Grant {
    pub publish: Vec<String>,
    pub subscribe: Vec<String>,
    /// The token's `exp`: the session is closed then.
    pub expires: Option<SystemTime>,
    /// Whether the grant came from a verified token.
    pub token: bool,
}

impl Grant {
    /// Everything, for ever (auth off).
    pub fn everything() -> Self {
        Self {
            publish: vec![String::new()],
            subscribe: vec![String::new()],
            expires: None,
            token: false,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.publish.is_empty() && self.subscribe.is_empty()
    }

    /// May publish (announce, PUBLISH) the broadcast `name` or under it.
    pub fn may_publish(&self, name: &str) -> bool {
        covered(&self.publish, name)
    }

    /// May subscribe to (or fetch, or ask the status of) tracks of the broadcast `name`.
    pub fn may_subscribe(&self, name: &str) -> bool {
        covered(&self.subscribe, name)
    }

    fn add(&mut self, other: &Grant) {
        for p in &other.publish {
            if !self.publish.contains(p) {
                self.publish.push(p.clone());
            }
        }
        for s in &other.subscribe {
            if !self.subscribe.contains(s) {
                self.subscribe.push(s.clone());
            }
        }
    }
}

/// `a/b/` -> `a/b`; leading and trailing slashes are implicit.
pub fn normalize(path: &str) -> &str {
    path.trim_matches('/')
}

/// Whether `path` is `prefix` or below it, segment by segment (`live` covers `live/a`, not
/// `lively`); the empty prefix covers everything.
pub fn has_prefix(path: &str, prefix: &str) -> bool {
    let (path, prefix) = (normalize(path), normalize(prefix));
    prefix.is_empty()
        || path == prefix
        || (path.starts_with(prefix) && path.as_bytes().get(prefix.len()) == Some(&b'/'))
}

fn covered(prefixes: &[String], name: &str) -> bool {
    prefixes.iter().any(|p| has_prefix(name, p))
}

fn join(base: &str, rest: &str) -> String {
    match (normalize(base), normalize(rest)) {
        ("", r) => r.to_string(),
        (b, "") => b.to_string(),
        (b, r) => format!("{b}/{r}"),
    }
}

/// The relay's auth: keys (if any) and the anonymous grant.
pub struct Auth {
    keys: Option<KeyStore>,
    anonymous: Grant,
}

impl std::fmt::Debug for Auth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Auth")
            .field("keys", &self.keys.as_ref().map(|k| &k.path))
            .field("anonymous", &self.anonymous)
            .finish()
    }
}

impl Auth {
    /// Auth off: every session may do everything.
    pub fn open() -> Self {
        Self {
            keys: None,
            anonymous: Grant::everything(),
        }
    }

    /// Reads the keys now (an unreadable key or an empty directory is an error at start).
    pub fn new(config: &AuthConfig) -> Result<Self, String> {
        let Some(path) = &config.key else {
            return Ok(Self::open());
        };
        let keys = KeyStore::open(path)?;
        let mut anonymous = Grant::default();
        for p in config.public.iter().chain(&config.public_publish) {
            anonymous.publish.push(normalize(p).to_string());
        }
        for p in config.public.iter().chain(&config.public_subscribe) {
            anonymous.subscribe.push(normalize(p).to_string());
        }
        Ok(Self {
            keys: Some(keys),
            anonymous,
        })
    }

    pub fn enabled(&self) -> bool {
        self.keys.is_some()
    }

    /// What a session at `path` with `token` (if it gave one) may do. A token that is given
    /// must verify, even where anonymous sessions have rights; its grant adds to theirs.
    pub fn session(&self, path: &str, token: Option<&str>) -> Result<Grant, AuthError> {
        let Some(keys) = &self.keys else {
            return Ok(Grant::everything());
        };
        let mut grant = self.anonymous.clone();
        match token {
            None | Some("") if grant.is_empty() => Err(AuthError::Missing),
            None | Some("") => Ok(grant),
            Some(token) => {
                let claims = keys.verify(token)?;
                let path = normalize(path);
                let permissions = claims.authorize(path).map_err(|e| match e {
                    moq_token::Error::RootMismatch(_) | moq_token::Error::NoAccess(_) => {
                        AuthError::NoAccess(path.to_string())
                    }
                    other => AuthError::Invalid(other.to_string()),
                })?;
                grant.add(&Grant {
                    publish: permissions.publish.iter().map(|p| join(path, p)).collect(),
                    subscribe: permissions
                        .subscribe
                        .iter()
                        .map(|p| join(path, p))
                        .collect(),
                    expires: None,
                    token: true,
                });
                grant.expires = claims.expires;
                grant.token = true;
                Ok(grant)
            }
        }
    }
}

/// The verification keys, read again when their file or directory changes.
struct KeyStore {
    path: PathBuf,
    loaded: Mutex<Loaded>,
}

struct Loaded {
    checked: Instant,
    stamp: Vec<(PathBuf, Option<SystemTime>, u64)>,
    set: KeySet,
}

impl KeyStore {
    fn open(path: &Path) -> Result<Self, String> {
        let stamp = stamp(path).map_err(|e| format!("auth key {}: {e}", path.display()))?;
        let set = load(path, &stamp)?;
        tracing::info!(path = %path.display(), keys = set.keys.len(), "auth keys loaded");
        Ok(Self {
            path: path.to_path_buf(),
            loaded: Mutex::new(Loaded {
                checked: Instant::now(),
                stamp,
                set,
            }),
        })
    }

    /// The current keys: re-read when a file was added, removed or changed. A key that fails
    /// to load keeps the previous set (and says why).
    fn current(&self) -> KeySet {
        let mut loaded = self.loaded.lock().expect("poisoned");
        if loaded.checked.elapsed() >= KEY_RECHECK {
            loaded.checked = Instant::now();
            match stamp(&self.path) {
                Ok(now) if now != loaded.stamp => match load(&self.path, &now) {
                    Ok(set) => {
                        tracing::info!(path = %self.path.display(), keys = set.keys.len(), "auth keys reloaded");
                        loaded.set = set;
                        loaded.stamp = now;
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "auth keys changed but did not load: keeping the previous keys");
                        loaded.stamp = now;
                    }
                },
                Ok(_) => {}
                Err(e) => {
                    tracing::warn!(path = %self.path.display(), error = %e, "auth keys unreadable: keeping the previous keys")
                }
            }
        }
        loaded.set.clone()
    }

    fn verify(&self, token: &str) -> Result<moq_token::Claims, AuthError> {
        let set = self.current();
        let header = jsonwebtoken_header(token)?;
        // With a `kid`, its key; without, the one key there is, or any key that verifies.
        let candidates: Vec<_> = match &header {
            Some(kid) => set
                .keys
                .iter()
                .filter(|k| k.kid.as_ref().is_some_and(|id| id.to_string() == *kid))
                .cloned()
                .collect(),
            None => set.keys.clone(),
        };
        if candidates.is_empty() {
            return Err(AuthError::Invalid(format!(
                "no key with the token's kid {:?}",
                header.unwrap_or_default()
            )));
        }
        let mut last = None;
        for key in candidates {
            match key.verify(token) {
                Ok(claims) => return Ok(claims),
                Err(moq_token::Error::TokenExpired) => return Err(AuthError::Expired),
                Err(e) => last = Some(e),
            }
        }
        Err(AuthError::Invalid(
            last.map(|e| e.to_string()).unwrap_or_default(),
        ))
    }
}

/// The `kid` of a JWT's header, if it has one; a token that is not three base64url parts with a
/// JSON header is malformed.
fn jsonwebtoken_header(token: &str) -> Result<Option<String>, AuthError> {
    use base64::Engine;
    let mut parts = token.split('.');
    let (Some(header), Some(_), Some(_), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(AuthError::Malformed(
            "not a JWT (three dot-separated parts)".into(),
        ));
    };
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(header.trim_end_matches('='))
        .map_err(|_| AuthError::Malformed("header is not base64url".into()))?;
    let json: serde_json::Value = serde_json::from_slice(&bytes)
        .map_err(|_| AuthError::Malformed("header is not JSON".into()))?;
    Ok(json.get("kid").and_then(|k| k.as_str()).map(str::to_string))
}

/// The key files of `path` (a file, or the `*.jwk`/`*.json` files of a directory) with their
/// modification times and sizes, sorted: when it changes, the keys are read again.
fn stamp(path: &Path) -> std::io::Result<Vec<(PathBuf, Option<SystemTime>, u64)>> {
    let files = if path.is_dir() {
        let mut files = Vec::new();
        for entry in std::fs::read_dir(path)? {
            let p = entry?.path();
            let ext = p.extension().and_then(|e| e.to_str()).unwrap_or("");
            if p.is_file() && (ext == "jwk" || ext == "json") {
                files.push(p);
            }
        }
        files.sort();
        files
    } else {
        vec![path.to_path_buf()]
    };
    files
        .into_iter()
        .map(|p| {
            let meta = std::fs::metadata(&p)?;
            Ok((p, meta.modified().ok(), meta.len()))
        })
        .collect()
}

/// Reads every key file: a JWK, or a JWK Set (`{"keys": [...]}`).
fn load(path: &Path, files: &[(PathBuf, Option<SystemTime>, u64)]) -> Result<KeySet, String> {
    let mut set = KeySet::default();
    for (file, _, _) in files {
        let text = std::fs::read_to_string(file)
            .map_err(|e| format!("auth key {}: {e}", file.display()))?;
        let is_set = serde_json::from_str::<serde_json::Value>(&text)
            .map(|v| v.get("keys").is_some())
            .unwrap_or(false);
        if is_set {
            let more = KeySet::from_str(&text)
                .map_err(|e| format!("auth key set {}: {e}", file.display()))?;
            set.keys.extend(more.keys);
        } else {
            let key =
                Key::from_str(&text).map_err(|e| format!("auth key {}: {e}", file.display()))?;
            set.keys.push(std::sync::Arc::new(key));
        }
    }
    if set.keys.is_empty() {
        return Err(format!(
            "auth key {}: no keys (a JWK file, a JWK Set, or a directory of *.jwk files)",
            path.display()
        ));
    }
    Ok(set)
}

#[cfg(test)]
mod tests {
    use super::*;
    use moq_token::{Algorithm, Claims};

    fn key_dir(tag: &str) -> (PathBuf, Key) {
        let dir = std::env::temp_dir().join(format!("moqcast-auth-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let key = Key::generate(
            Algorithm::HS256,
            Some(moq_token::KeyId::decode("one").unwrap()),
        )
        .unwrap();
        key.to_file(dir.join("one.jwk")).unwrap();
        (dir, key)
    }

    fn config(dir: &Path) -> AuthConfig {
        AuthConfig {
            key: Some(dir.to_path_buf()),
            ..Default::default()
        }
    }

    #[test]
    fn prefixes_match_by_segment() {
        assert!(has_prefix("live/a", "live"));
        assert!(has_prefix("live", "live/"));
        assert!(has_prefix("anything", ""));
        assert!(!has_prefix("lively", "live"));
        assert!(!has_prefix("live", "live/a"));
    }

    #[test]
    fn without_keys_everything_is_open() {
        let auth = Auth::new(&AuthConfig::default()).unwrap();
        let g = auth.session("", None).unwrap();
        assert!(g.may_publish("x/y") && g.may_subscribe("z"));
    }

    #[test]
    fn a_token_scopes_the_session_to_its_prefixes() {
        let (dir, key) = key_dir("scope");
        let auth = Auth::new(&config(&dir)).unwrap();
        assert_eq!(auth.session("", None), Err(AuthError::Missing));
        let token = key
            .sign(
                &Claims::default()
                    .with_root("live")
                    .with_publish(["alice"])
                    .with_subscribe([""]),
            )
            .unwrap();
        let g = auth.session("/", Some(&token)).unwrap();
        assert!(g.may_publish("live/alice") && g.may_publish("live/alice/ai"));
        assert!(!g.may_publish("live/bob") && !g.may_publish("live/alicex"));
        assert!(g.may_subscribe("live/bob") && !g.may_subscribe("other"));
        // At the token's root the same grants hold (names stay absolute).
        let g = auth.session("/live", Some(&token)).unwrap();
        assert!(g.may_publish("live/alice") && !g.may_publish("alice"));
        // A path outside the root grants nothing.
        assert!(matches!(
            auth.session("/other", Some(&token)),
            Err(AuthError::NoAccess(_))
        ));
    }

    #[test]
    fn expired_forged_and_malformed_tokens_are_refused() {
        let (dir, key) = key_dir("refuse");
        let auth = Auth::new(&config(&dir)).unwrap();
        let expired = key
            .sign(
                &Claims::default()
                    .with_subscribe([""])
                    .with_expires(SystemTime::now() - Duration::from_secs(5)),
            )
            .unwrap();
        assert_eq!(auth.session("", Some(&expired)), Err(AuthError::Expired));
        let other = Key::generate(
            Algorithm::HS256,
            Some(moq_token::KeyId::decode("one").unwrap()),
        )
        .unwrap();
        let forged = other.sign(&Claims::default().with_subscribe([""])).unwrap();
        assert!(matches!(
            auth.session("", Some(&forged)),
            Err(AuthError::Invalid(_))
        ));
        assert!(matches!(
            auth.session("", Some("abc")),
            Err(AuthError::Malformed(_))
        ));
        assert_eq!(AuthError::Expired.session_code(), 0x18);
    }

    #[test]
    fn public_prefixes_are_open_to_anonymous_sessions() {
        let (dir, _) = key_dir("public");
        let auth = Auth::new(&AuthConfig {
            public: vec!["anon".into()],
            public_subscribe: vec!["live".into()],
            ..config(&dir)
        })
        .unwrap();
        let g = auth.session("", None).unwrap();
        assert!(g.may_publish("anon/x") && g.may_subscribe("anon/x"));
        assert!(g.may_subscribe("live/a") && !g.may_publish("live/a"));
        assert!(!g.may_subscribe("private"));
    }

    #[test]
    fn keys_rotate_without_a_restart() {
        let (dir, old) = key_dir("rotate");
        let store = KeyStore::open(&dir).unwrap();
        let claims = Claims::default().with_subscribe([""]);
        assert!(store.verify(&old.sign(&claims).unwrap()).is_ok());
        let new = Key::generate(
            Algorithm::ES256,
            Some(moq_token::KeyId::decode("two").unwrap()),
        )
        .unwrap();
        new.to_public()
            .unwrap()
            .to_file(dir.join("two.jwk"))
            .unwrap();
        std::fs::remove_file(dir.join("one.jwk")).unwrap();
        store.loaded.lock().unwrap().checked -= KEY_RECHECK;
        assert!(store.verify(&new.sign(&claims).unwrap()).is_ok());
        assert!(store.verify(&old.sign(&claims).unwrap()).is_err());
    }
}
