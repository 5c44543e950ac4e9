//! Helpers for the end-to-end tests: an in-process relay on free ports, and the workspace's
//! binaries run as a user would run them.

use std::{
    path::PathBuf,
    process::{Command, Stdio},
    time::Duration,
};

use moqcast_relay::{Args, Config, Relay};

pub mod ingest;

/// A relay running on loopback for the duration of a test.
pub struct TestRelay {
    pub quic: std::net::SocketAddr,
    pub http: std::net::SocketAddr,
    /// The HTTPS listener, when started with `--https-bind`.
    pub https: Option<std::net::SocketAddr>,
    pub fingerprint: String,
    pub state: std::sync::Arc<moqcast_relay::RelayState>,
    /// The RTMP ingest's address, when started with `--rtmp-bind`.
    pub rtmp: Option<std::net::SocketAddr>,
    /// The RTMPS ingest's address, when started with `--rtmps-bind`.
    pub rtmps: Option<std::net::SocketAddr>,
    /// The SRT ingest's (UDP) address, when started with `--srt-bind`.
    pub srt: Option<std::net::SocketAddr>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<anyhow::Result<()>>>,
}

impl TestRelay {
    /// Starts a relay with a generated certificate on `[::]:0` (so both `localhost` families
    /// work) and `127.0.0.1:0`. `extra` are more command-line flags.
    pub async fn start(extra: &[&str]) -> Self {
        Self::start_on(0, extra).await
    }

