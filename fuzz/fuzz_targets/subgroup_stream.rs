//! `wire::SubgroupParser` (the relay's reader of publishers' subgroup streams) on arbitrary
//! bytes: it never panics, and what it parses, and where it fails, do not depend on how the
//! bytes arrive (whole, or in pieces of any size).

#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use moqcast_media::moq::wire::{ParseError, ParsedObject, SubgroupParser};

fn parse(
    data: &[u8],
    step: usize,
    properties: bool,
) -> (Vec<ParsedObject>, Result<(), ParseError>) {
    let mut parser = SubgroupParser::new(properties, 4096);
    let mut buf = BytesMut::new();
    let mut objects = Vec::new();
    for piece in data.chunks(step) {
        buf.extend_from_slice(piece);
        loop {
            match parser.next(&mut buf) {
                Ok(Some(object)) => objects.push(object),
                Ok(None) => break,
                Err(e) => return (objects, Err(e)),
            }
        }
    }
    let end = parser.finish(&buf);
    (objects, end)
}

fuzz_target!(|data: &[u8]| {
    let Some((&first, data)) = data.split_first() else {
        return;
    };
    let properties = first & 1 == 1;
    let step = usize::from(first >> 1).max(1);
    let whole = parse(data, data.len().max(1), properties);
    let pieces = parse(data, step, properties);
    assert_eq!(whole, pieces, "pieces of {step} bytes");
    let bytes: usize = whole.0.iter().map(|o| o.payload.len()).sum();
    assert!(bytes <= data.len());
});
