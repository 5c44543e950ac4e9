//! Relay configuration: command-line flags, environment variables (`MOQCAST_*`) and an
//! optional TOML file (`--config`), in that order of precedence.

use std::{net::SocketAddr, path::PathBuf, time::Duration};

use clap::Parser;
use serde::Deserialize;

use crate::cache::CacheLimits;

/// Command line of `moqcast-relay`. Every flag also reads an environment variable, and every
/// field can be set in the `--config` TOML file (same names, snake_case).
#[derive(Debug, Clone, Parser, Default)]
#[command(
    name = "moqcast-relay",
    version,
    about = "MoQ (draft-18) relay: raw QUIC and WebTransport on one UDP port"
)]
pub struct Args {
    /// TOML file with any of the settings below.
    #[arg(long, env = "MOQCAST_CONFIG")]
    pub config: Option<PathBuf>,
    /// UDP address for QUIC (raw `moqt://` and WebTransport `https://`). Default `[::]:4443`.
    #[arg(long, env = "MOQCAST_BIND")]
    pub bind: Option<SocketAddr>,
    /// TCP address of the HTTP side (/certificate.sha256, /healthz, /metrics). Default 127.0.0.1:8080.
    #[arg(long, env = "MOQCAST_HTTP_BIND")]
    pub http_bind: Option<SocketAddr>,
    /// TCP address of the public HTTPS side (HTTP/1.1 and HTTP/2, with the QUIC certificate):
    /// the viewer, the index and the API, without /metrics. Off unless given; e.g. `[::]:443`.
    #[arg(long, env = "MOQCAST_HTTPS_BIND")]
    pub https_bind: Option<SocketAddr>,
    /// PEM certificate chain (re-read when it changes: ACME renewals need no restart).
    #[arg(long, env = "MOQCAST_TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key.
    #[arg(long, env = "MOQCAST_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// Generate a self-signed development certificate for these names (comma separated).
    #[arg(long, env = "MOQCAST_TLS_GENERATE", value_delimiter = ',')]
    pub tls_generate: Option<Vec<String>>,
    /// Payload bytes cached per track.
    #[arg(long, env = "MOQCAST_CACHE_BYTES")]
    pub cache_bytes: Option<usize>,
    /// Groups cached per track.
    #[arg(long, env = "MOQCAST_CACHE_GROUPS")]
    pub cache_groups: Option<usize>,
    /// Oldest group age kept in a track cache, in milliseconds.
    #[arg(long, env = "MOQCAST_CACHE_AGE_MS")]
    pub cache_age_ms: Option<u64>,
    /// Payload bytes cached by all tracks together; past it the oldest groups of the largest
    /// caches are evicted (never a live track's newest group). Default 512 MiB.
    #[arg(long, env = "MOQCAST_CACHE_TOTAL_BYTES")]
    pub cache_total_bytes: Option<u64>,
    /// Maximum concurrent sessions, counted from the QUIC handshake; more are refused.
    #[arg(long, env = "MOQCAST_MAX_SESSIONS")]
    pub max_sessions: Option<usize>,
    /// Maximum concurrent requests per session (SUBSCRIBE, PUBLISH, FETCH, ... each is a
    /// bidirectional stream in draft-18): the QUIC stream credit granted to the peer follows
    /// it, and a request past it gets REQUEST_ERROR EXCESSIVE_LOAD at once. Default 10000.
    #[arg(long, env = "MOQCAST_MAX_REQUESTS_PER_SESSION")]
    pub max_requests_per_session: Option<usize>,
    /// Maximum concurrent subscriptions per session (at most the request limit); a SUBSCRIBE
    /// past it gets REQUEST_ERROR EXCESSIVE_LOAD and the session stays up. Default 10000.
    #[arg(long, env = "MOQCAST_MAX_SUBSCRIPTIONS_PER_SESSION")]
    pub max_subscriptions_per_session: Option<usize>,
    /// New requests a session may open per second on average, after a burst of
    /// --max-requests-per-session; past it the relay stops accepting that session's request
    /// streams until the rate allows (QUIC flow control holds the peer back). 0: no limit.
    /// Default 1000.
    #[arg(long, env = "MOQCAST_MAX_REQUEST_RATE")]
    pub max_request_rate: Option<f64>,
    /// Maximum concurrent QUIC streams a peer may open per session (each direction).
    #[arg(long, env = "MOQCAST_MAX_STREAMS")]
    pub max_streams: Option<u32>,
    /// Unsent bytes a subscriber's connection may lag before its stale groups are dropped.
    #[arg(long, env = "MOQCAST_SUBSCRIBER_BACKLOG_BYTES")]
    pub subscriber_backlog_bytes: Option<u64>,
    /// Kernel receive buffer asked for the UDP socket, in bytes (Linux reports twice this).
    /// Capped by net.core.rmem_max unless the relay has CAP_NET_ADMIN. Default 0: the system's
    /// (208 KiB on Debian). 512 KiB stopped drops at 300 subscribers; larger buffers made an
    /// overloaded relay fall seconds behind (docs/BENCHMARKS.md).
    #[arg(long, env = "MOQCAST_UDP_BUFFER_BYTES")]
    pub udp_buffer_bytes: Option<usize>,
    /// Threads serving QUIC. Default: one per CPU core. With `--runtime sharded` each is a
    /// shard with its own socket on the shared port (at most 128); with `--runtime shared`,
    /// the worker threads of one multi-threaded runtime.
    #[arg(long, env = "MOQCAST_WORKER_THREADS")]
    pub worker_threads: Option<usize>,
    /// How sessions map to threads: "sharded" (default: one single-threaded runtime, UDP socket
    /// and QUIC endpoint per thread, a session stays on one, new sessions packed onto the
    /// first shards with room) or "shared" (one multi-threaded runtime and one socket; 9-39%
    /// more CPU per Gbit/s up to 300 subscribers on a 2-core machine, docs/BENCHMARKS.md).
    #[arg(long, env = "MOQCAST_RUNTIME", value_enum)]
    pub runtime: Option<RuntimeMode>,
    /// Congestion control for what the relay sends: "cubic" (default) or "bbr" (quinn's
    /// experimental BBR; at 1000 subscribers it lost packets and ran seconds behind where Cubic
    /// stayed under a second, docs/BENCHMARKS.md).
    #[arg(long, env = "MOQCAST_CONGESTION", value_enum)]
    pub congestion: Option<Congestion>,
    /// Ask peers to acknowledge every N ack-eliciting packets, or 25 ms after the first one,
    /// and at once on any gap (QUIC ACK frequency extension, for peers that support it).
    /// Default 10; 2 or less asks nothing (QUIC's default, every 2nd packet).
    #[arg(long, env = "MOQCAST_ACK_EVERY")]
    pub ack_every: Option<u32>,
    /// Longest subscribers' objects wait to be handed to QUIC together, in milliseconds, while
    /// a shard is saturated (awake nearly all the time). Under that load, one send of three
    /// frames costs far less than three sends of one. Default 50; 0: never (at most 1000). An
    /// unsaturated relay hands each object over at once.
    #[arg(long, env = "MOQCAST_COALESCE_MS")]
    pub coalesce_ms: Option<u64>,
    /// The share of the time (0 to 1) a shard's thread must be awake, not waiting for events,
    /// to count as saturated (`--coalesce-ms`); the relay stops coalescing when its busiest
    /// shard falls below two thirds of it. Default 0.9; 0: always coalesce.
    #[arg(long, env = "MOQCAST_COALESCE_ABOVE")]
    pub coalesce_above: Option<f64>,
    /// Log format: "text" or "json".
    #[arg(long, env = "MOQCAST_LOG_FORMAT")]
    pub log_format: Option<String>,
    /// Directory of the built browser viewer (`npm --prefix web run build` writes `web/dist`),
    /// served at `/watch/<broadcast>` and `/assets/`. Default: `web/dist` in the current
    /// directory, else `../../web/dist` next to the executable (a `target/<profile>` build).
    #[arg(long, env = "MOQCAST_WEB_DIR")]
    pub web_dir: Option<PathBuf>,
    /// Turns auth on: a JWK file, a JWK Set, or a directory of `*.jwk` files (re-read when it
    /// changes, so keys rotate without a restart). Sessions then need a token (`?jwt=` on the
    /// WebTransport URL, the AUTHORIZATION TOKEN setup option on raw QUIC) except under the
    /// `--auth-public*` prefixes. Without it, everything is open (development).
    #[arg(long, env = "MOQCAST_AUTH_KEY")]
    pub auth_key: Option<PathBuf>,
    /// Concurrent sessions from one source address (handshakes included); more are refused.
    /// Default 2000.
    #[arg(long, env = "MOQCAST_MAX_SESSIONS_PER_IP")]
    pub max_sessions_per_ip: Option<usize>,
    /// QUIC handshakes in progress (per shard) past which new peers must first prove their
    /// address (QUIC Retry, one round trip more). Default 64; 0: always.
    #[arg(long, env = "MOQCAST_RETRY_ABOVE")]
    pub retry_above: Option<usize>,
    /// On SIGTERM, how long the relay drains: GOAWAY to every session, then it waits for them
    /// to leave (ms) before closing the rest. Default 2000; 0: close at once.
    #[arg(long, env = "MOQCAST_DRAIN_MS")]
    pub drain_ms: Option<u64>,
    /// Concurrent HTTP connections; more are closed at once. Default 512.
    #[arg(long, env = "MOQCAST_MAX_HTTP_CONNECTIONS")]
    pub max_http_connections: Option<usize>,
    /// How long an HTTP client may take to send a request's headers (and an idle keep-alive
    /// connection may wait for the next request), ms. Default 10000.
    #[arg(long, env = "MOQCAST_HTTP_HEADER_TIMEOUT_MS")]
    pub http_header_timeout_ms: Option<u64>,
    /// Broadcast prefixes anonymous sessions may publish and watch (comma separated; "" is
    /// everything).
    #[arg(long, env = "MOQCAST_AUTH_PUBLIC", value_delimiter = ',')]
    pub auth_public: Option<Vec<String>>,
    /// Broadcast prefixes anonymous sessions may watch.
    #[arg(long, env = "MOQCAST_AUTH_PUBLIC_SUBSCRIBE", value_delimiter = ',')]
    pub auth_public_subscribe: Option<Vec<String>>,
    /// Broadcast prefixes anonymous sessions may publish.
    #[arg(long, env = "MOQCAST_AUTH_PUBLIC_PUBLISH", value_delimiter = ',')]
    pub auth_public_publish: Option<Vec<String>>,
    /// TCP address of the RTMP ingest (OBS: server `rtmp://HOST:1935/live`, the stream key
    /// names the broadcast). Off unless given; e.g. `0.0.0.0:1935`.
    #[arg(long, env = "MOQCAST_RTMP_BIND")]
    pub rtmp_bind: Option<SocketAddr>,
    /// TCP address of the RTMPS ingest: RTMP over TLS with the relay's certificate (OBS:
    /// server `rtmps://HOST:1936/live`). Off unless given; e.g. `0.0.0.0:1936`. Shares the
    /// other `--rtmp-*` settings.
    #[arg(long, env = "MOQCAST_RTMPS_BIND")]
    pub rtmps_bind: Option<SocketAddr>,
    /// Stream keys of the RTMP, RTMPS and SRT ingests: a TOML file of `"KEY" = "BROADCAST"`
    /// lines, re-read when it changes. Without it (and without --auth-key) the stream key
    /// (SRT: the streamid) is the broadcast name.
    #[arg(long, env = "MOQCAST_RTMP_KEYS")]
    pub rtmp_keys: Option<PathBuf>,
    /// An RTMP publisher silent this long (handshake included) is disconnected, ms. Default 10000.
    #[arg(long, env = "MOQCAST_RTMP_TIMEOUT_MS")]
    pub rtmp_timeout_ms: Option<u64>,
    /// How long an RTMP broadcast whose publisher disconnected waits for the same key to
    /// reconnect, viewers staying subscribed, ms. Default 5000; 0: it ends at once.
    #[arg(long, env = "MOQCAST_RTMP_RESUME_MS")]
    pub rtmp_resume_ms: Option<u64>,
    /// Concurrent RTMP connections; more are closed at once. Default 64.
    #[arg(long, env = "MOQCAST_RTMP_MAX_CONNECTIONS")]
    pub rtmp_max_connections: Option<usize>,
    /// UDP address of the SRT ingest (OBS: server `srt://HOST:9000?streamid=KEY`, MPEG-TS
    /// with H.264 and AAC). Off unless given; e.g. `0.0.0.0:9000`.
    #[arg(long, env = "MOQCAST_SRT_BIND")]
    pub srt_bind: Option<SocketAddr>,
    /// An SRT publisher that sends no media this long is disconnected, ms. Default 10000.
    #[arg(long, env = "MOQCAST_SRT_TIMEOUT_MS")]
    pub srt_timeout_ms: Option<u64>,
    /// How long an SRT broadcast whose publisher disconnected waits for the same key to
    /// reconnect, viewers staying subscribed, ms. Default 5000; 0: it ends at once.
    #[arg(long, env = "MOQCAST_SRT_RESUME_MS")]
    pub srt_resume_ms: Option<u64>,
    /// Concurrent SRT connections; more are refused at connect. Default 64.
    #[arg(long, env = "MOQCAST_SRT_MAX_CONNECTIONS")]
    pub srt_max_connections: Option<usize>,
    /// The SRT receive latency the relay asks for, ms (the connection uses the larger of
    /// both sides'); the time SRT has to recover lost packets. Default 120, libsrt's.
    #[arg(long, env = "MOQCAST_SRT_LATENCY_MS")]
    pub srt_latency_ms: Option<u64>,
    /// UDP address of the WebRTC media socket of the WHIP ingest (`POST /whip/BROADCAST` on
    /// the HTTP side; OBS's WHIP output, FFmpeg's `-f whip`). Off unless given; e.g.
    /// `0.0.0.0:4445`.
    #[arg(long, env = "MOQCAST_WEBRTC_ADDR")]
    pub webrtc_addr: Option<SocketAddr>,
    /// The address WHIP answers give publishers for the WebRTC socket (ICE host candidate),
    /// `IP` or `IP:PORT`: the public address behind NAT or a load balancer, with the public
    /// port where it differs from `--webrtc-addr`'s. Default: `--webrtc-addr`'s address when
    /// it is a specific one, else the address the publisher reached the HTTP side at.
    #[arg(long, env = "MOQCAST_WEBRTC_HOST", value_name = "IP[:PORT]")]
    pub webrtc_host: Option<String>,
    /// Concurrent WHIP (WebRTC) sessions; more are refused with 503. Default 32.
    #[arg(long, env = "MOQCAST_WEBRTC_MAX_SESSIONS")]
    pub webrtc_max_sessions: Option<usize>,
    /// A WHIP session that does not connect, or sends no media, this long is ended, ms.
    /// Default 10000.
    #[arg(long, env = "MOQCAST_WEBRTC_TIMEOUT_MS")]
    pub webrtc_timeout_ms: Option<u64>,
    /// Joins a cluster whose registry is this Redis server (`redis://HOST:PORT`): the relay
    /// registers the broadcasts published to it and serves every broadcast of the cluster.
    #[arg(long, env = "MOQCAST_CLUSTER_REGISTRY")]
    pub cluster_registry: Option<String>,
    /// How the other relays of the cluster reach this one: `moqt://HOST:PORT` (raw QUIC on
    /// this relay's QUIC port). Needed with --cluster-registry.
    #[arg(long, env = "MOQCAST_CLUSTER_ADVERTISE")]
    pub cluster_advertise: Option<String>,
    /// origin (default): takes publishers and registers their broadcasts; edge: takes no
    /// publisher, serves what the origins have.
    #[arg(long, env = "MOQCAST_CLUSTER_ROLE")]
    pub cluster_role: Option<crate::cluster::ClusterRole>,
    /// A file holding the token (JWT) this relay presents to the other relays (checked by
    /// their --auth-key; it needs subscribe rights on the broadcasts it pulls).
    #[arg(long, env = "MOQCAST_CLUSTER_TOKEN_FILE")]
    pub cluster_token_file: Option<PathBuf>,
    /// How long a broadcast's registration lives unless refreshed, ms (a dead relay's
    /// broadcasts expire after it). Default 10000.
    #[arg(long, env = "MOQCAST_CLUSTER_TTL_MS")]
    pub cluster_ttl_ms: Option<u64>,
    /// Accept peer relays' certificates by SHA-256 fingerprint (hex, comma separated), for
    /// relays with self-signed certificates; without it, the system roots.
    #[arg(long, env = "MOQCAST_CLUSTER_TLS_FINGERPRINT", value_delimiter = ',')]
    pub cluster_tls_fingerprint: Option<Vec<String>>,
}

