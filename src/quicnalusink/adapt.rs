//! `adapt-bitrate`: finding the encoder upstream and carrying out what the core's steering
//! (sender/steering.rs) decides. Policy with several receivers: the core's estimate follows
//! the slowest one that is connected and heard from, so every receiver can get every frame.

use crate::element::properties::AdaptBitrate;
use crate::sender::steering::Steering;
use crate::sender::Estimate;
use gst::glib;
use gst::prelude::*;

/// The steering of one started sink.
#[derive(Debug)]
pub struct Adaptation {
    mode: AdaptBitrate,
    steering: Steering,
    /// The sink's debug category, which its steering logs under.
    cat: gst::DebugCategory,
    /// None until looked for; Some(None) when there is no encoder upstream.
    encoder: Option<Option<glib::WeakRef<gst::Element>>>,
}

impl Adaptation {
    /// None for `adapt-bitrate=false`.
    pub fn new(
        mode: AdaptBitrate,
        min_kbps: u32,
        max_kbps: u32,
        cat: gst::DebugCategory,
    ) -> Option<Self> {
        (mode != AdaptBitrate::Off).then(|| Adaptation {
            mode,
            steering: Steering::new(min_kbps, max_kbps),
            cat,
            encoder: None,
        })
    }

    /// Moves the encoder's bitrate towards the estimate, asking it for a keyframe after a
    /// large step down; returns the encoder's bitrate (kbit/s) afterwards, or None when
    /// there is no encoder upstream.
    pub fn steer(&mut self, sink: &gst::Element, estimate: &Estimate) -> Option<u32> {
        let encoder = self.encoder(sink)?;
        let estimate_bps = estimate.bitrate;
        let current = || encoder.property::<u32>("bitrate");
        if let Some(step) = self.steering.next(estimate, current) {
            gst::debug!(
                self.cat,
                obj = sink,
                "encoder {} bitrate -> {} kbit/s (estimate {} kbit/s){}",
                encoder.name(),
                step.kbps,
                estimate_bps / 1000,
                if step.keyframe {
                    ", and a keyframe"
                } else {
                    ""
                }
            );
            encoder.set_property("bitrate", step.kbps);
            if step.keyframe {
                request_keyframe(sink);
            }
        }
        self.steering.current()
    }

    /// The nearest encoder upstream, looked for once.
    fn encoder(&mut self, sink: &gst::Element) -> Option<gst::Element> {
        if let Some(found) = &self.encoder {
            return found.as_ref().and_then(|w| w.upgrade());
        }
        let encoder = find_encoder(sink);
        match &encoder {
            Some(e) => gst::info!(
                self.cat,
                obj = sink,
                "steering the bitrate of {} ({})",
                e.name(),
                e.factory().map_or("?".into(), |f| f.name().to_string())
            ),
            None if self.mode == AdaptBitrate::On => gst::element_warning!(
                sink,
                gst::CoreError::Negotiation,
                ("adapt-bitrate=true, but no upstream element has a writable 'bitrate' \
                     property (looked through single-input elements from the sink)")
            ),
            None => gst::info!(
                self.cat,
                obj = sink,
                "no encoder upstream: the stream's bitrate is left as it is"
            ),
        }
        self.encoder = Some(encoder.as_ref().map(|e| e.downgrade()));
        encoder
    }
}

/// Asks upstream for a keyframe with its parameter sets (GstForceKeyUnit) from `sink`;
/// whether an element took the request (an encoder does; a file does not).
pub fn request_keyframe(sink: &gst::Element) -> bool {
    let event = gst::event::CustomUpstream::new(
        gst::Structure::builder("GstForceKeyUnit")
            .field("all-headers", true)
            .build(),
    );
    sink.static_pad("sink")
        .is_some_and(|pad| pad.push_event(event))
}

/// Walks upstream from `sink` through single-input elements (parsers, queues, capsfilters)
/// to the first element with a writable unsigned-integer `bitrate` property: x265enc,
/// x264enc, nvh265enc, vah265enc, qsvh265enc, ... (a file or a fixed stream has none).
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
