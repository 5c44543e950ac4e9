//! The relay's HTTP side (TCP): certificate fingerprint, health, metrics, and the browser viewer.
//!
//! | route | what |
//! |---|---|
//! | `GET /` | an HTML index of the live broadcasts, linking to their viewer pages |
//! | `GET /watch/{broadcast}` | the viewer page (`watch.html` of the web dir); names may contain `/` |
//! | `GET /publish/{broadcast}` | the publish page (`publish.html`): camera and microphone over WHIP |
//! | `GET /assets/{file}` | the viewer's static assets |
//! | `GET /viewer.json` | what the viewer needs to reach this relay: QUIC port, whether to pin |
//! | `GET /certificate.sha256` | hex SHA-256 of the TLS certificate (for `serverCertificateHashes`) |
//! | `GET /broadcasts` | the live broadcasts and their cached tracks, as JSON |
//! | `GET /healthz`, `GET /metrics` | health and Prometheus metrics |
//! | `POST /whip/{broadcast}`, `PATCH`/`DELETE /whip-session/{id}` | WHIP ingest ([`crate::whip`]) |
//!
//! The public listeners (`--https-bind`, and HTTP/3 on the QUIC port) serve the same routes but
//! `/metrics`, which stays on the plain listener (`--http-bind`, keep it private).
//!
//! The viewer is built by `npm --prefix web run build` into the web dir (`--web-dir`, default
//! `web/dist`); when it is missing, `/watch/...` answers 503 and says how to build it.

use std::{
    path::{Component, Path, PathBuf},
    sync::Arc,
};

use axum::{
    extract::{Path as UrlPath, State},
    http::{header, StatusCode},
    response::{Html, IntoResponse, Response},
    routing::get,
    Router,
};

use crate::{config::TlsSource, RelayState};

/// How to build the viewer, for error messages.
const BUILD_HINT: &str = "npm --prefix web ci && npm --prefix web run build";

/// The viewer page inside the web dir.
const WATCH_PAGE: &str = "watch.html";
/// The publish page in the web directory.
const PUBLISH_PAGE: &str = "publish.html";

/// Concurrent requests on one HTTP/2 connection.
const MAX_HTTP2_STREAMS: u32 = 64;

/// Largest static asset served, in bytes (the viewer bundle is a few hundred KB).
const MAX_ASSET_BYTES: u64 = 16 * 1024 * 1024;

/// Every route: the plain listener's (`--http-bind`).
pub fn router(state: Arc<RelayState>) -> Router {
    routes().route("/metrics", get(metrics)).with_state(state)
}

/// The routes of the public listeners (HTTPS, HTTP/3): all but `/metrics`.
pub fn public_router(state: Arc<RelayState>) -> Router {
    routes().with_state(state)
}

/// Adds `Alt-Svc: h3=":PORT"` (RFC 7838, RFC 9114 §3.1.1) to every response: browsers that
/// load a page over HTTPS then use HTTP/3 on the QUIC port for the next requests.
pub fn with_alt_svc(router: Router, quic_port: u16) -> Router {
    let value = header::HeaderValue::from_str(&format!("h3=\":{quic_port}\"; ma=86400"))
        .expect("a valid header value");
    router.layer(axum::middleware::map_response(
        move |mut response: Response| {
            let value = value.clone();
            async move {
                response.headers_mut().insert(header::ALT_SVC, value);
                response
            }
        },
    ))
}

fn routes() -> Router<Arc<RelayState>> {
    Router::new()
        .route("/", get(index))
        .route("/watch/{*broadcast}", get(watch))
        .route("/publish/{*broadcast}", get(publish))
        .route("/assets/{*file}", get(asset))
        .route("/viewer.json", get(viewer_config))
        .route("/certificate.sha256", get(fingerprint))
        .route("/healthz", get(healthz))
        .route("/broadcasts", get(broadcasts))
        .route(
            "/whip/{*broadcast}",
            axum::routing::post(crate::whip::post).options(crate::whip::options),
        )
        .route(
            "/whip-session/{id}",
            axum::routing::patch(crate::whip::patch)
                .delete(crate::whip::delete)
                .options(crate::whip::options),
        )
}