/// The longest `--coalesce-ms`: a longer hold is a stall viewers see, and two or three frames
/// per send already take most of the saving.
const MAX_COALESCE_MS: u64 = 1000;

/// The same settings as read from a TOML file.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    pub bind: Option<SocketAddr>,
    pub http_bind: Option<SocketAddr>,
    pub https_bind: Option<SocketAddr>,
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
    pub tls_generate: Option<Vec<String>>,
    pub cache_bytes: Option<usize>,
    pub cache_groups: Option<usize>,
    pub cache_age_ms: Option<u64>,
    pub cache_total_bytes: Option<u64>,
    pub max_sessions: Option<usize>,
    pub max_requests_per_session: Option<usize>,
    pub max_subscriptions_per_session: Option<usize>,
    pub max_request_rate: Option<f64>,
    pub max_streams: Option<u32>,
    pub subscriber_backlog_bytes: Option<u64>,
    pub udp_buffer_bytes: Option<usize>,
    pub worker_threads: Option<usize>,
    pub runtime: Option<RuntimeMode>,
    pub congestion: Option<Congestion>,
    pub ack_every: Option<u32>,
    pub coalesce_ms: Option<u64>,
    pub coalesce_above: Option<f64>,
    pub log_format: Option<String>,
    pub web_dir: Option<PathBuf>,
    pub auth_key: Option<PathBuf>,
    pub max_http_connections: Option<usize>,
    pub http_header_timeout_ms: Option<u64>,
    pub max_sessions_per_ip: Option<usize>,
    pub retry_above: Option<usize>,
    pub drain_ms: Option<u64>,
    pub auth_public: Option<Vec<String>>,
    pub auth_public_subscribe: Option<Vec<String>>,
    pub auth_public_publish: Option<Vec<String>>,
    pub rtmp_bind: Option<SocketAddr>,
    pub rtmp_keys: Option<PathBuf>,
    pub rtmp_timeout_ms: Option<u64>,
    pub rtmp_resume_ms: Option<u64>,
    pub rtmp_max_connections: Option<usize>,
    pub rtmps_bind: Option<SocketAddr>,
    pub srt_bind: Option<SocketAddr>,
    pub srt_timeout_ms: Option<u64>,
    pub srt_resume_ms: Option<u64>,
    pub srt_max_connections: Option<usize>,
    pub srt_latency_ms: Option<u64>,
    pub webrtc_addr: Option<SocketAddr>,
    pub webrtc_host: Option<String>,
    pub webrtc_max_sessions: Option<usize>,
    pub webrtc_timeout_ms: Option<u64>,
    pub cluster_registry: Option<String>,
    pub cluster_advertise: Option<String>,
    pub cluster_role: Option<crate::cluster::ClusterRole>,
    pub cluster_token_file: Option<PathBuf>,
    pub cluster_ttl_ms: Option<u64>,
    pub cluster_tls_fingerprint: Option<Vec<String>>,
}

