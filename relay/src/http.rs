//! The relay's HTTP side (TCP): certificate fingerprint, health, metrics.

use std::sync::Arc;

use axum::{extract::State, http::header, response::IntoResponse, routing::get, Router};

use crate::RelayState;

pub fn router(state: Arc<RelayState>) -> Router {
    Router::new()
        .route("/certificate.sha256", get(fingerprint))
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics))
        .route("/broadcasts", get(broadcasts))
        .with_state(state)
}

async fn fingerprint(State(s): State<Arc<RelayState>>) -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, "text/plain"),
            (header::ACCESS_CONTROL_ALLOW_ORIGIN, "*"),
        ],
        s.fingerprint.clone(),
    )
}

async fn healthz() -> &'static str {
    "ok\n"
}

async fn metrics(State(s): State<Arc<RelayState>>) -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        s.metrics.render(),
    )
}

/// The live broadcasts and their cached tracks, as JSON.
async fn broadcasts(State(s): State<Arc<RelayState>>) -> impl IntoResponse {
    let list: Vec<serde_json::Value> = s
        .origin
        .list()
        .iter()
        .map(|b| serde_json::json!({ "broadcast": b.path, "tracks": b.track_names() }))
        .collect();
    (
        [
            (header::CONTENT_TYPE, "application/json"),
            (header::ACCESS_CONTROL_ALLOW_ORIGIN, "*"),
        ],
        serde_json::to_string(&list).unwrap_or_default(),
    )
}
