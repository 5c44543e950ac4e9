//! `moqcast-token`: makes keys, mints tokens and inspects them, for relays run with `--auth-key`.
//!
//! Keys and tokens are moq-dev's (`moq-token`): JWK keys, JWT claims `root`, `put`, `get`,
//! `exp`, `iat`.
//!
//! ```text
//! moqcast-token generate --key root.jwk                       # HMAC secret (HS256)
//! moqcast-token generate --key private.jwk --algorithm ES256 --public public.jwk
//! moqcast-token sign --key root.jwk --root live --publish alice --subscribe "" --expires 1h
//! moqcast-token verify --key keys/ --path / < token.jwt        # checks it as the relay would
//! moqcast-token inspect < token.jwt                           # header and claims, unverified
//! ```

use std::{
    io::Read,
    path::PathBuf,
    time::{Duration, SystemTime},
};

use anyhow::{bail, Context};
use base64::Engine;
use clap::{Parser, Subcommand};
use moq_token::{Algorithm, Claims, Key, KeyId};
use moqcast_relay::auth::{Auth, AuthConfig};

#[derive(Debug, Parser)]
#[command(
    name = "moqcast-token",
    version,
    about = "Make keys, mint and inspect tokens for moqcast-relay --auth-key (moq-dev's JWT format)"
)]
struct Args {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Writes a new key (a JWK). HS* keys are shared secrets: the relay verifies with the same
    /// file. ES*/RS*/PS*/EdDSA keys are private: give the relay the --public file.
    Generate {
        /// Where to write the key (it must not exist).
        #[arg(long)]
        key: PathBuf,
        /// HS256, HS384, HS512, ES256, ES384, RS256, RS384, RS512, PS256, PS384, PS512, EdDSA.
        #[arg(long, default_value = "HS256")]
        algorithm: String,
        /// Key ID (`kid`), so several keys can live in one directory and rotate. Default: random.
        #[arg(long)]
        id: Option<String>,
        /// Also write the public half here (asymmetric algorithms only).
        #[arg(long)]
        public: Option<PathBuf>,
    },
    /// Mints a token and prints it.
    Sign {
        /// The private (or shared) key.
        #[arg(long)]
        key: PathBuf,
        /// The broadcast prefix the grants below are relative to.
        #[arg(long, default_value = "")]
        root: String,
        /// A prefix (under --root) the holder may publish; repeat for more; "" is all of root.
        #[arg(long)]
        publish: Vec<String>,
        /// A prefix (under --root) the holder may watch; repeat for more; "" is all of root.
        #[arg(long)]
        subscribe: Vec<String>,
        /// Lifetime: seconds, or with a unit (90s, 10m, 1h, 7d). Default: no expiry.
        #[arg(long)]
        expires: Option<String>,
    },
    /// Verifies a token (from stdin, or --token) with a key file or directory, as the relay
    /// would, and prints its claims and what it allows at --path.
    Verify {
        #[arg(long)]
        key: PathBuf,
        /// The connection's path (the WebTransport URL path, or raw QUIC's PATH option).
        #[arg(long, default_value = "/")]
        path: String,
        #[arg(long)]
        token: Option<String>,
    },
    /// Prints a token's header and claims without verifying it.
    Inspect {
        #[arg(long)]
        token: Option<String>,
    },
}

fn main() -> anyhow::Result<()> {
    match Args::parse().command {
        Command::Generate {
            key,
            algorithm,
            id,
            public,
        } => {
            if key.exists() {
                bail!("{} exists: not overwriting a key", key.display());
            }
            let algorithm: Algorithm = algorithm
                .parse()
                .map_err(|e| anyhow::anyhow!("--algorithm {algorithm}: {e}"))?;
            let id = match id {
                Some(id) => KeyId::decode(&id).map_err(|e| anyhow::anyhow!("--id {id}: {e}"))?,
                None => KeyId::random(),
            };
            let k = Key::generate(algorithm, Some(id.clone()))?;
            k.to_file(&key)
                .with_context(|| format!("writing {}", key.display()))?;
            eprintln!("wrote {} ({algorithm:?}, kid {id})", key.display());
            if let Some(public) = public {
                let p = k
                    .to_public()
                    .context("a shared-secret (HS*) key has no public half")?;
                p.to_file(&public)
                    .with_context(|| format!("writing {}", public.display()))?;
                eprintln!("wrote {} (give this one to the relay)", public.display());
            }
        }
        Command::Sign {
            key,
            root,
            publish,
            subscribe,
            expires,
        } => {
            let k = Key::from_file(&key).with_context(|| format!("reading {}", key.display()))?;
            let now = SystemTime::now();
            let expires = expires
                .map(|e| parse_duration(&e).map(|d| now + d))
                .transpose()?;
            let claims = Claims::default()
                .with_root(root)
                .with_publish(publish)
                .with_subscribe(subscribe)
                .with_expires(expires)
                .with_issued(now);
            println!("{}", k.sign(&claims)?);
        }
        Command::Verify { key, path, token } => {
            let token = token_arg(token)?;
            let auth = Auth::new(&AuthConfig {
                key: Some(key),
                ..Default::default()
            })
            .map_err(anyhow::Error::msg)?;
            let grant = auth.session(&path, Some(&token))?;
            println!("{}", serde_json::to_string_pretty(&payload(&token)?)?);
            println!("publish under: {:?}", grant.publish);
            println!("subscribe under: {:?}", grant.subscribe);
            if let Some(at) = grant.expires {
                let left = at.duration_since(SystemTime::now()).unwrap_or_default();
                println!("expires in {} s", left.as_secs());
            }
        }
        Command::Inspect { token } => {
            let token = token_arg(token)?;
            let header = part(&token, 0)?;
            println!("{}", serde_json::to_string_pretty(&header)?);
            println!("{}", serde_json::to_string_pretty(&payload(&token)?)?);
        }
    }
    Ok(())
}

/// The token from --token, else stdin (trimmed).
fn token_arg(token: Option<String>) -> anyhow::Result<String> {
    let token = match token {
        Some(t) => t,
        None => {
            let mut s = String::new();
            std::io::stdin().read_to_string(&mut s)?;
            s
        }
    };
    let token = token.trim().to_string();
    if token.is_empty() {
        bail!("no token: pass --token or give it on stdin");
    }
    Ok(token)
}

fn payload(token: &str) -> anyhow::Result<serde_json::Value> {
    part(token, 1)
}

/// One base64url JSON part of a JWT.
fn part(token: &str, index: usize) -> anyhow::Result<serde_json::Value> {
    let text = token
        .split('.')
        .nth(index)
        .context("not a JWT (three dot-separated parts)")?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(text.trim_end_matches('='))
        .context("not base64url")?;
    serde_json::from_slice(&bytes).context("not JSON")
}

/// `3600`, `90s`, `10m`, `1h`, `7d`.
fn parse_duration(text: &str) -> anyhow::Result<Duration> {
    let text = text.trim();
    let (number, unit) = match text.find(|c: char| !c.is_ascii_digit()) {
        Some(i) => text.split_at(i),
        None => (text, "s"),
    };
    let n: u64 = number
        .parse()
        .with_context(|| format!("--expires {text:?}: a number of seconds, or 90s, 10m, 1h, 7d"))?;
    let seconds = match unit {
        "s" => n,
        "m" => n * 60,
        "h" => n * 3600,
        "d" => n * 86_400,
        other => bail!("--expires {text:?}: unknown unit {other:?} (s, m, h, d)"),
    };
    Ok(Duration::from_secs(seconds))
}