/// How sessions map to threads (see `--runtime`, and [`crate::shard`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum RuntimeMode {
    /// One multi-threaded runtime, one socket.
    Shared,
    /// Thread-per-core shards on one `SO_REUSEPORT` port; new connections packed onto the
    /// first shards with room.
    #[default]
    Sharded,
}

/// Congestion control of the relay's QUIC connections (see `--congestion`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Congestion {
    /// quinn's Cubic (RFC 9438).
    #[default]
    Cubic,
    /// quinn's BBR (experimental in quinn).
    Bbr,
}

/// Resolved configuration.
#[derive(Debug, Clone)]
pub struct Config {
    pub bind: SocketAddr,
    pub http_bind: SocketAddr,
    /// The public HTTPS listener, when `--https-bind` is given.
    pub https_bind: Option<SocketAddr>,
    pub tls: TlsSource,
    pub cache: CacheLimits,
    /// Payload bytes of all track caches together.
    pub cache_total_bytes: u64,
    pub max_sessions: usize,
    pub max_requests_per_session: usize,
    pub max_subscriptions_per_session: usize,
    /// Requests per second per session after a burst of the request limit (0: none).
    pub max_request_rate: f64,
    pub max_streams: u32,
    pub subscriber_backlog_bytes: u64,
    /// Kernel receive buffer asked for the UDP socket (0: the system's default).
    pub udp_buffer_bytes: usize,
    /// Threads serving QUIC; `None`: one per core.
    pub worker_threads: Option<usize>,
    pub runtime: RuntimeMode,
    pub congestion: Congestion,
    /// Ack-eliciting packets a peer is asked to receive before it acknowledges; 2 or less: no
    /// request.
    pub ack_every: u32,
    /// Longest subscribers' objects are held back to go out together while a shard is
    /// saturated ([`crate::shard::Placement::coalescing`]); zero: never.
    pub coalesce: std::time::Duration,
    /// The awake share, in thousandths, past which a shard is saturated.
    pub coalesce_above: u32,
    pub log_format: String,
    /// Directory of the built viewer; it may not exist (then `/watch/...` answers 503).
    pub web_dir: PathBuf,
    pub auth: crate::auth::AuthConfig,
    pub max_http_connections: usize,
    pub http_header_timeout: Duration,
    pub max_sessions_per_ip: usize,
    pub retry_above: usize,
    /// GOAWAY, then this long for sessions to leave, on shutdown.
    pub drain: Duration,
    /// The RTMP ingest, when `--rtmp-bind` or `--rtmps-bind` is given.
    pub rtmp: Option<crate::rtmp::RtmpConfig>,
    /// The SRT ingest, when `--srt-bind` is given.
    pub srt: Option<crate::srt::SrtConfig>,
    /// The WHIP ingest, when `--webrtc-addr` is given.
    pub whip: Option<crate::whip::WhipConfig>,
    /// The cluster this relay joins (`--cluster-registry`).
    pub cluster: Option<crate::cluster::ClusterConfig>,
    /// Stream keys of the RTMP and SRT ingests (`--rtmp-keys`).
    pub ingest_keys: Option<PathBuf>,
}

