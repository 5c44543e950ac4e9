//! The browser viewer (web/) in a real headless Chromium, and in a real headless Firefox: a
//! relay serving the built viewer, `moqcast-publish` processes, and
//! tests/browser/viewer.test.mjs driving Debian's chromium through playwright-core, or Debian's
//! firefox-esr through puppeteer-core (WebDriver BiDi). Nothing is built here: scripts/setup.sh
//! installs both browsers and builds the viewer (`npm --prefix web ci && npm --prefix web run
//! build`). When any of that is missing these tests fail and say so; they never skip.
//!
//! The browser tests take a lock so that only one Chromium decodes video at a time on a
//! 2-core machine, whatever the test runner's parallelism.

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    process::Command,
    time::{Duration, Instant, SystemTime},
};

use moqcast_relay::{Args, Config, Relay};
use moqcast_tests::{command, free_udp_port, init_tracing, ChildGuard, TempDir, TestRelay};

const SETUP_HINT: &str = "run scripts/setup.sh (it installs Debian's chromium and firefox-esr \
                          and runs `npm --prefix web ci && npm --prefix web run build`)";

/// The browsers the scenarios run in.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Browser {
    /// Debian's chromium, through playwright-core.
    Chromium,
    /// Debian's firefox-esr, through puppeteer-core.
    Firefox,
}

/// Longest a viewer scenario may run.
const SCENARIO_TIMEOUT: Duration = Duration::from_secs(60);

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn web_dist() -> PathBuf {
    repo().join("web/dist")
}

/// Newest modification time of the files under `dir`.
fn newest_mtime(dir: &Path) -> Option<SystemTime> {
    let mut newest = None;
    for entry in std::fs::read_dir(dir).ok()?.flatten() {
        let path = entry.path();
        let t = if path.is_dir() {
            newest_mtime(&path)
        } else {
            entry.metadata().ok()?.modified().ok()
        };
        newest = newest.max(t);
    }
    newest
}

/// Panics (the test fails, it does not skip) when chromium, node, playwright-core or the
/// built viewer is missing, or the build is older than the viewer's sources.
fn require_browser_tools() {
    require_browser(Browser::Chromium);
}

/// [`require_browser_tools`] for `browser`: its program and its driver from npm.
fn require_browser(browser: Browser) {
    let mut missing = Vec::new();
    let (program, driver) = match browser {
        Browser::Chromium => ("/usr/bin/chromium", "playwright-core"),
        Browser::Firefox => ("/usr/bin/firefox-esr", "puppeteer-core"),
    };
    if !Path::new(program).exists() {
        missing.push(format!("Debian's {program}"));
    }
    if Command::new("node")
        .arg("--version")
        .output()
        .map(|o| !o.status.success())
        .unwrap_or(true)
    {
        missing.push("node".to_string());
    }
    if !repo().join("web/node_modules").join(driver).is_dir() {
        missing.push("web/node_modules (npm --prefix web ci)".to_string());
    }
    let bundle = web_dist().join("assets/viewer.js");
    if !web_dist().join("watch.html").is_file() || !bundle.is_file() {
        missing.push("the built viewer in web/dist (npm --prefix web run build)".to_string());
    }
    assert!(
        missing.is_empty(),
        "the browser tests need {}: {SETUP_HINT}",
        missing.join(", ")
    );
    let built = std::fs::metadata(&bundle).and_then(|m| m.modified()).ok();
    let sources = ["web/src", "web/static", "web/build"]
        .iter()
        .filter_map(|d| newest_mtime(&repo().join(d)))
        .max();
    assert!(
        built >= sources,
        "web/dist is older than the viewer's sources: rebuild it with `npm --prefix web run build`"
    );
}

/// A cross-process lock: one browser test at a time. Stale locks (their process gone) are
/// taken over.
struct BrowserLock(PathBuf);

