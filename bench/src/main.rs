//! `moqcast-bench`: one publisher and N subscribers in one process, speaking MoQ draft-18 to
//! any relay, reporting delivery, one-way latency, join time and the relay's CPU and memory.
//!
//! ```text
//! moqcast-bench --url moqt://127.0.0.1:4443 --tls-disable-verify --subscribers 100 \
//!     --duration 10 --warmup 2 --relay-pid $(pidof moqcast-relay) --json
//! ```
//!
//! See docs/BENCHMARKS.md for the method and results.

mod config;
mod hist;
mod procfs;
mod report;
mod run;
mod scrape;
mod stats;

use anyhow::Context;
use clap::Parser;

use crate::config::BenchConfig;

fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                // moq-transport logs every stream cut at teardown as an error: thousands of
                // lines per run. The report counts failures; RUST_LOG=debug shows them.
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn,moq_transport=off")),
        )
        .with_writer(std::io::stderr)
        .init();
    let config = BenchConfig::parse();
    let opts = config.options()?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("tokio runtime")?;
    let outcome = runtime.block_on(run::run(opts.clone()))?;
    if let Some(path) = &config.latency_trace {
        let file = std::fs::File::create(path)
            .with_context(|| format!("--latency-trace {}", path.display()))?;
        report::write_trace(&outcome, std::io::BufWriter::new(file))
            .with_context(|| format!("writing {}", path.display()))?;
    }
    let report = report::build(&opts, &outcome);
    print!("{}", report::table(&report));
    if config.json {
        println!("{}", serde_json::to_string(&report)?);
    }
    Ok(())
}