    /// As [`Self::start`], with the QUIC port given (0: any free one).
    pub async fn start_on(port: u16, extra: &[&str]) -> Self {
        let bind = format!("[::]:{port}");
        let mut argv = vec![
            "moqcast-relay",
            "--bind",
            &bind,
            "--http-bind",
            "127.0.0.1:0",
            "--tls-generate",
            "localhost,127.0.0.1,::1",
        ];
        // Tests stop relays with their clients still connected: no drain unless asked for.
        if !extra.contains(&"--drain-ms") {
            argv.extend_from_slice(&["--drain-ms", "0"]);
        }
        argv.extend_from_slice(extra);
        let args = <Args as clap::Parser>::parse_from(argv);
        let config = Config::resolve(args).expect("valid relay config");
        let relay = Relay::bind(config).await.expect("relay binds");
        let quic = relay.quic_addr();
        let http = relay.http_addr();
        let https = relay.https_addr();
        let rtmp = relay.rtmp_addr();
        let rtmps = relay.rtmps_addr();
        let srt = relay.srt_addr();
        let state = relay.state();
        let (tx, rx) = tokio::sync::oneshot::channel();
        let task = tokio::spawn(relay.run(async move {
            let _ = rx.await;
        }));
        Self {
            quic,
            http,
            https,
            fingerprint: state.fingerprint(),
            state,
            rtmp,
            rtmps,
            srt,
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

/// A plain HTTP/1.1 GET (no client library needed for three endpoints): the body.
pub fn http_get(addr: std::net::SocketAddr, path: &str) -> String {
    let out = http_get_response(addr, path);
    match out.split_once("\r\n\r\n") {
        Some((_, body)) => body.to_string(),
        None => out,
    }
}

/// A plain HTTP/1.1 GET: the whole response, status line and headers included.
pub fn http_get_response(addr: std::net::SocketAddr, path: &str) -> String {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).expect("connect to relay HTTP");
    s.set_read_timeout(Some(Duration::from_secs(5))).ok();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    out
}

/// An HTTPS response, and what the TLS handshake showed.
#[derive(Debug)]
pub struct HttpsResponse {
    pub status: u16,
    pub headers: hyper::HeaderMap,
    pub body: String,
    /// The protocol ALPN chose (`h2`, `http/1.1`).
    pub alpn: String,
    /// Hex SHA-256 of the certificate the server presented.
    pub fingerprint: String,
}

/// GET `path` over HTTPS at `addr`, offering `alpn` (`h2`, `http/1.1`), verifying the server as
/// `tls` says (pinned fingerprints, or none).
pub async fn https_get(
    addr: std::net::SocketAddr,
    path: &str,
    tls: &moqcast_client::ClientTls,
    alpn: &str,
) -> anyhow::Result<HttpsResponse> {
    use anyhow::Context;
    use http_body_util::BodyExt;
    let mut config = tls.rustls_config()?;
    config.alpn_protocols = vec![alpn.as_bytes().to_vec()];
    let connector = tokio_rustls::TlsConnector::from(std::sync::Arc::new(config));
    let tcp = tokio::net::TcpStream::connect(addr).await?;
    let name = rustls::pki_types::ServerName::try_from("localhost").expect("valid name");
    let stream = tokio::time::timeout(Duration::from_secs(5), connector.connect(name, tcp))
        .await
        .context("TLS handshake timed out")??;
    let (_, session) = stream.get_ref();
    let negotiated =
        String::from_utf8_lossy(session.alpn_protocol().unwrap_or_default()).into_owned();
    let fingerprint = session
        .peer_certificates()
        .and_then(|c| c.first())
        .map(|c| hex::encode(moqcast_media::moq::certificate_fingerprint(c.as_ref())))
        .unwrap_or_default();
    let io = hyper_util::rt::TokioIo::new(stream);
    let request = hyper::Request::get(format!("https://localhost{path}"))
        .header(hyper::header::HOST, "localhost")
        .body(http_body_util::Empty::<bytes::Bytes>::new())?;
    let response = if negotiated == "h2" {
        let (mut send, conn) =
            hyper::client::conn::http2::handshake(hyper_util::rt::TokioExecutor::new(), io).await?;
        tokio::spawn(conn);
        send.send_request(request).await?
    } else {
        let (mut send, conn) = hyper::client::conn::http1::handshake(io).await?;
        tokio::spawn(conn);
        send.send_request(request).await?
    };
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let body = tokio::time::timeout(Duration::from_secs(5), response.into_body().collect())
        .await
        .context("HTTPS body timed out")??
        .to_bytes();
    Ok(HttpsResponse {
        status,
        headers,
        body: String::from_utf8_lossy(&body).into_owned(),
        alpn: negotiated,
        fingerprint,
    })
}

/// An HTTP/3 response.
#[derive(Debug)]
pub struct H3Response {
    pub status: u16,
    pub headers: http::HeaderMap,
    pub body: Vec<u8>,
}

/// GET each of `paths` over one HTTP/3 connection (ALPN `h3`) to `addr`, verifying the server
/// as `tls` says: a small quinn + h3 client (Debian's curl has no HTTP/3).
pub async fn h3_get(
    addr: std::net::SocketAddr,
    paths: &[&str],
    tls: &moqcast_client::ClientTls,
) -> anyhow::Result<Vec<H3Response>> {
    let mut config = tls.rustls_config()?;
    config.alpn_protocols = vec![b"h3".to_vec()];
    let crypto = quinn::crypto::rustls::QuicClientConfig::try_from(config)?;
    let mut endpoint = quinn::Endpoint::client("[::]:0".parse()?)?;
    endpoint.set_default_client_config(quinn::ClientConfig::new(std::sync::Arc::new(crypto)));
    let conn = tokio::time::timeout(Duration::from_secs(5), endpoint.connect(addr, "localhost")?)
        .await??;
    let (mut driver, mut requests) =
        h3::client::new(h3_quinn::Connection::new(conn.clone())).await?;
    let driving = tokio::spawn(async move {
        let _ = std::future::poll_fn(|cx| driver.poll_close(cx)).await;
    });
    let mut out = Vec::new();
    for path in paths {
        let request =
            http::Request::get(format!("https://localhost:{}{path}", addr.port())).body(())?;
        let response = tokio::time::timeout(Duration::from_secs(5), async {
            let mut stream = requests.send_request(request).await?;
            stream.finish().await?;
            let response = stream.recv_response().await?;
            let mut body = Vec::new();
            while let Some(mut chunk) = stream.recv_data().await? {
                use bytes::Buf;
                while chunk.has_remaining() {
                    let part = chunk.chunk();
                    body.extend_from_slice(part);
                    let n = part.len();
                    chunk.advance(n);
                }
            }
            anyhow::Ok(H3Response {
                status: response.status().as_u16(),
                headers: response.headers().clone(),
                body,
            })
        })
        .await??;
        out.push(response);
    }
    conn.close(0u32.into(), b"done");
    driving.abort();
    endpoint.wait_idle().await;
    Ok(out)
}

/// Client TLS that accepts only the certificate with this hex SHA-256.
pub fn pinned_tls(fingerprint: &str) -> moqcast_client::ClientTls {
    let mut tls = moqcast_client::ClientTls::default();
    tls.pin_hex(fingerprint).expect("a hex SHA-256");
    tls
}

/// Path of a workspace binary (built by `cargo build --bins`, which the check script runs).
pub fn bin(name: &str) -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target"));
    let profile = if cfg!(debug_assertions) {
        "debug"
    } else {
        "release"
    };
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
    c.env(
        "RUST_LOG",
        std::env::var("RUST_LOG").unwrap_or_else(|_| "warn".into()),
    );
    c.stdin(Stdio::null());
    c
}

/// A temporary directory removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> Self {
        let p = std::env::temp_dir().join(format!(
            "moqcast-{tag}-{}-{}",
            std::process::id(),
            rand_suffix()
        ));
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
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .subsec_nanos() as u64
}

