//! What waits for one stream of one receiver, and how it is written and shed.

use super::Streams;
use crate::media::frame::Frame;
use crate::media::h265::DropCost;
use crate::protocol::{FrameFlags, FrameHeader};
use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Bytes waiting to be written to one stream.
pub(super) struct Chunk {
    pub data: ChunkData,
    pub offset: usize,
    pub fin: bool,
    /// For frame bytes with a deadline: when the frame is too late to be worth sending.
    pub expires: Option<Instant>,
    /// On a frame's header chunk (its body is the next chunk), when it has a deadline.
    pub shed: Option<Sheddable>,
    /// On a cached frame's header chunk, sent to a joiner to catch up: while one is unsent
    /// its group does not expire (the live frames behind it wait by design).
    pub catch_up: bool,
}

impl Chunk {
    /// Bytes with nothing to shed or expire.
    pub fn plain(data: ChunkData, fin: bool, expires: Option<Instant>) -> Chunk {
        Chunk {
            data,
            offset: 0,
            fin,
            expires,
            shed: None,
            catch_up: false,
        }
    }
}

/// What shedding a queued frame needs to know.
pub(super) struct Sheddable {
    pub seq: u64,
    pub temporal_id: u8,
    pub cost: DropCost,
    /// When it is shed if still unsent (never for DropCost::Group: its group expires).
    pub by: Instant,
}

/// What replaces a shed frame: its header with SHED and no access unit, so the sequence
/// numbers the receiver checks stay whole.
pub(super) fn shed_marker(seq: u64) -> Vec<u8> {
    let mut out = Vec::with_capacity(8);
    FrameHeader {
        seq,
        flags: FrameFlags::SHED,
        ..FrameHeader::default()
    }
    .encode(&mut out);
    out
}

pub(super) enum ChunkData {
    Owned(Vec<u8>),
    Shared(Arc<[u8]>),
    Frame(Arc<Frame>),
    /// Bonded routes: this route's part of an access unit.
    Part(Arc<[u8]>, std::ops::Range<usize>),
}

impl ChunkData {
    pub fn bytes(&self) -> &[u8] {
        match self {
            ChunkData::Owned(v) => v,
            ChunkData::Shared(v) => v,
            ChunkData::Frame(f) => f.data.as_ref().as_ref(),
            ChunkData::Part(whole, range) => &whole[range.clone()],
        }
    }
}

/// What waits for one stream, oldest first. quiche takes at most about a congestion
/// window of it, so under a slow network the backlog, and its age, is visible here.
pub(super) struct StreamOut {
    pub stream: u64,
    pub chunks: VecDeque<Chunk>,
    /// Bytes of `chunks` not yet written.
    queued: usize,
    /// Frames written whole so far.
    pub frames_written: u64,
    /// How far past their deadlines its frames may still go (rescue.rs); zero for most.
    pub allowance: Duration,
}

impl StreamOut {
    pub fn new(stream: u64) -> Self {
        StreamOut {
            stream,
            chunks: VecDeque::new(),
            queued: 0,
            frames_written: 0,
            allowance: Duration::ZERO,
        }
    }

    pub fn bytes(&self) -> usize {
        self.queued
    }

    pub fn push(&mut self, chunk: Chunk) {
        self.queued += chunk.data.bytes().len();
        self.chunks.push_back(chunk);
    }

    /// Its last chunk carries the FIN: written whole, the group went out whole.
    pub fn ends(&self) -> bool {
        self.chunks.back().is_some_and(|c| c.fin)
    }

    /// Drops everything queued; returns how many frames that was.
    pub fn clear(&mut self) -> u64 {
        let frames = self
            .chunks
            .iter()
            .filter(|c| matches!(c.data, ChunkData::Frame(_) | ChunkData::Part(..)))
            .count();
        self.chunks.clear();
        self.queued = 0;
        frames as u64
    }

    /// Writes chunks until the connection takes no more, or `allowance` bytes (less what
    /// it takes); Ok(true) once all are written.
    pub fn write(
        &mut self,
        conn: &mut impl Streams,
        out_bytes: &mut usize,
        allowance: &mut usize,
        frames_sent: &mut u64,
    ) -> Result<bool, quiche::Error> {
        while let Some(chunk) = self.chunks.front_mut() {
            let rest = &chunk.data.bytes()[chunk.offset..];
            if *allowance == 0 && !rest.is_empty() {
                return Ok(false);
            }
            let bytes = &rest[..rest.len().min(*allowance)];
            let whole = bytes.len() == rest.len();
            match conn.send(self.stream, bytes, chunk.fin && whole) {
                Ok(n) => {
                    *out_bytes -= n;
                    self.queued -= n;
                    *allowance -= n;
                    if n < bytes.len() || !whole {
                        chunk.offset += n;
                        return Ok(false);
                    }
                    if let Some(Chunk {
                        data: ChunkData::Frame(_) | ChunkData::Part(..),
                        ..
                    }) = self.chunks.pop_front()
                    {
                        *frames_sent += 1;
                        self.frames_written += 1;
                    }
                }
                Err(quiche::Error::Done) | Err(quiche::Error::StreamLimit) => return Ok(false),
                Err(e) => return Err(e),
            }
        }
        Ok(true)
    }

    /// Replaces by shed markers the unsent frames that are due to be shed, and every later
    /// frame of a sub-layer cut off with one (`cut`: the lowest TemporalId cut off from
    /// here to the end of the group). Returns how many frames it shed.
    ///
    /// A frame is due once it could no longer arrive (a round trip, `ahead`, after being
    /// written) by its share of the budget; the stream's next frame, which is written now
    /// if the path lets it, once that share has passed. (Measured in the shedding test:
    /// counting the round trip for queued frames output 181 of 300 frames against 34 to
    /// 56; for the next frame it would shed every cheap frame on a path whose round trip
    /// is half the budget.)
    pub fn shed(
        &mut self,
        now: Instant,
        ahead: Duration,
        cut: &mut Option<u8>,
        out_bytes: &mut usize,
    ) -> u64 {
        let mut shed = 0;
        let mut i = 0;
        while i < self.chunks.len() {
            let chunk = &self.chunks[i];
            let Some(s) = chunk.shed.as_ref().filter(|_| chunk.offset == 0) else {
                i += 1;
                continue;
            };
            let cut_off = cut.is_some_and(|layer| s.temporal_id >= layer);
            let at = if i == 0 { now } else { now + ahead };
            if !cut_off && (s.cost == DropCost::Group || s.by > at) {
                i += 1;
                continue;
            }
            if let DropCost::Layers { from } = s.cost {
                *cut = Some(cut.map_or(from, |layer| layer.min(from)));
            }
            let marker = shed_marker(s.seq);
            let mut removed = chunk.data.bytes().len();
            if let Some(body) = self.chunks.remove(i + 1) {
                removed += body.data.bytes().len();
            }
            *out_bytes = *out_bytes + marker.len() - removed;
            self.queued = self.queued + marker.len() - removed;
            self.chunks[i] = Chunk::plain(ChunkData::Owned(marker), false, None);
            shed += 1;
            i += 1;
        }
        shed
    }

    /// When its oldest frame with a deadline expires (past its allowance), unless a
    /// joiner's catch-up frame comes first (those come before any frame with a deadline,
    /// and hold their group).
    pub fn expires(&self) -> Option<Instant> {
        let catching_up = self
            .chunks
            .iter()
            .take_while(|c| c.expires.is_none())
            .any(|c| c.catch_up);
        if catching_up {
            return None;
        }
        self.chunks
            .iter()
            .find_map(|c| c.expires)
            .map(|t| t + self.allowance)
    }
}
