//! Relay counters and gauges, rendered as Prometheus text (format 0.0.4) at `GET /metrics` by
//! `prometheus-client`'s encoder.
//!
//! The relay's code counts into plain atomics ([`Metrics`]); each scrape takes a snapshot of
//! them (and of the shards' gauges) and hands it to the encoder as a [`Collector`]. Metric names,
//! types and labels are those listed in docs/relay.md.

use std::sync::atomic::{AtomicU64, Ordering};

use crate::push::Protocol;

use prometheus_client::{
    collector::Collector,
    encoding::{prometheus_text, DescriptorEncoder, EncodeMetric},
    metrics::{counter::ConstCounter, gauge::ConstGauge, MetricType},
    registry::Registry,
};

/// Process-wide counters. Gauges go up and down; counters only up.
#[derive(Debug, Default)]
pub struct Metrics {
    pub sessions: AtomicU64,
    pub sessions_total: AtomicU64,
    pub sessions_rejected: AtomicU64,
    pub subscriptions: AtomicU64,
    pub subscriptions_total: AtomicU64,
    pub subscriptions_rejected: AtomicU64,
    pub broadcasts: AtomicU64,
    pub tracks: AtomicU64,
    /// Track caches moved to another publisher of their broadcast (take-over, hand-back)
    /// without ending their subscriptions.
    pub tracks_handed_over: AtomicU64,
    pub bytes_in: AtomicU64,
    pub objects_in: AtomicU64,
    pub bytes_out: AtomicU64,
    pub objects_out: AtomicU64,
    pub cache_bytes: AtomicU64,
    pub cache_budget_bytes: AtomicU64,
    pub cache_evictions: AtomicU64,
    pub cache_budget_evictions: AtomicU64,
    pub cache_budget_evicted_bytes: AtomicU64,
    pub groups_dropped: AtomicU64,
    pub slow_skips: AtomicU64,
    pub direct_streams: AtomicU64,
    pub direct_resets: AtomicU64,
    pub direct_ingest_streams: AtomicU64,
    pub errors: AtomicU64,
    pub session_errors: AtomicU64,
    /// Sessions refused for their token (none, expired, forged, no access), and sessions
    /// closed when their token expired.
    pub auth_refused: AtomicU64,
    pub auth_expired: AtomicU64,
    /// Requests refused because the session's grant does not cover them.
    pub auth_denied: AtomicU64,
    /// HTTP connections closed at once at `--max-http-connections`.
    pub http_refused: AtomicU64,
    /// Ordinary HTTP/3 requests answered on the QUIC port.
    pub http3_requests: AtomicU64,
    /// Connections refused at `--max-sessions-per-ip`.
    pub sessions_rejected_per_address: AtomicU64,
    /// QUIC Retry packets sent (address validation while handshakes pile up).
    pub quic_retries: AtomicU64,
    /// First packets of new connections that failed authentication (garbage shaped as QUIC
    /// Initials), dropped in the accept loop.
    pub quic_initials_dropped: AtomicU64,
    /// The RTMP and RTMPS ingest (`--rtmp-bind`, `--rtmps-bind`).
    pub rtmp: IngestCounters,
    /// The SRT ingest (`--srt-bind`).
    pub srt: IngestCounters,
    /// The WHIP ingest (`--webrtc-addr`): its sessions as connections, and their frames.
    pub whip: IngestCounters,
    /// The WHIP ingest's WebRTC transport.
    pub webrtc: WebRtcCounters,
    /// Requests the session layer refused by itself, shared by every session.
    pub refusals: std::sync::Arc<moqcast_session::io::Counters>,
}