async fn fingerprint(State(s): State<Arc<RelayState>>) -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, "text/plain"),
            (header::ACCESS_CONTROL_ALLOW_ORIGIN, "*"),
        ],
        s.fingerprint(),
    )
}

async fn healthz() -> &'static str {
    "ok\n"
}

async fn metrics(State(s): State<Arc<RelayState>>) -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        match &s.placement {
            Some(p) => s.metrics.render() + &crate::metrics::render_shards(p),
            None => s.metrics.render(),
        } + &crate::metrics::render_ingests(&s.ingests.list())
            + &crate::metrics::render_tls(&s.tls)
            + &s.cluster.as_ref().map(|c| c.render()).unwrap_or_default(),
    )
}

/// The live broadcasts and their cached tracks, as JSON.
async fn broadcasts(State(s): State<Arc<RelayState>>) -> impl IntoResponse {
    let ingests = s.ingests.list();
    let list: Vec<serde_json::Value> = s
        .origin
        .list()
        .iter()
        .map(|b| {
            let mut v = serde_json::json!({ "broadcast": b.path, "tracks": b.track_names() });
            // A broadcast pushed over RTMP or SRT: whether its publisher is connected, and its
            // counters, under "rtmp" or "srt".
            if let Some(l) = ingests.iter().find(|l| l.name == b.path) {
                v[l.protocol.name()] = l.to_json();
            }
            // A broadcast served from another relay of the cluster: which one.
            if let Some(peer) = s.cluster.as_ref().and_then(|c| c.served_from(b.session)) {
                v["cluster"] = serde_json::json!({ "from": peer });
            }
            v
        })
        .collect();
    (
        [
            (header::CONTENT_TYPE, "application/json"),
            (header::ACCESS_CONTROL_ALLOW_ORIGIN, "*"),
        ],
        serde_json::to_string(&list).unwrap_or_default(),
    )
}

/// What the viewer page needs to open its WebTransport session: the relay's QUIC port (the
/// bound one, also when it was configured as 0), and whether
/// to pin the certificate fetched from `/certificate.sha256` (only a generated development
/// certificate; a real one is verified by the browser as usual).
async fn viewer_config(State(s): State<Arc<RelayState>>) -> impl IntoResponse {
    let port = s.config.bind.port();
    let body = serde_json::json!({
        "quicPort": (port != 0).then_some(port),
        "pinCertificate": matches!(s.config.tls, TlsSource::Generate(_)),
    });
    (
        [
            (header::CONTENT_TYPE, "application/json"),
            (header::CACHE_CONTROL, "no-store"),
        ],
        body.to_string(),
    )
}

