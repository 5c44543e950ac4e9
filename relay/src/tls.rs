//! TLS for the relay: certificate files, or a generated self-signed development certificate
//! that browsers can pin with `serverCertificateHashes` (ECDSA P-256, valid at most 14 days).
//!
//! [`CertStore`] holds the certificate served right now. Every TLS listener (the QUIC endpoint
//! or shards, HTTPS) resolves it per handshake, so a swap reaches every new handshake at once
//! and leaves established connections alone. [`CertStore::watch`] swaps in certificate files
//! when they change (an ACME renewal) and renews a generated certificate before it expires.

use std::{
    path::{Path, PathBuf},
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc, RwLock,
    },
    time::{Duration, SystemTime},
};

use rustls::{
    pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer},
    server::{ClientHello, ResolvesServerCert},
    sign::CertifiedKey,
};

/// The relay's certificate chain and key, plus the leaf's SHA-256 fingerprint.
#[derive(Debug, Clone)]
pub struct Identity {
    pub chain: Vec<CertificateDer<'static>>,
    pub key: Arc<PrivateKeyDer<'static>>,
    pub fingerprint: [u8; 32],
}

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TlsError {
    #[error("could not read {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("{0} holds no PEM certificate")]
    NoCertificate(String),
    #[error("{0} holds no PEM private key")]
    NoKey(String),
    #[error("could not generate a certificate: {0}")]
    Generate(String),
    #[error("TLS configuration: {0}")]
    Config(String),
}

/// How long a generated development certificate is valid: Chromium pins only certificates
/// valid for at most 14 days.
pub const GENERATED_VALIDITY: Duration = Duration::from_secs(13 * 24 * 3600);

/// A generated certificate is renewed when less than this is left of it (viewers pin the new
/// one when they next connect; sessions on the old one carry on).
pub const RENEW_BEFORE: Duration = Duration::from_secs(2 * 24 * 3600);

/// How often [`CertStore::watch`] looks at the certificate files.
pub const RELOAD_INTERVAL: Duration = Duration::from_secs(2);

fn read_file(p: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(p).map_err(|source| TlsError::Read {
        path: p.display().to_string(),
        source,
    })
}

impl Identity {
    /// Loads PEM files.
    pub fn load(cert: &Path, key: &Path) -> Result<Self, TlsError> {
        Self::from_pem(&read_file(cert)?, &read_file(key)?, cert, key)
    }

    /// Parses a PEM certificate chain and key (`cert`/`key` name them in errors).
    pub fn from_pem(
        cert_pem: &[u8],
        key_pem: &[u8],
        cert: &Path,
        key: &Path,
    ) -> Result<Self, TlsError> {
        let chain: Vec<CertificateDer<'static>> = rustls_pemfile::certs(&mut { cert_pem })
            .filter_map(Result::ok)
            .collect();
        let leaf = chain
            .first()
            .ok_or_else(|| TlsError::NoCertificate(cert.display().to_string()))?;
        let fingerprint = moqcast_media::moq::certificate_fingerprint(leaf.as_ref());
        let key = rustls_pemfile::private_key(&mut { key_pem })
            .ok()
            .flatten()
            .ok_or_else(|| TlsError::NoKey(key.display().to_string()))?;
        Ok(Self {
            chain,
            key: Arc::new(key),
            fingerprint,
        })
    }

    /// Generates a self-signed ECDSA P-256 certificate for `names`, valid from one hour ago for
    /// 13 days (Chromium pins only certificates valid for at most 14 days).
    pub fn generate(names: &[String]) -> Result<Self, TlsError> {
        Self::generate_at(names, SystemTime::now())
    }

