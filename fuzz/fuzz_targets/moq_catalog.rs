//! A MoQ catalog as a hostile relay or publisher sends it: bytes parsed as hang's catalog
//! JSON, with quicnalu's extension, then picked from by the subscriber's own
//! `catalog::choose`.
//!
//! Invariants: parsing never panics, nor does `choose`; a chosen rendition is one of the
//! catalog's video renditions and its caps are H.265 byte-stream; a parsed catalog
//! serialises, and that JSON parses to the same catalog (its floats, framerates and
//! rotation, to within serde_json's default parsing, which may be one unit in the last
//! place off).
//!
//! Known, outside our code: hang 0.21.19 panics on a non-ASCII H.264 codec string
//! (src/catalog/video/h264.rs slices at byte offsets). The subscriber turns that panic into
//! an error (transport/moq/subscribe.rs, `Unpanicked`); libFuzzer's panic hook aborts
//! before any unwinding, so such inputs are stepped over here.

#![no_main]

use gstquicnalu::net::moq::catalog::{choose, Extension};
use hang::catalog::Catalog;
use libfuzzer_sys::fuzz_target;

/// The catalog's floats, in order, taken out of it.
fn take_floats(c: &mut Catalog<Extension>) -> Vec<Option<f64>> {
    let mut out = vec![c.video.rotation.take()];
    for config in c.video.renditions.values_mut() {
        out.push(config.framerate.take());
    }
    out
}

/// Whether `data` has a codec string that is not ASCII (the known hang panic).
fn non_ascii_codec(data: &[u8]) -> bool {
    String::from_utf8_lossy(data)
        .split("\"codec\"")
        .skip(1)
        .any(|rest| rest.chars().take(64).any(|c| !c.is_ascii()))
        || data.windows(2).any(|w| w == b"\\u")
}

fuzz_target!(|data: &[u8]| {
    if non_ascii_codec(data) {
        return;
    }
    let Ok(catalog) = Catalog::<Extension>::from_slice(data) else {
        return;
    };
    let _ = catalog.check_renditions();
    if let Ok(chosen) = choose(&catalog) {
        assert!(catalog.video.renditions.contains_key(&chosen.track));
        let ours = catalog.ext.quicnalu.is_some();
        assert!(
            ours || chosen
                .caps
                .starts_with("video/x-h265, stream-format=(string)byte-stream")
        );
    }

    let json = catalog.to_json().expect("a parsed catalog serialises");
    let mut again = Catalog::<Extension>::from_str(&json)
        .unwrap_or_else(|e| panic!("its own JSON does not parse: {e}\n{json}"));
    let mut catalog = catalog;
    let (was, is) = (take_floats(&mut catalog), take_floats(&mut again));
    assert_eq!(was.len(), is.len());
    for (a, b) in was.iter().zip(&is) {
        match (a, b) {
            (Some(a), Some(b)) => {
                assert!((a - b).abs() <= a.abs() * 1e-15 + 1e-300, "{a} became {b}")
            }
            _ => assert_eq!(a, b),
        }
    }
    assert_eq!(again, catalog, "{json}");
});
