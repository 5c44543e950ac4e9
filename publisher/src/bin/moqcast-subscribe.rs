use clap::Parser;
use moqcast_client::cli::init_tracing;
use moqcast_publisher::{config::SubscribeConfig, subscribe::run};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    init_tracing();
    let config = SubscribeConfig::parse();
    let opts = config.options()?;
    let summary = tokio::select! {
        res = run(opts) => res?,
        _ = tokio::signal::ctrl_c() => return Ok(()),
    };
    if config.stats {
        print!("{}", summary.table());
    } else if config.caption_latency {
        if let Some(c) = &summary.captions {
            let f = |v: Option<f64>| {
                v.map(|x| format!("{x:.0} ms"))
                    .unwrap_or_else(|| "-".into())
            };
            println!(
                "caption latency: p50 {} p95 {} over {} final cues",
                f(c.latency(0.5)),
                f(c.latency(0.95)),
                c.measured()
            );
        }
    }
    if config.json {
        println!("{}", summary.json());
    }
    Ok(())
}
