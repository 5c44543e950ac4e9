//! H.264 framing and parameter-set parsing on arbitrary bytes (`moqcast_media::h264`): nothing
//! panics, and the conversions round-trip where they are lossless:
//!
//! * an `avcC` record that parses is written back to bytes of the same length that parse to an
//!   equal record, and one byte less is [`H264Error::Incomplete`];
//! * a record built from Annex-B parameter sets survives `to_bytes`/`parse` and
//!   `parameter_sets_annexb`/`from_extradata`;
//! * Annex-B -> AVCC keeps every NAL unit, and AVCC -> Annex-B -> AVCC is the identity;
//! * AVCC with 1-, 2- and 4-byte lengths converts to Annex-B exactly when every NAL unit frames,
//!   and back to the same NAL units when none of them contains a start code or ends in a zero.
//!
//! Input layout: the whole input is tried as every kind of data; in addition the first byte is
//! forced to an SPS NAL header so that the SPS parser gets deep.

#![no_main]

use libfuzzer_sys::fuzz_target;
use moqcast_media::h264::{
    annexb_nals, annexb_to_avcc, avcc_nals, avcc_to_annexb, avcc_to_avcc4, is_keyframe_annexb,
    is_keyframe_avcc, nal_type, AvcConfig, H264Error, Sps, NAL_IDR, NAL_SPS,
};

fuzz_target!(|data: &[u8]| {
    check_avcc_record(data);
    check_extradata(data);
    check_annexb(data);
    for length_size in [1, 2, 4] {
        check_avcc(data, length_size);
    }
    for bad in [0, 3, 5, 8] {
        assert!(
            matches!(avcc_to_annexb(data, bad), Err(H264Error::Malformed(_))),
            "length size {bad} must be rejected"
        );
        assert!(matches!(
            avcc_nals(data, bad).next(),
            None | Some(Err(H264Error::Malformed(_)))
        ));
        assert!(!is_keyframe_avcc(data, bad));
    }
    check_sps(data);
    if let Some((&first, rest)) = data.split_first() {
        let mut sps = Vec::with_capacity(data.len());
        sps.push((first & 0xe0) | NAL_SPS);
        sps.extend_from_slice(rest);
        check_sps(&sps);
    }
});

fn check_sps(nal: &[u8]) {
    let Ok(sps) = Sps::parse(nal) else {
        return;
    };
    assert_eq!(nal_type(nal), Some(NAL_SPS));
    assert!(sps.width > 0 && sps.height > 0, "{sps:?}");
    assert!(sps.chroma_format_idc <= 3, "{sps:?}");
    assert!(
        (8..=14).contains(&sps.bit_depth_luma) && (8..=14).contains(&sps.bit_depth_chroma),
        "{sps:?}"
    );
    if let Some(n) = sps.max_num_reorder_frames {
        assert!(n <= 16, "{sps:?}");
    }
    if let Some(fps) = sps.framerate {
        assert!(fps.is_finite() && fps > 0.0, "{sps:?}");
    }
    if let Some((w, h)) = sps.sample_aspect_ratio {
        assert!(w > 0 && h > 0, "{sps:?}");
    }
    let _ = sps.reorder_depth();
}

/// `AvcConfig::parse`: records round-trip through `to_bytes`.
fn check_avcc_record(data: &[u8]) {
    let parsed = AvcConfig::parse(data);
    if data.first() == Some(&1) {
        assert_eq!(
            AvcConfig::from_extradata(data),
            parsed,
            "extradata starting with 1 is an avcC record"
        );
    }
    let Ok(config) = parsed else {
        return;
    };
    assert!(matches!(config.length_size, 1 | 2 | 4), "{config:?}");
    assert!(!config.sps.is_empty());
    assert!(config.sps.iter().all(|n| nal_type(n) == Some(NAL_SPS)));
    let bytes = config.to_bytes();
    // The same fields, only reserved bits may differ.
    assert_eq!(bytes.len(), data.len(), "{config:?}");
    assert_eq!(AvcConfig::parse(&bytes).as_ref(), Ok(&config));
    assert_eq!(AvcConfig::from_extradata(&bytes).as_ref(), Ok(&config));
    // A complete record cut by one byte needs more bytes (it is never "malformed").
    assert_eq!(
        AvcConfig::parse(&data[..data.len() - 1]),
        Err(H264Error::Incomplete)
    );
    let _ = config.codec_string();
    let _ = config.to_string();
    if let Ok(sps) = config.sps_info() {
        assert_eq!(Sps::parse(&config.sps[0]).as_ref(), Ok(&sps));
    }
    let _ = config.parameter_sets_annexb();
}

