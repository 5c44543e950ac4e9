use clap::Parser;
use moqcast_relay::{Args, Config, Relay};

/// mimalloc instead of glibc malloc: the fan-out path allocates per object per subscriber
/// (moq-transport and quinn), and glibc's malloc/free were about 8% of the relay's CPU under
/// load (docs/BENCHMARKS.md).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// mimalloc's `mi_option_purge_delay` (its index in `mi_option_e`, mimalloc.h; the same in
/// mimalloc v2 and v3). `libmimalloc-sys` names only some options.
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

/// How long memory the relay freed stays with it before mimalloc gives it back to the system,
/// in milliseconds, unless `MIMALLOC_PURGE_DELAY` says otherwise. mimalloc's own default
/// (1 s) returned pages the relay needed again moments later: at 1000 subscribers the kernel
/// zeroing them again (mimalloc asks for transparent huge pages, 2 MiB a fault) took 3.7% of
/// the relay's CPU, and 10 s cut its page faults by three quarters (docs/BENCHMARKS.md).
const PURGE_DELAY_MS: std::ffi::c_long = 10_000;

fn main() -> anyhow::Result<()> {
    if std::env::var_os("MIMALLOC_PURGE_DELAY").is_none() {
        // SAFETY: sets a plain integer option; mimalloc reads it when it next purges.
        unsafe { libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, PURGE_DELAY_MS) };
    }
    let config = Config::resolve(Args::parse())?;
    init_tracing(&config.log_format);
    // Sharded: the shards run sessions on their own threads (moqcast_relay::shard), this
    // runtime only the HTTP side and signals.
    let mut runtime = match config.runtime {
        moqcast_relay::config::RuntimeMode::Sharded => {
            tokio::runtime::Builder::new_current_thread()
        }
        moqcast_relay::config::RuntimeMode::Shared => {
            let mut runtime = tokio::runtime::Builder::new_multi_thread();
            if let Some(n) = config.worker_threads {
                runtime.worker_threads(n);
            }
            runtime
        }
    };
    runtime.enable_all();
    runtime.build()?.block_on(async move {
        let relay = Relay::bind(config).await?;
        let state = relay.state();
        tracing::info!(quic = %relay.quic_addr(), http = %relay.http_addr(), https = ?relay.https_addr(), fingerprint = %state.fingerprint(), spki = ?state.tls.current().spki_sha256_base64(), "moqcast-relay listening");
        relay.run(shutdown_signal()).await
    })
}

fn init_tracing(format: &str) {
    use tracing_subscriber::{filter::filter_fn, prelude::*};
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| {
        tracing_subscriber::EnvFilter::new("info,quinn=warn,moq_transport=warn")
    });
    // moq-transport enables its per-session span at any log level and enters it on every
    // stream write of every subscriber: about 3% of the relay's CPU under fan-out load
    // (docs/BENCHMARKS.md). The relay's own spans already name the session, so that span is
    // filtered out unless asked for with MOQCAST_MOQ_SESSION_SPANS=1.
    let session_spans = std::env::var_os("MOQCAST_MOQ_SESSION_SPANS").is_some_and(|v| v == "1");
    let spans = filter_fn(move |meta| {
        session_spans || !(meta.is_span() && meta.target() == "moq_transport::session")
    });
    let layer = tracing_subscriber::fmt::layer().with_writer(std::io::stderr);
    let layer = if format == "json" {
        layer.json().boxed()
    } else {
        layer.boxed()
    };
    tracing_subscriber::registry()
        .with(filter)
        .with(spans)
        .with(layer)
        .init();
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

#[cfg(test)]
mod tests {
    /// Set in the child process of the test below.
    const CHILD: &str = "MOQCAST_TEST_MIMALLOC_CHILD";

    /// `MI_OPTION_PURGE_DELAY` is the option mimalloc fills from `MIMALLOC_PURGE_DELAY`: the
    /// test runs itself again with that variable set and reads the option back.
    #[test]
    fn the_purge_delay_option_is_the_one_mimalloc_reads_from_its_variable() {
        if std::env::var_os(CHILD).is_some() {
            // SAFETY: reads a plain integer option.
            let value = unsafe { libmimalloc_sys::mi_option_get(super::MI_OPTION_PURGE_DELAY) };
            assert_eq!(value, 4321);
            return;
        }
        let output = std::process::Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "tests::the_purge_delay_option_is_the_one_mimalloc_reads_from_its_variable",
            ])
            .env(CHILD, "1")
            .env("MIMALLOC_PURGE_DELAY", "4321")
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&output.stdout);
        assert!(output.status.success(), "{stdout}");
        // The child ran the test, not an empty filter.
        assert!(stdout.contains("1 passed"), "{stdout}");
    }
}
