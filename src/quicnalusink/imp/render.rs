//! The streaming path: `prepare()` checks each buffer is Annex B and waits for the first
//! receiver; `render()` gathers NAL-aligned input into access units and hands each one,
//! mapped without a copy, to the networking thread (and the relay).

use super::*;
use crate::element::errors::{self, Direction};
use crate::media::frame::Frame;
use crate::media::h265;
use crate::net::link::Interrupted;
use crate::sender::untimed::{Framerate, Untimed};

impl QuicNaluSink {
    /// `prepare()`: refuses input that is not Annex B before anything waits or is sent,
    /// keeps what it found for `render()`, and holds the stream for the first receiver.
    pub(super) fn check_and_hold(
        &self,
        buffer: &gst::Buffer,
    ) -> Result<gst::FlowSuccess, gst::FlowError> {
        let map = buffer.map_readable().map_err(|_| gst::FlowError::Error)?;
        let info = h265::inspect(&map);
        if let Err(e) = &info {
            gst::element_imp_error!(
                self,
                gst::StreamError::Format,
                [
                    "Input is not an H.265 byte-stream: {} (length-prefixed hvc1/hev1 data \
                     must be converted by h265parse first)",
                    e
                ]
            );
            return Err(gst::FlowError::Error);
        }
        if let Some(publisher) = self.publisher_handle() {
            // The catalog goes out before the wait for a subscriber, who needs it first.
            if let Err(e) = publisher.describe(&map) {
                self.stop_publishing(&e);
            }
        }
        drop(map);
        if let Ok(info) = info {
            self.stream.lock().unwrap().inspected = Some((buffer.as_ptr() as usize, info));
        }
        let server = self.server()?;
        self.wait_first_receiver(&server)
    }

    /// `render()`: sends the access unit, or gathers NAL-aligned input into one.
    pub(super) fn send_buffer(
        &self,
        buffer: &gst::Buffer,
    ) -> Result<gst::FlowSuccess, gst::FlowError> {
        let server = self.server()?;
        let info = self.inspected(buffer)?;
        if self.stream.lock().unwrap().nal_aligned {
            return self.gather_nal(&server, buffer, info);
        }
        let map = buffer
            .clone()
            .into_mapped_buffer_readable()
            .map_err(|_| gst::FlowError::Error)?;
        self.send_au(&server, buffer, Box::new(map), info)
    }

    /// Runs a wait on the network from the streaming thread. `unlock()` ends it; when that
    /// was a PLAYING -> PAUSED change rather than a flush, BaseSink's `wait_preroll()` holds
    /// us until PLAYING again and the wait resumes, so no buffer is dropped.
    fn wait_network<T>(
        &self,
        mut wait: impl FnMut() -> Result<T, Interrupted>,
    ) -> Result<T, gst::FlowError> {
        loop {
            match wait() {
                Ok(v) => return Ok(v),
                Err(Interrupted::Flushing) => {
                    self.obj().wait_preroll()?;
                }
                Err(Interrupted::Failed(e)) => {
                    self.post_error_message(errors::message(&e, Direction::Send, true));
                    return Err(gst::FlowError::Error);
                }
            }
        }
    }

    /// Sends one whole access unit; `buffer` carries its timestamps and flags.
    fn send_au(
        &self,
        server: &Server,
        buffer: &gst::Buffer,
        data: Box<dyn AsRef<[u8]> + Send + Sync>,
        info: AuInfo,
    ) -> Result<gst::FlowSuccess, gst::FlowError> {
        let len = data.as_ref().as_ref().len() as u64;
        let max = self.settings.lock().unwrap().max_frame_size;
        if len > u64::from(max) {
            gst::element_imp_error!(
                self,
                gst::StreamError::Format,
                [
                    "Access unit of {} bytes exceeds the {} byte frame limit (max-frame-size)",
                    len,
                    max
                ]
            );
            return Err(gst::FlowError::Error);
        }
        let Some(admitted) = self.stream.lock().unwrap().intake.admit(&info) else {
            gst::debug!(
                CAT,
                imp = self,
                "dropping access unit before the first IRAP"
            );
            return Ok(gst::FlowSuccess::Ok);
        };
        let untimed = buffer.pts().is_none() && buffer.dts().is_none();
        let segment = self.obj().segment();
        let segment = segment.downcast_ref::<gst::ClockTime>();
        let running = |t: Option<gst::ClockTime>| {
            t.and_then(|t| segment.and_then(|s| s.to_running_time(t)))
                .map(|t| t.nseconds())
        };
        let (mut pts, dts) = (running(buffer.pts()), running(buffer.dts()));
        if untimed {
            pts = self.pace_untimed(admitted.number)?;
        }
        self.wait_network(|| server.wait_for_room())?;
        let frame = Frame {
            pts,
            dts,
            duration: buffer.duration().map(|d| d.nseconds()),
            keyframe: info.irap,
            parameter_sets: info.parameter_sets,
            temporal_id: info.temporal_id,
            drop_cost: admitted.drop_cost,
            discont: buffer.flags().contains(gst::BufferFlags::DISCONT),
            data,
        };
        let frame = match self.publisher_handle() {
            Some(publisher) => self.publish(&publisher, frame),
            None => frame,
        };
        server.send(frame);
        Ok(gst::FlowSuccess::Ok)
    }