impl Metrics {
    /// Prometheus text exposition format 0.0.4.
    pub fn render(&self) -> String {
        let rows: [(&'static str, MetricType, &'static str, &AtomicU64); 36] = [
            (
                "moqcast_sessions",
                MetricType::Gauge,
                "Open MoQ sessions",
                &self.sessions,
            ),
            (
                "moqcast_sessions_total",
                MetricType::Counter,
                "MoQ sessions accepted",
                &self.sessions_total,
            ),
            (
                "moqcast_sessions_rejected_total",
                MetricType::Counter,
                "Connections refused at the session limit",
                &self.sessions_rejected,
            ),
            (
                "moqcast_subscriptions",
                MetricType::Gauge,
                "Active downstream subscriptions",
                &self.subscriptions,
            ),
            (
                "moqcast_subscriptions_total",
                MetricType::Counter,
                "Downstream subscriptions accepted",
                &self.subscriptions_total,
            ),
            (
                "moqcast_subscriptions_rejected_total",
                MetricType::Counter,
                "SUBSCRIBEs refused at the per-session subscription limit",
                &self.subscriptions_rejected,
            ),
            (
                "moqcast_requests_refused_total",
                MetricType::Counter,
                "Requests refused with EXCESSIVE_LOAD at the per-session request limit",
                &self.refusals.refused_excessive,
            ),
            (
                "moqcast_requests_going_away_total",
                MetricType::Counter,
                "Requests refused with GOING_AWAY after the relay's GOAWAY",
                &self.refusals.refused_going_away,
            ),
            (
                "moqcast_requests_rate_limited_total",
                MetricType::Counter,
                "Times a session's next request waited for --max-request-rate",
                &self.refusals.rate_limited,
            ),
            (
                "moqcast_auth_refused_sessions_total",
                MetricType::Counter,
                "Sessions refused for their token: missing, malformed, forged, expired, or no access at their path",
                &self.auth_refused,
            ),
            (
                "moqcast_auth_expired_sessions_total",
                MetricType::Counter,
                "Sessions closed when their token expired",
                &self.auth_expired,
            ),
            (
                "moqcast_auth_denied_requests_total",
                MetricType::Counter,
                "Requests refused with UNAUTHORIZED: the session's token does not cover the broadcast",
                &self.auth_denied,
            ),
            (
                "moqcast_http_connections_refused_total",
                MetricType::Counter,
                "HTTP connections closed at once at the connection limit",
                &self.http_refused,
            ),
            (
                "moqcast_http3_requests_total",
                MetricType::Counter,
                "Ordinary HTTP/3 requests answered on the QUIC port (not WebTransport sessions)",
                &self.http3_requests,
            ),
            (
                "moqcast_sessions_rejected_per_address_total",
                MetricType::Counter,
                "Connections refused at the per-address session limit",
                &self.sessions_rejected_per_address,
            ),
            (
                "moqcast_quic_retries_total",
                MetricType::Counter,
                "QUIC Retry packets sent to validate addresses while handshakes pile up",
                &self.quic_retries,
            ),
            (
                "moqcast_quic_initials_dropped_total",
                MetricType::Counter,
                "First packets of new QUIC connections dropped because they failed authentication",
                &self.quic_initials_dropped,
            ),
            (
                "moqcast_broadcasts",
                MetricType::Gauge,
                "Announced broadcasts (namespaces)",
                &self.broadcasts,
            ),
            (
                "moqcast_tracks",
                MetricType::Gauge,
                "Tracks with an upstream subscription and a cache",
                &self.tracks,
            ),
            (
                "moqcast_tracks_handed_over_total",
                MetricType::Counter,
                "Tracks moved to another publisher of their broadcast (take-over, hand-back) with their subscribers",
                &self.tracks_handed_over,
            ),
            (
                "moqcast_bytes_in_total",
                MetricType::Counter,
                "Object payload bytes received from publishers",
                &self.bytes_in,
            ),
            (
                "moqcast_objects_in_total",
                MetricType::Counter,
                "Objects received from publishers",
                &self.objects_in,
            ),
            (
                "moqcast_bytes_out_total",
                MetricType::Counter,
                "Object payload bytes handed to subscribers",
                &self.bytes_out,
            ),
            (
                "moqcast_objects_out_total",
                MetricType::Counter,
                "Objects handed to subscribers",
                &self.objects_out,
            ),
            (
                "moqcast_cache_bytes",
                MetricType::Gauge,
                "Payload bytes held in track caches",
                &self.cache_bytes,
            ),
            (
                "moqcast_cache_budget_bytes",
                MetricType::Gauge,
                "Relay-wide budget of payload bytes in track caches",
                &self.cache_budget_bytes,
            ),
            (
                "moqcast_cache_evictions_total",
                MetricType::Counter,
                "Cached subgroups evicted by their track's own limits (bytes, groups, age)",
                &self.cache_evictions,
            ),
            (
                "moqcast_cache_budget_evictions_total",
                MetricType::Counter,
                "Cached subgroups evicted to keep all caches within the relay-wide budget",
                &self.cache_budget_evictions,
            ),
            (
                "moqcast_cache_budget_evicted_bytes_total",
                MetricType::Counter,
                "Payload bytes evicted to keep all caches within the relay-wide budget",
                &self.cache_budget_evicted_bytes,
            ),
            (
                "moqcast_groups_dropped_total",
                MetricType::Counter,
                "Groups dropped for subscribers that fell behind",
                &self.groups_dropped,
            ),
            (
                "moqcast_slow_subscriber_skips_total",
                MetricType::Counter,
                "Times a slow subscriber was moved to the newest group",
                &self.slow_skips,
            ),
            (
                "moqcast_direct_streams_total",
                MetricType::Counter,
                "Subgroup streams the relay opened and wrote itself",
                &self.direct_streams,
            ),
            (
                "moqcast_direct_ingest_streams_total",
                MetricType::Counter,
                "Publishers' subgroup streams the relay read itself",
                &self.direct_ingest_streams,
            ),
            (
                "moqcast_direct_stream_resets_total",
                MetricType::Counter,
                "Of those, streams reset before their end (subscriber behind, track ended mid-group, cancelled)",
                &self.direct_resets,
            ),
            (
                "moqcast_errors_total",
                MetricType::Counter,
                "Malformed or refused upstream data",
                &self.errors,
            ),
            (
                "moqcast_session_errors_total",
                MetricType::Counter,
                "Sessions that ended with an error",
                &self.session_errors,
            ),
        ];
        let families = rows
            .into_iter()
            .chain(self.rtmp.rows(Protocol::Rtmp))
            .chain(self.srt.rows(Protocol::Srt))
            .chain(self.whip.rows(Protocol::Whip))
            .chain(self.webrtc.rows())
            .map(|(name, kind, help, value)| Family {
                name,
                kind,
                help,
                samples: Samples::One(Value::Int(value.load(Ordering::Relaxed))),
            })
            .collect();
        encode(families)
    }
}