#[derive(Debug, Clone)]
pub enum TlsSource {
    Files { cert: PathBuf, key: PathBuf },
    Generate(Vec<String>),
}

impl From<&TlsSource> for crate::tls::Source {
    fn from(source: &TlsSource) -> Self {
        match source {
            TlsSource::Files { cert, key } => Self::Files {
                cert: cert.clone(),
                key: key.clone(),
            },
            TlsSource::Generate(names) => Self::Generate(names.clone()),
        }
    }
}

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    #[error("could not read config file {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("config file {path}: {source}")]
    Parse {
        path: String,
        source: Box<toml::de::Error>,
    },
    #[error(
        "no TLS configured: pass --tls-cert and --tls-key, or --tls-generate localhost,127.0.0.1"
    )]
    NoTls,
    #[error("{0}")]
    Invalid(String),
}

impl Default for Config {
    fn default() -> Self {
        Self {
            bind: "[::]:4443".parse().expect("valid"),
            http_bind: "127.0.0.1:8080".parse().expect("valid"),
            https_bind: None,
            tls: TlsSource::Generate(vec!["localhost".into(), "127.0.0.1".into(), "::1".into()]),
            cache: CacheLimits::default(),
            cache_total_bytes: 512 * 1024 * 1024,
            max_sessions: 10_000,
            max_requests_per_session: 10_000,
            max_subscriptions_per_session: 10_000,
            max_request_rate: 1000.0,
            max_streams: 1024,
            subscriber_backlog_bytes: 4 * 1024 * 1024,
            udp_buffer_bytes: 0,
            worker_threads: None,
            runtime: RuntimeMode::Sharded,
            congestion: Congestion::Cubic,
            ack_every: 10,
            coalesce: std::time::Duration::from_millis(50),
            coalesce_above: crate::shard::COALESCE_ABOVE_PERMILLE,
            log_format: "text".into(),
            web_dir: default_web_dir(),
            auth: crate::auth::AuthConfig::default(),
            max_http_connections: 512,
            http_header_timeout: Duration::from_secs(10),
            max_sessions_per_ip: 2000,
            retry_above: 64,
            drain: Duration::from_secs(2),
            rtmp: None,
            srt: None,
            whip: None,
            cluster: None,
            ingest_keys: None,
        }
    }
}

