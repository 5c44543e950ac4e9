//! Helpers for the end-to-end tests: an in-process relay on free ports, and the workspace's
//! binaries run as a user would run them.

use std::{
    path::PathBuf,
    process::{Command, Stdio},
    time::Duration,
};

use moqcast_relay::{Args, Config, Relay};

/// A relay running on loopback for the duration of a test.
pub struct TestRelay {
    pub quic: std::net::SocketAddr,
    pub http: std::net::SocketAddr,
    pub fingerprint: String,
    pub state: std::sync::Arc<moqcast_relay::RelayState>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<anyhow::Result<()>>>,
}

impl TestRelay {
    /// Starts a relay with a generated certificate on `[::]:0` (so both `localhost` families
    /// work) and `127.0.0.1:0`. `extra` are more command-line flags.
    pub async fn start(extra: &[&str]) -> Self {
        let mut argv = vec![
            "moqcast-relay",
            "--bind",
            "[::]:0",
            "--http-bind",
            "127.0.0.1:0",
            "--tls-generate",
            "localhost,127.0.0.1,::1",
        ];
        argv.extend_from_slice(extra);
        let args = <Args as clap::Parser>::parse_from(argv);
        let config = Config::resolve(args).expect("valid relay config");
        let relay = Relay::bind(config).await.expect("relay binds");
        let quic = relay.quic_addr();
        let http = relay.http_addr();
        let state = relay.state();
        let (tx, rx) = tokio::sync::oneshot::channel();
        let task = tokio::spawn(relay.run(async move {
            let _ = rx.await;
        }));
        Self {
            quic,
            http,
            fingerprint: state.fingerprint.clone(),
            state,
            stop: Some(tx),
            task: Some(task),
        }
    }

    pub fn port(&self) -> u16 {
        self.quic.port()
    }

    /// `moqt://127.0.0.1:PORT` or `https://localhost:PORT/`.
    pub fn url(&self, scheme: &str) -> String {
        match scheme {
            "moqt" => format!("moqt://127.0.0.1:{}", self.port()),
            _ => format!("https://localhost:{}/", self.port()),
        }
    }

    /// GET a path on the HTTP side.
    pub fn http_get(&self, path: &str) -> String {
        http_get(self.http, path)
    }

    pub async fn stop(mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        if let Some(task) = self.task.take() {
            let _ = tokio::time::timeout(Duration::from_secs(5), task).await;
        }
    }
}

/// A plain HTTP/1.1 GET (no client library needed for three endpoints).
pub fn http_get(addr: std::net::SocketAddr, path: &str) -> String {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).expect("connect to relay HTTP");
    s.set_read_timeout(Some(Duration::from_secs(5))).ok();
    write!(s, "GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n").unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    match out.split_once("\r\n\r\n") {
        Some((_, body)) => body.to_string(),
        None => out,
    }
}

/// Path of a workspace binary (built by `cargo build --bins`, which the check script runs).
pub fn bin(name: &str) -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target"));
    let profile = if cfg!(debug_assertions) { "debug" } else { "release" };
    let path = target.join(profile).join(name);
    assert!(
        path.exists(),
        "{} is missing: run `cargo build --workspace --bins` first (scripts/check.sh does)",
        path.display()
    );
    path
}

/// A command for a workspace binary with quiet logs.
pub fn command(name: &str) -> Command {
    let mut c = Command::new(bin(name));
    c.env("RUST_LOG", std::env::var("RUST_LOG").unwrap_or_else(|_| "warn".into()));
    c.stdin(Stdio::null());
    c
}

/// A temporary directory removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> Self {
        let p = std::env::temp_dir().join(format!("moqcast-{tag}-{}-{}", std::process::id(), rand_suffix()));
        std::fs::create_dir_all(&p).unwrap();
        Self(p)
    }
    pub fn path(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn rand_suffix() -> u64 {
    use std::time::{SystemTime, UNIX_EPOCH};
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().subsec_nanos() as u64
}

/// ffprobe: (codec_type, codec_name, frame count) for each stream of a file.
pub fn probe(path: &std::path::Path) -> Vec<(String, String, u64)> {
    let out = Command::new("ffprobe")
        .args(["-v", "error", "-count_frames", "-show_entries", "stream=codec_type,codec_name,nb_read_frames", "-of", "json"])
        .arg(path)
        .output()
        .expect("ffprobe runs (install ffmpeg)");
    assert!(out.status.success(), "ffprobe failed: {}", String::from_utf8_lossy(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    v["streams"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            (
                s["codec_type"].as_str().unwrap_or("").to_string(),
                s["codec_name"].as_str().unwrap_or("").to_string(),
                s["nb_read_frames"].as_str().and_then(|n| n.parse().ok()).unwrap_or(0),
            )
        })
        .collect()
}

/// Tracing for tests (once).
pub fn init_tracing() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(std::env::var("RUST_LOG").unwrap_or_else(|_| "warn".into()))
        .with_test_writer()
        .try_init();
}
