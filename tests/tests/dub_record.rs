//! `moqcast-subscribe --output FILE --audio-lang es` records a broadcast with the sidecar's
//! Spanish dub (`<broadcast>/ai` `audio-es`, Opus) in place of its original audio (AAC): the file
//! has the broadcast's H.264 picture and the dub's Opus sound, which decodes and speaks.

use std::time::Duration;

use moqcast_tests::{command, init_tracing, probe, ChildGuard, TempDir, TestRelay};

/// Waits until the relay lists `broadcast`, while `child` runs.
async fn wait_announced(relay: &TestRelay, broadcast: &str, child: &mut ChildGuard) {
    moqcast_tests::wait_announced(relay.http, broadcast, child, Duration::from_secs(30)).await;
}

/// Mono 16 kHz samples of a file's audio, decoded by FFmpeg.
fn decoded_audio(path: &std::path::Path) -> Vec<f32> {
    let out = std::process::Command::new("ffmpeg")
        .args(["-v", "error", "-i"])
        .arg(path)
        .args([
            "-map", "0:a:0", "-ac", "1", "-ar", "16000", "-f", "f32le", "-",
        ])
        .output()
        .expect("ffmpeg runs");
    assert!(
        out.status.success(),
        "the recorded audio decodes: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscribe_records_the_dub_in_place_of_the_original_audio() {
    init_tracing();
    moqcast_tests::speech::whisper_model_dir();
    let relay = TestRelay::start(&[]).await;
    let dir = TempDir::new("dub-record");
    let sentences = [
        "The weather today is sunny and warm.",
        "This is a live broadcast with a Spanish voice.",
    ];
    let wav = moqcast_tests::speech::speech_wav(&dir.0, "talk", &sentences, "en-us", 1.0, 1.0);
    let media = moqcast_tests::speech::speech_video(&wav, &dir.path("talk.mp4"), "aac");
    let mut publish = {
        let mut cmd = command("moqcast-publish");
        cmd.args(["--url", &relay.url("moqt"), "--broadcast", "live/rec"])
            .args(["--tls-fingerprint", &relay.fingerprint])
            .args(["--loop", "--input", media.to_str().unwrap()]);
        ChildGuard::spawn("publish", &mut cmd, &dir.0)
    };
    wait_announced(&relay, "live/rec", &mut publish).await;
    let mut sidecar = {
        let extra = [
            "--broadcast",
            "live/rec",
            "--translate",
            "es",
            "--dub",
            "es",
        ];
        let mut cmd =
            moqcast_tests::speech::sidecar_command(&relay.url("moqt"), &relay.fingerprint, &extra);
        ChildGuard::spawn("sidecar", &mut cmd, &dir.0)
    };
    wait_announced(&relay, "live/rec/ai", &mut sidecar).await;

    let out = dir.path("dubbed.mp4");
    let seconds = 20.0;
    let mut record = {
        let mut cmd = command("moqcast-subscribe");
        cmd.args(["--url", &relay.url("moqt"), "--broadcast", "live/rec"])
            .args(["--tls-fingerprint", &relay.fingerprint])
            .args(["--output", out.to_str().unwrap(), "--audio-lang", "es"])
            .args(["--duration", &seconds.to_string(), "--wait", "20", "--json"]);
        ChildGuard::spawn("record", &mut cmd, &dir.0)
    };
    let status = tokio::task::spawn_blocking(move || {
        let status = record.wait_timeout(Duration::from_secs(60));
        (status, record.stderr_tail(30))
    })
    .await
    .unwrap();
    assert!(
        matches!(status.0, Some(s) if s.success()),
        "moqcast-subscribe --audio-lang es: {:?}\n{}",
        status.0,
        status.1
    );

    let streams = probe(&out);
    let video = streams
        .iter()
        .find(|s| s.0 == "video")
        .expect("a video stream");
    let audio = streams
        .iter()
        .find(|s| s.0 == "audio")
        .expect("an audio stream");
    assert_eq!(video.1, "h264", "{streams:?}");
    // The original is AAC: Opus is the dub.
    assert_eq!(
        audio.1, "opus",
        "the dub, not the original audio: {streams:?}"
    );
    // The dub is continuous audio: 20 ms frames for most of the recording.
    assert!(
        audio.2 as f64 >= 0.6 * seconds / 0.02,
        "{} dub frames in {seconds} s: {streams:?}",
        audio.2
    );
    // And it speaks: some 100 ms windows are loud, as speech is, and some are silent, as the gaps
    // between cues are.
    let samples = decoded_audio(&out);
    let rms: Vec<f32> = samples
        .chunks(1600)
        .map(|w| (w.iter().map(|x| x * x).sum::<f32>() / w.len() as f32).sqrt())
        .collect();
    let loud = rms.iter().filter(|r| **r > 0.02).count();
    let quiet = rms.iter().filter(|r| **r < 0.002).count();
    assert!(
        loud >= 10 && quiet >= 5,
        "speech and silence in the recorded dub: {loud} loud and {quiet} quiet windows of {}",
        rms.len()
    );
    tracing::info!(loud, quiet, windows = rms.len(), ?streams, "recorded dub");
    drop(sidecar);
    drop(publish);
    relay.stop().await;
}