    /// [`Identity::generate`] as of `now`: valid from an hour before it until
    /// `now + GENERATED_VALIDITY`.
    pub fn generate_at(names: &[String], now: SystemTime) -> Result<Self, TlsError> {
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)
            .map_err(|e| TlsError::Generate(e.to_string()))?;
        let mut params = rcgen::CertificateParams::new(names.to_vec())
            .map_err(|e| TlsError::Generate(e.to_string()))?;
        let now = time::OffsetDateTime::from(now);
        params.not_before = now - time::Duration::hours(1);
        params.not_after = now + GENERATED_VALIDITY;
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "moqcast development relay");
        let cert = params
            .self_signed(&key)
            .map_err(|e| TlsError::Generate(e.to_string()))?;
        let der = cert.der().clone();
        let fingerprint = moqcast_media::moq::certificate_fingerprint(der.as_ref());
        Ok(Self {
            chain: vec![der],
            key: Arc::new(PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(
                key.serialize_der(),
            ))),
            fingerprint,
        })
    }

    /// The key of the QUIC stateless resets: HMAC-SHA256 keyed by a hash of the TLS private
    /// key, so the same certificate and key give the same resets across restarts (a client of
    /// the relay before a restart learns at its next packet that its connection is gone).
    pub fn reset_key(&self) -> Arc<dyn quinn::crypto::HmacKey> {
        let mut input = b"moqcast stateless reset key\0".to_vec();
        input.extend_from_slice(self.key.secret_der());
        let digest = ring::digest::digest(&ring::digest::SHA256, &input);
        Arc::new(ring::hmac::Key::new(
            ring::hmac::HMAC_SHA256,
            digest.as_ref(),
        ))
    }

    pub fn fingerprint_hex(&self) -> String {
        hex::encode(self.fingerprint)
    }

    /// The chain and key as rustls serves them; fails when the key is not the certificate's.
    pub fn certified_key(&self) -> Result<CertifiedKey, TlsError> {
        CertifiedKey::from_der(
            self.chain.clone(),
            self.key.clone_key(),
            &rustls::crypto::ring::default_provider(),
        )
        .map_err(|e| TlsError::Config(e.to_string()))
    }

    /// A rustls server config offering WebTransport (`h3`) and raw MoQT ALPNs.
    pub fn server_config(&self) -> Result<rustls::ServerConfig, TlsError> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = rustls::ServerConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(|e| TlsError::Config(e.to_string()))?
            .with_no_client_auth()
            .with_single_cert(self.chain.clone(), self.key.clone_key())
            .map_err(|e| TlsError::Config(e.to_string()))?;
        config.alpn_protocols = quic_alpns();
        Ok(config)
    }
}

/// WebTransport and HTTP/3 (`h3`), then every MoQT version the session layer speaks over raw
/// QUIC.
fn quic_alpns() -> Vec<Vec<u8>> {
    std::iter::once(moqcast_media::moq::WEBTRANSPORT_ALPN.as_bytes().to_vec())
        .chain(
            moqcast_session::Version::ALL
                .iter()
                .map(|v| v.alpn().as_bytes().to_vec()),
        )
        .collect()
}

/// Where the relay's certificate comes from.
#[derive(Debug, Clone)]
pub enum Source {
    /// PEM files, re-read when they change.
    Files { cert: PathBuf, key: PathBuf },
    /// A self-signed development certificate for these names, renewed before it expires.
    Generate(Vec<String>),
}

/// The certificate served now.
#[derive(Debug)]
pub struct Served {
    pub identity: Identity,
    certified: Arc<CertifiedKey>,
    /// Hex SHA-256 of the leaf (what `/certificate.sha256` answers).
    pub fingerprint_hex: String,
    /// The end of a generated certificate's validity (a file's is not read).
    pub not_after: Option<SystemTime>,
    /// The file contents it was made from (certificate, key).
    pem: Option<(Vec<u8>, Vec<u8>)>,
}

impl Served {
    fn new(
        identity: Identity,
        not_after: Option<SystemTime>,
        pem: Option<(Vec<u8>, Vec<u8>)>,
    ) -> Result<Self, TlsError> {
        Ok(Self {
            certified: Arc::new(identity.certified_key()?),
            fingerprint_hex: identity.fingerprint_hex(),
            identity,
            not_after,
            pem,
        })
    }

    /// Base64 SHA-256 of the certificate's public key (SubjectPublicKeyInfo): what Chromium's
    /// `--ignore-certificate-errors-spki-list` takes, to open pages of a development relay
    /// over HTTPS.
    pub fn spki_sha256_base64(&self) -> Option<String> {
        use base64::Engine;
        let spki = self.certified.key.public_key()?;
        let digest = ring::digest::digest(&ring::digest::SHA256, spki.as_ref());
        Some(base64::engine::general_purpose::STANDARD.encode(digest.as_ref()))
    }

    /// Whether a generated certificate is due for renewal at `now`.
    pub fn due_for_renewal(&self, now: SystemTime) -> bool {
        self.not_after.is_some_and(|end| {
            end.duration_since(now)
                .map_or(true, |left| left < RENEW_BEFORE)
        })
    }
}

