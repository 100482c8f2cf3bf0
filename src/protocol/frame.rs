//! Group streams: one unidirectional stream per group of pictures, each frame a header and
//! the access unit's bytes.

use super::varint::{put_varint, Reader};
use super::{read_preamble, Error, StreamKind};

/// Bits of [`FrameHeader::flags`]. Unknown bits are a protocol violation in version 1.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct FrameFlags(pub u64);

impl FrameFlags {
    /// The access unit holds an IRAP picture; the first frame of every group has it.
    pub const KEYFRAME: FrameFlags = FrameFlags(0x01);
    pub const HAS_PTS: FrameFlags = FrameFlags(0x02);
    pub const HAS_DTS: FrameFlags = FrameFlags(0x04);
    pub const HAS_DURATION: FrameFlags = FrameFlags(0x08);
    /// The sender's input was discontinuous before this frame.
    pub const DISCONT: FrameFlags = FrameFlags(0x10);
    /// The access unit carries parameter sets (VPS/SPS/PPS).
    pub const HEADER: FrameFlags = FrameFlags(0x20);
    /// The sender shed this frame to keep within its latency budget: no access unit
    /// follows (length 0), and no frame still to come in the group references it.
    pub const SHED: FrameFlags = FrameFlags(0x40);
    /// Not a frame: the group ends here, and its FIN comes with these bytes. Its seq is the
    /// next frame's; it has length 0 and no other flag.
    pub const END: FrameFlags = FrameFlags(0x80);
    /// Bonded routes: this frame carries one part of its access unit, [`Part`]; the other
    /// parts travel over the receiver's other routes. A part may be empty.
    pub const PART: FrameFlags = FrameFlags(0x100);
    const ALL: u64 = 0x1ff;

    pub fn contains(self, other: FrameFlags) -> bool {
        self.0 & other.0 == other.0
    }

    pub fn set(&mut self, other: FrameFlags, on: bool) {
        if on {
            self.0 |= other.0;
        } else {
            self.0 &= !other.0;
        }
    }
}

/// What precedes every access unit on a group stream. Times are nanoseconds: `pts`, `dts`
/// and `duration` in the sender's running time, `send_time` on the sender's CLOCK_MONOTONIC.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct FrameHeader {
    pub seq: u64,
    pub flags: FrameFlags,
    pub pts: Option<u64>,
    pub dts: Option<u64>,
    pub duration: Option<u64>,
    pub send_time: u64,
    /// Bonded routes: which bytes of the access unit this frame carries (PART).
    pub part: Option<Part>,
    /// The bytes that follow: the access unit, or with `part` that part of it.
    pub len: u64,
}

/// Where a part (FrameFlags::PART) lies in its access unit: bytes `offset ..
/// offset + len` of `size`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Part {
    pub offset: u64,
    pub size: u64,
}

/// Longest possible encoded frame header (nine 8-byte varints).
const MAX_HEADER_LEN: usize = 9 * 8;
/// Longest possible group stream preamble plus group header.
const MAX_OPENING_LEN: usize = 4 + 3 * 8;

impl FrameHeader {
    pub fn encode(&self, out: &mut Vec<u8>) {
        let mut flags = self.flags;
        flags.set(FrameFlags::HAS_PTS, self.pts.is_some());
        flags.set(FrameFlags::HAS_DTS, self.dts.is_some());
        flags.set(FrameFlags::HAS_DURATION, self.duration.is_some());
        flags.set(FrameFlags::PART, self.part.is_some());
        put_varint(out, self.seq);
        put_varint(out, flags.0);
        for t in [self.pts, self.dts, self.duration].into_iter().flatten() {
            put_varint(out, t);
        }
        put_varint(out, self.send_time);
        if let Some(part) = self.part {
            put_varint(out, part.offset);
            put_varint(out, part.size);
        }
        put_varint(out, self.len);
    }

