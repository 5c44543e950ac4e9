//! The one module of moqcast that knows which MoQ Transport draft it speaks.
//!
//! Everything else (relay, publisher, subscriber, sidecar) goes through the types and helpers
//! here. Today that is draft-ietf-moq-transport-18 through Cloudflare's `moq-transport` 0.17
//! (ALPN `moqt-18` for raw QUIC, `h3` + `WT-Protocol: moqt-18` for WebTransport). Moving to
//! another draft means changing this module and the re-exports below.

use std::{
    net::{Ipv6Addr, SocketAddr, ToSocketAddrs},
    sync::Arc,
    time::Duration,
};

use bytes::Bytes;
use sha2::{Digest, Sha256};
use url::Url;

/// Re-export of the draft-specific transport crate for code that needs its session API
/// (the relay). Prefer the helpers of this module where they fit.
pub use moq_transport as transport;
pub use moq_transport::{
    coding::{TrackName, TrackNamespace},
    data::ExtensionHeaders,
    serve,
    session::{Publisher, Session, SessionError, Subscriber, Transport},
};
/// The QUIC implementation underneath, for callers that need connection statistics.
pub use quinn;

/// The ALPN for raw QUIC MoQT of the draft we speak.
pub const MOQT_ALPN: &str = moq_transport::setup::DraftVersion::Draft18.alpn_str();
/// The ALPN for WebTransport over HTTP/3.
pub const WEBTRANSPORT_ALPN: &str = web_transport_quinn::ALPN;

/// The name of the MSF catalog track (draft-ietf-moq-msf §5).
pub const CATALOG_TRACK: &str = "catalog";

/// Errors from connecting to a relay.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConnectError {
    #[error("unsupported URL scheme {0:?}: use https:// (WebTransport) or moqt:// (raw QUIC)")]
    Scheme(String),
    #[error("URL {0} has no host")]
    NoHost(String),
    #[error("could not resolve {host}: {source}")]
    Resolve {
        host: String,
        source: std::io::Error,
    },
    #[error("invalid certificate fingerprint {0:?}: expected 64 hex digits (SHA-256 of the DER certificate)")]
    Fingerprint(String),
    #[error("TLS configuration: {0}")]
    Tls(String),
    #[error("could not open a UDP socket: {0}")]
    Bind(std::io::Error),
    #[error("QUIC connection to {addr} failed: {source}")]
    Quic {
        addr: SocketAddr,
        source: quinn::ConnectionError,
    },
    #[error("QUIC connect to {addr}: {source}")]
    QuicConnect {
        addr: SocketAddr,
        source: quinn::ConnectError,
    },
    #[error("WebTransport handshake with {url} failed: {source}")]
    WebTransport {
        url: String,
        source: web_transport_quinn::ClientError,
    },
    #[error("MoQ SETUP with {url} failed: {source}")]
    Setup { url: String, source: SessionError },
    #[error("timed out connecting to {0}")]
    Timeout(String),
}

/// How a client checks the relay's certificate.
#[derive(Debug, Clone, Default)]
pub struct ClientTls {
    /// Accept any certificate (development only).
    pub disable_verify: bool,
    /// Accept exactly these certificates, by SHA-256 of their DER (the relay serves its own at
    /// `GET /certificate.sha256`). Empty means "use the system roots".
    pub fingerprints: Vec<[u8; 32]>,
}

impl ClientTls {
    /// Parses a hex SHA-256 fingerprint (colons allowed) and pins it.
    pub fn pin_hex(&mut self, hex_fp: &str) -> Result<(), ConnectError> {
        let cleaned: String = hex_fp.trim().chars().filter(|c| *c != ':').collect();
        let bytes = hex::decode(&cleaned).map_err(|_| ConnectError::Fingerprint(hex_fp.into()))?;
        let fp: [u8; 32] = bytes
            .try_into()
            .map_err(|_| ConnectError::Fingerprint(hex_fp.into()))?;
        self.fingerprints.push(fp);
        Ok(())
    }

    fn rustls_config(&self) -> Result<rustls::ClientConfig, ConnectError> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(|e| ConnectError::Tls(e.to_string()))?;
        let config = if self.disable_verify || !self.fingerprints.is_empty() {
            let verifier = PinnedVerifier {
                any: self.disable_verify,
                fingerprints: self.fingerprints.clone(),
                provider,
            };
            builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(verifier))
                .with_no_client_auth()
        } else {
            let mut roots = rustls::RootCertStore::empty();
            let native = rustls_native_certs::load_native_certs();
            for cert in native.certs {
                let _ = roots.add(cert);
            }
            builder.with_root_certificates(roots).with_no_client_auth()
        };
        Ok(config)
    }
}