    /// Untimestamped input: access unit `n`'s running time at the `framerate` property's
    /// rate, else the caps' (`Untimed`), used as its PTS; with sync, once the clock reaches
    /// it.
    fn pace_untimed(&self, n: u64) -> Result<Option<u64>, gst::FlowError> {
        let framerate = |r: gst::Fraction| Framerate {
            numer: r.numer(),
            denom: r.denom(),
        };
        let pace = Untimed {
            property: framerate(self.settings.lock().unwrap().framerate),
            caps: self.stream.lock().unwrap().caps_framerate.map(framerate),
        };
        let Some(due) = pace.due(n) else {
            return Ok(None);
        };
        if self.obj().is_sync() {
            let time = gst::ClockTime::from_nseconds(due);
            while let (Err(gst::ClockError::Unscheduled), _) = self.obj().wait_clock(time) {
                // Unscheduled by unlock(): resume after a pause, give up on a flush.
                self.obj().wait_preroll()?;
            }
        }
        Ok(Some(due))
    }

    /// NAL-aligned input: gathers NAL units into access units, sending each once the next
    /// one begins or the buffer is marked as the end of one.
    fn gather_nal(
        &self,
        server: &Server,
        buffer: &gst::Buffer,
        info: AuInfo,
    ) -> Result<gst::FlowSuccess, gst::FlowError> {
        let map = buffer.map_readable().map_err(|_| gst::FlowError::Error)?;
        let complete = self
            .stream
            .lock()
            .unwrap()
            .gatherer
            .push(&map, info, buffer.clone());
        if let Some(au) = complete {
            self.send_au(server, &au.first, Box::new(au.data), au.info)?;
        }
        if buffer.flags().contains(gst::BufferFlags::MARKER) {
            self.flush_pending(server)?;
        }
        Ok(gst::FlowSuccess::Ok)
    }

    pub(super) fn flush_pending(
        &self,
        server: &Server,
    ) -> Result<gst::FlowSuccess, gst::FlowError> {
        let pending = self.stream.lock().unwrap().gatherer.flush();
        match pending {
            Some(au) => self.send_au(server, &au.first, Box::new(au.data), au.info),
            None => Ok(gst::FlowSuccess::Ok),
        }
    }

    /// What `buffer` holds: prepare() inspected it just before, unless it was not the one.
    fn inspected(&self, buffer: &gst::Buffer) -> Result<AuInfo, gst::FlowError> {
        let key = buffer.as_ptr() as usize;
        let prepared = self.stream.lock().unwrap().inspected.take();
        if let Some((_, info)) = prepared.filter(|(k, _)| *k == key) {
            return Ok(info);
        }
        let map = buffer.map_readable().map_err(|_| gst::FlowError::Error)?;
        h265::inspect(&map).map_err(|e| {
            gst::element_imp_error!(self, gst::StreamError::Format, ["Invalid H.265: {}", e]);
            gst::FlowError::Error
        })
    }

    /// With wait-for-connection, holds the stream (buffers and forwarded events) until the
    /// first receiver is ready.
    pub(super) fn wait_first_receiver(
        &self,
        server: &Server,
    ) -> Result<gst::FlowSuccess, gst::FlowError> {
        let wait = self.settings.lock().unwrap().wait_for_connection
            && !self.stream.lock().unwrap().connected_once;
        if wait {
            gst::debug!(CAT, imp = self, "waiting for the first receiver");
            // Publishing to a relay: the first receiver is the relay's first subscriber,
            // unless the relay fails first.
            let subscribed = match self.publisher_handle() {
                Some(publisher) => self.wait_network(|| match publisher.wait_for_subscriber() {
                    Err(Interrupted::Failed(e)) => {
                        self.stop_publishing(&e);
                        Ok(false)
                    }
                    waited => waited.map(|()| true),
                })?,
                None => false,
            };
            if !subscribed {
                self.wait_network(|| server.wait_for_receiver())?;
            }
            self.stream.lock().unwrap().connected_once = true;
        }
        Ok(gst::FlowSuccess::Ok)
    }
}