impl BrowserLock {
    fn acquire() -> Self {
        let path = std::env::temp_dir().join("moqcast-browser-tests.lock");
        let deadline = Instant::now() + Duration::from_secs(240);
        loop {
            match std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&path)
            {
                Ok(mut f) => {
                    use std::io::Write;
                    let _ = write!(f, "{}", std::process::id());
                    return Self(path);
                }
                Err(_) => {
                    let holder = std::fs::read_to_string(&path).unwrap_or_default();
                    let alive = holder
                        .trim()
                        .parse::<u32>()
                        .is_ok_and(|pid| Path::new(&format!("/proc/{pid}")).exists());
                    if !alive && !holder.is_empty() {
                        let _ = std::fs::remove_file(&path);
                        continue;
                    }
                    assert!(
                        Instant::now() < deadline,
                        "waited 4 minutes for {} (held by pid {holder})",
                        path.display()
                    );
                    std::thread::sleep(Duration::from_millis(200));
                }
            }
        }
    }
}

impl Drop for BrowserLock {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// Where the scenarios save their screenshots.
fn screenshot_path(name: &str) -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo().join("target"));
    let dir = target.join("browser-screenshots");
    std::fs::create_dir_all(&dir).unwrap();
    dir.join(format!("{name}.png"))
}

/// `moqcast-publish --input testsrc` for `broadcast`, with more flags, for two minutes.
fn publisher(
    url: &str,
    fingerprint: &str,
    broadcast: &str,
    extra: &[&str],
    dir: &TempDir,
) -> ChildGuard {
    let mut flags = vec!["--input", "testsrc", "--duration", "120"];
    flags.extend_from_slice(extra);
    publisher_of(url, fingerprint, broadcast, &flags, dir)
}

/// `moqcast-publish` for `broadcast` with these flags (`--input` among them).
fn publisher_of(
    url: &str,
    fingerprint: &str,
    broadcast: &str,
    flags: &[&str],
    dir: &TempDir,
) -> ChildGuard {
    let mut cmd = command("moqcast-publish");
    cmd.args([
        "--url",
        url,
        "--broadcast",
        broadcast,
        "--tls-fingerprint",
        fingerprint,
    ]);
    cmd.args(flags);
    ChildGuard::spawn(
        &format!("publish-{}", broadcast.replace('/', "_")),
        &mut cmd,
        &dir.0,
    )
}

/// Waits until the relay lists `broadcast` at `/broadcasts` (15 s at most).
async fn wait_announced(http: SocketAddr, broadcast: &str, publisher: &mut ChildGuard) {
    moqcast_tests::wait_announced(http, broadcast, publisher, Duration::from_secs(15)).await;
}

/// Runs tests/browser/viewer.test.mjs; panics with its output unless it passes.
fn run_scenario(scenario: &str, url: &str, env: &[(&str, String)], dir: &Path) {
    let mut cmd = Command::new("node");
    cmd.arg(repo().join("tests/browser/viewer.test.mjs"))
        .env("MOQCAST_VIEWER_URL", url)
        .env("MOQCAST_SCENARIO", scenario)
        .env("MOQCAST_SCREENSHOT", screenshot_path(scenario));
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut node = ChildGuard::spawn(&format!("viewer-{scenario}"), &mut cmd, dir);
    let status = node.wait_timeout(SCENARIO_TIMEOUT);
    let (out, err) = (node.stdout(), node.stderr());
    println!("{out}");
    eprintln!("{err}");
    assert!(
        matches!(status, Some(s) if s.success()),
        "viewer scenario {scenario} failed ({}):\n{out}\n{err}",
        status.map_or("timed out".to_string(), |s| s.to_string())
    );
}

fn watch_url(http: SocketAddr, quic_port: u16, broadcast: &str) -> String {
    format!("http://{http}/watch/{broadcast}?relay=https://127.0.0.1:{quic_port}/")
}

