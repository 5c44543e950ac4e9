//! The core media path end to end on loopback: relay + `moqcast-publish --input testsrc` +
//! `moqcast-subscribe`, over raw QUIC (`moqt://`) and WebTransport (`https://`).

use std::{process::Stdio, time::Duration};

use moqcast_tests::{command, h264_video_frames_with_audio, init_tracing, TempDir, TestRelay};

const PUBLISH_SECONDS: u64 = 10;
const FPS: u64 = 30;

async fn publish_record_and_late_join(scheme: &str) {
    init_tracing();
    let relay = TestRelay::start(&[]).await;
    let url = relay.url(scheme);
    let dir = TempDir::new(&format!("e2e-{scheme}"));
    let out = dir.path("out.mp4");

    // The subscriber starts first and waits for the broadcast to be announced.
    let recorder = command("moqcast-subscribe")
        .args([
            "--url",
            &url,
            "--broadcast",
            "demo",
            "--tls-fingerprint",
            &relay.fingerprint,
        ])
        .args([
            "--output",
            out.to_str().unwrap(),
            "--duration",
            &(PUBLISH_SECONDS + 4).to_string(),
            "--json",
        ])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut publisher = command("moqcast-publish")
        .args([
            "--url",
            &url,
            "--broadcast",
            "demo",
            "--input",
            "testsrc",
            "--tls-disable-verify",
        ])
        .args(["--duration", &PUBLISH_SECONDS.to_string()])
        .spawn()
        .unwrap();

    // A second subscriber joins 5 s into the broadcast.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let late = tokio::task::spawn_blocking({
        let url = url.clone();
        let fp = relay.fingerprint.clone();
        move || {
            command("moqcast-subscribe")
                .args([
                    "--url",
                    &url,
                    "--broadcast",
                    "demo",
                    "--tls-fingerprint",
                    &fp,
                    "--duration",
                    "2",
                    "--json",
                ])
                .output()
                .unwrap()
        }
    })
    .await
    .unwrap();
    assert!(
        late.status.success(),
        "late subscriber failed: {}",
        String::from_utf8_lossy(&late.stderr)
    );
    let stats: serde_json::Value = serde_json::from_str(
        String::from_utf8_lossy(&late.stdout)
            .lines()
            .last()
            .unwrap(),
    )
    .unwrap();
    let video = &stats["tracks"]["video"];
    let first_ms = video["first_object_ms"]
        .as_f64()
        .expect("late joiner got video");
    assert!(first_ms < 1000.0, "first video frame took {first_ms} ms");
    assert_eq!(
        video["first_is_keyframe"], true,
        "first video frame must be a keyframe: {stats}"
    );

    // `--catalog` prints the MSF catalog: an H.264 video track and an audio track.
    let cat = command("moqcast-subscribe")
        .args([
            "--url",
            &url,
            "--broadcast",
            "demo",
            "--tls-disable-verify",
            "--catalog",
        ])
        .output()
        .unwrap();
    assert!(
        cat.status.success(),
        "{}",
        String::from_utf8_lossy(&cat.stderr)
    );
    let cat: serde_json::Value = serde_json::from_slice(&cat.stdout).expect("catalog JSON");
    assert_eq!(cat["version"], "draft-01");
    let tracks = cat["tracks"].as_array().unwrap();
    assert!(
        tracks
            .iter()
            .any(|t| t["role"] == "video" && t["codec"].as_str().unwrap().starts_with("avc1.")),
        "{cat}"
    );
    assert!(
        tracks
            .iter()
            .any(|t| t["role"] == "audio" && t["codec"] == "opus"),
        "{cat}"
    );

    let status = tokio::task::spawn_blocking(move || publisher.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(status.success(), "publisher failed");
    let rec = tokio::task::spawn_blocking(move || recorder.wait_with_output())
        .await
        .unwrap()
        .unwrap();
    assert!(
        rec.status.success(),
        "recorder failed: {}",
        String::from_utf8_lossy(&rec.stderr)
    );

    let frames = h264_video_frames_with_audio(&out, &format!("recording over {scheme}"));
    let published = PUBLISH_SECONDS * FPS;
    assert!(
        frames * 100 >= published * 95,
        "recorded {frames} of {published} video frames"
    );

    assert_eq!(
        relay.http_get("/certificate.sha256").trim(),
        relay.fingerprint
    );

    let metrics = relay.http_get("/metrics");
    assert!(metrics.contains("moqcast_objects_out_total"), "{metrics}");
    relay.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn testsrc_end_to_end_over_raw_quic() {
    publish_record_and_late_join("moqt").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn testsrc_end_to_end_over_webtransport() {
    publish_record_and_late_join("https").await;
}

/// `ffmpeg ... -f mpegts - | moqcast-publish --input -` and a file that needs transcoding
/// (VP8 + Vorbis WebM) both arrive as H.264 + audio.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stdin_mpegts_and_transcoded_file_inputs() {
    init_tracing();
    let relay = TestRelay::start(&[]).await;
    let url = relay.url("moqt");
    let dir = TempDir::new("inputs");

    // A VP8/Vorbis file: the publisher transcodes video to H.264 and audio to Opus.
    let webm = dir.path("in.webm");
    let made = std::process::Command::new("ffmpeg")
        .args([
            "-v",
            "error",
            "-f",
            "lavfi",
            "-i",
            "testsrc2=size=320x240:rate=25",
            "-f",
            "lavfi",
            "-i",
            "sine=frequency=300",
        ])
        .args([
            "-t",
            "3",
            "-c:v",
            "libvpx",
            "-b:v",
            "300k",
            "-c:a",
            "libvorbis",
            "-y",
        ])
        .arg(&webm)
        .status()
        .unwrap();
    assert!(made.success(), "ffmpeg could not make the test file");

    for name in ["stdin", "file"] {
        let mut publisher = if name == "stdin" {
            // ffmpeg paces with -re and writes MPEG-TS (H.264 + AAC) to the publisher's stdin.
            std::process::Command::new("bash")
                .arg("-c")
                .arg(format!(
                    "ffmpeg -v error -re -f lavfi -i testsrc2=size=320x240:rate=25 -f lavfi -i sine -t 4 \
                     -c:v libx264 -preset ultrafast -g 25 -c:a aac -f mpegts - | {} --url {url} --broadcast stdin --input - --tls-disable-verify",
                    moqcast_tests::bin("moqcast-publish").display()
                ))
                .spawn()
                .unwrap()
        } else {
            command("moqcast-publish")
                .args([
                    "--url",
                    &url,
                    "--broadcast",
                    "file",
                    "--input",
                    webm.to_str().unwrap(),
                    "--tls-disable-verify",
                ])
                .spawn()
                .unwrap()
        };
        let out = dir.path(&format!("{name}.mp4"));
        let rec = command("moqcast-subscribe")
            .args([
                "--url",
                &url,
                "--broadcast",
                name,
                "--tls-disable-verify",
                "--duration",
                "8",
            ])
            .args(["--output", out.to_str().unwrap()])
            .output()
            .unwrap();
        assert!(
            rec.status.success(),
            "{name}: {}",
            String::from_utf8_lossy(&rec.stderr)
        );
        assert!(
            publisher.wait().unwrap().success(),
            "{name} publisher failed"
        );
        let frames = h264_video_frames_with_audio(&out, name);
        assert!(frames >= 50, "{name}: only {frames} video frames");
    }
    relay.stop().await;
}