/// Counters of one push ingest (RTMP or SRT); see [`crate::push`].
#[derive(Debug, Default)]
pub struct IngestCounters {
    /// Open connections.
    pub connections: AtomicU64,
    /// Publishers refused: unknown key or app, bad token, busy name, unsupported codec,
    /// connection limit, malformed input.
    pub refused: AtomicU64,
    /// Publishers disconnected for going silent.
    pub timeouts: AtomicU64,
    /// Frames and media bytes publishers sent into the origin, and the connections that
    /// resumed a broadcast.
    pub video_frames: AtomicU64,
    pub audio_frames: AtomicU64,
    pub bytes: AtomicU64,
    pub reconnects: AtomicU64,
}

impl IngestCounters {
    /// The rows of `protocol`'s families: `moqcast_rtmp_*` or `moqcast_srt_*`.
    fn rows(
        &self,
        protocol: Protocol,
    ) -> [(&'static str, MetricType, &'static str, &AtomicU64); 7] {
        use MetricType::{Counter, Gauge};
        let names = match protocol {
            Protocol::Rtmp => [
                ("moqcast_rtmp_connections", "Open RTMP and RTMPS ingest connections"),
                ("moqcast_rtmp_refused_total", "RTMP publishers refused (key, token, app, busy name, codec, connection limit)"),
                ("moqcast_rtmp_timeouts_total", "RTMP publishers disconnected for going silent"),
                ("moqcast_rtmp_ingest_video_frames_total", "Video frames RTMP publishers sent into the origin"),
                ("moqcast_rtmp_ingest_audio_frames_total", "Audio frames RTMP publishers sent into the origin"),
                ("moqcast_rtmp_ingest_bytes_total", "Media payload bytes RTMP publishers sent into the origin"),
                ("moqcast_rtmp_ingest_reconnects_total", "RTMP connections that resumed a broadcast within the resume window"),
            ],
            Protocol::Srt => [
                ("moqcast_srt_connections", "Open SRT ingest connections"),
                ("moqcast_srt_refused_total", "SRT publishers refused (stream id, key, token, busy name, codec, connection limit, malformed MPEG-TS)"),
                ("moqcast_srt_timeouts_total", "SRT publishers disconnected for sending no media"),
                ("moqcast_srt_ingest_video_frames_total", "Video frames SRT publishers sent into the origin"),
                ("moqcast_srt_ingest_audio_frames_total", "Audio frames SRT publishers sent into the origin"),
                ("moqcast_srt_ingest_bytes_total", "Media payload bytes SRT publishers sent into the origin"),
                ("moqcast_srt_ingest_reconnects_total", "SRT connections that resumed a broadcast within the resume window"),
            ],
            Protocol::Whip => [
                ("moqcast_whip_sessions", "Open WHIP (WebRTC) ingest sessions"),
                ("moqcast_whip_refused_total", "WHIP requests refused (token, busy name, malformed or unsupported offer, session limit)"),
                ("moqcast_whip_timeouts_total", "WHIP sessions ended for not connecting or sending no media"),
                ("moqcast_whip_ingest_video_frames_total", "Video frames WHIP publishers sent into the origin"),
                ("moqcast_whip_ingest_audio_frames_total", "Audio frames WHIP publishers sent into the origin"),
                ("moqcast_whip_ingest_bytes_total", "Media payload bytes WHIP publishers sent into the origin"),
                ("moqcast_whip_ingest_reconnects_total", "Always 0: a WHIP publisher that comes back starts a new broadcast"),
            ],
        };
        let values = [
            (Gauge, &self.connections),
            (Counter, &self.refused),
            (Counter, &self.timeouts),
            (Counter, &self.video_frames),
            (Counter, &self.audio_frames),
            (Counter, &self.bytes),
            (Counter, &self.reconnects),
        ];
        let mut i = 0;
        values.map(|(kind, value)| {
            let (name, help) = names[i];
            i += 1;
            (name, kind, help, value)
        })
    }
}