/// The viewer plays `moqcast-publish --input testsrc`: 100 video and 100 audio frames within
/// 10 s, the test pattern on the canvas, a latency readout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn viewer_plays_the_test_source() {
    require_browser_tools();
    let _lock = tokio::task::spawn_blocking(BrowserLock::acquire)
        .await
        .unwrap();
    init_tracing();
    let web = web_dist();
    let relay = TestRelay::start(&["--web-dir", web.to_str().unwrap()]).await;
    let dir = TempDir::new("browser-basic");
    let mut publish = publisher(&relay.url("https"), &relay.fingerprint, "demo", &[], &dir);
    wait_announced(relay.http, "demo", &mut publish).await;

    let url = watch_url(relay.http, relay.port(), "demo");
    let path = dir.0.clone();
    tokio::task::spawn_blocking(move || run_scenario("basic", &url, &[], &path))
        .await
        .unwrap();
    assert!(
        publish.try_wait().is_none(),
        "the publisher kept running: {}",
        publish.stderr_tail(20)
    );
    relay.stop().await;
}

/// The viewer in headless Firefox (Debian's firefox-esr 153, driven by puppeteer-core over
/// WebDriver BiDi) plays `moqcast-publish --input testsrc` as in Chromium: 100 video and 100
/// audio frames within 10 s, the test pattern on the canvas, a latency readout, on its first
/// connection; leaving the page ends its relay session at once. Firefox's WebTransport sends no subprotocol and has no `protocol` attribute, so
/// the relay and the viewer both fall back to moqt-18 (web/build/patch-moq.mjs); before that
/// fallback every session ended at once ("unknown message type 0x20") and the viewer
/// reconnected in a loop, which the relay's session count below would show.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn viewer_plays_in_firefox() {
    require_browser(Browser::Firefox);
    let _lock = tokio::task::spawn_blocking(BrowserLock::acquire)
        .await
        .unwrap();
    init_tracing();
    let web = web_dist();
    let relay = TestRelay::start(&["--web-dir", web.to_str().unwrap()]).await;
    let dir = TempDir::new("browser-firefox");
    let mut publish = publisher(&relay.url("https"), &relay.fingerprint, "demo", &[], &dir);
    wait_announced(relay.http, "demo", &mut publish).await;

    let url = watch_url(relay.http, relay.port(), "demo");
    let path = dir.0.clone();
    let env = [
        ("MOQCAST_BROWSER", "firefox".to_string()),
        ("MOQCAST_EXPECT_NO_RECONNECT", "1".to_string()),
        // Firefox keeps a page's WebTransport session after the page is left; the viewer
        // closes it on `pagehide`.
        ("MOQCAST_EXPECT_LEAVE_CLOSES", "1".to_string()),
        // The development certificate, pinned by hash as in Chromium.
        ("MOQCAST_EXPECT_PINNED", relay.fingerprint.clone()),
        (
            "MOQCAST_SCREENSHOT",
            screenshot_path("basic-firefox").display().to_string(),
        ),
    ];
    tokio::task::spawn_blocking(move || run_scenario("basic", &url, &env, &path))
        .await
        .unwrap();
    // The publisher's session and one of the viewer: a relay that ended the viewer's session
    // would have seen it come back again and again.
    let sessions = relay
        .state
        .metrics
        .sessions_total
        .load(std::sync::atomic::Ordering::Relaxed);
    assert_eq!(
        sessions, 2,
        "the relay accepted the publisher's session and one viewer session"
    );
    assert!(
        publish.try_wait().is_none(),
        "the publisher kept running: {}",
        publish.stderr_tail(20)
    );
    relay.stop().await;
}

/// The viewer loaded over HTTPS from the relay itself (`--https-bind`, no proxy), with the
/// development certificate: Chromium accepts the page's certificate by its key
/// (`--ignore-certificate-errors-spki-list`, as a developer would), the page finds the QUIC port
/// in `/viewer.json` (no `?relay=`), pins the certificate by hash as `/viewer.json` says, and
/// plays.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn viewer_plays_over_https_from_the_relay() {
    require_browser_tools();
    let _lock = tokio::task::spawn_blocking(BrowserLock::acquire)
        .await
        .unwrap();
    init_tracing();
    let web = web_dist();
    let relay = TestRelay::start(&[
        "--web-dir",
        web.to_str().unwrap(),
        "--https-bind",
        "127.0.0.1:0",
    ])
    .await;
    let dir = TempDir::new("browser-https");
    let mut publish = publisher(&relay.url("https"), &relay.fingerprint, "demo", &[], &dir);
    wait_announced(relay.http, "demo", &mut publish).await;
    https_scenario(&relay, relay.fingerprint.clone(), &dir).await;
    relay.stop().await;
}