    pub fn decode(r: &mut Reader, max_len: u64) -> Result<FrameHeader, Error> {
        let seq = r.varint()?;
        let flags = FrameFlags(r.varint()?);
        if flags.0 & !FrameFlags::ALL != 0 {
            return Err(Error::Malformed("frame flags"));
        }
        let mut optional = |bit| -> Result<Option<u64>, Error> {
            if flags.contains(bit) {
                r.varint().map(Some)
            } else {
                Ok(None)
            }
        };
        let pts = optional(FrameFlags::HAS_PTS)?;
        let dts = optional(FrameFlags::HAS_DTS)?;
        let duration = optional(FrameFlags::HAS_DURATION)?;
        let send_time = r.varint()?;
        let part = if flags.contains(FrameFlags::PART) {
            Some(Part {
                offset: r.varint()?,
                size: r.varint()?,
            })
        } else {
            None
        };
        let len = r.varint()?;
        let end = flags.contains(FrameFlags::END);
        if end && (flags != FrameFlags::END || len != 0) {
            return Err(Error::Malformed("a group's end with a flag or a length"));
        }
        let shed = flags.contains(FrameFlags::SHED);
        if let Some(p) = part {
            if shed
                || p.size == 0
                || p.size > max_len
                || p.offset > p.size
                || len > p.size - p.offset
            {
                return Err(Error::Malformed("a part outside its access unit"));
            }
        } else if (len == 0) != (shed || end) {
            return Err(Error::Malformed("frame length (0 exactly when shed)"));
        }
        if flags.contains(FrameFlags::SHED) && flags.contains(FrameFlags::KEYFRAME) {
            return Err(Error::Malformed("a shed keyframe"));
        }
        if len > max_len {
            return Err(Error::TooLarge("frame", len, max_len));
        }
        Ok(FrameHeader {
            seq,
            flags,
            pts,
            dts,
            duration,
            send_time,
            part,
            len,
        })
    }
}

/// Appends the opening of a group stream: preamble and the sequence number of its first frame.
pub fn put_group_opening(out: &mut Vec<u8>, first_seq: u64) {
    super::put_preamble(out, StreamKind::Group);
    put_varint(out, first_seq);
}

/// Appends a group's end, the last bytes of its stream, which go with its FIN: `next_seq`
/// is the sequence number the next frame will have.
///
/// quiche 0.30 counts a stream as delivered once its data is acknowledged, even when a FIN
/// sent on its own afterwards was lost, and never resends that FIN: the receiver would hold
/// the stream, and one of its stream credits, for good. A FIN that rides on data is resent
/// with it.
pub fn put_group_end(out: &mut Vec<u8>, next_seq: u64) {
    FrameHeader {
        seq: next_seq,
        flags: FrameFlags::END,
        ..FrameHeader::default()
    }
    .encode(out);
}

/// One access unit received whole from a group stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupFrame {
    pub header: FrameHeader,
    pub data: Vec<u8>,
}

enum State {
    Opening,
    Header,
    /// The frame's header, its body buffer and how much of it has arrived. The buffer's
    /// length runs ahead of what arrived: room already zeroed for reads to land in.
    Body(FrameHeader, Vec<u8>, usize),
    /// After the group's end: only its FIN may follow.
    Ended,
}

/// How far [`GroupDecoder::body_space`] grows the room ahead of the bytes received.
const BODY_STEP: usize = 1 << 20;

/// Incremental decoder for one group stream. Feed it bytes as they arrive; it returns the
/// frames completed so far, or an error for anything a conforming sender cannot produce.
pub struct GroupDecoder {
    state: State,
    pending: Vec<u8>,
    next_seq: u64,
    first_seq: Option<u64>,
    frames: u64,
    max_frame: u64,
}

impl GroupDecoder {
    pub fn new(max_frame: u64) -> Self {
        GroupDecoder {
            state: State::Opening,
            pending: Vec::with_capacity(MAX_HEADER_LEN),
            next_seq: 0,
            first_seq: None,
            frames: 0,
            max_frame,
        }
    }

    /// Room to read the current frame's body into directly, saving a copy; None between
    /// frames, where [`GroupDecoder::push`] takes the header. Report what was written with
    /// [`GroupDecoder::filled`].
    pub fn body_space(&mut self) -> Option<&mut [u8]> {
        let State::Body(header, body, filled) = &mut self.state else {
            return None;
        };
        if body.len() == *filled {
            let grow = (header.len as usize - body.len()).min(BODY_STEP);
            body.resize(body.len() + grow, 0);
        }
        Some(&mut body[*filled..])
    }

    /// `n` bytes were written at the start of the last [`GroupDecoder::body_space`]; a
    /// completed frame is appended to `out`.
    pub fn filled(&mut self, n: usize, out: &mut Vec<GroupFrame>) {
        if let State::Body(header, body, filled) = &mut self.state {
            *filled = (*filled + n).min(body.len());
            if *filled as u64 == header.len {
                self.complete(out);
            }
        }
    }

    fn complete(&mut self, out: &mut Vec<GroupFrame>) {
        if let State::Body(header, data, _) = std::mem::replace(&mut self.state, State::Header) {
            out.push(GroupFrame { header, data });
        }
    }