/// The relay's current certificate, shared by every TLS listener through
/// [`ResolvesServerCert`], and swapped without a restart (see the module doc).
#[derive(Debug)]
pub struct CertStore {
    source: Source,
    current: RwLock<Arc<Served>>,
    /// Certificate file contents that failed to load last, so a bad file is logged once.
    failed: std::sync::Mutex<Option<(Vec<u8>, Vec<u8>)>>,
    /// Certificates swapped in (changed files, renewed development certificates).
    pub reloads: AtomicU64,
    /// Changed certificate files that could not be loaded (the old certificate stayed).
    pub reload_failures: AtomicU64,
}

impl CertStore {
    /// Loads the files or generates a certificate.
    pub fn new(source: Source) -> Result<Arc<Self>, TlsError> {
        let served = match &source {
            Source::Files { cert, key } => {
                let pem = (read_file(cert)?, read_file(key)?);
                Served::new(
                    Identity::from_pem(&pem.0, &pem.1, cert, key)?,
                    None,
                    Some(pem),
                )?
            }
            Source::Generate(names) => Self::generated(names, SystemTime::now())?,
        };
        Ok(Arc::new(Self {
            source,
            current: RwLock::new(Arc::new(served)),
            failed: Default::default(),
            reloads: AtomicU64::new(0),
            reload_failures: AtomicU64::new(0),
        }))
    }

    fn generated(names: &[String], now: SystemTime) -> Result<Served, TlsError> {
        Served::new(
            Identity::generate_at(names, now)?,
            Some(now + GENERATED_VALIDITY),
            None,
        )
    }

    /// The certificate served now.
    pub fn current(&self) -> Arc<Served> {
        self.current.read().expect("poisoned").clone()
    }

    /// Hex SHA-256 of the certificate served now.
    pub fn fingerprint_hex(&self) -> String {
        self.current().fingerprint_hex.clone()
    }

    /// Whether the certificate is a generated development one (browsers pin it by hash).
    pub fn is_generated(&self) -> bool {
        matches!(self.source, Source::Generate(_))
    }

    /// QUIC's TLS: WebTransport/HTTP/3 and raw MoQT ALPNs, TLS 1.3 only.
    pub fn quic_server_config(self: &Arc<Self>) -> Result<rustls::ServerConfig, TlsError> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = rustls::ServerConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(|e| TlsError::Config(e.to_string()))?
            .with_no_client_auth()
            .with_cert_resolver(self.clone());
        config.alpn_protocols = quic_alpns();
        Ok(config)
    }

    /// HTTPS over TCP: HTTP/2 or HTTP/1.1 by ALPN, TLS 1.2 or 1.3.
    pub fn https_server_config(self: &Arc<Self>) -> Result<rustls::ServerConfig, TlsError> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| TlsError::Config(e.to_string()))?
            .with_no_client_auth()
            .with_cert_resolver(self.clone());
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Ok(config)
    }

    /// Looks once for a new certificate: changed files are loaded and swapped in (a file that
    /// does not load is logged and the old certificate kept); a generated certificate due for
    /// renewal at `now` is replaced. Returns whether the certificate changed.
    pub fn check(&self, now: SystemTime) -> bool {
        let next = match &self.source {
            Source::Files { cert, key } => {
                let pem = match (read_file(cert), read_file(key)) {
                    (Ok(c), Ok(k)) => (c, k),
                    // Mid-rename, or gone: the next look will tell.
                    _ => return false,
                };
                if self.current().pem.as_ref() == Some(&pem) {
                    return false;
                }
                let mut failed = self.failed.lock().expect("poisoned");
                if failed.as_ref() == Some(&pem) {
                    return false;
                }
                match Identity::from_pem(&pem.0, &pem.1, cert, key)
                    .and_then(|id| Served::new(id, None, Some(pem.clone())))
                {
                    Ok(served) => {
                        *failed = None;
                        served
                    }
                    Err(e) => {
                        self.reload_failures.fetch_add(1, Ordering::Relaxed);
                        tracing::warn!(cert = %cert.display(), key = %key.display(), error = %e,
                            "changed certificate files do not load: still serving the old certificate");
                        *failed = Some(pem);
                        return false;
                    }
                }
            }
            Source::Generate(names) => {
                if !self.current().due_for_renewal(now) {
                    return false;
                }
                match Self::generated(names, now) {
                    Ok(served) => served,
                    Err(e) => {
                        self.reload_failures.fetch_add(1, Ordering::Relaxed);
                        tracing::warn!(error = %e, "could not renew the development certificate");
                        return false;
                    }
                }
            }
        };
        let fingerprint = next.fingerprint_hex.clone();
        *self.current.write().expect("poisoned") = Arc::new(next);
        self.reloads.fetch_add(1, Ordering::Relaxed);
        tracing::info!(%fingerprint, generated = self.is_generated(),
            "new certificate: serving it to new handshakes");
        true
    }

    /// Calls [`CertStore::check`] every `interval` until `cancel`.
    pub async fn watch(
        self: Arc<Self>,
        interval: Duration,
        cancel: tokio_util::sync::CancellationToken,
    ) {
        let mut tick = tokio::time::interval(interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tick.tick().await;
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                () = cancel.cancelled() => return,
            }
            let store = self.clone();
            // File reads: off the runtime's threads.
            let _ = tokio::task::spawn_blocking(move || store.check(SystemTime::now())).await;
        }
    }
}

