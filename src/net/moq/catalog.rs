//! Our stream in moq-dev's `hang` format, which their players and GStreamer elements read:
//! a `catalog.json` track that names one H.265 rendition, and a media track of groups
//! that each start at an IRAP, one access unit per frame, each prefixed by its PTS in µs
//! (hang's "legacy" container). The access units are Annex B with their parameter sets in
//! band, which hang calls `hev1`.
//!
//! The catalog also carries our caps in a `quicnalu` field, which hang's readers ignore:
//! a quicnalusrc then outputs exactly the caps the sink was given.

use crate::media::h265::ProfileTierLevel;
use hang::catalog::{Catalog, Container, VideoCodec, VideoConfig, H265};
use serde::{Deserialize, Serialize};
use std::fmt;

/// The media track's name; the catalog's is hang's `catalog.json`.
pub const VIDEO_TRACK: &str = "video";

/// What we add to hang's catalog.
#[derive(Serialize, Deserialize, Default, Debug, Clone, PartialEq)]
pub struct Extension {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quicnalu: Option<Ours>,
}

#[derive(Serialize, Deserialize, Default, Debug, Clone, PartialEq)]
pub struct Ours {
    /// The caps quicnalusink was given, alignment=au.
    pub caps: String,
}

/// The picture size and rate the catalog states, from the caps.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Picture {
    pub width: Option<u32>,
    pub height: Option<u32>,
    pub framerate: Option<f64>,
}

/// hang could not write our catalog.
#[derive(Debug)]
pub struct NotDescribed(pub hang::Error);

impl fmt::Display for NotDescribed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "cannot describe the stream: {}", self.0)
    }
}

impl std::error::Error for NotDescribed {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.0)
    }
}

/// The catalog for a stream with `caps` whose sequence has `ptl`.
pub fn describe(
    caps: &str,
    picture: Picture,
    ptl: ProfileTierLevel,
) -> Result<String, NotDescribed> {
    let codec = H265 {
        in_band: true,
        profile_space: ptl.profile_space,
        profile_idc: ptl.profile_idc,
        profile_compatibility_flags: ptl.compatibility,
        tier_flag: ptl.high_tier,
        level_idc: ptl.level_idc,
        constraint_flags: ptl.constraints,
    };
    let mut video = VideoConfig::new(codec);
    video.coded_width = picture.width;
    video.coded_height = picture.height;
    video.framerate = picture.framerate;
    video.optimize_for_latency = Some(true);
    let mut catalog = Catalog::<Extension>::default();
    catalog
        .video
        .insert(VIDEO_TRACK, video)
        .map_err(NotDescribed)?;
    catalog.ext.quicnalu = Some(Ours { caps: caps.into() });
    catalog.to_json().map_err(NotDescribed)
}

/// The rendition a receiver plays, and the caps it outputs.
#[derive(Debug, Clone, PartialEq)]
pub struct Chosen {
    pub track: String,
    pub caps: String,
}

/// Why a broadcast has nothing a receiver can play.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Unplayable {
    /// Its catalog has no video.
    NoVideo,
    /// None of its renditions is hev1 in the legacy container; what each is instead.
    NoneFits(Vec<String>),
}

impl fmt::Display for Unplayable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Unplayable::NoVideo => f.write_str("the broadcast's catalog has no video"),
            Unplayable::NoneFits(seen) => write!(
                f,
                "the broadcast has no hev1 H.265 video in the legacy container (Annex B, \
                 parameter sets in band), which is all quicnalusrc outputs; it has: {}",
                seen.join(", ")
            ),
        }
    }
}

impl std::error::Error for Unplayable {}

/// Picks the largest H.265 rendition we can output as a byte-stream: `hev1` (in-band
/// parameter sets, Annex B) in the legacy container. Err says why none fits.
pub fn choose(catalog: &Catalog<Extension>) -> Result<Chosen, Unplayable> {
    let mut seen = Vec::new();
    for (name, config) in catalog.video.ranked() {
        let usable = match &config.codec {
            VideoCodec::H265(h265) => h265.in_band && config.container == Container::Legacy,
            _ => false,
        };
        if !usable {
            seen.push(format!("{name} ({}, {:?})", config.codec, config.container));
            continue;
        }
        let caps = match &catalog.ext.quicnalu {
            Some(ours) => ours.caps.clone(),
            None => caps_of(config),
        };
        return Ok(Chosen {
            track: name.clone(),
            caps,
        });
    }
    Err(if seen.is_empty() {
        Unplayable::NoVideo
    } else {
        Unplayable::NoneFits(seen)
    })
}