    /// Decodes `data`, appending every frame it completes to `out`.
    pub fn push(&mut self, mut data: &[u8], out: &mut Vec<GroupFrame>) -> Result<(), Error> {
        while !data.is_empty() {
            if let State::Ended = self.state {
                return Err(Error::Malformed("bytes after a group's end"));
            }
            if let State::Body(header, body, filled) = &mut self.state {
                let need = header.len as usize - *filled;
                let take = need.min(data.len());
                let end = *filled + take;
                if body.len() < end {
                    body.resize(end, 0);
                }
                body[*filled..end].copy_from_slice(&data[..take]);
                *filled = end;
                data = &data[take..];
                if take == need {
                    self.complete(out);
                }
                continue;
            }
            let limit = match self.state {
                State::Opening => MAX_OPENING_LEN,
                _ => MAX_HEADER_LEN,
            };
            let old = self.pending.len();
            let take = (limit - old).min(data.len());
            self.pending.extend_from_slice(&data[..take]);
            let pending = std::mem::take(&mut self.pending);
            let mut r = Reader::new(&pending);
            let parsed = self.parse_header(&mut r);
            let used = r.position();
            self.pending = pending;
            match parsed {
                Ok(()) => {
                    data = &data[used - old..];
                    self.pending.clear();
                    // A shed frame has no body: it is complete with its header.
                    if matches!(&self.state, State::Body(h, ..) if h.len == 0) {
                        self.complete(out);
                    }
                }
                Err(Error::Incomplete) if self.pending.len() < limit => data = &data[take..],
                Err(Error::Incomplete) => return Err(Error::Malformed("header")),
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// Bytes held for the frame being received, room already zeroed for reads included.
    pub fn partial_bytes(&self) -> usize {
        match &self.state {
            State::Body(_, body, _) => body.len(),
            _ => 0,
        }
    }

    /// The sequence number of the group's first frame, once the opening is read.
    pub fn first_seq(&self) -> Option<u64> {
        self.first_seq
    }

    /// The sequence number the next frame must have; None before the opening is read.
    pub fn next_seq(&self) -> Option<u64> {
        self.first_seq.map(|_| self.next_seq)
    }

    /// Whether the decoder stands between frames: no frame half received.
    pub fn between_frames(&self) -> bool {
        matches!(self.state, State::Header | State::Ended) && self.pending.is_empty()
    }

    /// Call at FIN: the stream must end between frames, after at least one.
    pub fn finish(&self) -> Result<(), Error> {
        match self.state {
            State::Header | State::Ended if self.pending.is_empty() && self.frames > 0 => Ok(()),
            _ => Err(Error::Malformed("group stream ended inside a frame")),
        }
    }

    fn parse_header(&mut self, r: &mut Reader) -> Result<(), Error> {
        if let State::Opening = self.state {
            read_preamble(r, StreamKind::Group)?;
            self.next_seq = r.varint()?;
            self.first_seq = Some(self.next_seq);
            self.state = State::Header;
            return Ok(());
        }
        let header = FrameHeader::decode(r, self.max_frame)?;
        if header.seq != self.next_seq {
            return Err(Error::Malformed("frame sequence inside a group"));
        }
        if header.flags.contains(FrameFlags::END) {
            if self.frames == 0 {
                return Err(Error::Malformed("a group's end before its first frame"));
            }
            self.state = State::Ended;
            return Ok(());
        }
        if (self.frames == 0) != header.flags.contains(FrameFlags::KEYFRAME) {
            return Err(Error::Malformed(
                "group must start, and only start, at a keyframe",
            ));
        }
        self.next_seq = self.next_seq.wrapping_add(1);
        self.frames += 1;
        // Reserved whole (the length is within max_frame) so growing never moves the bytes;
        // pages are only touched, and so only cost memory, as the bytes arrive.
        let body = Vec::with_capacity(header.len as usize);
        self.state = State::Body(header, body, 0);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(seq: u64, key: bool, len: usize) -> (FrameHeader, Vec<u8>) {
        let mut flags = FrameFlags::default();
        flags.set(FrameFlags::KEYFRAME, key);
        let header = FrameHeader {
            seq,
            flags,
            pts: Some(seq * 1000),
            dts: None,
            duration: Some(33),
            send_time: 99,
            part: None,
            len: len as u64,
        };
        (header, vec![seq as u8; len])
    }

    #[test]
    fn parts_carry_their_place_and_stay_inside_their_access_unit() {
        let part = |offset, size, len| FrameHeader {
            seq: 7,
            flags: FrameFlags::KEYFRAME,
            part: Some(Part { offset, size }),
            len,
            ..FrameHeader::default()
        };
        for (offset, size, len) in [(0, 100, 60), (60, 100, 40), (100, 100, 0), (0, 5, 0)] {
            let mut wire = Vec::new();
            part(offset, size, len).encode(&mut wire);
            let back = FrameHeader::decode(&mut Reader::new(&wire), 1 << 20).unwrap();
            assert_eq!(back.part, Some(Part { offset, size }));
            assert!(back.flags.contains(FrameFlags::PART));
        }
        for (offset, size, len) in [(60, 100, 41), (101, 100, 0), (0, 0, 0), (0, 2 << 20, 1)] {
            let mut wire = Vec::new();
            part(offset, size, len).encode(&mut wire);
            let decoded = FrameHeader::decode(&mut Reader::new(&wire), 1 << 20);
            assert!(
                matches!(decoded, Err(Error::Malformed(_))),
                "{offset} {size} {len}"
            );
        }
        let mut shed = part(0, 10, 0);
        shed.flags = FrameFlags::SHED;
        let mut wire = Vec::new();
        shed.encode(&mut wire);
        assert!(FrameHeader::decode(&mut Reader::new(&wire), 1 << 20).is_err());
    }

    /// A header with `flags` and `len` (the rest default) is refused as malformed.
    fn assert_malformed(flags: FrameFlags, len: u64) {
        let mut wire = Vec::new();
        FrameHeader {
            flags,
            len,
            ..FrameHeader::default()
        }
        .encode(&mut wire);
        let err = FrameHeader::decode(&mut Reader::new(&wire), 1 << 20).unwrap_err();
        assert!(matches!(err, Error::Malformed(_)), "{err}");
    }

    /// A whole group stream: opening, then frames `seqs` (the first a keyframe) of
    /// `base + seq` bytes each.
    fn group(seqs: std::ops::Range<u64>, base: usize) -> (Vec<u8>, Vec<(FrameHeader, Vec<u8>)>) {
        let mut wire = Vec::new();
        put_group_opening(&mut wire, seqs.start);
        let first = seqs.start;
        let frames: Vec<_> = seqs
            .map(|s| frame(s, s == first, base + s as usize))
            .collect();
        for (h, d) in &frames {
            h.encode(&mut wire);
            wire.extend_from_slice(d);
        }
        (wire, frames)
    }

    #[test]
    fn group_round_trip_byte_by_byte() {
        let (wire, frames) = group(10..13, 100);
        let mut dec = GroupDecoder::new(1 << 20);
        let mut out = Vec::new();
        for b in &wire {
            dec.push(std::slice::from_ref(b), &mut out).unwrap();
        }
        dec.finish().unwrap();
        assert_eq!(out.len(), 3);
        for (got, (h, d)) in out.iter().zip(&frames) {
            let mut expect = *h;
            expect.flags.set(FrameFlags::HAS_PTS, true);
            expect.flags.set(FrameFlags::HAS_DURATION, true);
            assert_eq!(got.header, expect);
            assert_eq!(&got.data, d);
        }
    }

    /// Bodies read straight into the decoder (as the receiver does) match bodies pushed.
    #[test]
    fn body_space_reads_bodies_in_place() {
        let (wire, frames) = group(0..3, 3000);
        let mut dec = GroupDecoder::new(1 << 20);
        let mut out = Vec::new();
        let mut rest = &wire[..];
        while !rest.is_empty() {
            // Small reads, as from a stream that delivers a packet at a time.
            let n = match dec.body_space() {
                Some(space) => {
                    let n = space.len().min(rest.len()).min(1000);
                    space[..n].copy_from_slice(&rest[..n]);
                    dec.filled(n, &mut out);
                    n
                }
                None => {
                    let n = rest.len().min(64);
                    dec.push(&rest[..n], &mut out).unwrap();
                    n
                }
            };
            rest = &rest[n..];
        }
        dec.finish().unwrap();
        let got: Vec<&[u8]> = out.iter().map(|f| &f.data[..]).collect();
        let expect: Vec<&[u8]> = frames.iter().map(|(_, d)| &d[..]).collect();
        assert_eq!(got, expect);
    }

    /// What a frame being received holds is reported until the frame completes.
    #[test]
    fn partial_bytes_follow_the_frame_in_progress() {
        let (wire, _) = group(0..1, 3 << 20);
        let header_end = wire.len() - (3 << 20);
        let mut dec = GroupDecoder::new(4 << 20);
        let mut out = Vec::new();
        dec.push(&wire[..header_end], &mut out).unwrap();
        assert_eq!(dec.partial_bytes(), 0);
        // Room is zeroed a step ahead of the bytes: that counts.
        let space = dec.body_space().unwrap();
        assert_eq!(space.len(), BODY_STEP);
        space[..10].copy_from_slice(&wire[header_end..header_end + 10]);
        dec.filled(10, &mut out);
        assert_eq!(dec.partial_bytes(), BODY_STEP);
        dec.push(&wire[header_end + 10..], &mut out).unwrap();
        assert_eq!((out.len(), dec.partial_bytes()), (1, 0));
    }

    #[test]
    fn lying_length_is_refused() {
        let mut wire = Vec::new();
        put_group_opening(&mut wire, 0);
        let (mut h, _) = frame(0, true, 1);
        h.len = 4 << 30;
        h.encode(&mut wire);
        let mut dec = GroupDecoder::new(1 << 20);
        let err = dec.push(&wire, &mut Vec::new()).unwrap_err();
        assert!(matches!(err, Error::TooLarge("frame", _, _)), "{err}");
    }

    /// A shed frame is a header alone; the frames around it keep their bytes and order.
    #[test]
    fn shed_frames_have_no_body() {
        let mut wire = Vec::new();
        put_group_opening(&mut wire, 0);
        let (h0, d0) = frame(0, true, 7);
        h0.encode(&mut wire);
        wire.extend_from_slice(&d0);
        let shed = FrameHeader {
            seq: 1,
            flags: FrameFlags::SHED,
            ..FrameHeader::default()
        };
        shed.encode(&mut wire);
        let (h2, d2) = frame(2, false, 5);
        h2.encode(&mut wire);
        wire.extend_from_slice(&d2);
        let mut dec = GroupDecoder::new(1 << 20);
        let mut out = Vec::new();
        for b in &wire {
            dec.push(std::slice::from_ref(b), &mut out).unwrap();
        }
        dec.finish().unwrap();
        let got: Vec<(u64, bool, usize)> = out
            .iter()
            .map(|f| {
                let shed = f.header.flags.contains(FrameFlags::SHED);
                (f.header.seq, shed, f.data.len())
            })
            .collect();
        assert_eq!(got, vec![(0, false, 7), (1, true, 0), (2, false, 5)]);

        // Only a shed frame may be empty, and a shed frame must be.
        let shed_key = FrameFlags(FrameFlags::SHED.0 | FrameFlags::KEYFRAME.0);
        for (flags, len) in [
            (FrameFlags::default(), 0),
            (FrameFlags::SHED, 3),
            (shed_key, 0),
        ] {
            assert_malformed(flags, len);
        }
    }

    /// A group's end is no frame: the FIN may follow it, nothing else.
    #[test]
    fn a_group_ends_with_its_end_record() {
        let (mut wire, _) = group(5..8, 3);
        put_group_end(&mut wire, 8);
        let mut dec = GroupDecoder::new(1 << 20);
        let mut out = Vec::new();
        for b in &wire {
            dec.push(std::slice::from_ref(b), &mut out).unwrap();
        }
        assert_eq!(out.len(), 3);
        assert!(dec.between_frames());
        dec.finish().unwrap();
        assert!(dec.push(&[0], &mut out).is_err(), "a byte after the end");

        let (mut wrong_seq, _) = group(5..8, 3);
        put_group_end(&mut wrong_seq, 9);
        assert!(GroupDecoder::new(1 << 20)
            .push(&wrong_seq, &mut out)
            .is_err());

        let mut empty = Vec::new();
        put_group_opening(&mut empty, 5);
        put_group_end(&mut empty, 5);
        assert!(GroupDecoder::new(1 << 20).push(&empty, &mut out).is_err());

        let end_key = FrameFlags(FrameFlags::END.0 | FrameFlags::KEYFRAME.0);
        for (flags, len) in [(end_key, 0), (FrameFlags::END, 1)] {
            assert_malformed(flags, len);
        }
    }

    #[test]
    fn truncated_group_is_refused_at_fin() {
        let mut wire = Vec::new();
        put_group_opening(&mut wire, 0);
        let (h, d) = frame(0, true, 10);
        h.encode(&mut wire);
        wire.extend_from_slice(&d[..5]);
        let mut dec = GroupDecoder::new(1 << 20);
        dec.push(&wire, &mut Vec::new()).unwrap();
        assert!(dec.finish().is_err());
    }
}