/// Runs the basic scenario on `https://127.0.0.1:HTTPS/watch/demo`, Chromium trusting the
/// relay's key for HTTPS, the viewer expected to pin `pinned`. (Chromium's
/// `--ignore-certificate-errors*` flags do not reach WebTransport: an unpinned session needs a
/// certificate from a CA the browser trusts, which this machine cannot make Chromium trust.)
async fn https_scenario(relay: &TestRelay, pinned: String, dir: &TempDir) {
    let spki = relay
        .state
        .tls
        .current()
        .spki_sha256_base64()
        .expect("an ECDSA key");
    let url = format!("https://{}/watch/demo", relay.https.unwrap());
    let env = [
        (
            "MOQCAST_CHROMIUM_ARGS",
            format!("--ignore-certificate-errors-spki-list={spki}"),
        ),
        ("MOQCAST_EXPECT_PINNED", pinned),
    ];
    let path = dir.0.clone();
    tokio::task::spawn_blocking(move || run_scenario("basic-https", &url, &env, &path))
        .await
        .unwrap();
}

/// A caption track from `--captions` and a test dub from `--test-dub es`: cues on screen at
/// their times, the caption menu, captions off and on, switching audio tracks, and a caption
/// track found in the sidecar's namespace `<broadcast>/ai`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn viewer_shows_captions_and_switches_audio() {
    require_browser_tools();
    let _lock = tokio::task::spawn_blocking(BrowserLock::acquire)
        .await
        .unwrap();
    init_tracing();
    let web = web_dist();
    let relay = TestRelay::start(&["--web-dir", web.to_str().unwrap()]).await;
    let dir = TempDir::new("browser-captions");
    // A cue every 1.5 s, each shown for 1.2 s, for two minutes.
    let vtt = dir.path("captions.vtt");
    let mut text = String::from("WEBVTT\n");
    for i in 0..80u64 {
        let start = 1000 + i * 1500;
        let t = |ms: u64| {
            format!(
                "{:02}:{:02}:{:02}.{:03}",
                ms / 3_600_000,
                ms / 60_000 % 60,
                ms / 1000 % 60,
                ms % 1000
            )
        };
        text.push_str(&format!(
            "\nc{i}\n{} --> {}\nCaption number {}\n",
            t(start),
            t(start + 1200),
            i + 1
        ));
    }
    std::fs::write(&vtt, text).unwrap();
    let extra = [
        "--captions",
        vtt.to_str().unwrap(),
        "--captions-lang",
        "en",
        "--test-dub",
        "es",
    ];
    let mut publish = publisher(
        &relay.url("https"),
        &relay.fingerprint,
        "live/captioned",
        &extra,
        &dir,
    );
    wait_announced(relay.http, "live/captioned", &mut publish).await;

    // A stand-in for the AI sidecar: another publisher in `<broadcast>/ai` whose catalog has a
    // French caption track (one cue for the whole test, as its media clock is not the broadcast's).
    let fr = dir.path("captions-fr.vtt");
    std::fs::write(
        &fr,
        "WEBVTT\n\n00:00:00.000 --> 00:10:00.000\nSous-titres en français\n",
    )
    .unwrap();
    let extra = ["--captions", fr.to_str().unwrap(), "--captions-lang", "fr"];
    let mut sidecar = publisher(
        &relay.url("https"),
        &relay.fingerprint,
        "live/captioned/ai",
        &extra,
        &dir,
    );
    wait_announced(relay.http, "live/captioned/ai", &mut sidecar).await;

    let url = watch_url(relay.http, relay.port(), "live/captioned");
    let path = dir.0.clone();
    let env = [
        ("MOQCAST_VTT", vtt.display().to_string()),
        (
            "MOQCAST_SIDECAR_TRACK",
            "live/captioned/ai|captions-fr\tCaptions (fr)\tSous-titres en français".to_string(),
        ),
    ];
    tokio::task::spawn_blocking(move || run_scenario("captions", &url, &env, &path))
        .await
        .unwrap();
    relay.stop().await;
}