impl Config {
    /// Merges flags/env over the file over defaults.
    pub fn resolve(args: Args) -> Result<Self, ConfigError> {
        let file = match &args.config {
            Some(path) => {
                let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
                    path: path.display().to_string(),
                    source,
                })?;
                toml::from_str::<FileConfig>(&text).map_err(|source| ConfigError::Parse {
                    path: path.display().to_string(),
                    source: Box::new(source),
                })?
            }
            None => FileConfig::default(),
        };
        let cluster_args = ClusterArgs {
            registry: args.cluster_registry.clone(),
            advertise: args.cluster_advertise.clone(),
            role: args.cluster_role,
            token_file: args.cluster_token_file.clone(),
            ttl_ms: args.cluster_ttl_ms,
            fingerprints: args.cluster_tls_fingerprint.clone(),
        };
        let cluster = cluster_config(&cluster_args, &file)?;
        let d = Config::default();
        let tls = match (
            args.tls_cert.or(file.tls_cert),
            args.tls_key.or(file.tls_key),
            args.tls_generate.or(file.tls_generate),
        ) {
            (Some(cert), Some(key), _) => TlsSource::Files { cert, key },
            (None, None, Some(names)) if !names.is_empty() => TlsSource::Generate(names),
            (Some(_), None, _) | (None, Some(_), _) => {
                return Err(ConfigError::Invalid(
                    "--tls-cert and --tls-key go together".into(),
                ))
            }
            _ => return Err(ConfigError::NoTls),
        };
        let cache = CacheLimits {
            max_bytes: args
                .cache_bytes
                .or(file.cache_bytes)
                .unwrap_or(d.cache.max_bytes),
            max_groups: args
                .cache_groups
                .or(file.cache_groups)
                .unwrap_or(d.cache.max_groups),
            max_age: args
                .cache_age_ms
                .or(file.cache_age_ms)
                .map(Duration::from_millis)
                .unwrap_or(d.cache.max_age),
        };
        if cache.max_bytes == 0 || cache.max_groups == 0 {
            return Err(ConfigError::Invalid("cache limits must be positive".into()));
        }
        let cache_total_bytes = args
            .cache_total_bytes
            .or(file.cache_total_bytes)
            .unwrap_or(d.cache_total_bytes);
        if cache_total_bytes < cache.max_bytes as u64 {
            return Err(ConfigError::Invalid(format!(
                "cache total bytes ({cache_total_bytes}) must be at least the per-track cache bytes ({})",
                cache.max_bytes
            )));
        }
        let max_requests_per_session = args
            .max_requests_per_session
            .or(file.max_requests_per_session)
            .unwrap_or(d.max_requests_per_session);
        if !(1..=crate::limits::MAX_REQUESTS_PER_SESSION).contains(&max_requests_per_session) {
            return Err(ConfigError::Invalid(format!(
                "max requests per session must be 1 to {}",
                crate::limits::MAX_REQUESTS_PER_SESSION
            )));
        }
        let max_subscriptions_per_session = args
            .max_subscriptions_per_session
            .or(file.max_subscriptions_per_session)
            .unwrap_or(
                d.max_subscriptions_per_session
                    .min(max_requests_per_session),
            );
        if !(1..=max_requests_per_session).contains(&max_subscriptions_per_session) {
            return Err(ConfigError::Invalid(format!(
                "max subscriptions per session must be 1 to the request limit ({max_requests_per_session})"
            )));
        }
        let max_request_rate = args
            .max_request_rate
            .or(file.max_request_rate)
            .unwrap_or(d.max_request_rate);
        if !(max_request_rate.is_finite() && max_request_rate >= 0.0) {
            return Err(ConfigError::Invalid(format!(
                "max request rate must be 0 (no limit) or a positive number, not {max_request_rate}"
            )));
        }
        let worker_threads = args.worker_threads.or(file.worker_threads);
        if worker_threads == Some(0) {
            return Err(ConfigError::Invalid(
                "worker threads: 0 given, need at least 1".into(),
            ));
        }
        let coalesce = match args.coalesce_ms.or(file.coalesce_ms) {
            None => d.coalesce,
            Some(ms) if ms <= MAX_COALESCE_MS => std::time::Duration::from_millis(ms),
            Some(ms) => {
                return Err(ConfigError::Invalid(format!(
                    "coalesce: {ms} ms given, at most {MAX_COALESCE_MS}"
                )))
            }
        };
        let coalesce_above = match args.coalesce_above.or(file.coalesce_above) {
            None => d.coalesce_above,
            Some(share) if (0.0..=1.0).contains(&share) => (share * 1000.0).round() as u32,
            Some(share) => {
                return Err(ConfigError::Invalid(format!(
                    "coalesce above: {share} given, a share of the time from 0 to 1"
                )))
            }
        };
        let runtime = args.runtime.or(file.runtime).unwrap_or(d.runtime);
        if runtime == RuntimeMode::Sharded
            && worker_threads.is_some_and(|n| n > crate::shard::MAX_SHARDS)
        {
            return Err(ConfigError::Invalid(format!(
                "worker threads: at most {} shards (the shard is named in a byte of each connection ID)",
                crate::shard::MAX_SHARDS
            )));
        }
        let log_format = args.log_format.or(file.log_format).unwrap_or(d.log_format);
        if log_format != "text" && log_format != "json" {
            return Err(ConfigError::Invalid(format!(
                "log format {log_format:?}: use text or json"
            )));
        }
        let auth = crate::auth::AuthConfig {
            key: args.auth_key.or(file.auth_key),
            public: args.auth_public.or(file.auth_public).unwrap_or_default(),
            public_subscribe: args
                .auth_public_subscribe
                .or(file.auth_public_subscribe)
                .unwrap_or_default(),
            public_publish: args
                .auth_public_publish
                .or(file.auth_public_publish)
                .unwrap_or_default(),
        };
        if auth.key.is_none()
            && !(auth.public.is_empty()
                && auth.public_subscribe.is_empty()
                && auth.public_publish.is_empty())
        {
            return Err(ConfigError::Invalid(
                "--auth-public* name what anonymous sessions may do when auth is on: pass --auth-key too (without keys everything is open)".into(),
            ));
        }
        let max_http_connections = args
            .max_http_connections
            .or(file.max_http_connections)
            .unwrap_or(d.max_http_connections);
        let http_header_timeout = args
            .http_header_timeout_ms
            .or(file.http_header_timeout_ms)
            .map(Duration::from_millis)
            .unwrap_or(d.http_header_timeout);
        let max_sessions_per_ip = args
            .max_sessions_per_ip
            .or(file.max_sessions_per_ip)
            .unwrap_or(d.max_sessions_per_ip);
        if max_sessions_per_ip == 0 {
            return Err(ConfigError::Invalid(
                "--max-sessions-per-ip must be positive".into(),
            ));
        }
        if max_http_connections == 0 || http_header_timeout.is_zero() {
            return Err(ConfigError::Invalid(
                "--max-http-connections and --http-header-timeout-ms must be positive".into(),
            ));
        }
        let rtmp_timeout = args
            .rtmp_timeout_ms
            .or(file.rtmp_timeout_ms)
            .map(Duration::from_millis)
            .unwrap_or(crate::rtmp::RtmpConfig::DEFAULT_TIMEOUT);
        let rtmp_max_connections = args
            .rtmp_max_connections
            .or(file.rtmp_max_connections)
            .unwrap_or(crate::rtmp::RtmpConfig::DEFAULT_MAX_CONNECTIONS);
        if rtmp_timeout.is_zero() || rtmp_max_connections == 0 {
            return Err(ConfigError::Invalid(
                "--rtmp-timeout-ms and --rtmp-max-connections must be positive".into(),
            ));
        }
        let ingest_keys = args.rtmp_keys.or(file.rtmp_keys);
        let rtmp_bind = args.rtmp_bind.or(file.rtmp_bind);
        let rtmps_bind = args.rtmps_bind.or(file.rtmps_bind);
        let rtmp = (rtmp_bind.is_some() || rtmps_bind.is_some()).then(|| crate::rtmp::RtmpConfig {
            bind: rtmp_bind,
            tls_bind: rtmps_bind,
            timeout: rtmp_timeout,
            resume: args
                .rtmp_resume_ms
                .or(file.rtmp_resume_ms)
                .map(Duration::from_millis)
                .unwrap_or(crate::rtmp::RtmpConfig::DEFAULT_RESUME),
            max_connections: rtmp_max_connections,
        });
        let srt = match args.srt_bind.or(file.srt_bind) {
            Some(bind) => {
                let d = crate::srt::SrtConfig::new(bind);
                let config = crate::srt::SrtConfig {
                    bind,
                    timeout: args
                        .srt_timeout_ms
                        .or(file.srt_timeout_ms)
                        .map_or(d.timeout, Duration::from_millis),
                    resume: args
                        .srt_resume_ms
                        .or(file.srt_resume_ms)
                        .map_or(d.resume, Duration::from_millis),
                    max_connections: args
                        .srt_max_connections
                        .or(file.srt_max_connections)
                        .unwrap_or(d.max_connections),
                    latency: args
                        .srt_latency_ms
                        .or(file.srt_latency_ms)
                        .map_or(d.latency, Duration::from_millis),
                };
                if config.timeout.is_zero() || config.max_connections == 0 {
                    return Err(ConfigError::Invalid(
                        "--srt-timeout-ms and --srt-max-connections must be positive".into(),
                    ));
                }
                Some(config)
            }
            None => None,
        };
        let whip = match args.webrtc_addr.or(file.webrtc_addr) {
            Some(bind) => {
                let advertised = match args.webrtc_host.or(file.webrtc_host) {
                    Some(text) => Some(crate::whip::parse_advertised(&text).map_err(|e| {
                        ConfigError::Invalid(format!("--webrtc-host {text:?}: {e}"))
                    })?),
                    None => None,
                };
                let config = crate::whip::WhipConfig {
                    bind,
                    host: advertised.map(|(ip, _)| ip),
                    port: advertised.and_then(|(_, port)| port),
                    max_sessions: args
                        .webrtc_max_sessions
                        .or(file.webrtc_max_sessions)
                        .unwrap_or(crate::whip::WhipConfig::DEFAULT_MAX_SESSIONS),
                    timeout: args.webrtc_timeout_ms.or(file.webrtc_timeout_ms).map_or(
                        crate::whip::WhipConfig::DEFAULT_TIMEOUT,
                        Duration::from_millis,
                    ),
                };
                if config.timeout.is_zero() || config.max_sessions == 0 {
                    return Err(ConfigError::Invalid(
                        "--webrtc-timeout-ms and --webrtc-max-sessions must be positive".into(),
                    ));
                }
                Some(config)
            }
            None => None,
        };
        if ingest_keys.is_some() && rtmp.is_none() && srt.is_none() && whip.is_none() {
            return Err(ConfigError::Invalid(
                "--rtmp-keys needs --rtmp-bind, --rtmps-bind, --srt-bind or --webrtc-addr (the ingests are off without them)".into(),
            ));
        }
        if cluster
            .as_ref()
            .is_some_and(|c| c.role == crate::cluster::ClusterRole::Edge)
            && (rtmp.is_some() || srt.is_some() || whip.is_some())
        {
            return Err(ConfigError::Invalid(
                "an edge relay (--cluster-role edge) takes no publishers: drop --rtmp-bind, --rtmps-bind, --srt-bind and --webrtc-addr".into(),
            ));
        }
        Ok(Self {
            cluster,
            rtmp,
            srt,
            whip,
            ingest_keys,
            bind: args.bind.or(file.bind).unwrap_or(d.bind),
            http_bind: args.http_bind.or(file.http_bind).unwrap_or(d.http_bind),
            https_bind: args.https_bind.or(file.https_bind),
            tls,
            cache,
            cache_total_bytes,
            max_requests_per_session,
            max_subscriptions_per_session,
            max_sessions: args
                .max_sessions
                .or(file.max_sessions)
                .unwrap_or(d.max_sessions),
            max_request_rate,
            max_streams: args
                .max_streams
                .or(file.max_streams)
                .unwrap_or(d.max_streams),
            subscriber_backlog_bytes: args
                .subscriber_backlog_bytes
                .or(file.subscriber_backlog_bytes)
                .unwrap_or(d.subscriber_backlog_bytes),
            udp_buffer_bytes: args
                .udp_buffer_bytes
                .or(file.udp_buffer_bytes)
                .unwrap_or(d.udp_buffer_bytes),
            worker_threads,
            runtime,
            congestion: args.congestion.or(file.congestion).unwrap_or(d.congestion),
            ack_every: args.ack_every.or(file.ack_every).unwrap_or(d.ack_every),
            coalesce,
            coalesce_above,
            log_format,
            web_dir: args.web_dir.or(file.web_dir).unwrap_or(d.web_dir),
            auth,
            max_http_connections,
            http_header_timeout,
            max_sessions_per_ip,
            retry_above: args
                .retry_above
                .or(file.retry_above)
                .unwrap_or(d.retry_above),
            drain: args
                .drain_ms
                .or(file.drain_ms)
                .map(Duration::from_millis)
                .unwrap_or(d.drain),
        })
    }
}

