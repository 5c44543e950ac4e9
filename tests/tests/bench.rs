//! The load generator measured against a real relay: what it reports must match what went
//! over the wire, or every figure in docs/BENCHMARKS.md is suspect.

use std::time::Duration;

use moqcast_tests::{command, init_tracing, TempDir, TestRelay};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_bench_reports_delivery_latency_and_a_trace_of_every_object() {
    init_tracing();
    let relay = TestRelay::start(&[]).await;
    let dir = TempDir::new("bench-trace");
    let trace = dir.path("trace.csv");
    let url = relay.url("moqt");
    let pid = std::process::id().to_string();
    let trace_arg = trace.display().to_string();
    let run = tokio::task::spawn_blocking(move || {
        command("moqcast-bench")
            .args(["--url", &url, "--tls-disable-verify", "--subscribers", "3"])
            .args(["--bitrate", "500000", "--fps", "30", "--group-frames", "30"])
            .args(["--duration", "3", "--warmup", "1", "--drain", "3"])
            .args(["--relay-pid", &pid, "--json", "--latency-trace", &trace_arg])
            .output()
            .unwrap()
    });
    let out = tokio::time::timeout(Duration::from_secs(60), run)
        .await
        .expect("the bench finishes within its bounds")
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "bench failed: {}\n{stdout}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: serde_json::Value =
        serde_json::from_str(stdout.lines().last().expect("a JSON line")).unwrap();
    let num = |k: &str| {
        report[k]
            .as_f64()
            .unwrap_or_else(|| panic!("{k} missing in {report}"))
    };
    assert_eq!(num("subscribers_connected"), 3.0, "{report}");
    assert_eq!(num("errors"), 0.0, "{report}");
    assert_eq!(num("group_loss"), 0.0, "{report}");
    assert!(num("delivery_ratio") > 0.99, "{report}");
    // 3 subscribers x 0.5 Mbit/s.
    let mbps = num("throughput_mbps");
    assert!((1.3..1.7).contains(&mbps), "{report}");
    let p99 = num("latency_p99_ms");
    assert!(p99 > 0.0 && p99 < 1000.0, "{report}");
    assert!(num("relay_cpu_seconds") > 0.0, "{report}");
    let steal = num("host_steal_percent");
    assert!((0.0..=100.0).contains(&steal), "{report}");
    assert!(
        num("host_steal_worst_second_percent") >= steal - 1e-9,
        "{report}"
    );

    // The trace has every received object; the counted ones are the latency samples.
    let csv = std::fs::read_to_string(&trace).unwrap();
    let mut lines = csv.lines();
    assert_eq!(
        lines.next(),
        Some("subscriber,slow,track,group,send_unix_us,recv_unix_us,latency_us,counted")
    );
    let rows: Vec<Vec<u64>> = lines
        .map(|l| l.split(',').map(|f| f.parse().unwrap()).collect())
        .collect();
    let counted = rows.iter().filter(|r| r[7] == 1).count();
    assert_eq!(counted as f64, num("latency_samples"), "{report}");
    assert!(
        rows.len() as f64 >= num("received_objects_window"),
        "{report}"
    );
    for sub in 0..3 {
        assert!(
            rows.iter().any(|r| r[0] == sub),
            "no rows of subscriber {sub}"
        );
    }
    for r in &rows {
        assert_eq!(r[6], r[5] - r[4], "latency is arrival minus send: {r:?}");
    }
    // The largest counted latency is the report's maximum (the histogram keeps it exactly).
    let max_us = rows
        .iter()
        .filter(|r| r[7] == 1)
        .map(|r| r[6])
        .max()
        .unwrap();
    assert_eq!(max_us as f64 / 1000.0, num("latency_max_ms"), "{report}");
    relay.stop().await;
}
