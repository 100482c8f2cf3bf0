//! One route of a receiver with several (quicnalusrc `paths`), as the sender sees it: its
//! rate for bonding, its parts of access units, repairs, and its receiver's stats.

use super::{Receiver, LIVE_WITHIN, REPAIR_PART};
use crate::protocol::{Command, FrameFlags, FrameHeader, Part};
use crate::sender::budget::Deadlines;
use crate::sender::join::CachedFrame;
use crate::sender::queue::ChunkData;
use crate::sender::Streams;
use crate::stats::{ReceiverStats, RouteStats};
use std::sync::Arc;
use std::time::Instant;

impl<C: Streams> Receiver<C> {
    /// What this route carries, bytes per second, for bonding: the estimate once there is
    /// one, else what quiche measured delivered (0: nothing yet).
    pub(in crate::sender) fn route_rate(&self) -> f64 {
        let measured = self.conn.path().map_or(0.0, |p| p.delivery_rate as f64);
        self.estimator.current().map_or(measured, |bits| bits / 8.0)
    }

    /// Bonded: bytes `range` of frame `header` again (`whole`: the access unit its parts
    /// were cut from), on the control stream in REPAIR parts small enough for any
    /// receiver's command limit.
    pub(in crate::sender) fn queue_repair(
        &mut self,
        header: &FrameHeader,
        whole: &[u8],
        range: std::ops::Range<usize>,
    ) {
        let size = whole.len() as u64;
        for offset in range.clone().step_by(REPAIR_PART) {
            let end = (offset + REPAIR_PART).min(range.end);
            let mut part = *header;
            part.part = Some(Part {
                offset: offset as u64,
                size,
            });
            part.len = (end - offset) as u64;
            let data = whole[offset..end].to_vec();
            self.queue_command(&Command::Repair { header: part, data });
        }
    }

    /// Stats for one route of several: its own part.
    pub(in crate::sender) fn route_stats(&self, now_quiet: bool) -> RouteStats {
        RouteStats {
            index: self.route.map_or(0, |r| r.index),
            peer: self.peer,
            up: self.described() && !now_quiet && !self.conn.closing(),
            connection: self.conn.stats(),
        }
    }

    /// Bonded: queues bytes `offset .. offset + len` of `whole` (the access unit as this
    /// receiver gets it: with parameter sets in front when `prefixed`) as frame `f`'s part
    /// on this route. An empty part still goes, as a header: the receiver's route then
    /// knows the frame came elsewhere.
    pub(in crate::sender) fn take_part(
        &mut self,
        f: &CachedFrame,
        whole: &Arc<[u8]>,
        (offset, len): (usize, usize),
        prefixed: bool,
        queued: Instant,
    ) {
        let seq = f.header.seq;
        if f.frame.keyframe {
            self.open_group(seq, self.budget.is_some());
        }
        let Some(stream) = self.group else {
            if self.groups_opened > 0 {
                self.frames_dropped += 1;
            }
            return;
        };
        let mut header = f.header;
        header.len = len as u64;
        header.part = Some(Part {
            offset: offset as u64,
            size: whole.len() as u64,
        });
        header
            .flags
            .set(FrameFlags::HEADER, f.frame.parameter_sets || prefixed);
        let mut encoded = Vec::with_capacity(40);
        header.encode(&mut encoded);
        let expires = self
            .budget
            .map(|b| Deadlines::new(queued, b, f.frame.drop_cost).expires);
        self.has_parameter_sets |= f.frame.parameter_sets || prefixed;
        self.queue(stream, ChunkData::Owned(encoded), false, expires);
        if len > 0 {
            let body = ChunkData::Part(whole.clone(), offset..offset + len);
            self.queue(stream, body, false, expires);
        }
    }

    /// Whether an IRAP would need the parameter sets in front for this receiver (see
    /// queue_frame).
    pub(in crate::sender) fn lacks_parameter_sets(&self) -> bool {
        !self.has_parameter_sets
    }
}

/// One entry per receiver: the routes of one (quicnalusrc `paths`) as one, with each
/// route's own state in `routes`, its counters summed and its connection the first route's.
pub(in crate::sender) fn grouped_stats<'a, C: Streams + 'a>(
    receivers: impl Iterator<Item = &'a Receiver<C>>,
    now: Instant,
) -> Vec<ReceiverStats> {
    let mut out: Vec<ReceiverStats> = Vec::new();
    let mut routes: Vec<&Receiver<C>> = Vec::new();
    for r in receivers {
        if r.route.is_some() && r.admitted() {
            routes.push(r);
        } else {
            out.push(r.stats());
        }
    }
    routes.sort_by_key(|r| (r.leader, r.route.map_or(0, |x| x.index)));
    for group in routes.chunk_by(|a, b| a.leader == b.leader) {
        let mut total = group[0].stats();
        total.id = group[0].leader;
        for r in &group[1..] {
            let s = r.stats();
            total.frames_sent += s.frames_sent;
            total.frames_dropped += s.frames_dropped;
            total.frames_shed += s.frames_shed;
            total.groups_reset += s.groups_reset;
            total.groups_late += s.groups_late;
            total.path_rate += s.path_rate;
            total.keyframe_requests += s.keyframe_requests;
            total.queued_bytes += s.queued_bytes;
        }
        total.routes = group
            .iter()
            .map(|r| r.route_stats(now.saturating_duration_since(r.last_rx) > LIVE_WITHIN))
            .collect();
        out.push(total);
    }
    out
}
