//! Command-line pieces shared by `moqcast-publish` and `moqcast-subscribe`.

use clap::Args;
use moqcast_media::moq::ClientTls;

/// How to trust the relay's certificate.
#[derive(Debug, Clone, Args)]
pub struct TlsArgs {
    /// Accept any certificate (development only).
    #[arg(long, env = "MOQCAST_TLS_DISABLE_VERIFY")]
    pub tls_disable_verify: bool,
    /// Accept only the certificate with this SHA-256 fingerprint (hex, as served by the relay at
    /// /certificate.sha256).
    #[arg(long, env = "MOQCAST_TLS_FINGERPRINT")]
    pub tls_fingerprint: Vec<String>,
}

impl TlsArgs {
    pub fn client_tls(&self) -> anyhow::Result<ClientTls> {
        let mut tls = ClientTls {
            disable_verify: self.tls_disable_verify,
            ..Default::default()
        };
        for fp in &self.tls_fingerprint {
            tls.pin_hex(fp)?;
        }
        Ok(tls)
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