/// Live captions from the real AI sidecar: espeak-ng speech published in a loop, captioned by
/// `moqcast-sidecar` with Whisper tiny.en, shown by the viewer from `<broadcast>/ai`; then the
/// sidecar's Spanish translation (`--translate es`, Apertium), listed in the caption menu and
/// shown.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn viewer_shows_live_sidecar_captions() {
    require_browser_tools();
    moqcast_tests::speech::whisper_model_dir();
    let _lock = tokio::task::spawn_blocking(BrowserLock::acquire)
        .await
        .unwrap();
    init_tracing();
    let web = web_dist();
    let relay = TestRelay::start(&["--web-dir", web.to_str().unwrap()]).await;
    let dir = TempDir::new("browser-live-captions");
    let sentences = [
        "This is a live broadcast with automatic captions.",
        "The weather today is sunny and warm.",
    ];
    let wav = moqcast_tests::speech::speech_wav(&dir.0, "talk", &sentences, "en-us", 1.0, 1.0);
    let media = moqcast_tests::speech::speech_video(&wav, &dir.path("talk.mp4"), "aac");
    let extra = ["--loop", "--input", media.to_str().unwrap()];
    let mut publish = publisher_of(
        &relay.url("https"),
        &relay.fingerprint,
        "live/talk",
        &extra,
        &dir,
    );
    wait_announced(relay.http, "live/talk", &mut publish).await;
    let mut sidecar = {
        let extra = ["--broadcast", "live/talk", "--translate", "es"];
        let mut cmd =
            moqcast_tests::speech::sidecar_command(&relay.url("https"), &relay.fingerprint, &extra);
        ChildGuard::spawn("sidecar", &mut cmd, &dir.0)
    };
    wait_announced(relay.http, "live/talk/ai", &mut sidecar).await;

    let url = watch_url(relay.http, relay.port(), "live/talk");
    let path = dir.0.clone();
    // The Spanish track is Apertium's translation of the English captions.
    let env = [
        (
            "MOQCAST_EXPECT_WORDS",
            "broadcast,weather,sunny,warm".to_string(),
        ),
        (
            "MOQCAST_EXPECT_TRANSLATED",
            "es\tEspañol (traducción automática)\ttiempo,soleado,hoy,tibio,emisión,subtítulos"
                .to_string(),
        ),
    ];
    tokio::task::spawn_blocking(move || run_scenario("live-captions", &url, &env, &path))
        .await
        .unwrap();
    drop(sidecar);
    relay.stop().await;
}

/// The sidecar's Spanish dub (`--translate es --dub es`) in the viewer: listed in the audio menu
/// as "Spanish (dubbed)", chosen without reloading; the picture waits for the dub's lag (the
/// latency readout says so) while its audio decodes and plays in time; the original chosen
/// again returns to the live edge.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn viewer_switches_to_the_dub_and_back() {
    dub_scenario("chromium").await;
}

/// The same in Firefox ESR (puppeteer-core over WebDriver BiDi).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn viewer_switches_to_the_dub_and_back_in_firefox() {
    dub_scenario("firefox").await;
}