/// The default viewer directory: `web/dist` under the current directory when it exists, else
/// `../../web/dist` beside the executable (where `target/debug/moqcast-relay` finds the
/// workspace's build), else `web/dist` (missing: the relay says how to build it).
pub fn default_web_dir() -> PathBuf {
    let relative = PathBuf::from("web").join("dist");
    if relative.is_dir() {
        return relative;
    }
    if let Some(beside_exe) = std::env::current_exe()
        .ok()
        .and_then(|exe| exe.parent().map(|bin| bin.join("../../web/dist")))
        .filter(|p| p.is_dir())
    {
        return beside_exe;
    }
    relative
}

/// The `--cluster-*` flags (taken out of [`Args`] before it is consumed).
struct ClusterArgs {
    registry: Option<String>,
    advertise: Option<String>,
    role: Option<crate::cluster::ClusterRole>,
    token_file: Option<PathBuf>,
    ttl_ms: Option<u64>,
    fingerprints: Option<Vec<String>>,
}

/// `--cluster-*` flags over the file's keys; `None` without a registry.
fn cluster_config(
    args: &ClusterArgs,
    file: &FileConfig,
) -> Result<Option<crate::cluster::ClusterConfig>, ConfigError> {
    let registry = args.registry.clone().or(file.cluster_registry.clone());
    let advertise = args.advertise.clone().or(file.cluster_advertise.clone());
    let role = args.role.or(file.cluster_role);
    let token_file = args.token_file.clone().or(file.cluster_token_file.clone());
    let Some(registry) = registry else {
        if advertise.is_some() || role.is_some() || token_file.is_some() {
            return Err(ConfigError::Invalid(
                "--cluster-advertise, --cluster-role and --cluster-token-file need --cluster-registry".into(),
            ));
        }
        return Ok(None);
    };
    if !registry.starts_with("redis://") {
        return Err(ConfigError::Invalid(format!(
            "--cluster-registry {registry:?}: expected redis://HOST:PORT"
        )));
    }
    let advertise = advertise.ok_or_else(|| {
        ConfigError::Invalid(
            "--cluster-registry needs --cluster-advertise moqt://HOST:PORT (how the other relays reach this one)".into(),
        )
    })?;
    let advertise: url::Url = advertise
        .parse()
        .ok()
        .filter(|u: &url::Url| u.scheme() == "moqt" && u.host_str().is_some() && u.port().is_some())
        .ok_or_else(|| {
            ConfigError::Invalid(format!(
                "--cluster-advertise {advertise:?}: expected moqt://HOST:PORT"
            ))
        })?;
    let token = match token_file {
        Some(path) => Some(
            std::fs::read_to_string(&path)
                .map_err(|e| {
                    ConfigError::Invalid(format!("--cluster-token-file {}: {e}", path.display()))
                })?
                .trim()
                .to_string(),
        ),
        None => None,
    };
    let ttl = args.ttl_ms.or(file.cluster_ttl_ms).map_or(
        crate::cluster::ClusterConfig::DEFAULT_TTL,
        Duration::from_millis,
    );
    if ttl < Duration::from_millis(500) {
        return Err(ConfigError::Invalid(
            "--cluster-ttl-ms must be at least 500".into(),
        ));
    }
    Ok(Some(crate::cluster::ClusterConfig {
        registry,
        advertise,
        role: role.unwrap_or_default(),
        token,
        ttl,
        fingerprints: args
            .fingerprints
            .clone()
            .or(file.cluster_tls_fingerprint.clone())
            .unwrap_or_default(),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cluster(flags: &[&str]) -> Result<Option<crate::cluster::ClusterConfig>, ConfigError> {
        let mut argv = vec!["moqcast-relay", "--tls-generate", "localhost"];
        argv.extend_from_slice(flags);
        Config::resolve(Args::parse_from(argv)).map(|c| c.cluster)
    }

    #[test]
    fn cluster_flags_are_checked() {
        let ok = cluster(&[
            "--cluster-registry",
            "redis://127.0.0.1:6379",
            "--cluster-advertise",
            "moqt://relay-a.example:4443",
        ])
        .unwrap()
        .unwrap();
        assert_eq!(ok.role, crate::cluster::ClusterRole::Origin);
        assert_eq!(ok.ttl, crate::cluster::ClusterConfig::DEFAULT_TTL);
        assert!(cluster(&[]).unwrap().is_none());
        for (flags, says) in [
            (
                &["--cluster-registry", "redis://h:1"][..],
                "--cluster-advertise",
            ),
            (
                &[
                    "--cluster-registry",
                    "http://h:1",
                    "--cluster-advertise",
                    "moqt://a:1",
                ][..],
                "redis://",
            ),
            (
                &[
                    "--cluster-registry",
                    "redis://h:1",
                    "--cluster-advertise",
                    "https://a:1/",
                ][..],
                "moqt://HOST:PORT",
            ),
            (&["--cluster-role", "edge"][..], "need --cluster-registry"),
            (
                &[
                    "--cluster-registry",
                    "redis://h:1",
                    "--cluster-advertise",
                    "moqt://a:1",
                    "--cluster-role",
                    "edge",
                    "--rtmp-bind",
                    "127.0.0.1:1935",
                ][..],
                "takes no publishers",
            ),
        ] {
            let e = cluster(flags).unwrap_err().to_string();
            assert!(e.contains(says), "{flags:?}: {e}");
        }
    }

    #[test]
    fn flags_override_file() {
        let dir = std::env::temp_dir().join(format!("moqcast-cfg-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("relay.toml");
        std::fs::write(
            &path,
            "bind = \"127.0.0.1:5000\"\ncache_groups = 7\ntls_generate = [\"localhost\"]\n",
        )
        .unwrap();
        let args = Args::parse_from([
            "moqcast-relay",
            "--config",
            path.to_str().unwrap(),
            "--bind",
            "127.0.0.1:6000",
        ]);
        let c = Config::resolve(args).unwrap();
        assert_eq!(c.bind.port(), 6000);
        assert_eq!(c.cache.max_groups, 7);
        assert!(matches!(c.tls, TlsSource::Generate(_)));
    }

    #[test]
    fn unknown_file_keys_are_rejected() {
        let dir = std::env::temp_dir().join(format!("moqcast-cfg2-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("relay.toml");
        std::fs::write(&path, "bnd = \"127.0.0.1:5000\"\n").unwrap();
        let args = Args::parse_from(["moqcast-relay", "--config", path.to_str().unwrap()]);
        let err = Config::resolve(args).unwrap_err().to_string();
        assert!(err.contains("bnd"), "{err}");
    }

    #[test]
    fn web_dir_from_flag_file_or_default() {
        let dir = std::env::temp_dir().join(format!("moqcast-cfg3-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("relay.toml");
        std::fs::write(
            &path,
            "tls_generate = [\"localhost\"]\nweb_dir = \"/srv/viewer\"\n",
        )
        .unwrap();
        let args = Args::parse_from(["moqcast-relay", "--config", path.to_str().unwrap()]);
        assert_eq!(
            Config::resolve(args).unwrap().web_dir,
            PathBuf::from("/srv/viewer")
        );
        let args = Args::parse_from([
            "moqcast-relay",
            "--config",
            path.to_str().unwrap(),
            "--web-dir",
            "/other",
        ]);
        assert_eq!(
            Config::resolve(args).unwrap().web_dir,
            PathBuf::from("/other")
        );
        let args = Args::parse_from(["moqcast-relay", "--tls-generate", "localhost"]);
        assert!(Config::resolve(args).unwrap().web_dir.ends_with("web/dist"));
    }

    #[test]
    fn limits_from_flags_env_names_and_file() {
        let dir = std::env::temp_dir().join(format!("moqcast-cfg4-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("relay.toml");
        std::fs::write(
            &path,
            "tls_generate = [\"localhost\"]\ncache_total_bytes = 100000000\nmax_subscriptions_per_session = 8\nworker_threads = 1\nruntime = \"shared\"\ncongestion = \"bbr\"\nack_every = 2\ncoalesce_ms = 0\ncoalesce_above = 0.5\n",
        )
        .unwrap();
        let args = Args::parse_from(["moqcast-relay", "--config", path.to_str().unwrap()]);
        let c = Config::resolve(args).unwrap();
        assert_eq!(c.cache_total_bytes, 100_000_000);
        assert_eq!(c.max_subscriptions_per_session, 8);
        assert_eq!(c.worker_threads, Some(1));
        assert_eq!(c.runtime, RuntimeMode::Shared);
        assert_eq!(c.congestion, Congestion::Bbr);
        assert_eq!(c.ack_every, 2);
        assert_eq!(c.coalesce, std::time::Duration::ZERO);
        assert_eq!(c.coalesce_above, 500);
        let args = Args::parse_from([
            "moqcast-relay",
            "--config",
            path.to_str().unwrap(),
            "--max-subscriptions-per-session",
            "3",
            "--cache-total-bytes",
            "9000000",
            "--max-requests-per-session",
            "500",
            "--ack-every",
            "20",
            "--coalesce-ms",
            "35",
        ]);
        let c = Config::resolve(args).unwrap();
        assert_eq!(c.max_subscriptions_per_session, 3);
        assert_eq!(c.max_requests_per_session, 500);
        assert_eq!(c.cache_total_bytes, 9_000_000);
        assert_eq!(c.ack_every, 20);
        assert_eq!(c.coalesce, std::time::Duration::from_millis(35));
        // Defaults.
        let c =
            Config::resolve(Args::parse_from(["moqcast-relay", "--tls-generate", "x"])).unwrap();
        assert_eq!(c.cache_total_bytes, 512 * 1024 * 1024);
        assert_eq!(c.max_requests_per_session, 10_000);
        assert_eq!(c.max_subscriptions_per_session, 10_000);
        assert_eq!(c.max_sessions, 10_000);
        assert_eq!(c.worker_threads, None, "one per core unless set");
        assert_eq!(c.udp_buffer_bytes, 0, "the system's buffer unless set");
        assert_eq!(c.runtime, RuntimeMode::Sharded);
        assert_eq!(c.congestion, Congestion::Cubic);
        assert_eq!(c.ack_every, 10);
        assert_eq!(c.coalesce, std::time::Duration::from_millis(50));
        assert_eq!(c.coalesce_above, 900);
        // The environment variables are declared on the flags.
        let cmd = <Args as clap::CommandFactory>::command();
        for (flag, env) in [
            ("cache_total_bytes", "MOQCAST_CACHE_TOTAL_BYTES"),
            (
                "max_subscriptions_per_session",
                "MOQCAST_MAX_SUBSCRIPTIONS_PER_SESSION",
            ),
            ("max_sessions", "MOQCAST_MAX_SESSIONS"),
            ("worker_threads", "MOQCAST_WORKER_THREADS"),
            ("udp_buffer_bytes", "MOQCAST_UDP_BUFFER_BYTES"),
            (
                "max_requests_per_session",
                "MOQCAST_MAX_REQUESTS_PER_SESSION",
            ),
            ("runtime", "MOQCAST_RUNTIME"),
            ("congestion", "MOQCAST_CONGESTION"),
            ("ack_every", "MOQCAST_ACK_EVERY"),
            ("coalesce_ms", "MOQCAST_COALESCE_MS"),
            ("coalesce_above", "MOQCAST_COALESCE_ABOVE"),
        ] {
            let arg = cmd.get_arguments().find(|a| a.get_id() == flag).unwrap();
            assert_eq!(arg.get_env().and_then(|e| e.to_str()), Some(env));
        }
    }

    #[test]
    fn deploy_example_is_valid_and_states_the_defaults() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../deploy/moqcast-relay.toml");
        let args = Args::parse_from(["moqcast-relay", "--config", path, "--tls-generate", "x"]);
        let c = Config::resolve(args).unwrap();
        let d = Config::default();
        assert_eq!(c.cache, d.cache);
        assert_eq!(c.cache_total_bytes, d.cache_total_bytes);
        assert_eq!(c.max_sessions, d.max_sessions);
        assert_eq!(
            c.max_subscriptions_per_session,
            d.max_subscriptions_per_session
        );
        assert_eq!(c.max_streams, d.max_streams);
        assert_eq!(c.subscriber_backlog_bytes, d.subscriber_backlog_bytes);
        assert_eq!(c.udp_buffer_bytes, d.udp_buffer_bytes);
        assert_eq!(c.max_requests_per_session, d.max_requests_per_session);
        assert_eq!(c.runtime, d.runtime);
        assert_eq!(c.congestion, d.congestion);
        assert_eq!(c.ack_every, d.ack_every);
        assert_eq!(c.coalesce, d.coalesce);
        assert_eq!(c.coalesce_above, d.coalesce_above);
    }

    #[test]
    fn bad_limits_are_rejected() {
        for argv in [
            &["--cache-total-bytes", "1000", "--cache-bytes", "2000"][..],
            &["--max-subscriptions-per-session", "0"][..],
            &["--max-subscriptions-per-session", "20000"][..],
            &["--max-requests-per-session", "0"][..],
            &[
                "--max-requests-per-session",
                "10",
                "--max-subscriptions-per-session",
                "11",
            ][..],
            &["--worker-threads", "0"][..],
            &["--coalesce-ms", "1001"][..],
            &["--coalesce-above", "1.5"][..],
            &["--coalesce-above", "NaN"][..],
        ] {
            let mut full = vec!["moqcast-relay", "--tls-generate", "x"];
            full.extend_from_slice(argv);
            let err = Config::resolve(Args::parse_from(full)).unwrap_err();
            assert!(matches!(err, ConfigError::Invalid(_)), "{err}");
        }
    }

    #[test]
    fn tls_is_required() {
        let err = Config::resolve(Args::parse_from(["moqcast-relay"])).unwrap_err();
        assert!(matches!(err, ConfigError::NoTls));
    }
}
