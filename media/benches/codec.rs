//! Criterion benchmarks of the media crate's per-object and per-catalog hot paths:
//! LOC property encode/decode (both codecs), MSF catalog parsing, and H.264 Annex-B -> AVCC.
//!
//! `cargo bench -p moqcast-media --bench codec` (add `-- --quick` for a fast pass).

use std::hint::black_box;

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use moqcast_media::{
    caption::caption_track,
    catalog::{self, Catalog, Track},
    h264::annexb_to_avcc,
    loc::LocProperties,
};

/// What a video object of a live broadcast carries: media time, timescale, frame marking,
/// SEND_TIME. A keyframe also carries its decoder configuration.
fn video_properties(keyframe: bool) -> LocProperties {
    let mut p = LocProperties::media_time(3_600_123_456, 1_000_000);
    p.send_time_us = Some(1_767_225_600_123_456);
    p.video_frame_marking = Some(vec![if keyframe { 0xA0 } else { 0x80 }]);
    if keyframe {
        // A typical avcC record for 1080p High profile (~40 bytes).
        p.video_config = Some(Bytes::from_static(&[
            0x01, 0x64, 0x00, 0x28, 0xFF, 0xE1, 0x00, 0x19, 0x67, 0x64, 0x00, 0x28, 0xAC, 0xD9,
            0x40, 0x78, 0x02, 0x27, 0xE5, 0x84, 0x00, 0x00, 0x03, 0x00, 0x04, 0x00, 0x00, 0x03,
            0x00, 0xF0, 0x3C, 0x60, 0xC6, 0x58, 0x01, 0x00, 0x06, 0x68, 0xEB, 0xE3, 0xCB, 0x22,
            0xC0,
        ]));
    }
    p
}

fn audio_properties() -> LocProperties {
    let mut p = LocProperties::media_time(3_600_120_000, 48_000);
    p.send_time_us = Some(1_767_225_600_123_456);
    p.audio_level = Some(0x80 | 23);
    p
}

fn loc(c: &mut Criterion) {
    let mut g = c.benchmark_group("loc");
    for (name, props) in [
        ("video_delta", video_properties(false)),
        ("video_key", video_properties(true)),
        ("audio", audio_properties()),
    ] {
        let wire = props.encode_wire().expect("valid");
        let headers = props.to_extension_headers();
        g.throughput(Throughput::Elements(1));
        g.bench_function(format!("encode_wire/{name}"), |b| {
            b.iter(|| black_box(&props).encode_wire().expect("valid"))
        });
        g.bench_function(format!("decode_wire/{name}"), |b| {
            b.iter(|| LocProperties::decode_wire(black_box(&wire)).expect("valid"))
        });
        g.bench_function(format!("to_extension_headers/{name}"), |b| {
            b.iter(|| black_box(&props).to_extension_headers())
        });
        g.bench_function(format!("from_extension_headers/{name}"), |b| {
            b.iter(|| LocProperties::from_extension_headers(black_box(&headers)).expect("valid"))
        });
    }
    g.finish();
}