async fn dub_scenario(browser: &'static str) {
    require_browser(if browser == "firefox" {
        Browser::Firefox
    } else {
        Browser::Chromium
    });
    moqcast_tests::speech::whisper_model_dir();
    let _lock = tokio::task::spawn_blocking(BrowserLock::acquire)
        .await
        .unwrap();
    init_tracing();
    let web = web_dist();
    let relay = TestRelay::start(&["--web-dir", web.to_str().unwrap()]).await;
    let dir = TempDir::new(&format!("browser-dub-{browser}"));
    let sentences = [
        "This is a live broadcast with a Spanish voice.",
        "The weather today is sunny and warm.",
    ];
    let wav = moqcast_tests::speech::speech_wav(&dir.0, "talk", &sentences, "en-us", 1.0, 1.0);
    let media = moqcast_tests::speech::speech_video(&wav, &dir.path("talk.mp4"), "aac");
    let extra = ["--loop", "--input", media.to_str().unwrap()];
    let mut publish = publisher_of(
        &relay.url("https"),
        &relay.fingerprint,
        "live/dub",
        &extra,
        &dir,
    );
    wait_announced(relay.http, "live/dub", &mut publish).await;
    let mut sidecar = {
        let extra = [
            "--broadcast",
            "live/dub",
            "--translate",
            "es",
            "--dub",
            "es",
        ];
        let mut cmd =
            moqcast_tests::speech::sidecar_command(&relay.url("https"), &relay.fingerprint, &extra);
        ChildGuard::spawn("sidecar", &mut cmd, &dir.0)
    };
    wait_announced(relay.http, "live/dub/ai", &mut sidecar).await;
    let url = watch_url(relay.http, relay.port(), "live/dub");
    let path = dir.0.clone();
    let env = [
        ("MOQCAST_EXPECT_DUB", "es\tSpanish (dubbed)".to_string()),
        ("MOQCAST_BROWSER", browser.to_string()),
    ];
    tokio::task::spawn_blocking(move || run_scenario("dub", &url, &env, &path))
        .await
        .unwrap();
    drop(sidecar);
    relay.stop().await;
}

/// A relay on fixed ports, so that a restarted one is found at the same address.
struct FixedRelay {
    fingerprint: String,
    stop: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
}

impl FixedRelay {
    async fn start(udp: u16, http: SocketAddr) -> Self {
        let web = web_dist();
        let argv = [
            "moqcast-relay".to_string(),
            "--bind".into(),
            format!("[::]:{udp}"),
            "--http-bind".into(),
            http.to_string(),
            "--tls-generate".into(),
            "localhost,127.0.0.1,::1".into(),
            "--web-dir".into(),
            web.display().to_string(),
            "--drain-ms".into(),
            "0".into(),
        ];
        let config =
            Config::resolve(<Args as clap::Parser>::parse_from(argv)).expect("valid relay config");
        // The old relay's sockets may take a moment to go.
        let deadline = Instant::now() + Duration::from_secs(10);
        let relay = loop {
            match Relay::bind(config.clone()).await {
                Ok(r) => break r,
                Err(e) if Instant::now() < deadline => {
                    tracing::debug!("relay bind failed, retrying: {e:#}");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                Err(e) => panic!("relay could not bind {udp}/{http}: {e:#}"),
            }
        };
        let fingerprint = relay.state().fingerprint();
        let (stop, rx) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(relay.run(async move {
            let _ = rx.await;
        }));
        Self {
            fingerprint,
            stop,
            task,
        }
    }

    async fn stop(self) {
        let _ = self.stop.send(());
        let _ = tokio::time::timeout(Duration::from_secs(5), self.task).await;
    }
}

/// The relay restarts (new process state, new certificate): the viewer notices, reconnects on
/// its own and plays again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn viewer_reconnects_after_the_relay_restarts() {
    require_browser_tools();
    let _lock = tokio::task::spawn_blocking(BrowserLock::acquire)
        .await
        .unwrap();
    init_tracing();
    let udp = free_udp_port();
    let http: SocketAddr = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let dir = TempDir::new("browser-reconnect");
    let quic_url = format!("https://localhost:{udp}/");
    let mut relay = FixedRelay::start(udp, http).await;
    let mut publish = publisher(&quic_url, &relay.fingerprint, "demo", &[], &dir);
    wait_announced(http, "demo", &mut publish).await;

    let control = dir.path("control");
    std::fs::write(&control, "").unwrap();
    let url = watch_url(http, udp, "demo");
    let (path, env) = (
        dir.0.clone(),
        [("MOQCAST_CONTROL", control.display().to_string())],
    );
    let mut viewer =
        tokio::task::spawn_blocking(move || run_scenario("reconnect", &url, &env, &path));