/// Per-shard gauges (`--runtime sharded`), in the same format.
pub fn render_shards(p: &crate::shard::Placement) -> String {
    let per_shard =
        |value: &dyn Fn(usize) -> Value| Samples::PerShard((0..p.shards()).map(value).collect());
    encode(vec![
        gauge(
            "moqcast_shard_busy_ratio",
            "Share of its thread's time the shard was busy, recently",
            per_shard(&|i| Value::Ratio(f64::from(p.busy(i)) / 1000.0)),
        ),
        gauge(
            "moqcast_shard_awake_ratio",
            "Share of the time the shard's thread was awake (not waiting for events), recently",
            per_shard(&|i| Value::Ratio(f64::from(p.awake(i)) / 1000.0)),
        ),
        gauge(
            "moqcast_shard_connections",
            "Connections on the shard (handshakes included)",
            per_shard(&|i| Value::Int(p.sessions(i))),
        ),
        gauge(
            "moqcast_shard_placement_target",
            "The shard new connections go to",
            Samples::One(Value::Int(p.target() as u64)),
        ),
        gauge(
            "moqcast_coalescing",
            "1 while a shard is saturated and every shard coalesces what subscribers are sent",
            Samples::One(Value::Int(u64::from(p.coalescing()))),
        ),
    ])
}

