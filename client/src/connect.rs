//! Connecting to a relay: a QUIC client endpoint, the relay's certificate (system roots, pinned
//! fingerprints or none), raw QUIC or WebTransport by URL scheme, then the MoQ SETUP.
//!
//! The SETUP and the session halves are moq-transport 0.17's (re-exported by
//! `moqcast_media::moq`); this file and [`crate::track`] are the only places of the crate that
//! touch its session API.

use std::{
    net::{Ipv6Addr, SocketAddr, ToSocketAddrs},
    sync::Arc,
    time::Duration,
};

use moqcast_media::moq::transport::setup::AuthorizationToken;
use moqcast_media::moq::{
    certificate_fingerprint, quinn, transport_config, Publisher, Session, SessionError, Subscriber,
    Transport, MOQT_ALPN, WEBTRANSPORT_ALPN,
};
use url::Url;

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
    /// The token presented to the relay (a JWT), if any: `?jwt=` on WebTransport URLs (unless
    /// the URL has one), the AUTHORIZATION TOKEN setup option on raw QUIC.
    pub token: Option<String>,
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

    /// The TLS client configuration these settings make (no ALPN set): also for HTTPS and
    /// HTTP/3 clients of the relay.
    pub fn rustls_config(&self) -> Result<rustls::ClientConfig, ConnectError> {
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
    token: Option<String>,
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
            token: tls.token.clone(),
        })
    }

    /// Binds a client endpoint on this local address (a source address of the caller's choice,
    /// e.g. `127.0.0.2:0` on loopback, for tools that play many hosts).
    pub fn bind(tls: &ClientTls, local: SocketAddr) -> Result<Self, ConnectError> {
        let endpoint = quinn::Endpoint::client(local).map_err(ConnectError::Bind)?;
        Ok(Self {
            endpoint,
            crypto: Arc::new(tls.rustls_config()?),
            token: tls.token.clone(),
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
        let mut quic_transport = transport_config();
        // A packet a second even when idle: after a relay restart, the relay answers the next one
        // with a stateless reset (its key survives restarts), so a client learns within a
        // second that its connection is gone and reconnects, not after the 10 s idle timeout.
        quic_transport.keep_alive_interval(Some(Duration::from_secs(1)));
        config.transport_config(Arc::new(quic_transport));

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
                // The error below names `url`, without the token.
                let mut with_token = url.clone();
                if let Some(token) = &self.token {
                    if !url.query_pairs().any(|(k, _)| k == "jwt") {
                        with_token.query_pairs_mut().append_pair("jwt", token);
                    }
                }
                let request = web_transport_quinn::proto::ConnectRequest::new(with_token)
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
        // Token type 0: "agreed out of band" (draft-18 §10.3.1.4); the value is the JWT.
        let tokens = self
            .token
            .iter()
            .map(|t| AuthorizationToken::new(0, t.as_bytes().to_vec()))
            .collect();
        let (session, publisher, subscriber) =
            Session::connect_with_tokens(wt.into(), None, transport, tokens)
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
