//! What receivers ask of upstream, carried out from GStreamer's async pool: keyframes
//! (GstForceKeyUnit), and with `adapt-bitrate` the encoder's bitrate, beside the
//! `quicnalusink-bandwidth` message.

use super::*;
use crate::sender::Estimate;

impl QuicNaluSink {
    /// What the networking thread calls when receivers want a keyframe: the upstream
    /// GstForceKeyUnit event goes out from GStreamer's async pool, so the networking thread
    /// never waits on upstream elements.
    pub(super) fn keyframe_requester(&self) -> Box<dyn Fn() + Send> {
        let weak = self.obj().downgrade();
        Box::new(move || {
            let Some(obj) = weak.upgrade() else {
                return;
            };
            obj.call_async(|obj| {
                let event = gst::event::CustomUpstream::new(
                    gst::Structure::builder("GstForceKeyUnit")
                        .field("all-headers", true)
                        .build(),
                );
                let handled = obj
                    .static_pad("sink")
                    .is_some_and(|pad| pad.push_event(event));
                gst::debug!(
                    CAT,
                    obj = obj,
                    "asked upstream for a keyframe (handled: {handled})"
                );
            });
        })
    }
}

impl QuicNaluSink {
    /// What the networking thread calls with each new estimate: from GStreamer's async
    /// pool, posts it as a `quicnalusink-bandwidth` element message and, with
    /// `adapt-bitrate`, steers the encoder (which may take its lock a while).
    pub(super) fn estimate_reporter(&self) -> Box<dyn Fn(Estimate) + Send> {
        let weak = self.obj().downgrade();
        Box::new(move |estimate| {
            let Some(obj) = weak.upgrade() else {
                return;
            };
            obj.call_async(move |obj| {
                let imp = obj.imp();
                let encoder_kbps = imp
                    .adaptation
                    .lock()
                    .unwrap()
                    .as_mut()
                    .and_then(|a| a.steer(obj.upcast_ref(), estimate.bitrate));
                let mut s = gst::Structure::builder("quicnalusink-bandwidth")
                    .field("bitrate", estimate.bitrate)
                    .field("receivers", estimate.receivers)
                    .build();
                if let Some(kbps) = encoder_kbps {
                    s.set("encoder-bitrate", kbps);
                }
                let _ = obj.post_message(gst::message::Element::builder(s).src(obj).build());
            });
        })
    }
}