/// Escapes text for HTML element content and double-quoted attributes.
fn escape_html(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// Percent-encodes a broadcast path for a URL path, keeping `/` between its parts.
fn encode_path(path: &str) -> String {
    let mut out = String::with_capacity(path.len());
    for b in path.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~/".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// `GET /`: the live broadcasts, each linking to its viewer page. Refreshes itself.
async fn index(State(s): State<Arc<RelayState>>) -> impl IntoResponse {
    let mut names: Vec<String> = s.origin.list().iter().map(|b| b.path.clone()).collect();
    names.sort();
    let items: String = names
        .iter()
        .map(|name| {
            format!(
                "<li><a href=\"/watch/{}\">{}</a></li>\n",
                escape_html(&encode_path(name)),
                escape_html(name)
            )
        })
        .collect();
    let list = if items.is_empty() {
        "<p class=\"empty\">No live broadcasts yet. Start one with <code>moqcast-publish --url https://localhost:4443/ --broadcast demo --input testsrc --tls-disable-verify</code>.</p>".to_string()
    } else {
        format!("<ul>\n{items}</ul>")
    };
    let viewer = if s.config.web_dir.join(WATCH_PAGE).is_file() {
        String::new()
    } else {
        format!("<p class=\"warn\">The viewer is not built: run <code>{BUILD_HINT}</code>.</p>")
    };
    Html(format!(
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta http-equiv=\"refresh\" content=\"5\"><title>moqcast: live broadcasts</title>\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <style>body{{font:16px system-ui,sans-serif;max-width:40em;margin:2em auto;padding:0 1em;color:#222}}\
         li{{margin:.4em 0}}code{{background:#eee;padding:.1em .3em}}.warn{{color:#a40}}.empty{{color:#666}}</style>\
         </head><body><h1>Live broadcasts</h1>\n{list}\n{viewer}</body></html>\n"
    ))
}

/// `GET /watch/{broadcast}`: the viewer page; it reads the broadcast name from its own URL.
async fn watch(State(s): State<Arc<RelayState>>, UrlPath(_broadcast): UrlPath<String>) -> Response {
    page(&s, WATCH_PAGE, "browser viewer").await
}

/// `GET /publish/{broadcast}`: the publish page (camera and microphone over WHIP); it reads the
/// broadcast name from its own URL.
async fn publish(
    State(s): State<Arc<RelayState>>,
    UrlPath(_broadcast): UrlPath<String>,
) -> Response {
    page(&s, PUBLISH_PAGE, "publish page").await
}

/// A page of the web directory, or 503 saying how to build it.
async fn page(s: &RelayState, name: &str, what: &str) -> Response {
    let page = s.config.web_dir.join(name);
    match tokio::fs::read(&page).await {
        Ok(bytes) => (
            [
                (header::CONTENT_TYPE, "text/html; charset=utf-8"),
                (header::CACHE_CONTROL, "no-cache"),
            ],
            bytes,
        )
            .into_response(),
        Err(_) => (
            StatusCode::SERVICE_UNAVAILABLE,
            [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
            format!(
                "The {what} is not built ({} is missing).\nBuild it with: {BUILD_HINT}\n\
                 or point the relay at a built viewer with --web-dir.\n",
                page.display()
            ),
        )
            .into_response(),
    }
}

/// The file under `root` that a URL path names, or `None` when it tries to leave `root` (`..`,
/// an absolute path, a drive prefix) or names a hidden file.
fn asset_path(root: &Path, file: &str) -> Option<PathBuf> {
    let relative = Path::new(file);
    let mut out = root.to_path_buf();
    for part in relative.components() {
        match part {
            Component::Normal(name) if !name.to_string_lossy().starts_with('.') => out.push(name),
            _ => return None,
        }
    }
    (out != root).then_some(out)
}

fn content_type(path: &Path) -> &'static str {
    match path.extension().and_then(|e| e.to_str()).unwrap_or("") {
        "js" | "mjs" => "text/javascript; charset=utf-8",
        "css" => "text/css; charset=utf-8",
        "html" => "text/html; charset=utf-8",
        "json" | "map" => "application/json",
        "svg" => "image/svg+xml",
        "png" => "image/png",
        "ico" => "image/x-icon",
        "woff2" => "font/woff2",
        "wasm" => "application/wasm",
        _ => "application/octet-stream",
    }
}

/// Serves the HTTP side on `listener` until `cancel`: one task per connection, at most as many
/// at once as `slots` holds (`--max-http-connections`, shared by the TCP listeners; more are
/// closed at once and counted), and a connection whose request headers take longer than
/// `--http-header-timeout-ms` to arrive (slowloris, or a keep-alive connection left idle) is
/// closed. With `tls`, each connection is TLS (its handshake under the same timeout), then
/// HTTP/2 or HTTP/1.1 as ALPN chose; without, HTTP/1.1.
pub async fn serve(
    listener: tokio::net::TcpListener,
    app: Router,
    state: Arc<RelayState>,
    tls: Option<tokio_rustls::TlsAcceptor>,
    slots: Arc<tokio::sync::Semaphore>,
    cancel: tokio_util::sync::CancellationToken,
) {
    let header_timeout = state.config.http_header_timeout;
    let mut connections = tokio::task::JoinSet::new();
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    tracing::warn!(error = %e, "HTTP accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
            },
            Some(_) = connections.join_next(), if !connections.is_empty() => continue,
            () = cancel.cancelled() => break,
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            state
                .metrics
                .http_refused
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            tracing::debug!(%peer, "HTTP connection limit reached: closing");
            drop(stream);
            continue;
        };
        let service = hyper_util::service::TowerToHyperService::new(app.clone());
        let tls = tls.clone();
        connections.spawn(async move {
            let _slot = slot;
            let Some(tls) = tls else {
                let io = hyper_util::rt::TokioIo::new(stream);
                let mut http = hyper::server::conn::http1::Builder::new();
                http.timer(hyper_util::rt::TokioTimer::new())
                    .header_read_timeout(header_timeout)
                    .max_buf_size(64 * 1024);
                if let Err(e) = http.serve_connection(io, service).await {
                    tracing::debug!(%peer, error = %e, "HTTP connection ended");
                }
                return;
            };
            let stream = match tokio::time::timeout(header_timeout, tls.accept(stream)).await {
                Ok(Ok(stream)) => stream,
                Ok(Err(e)) => {
                    tracing::debug!(%peer, error = %e, "TLS handshake failed");
                    return;
                }
                Err(_) => {
                    tracing::debug!(%peer, "TLS handshake timed out");
                    return;
                }
            };
            let mut http =
                hyper_util::server::conn::auto::Builder::new(hyper_util::rt::TokioExecutor::new());
            http.http1()
                .timer(hyper_util::rt::TokioTimer::new())
                .header_read_timeout(header_timeout)
                .max_buf_size(64 * 1024);
            http.http2()
                .timer(hyper_util::rt::TokioTimer::new())
                .max_concurrent_streams(MAX_HTTP2_STREAMS)
                .max_header_list_size(64 * 1024)
                // A peer that stops answering pings is gone: its connection slot is freed.
                .keep_alive_interval(Some(header_timeout))
                .keep_alive_timeout(header_timeout);
            let io = hyper_util::rt::TokioIo::new(stream);
            if let Err(e) = http.serve_connection(io, service).await {
                tracing::debug!(%peer, error = %e, "HTTPS connection ended");
            }
        });
    }
    connections.abort_all();
}