impl ResolvesServerCert for CertStore {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current.read().expect("poisoned").certified.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_certificate_is_short_lived_p256() {
        let id = Identity::generate(&["localhost".into(), "127.0.0.1".into()]).unwrap();
        assert_eq!(id.chain.len(), 1);
        assert_eq!(id.fingerprint_hex().len(), 64);
        id.server_config().unwrap();
    }

    /// A self-signed certificate and key as PEM.
    fn pem_pair(name: &str) -> (String, String) {
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let cert = rcgen::CertificateParams::new(vec![name.to_string()])
            .unwrap()
            .self_signed(&key)
            .unwrap();
        (cert.pem(), key.serialize_pem())
    }

    fn temp_dir(tag: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("moqcast-tls-{tag}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn changed_files_are_swapped_in_and_bad_ones_keep_the_old_certificate() {
        let dir = temp_dir("reload");
        let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
        let (c1, k1) = pem_pair("one.example");
        std::fs::write(&cert, &c1).unwrap();
        std::fs::write(&key, &k1).unwrap();
        let store = CertStore::new(Source::Files {
            cert: cert.clone(),
            key: key.clone(),
        })
        .unwrap();
        let first = store.fingerprint_hex();
        let now = SystemTime::now();
        assert!(!store.check(now), "nothing changed");

        // A new certificate with the old key: the pair does not match, the old one stays.
        let (c2, k2) = pem_pair("two.example");
        std::fs::write(&cert, &c2).unwrap();
        assert!(!store.check(now));
        assert_eq!(store.fingerprint_hex(), first);
        assert_eq!(store.reload_failures.load(Ordering::Relaxed), 1);
        assert!(!store.check(now), "the same bad pair is reported once");
        assert_eq!(store.reload_failures.load(Ordering::Relaxed), 1);

        // Its key arrives: swapped in.
        std::fs::write(&key, &k2).unwrap();
        assert!(store.check(now));
        assert_ne!(store.fingerprint_hex(), first);
        assert_eq!(store.reloads.load(Ordering::Relaxed), 1);

        // Garbage: kept.
        let second = store.fingerprint_hex();
        std::fs::write(&cert, "not a certificate").unwrap();
        assert!(!store.check(now));
        assert_eq!(store.fingerprint_hex(), second);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn generated_certificate_is_renewed_two_days_before_it_expires() {
        let store = CertStore::new(Source::Generate(vec!["localhost".into()])).unwrap();
        let first = store.current();
        let end = first.not_after.unwrap();
        assert!(!store.check(end - RENEW_BEFORE - Duration::from_secs(60)));
        assert_eq!(store.fingerprint_hex(), first.fingerprint_hex);
        let later = end - RENEW_BEFORE + Duration::from_secs(60);
        assert!(store.check(later));
        let renewed = store.current();
        assert_ne!(renewed.fingerprint_hex, first.fingerprint_hex);
        assert_eq!(renewed.not_after, Some(later + GENERATED_VALIDITY));
        assert!(!store.check(later), "renewed once");
    }

    #[test]
    fn missing_files_give_clear_errors() {
        let err = Identity::load(Path::new("/nonexistent/cert.pem"), Path::new("/x")).unwrap_err();
        assert!(err.to_string().contains("/nonexistent/cert.pem"), "{err}");
    }
}
