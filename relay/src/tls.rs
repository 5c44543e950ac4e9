//! TLS for the relay: certificate files, or a generated self-signed development certificate
//! that browsers can pin with `serverCertificateHashes` (ECDSA P-256, valid at most 14 days).

use std::{path::Path, sync::Arc};

use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

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

impl Identity {
    /// Loads PEM files.
    pub fn load(cert: &Path, key: &Path) -> Result<Self, TlsError> {
        let read = |p: &Path| {
            std::fs::read(p).map_err(|source| TlsError::Read {
                path: p.display().to_string(),
                source,
            })
        };
        let cert_pem = read(cert)?;
        let key_pem = read(key)?;
        let chain: Vec<CertificateDer<'static>> = rustls_pemfile::certs(&mut cert_pem.as_slice())
            .filter_map(Result::ok)
            .collect();
        let leaf = chain
            .first()
            .ok_or_else(|| TlsError::NoCertificate(cert.display().to_string()))?;
        let fingerprint = moqcast_media::moq::certificate_fingerprint(leaf.as_ref());
        let key = rustls_pemfile::private_key(&mut key_pem.as_slice())
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
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)
            .map_err(|e| TlsError::Generate(e.to_string()))?;
        let mut params = rcgen::CertificateParams::new(names.to_vec())
            .map_err(|e| TlsError::Generate(e.to_string()))?;
        let now = time::OffsetDateTime::now_utc();
        params.not_before = now - time::Duration::hours(1);
        params.not_after = now + time::Duration::days(13);
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

    /// A rustls server config offering WebTransport (`h3`) and raw MoQT ALPNs.
    pub fn server_config(&self) -> Result<rustls::ServerConfig, TlsError> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = rustls::ServerConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(|e| TlsError::Config(e.to_string()))?
            .with_no_client_auth()
            .with_single_cert(self.chain.clone(), self.key.clone_key())
            .map_err(|e| TlsError::Config(e.to_string()))?;
        // WebTransport (h3), then every MoQT version the session layer speaks over raw QUIC.
        config.alpn_protocols =
            std::iter::once(moqcast_media::moq::WEBTRANSPORT_ALPN.as_bytes().to_vec())
                .chain(
                    moqcast_session::Version::ALL
                        .iter()
                        .map(|v| v.alpn().as_bytes().to_vec()),
                )
                .collect();
        Ok(config)
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

    #[test]
    fn missing_files_give_clear_errors() {
        let err = Identity::load(Path::new("/nonexistent/cert.pem"), Path::new("/x")).unwrap_err();
        assert!(err.to_string().contains("/nonexistent/cert.pem"), "{err}");
    }
}