/// `GET /assets/{file}`: a static file of the viewer, streamed (a slow reader holds a chunk,
/// not the file).
async fn asset(State(s): State<Arc<RelayState>>, UrlPath(file): UrlPath<String>) -> Response {
    let not_found = || (StatusCode::NOT_FOUND, "not found\n").into_response();
    let Some(path) = asset_path(&s.config.web_dir.join("assets"), &file) else {
        return not_found();
    };
    match tokio::fs::metadata(&path).await {
        Ok(m) if m.is_file() && m.len() <= MAX_ASSET_BYTES => {}
        _ => return not_found(),
    }
    let len = match tokio::fs::metadata(&path).await {
        Ok(m) => m.len(),
        Err(_) => return not_found(),
    };
    match tokio::fs::File::open(&path).await {
        Ok(file) => (
            [
                (header::CONTENT_TYPE, content_type(&path).to_string()),
                (header::CACHE_CONTROL, "no-cache".to_string()),
                (header::CONTENT_LENGTH, len.to_string()),
            ],
            axum::body::Body::from_stream(tokio_util::io::ReaderStream::with_capacity(
                file,
                64 * 1024,
            )),
        )
            .into_response(),
        Err(_) => not_found(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn asset_paths_stay_inside_the_root() {
        let root = Path::new("/srv/web/assets");
        assert_eq!(asset_path(root, "viewer.js"), Some(root.join("viewer.js")));
        assert_eq!(
            asset_path(root, "img/logo.svg"),
            Some(root.join("img/logo.svg"))
        );
        assert_eq!(asset_path(root, "../watch.html"), None);
        assert_eq!(asset_path(root, "img/../../x"), None);
        assert_eq!(asset_path(root, "/etc/passwd"), None);
        assert_eq!(asset_path(root, ".env"), None);
        assert_eq!(asset_path(root, ""), None);
    }

    #[test]
    fn names_are_escaped_for_html_and_urls() {
        assert_eq!(
            escape_html("<a href=\"x\">&'"),
            "&lt;a href=&quot;x&quot;&gt;&amp;&#39;"
        );
        assert_eq!(encode_path("live/demo 1?#"), "live/demo%201%3F%23");
    }
}
