//! Command-line pieces shared by the binaries that connect to a relay (`moqcast-publish`,
//! `moqcast-subscribe`, `moqcast-sidecar`, the benchmarks).

use clap::Args;

use crate::connect::{ClientTls, ConnectError};

/// How to trust the relay's certificate.
#[derive(Debug, Clone, Default, PartialEq, Eq, Args, serde::Serialize, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TlsArgs {
    /// Accept any certificate (development only).
    #[arg(long, env = "MOQCAST_TLS_DISABLE_VERIFY")]
    pub tls_disable_verify: bool,
    /// Accept only the certificate with this SHA-256 fingerprint (hex, as served by the relay at
    /// /certificate.sha256).
    #[arg(long, env = "MOQCAST_TLS_FINGERPRINT")]
    pub tls_fingerprint: Vec<String>,
    /// Token (JWT) for a relay with auth on: sent as `?jwt=` on a WebTransport URL and as the
    /// AUTHORIZATION TOKEN setup option on raw QUIC. `moqcast-token sign` mints one.
    #[arg(long, env = "MOQCAST_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
}

impl TlsArgs {
    /// The client TLS settings these flags ask for; an error names a malformed fingerprint.
    pub fn client_tls(&self) -> Result<ClientTls, ConnectError> {
        let mut tls = ClientTls {
            disable_verify: self.tls_disable_verify,
            token: self.token.clone().filter(|t| !t.is_empty()),
            ..Default::default()
        };
        for fp in &self.tls_fingerprint {
            tls.pin_hex(fp)?;
        }
        Ok(tls)
    }
}

/// A relay URL in a serde-(de)serialized configuration, as its text:
/// `#[serde(with = "moqcast_client::cli::url_text")]`.
pub mod url_text {
    use serde::{de, Deserialize, Deserializer, Serializer};
    use url::Url;

    pub fn serialize<S: Serializer>(url: &Url, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(url.as_str())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Url, D::Error> {
        let text = String::deserialize(d)?;
        text.parse().map_err(de::Error::custom)
    }

    /// The same for an optional URL.
    pub mod option {
        use super::*;

        pub fn serialize<S: Serializer>(url: &Option<Url>, s: S) -> Result<S::Ok, S::Error> {
            match url {
                Some(url) => s.serialize_some(url.as_str()),
                None => s.serialize_none(),
            }
        }

        pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Url>, D::Error> {
            Option::<String>::deserialize(d)?
                .map(|text| text.parse().map_err(de::Error::custom))
                .transpose()
        }
    }
}

/// Logs to stderr; `RUST_LOG` overrides the default level.
pub fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| {
        tracing_subscriber::EnvFilter::new("info,quinn=warn,moq_transport=off")
    });
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tls_args_pin_fingerprints_and_reject_bad_ones() {
        let args = TlsArgs {
            tls_disable_verify: false,
            tls_fingerprint: vec!["ab".repeat(32)],
            token: Some("t".into()),
        };
        let tls = args.client_tls().unwrap();
        assert_eq!(tls.fingerprints, vec![[0xab; 32]]);
        assert!(!tls.disable_verify);
        assert_eq!(tls.token.as_deref(), Some("t"));

        let bad = TlsArgs {
            tls_disable_verify: false,
            tls_fingerprint: vec!["abc".into()],
            token: None,
        };
        let err = bad.client_tls().unwrap_err();
        assert!(err.to_string().contains("64 hex digits"), "{err}");
    }
}