/// ffprobe: (codec_type, codec_name, frame count) for each stream of a file.
pub fn probe(path: &std::path::Path) -> Vec<(String, String, u64)> {
    let out = Command::new("ffprobe")
        .args([
            "-v",
            "error",
            "-count_frames",
            "-show_entries",
            "stream=codec_type,codec_name,nb_read_frames",
            "-of",
            "json",
        ])
        .arg(path)
        .output()
        .expect("ffprobe runs (install ffmpeg)");
    assert!(
        out.status.success(),
        "ffprobe failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    v["streams"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            (
                s["codec_type"].as_str().unwrap_or("").to_string(),
                s["codec_name"].as_str().unwrap_or("").to_string(),
                s["nb_read_frames"]
                    .as_str()
                    .and_then(|n| n.parse().ok())
                    .unwrap_or(0),
            )
        })
        .collect()
}

/// Checks a recording holds an H.264 video stream and an audio stream; returns the number of
/// video frames. `context` goes into the failure messages.
pub fn h264_video_frames_with_audio(path: &std::path::Path, context: &str) -> u64 {
    let streams = probe(path);
    let video = streams
        .iter()
        .find(|s| s.0 == "video")
        .unwrap_or_else(|| panic!("{context}: no video stream in {streams:?}"));
    assert_eq!(video.1, "h264", "{context}: {streams:?}");
    assert!(
        streams.iter().any(|s| s.0 == "audio"),
        "{context}: no audio stream in {streams:?}"
    );
    video.2
}

/// Tracing for tests (once).
pub fn init_tracing() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(std::env::var("RUST_LOG").unwrap_or_else(|_| "warn".into()))
        .with_test_writer()
        .try_init();
}

// ---------------------------------------------------------------------------------------------
// Independent peers (interop): child processes, free ports, moq-relay-ietf
// ---------------------------------------------------------------------------------------------

/// A child process whose stdout and stderr go to files, killed (and reaped) on drop, so a
/// failing or hanging test leaves no process behind.
pub struct ChildGuard {
    name: String,
    child: Option<std::process::Child>,
    stdout: PathBuf,
    stderr: PathBuf,
}