/// A catalog as a captioned, dubbed live broadcast publishes it: H.264 video in three
/// renditions with inline init data, Opus audio, captions in four languages, two dubbed
/// audio tracks.
fn realistic_catalog() -> Vec<u8> {
    let mut cat = Catalog::new();
    cat.generated_at = Some(1_767_225_600_123);
    for (i, (w, h, rate)) in [
        (1920, 1080, 6_000_000),
        (1280, 720, 3_000_000),
        (640, 360, 800_000),
    ]
    .into_iter()
    .enumerate()
    {
        let mut t = Track::new(format!("video-{h}p"), catalog::packaging::LOC);
        t.role = Some(catalog::role::VIDEO.into());
        t.is_live = Some(true);
        t.codec = Some("avc1.640028".into());
        t.width = Some(w);
        t.height = Some(h);
        t.framerate = Some(60.0);
        t.bitrate = Some(rate);
        t.timescale = Some(1_000_000);
        t.render_group = Some(1);
        t.alt_group = Some(1);
        t.target_latency = Some(1500);
        let init = format!("video{i}");
        t.init_ref = Some(init.clone());
        cat.tracks.push(t);
        cat.set_init_data(
            &init,
            &[0x01, 0x64, 0x00, 0x28, 0xFF, 0xE1, 0x00, 0x19, 0x67, 0x64],
        );
    }
    let audio = |name: &str, lang: &str, label: &str| {
        let mut t = Track::new(name, catalog::packaging::LOC);
        t.role = Some(catalog::role::AUDIO.into());
        t.is_live = Some(true);
        t.codec = Some("opus".into());
        t.samplerate = Some(48_000);
        t.channel_config = Some("2".into());
        t.bitrate = Some(64_000);
        t.timescale = Some(1_000_000);
        t.render_group = Some(1);
        t.lang = Some(lang.into());
        t.label = Some(label.into());
        t
    };
    cat.tracks.push(audio("audio", "en", "Original"));
    cat.tracks
        .push(audio("audio-dub-es", "es", "Español (dubbed)"));
    cat.tracks
        .push(audio("audio-dub-de", "de", "Deutsch (dubbed)"));
    for (lang, label) in [
        ("en", "English"),
        ("es", "Español"),
        ("de", "Deutsch"),
        ("ja", "日本語"),
    ] {
        let mut t = caption_track(&format!("captions-{lang}"), lang, label);
        t.depends = Some(vec!["video-1080p".into()]);
        cat.tracks.push(t);
    }
    cat.to_json()
}

fn catalog_parse(c: &mut Criterion) {
    let json = realistic_catalog();
    Catalog::parse(&json).expect("the benchmark catalog is valid");
    let mut g = c.benchmark_group("catalog");
    g.throughput(Throughput::Bytes(json.len() as u64));
    g.bench_function("parse", |b| {
        b.iter(|| Catalog::parse(black_box(&json)).expect("valid"))
    });
    g.finish();
}

/// An Annex-B access unit like an encoder's keyframe: AUD, SPS, PPS, SEI, then an IDR slice
/// of `slice_bytes` (without accidental start codes).
fn annexb_access_unit(slice_bytes: usize) -> Vec<u8> {
    let mut au = Vec::with_capacity(slice_bytes + 128);
    for nal in [
        &[0x09, 0xF0][..],
        &[
            0x67, 0x64, 0x00, 0x28, 0xAC, 0xD9, 0x40, 0x78, 0x02, 0x27, 0xE5, 0x84,
        ][..],
        &[0x68, 0xEB, 0xE3, 0xCB, 0x22, 0xC0][..],
        &[
            0x06, 0x05, 0x10, 0xDC, 0x45, 0xE9, 0xBD, 0xE6, 0xD9, 0x48, 0xB7, 0x96, 0x2C, 0xD8,
        ][..],
    ] {
        au.extend_from_slice(&[0, 0, 0, 1]);
        au.extend_from_slice(nal);
    }
    au.extend_from_slice(&[0, 0, 1, 0x65]);
    // Pseudo-random slice data with no zero bytes, so no emulated start code appears.
    let mut x = 0x2545_F491u32;
    au.extend((0..slice_bytes).map(|_| {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        (x as u8) | 1
    }));
    au
}

fn h264(c: &mut Criterion) {
    let mut g = c.benchmark_group("h264");
    for (name, size) in [("delta_4k", 4_096), ("key_64k", 65_536)] {
        let au = annexb_access_unit(size);
        g.throughput(Throughput::Bytes(au.len() as u64));
        g.bench_function(format!("annexb_to_avcc/{name}"), |b| {
            b.iter(|| annexb_to_avcc(black_box(&au)))
        });
    }
    g.finish();
}

criterion_group!(benches, loc, catalog_parse, h264);
criterion_main!(benches);
