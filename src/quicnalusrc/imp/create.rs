//! The streaming path: `create()` waits for the next event from the network (or the
//! relay) and turns it into caps, a buffer with its timestamps, flags and `QuicNaluMeta`,
//! a command pushed downstream, or EOS.

use super::*;
use crate::element::errors::{self, Direction};
use crate::receiver::inbox::ReceivedFrame;
use crate::receiver::marks::Marks;
use gst_plugin_meta::{Flags, QuicNaluMeta};

impl QuicNaluSrc {
    /// `create()`: the next buffer, after any caps and commands that come before it.
    pub(super) fn next_buffer(&self) -> Result<CreateSuccess, gst::FlowError> {
        let source = self.source()?;
        loop {
            match source.next() {
                Ok(Event::Caps(described)) => {
                    let caps = self.output_caps(&described).map_err(|e| {
                        gst::element_imp_error!(self, gst::StreamError::Format, ["{}", e]);
                        gst::FlowError::NotNegotiated
                    })?;
                    gst::info!(CAT, imp = self, "stream: {caps}");
                    self.obj()
                        .set_caps(&caps)
                        .map_err(|_| gst::FlowError::NotNegotiated)?;
                }
                Ok(Event::Connected) => {
                    // A restarted sender starts its timestamps again: map them afresh.
                    self.timeline.lock().unwrap().reconnected();
                }
                Ok(Event::Command(structure)) => self.command(&structure),
                Ok(Event::Frame(frame)) => {
                    return Ok(CreateSuccess::NewBuffer(self.make_buffer(frame)));
                }
                Ok(Event::Eos) => {
                    gst::info!(CAT, imp = self, "sender ended the stream");
                    return Err(gst::FlowError::Eos);
                }
                Err(Interrupted::Flushing) => return Err(gst::FlowError::Flushing),
                Err(Interrupted::Failed(e)) => {
                    let flowing = self.timeline.lock().unwrap().delivered() > 0;
                    self.post_error_message(errors::message(&e, Direction::Receive, flowing));
                    return Err(gst::FlowError::Error);
                }
            }
        }
    }

    /// The sender's caps with our output format forced.
    fn output_caps(&self, described: &str) -> Result<gst::Caps, UnusableCaps> {
        let mut caps: gst::Caps = described
            .parse()
            .map_err(|_| UnusableCaps::Unparsable(described.into()))?;
        let fixed = caps.is_fixed();
        match caps.make_mut().structure_mut(0) {
            Some(s) if fixed && s.name() == "video/x-h265" => {
                s.set("stream-format", "byte-stream");
                s.set("alignment", "au");
                s.remove_field("codec_data");
            }
            _ => return Err(UnusableCaps::NotH265(described.into())),
        }
        Ok(caps)
    }

    /// Our running time now, if the element has a clock.
    fn running_time(&self) -> Option<gst::ClockTime> {
        let obj = self.obj();
        let now = obj.clock()?.time();
        now.checked_sub(obj.base_time()?)
    }

    fn make_buffer(&self, frame: ReceivedFrame) -> gst::Buffer {
        let h = frame.header;
        let now = self.running_time().map(gst::ClockTime::nseconds);
        let stamped =
            self.timeline
                .lock()
                .unwrap()
                .map(h.pts, h.dts, frame.catch_up_age, frame.late, now);
        let marks = Marks::of(&frame, &stamped);
        let mut buffer = gst::Buffer::from_mut_slice(frame.data);
        {
            let b = buffer.make_mut();
            b.set_pts(stamped.pts.map(gst::ClockTime::from_nseconds));
            b.set_dts(stamped.dts.map(gst::ClockTime::from_nseconds));
            b.set_duration(h.duration.map(gst::ClockTime::from_nseconds));
            let mut flags = gst::BufferFlags::empty();
            flags.set(gst::BufferFlags::DELTA_UNIT, !marks.keyframe);
            flags.set(gst::BufferFlags::HEADER, marks.header);
            flags.set(gst::BufferFlags::DISCONT, marks.discont);
            flags.set(gst::BufferFlags::DECODE_ONLY, marks.decode_only);
            b.set_flags(flags);
            let mut meta_flags = Flags::default();
            if marks.keyframe {
                meta_flags = meta_flags | Flags::KEYFRAME;
            }
            if marks.discont {
                meta_flags = meta_flags | Flags::DISCONT;
            }
            if marks.gap {
                meta_flags = meta_flags | Flags::GAP;
            }
            if marks.late {
                meta_flags = meta_flags | Flags::LATE;
            }
            let meta = QuicNaluMeta {
                seq: h.seq,
                sender_time: h.send_time,
                arrival_time: frame.arrival,
                flags: meta_flags,
            };
            if let Err(e) = meta.add(b) {
                gst::warning!(CAT, imp = self, "cannot attach QuicNaluMeta: {e}");
            }
        }
        buffer
    }

    /// A command from the sender: pushed downstream as a custom event here, in stream
    /// order, and posted as a `quicnalusrc-command` message.
    fn command(&self, structure: &str) {
        let Ok(command) = structure.parse::<gst::Structure>() else {
            gst::warning!(
                CAT,
                imp = self,
                "sender sent a command that is not a GstStructure: {structure:?}"
            );
            return;
        };
        gst::debug!(CAT, imp = self, "command {command}");
        let obj = self.obj();
        let message = gst::Structure::builder("quicnalusrc-command")
            .field("command", command.clone())
            .build();
        let _ = obj.post_message(gst::message::Element::builder(message).src(&*obj).build());
        if !obj
            .src_pad()
            .push_event(gst::event::CustomDownstream::new(command))
        {
            gst::debug!(
                CAT,
                imp = self,
                "nothing downstream handled the command event"
            );
        }
    }
}

/// Why the caps the sender described cannot be ours; each holds them.
#[derive(Debug, Clone, PartialEq, Eq)]
enum UnusableCaps {
    Unparsable(String),
    /// Not one fixed video/x-h265 structure.
    NotH265(String),
}

impl std::fmt::Display for UnusableCaps {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            UnusableCaps::Unparsable(caps) => {
                write!(f, "sender described its stream as unparsable caps '{caps}'")
            }
            UnusableCaps::NotH265(caps) => {
                write!(f, "sender's stream is not fixed H.265 caps: {caps}")
            }
        }
    }
}

impl std::error::Error for UnusableCaps {}