impl ChildGuard {
    /// Spawns `cmd` with stdin closed and stdout/stderr written to `DIR/NAME.stdout` and
    /// `DIR/NAME.stderr` (files never fill up and block the child the way pipes can).
    pub fn spawn(name: &str, cmd: &mut Command, dir: &std::path::Path) -> Self {
        let stdout = dir.join(format!("{name}.stdout"));
        let stderr = dir.join(format!("{name}.stderr"));
        let child = cmd
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(&stdout).expect("create stdout log"))
            .stderr(std::fs::File::create(&stderr).expect("create stderr log"))
            .spawn()
            .unwrap_or_else(|e| panic!("could not start {name} ({cmd:?}): {e}"));
        Self {
            name: name.to_string(),
            child: Some(child),
            stdout,
            stderr,
        }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// The child's process id, while it runs.
    pub fn id(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }

    /// What the child wrote to stdout so far.
    pub fn stdout(&self) -> String {
        std::fs::read_to_string(&self.stdout).unwrap_or_default()
    }

    /// What the child wrote to stderr so far.
    pub fn stderr(&self) -> String {
        std::fs::read_to_string(&self.stderr).unwrap_or_default()
    }

    /// The last `n` lines of stderr, for assertion messages.
    pub fn stderr_tail(&self, n: usize) -> String {
        let err = self.stderr();
        let lines: Vec<&str> = err.lines().collect();
        lines[lines.len().saturating_sub(n)..].join("\n")
    }

    /// The exit status if the child has exited, without waiting.
    pub fn try_wait(&mut self) -> Option<std::process::ExitStatus> {
        self.child
            .as_mut()
            .and_then(|c| c.try_wait().ok().flatten())
    }

