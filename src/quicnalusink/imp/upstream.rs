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
                let handled = request_keyframe(obj.upcast_ref());
                gst::debug!(
                    CAT,
                    obj = obj,
                    "asked upstream for a keyframe (handled: {handled})"
                );
                if let State::Started { server, .. } = &*obj.imp().state.lock().unwrap() {
                    server.keyframes_answered(handled);
                }
            });
        })
    }
}

impl QuicNaluSink {
    /// What the networking thread calls with each new estimate: from GStreamer's async
    /// pool, posts it as a `quicnalusink-bandwidth` element message, with `adapt-bitrate`
    /// steers the encoder (which may take its lock a while), and warns once when the
    /// stream has run faster than the path (sender/overrun.rs).
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
                    .and_then(|a| a.steer(obj.upcast_ref(), &estimate));
                let mut s = gst::Structure::builder("quicnalusink-bandwidth")
                    .field("bitrate", estimate.bitrate)
                    .field("receivers", estimate.receivers)
                    .build();
                if let Some(kbps) = encoder_kbps {
                    s.set("encoder-bitrate", kbps);
                }
                if let Some(bps) = estimate.stream_bitrate {
                    s.set("stream-bitrate", bps);
                }
                if estimate.overrun {
                    let stream = estimate.stream_bitrate.unwrap_or(0) as f64 / 1e6;
                    let path = estimate.bitrate as f64 / 1e6;
                    let steering = match encoder_kbps {
                        Some(_) => "the encoder is steered but cannot go low enough (min-bitrate)",
                        None => "there is no encoder upstream to steer (adapt-bitrate)",
                    };
                    gst::element_warning!(
                        obj,
                        gst::StreamError::Encode,
                        ("The stream ({stream:.2} Mbit/s) has run faster than the path to the \
                             slowest receiver ({path:.2} Mbit/s) for seconds: pictures arrive late \
                             or are skipped"),
                        ["{steering}"]
                    );
                }
                let _ = obj.post_message(gst::message::Element::builder(s).src(obj).build());
            });
        })
    }
}