/// Counters of the WHIP ingest's WebRTC transport ([`crate::whip::engine`]).
#[derive(Debug, Default)]
pub struct WebRtcCounters {
    /// WHIP sessions created (answered offers).
    pub sessions_total: AtomicU64,
    /// UDP datagrams and bytes received on the WebRTC socket (STUN, DTLS, SRTP, SRTCP).
    pub udp_packets_in: AtomicU64,
    pub udp_bytes_in: AtomicU64,
    /// Datagrams no session took (unknown peers, stray packets).
    pub udp_unknown: AtomicU64,
    /// Datagrams the socket could not send at once (dropped, as a full link would).
    pub udp_send_dropped: AtomicU64,
    /// RTP packets received, retransmissions included.
    pub rtp_packets: AtomicU64,
    /// RTP packets never recovered (sequence numbers missing between delivered frames).
    pub packets_lost: AtomicU64,
    /// Retransmission requests (NACK), picture loss indications (PLI) and full intra requests
    /// (FIR) sent to publishers.
    pub nacks: AtomicU64,
    pub plis: AtomicU64,
    pub firs: AtomicU64,
    /// Sessions that ended because ICE connectivity was lost.
    pub ice_failures: AtomicU64,
}

impl WebRtcCounters {
    fn rows(&self) -> [(&'static str, MetricType, &'static str, &AtomicU64); 11] {
        use MetricType::Counter;
        [
            (
                "moqcast_whip_sessions_total",
                Counter,
                "WHIP sessions created (offers answered)",
                &self.sessions_total,
            ),
            (
                "moqcast_webrtc_udp_packets_in_total",
                Counter,
                "Datagrams received on the WebRTC socket",
                &self.udp_packets_in,
            ),
            (
                "moqcast_webrtc_udp_bytes_in_total",
                Counter,
                "Bytes received on the WebRTC socket (STUN, DTLS, SRTP, SRTCP)",
                &self.udp_bytes_in,
            ),
            (
                "moqcast_webrtc_udp_unknown_total",
                Counter,
                "Datagrams on the WebRTC socket that no session took",
                &self.udp_unknown,
            ),
            (
                "moqcast_webrtc_udp_send_dropped_total",
                Counter,
                "Datagrams the WebRTC socket could not send at once (dropped)",
                &self.udp_send_dropped,
            ),
            (
                "moqcast_webrtc_rtp_packets_total",
                Counter,
                "RTP packets WHIP publishers sent, retransmissions included",
                &self.rtp_packets,
            ),
            (
                "moqcast_webrtc_packets_lost_total",
                Counter,
                "RTP packets of WHIP publishers never recovered (after NACK retransmission)",
                &self.packets_lost,
            ),
            (
                "moqcast_webrtc_nacks_total",
                Counter,
                "Retransmission requests (NACK) sent to WHIP publishers",
                &self.nacks,
            ),
            (
                "moqcast_webrtc_plis_total",
                Counter,
                "Keyframe requests (PLI) sent to WHIP publishers",
                &self.plis,
            ),
            (
                "moqcast_webrtc_firs_total",
                Counter,
                "Keyframe requests (FIR) sent to WHIP publishers",
                &self.firs,
            ),
            (
                "moqcast_webrtc_ice_failures_total",
                Counter,
                "WHIP sessions ended because ICE connectivity was lost",
                &self.ice_failures,
            ),
        ]
    }
}

