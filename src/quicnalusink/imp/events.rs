//! Caps and events on the sink pad: the stream description for receivers (and the relay's
//! catalog), custom events forwarded in stream order, flushes, and the EOS drain.

use super::*;
use crate::net::moq::Picture;

impl QuicNaluSink {
    /// `set_caps()`: receivers are told the caps, always with whole access units.
    pub(super) fn describe(&self, caps: &gst::Caps) -> Result<(), gst::LoggableError> {
        let s = caps
            .structure(0)
            .ok_or_else(|| gst::loggable_error!(CAT, "empty caps"))?;
        let nal = s.get::<&str>("alignment").ok() == Some("nal");
        {
            let mut stream = self.stream.lock().unwrap();
            stream.nal_aligned = nal;
            stream.caps_framerate = s.get::<gst::Fraction>("framerate").ok();
        }
        // Receivers always get whole access units.
        let mut described = caps.copy();
        described.make_mut().set("alignment", "au");
        self.server()
            .map_err(|_| gst::loggable_error!(CAT, "caps before start"))?
            .set_caps(described.to_string());
        if let Some(publisher) = self.publisher_handle() {
            let picture = Picture {
                width: s
                    .get::<i32>("width")
                    .ok()
                    .and_then(|w| u32::try_from(w).ok()),
                height: s
                    .get::<i32>("height")
                    .ok()
                    .and_then(|h| u32::try_from(h).ok()),
                framerate: s
                    .get::<gst::Fraction>("framerate")
                    .ok()
                    .filter(|r| r.numer() > 0 && r.denom() > 0)
                    .map(|r| f64::from(r.numer()) / f64::from(r.denom())),
            };
            publisher.set_caps(described.to_string(), picture);
        }
        Ok(())
    }

    pub(super) fn sink_event(&self, event: gst::Event) -> bool {
        if let gst::EventView::FlushStop(_) = event.view() {
            self.stream.lock().unwrap().gatherer = Gatherer::default();
        }
        if let gst::EventView::CustomDownstream(_) = event.view() {
            self.forward_event(&event);
        }
        if let gst::EventView::Eos(_) = event.view() {
            if let Ok(server) = self.server() {
                if self.flush_pending(&server).is_ok() {
                    let timeout = self.settings.lock().unwrap().eos_timeout_ms;
                    match server.finish(Duration::from_millis(timeout.into())) {
                        Ok(true) => gst::debug!(CAT, imp = self, "every receiver drained"),
                        Ok(false) => gst::warning!(
                            CAT,
                            imp = self,
                            "receivers did not confirm the end within {timeout} ms"
                        ),
                        Err(e) => gst::debug!(CAT, imp = self, "EOS drain interrupted: {e:?}"),
                    }
                    if let Some(publisher) = self.publisher_handle() {
                        match publisher.finish(Duration::from_millis(timeout.into())) {
                            Ok(true) => gst::debug!(CAT, imp = self, "the relay has it all"),
                            Ok(false) => gst::warning!(
                                CAT,
                                imp = self,
                                "the relay did not acknowledge the end within {timeout} ms"
                            ),
                            Err(e) => {
                                gst::debug!(CAT, imp = self, "relay drain interrupted: {e:?}")
                            }
                        }
                    }
                }
            }
        }
        self.parent_event(event)
    }

    /// A serialized custom downstream event for the receivers: sent in stream order. With
    /// NAL-aligned input it goes after the access unit being gathered, if that has a
    /// picture (the event came between access units or inside one; either way after that
    /// picture), else before it. Returns whether it went.
    fn forward_event(&self, event: &gst::Event) -> bool {
        let Some(structure) = event.structure() else {
            return false;
        };
        if structure.name() == "GstForceKeyUnit" || !self.settings.lock().unwrap().forward_events {
            return false;
        }
        let Ok(server) = self.server() else {
            return false;
        };
        if self.wait_first_receiver(&server).is_err() {
            return false;
        }
        let after_pending = self.stream.lock().unwrap().gatherer.holds_picture();
        if !server.send_command_in_stream(structure.to_string(), after_pending) {
            gst::element_imp_warning!(
                self,
                gst::StreamError::Encode,
                [
                    "Event {} not forwarded: longer than 64 KiB, or 1 MiB of commands \
                     wait for the networking thread",
                    structure.name()
                ]
            );
            return false;
        }
        gst::debug!(CAT, imp = self, "forwarding {structure}");
        true
    }
}