/// SHA-256 of a DER certificate.
pub fn certificate_fingerprint(der: &[u8]) -> [u8; 32] {
    Sha256::digest(der).into()
}

#[derive(Debug)]
struct PinnedVerifier {
    any: bool,
    fingerprints: Vec<[u8; 32]>,
    provider: Arc<rustls::crypto::CryptoProvider>,
}

impl rustls::client::danger::ServerCertVerifier for PinnedVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &rustls::pki_types::CertificateDer<'_>,
        _intermediates: &[rustls::pki_types::CertificateDer<'_>],
        _server_name: &rustls::pki_types::ServerName<'_>,
        _ocsp_response: &[u8],
        _now: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        if self.any {
            return Ok(rustls::client::danger::ServerCertVerified::assertion());
        }
        let fp = certificate_fingerprint(end_entity.as_ref());
        if self.fingerprints.contains(&fp) {
            Ok(rustls::client::danger::ServerCertVerified::assertion())
        } else {
            Err(rustls::Error::General(format!(
                "server certificate fingerprint {} is not the pinned one",
                hex::encode(fp)
            )))
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// QUIC transport settings shared by our clients and the relay.
pub fn transport_config() -> quinn::TransportConfig {
    let mut t = quinn::TransportConfig::default();
    t.max_idle_timeout(Some(
        Duration::from_secs(10)
            .try_into()
            .expect("10 s fits a QUIC idle timeout"),
    ));
    t.keep_alive_interval(Some(Duration::from_secs(4)));
    // BBR rather than quinn's default Cubic for the clients (publisher, bench, sidecar). It was
    // chosen for the relay too, when it delivered 93% instead of 83% of the media at 1000
    // subscribers on an older relay; the relay now picks its own (`--congestion`, Cubic by
    // default: docs/relay.md, "Congestion control and acknowledgements").
    t.congestion_controller_factory(Arc::new(quinn::congestion::BbrConfig::default()));
    // One stream per group: allow plenty of concurrent uni streams.
    t.max_concurrent_uni_streams(1024u32.into());
    t.max_concurrent_bidi_streams(256u32.into());
    t
}

/// A connected MoQ session, split into its halves.
pub struct Connected {
    /// Drive this (`session.run()`) for as long as the publisher/subscriber are used.
    pub session: Session,
    pub publisher: Publisher,
    pub subscriber: Subscriber,
    /// The underlying QUIC connection (statistics, close).
    pub quic: quinn::Connection,
    pub transport: Transport,
}

/// A QUIC client endpoint that connects to relays over WebTransport or raw QUIC.
#[derive(Clone)]
pub struct Client {
    endpoint: quinn::Endpoint,
    crypto: Arc<rustls::ClientConfig>,
}

impl Client {
    /// Binds a client endpoint on an ephemeral UDP port (`[::]:0`, falling back to IPv4).
    pub fn new(tls: &ClientTls) -> Result<Self, ConnectError> {
        let endpoint = quinn::Endpoint::client(SocketAddr::from((Ipv6Addr::UNSPECIFIED, 0)))
            .or_else(|_| quinn::Endpoint::client(SocketAddr::from(([0, 0, 0, 0], 0))))
            .map_err(ConnectError::Bind)?;
        Ok(Self {
            endpoint,
            crypto: Arc::new(tls.rustls_config()?),
        })
    }

    /// Connects and performs the MoQ SETUP exchange. `https://` uses WebTransport,
    /// `moqt://` raw QUIC.
    pub async fn connect(&self, url: &Url) -> Result<Connected, ConnectError> {
        let fut = self.connect_inner(url);
        tokio::time::timeout(Duration::from_secs(10), fut)
            .await
            .map_err(|_| ConnectError::Timeout(url.to_string()))?
    }

    /// Closes every connection of this client (CONNECTION_CLOSE, code 0) and waits briefly
    /// for the peers to learn of it, so a relay sees a departing client at once rather than
    /// after its idle timeout.
    pub async fn close(&self) {
        self.endpoint.close(0u32.into(), b"client done");
        let _ = tokio::time::timeout(Duration::from_secs(1), self.endpoint.wait_idle()).await;
    }

    /// Moves this client's connections to `socket` (a new local address), as a NAT rebinding
    /// or a change of network does; each connection tells its peer at once from the new
    /// address. For tests and tools of connection migration.
    pub fn rebind(&self, socket: std::net::UdpSocket) -> std::io::Result<()> {
        self.endpoint.rebind(socket)
    }

    /// Opens only the QUIC connection (with the ALPN the URL's scheme implies), without the
    /// WebTransport and MoQ handshakes. For tests and tools that speak the wire themselves.
    pub async fn connect_quic(&self, url: &Url) -> Result<quinn::Connection, ConnectError> {
        Ok(self.quic(url).await?.0)
    }

    async fn quic(&self, url: &Url) -> Result<(quinn::Connection, Transport), ConnectError> {
        let (alpn, transport) = match url.scheme() {
            "https" => (WEBTRANSPORT_ALPN, Transport::WebTransport),
            "moqt" => (MOQT_ALPN, Transport::RawQuic),
            other => return Err(ConnectError::Scheme(other.into())),
        };
        let host = url
            .host_str()
            .ok_or_else(|| ConnectError::NoHost(url.to_string()))?
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_string();
        let port = url.port().unwrap_or(443);
        let addr = resolve(&host, port, &self.endpoint)?;

        let mut crypto = (*self.crypto).clone();
        crypto.alpn_protocols = vec![alpn.as_bytes().to_vec()];
        let quic_crypto = quinn::crypto::rustls::QuicClientConfig::try_from(crypto)
            .map_err(|e| ConnectError::Tls(e.to_string()))?;
        let mut config = quinn::ClientConfig::new(Arc::new(quic_crypto));
        config.transport_config(Arc::new(transport_config()));

        let server_name = if host.parse::<std::net::IpAddr>().is_ok() {
            "localhost".to_string()
        } else {
            host.clone()
        };
        let connecting = self
            .endpoint
            .connect_with(config, addr, &server_name)
            .map_err(|source| ConnectError::QuicConnect { addr, source })?;
        let conn = connecting
            .await
            .map_err(|source| ConnectError::Quic { addr, source })?;
        Ok((conn, transport))
    }

    async fn connect_inner(&self, url: &Url) -> Result<Connected, ConnectError> {
        let (conn, transport) = self.quic(url).await?;
        let wt = match transport {
            Transport::WebTransport => {
                let request = web_transport_quinn::proto::ConnectRequest::new(url.clone())
                    .with_protocol(MOQT_ALPN.to_string());
                web_transport_quinn::Session::connect(conn.clone(), request)
                    .await
                    .map_err(|source| ConnectError::WebTransport {
                        url: url.to_string(),
                        source,
                    })?
            }
            Transport::RawQuic => web_transport_quinn::Session::raw(
                conn.clone(),
                url.clone(),
                web_transport_quinn::proto::ConnectResponse::default(),
            ),
        };
        let (session, publisher, subscriber) = Session::connect(wt.into(), None, transport)
            .await
            .map_err(|source| ConnectError::Setup {
            url: url.to_string(),
            source,
        })?;
        Ok(Connected {
            session,
            publisher,
            subscriber,
            quic: conn,
            transport,
        })
    }
}

fn resolve(host: &str, port: u16, endpoint: &quinn::Endpoint) -> Result<SocketAddr, ConnectError> {
    let addrs: Vec<SocketAddr> = (host, port)
        .to_socket_addrs()
        .map_err(|source| ConnectError::Resolve {
            host: host.into(),
            source,
        })?
        .collect();
    let local_v6 = endpoint.local_addr().map(|a| a.is_ipv6()).unwrap_or(false);
    // An IPv6 (dual-stack) socket reaches both families; an IPv4 one only IPv4.
    addrs
        .iter()
        .find(|a| local_v6 || a.is_ipv4())
        .map(|a| {
            if local_v6 {
                if let SocketAddr::V4(v4) = a {
                    return SocketAddr::from((v4.ip().to_ipv6_mapped(), v4.port()));
                }
            }
            *a
        })
        .ok_or_else(|| ConnectError::Resolve {
            host: host.into(),
            source: std::io::Error::new(std::io::ErrorKind::NotFound, "no usable address"),
        })
}

/// Builds a namespace from a broadcast path such as `demo` or `live/demo`.
pub fn namespace(broadcast: &str) -> TrackNamespace {
    TrackNamespace::from_utf8_path(broadcast.trim_matches('/'))
}

/// The broadcast path of a namespace: its fields joined by `/` (`live/demo`).
pub fn broadcast_path(namespace: &TrackNamespace) -> String {
    namespace.to_utf8_path().trim_start_matches('/').to_string()
}

/// A namespace as a prefix, for matching longer namespaces below it.
pub fn as_prefix(namespace: &TrackNamespace) -> transport::coding::TrackNamespacePrefix {
    transport::coding::TrackNamespacePrefix::from_utf8_path(&broadcast_path(namespace))
}

/// One object as read from a subscription.
#[derive(Debug, Clone)]
pub struct ReceivedObject {
    pub group_id: u64,
    pub object_id: u64,
    pub properties: ExtensionHeaders,
    pub payload: Bytes,
}

/// Errors while publishing or reading a track.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TrackError {
    #[error("track error: {0}")]
    Serve(#[from] serve::ServeError),
    #[error("track {0} is delivered in an unsupported mode (only subgroup streams are supported)")]
    UnsupportedMode(String),
}

/// Publishes the tracks of one broadcast (a namespace).
pub struct BroadcastPublisher {
    tracks: serve::TracksWriter,
    reader: Option<serve::TracksReader>,
    /// Live subscription counts of the tracks registered with [`Self::watch_subscribers`].
    watched: std::collections::HashMap<String, tokio::sync::watch::Sender<usize>>,
}

impl BroadcastPublisher {
    pub fn new(broadcast: &str) -> Self {
        // Tracks are made up front with `create_track`; nobody serves requests for others, so
        // the request queue is closed at once. Kept open, a SUBSCRIBE for an unknown track (or
        // for a deeper namespace the relay routes here by prefix, such as `<broadcast>/ai` before
        // its captioner announces it) would wait for a track that never comes instead of
        // getting DOES_NOT_EXIST; the relay then held the subscriber for its 10 s upstream wait.
        let (tracks, request, reader) = serve::Tracks::new(namespace(broadcast)).produce();
        drop(request);
        Self {
            tracks,
            reader: Some(reader),
            watched: Default::default(),
        }
    }

    /// The number of subscriptions being served for `track`, kept up to date by
    /// [`Self::announce`]: it rises on each SUBSCRIBE and falls when that subscription ends
    /// (UNSUBSCRIBE, or its session closes). Lets a publisher work only while someone listens.
    pub fn watch_subscribers(&mut self, track: &str) -> tokio::sync::watch::Receiver<usize> {
        self.watched
            .entry(track.to_string())
            .or_insert_with(|| tokio::sync::watch::channel(0).0)
            .subscribe()
    }

    /// Creates a track; `None` when a track of that name exists already.
    pub fn create_track(&mut self, name: &str) -> Result<TrackPublisher, TrackError> {
        let writer = self
            .tracks
            .create(name)
            .ok_or(serve::ServeError::Duplicate)?;
        Ok(TrackPublisher {
            subgroups: writer.subgroups()?,
            current: None,
            next_group: 0,
        })
    }

    /// Announces the namespace (PUBLISH_NAMESPACE) and answers subscriptions until the session
    /// ends. Call once; run it beside `session.run()`.
    ///
    /// Also refuses, with DOES_NOT_EXIST, the session's SUBSCRIBEs that match no announced
    /// namespace. A relay routes a track to the publisher of any prefix of its namespace
    /// (draft-18 §8), so `<broadcast>/ai` reaches this publisher until a captioner announces
    /// it; unanswered, such a request would hang until the relay gives up.
    pub async fn announce(&mut self, publisher: &mut Publisher) -> Result<(), SessionError> {
        let reader = self.reader.take().ok_or(SessionError::Internal)?;
        let mut unknown = publisher.clone();
        let refuse = refuse_unknown_subscriptions(&mut unknown);
        if self.watched.is_empty() {
            tokio::select! {
                res = publisher.publish_namespace(reader) => res,
                never = refuse => match never {},
            }
        } else {
            tokio::select! {
                res = self.announce_counted(publisher, reader) => res,
                never = refuse => match never {},
            }
        }
    }

    /// [`Self::announce`] that counts the subscriptions of the watched tracks.
    async fn announce_counted(
        &mut self,
        publisher: &mut Publisher,
        tracks: serve::TracksReader,
    ) -> Result<(), SessionError> {
        use futures::StreamExt;
        let request = publisher
            .publish_namespace_start(tracks.namespace.clone())
            .await?;
        let mut serving = futures::stream::FuturesUnordered::new();
        let mut statuses = futures::stream::FuturesUnordered::new();
        let (mut subscribes_open, mut statuses_open) = (true, true);
        loop {
            tokio::select! {
                next = request.subscribed(), if subscribes_open => match next? {
                    Some(subscribed) => {
                        let name = subscribed.info.track_name.to_string_lossy().into_owned();
                        let count = self.watched.get(&name).cloned();
                        let tracks = tracks.clone();
                        serving.push(async move {
                            if let Some(count) = &count {
                                count.send_modify(|n| *n += 1);
                            }
                            let res = Publisher::serve_subscribe(subscribed, tracks).await;
                            if let Some(count) = &count {
                                count.send_modify(|n| *n = n.saturating_sub(1));
                            }
                            if let Err(e) = res {
                                tracing::debug!(track = %name, error = %e, "subscription ended");
                            }
                        });
                    }
                    None => subscribes_open = false,
                },
                next = request.track_status_requested(), if statuses_open => match next? {
                    Some(status) => {
                        let tracks = tracks.clone();
                        statuses.push(async move {
                            if let Err(e) = Publisher::serve_track_status(status, tracks).await {
                                tracing::debug!(error = %e, "track status request failed");
                            }
                        });
                    }
                    None => statuses_open = false,
                },
                Some(()) = serving.next() => {}
                Some(()) = statuses.next() => {}
                else => return Ok(()),
            }
        }
    }
}

/// Answers every SUBSCRIBE of `publisher`'s session that matched none of its announced
/// namespaces with DOES_NOT_EXIST, for as long as the session lasts; never returns.
async fn refuse_unknown_subscriptions(publisher: &mut Publisher) -> std::convert::Infallible {
    while let Some(subscribed) = publisher.subscribed().await {
        let namespace = subscribed.info.track_namespace.to_string();
        let name = subscribed.info.track_name.to_string_lossy().into_owned();
        tracing::debug!(%namespace, track = %name, "refusing a SUBSCRIBE for a namespace not published here");
        let _ = subscribed.close(serve::ServeError::NotFound);
    }
    std::future::pending().await
}

/// Writes LOC objects into one track, one group per GOP (or per catalog version).
pub struct TrackPublisher {
    subgroups: serve::SubgroupsWriter,
    current: Option<serve::SubgroupWriter>,
    next_group: u64,
}

impl TrackPublisher {
    /// Starts a new group; the previous one is finished.
    pub fn start_group(&mut self) -> Result<u64, TrackError> {
        self.current.take();
        let group_id = self.next_group;
        self.next_group += 1;
        let writer = self.subgroups.create(serve::Subgroup {
            group_id,
            subgroup_id: 0,
            priority: 0,
        })?;
        self.current = Some(writer);
        Ok(group_id)
    }

    /// Appends an object to the current group (starting one if none is open).
    pub fn write(
        &mut self,
        properties: ExtensionHeaders,
        payload: Bytes,
    ) -> Result<(), TrackError> {
        if self.current.is_none() {
            self.start_group()?;
        }
        let group = self.current.as_mut().expect("a group is open");
        let ext = (!properties.is_empty()).then_some(properties);
        let mut object = group.create(payload.len(), ext)?;
        object.write(payload)?;
        Ok(())
    }

    /// Finishes the current group without starting another.
    pub fn finish_group(&mut self) {
        self.current.take();
    }
}

/// Subscribes to one track and yields its objects in order within each group.
pub struct TrackSubscription {
    reader: serve::TrackReader,
    subgroups: Option<serve::SubgroupsReader>,
    groups: futures::stream::FuturesUnordered<GroupRead>,
}

/// One pending read of a group: the next object (or its end) and the group reader back.
type GroupRead = std::pin::Pin<
    Box<
        dyn std::future::Future<
                Output = (
                    Result<Option<ReceivedObject>, serve::ServeError>,
                    serve::SubgroupReader,
                ),
            > + Send,
    >,
>;

impl TrackSubscription {
    /// Sends SUBSCRIBE for `track` of `broadcast`. The returned future drives the
    /// subscription request and must be polled (spawned) while reading.
    pub fn new(
        subscriber: &Subscriber,
        broadcast: &str,
        track: &str,
    ) -> (
        Self,
        impl std::future::Future<Output = Result<(), serve::ServeError>> + Send + 'static,
    ) {
        let (writer, reader) = serve::Track::new(namespace(broadcast), track).produce();
        let mut subscriber = subscriber.clone();
        let driver = async move { subscriber.subscribe(writer).await };
        (
            Self {
                reader,
                subgroups: None,
                groups: Default::default(),
            },
            driver,
        )
    }

    /// The next object of any open group, or `None` when the track ended.
    ///
    /// Cancel-safe: objects are not lost if the future is dropped between polls, except the
    /// one being read when a group's future is dropped mid-read (the whole group future is
    /// kept in `self`, so this does not happen in practice).
    pub async fn next(&mut self) -> Result<Option<ReceivedObject>, TrackError> {
        use futures::StreamExt;
        if self.subgroups.is_none() {
            match self.reader.mode().await? {
                serve::TrackReaderMode::Subgroups(s) => self.subgroups = Some(s),
                _ => {
                    return Err(TrackError::UnsupportedMode(
                        self.reader.name.to_string_lossy().into_owned(),
                    ))
                }
            }
        }
        loop {
            let subgroups = self.subgroups.as_mut().expect("mode resolved");
            tokio::select! {
                next = subgroups.next() => match next? {
                    Some(group) => self.groups.push(Box::pin(read_one(group))),
                    None => {
                        // Track ended: drain the open groups.
                        while let Some((res, group)) = self.groups.next().await {
                            if let Ok(Some(obj)) = res {
                                self.groups.push(Box::pin(read_one(group)));
                                return Ok(Some(obj));
                            }
                        }
                        return Ok(None);
                    }
                },
                Some((res, group)) = self.groups.next(), if !self.groups.is_empty() => {
                    match res {
                        Ok(Some(obj)) => {
                            self.groups.push(Box::pin(read_one(group)));
                            return Ok(Some(obj));
                        }
                        // End of group or a reset group stream: drop that group only.
                        Ok(None) | Err(_) => continue,
                    }
                }
            }
        }
    }
}

async fn read_one(
    mut group: serve::SubgroupReader,
) -> (
    Result<Option<ReceivedObject>, serve::ServeError>,
    serve::SubgroupReader,
) {
    let res = async {
        let Some(mut object) = group.next().await? else {
            return Ok(None);
        };
        let payload = object.read_all().await?;
        Ok(Some(ReceivedObject {
            group_id: group.group_id,
            object_id: object.object_id,
            properties: object.extension_headers.clone(),
            payload,
        }))
    }
    .await;
    (res, group)
}

/// The data-stream encoding of a subgroup (draft-18 §11.4.2) for a relay that writes its own
/// subgroup streams: the header once per stream, then one object header before each payload.
/// The encoders are the transport crate's, so the bytes are those its own forwarder sends.
pub mod wire {
    use bytes::{Buf, Bytes, BytesMut};
    use moq_transport::{
        coding::{Decode, DecodeError, Encode},
        data::{
            ExtensionHeaders, ObjectStatus, StreamHeaderType, SubgroupHeader, SubgroupIdMode,
            SubgroupObject, SubgroupObjectExt,
        },
    };

    /// Reset code for a subgroup stream abandoned because its subscriber fell behind.
    pub const RESET_TOO_FAR_BEHIND: u32 =
        moq_transport::data::DataStreamResetCode::TooFarBehind as u32;
    /// Reset code for a subgroup stream cut short because the subscription or track ended.
    pub const RESET_CANCELLED: u32 = moq_transport::data::DataStreamResetCode::Cancelled as u32;

    /// Errors building a subgroup stream.
    #[derive(Debug, thiserror::Error, PartialEq, Eq)]
    #[non_exhaustive]
    pub enum WireError {
        #[error("object {object} does not follow object {previous} in its subgroup")]
        NotIncreasing { previous: u64, object: u64 },
        #[error("encoding failed: {0}")]
        Encode(String),
    }

    /// The SUBGROUP_HEADER: explicit subgroup id, objects with a properties field, the first
    /// object of the subgroup first (the relay always starts a subgroup at its beginning).
    pub fn subgroup_header(
        track_alias: u64,
        group_id: u64,
        subgroup_id: u64,
        priority: u8,
    ) -> Result<Bytes, WireError> {
        let header = SubgroupHeader {
            header_type: StreamHeaderType::subgroup(
                SubgroupIdMode::Explicit,
                true,
                false,
                false,
                true,
            ),
            track_alias,
            group_id,
            subgroup_id: Some(subgroup_id),
            publisher_priority: priority,
        };
        let mut buf = BytesMut::with_capacity(32);
        header
            .encode(&mut buf)
            .map_err(|e| WireError::Encode(e.to_string()))?;
        Ok(buf.freeze())
    }

    /// The header that precedes an object's `payload_len` payload bytes on a subgroup stream,
    /// after the object `previous` of the same stream (`None`: the stream's first object). An
    /// object with a status other than normal has no payload and carries its status instead.
    /// A relay encodes it once per object: every subscriber's stream that starts at the same
    /// object carries the same bytes.
    pub fn object_header(
        previous: Option<u64>,
        object_id: u64,
        properties: &ExtensionHeaders,
        payload_len: usize,
        status: ObjectStatus,
    ) -> Result<Bytes, WireError> {
        let delta = match previous {
            None => object_id,
            Some(previous) => object_id
                .checked_sub(previous)
                .and_then(|d| d.checked_sub(1))
                .ok_or(WireError::NotIncreasing {
                    previous,
                    object: object_id,
                })?,
        };
        let normal = status == ObjectStatus::NormalObject;
        let object = SubgroupObjectExt {
            object_id_delta: delta,
            extension_headers: properties.clone(),
            payload_length: if normal { payload_len } else { 0 },
            status: (!normal || payload_len == 0).then_some(status),
        };
        let mut buf = BytesMut::with_capacity(if properties.is_empty() { 16 } else { 64 });
        object
            .encode(&mut buf)
            .map_err(|e| WireError::Encode(e.to_string()))?;
        Ok(buf.freeze())
    }

    /// An object read off a subgroup stream.
    #[derive(Debug, Clone, PartialEq, Eq)]
    pub struct ParsedObject {
        pub id: u64,
        pub status: ObjectStatus,
        pub properties: ExtensionHeaders,
        pub payload: Bytes,
    }

    /// Why a subgroup stream was not read to its end.
    #[derive(Debug, thiserror::Error, PartialEq, Eq)]
    #[non_exhaustive]
    pub enum ParseError {
        #[error("malformed object header: {0}")]
        Malformed(String),
        #[error("object id overflows")]
        IdOverflow,
        #[error("object with status {0:?} carries properties")]
        StatusWithProperties(ObjectStatus),
        #[error("object of {0} bytes is larger than the track cache ({1} bytes)")]
        TooLarge(usize, usize),
        #[error("stream ended inside an object")]
        Truncated,
    }

    /// Decodes the objects of one subgroup stream, after its header, from bytes as they arrive.
    #[derive(Debug)]
    pub struct SubgroupParser {
        properties: bool,
        max_payload: usize,
        previous: Option<u64>,
        /// The object whose header was read and whose payload is still arriving.
        pending: Option<(u64, usize, ObjectStatus, ExtensionHeaders)>,
    }

    impl SubgroupParser {
        pub fn new(properties: bool, max_payload: usize) -> Self {
            Self {
                properties,
                max_payload,
                previous: None,
                pending: None,
            }
        }

        /// The next whole object at the front of `buf` (taken out of it), or `None` until more
        /// bytes arrive.
        pub fn next(&mut self, buf: &mut BytesMut) -> Result<Option<ParsedObject>, ParseError> {
            if self.pending.is_none() {
                let mut cursor = &buf[..];
                let decoded = if self.properties {
                    SubgroupObjectExt::decode(&mut cursor).map(|o| {
                        (
                            o.object_id_delta,
                            o.payload_length,
                            o.status,
                            o.extension_headers,
                        )
                    })
                } else {
                    SubgroupObject::decode(&mut cursor).map(|o| {
                        (
                            o.object_id_delta,
                            o.payload_length,
                            o.status,
                            ExtensionHeaders::default(),
                        )
                    })
                };
                let (delta, len, status, properties) = match decoded {
                    Ok(d) => d,
                    Err(DecodeError::More(_)) => return Ok(None),
                    Err(e) => return Err(ParseError::Malformed(e.to_string())),
                };
                if len > self.max_payload {
                    return Err(ParseError::TooLarge(len, self.max_payload));
                }
                let status = status.unwrap_or(ObjectStatus::NormalObject);
                if status != ObjectStatus::NormalObject && !properties.is_empty() {
                    return Err(ParseError::StatusWithProperties(status));
                }
                let id = match self.previous {
                    Some(p) => p
                        .checked_add(delta)
                        .and_then(|v| v.checked_add(1))
                        .ok_or(ParseError::IdOverflow)?,
                    None => delta,
                };
                self.previous = Some(id);
                let used = buf.len() - cursor.len();
                buf.advance(used);
                self.pending = Some((id, len, status, properties));
            }
            let len = self.pending.as_ref().map_or(0, |p| p.1);
            if buf.len() < len {
                buf.reserve(len - buf.len());
                return Ok(None);
            }
            let (id, _, status, properties) = self.pending.take().expect("checked above");
            Ok(Some(ParsedObject {
                id,
                status,
                properties,
                payload: buf.split_to(len).freeze(),
            }))
        }

        /// Checks the stream's end (FIN) against what is left: nothing, or a torn object.
        pub fn finish(&self, rest: &[u8]) -> Result<(), ParseError> {
            if self.pending.is_some() || !rest.is_empty() {
                return Err(ParseError::Truncated);
            }
            Ok(())
        }
    }
}

#[cfg(test)]
mod wire_tests {
    use bytes::Buf;
    use moq_transport::{
        coding::Decode,
        data::{ObjectStatus, StreamHeaderType, SubgroupHeader, SubgroupObjectExt},
    };

    use super::{wire, ExtensionHeaders};
    use bytes::{Bytes, BytesMut};
    use wire::{ParseError, SubgroupParser};

    fn stream(objects: &[(u64, &[u8])]) -> BytesMut {
        let mut out = BytesMut::new();
        let mut previous = None;
        for (id, payload) in objects {
            let status = if payload.is_empty() {
                ObjectStatus::EndOfGroup
            } else {
                ObjectStatus::NormalObject
            };
            let header = wire::object_header(
                previous,
                *id,
                &ExtensionHeaders::default(),
                payload.len(),
                status,
            )
            .unwrap();
            out.extend_from_slice(&header);
            out.extend_from_slice(payload);
            previous = Some(*id);
        }
        out
    }

    #[test]
    fn parses_objects_fed_a_byte_at_a_time() {
        let bytes = stream(&[(0, b"key"), (1, b"delta"), (5, b"")]);
        let mut parser = SubgroupParser::new(true, 1024);
        let mut buf = BytesMut::new();
        let mut got = Vec::new();
        for b in bytes.iter() {
            buf.extend_from_slice(&[*b]);
            while let Some(o) = parser.next(&mut buf).unwrap() {
                got.push((o.id, o.status, o.payload));
            }
        }
        parser.finish(&buf).unwrap();
        assert_eq!(
            got,
            vec![
                (0, ObjectStatus::NormalObject, Bytes::from_static(b"key")),
                (1, ObjectStatus::NormalObject, Bytes::from_static(b"delta")),
                (5, ObjectStatus::EndOfGroup, Bytes::new()),
            ]
        );
    }

    #[test]
    fn parses_a_whole_stream_at_once() {
        let mut buf = stream(&[(0, b"a"), (1, b"bb")]);
        let mut parser = SubgroupParser::new(true, 1024);
        assert_eq!(parser.next(&mut buf).unwrap().unwrap().payload, "a");
        assert_eq!(parser.next(&mut buf).unwrap().unwrap().payload, "bb");
        assert_eq!(parser.next(&mut buf).unwrap(), None);
        assert!(buf.is_empty());
        parser.finish(&buf).unwrap();
    }

    #[test]
    fn a_torn_object_or_a_huge_one_is_an_error() {
        let full = stream(&[(0, b"payload")]);
        let mut parser = SubgroupParser::new(true, 1024);
        let mut buf = BytesMut::from(&full[..full.len() - 2]);
        assert_eq!(parser.next(&mut buf).unwrap(), None);
        assert_eq!(parser.finish(&buf), Err(ParseError::Truncated));

        let mut parser = SubgroupParser::new(true, 4);
        let mut buf = full.clone();
        assert_eq!(parser.next(&mut buf), Err(ParseError::TooLarge(7, 4)));

        // A 2-byte varint prefix followed by garbage that is not a valid properties block:
        // properties length 5 with only a 1-byte body is "need more", never a panic.
        let mut parser = SubgroupParser::new(true, 1024);
        let mut buf = BytesMut::from(&[0x00, 0x05, 0x01][..]);
        assert_eq!(parser.next(&mut buf).unwrap(), None);
    }

    #[test]
    fn subgroup_stream_round_trips_through_the_transport_decoder() {
        let header = wire::subgroup_header(7, 42, 0, 3).unwrap();
        let none = ExtensionHeaders::default();
        let first = wire::object_header(None, 0, &none, 4, ObjectStatus::NormalObject).unwrap();
        let gap = wire::object_header(Some(0), 5, &none, 0, ObjectStatus::EndOfGroup).unwrap();

        let mut buf = header.clone();
        let header_type = StreamHeaderType::decode(&mut buf).unwrap();
        let h = SubgroupHeader::decode(header_type, &mut buf).unwrap();
        assert!(!buf.has_remaining());
        assert_eq!(
            (
                h.track_alias,
                h.group_id,
                h.subgroup_id,
                h.publisher_priority
            ),
            (7, 42, Some(0), 3)
        );
        assert!(h.header_type.has_properties());

        let mut buf = first.clone();
        let o = SubgroupObjectExt::decode(&mut buf).unwrap();
        assert_eq!(
            (o.object_id_delta, o.payload_length, o.status),
            (0, 4, None)
        );
        let mut buf = gap.clone();
        let o = SubgroupObjectExt::decode(&mut buf).unwrap();
        assert_eq!((o.object_id_delta, o.payload_length), (4, 0));
        assert_eq!(o.status, Some(ObjectStatus::EndOfGroup));
    }

    #[test]
    fn object_ids_must_increase() {
        let none = ExtensionHeaders::default();
        assert_eq!(
            wire::object_header(Some(3), 3, &none, 1, ObjectStatus::NormalObject),
            Err(wire::WireError::NotIncreasing {
                previous: 3,
                object: 3
            })
        );
    }
}
