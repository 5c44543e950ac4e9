use clap::Parser;
use moqcast_client::cli::init_tracing;
use moqcast_publisher::{config::PublishConfig, publish::run};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    init_tracing();
    let opts = PublishConfig::parse().options()?;
    tokio::select! {
        res = run(opts) => res,
        _ = tokio::signal::ctrl_c() => Ok(()),
    }
}
