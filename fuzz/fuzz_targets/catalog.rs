//! MSF catalog parsing on arbitrary bytes: it never panics, and a catalog object (independent
//! or delta) it accepts is written back as JSON that parses to an equal object.

#![no_main]

use libfuzzer_sys::fuzz_target;
use moqcast_media::catalog::{Catalog, CatalogUpdate};

fuzz_target!(|data: &[u8]| {
    let Ok(update) = CatalogUpdate::parse(data) else {
        return;
    };
    let json = update.to_json();
    let again = CatalogUpdate::parse(&json).expect("a written catalog object parses");
    assert_eq!(again, update);
    if let CatalogUpdate::Full(catalog) = &update {
        assert_eq!(Catalog::parse(&json).as_ref(), Ok(catalog));
        for track in &catalog.tracks {
            // Resolving init data must not panic (errors are fine).
            let _ = catalog.init_data_bytes(track);
        }
        let _ = catalog.video_tracks().count() + catalog.caption_tracks().count();
    }
});
