//! Steering the upstream encoder's bitrate to what the receivers' paths carry, as
//! webrtcsink does for WebRTC. Policy with several receivers: follow the slowest one that is
//! connected and heard from, so every receiver can get every frame; a receiver gone quiet
//! (an outage) does not count until it is heard from again.

use gst::glib;
use gst::prelude::*;

/// Bounds and state of the adaptation; all rates in kbit/s, the unit of x265enc's (and
/// most encoders') `bitrate` property.
#[derive(Debug)]
pub struct Adaptation {
    pub min_kbps: u32,
    /// 0: the encoder's own bitrate when adaptation starts.
    pub max_kbps: u32,
    /// The sink's debug category, which its steering logs under.
    cat: gst::DebugCategory,
    encoder: Option<glib::WeakRef<gst::Element>>,
    current_kbps: Option<u32>,
}

/// The encoder's share of the estimate: the rest is for QUIC and framing overhead and
/// retransmissions, which the estimate (bytes on the wire) includes.
const ENCODER_SHARE: f64 = 0.9;
/// Largest step up per estimate (every 500 ms): +15%. Steps down are taken at once.
const MAX_STEP_UP: f64 = 1.15;
/// Changes smaller than this are not worth an encoder reconfiguration.
const MIN_CHANGE: f64 = 0.03;

impl Adaptation {
    pub fn new(min_kbps: u32, max_kbps: u32, cat: gst::DebugCategory) -> Self {
        Adaptation {
            min_kbps,
            max_kbps,
            cat,
            encoder: None,
            current_kbps: None,
        }
    }

    /// Moves the encoder's bitrate towards `estimate_bps`; returns the encoder's bitrate
    /// (kbit/s) afterwards, or None when there is no encoder upstream.
    pub fn steer(&mut self, sink: &gst::Element, estimate_bps: u64) -> Option<u32> {
        let encoder = self.encoder(sink)?;
        let current = *self
            .current_kbps
            .get_or_insert_with(|| encoder.property::<u32>("bitrate"));
        if self.max_kbps == 0 {
            self.max_kbps = current;
        }
        let wanted = estimate_bps as f64 * ENCODER_SHARE / 1000.0;
        let next = if wanted < f64::from(current) {
            wanted
        } else {
            wanted.min(f64::from(current) * MAX_STEP_UP)
        };
        let next = (next.round() as u32).clamp(self.min_kbps, self.max_kbps.max(self.min_kbps));
        let change = (f64::from(next) - f64::from(current)).abs() / f64::from(current.max(1));
        if change >= MIN_CHANGE {
            gst::debug!(
                self.cat,
                obj = sink,
                "encoder {} bitrate {current} -> {next} kbit/s (estimate {} kbit/s)",
                encoder.name(),
                estimate_bps / 1000
            );
            encoder.set_property("bitrate", next);
            self.current_kbps = Some(next);
        }
        self.current_kbps
    }

    /// The nearest element upstream with a `bitrate` property, found once.
    fn encoder(&mut self, sink: &gst::Element) -> Option<gst::Element> {
        if let Some(encoder) = self.encoder.as_ref().and_then(|w| w.upgrade()) {
            return Some(encoder);
        }
        let encoder = find_encoder(sink)?;
        gst::info!(
            self.cat,
            obj = sink,
            "steering the bitrate of {} ({})",
            encoder.name(),
            encoder
                .factory()
                .map_or("?".into(), |f| f.name().to_string())
        );
        self.encoder = Some(encoder.downgrade());
        Some(encoder)
    }
}

/// Walks upstream from `sink` through single-input elements (parsers, queues, capsfilters)
/// to the first element whose `bitrate` property is an unsigned integer.
fn find_encoder(sink: &gst::Element) -> Option<gst::Element> {
    let mut pad = sink.static_pad("sink")?;
    // Bounded: a pipeline with a loop must not spin here.
    for _ in 0..32 {
        let element = pad.peer()?.parent_element()?;
        let is_encoder = element.find_property("bitrate").is_some_and(|p| {
            p.value_type() == u32::static_type() && p.flags().contains(glib::ParamFlags::WRITABLE)
        });
        if is_encoder {
            return Some(element);
        }
        let mut inputs = element.sink_pads().into_iter();
        pad = inputs.next()?;
        if inputs.next().is_some() {
            return None;
        }
    }
    None
}