    // Restart the relay (and the publisher, which ends with its session) when asked.
    let deadline = Instant::now() + SCENARIO_TIMEOUT;
    let mut restarted = false;
    loop {
        tokio::select! {
            res = &mut viewer => {
                res.unwrap();
                assert!(restarted, "the scenario ended without asking for a restart");
                break;
            }
            () = tokio::time::sleep(Duration::from_millis(100)) => {}
        }
        assert!(
            Instant::now() < deadline,
            "the reconnect scenario did not finish"
        );
        if !restarted && std::fs::read_to_string(&control).unwrap_or_default() == "restart" {
            publish.kill();
            relay.stop().await;
            tokio::time::sleep(Duration::from_millis(1500)).await;
            relay = FixedRelay::start(udp, http).await;
            publish = publisher(&quic_url, &relay.fingerprint, "demo", &[], &dir);
            wait_announced(http, "demo", &mut publish).await;
            std::fs::write(&control, "restarted").unwrap();
            restarted = true;
        }
    }
    relay.stop().await;
}

/// The relay serves the viewer and an index of broadcasts, and says how to build a missing one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relay_serves_the_viewer_pages() {
    init_tracing();
    let missing = TestRelay::start(&["--web-dir", "/nonexistent/moqcast-web"]).await;
    let page = missing.http_get("/watch/demo");
    assert!(
        page.contains("npm --prefix web ci && npm --prefix web run build"),
        "{page}"
    );
    assert!(missing.http_get("/").contains("The viewer is not built"));
    let page = missing.http_get("/publish/demo");
    assert!(page.contains("The publish page is not built"), "{page}");
    missing.stop().await;

    // A stand-in viewer directory, so this test needs no npm build.
    let dir = TempDir::new("web-dir");
    std::fs::create_dir_all(dir.path("assets")).unwrap();
    std::fs::write(
        dir.path("watch.html"),
        "<!doctype html><title>viewer</title>",
    )
    .unwrap();
    std::fs::write(dir.path("assets/viewer.js"), "console.log('viewer')").unwrap();
    std::fs::write(
        dir.path("publish.html"),
        "<!doctype html><title>publish</title>",
    )
    .unwrap();
    std::fs::write(dir.path("secret.txt"), "not an asset").unwrap();
    let relay = TestRelay::start(&["--web-dir", dir.0.to_str().unwrap()]).await;
    assert!(relay
        .http_get("/watch/live/demo")
        .contains("<title>viewer</title>"));
    assert_eq!(relay.http_get("/assets/viewer.js"), "console.log('viewer')");
    assert!(relay
        .http_get("/publish/live/demo")
        .contains("<title>publish</title>"));
    assert!(!relay
        .http_get("/assets/../secret.txt")
        .contains("not an asset"));
    assert!(!relay
        .http_get("/assets/%2e%2e/secret.txt")
        .contains("not an asset"));
    let config: serde_json::Value = serde_json::from_str(&relay.http_get("/viewer.json")).unwrap();
    assert_eq!(config["pinCertificate"], true, "{config}");

    // The index lists live broadcasts with links to their viewer pages.
    let mut publish = publisher(
        &relay.url("moqt"),
        &relay.fingerprint,
        "live/index-test",
        &[],
        &dir,
    );
    wait_announced(relay.http, "live/index-test", &mut publish).await;
    let index = relay.http_get("/");
    assert!(
        index.contains("<a href=\"/watch/live/index-test\">live/index-test</a>"),
        "{index}"
    );
    relay.stop().await;
}

/// The viewer's unit tests (TypeScript types, the @moq/net patches, LOC, catalogs, cues,
/// playout clock): `npm --prefix web test`.
#[test]
fn viewer_unit_tests() {
    assert!(
        repo().join("web/node_modules/typescript").is_dir(),
        "web/node_modules is missing: {SETUP_HINT}"
    );
    let out = Command::new("npm")
        .args(["--prefix", "web", "test"])
        .current_dir(repo())
        .output()
        .unwrap_or_else(|e| panic!("npm could not run ({e}): {SETUP_HINT}"));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success(),
        "npm --prefix web test failed:\n{text}"
    );
    assert!(text.contains("# fail 0"), "{text}");
}

