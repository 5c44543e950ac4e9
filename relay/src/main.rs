use clap::Parser;
use moqcast_relay::{Args, Config, Relay};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let config = Config::resolve(Args::parse())?;
    init_tracing(&config.log_format);
    let relay = Relay::bind(config).await?;
    let state = relay.state();
    tracing::info!(quic = %relay.quic_addr(), http = %relay.http_addr(), fingerprint = %state.fingerprint, "moqcast-relay listening");
    relay.run(shutdown_signal()).await
}

fn init_tracing(format: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| {
        tracing_subscriber::EnvFilter::new("info,quinn=warn,moq_transport=warn")
    });
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if format == "json" {
        builder.json().init();
    } else {
        builder.init();
    }
}

async fn shutdown_signal() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("SIGTERM handler");
    tokio::select! {
        _ = term.recv() => {},
        _ = tokio::signal::ctrl_c() => {},
    }
    tracing::info!("signal received");
}