/// `AvcConfig::from_extradata` on Annex-B parameter sets.
fn check_extradata(data: &[u8]) {
    let Ok(config) = AvcConfig::from_extradata(data) else {
        return;
    };
    let bytes = config.to_bytes();
    assert_eq!(AvcConfig::parse(&bytes).as_ref(), Ok(&config), "{config:?}");
    if data.first() == Some(&1) {
        return; // an avcC record: checked by check_avcc_record
    }
    // Built from Annex-B: 4-byte lengths, no duplicate parameter sets, and the parameter sets
    // written back as Annex-B give the same record.
    assert_eq!(config.length_size, 4);
    assert!(!config.pps.is_empty());
    for (i, a) in config.sps.iter().enumerate() {
        assert!(!config.sps[..i].contains(a), "duplicate SPS kept");
    }
    let sps = config
        .sps_info()
        .expect("the first SPS of a record built from parameter sets parses");
    assert_eq!(
        (config.profile, config.compat, config.level),
        (sps.profile_idc, sps.constraint_flags, sps.level_idc)
    );
    let annexb = config.parameter_sets_annexb();
    assert_eq!(AvcConfig::from_extradata(&annexb).as_ref(), Ok(&config));
    assert_eq!(
        AvcConfig::from_parameter_sets(annexb_nals(data)).as_ref(),
        Ok(&config)
    );
}

/// Annex-B -> AVCC -> Annex-B.
fn check_annexb(data: &[u8]) {
    let nals: Vec<&[u8]> = annexb_nals(data).collect();
    for nal in &nals {
        assert!(
            !nal.is_empty() && nal.last() != Some(&0),
            "NAL units end in a non-zero byte"
        );
        assert!(!contains_start_code(nal));
    }
    let avcc = annexb_to_avcc(data);
    assert_eq!(avcc.len(), nals.iter().map(|n| n.len() + 4).sum::<usize>());
    let framed: Vec<&[u8]> = avcc_nals(&avcc, 4)
        .map(|r| r.expect("AVCC we wrote frames"))
        .collect();
    assert_eq!(framed, nals);
    let back = avcc_to_annexb(&avcc, 4).expect("AVCC we wrote converts");
    assert_eq!(
        annexb_to_avcc(&back),
        avcc,
        "Annex-B -> AVCC -> Annex-B -> AVCC changed the data"
    );
    assert_eq!(avcc_to_avcc4(&avcc, 4).as_ref(), Ok(&avcc));
    let idr = nals.iter().any(|n| nal_type(n) == Some(NAL_IDR));
    assert_eq!(is_keyframe_annexb(data), idr);
    assert_eq!(is_keyframe_avcc(&avcc, 4), idr);
}

/// AVCC with `length_size`-byte lengths.
fn check_avcc(data: &[u8], length_size: usize) {
    let results: Vec<Result<&[u8], H264Error>> = avcc_nals(data, length_size).collect();
    // The iterator stops at the first error.
    if let Some(pos) = results.iter().position(Result::is_err) {
        assert_eq!(pos, results.len() - 1, "avcc_nals went on after an error");
    }
    let converted = avcc_to_annexb(data, length_size);
    let as4 = avcc_to_avcc4(data, length_size);
    match results.iter().find_map(|r| r.as_ref().err()) {
        Some(err) => {
            assert_eq!(converted.as_ref().err(), Some(err));
            assert_eq!(as4.as_ref().err(), Some(err));
        }
        None => {
            let nals: Vec<&[u8]> = results.into_iter().map(Result::unwrap).collect();
            let annexb = converted.expect("every NAL unit framed");
            let avcc4 = as4.expect("every NAL unit framed");
            assert_eq!(
                annexb.len(),
                nals.iter().map(|n| n.len() + 4).sum::<usize>()
            );
            assert_eq!(
                avcc_nals(&avcc4, 4).collect::<Result<Vec<_>, _>>().as_ref(),
                Ok(&nals)
            );
            if length_size == 4 {
                assert_eq!(avcc4, data);
            }
            if !data.is_empty() {
                // A framed buffer cut by one byte ends inside its last NAL unit.
                assert_eq!(
                    avcc_to_annexb(&data[..data.len() - 1], length_size),
                    Err(H264Error::Incomplete)
                );
            }
            let idr = nals.iter().any(|n| nal_type(n) == Some(NAL_IDR));
            assert_eq!(is_keyframe_avcc(data, length_size), idr);
            // Annex-B can carry a NAL unit only if it holds no start code and does not end in a
            // zero byte (those would be read as a start code and as trailing_zero_8bits).
            if nals
                .iter()
                .all(|n| n.last() != Some(&0) && !contains_start_code(n))
            {
                assert_eq!(annexb_nals(&annexb).collect::<Vec<_>>(), nals);
                assert_eq!(annexb_to_avcc(&annexb), avcc4);
            }
        }
    }
}

fn contains_start_code(nal: &[u8]) -> bool {
    nal.windows(3).any(|w| w == [0, 0, 1])
}
