//! Reading group streams: frames as they complete, each judged for lateness on arrival,
//! within MAX_BUFFERED bytes held.

use super::{note_late_group, Group, Reassembly, Violation, MAX_BUFFERED};
use crate::media::h265::DropCost;
use crate::protocol::control::is_group_stream;
use crate::protocol::{FrameFlags, GroupFrame, LATE_GROUP_ALLOWANCE};
use crate::receiver::inbox::ReceivedFrame;
use crate::receiver::lateness::{Arrival, Verdict};
use std::time::Instant;

/// Read size between frames: a frame header and a little of the body, which then passes
/// through one more copy; the rest of the body is read in place.
const HEADER_READ: usize = 64;

/// Where group streams' bytes come from: quiche's `stream_recv` on the networking thread.
pub trait StreamSource {
    fn recv(&mut self, stream: u64, buf: &mut [u8]) -> Result<(usize, bool), quiche::Error>;
}

impl Reassembly {
    /// Reads what the readable `stream` holds, as far as MAX_BUFFERED allows. `one_way`:
    /// the path's one-way delay (ns, half its minimum RTT), for lateness.
    pub fn read(
        &mut self,
        stream: u64,
        source: &mut impl StreamSource,
        now: Instant,
        one_way: u64,
    ) -> Result<(), Violation> {
        if !is_group_stream(stream) {
            return Err(Violation::UnexpectedStream(stream));
        }
        // Group streams wait in quiche until DESCRIBE.
        if !self.described {
            return Ok(());
        }
        if stream < self.next_group {
            // A group we abandoned (quiche finished ones never turn readable again): its
            // RESET_STREAM, or bytes that were already on the way. Drop them.
            while source.recv(stream, &mut self.buf).is_ok() {}
            return Ok(());
        }
        let arrival = self.ns(now);
        let max_frame = self.max_frame;
        let group = self
            .groups
            .entry(stream)
            .or_insert_with(|| Group::new(max_frame));
        let mut frames: Vec<GroupFrame> = Vec::new();
        // Leave media in quiche while we hold enough, so flow control slows the sender
        // instead of our memory growing. The group being delivered has its own allowance:
        // later groups filling the buffer must not starve it.
        let delivering = stream == self.next_group;
        let full = |group: &Group, buffered: usize| {
            if delivering {
                group.bytes >= MAX_BUFFERED
            } else {
                buffered >= MAX_BUFFERED
            }
        };
        while !group.finished && !full(group, self.buffered) {
            let bad = |e| Violation::Group(stream, e);
            let held = group.decoder.partial_bytes();
            // Bodies go from quiche straight into the frame; only headers pass through buf.
            let read = match group.decoder.body_space() {
                Some(space) => {
                    let read = source.recv(stream, space);
                    group.decoder.filled(read.map_or(0, |r| r.0), &mut frames);
                    read
                }
                None => {
                    let read = source.recv(stream, &mut self.buf[..HEADER_READ]);
                    if let Ok((n, _)) = read {
                        group
                            .decoder
                            .push(&self.buf[..n], &mut frames)
                            .map_err(bad)?;
                    }
                    read
                }
            };
            // A frame being received counts too: a sender starting a frame on each of many
            // groups must not make us hold more than MAX_BUFFERED for them.
            self.buffered = self.buffered + group.decoder.partial_bytes() - held;
            let fin = match read {
                Ok((_, fin)) => fin,
                Err(quiche::Error::Done) => break,
                Err(quiche::Error::StreamReset(code)) => {
                    log::debug!("group stream {stream} reset by the sender ({code:#x})");
                    self.counters.groups_reset += 1;
                    group.finished = true;
                    group.abandoned = true;
                    break;
                }
                Err(e) => return Err(Violation::Stream(stream, e)),
            };
            if fin {
                group.decoder.finish().map_err(bad)?;
                group.finished = true;
            }
            // The frame in progress before this read started then; any others, now.
            let mut started = group.started_at.take();
            if !group.decoder.between_frames() {
                group.started_at = Some(if frames.is_empty() {
                    started.unwrap_or(arrival)
                } else {
                    arrival
                });
            }
            for f in frames.drain(..) {
                let first_byte = started.take().unwrap_or(arrival);
                if f.header.flags.contains(FrameFlags::SHED) {
                    // Nothing later references it: decoding goes on without a gap.
                    log::debug!("frame {} was shed by the sender", f.header.seq);
                    self.counters.frames_shed += 1;
                    continue;
                }
                self.counters.frames_received += 1;
                // The NAL scan costs a pass over the frame: only keyframes (for the SPS)
                // and late frames (for their cost) need it.
                let inspect = || crate::media::h265::inspect(&f.data);
                if f.header.flags.contains(FrameFlags::KEYFRAME) {
                    if let Some(n) = inspect().ok().and_then(|i| i.sub_layers) {
                        self.sub_layers = n;
                    }
                }
                // Catch-up frames are old by design: only live frames can be late.
                let catch_up_age = self
                    .join
                    .filter(|&(live_seq, _)| f.header.seq < live_seq)
                    .map(|(_, sent)| sent.saturating_sub(f.header.send_time));
                let verdict = if catch_up_age.is_some() {
                    Verdict::OnTime
                } else {
                    let sub_layers = self.sub_layers;
                    let alone =
                        || inspect().is_ok_and(|i| i.drop_cost(sub_layers) == DropCost::Alone);
                    let times = Arrival {
                        send_time: f.header.send_time,
                        first_byte,
                        arrival,
                        one_way,
                    };
                    // A late keyframe makes its group a late one, as if the sender had said
                    // so: it may have left the sender in time and queued in the network.
                    let keyframe = f.header.flags.contains(FrameFlags::KEYFRAME);
                    let announced = self.late_groups.iter().any(|&(s, _)| s == stream);
                    if keyframe && !announced && self.lateness.late_by(times).is_some() {
                        note_late_group(&mut self.late_groups, stream, LATE_GROUP_ALLOWANCE);
                    }
                    let allowance = (self.late_groups.iter())
                        .find_map(|&(s, allowance)| (s == stream).then_some(allowance));
                    self.lateness.judge(times, allowance.unwrap_or(0), alone)
                };
                let seq = f.header.seq;
                self.counters.frames_late += u64::from(verdict != Verdict::OnTime);
                match verdict {
                    Verdict::OnTime | Verdict::LateGroup => {
                        // The late frames it references are worth outputting now.
                        if group.held.len() > 0 {
                            log::debug!(
                                "frame {seq} is on time: outputting {} late frames before it",
                                group.held.len()
                            );
                        }
                        group.frames.extend(group.held.release());
                    }
                    Verdict::Late => log::debug!("frame {seq} is late: held"),
                    Verdict::Drop => {
                        log::debug!("frame {seq} is late: dropped");
                        self.counters.frames_dropped += 1;
                        continue;
                    }
                    Verdict::Abandon => {
                        // Later frames of the group may reference it: they go too.
                        log::debug!(
                            "frame {seq} is too late: skipping the rest of group stream {stream}"
                        );
                        self.counters.frames_dropped += 1;
                        self.buffered -= group.discard_held(&mut self.counters);
                        group.finished = true;
                        group.abandoned = true;
                        self.counters.groups_abandoned += 1;
                        break;
                    }
                }
                let frame_bytes = f.data.len();
                group.bytes += frame_bytes;
                self.buffered += frame_bytes;
                let frame = ReceivedFrame {
                    header: f.header,
                    data: f.data,
                    arrival,
                    gap: false,
                    late: verdict != Verdict::OnTime,
                    catch_up_age,
                };
                if verdict == Verdict::Late {
                    group.held.hold(frame, frame_bytes);
                } else {
                    group.frames.push_back(frame);
                }
            }
        }
        Ok(())
    }
}
