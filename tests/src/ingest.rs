//! Helpers of the push-ingest tests (RTMP, RTMPS, SRT): a MoQ recorder, and checks of what it
//! recorded (frame count, spacing, gaps) and of the relay's counters.

use std::{path::Path, process::Command, time::Duration};

use crate::{command, ChildGuard, TestRelay};

/// The frame rate [`crate::ffmpeg_rtmp_push`] and [`crate::ffmpeg_srt_push`] publish.
pub const FPS: f64 = 30.0;

/// `moqcast-subscribe --output` recording `broadcast` for `seconds`.
pub fn record(
    relay: &TestRelay,
    broadcast: &str,
    out: &Path,
    seconds: f64,
    dir: &Path,
) -> ChildGuard {
    let mut cmd = command("moqcast-subscribe");
    cmd.args(["--url", &relay.url("moqt"), "--broadcast", broadcast])
        .args(["--tls-fingerprint", &relay.fingerprint])
        .args(["--output", out.to_str().unwrap()])
        .args(["--duration", &seconds.to_string(), "--wait", "20", "--json"]);
    ChildGuard::spawn(
        &format!("record-{}", broadcast.replace('/', "_")),
        &mut cmd,
        dir,
    )
}

/// Presentation times (seconds) of a recording's video frames, in order.
pub fn video_frame_times(path: &Path) -> Vec<f64> {
    frame_times(path, "v:0")
}

/// Presentation times (seconds) of a recording's decoded audio frames, in order.
pub fn audio_frame_times(path: &Path) -> Vec<f64> {
    frame_times(path, "a:0")
}

fn frame_times(path: &Path, stream: &str) -> Vec<f64> {
    let out = Command::new("ffprobe")
        .args(["-v", "error", "-select_streams", stream])
        .args([
            "-show_entries",
            "frame=best_effort_timestamp_time",
            "-of",
            "csv=p=0",
        ])
        .arg(path)
        .output()
        .expect("ffprobe runs");
    assert!(
        out.status.success(),
        "ffprobe failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut times: Vec<f64> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.trim().trim_end_matches(',').parse().ok())
        .collect();
    times.sort_by(f64::total_cmp);
    times
}

/// Checks a recording of `seconds` of 30 fps video: at least 95% of the frames, with audio,
/// 1/30 s apart (a gap of at most `max_gap` seconds where the publisher reconnected).
pub fn check_recording(path: &Path, seconds: f64, max_gap: f64, context: &str) -> Vec<f64> {
    let frames = crate::h264_video_frames_with_audio(path, context);
    let times = video_frame_times(path);
    assert_eq!(times.len() as u64, frames, "{context}");
    let published = seconds * FPS;
    assert!(
        frames as f64 >= 0.95 * published,
        "{context}: recorded {frames} of {published} video frames"
    );
    let steps: Vec<f64> = times.windows(2).map(|w| w[1] - w[0]).collect();
    let mut sorted = steps.clone();
    sorted.sort_by(f64::total_cmp);
    let median = sorted[sorted.len() / 2];
    assert!(
        (median - 1.0 / FPS).abs() < 0.002,
        "{context}: frames are {median} s apart, not 1/30 s"
    );
    let largest = sorted.last().copied().unwrap_or(0.0);
    println!(
        "{context}: {frames} video frames over {:.3} s, median step {median:.4} s, largest {largest:.3} s",
        times.last().unwrap_or(&0.0) - times.first().unwrap_or(&0.0)
    );
    assert!(
        largest <= max_gap,
        "{context}: a {largest} s hole in the video timestamps"
    );
    assert!(
        steps.iter().all(|&s| s > 0.0),
        "{context}: repeated timestamps"
    );
    times
}

pub fn finish(child: &mut ChildGuard, within: Duration) {
    let name = child.name().to_string();
    let status = child
        .wait_timeout(within)
        .unwrap_or_else(|| panic!("{name} did not finish: {}", child.stderr_tail(10)));
    assert!(
        status.success(),
        "{name} failed ({status}): {}",
        child.stderr_tail(10)
    );
}

pub fn metric(relay: &TestRelay, name: &str) -> u64 {
    let text = relay.http_get("/metrics");
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or_else(|| panic!("no {name} in {text}"))
}