/// Caps for a rendition another publisher described.
fn caps_of(config: &VideoConfig) -> String {
    let mut caps =
        String::from("video/x-h265, stream-format=(string)byte-stream, alignment=(string)au");
    if let (Some(w), Some(h)) = (config.coded_width, config.coded_height) {
        caps.push_str(&format!(", width=(int){w}, height=(int){h}"));
    }
    if let Some(rate) = config.framerate.filter(|r| r.is_finite() && *r > 0.0) {
        let (numer, denom) = fraction(rate);
        caps.push_str(&format!(", framerate=(fraction){numer}/{denom}"));
    }
    caps
}

/// A frame rate as a fraction: 29.97 and friends in thousandths, reduced.
fn fraction(rate: f64) -> (u64, u64) {
    let numer = (rate * 1000.0).round() as u64;
    let gcd = |mut a: u64, mut b: u64| {
        while b != 0 {
            (a, b) = (b, a % b);
        }
        a.max(1)
    };
    let g = gcd(numer, 1000);
    (numer / g, 1000 / g)
}

#[cfg(test)]
mod tests {
    use super::*;

    const PTL: ProfileTierLevel = ProfileTierLevel {
        profile_space: 0,
        high_tier: false,
        profile_idc: 1,
        compatibility: [0x60, 0, 0, 0],
        constraints: [0xb0, 0, 0, 0, 0, 0],
        level_idc: 93,
    };

    #[test]
    fn our_catalog_names_hev1_and_keeps_our_caps() {
        let caps = "video/x-h265, width=(int)1280, height=(int)720, alignment=(string)au";
        let picture = Picture {
            width: Some(1280),
            height: Some(720),
            framerate: Some(30.0),
        };
        let json = describe(caps, picture, PTL).unwrap();
        // The codec string moq-dev's players parse, as their own importer would write it.
        assert!(json.contains("\"codec\":\"hev1.1.6.L93.B0\""), "{json}");
        assert!(json.contains("\"codedWidth\":1280"), "{json}");
        let parsed = Catalog::<Extension>::from_str(&json).unwrap();
        let chosen = choose(&parsed).unwrap();
        assert_eq!(chosen.track, VIDEO_TRACK);
        assert_eq!(chosen.caps, caps);
        // hang's own reader (no extension) takes it too.
        let theirs = Catalog::<()>::from_str(&json).unwrap();
        assert_eq!(theirs.video.renditions.len(), 1);
    }

    #[test]
    fn a_catalog_from_elsewhere_gives_caps_from_its_fields() {
        let json = r#"{"video":{"renditions":{"cam":{"codec":"hev1.1.6.L93.B0",
            "codedWidth":640,"codedHeight":360,"framerate":29.97,
            "container":{"kind":"legacy"}}}}}"#;
        let chosen = choose(&Catalog::<Extension>::from_str(json).unwrap()).unwrap();
        assert_eq!(chosen.track, "cam");
        assert_eq!(
            chosen.caps,
            "video/x-h265, stream-format=(string)byte-stream, alignment=(string)au, \
             width=(int)640, height=(int)360, framerate=(fraction)2997/100"
        );
        assert_eq!(fraction(30.0), (30, 1));
        assert_eq!(fraction(59.94), (2997, 50));
    }

    #[test]
    fn length_prefixed_or_other_codecs_are_refused_with_what_there_is() {
        let json = r#"{"video":{"renditions":{"cam":{"codec":"hvc1.1.6.L93.B0",
            "description":"00","container":{"kind":"legacy"}}}}}"#;
        let err = choose(&Catalog::<Extension>::from_str(json).unwrap()).unwrap_err();
        assert!(matches!(err, Unplayable::NoneFits(_)), "{err:?}");
        assert!(err.to_string().contains("cam (hvc1.1.6.L93.B0"), "{err}");
        let json = r#"{"video":{"renditions":{}}}"#;
        let err = choose(&Catalog::<Extension>::from_str(json).unwrap()).unwrap_err();
        assert_eq!(err, Unplayable::NoVideo);
        assert_eq!(err.to_string(), "the broadcast's catalog has no video");
    }
}