/// Per-broadcast gauges of the push ingests, labelled `broadcast="NAME"`, one set of families
/// per protocol (`moqcast_rtmp_ingest_*`, `moqcast_srt_ingest_*`): whether a publisher is
/// connected, its bitrate, frames and reconnections.
pub fn render_ingests(ingests: &[crate::push::Listed]) -> String {
    let mut out = String::new();
    for protocol in [Protocol::Rtmp, Protocol::Srt, Protocol::Whip] {
        let listed: Vec<&crate::push::Listed> =
            ingests.iter().filter(|l| l.protocol == protocol).collect();
        if listed.is_empty() {
            continue;
        }
        let labelled = |value: &dyn Fn(&crate::push::Listed) -> Value| {
            Samples::Labelled(
                "broadcast",
                listed.iter().map(|l| (l.name.clone(), value(l))).collect(),
            )
        };
        let names = match protocol {
            Protocol::Rtmp => [
                ("moqcast_rtmp_ingest_connected", "1 while an RTMP publisher is connected, 0 while its broadcast waits for it to reconnect"),
                ("moqcast_rtmp_ingest_bitrate_bps", "Media bits per second an RTMP publisher sent over the last whole second"),
                ("moqcast_rtmp_ingest_frames", "Frames (video and audio) of an RTMP-published broadcast so far"),
                ("moqcast_rtmp_ingest_reconnects", "Reconnections that resumed an RTMP-published broadcast so far"),
            ],
            Protocol::Srt => [
                ("moqcast_srt_ingest_connected", "1 while an SRT publisher is connected, 0 while its broadcast waits for it to reconnect"),
                ("moqcast_srt_ingest_bitrate_bps", "Media bits per second an SRT publisher sent over the last whole second"),
                ("moqcast_srt_ingest_frames", "Frames (video and audio) of an SRT-published broadcast so far"),
                ("moqcast_srt_ingest_reconnects", "Reconnections that resumed an SRT-published broadcast so far"),
            ],
            Protocol::Whip => [
                ("moqcast_whip_ingest_connected", "1 while a WHIP session publishes the broadcast"),
                ("moqcast_whip_ingest_bitrate_bps", "Media bits per second a WHIP publisher sent over the last whole second"),
                ("moqcast_whip_ingest_frames", "Frames (video and audio) of a WHIP-published broadcast so far"),
                ("moqcast_whip_ingest_reconnects", "Always 0: a WHIP publisher that comes back starts a new broadcast"),
            ],
        };
        out += &encode(vec![
            gauge(
                names[0].0,
                names[0].1,
                labelled(&|l| Value::Int(u64::from(l.connected))),
            ),
            gauge(
                names[1].0,
                names[1].1,
                labelled(&|l| Value::Int(l.stats.bitrate_bps)),
            ),
            gauge(
                names[2].0,
                names[2].1,
                labelled(&|l| Value::Int(l.stats.video_frames + l.stats.audio_frames)),
            ),
            gauge(
                names[3].0,
                names[3].1,
                labelled(&|l| Value::Int(l.stats.reconnects)),
            ),
        ]);
    }
    out
}

/// The certificate's reloads, and when a generated one expires.
pub fn render_tls(store: &crate::tls::CertStore) -> String {
    let mut families = vec![
        Family {
            name: "moqcast_tls_reloads_total",
            kind: MetricType::Counter,
            help: "Certificates swapped in without a restart: changed files, renewed development certificates",
            samples: Samples::One(Value::Int(store.reloads.load(Ordering::Relaxed))),
        },
        Family {
            name: "moqcast_tls_reload_failures_total",
            kind: MetricType::Counter,
            help: "Changed certificate files that did not load (the previous certificate stayed)",
            samples: Samples::One(Value::Int(store.reload_failures.load(Ordering::Relaxed))),
        },
    ];
    if let Some(end) = store.current().not_after {
        let secs = end
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        families.push(gauge(
            "moqcast_tls_certificate_expiry_timestamp_seconds",
            "When the generated development certificate expires (Unix time); it is renewed before",
            Samples::One(Value::Int(secs)),
        ));
    }
    encode(families)
}

/// One sample's value.
#[derive(Debug, Clone, Copy)]
enum Value {
    Int(u64),
    Ratio(f64),
}