    /// Waits up to `timeout` for the child to exit. On timeout the child is killed and `None`
    /// is returned.
    pub fn wait_timeout(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        let deadline = std::time::Instant::now() + timeout;
        loop {
            if let Some(status) = self.try_wait() {
                return Some(status);
            }
            if std::time::Instant::now() >= deadline {
                self.kill();
                return None;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Polls until `ready(stdout, stderr)` holds (true), the child exits or `timeout` passes
    /// (false in both cases).
    pub fn wait_for_output(
        &mut self,
        timeout: Duration,
        ready: impl Fn(&str, &str) -> bool,
    ) -> bool {
        let deadline = std::time::Instant::now() + timeout;
        loop {
            if ready(&self.stdout(), &self.stderr()) {
                return true;
            }
            if self.try_wait().is_some() {
                return ready(&self.stdout(), &self.stderr());
            }
            if std::time::Instant::now() >= deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Kills the child (if still running) and reaps it.
    pub fn kill(&mut self) {
        if let Some(child) = self.child.as_mut() {
            if child.try_wait().ok().flatten().is_none() {
                let _ = child.kill();
            }
            let _ = child.wait();
        }
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        self.kill();
    }
}

/// `ffmpeg -re` pushing a 320x240 30 fps test pattern (libx264 at x264's `veryfast`, so with
/// B-frames, a keyframe every 2 s) and a 440 Hz tone (AAC, 48 kHz) for `seconds` to an RTMP
/// `url`, the way OBS publishes (`-f flv rtmp://HOST:PORT/live/KEY`, or `rtmps://`).
pub fn ffmpeg_rtmp_push(name: &str, url: &str, seconds: u32, dir: &std::path::Path) -> ChildGuard {
    ffmpeg_push(name, "flv", url, seconds, dir, AAC)
}

/// The same media as [`ffmpeg_rtmp_push`] in MPEG-TS to an SRT `url`, the way OBS publishes
/// over SRT (`-f mpegts "srt://HOST:PORT?streamid=KEY"`).
pub fn ffmpeg_srt_push(name: &str, url: &str, seconds: u32, dir: &std::path::Path) -> ChildGuard {
    ffmpeg_push(name, "mpegts", url, seconds, dir, AAC)
}

/// As [`ffmpeg_srt_push`], with Opus audio (libopus, 20 ms packets) in the MPEG-TS.
pub fn ffmpeg_srt_push_opus(
    name: &str,
    url: &str,
    seconds: u32,
    dir: &std::path::Path,
) -> ChildGuard {
    let opus = &["-c:a", "libopus", "-b:a", "64k", "-frame_duration", "20"];
    ffmpeg_push(name, "mpegts", url, seconds, dir, opus)
}

/// FFmpeg's audio encoder arguments for AAC, the default of the pushes.
const AAC: &[&str] = &["-c:a", "aac", "-b:a", "96k"];

fn ffmpeg_push(
    name: &str,
    format: &str,
    url: &str,
    seconds: u32,
    dir: &std::path::Path,
    audio: &[&str],
) -> ChildGuard {
    let mut cmd = Command::new("ffmpeg");
    cmd.args(["-hide_banner", "-v", "error", "-re"])
        .args(["-f", "lavfi", "-i", "testsrc2=size=320x240:rate=30"])
        .args(["-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000"])
        .args(["-t", &seconds.to_string()])
        .args([
            "-c:v", "libx264", "-preset", "veryfast", "-pix_fmt", "yuv420p",
        ])
        .args(["-g", "60"])
        .args(audio)
        .args(["-f", format, url]);
    ChildGuard::spawn(name, &mut cmd, dir)
}

/// A UDP port that was free a moment ago on `[::]` (dual-stack on Linux, so on 127.0.0.1 too).
/// Another process may take it before the caller binds it: callers retry on bind failure.
pub fn free_udp_port() -> u16 {
    let socket = std::net::UdpSocket::bind("[::]:0").expect("bind a UDP socket on [::]:0");
    socket.local_addr().unwrap().port()
}

/// Path of an independent MoQ peer (`moq-relay-ietf`, `moq-clock-ietf`, `moq-test-client`),
/// installed by `cargo install` (scripts/setup.sh): looked up on `PATH`, then in
/// `$CARGO_HOME/bin` and `~/.cargo/bin`.
pub fn peer_bin(name: &str) -> PathBuf {
    let mut dirs: Vec<PathBuf> = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect())
        .unwrap_or_default();
    if let Some(home) = std::env::var_os("CARGO_HOME") {
        dirs.push(PathBuf::from(home).join("bin"));
    }
    if let Some(home) = std::env::var_os("HOME") {
        dirs.push(PathBuf::from(home).join(".cargo/bin"));
    }
    dirs.into_iter()
        .map(|d| d.join(name))
        .find(|p| p.is_file())
        .unwrap_or_else(|| panic!("{name} is not installed: run scripts/setup.sh (it `cargo install`s the MoQ interop peers)"))
}

/// Writes a self-signed ECDSA P-256 certificate for `localhost`/127.0.0.1/::1, valid 10 days,
/// as `DIR/cert.pem` and `DIR/key.pem` (with the `openssl` program). Returns (cert, key).
pub fn write_test_certificate(dir: &std::path::Path) -> (PathBuf, PathBuf) {
    let cert = dir.join("cert.pem");
    let key = dir.join("key.pem");
    let out = Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
        ])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .args(["-days", "10", "-subj", "/CN=localhost"])
        .args([
            "-addext",
            "subjectAltName=DNS:localhost,IP:127.0.0.1,IP:::1",
        ])
        .stdin(Stdio::null())
        .output()
        .expect("the openssl program runs");
    assert!(
        out.status.success(),
        "openssl failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    (cert, key)
}

/// Runs `moq-test-client --test setup-only` against `url` (at most 5 s): true when it passes.
pub fn moq_setup_succeeds(url: &str, dir: &std::path::Path) -> bool {
    let mut cmd = Command::new(peer_bin("moq-test-client"));
    cmd.args([
        "--relay",
        url,
        "--tls-disable-verify",
        "--test",
        "setup-only",
    ]);
    let mut probe = ChildGuard::spawn("setup-probe", &mut cmd, dir);
    matches!(probe.wait_timeout(Duration::from_secs(5)), Some(s) if s.success())
        && probe.stdout().lines().any(|l| l.starts_with("ok 1"))
}

/// Cloudflare's `moq-relay-ietf` (an independent draft-18 relay) on a free UDP port, with its
/// certificate and coordinator file in a temporary directory; killed on drop.
pub struct MoqRelayIetf {
    pub port: u16,
    pub child: ChildGuard,
    pub dir: TempDir,
}

impl MoqRelayIetf {
    /// Starts the relay and waits (up to 15 s) until a MoQ SETUP succeeds against it. Retries
    /// on another port when the chosen one was taken in the meantime.
    pub fn start() -> Self {
        let dir = TempDir::new("moq-relay-ietf");
        let (cert, key) = write_test_certificate(&dir.0);
        let mut last_err = String::new();
        for attempt in 0..5 {
            let port = free_udp_port();
            let mut cmd = Command::new(peer_bin("moq-relay-ietf"));
            cmd.arg("--bind")
                .arg(format!("[::]:{port}"))
                .arg("--tls-cert")
                .arg(&cert)
                .arg("--tls-key")
                .arg(&key)
                .arg("--coordinator-file")
                .arg(dir.path("coordinator.json"));
            let mut child =
                ChildGuard::spawn(&format!("moq-relay-ietf-{attempt}"), &mut cmd, &dir.0);
            let url = format!("https://localhost:{port}");
            let deadline = std::time::Instant::now() + Duration::from_secs(15);
            while std::time::Instant::now() < deadline && child.try_wait().is_none() {
                if moq_setup_succeeds(&url, &dir.0) {
                    return Self { port, child, dir };
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            last_err = format!("exit {:?}: {}", child.try_wait(), child.stderr_tail(20));
        }
        panic!("moq-relay-ietf did not start: {last_err}");
    }

    /// `https://localhost:PORT/` or `moqt://localhost:PORT`.
    pub fn url(&self, scheme: &str) -> String {
        match scheme {
            "moqt" => format!("moqt://localhost:{}", self.port),
            _ => format!("https://localhost:{}/", self.port),
        }
    }
}
pub mod speech;

/// Log text without its ANSI colour sequences (`ESC [ ... m`).
pub fn without_colours(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c == '\x1b' {
            for c in chars.by_ref() {
                if c == 'm' {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// Client TLS that accepts any certificate (the test relays' are generated).
pub fn insecure_tls() -> moqcast_client::ClientTls {
    moqcast_client::ClientTls {
        disable_verify: true,
        ..Default::default()
    }
}

/// Waits until the relay at `http` lists `broadcast` at `/broadcasts`, for at most `within`;
/// panics if `child` (what should announce it) exits first.
pub async fn wait_announced(
    http: std::net::SocketAddr,
    broadcast: &str,
    child: &mut ChildGuard,
    within: Duration,
) {
    let needle = format!("\"broadcast\":\"{broadcast}\"");
    let deadline = std::time::Instant::now() + within;
    loop {
        let list = tokio::task::spawn_blocking(move || http_get(http, "/broadcasts"))
            .await
            .unwrap();
        if list.contains(&needle) {
            return;
        }
        assert!(
            child.try_wait().is_none(),
            "{} exited: {}",
            child.name(),
            child.stderr_tail(20)
        );
        assert!(
            std::time::Instant::now() < deadline,
            "{broadcast} was not announced within {within:?}: {list}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Relay tokens for tests: an HS256 key written where `--auth-key DIR` reads it, and the
/// tokens it signs.
pub mod tokens {
    use std::path::Path;
    use std::time::{Duration, SystemTime};

    use moq_token::{Algorithm, Claims, Key, KeyId};

    /// A new HS256 key with id `id`, written to `dir/<id>.jwk`.
    pub fn key(dir: &Path, id: &str) -> Key {
        let key = Key::generate(Algorithm::HS256, Some(KeyId::decode(id).unwrap())).unwrap();
        key.to_file(dir.join(format!("{id}.jwk"))).unwrap();
        key
    }

    /// A token of `key` that may publish `put` under `root`, valid for 10 minutes.
    pub fn publish_token(key: &Key, root: &str, put: &[&str]) -> String {
        let claims = Claims::default()
            .with_root(root)
            .with_publish(put.iter().copied())
            .with_expires(Some(SystemTime::now() + Duration::from_secs(600)));
        key.sign(&claims).unwrap()
    }
}
