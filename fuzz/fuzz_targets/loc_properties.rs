//! `LocProperties::decode_wire` on arbitrary bytes: it never panics, and whatever it accepts
//! re-encodes to a block that decodes to the same properties, through both codecs.

#![no_main]

use libfuzzer_sys::fuzz_target;
use moqcast_media::loc::{LocError, LocProperties};

fuzz_target!(|data: &[u8]| {
    if let Ok((_, used)) = LocProperties::decode_wire_prefix(data) {
        assert!(used <= data.len());
    }
    let Ok(props) = LocProperties::decode_wire(data) else {
        return;
    };
    let wire = props
        .encode_wire()
        .expect("decoded properties re-encode");
    assert_eq!(LocProperties::decode_wire(&wire), Ok(props.clone()));
    assert_eq!(
        LocProperties::from_extension_headers(&props.to_extension_headers()),
        Ok(props)
    );
    // Every strict prefix of a valid block is "need more bytes", never "malformed".
    for cut in 0..wire.len() {
        assert_eq!(
            LocProperties::decode_wire(&wire[..cut]),
            Err(LocError::Incomplete)
        );
    }
});