/// The viewer plays a broadcast FFmpeg publishes over RTMP (`--rtmp-bind`), the way OBS does:
/// H.264 with B-frames and AAC, 100 video and 100 audio frames within 10 s, as for the test
/// source.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn viewer_plays_an_rtmp_published_broadcast() {
    require_browser_tools();
    let _lock = tokio::task::spawn_blocking(BrowserLock::acquire)
        .await
        .unwrap();
    init_tracing();
    let web = web_dist();
    let relay = TestRelay::start(&[
        "--web-dir",
        web.to_str().unwrap(),
        "--rtmp-bind",
        "127.0.0.1:0",
    ])
    .await;
    let dir = TempDir::new("browser-rtmp");
    let rtmp = relay.rtmp.expect("the relay has --rtmp-bind");
    let url = format!("rtmp://127.0.0.1:{}/live/obs", rtmp.port());
    let mut push = moqcast_tests::ffmpeg_rtmp_push("ffmpeg", &url, 60, &dir.0);
    wait_announced(relay.http, "obs", &mut push).await;

    let url = watch_url(relay.http, relay.port(), "obs");
    let path = dir.0.clone();
    tokio::task::spawn_blocking(move || run_scenario("basic", &url, &[], &path))
        .await
        .unwrap();
    assert!(
        push.try_wait().is_none(),
        "FFmpeg kept publishing: {}",
        push.stderr_tail(20)
    );
    relay.stop().await;
}

/// The publish page (`/publish/{broadcast}`, WHIP from the browser) in headless Chromium with a
/// fake camera and microphone, against a relay with tokens: a wrong token fails with the
/// relay's 401 shown on the page; the right one goes live, and the viewer in another page
/// plays it (100 video and 100 audio frames decoded, a picture on the canvas); Stop ends the
/// publication (a DELETE) and the viewer gets no more frames.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publish_page_goes_live_and_the_viewer_plays_it() {
    use moq_token::{Algorithm, Key, KeyId};
    use moqcast_tests::tokens::{key, publish_token};
    require_browser_tools();
    let _lock = tokio::task::spawn_blocking(BrowserLock::acquire)
        .await
        .unwrap();
    init_tracing();
    let dir = TempDir::new("browser-publish");
    let keys = dir.path("keys");
    std::fs::create_dir_all(&keys).unwrap();
    let page = key(&keys, "page");
    // Same key id, another secret: its tokens do not verify.
    let stranger = Key::generate(Algorithm::HS256, Some(KeyId::decode("page").unwrap())).unwrap();
    let sign = |k: &Key| publish_token(k, "live", &["cam"]);
    let web = web_dist();
    let relay = TestRelay::start(&[
        "--web-dir",
        web.to_str().unwrap(),
        "--auth-key",
        keys.to_str().unwrap(),
        "--auth-public-subscribe",
        "live",
        "--webrtc-addr",
        "127.0.0.1:0",
    ])
    .await;
    let publish_url = |token: &str| {
        format!(
            "http://{}/publish/live/cam?autostart=1&token={token}",
            relay.http
        )
    };
    let env = [
        ("MOQCAST_PUBLISH_URL", publish_url(&sign(&page))),
        ("MOQCAST_PUBLISH_REFUSED_URL", publish_url(&sign(&stranger))),
        (
            "MOQCAST_CHROMIUM_ARGS",
            "--use-fake-device-for-media-stream --use-fake-ui-for-media-stream".to_string(),
        ),
    ];
    let url = watch_url(relay.http, relay.port(), "live/cam");
    let path = dir.0.clone();
    tokio::task::spawn_blocking(move || run_scenario("publish", &url, &env, &path))
        .await
        .unwrap();
    relay.stop().await;
}
