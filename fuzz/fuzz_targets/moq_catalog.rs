//! A MoQ catalog as a hostile relay or publisher sends it: bytes parsed as hang's catalog
//! JSON, with quicnalu's extension, then picked from as `catalog::choose` does.
//! `choose`, `caps_of` and `Extension` are private to src/transport/moq/catalog.rs, so the
//! part of them that reads the catalog is mirrored here (keep in step).
//!
//! Invariants: parsing never panics, nor do `check_renditions`, the ranking, the codec's
//! Display and the caps built from the chosen rendition (its framerate through
//! `gst::Fraction::approximate_f64`); the ranking visits every video rendition once, largest
//! coded area first; a parsed catalog serialises, and that JSON parses to the same catalog
//! (its floats, framerates and rotation, to within serde_json's default parsing, which may
//! be one unit in the last place off).

#![no_main]

use hang::catalog::{Catalog, Container, VideoCodec, VideoConfig};
use libfuzzer_sys::fuzz_target;
use serde::{Deserialize, Serialize};

/// src/transport/moq/catalog.rs's `Extension`.
#[derive(Serialize, Deserialize, Default, Debug, Clone, PartialEq)]
struct Extension {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    quicnalu: Option<Ours>,
}

#[derive(Serialize, Deserialize, Default, Debug, Clone, PartialEq)]
struct Ours {
    caps: String,
}

/// `caps_of`: caps for a rendition another publisher described.
fn caps_of(config: &VideoConfig) -> String {
    let mut caps =
        String::from("video/x-h265, stream-format=(string)byte-stream, alignment=(string)au");
    if let (Some(w), Some(h)) = (config.coded_width, config.coded_height) {
        caps.push_str(&format!(", width=(int){w}, height=(int){h}"));
    }
    if let Some(rate) = config.framerate.filter(|r| r.is_finite() && *r > 0.0) {
        let rate = gst::Fraction::approximate_f64(rate).unwrap_or(gst::Fraction::new(0, 1));
        assert!(rate.denom() > 0, "framerate {rate:?}");
        caps.push_str(&format!(
            ", framerate=(fraction){}/{}",
            rate.numer(),
            rate.denom()
        ));
    }
    caps
}

/// The catalog's floats, in order, taken out of it.
fn take_floats(c: &mut Catalog<Extension>) -> Vec<Option<f64>> {
    let mut out = vec![c.video.rotation.take()];
    for config in c.video.renditions.values_mut() {
        out.push(config.framerate.take());
    }
    out
}

fuzz_target!(|data: &[u8]| {
    let Ok(catalog) = Catalog::<Extension>::from_slice(data) else {
        return;
    };
    let _ = catalog.check_renditions();

    let area = |c: &VideoConfig| {
        u64::from(c.coded_width.unwrap_or(0)) * u64::from(c.coded_height.unwrap_or(0))
    };
    let ranked: Vec<_> = catalog.video.ranked().collect();
    assert_eq!(ranked.len(), catalog.video.renditions.len());
    assert!(ranked.windows(2).all(|w| area(w[0].1) >= area(w[1].1)));
    let mut chosen = None;
    for (name, config) in ranked {
        let usable = match &config.codec {
            VideoCodec::H265(h265) => h265.in_band && config.container == Container::Legacy,
            _ => false,
        };
        let _ = format!("{name} ({}, {:?})", config.codec, config.container);
        if usable && chosen.is_none() {
            chosen = Some(match &catalog.ext.quicnalu {
                Some(ours) => ours.caps.clone(),
                None => caps_of(config),
            });
        }
    }

    let json = catalog.to_json().expect("a parsed catalog serialises");
    let mut again = Catalog::<Extension>::from_str(&json)
        .unwrap_or_else(|e| panic!("its own JSON does not parse: {e}\n{json}"));
    let mut catalog = catalog;
    let (was, is) = (take_floats(&mut catalog), take_floats(&mut again));
    assert_eq!(was.len(), is.len());
    for (a, b) in was.iter().zip(&is) {
        match (a, b) {
            (Some(a), Some(b)) => assert!((a - b).abs() <= a.abs() * 1e-15 + 1e-300, "{a} became {b}"),
            _ => assert_eq!(a, b),
        }
    }
    assert_eq!(again, catalog, "{json}");
});