/// The samples of a family: one without labels, or one per shard labelled `shard="i"`.
#[derive(Debug)]
enum Samples {
    One(Value),
    PerShard(Vec<Value>),
    /// One sample per value of the named label.
    Labelled(&'static str, Vec<(String, Value)>),
}

/// One metric family as scraped: its full name (a counter's ends in `_total`), type and help.
#[derive(Debug)]
struct Family {
    name: &'static str,
    kind: MetricType,
    help: &'static str,
    samples: Samples,
}

/// A gauge family.
fn gauge(name: &'static str, help: &'static str, samples: Samples) -> Family {
    Family {
        name,
        kind: MetricType::Gauge,
        help,
        samples,
    }
}

/// The families of one scrape, values taken when it began.
#[derive(Debug)]
struct Snapshot(Vec<Family>);

impl Collector for Snapshot {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        for family in &self.0 {
            // The encoder appends `_total` to a counter's name itself.
            let name = match family.kind {
                MetricType::Counter => family.name.strip_suffix("_total").unwrap_or(family.name),
                _ => family.name,
            };
            let mut metric = encoder.encode_descriptor(name, family.help, None, family.kind)?;
            match &family.samples {
                Samples::One(value) => encode_value(family.kind, *value, metric)?,
                Samples::PerShard(values) => {
                    for (i, value) in values.iter().enumerate() {
                        let labels = [("shard", i.to_string())];
                        encode_value(family.kind, *value, metric.encode_family(&labels)?)?;
                    }
                }
                Samples::Labelled(label, values) => {
                    for (name, value) in values {
                        let labels = [(*label, name.clone())];
                        encode_value(family.kind, *value, metric.encode_family(&labels)?)?;
                    }
                }
            }
        }
        Ok(())
    }
}

fn encode_value(
    kind: MetricType,
    value: Value,
    encoder: prometheus_client::encoding::MetricEncoder<'_>,
) -> Result<(), std::fmt::Error> {
    match (kind, value) {
        (MetricType::Counter, Value::Int(v)) => ConstCounter::new(v).encode(encoder),
        (MetricType::Counter, Value::Ratio(v)) => ConstCounter::new(v).encode(encoder),
        (_, Value::Int(v)) => ConstGauge::new(v).encode(encoder),
        (_, Value::Ratio(v)) => ConstGauge::new(v).encode(encoder),
    }
}

fn encode(families: Vec<Family>) -> String {
    let mut registry = Registry::default();
    registry.register_collector(Box::new(Snapshot(families)));
    let mut out = String::with_capacity(4096);
    prometheus_text::encode(&mut out, &registry).expect("writing into a String cannot fail");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_prometheus_text() {
        let m = Metrics::default();
        m.sessions.fetch_add(2, Ordering::Relaxed);
        let text = m.render();
        assert!(text.contains("# TYPE moqcast_sessions gauge\nmoqcast_sessions 2\n"));
        assert!(text.contains("moqcast_bytes_out_total 0"));
        for name in [
            "moqcast_subscriptions_rejected_total",
            "moqcast_cache_budget_bytes",
            "moqcast_cache_evictions_total",
            "moqcast_cache_budget_evictions_total",
            "moqcast_cache_budget_evicted_bytes_total",
            "moqcast_direct_streams_total",
            "moqcast_direct_stream_resets_total",
            "moqcast_requests_refused_total",
            "moqcast_auth_denied_requests_total",
        ] {
            assert!(text.contains(&format!("# TYPE {name} ")), "{name} missing");
        }
        // Counters keep their `_total` names, with HELP and TYPE lines for that name.
        assert!(text.contains(
            "# HELP moqcast_sessions_total MoQ sessions accepted\n\
             # TYPE moqcast_sessions_total counter\n\
             moqcast_sessions_total 0\n"
        ));
        assert!(!text.contains("_total_total"));
        // Every family once, in order, each with one sample: 36 of the relay, 7 of each of the
        // three push ingests (RTMP, SRT, WHIP), 11 of WHIP's WebRTC transport.
        let types = text.lines().filter(|l| l.starts_with("# TYPE ")).count();
        assert_eq!(types, 68);
        assert_eq!(text.lines().count(), 3 * 68);
        assert!(text.contains("# TYPE moqcast_webrtc_nacks_total counter"));
    }
}
