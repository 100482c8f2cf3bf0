//! Group-stream bytes into `GroupDecoder` three ways: one push; pushes in fuzzer-chosen
//! reads; and the receiver's way, bodies read in place through `body_space`/`filled`
//! (mixed with pushes, which the API also allows).
//!
//! Invariants: all three decode or refuse alike; a decoded frame holds exactly its length,
//! at most the limit, empty exactly when shed; sequence numbers run on from the group's
//! first, which alone is a keyframe; `finish` accepts only a stream that ended between
//! frames; the frames re-encode to a stream that decodes to them.

#![no_main]

use gstquicnalu::protocol::{put_group_opening, Error, FrameFlags, GroupDecoder, GroupFrame};
use libfuzzer_sys::fuzz_target;
use quicnalu_fuzz::{limit, Chunks, Input, MAX_FRAME};

#[derive(Debug, PartialEq)]
struct Outcome {
    frames: Vec<GroupFrame>,
    result: Result<(), Error>,
    /// The decoder's state at the end; only meaningful when no error came first.
    end: Option<End>,
}

#[derive(Debug, PartialEq)]
struct End {
    finish: Result<(), Error>,
    between_frames: bool,
    first_seq: Option<u64>,
    next_seq: Option<u64>,
}

enum Feed<'a> {
    Whole,
    Pushes(&'a mut Chunks),
    InPlace(&'a mut Chunks),
}

fn decode(max: u64, stream: &[u8], feed: Feed) -> Outcome {
    let mut dec = GroupDecoder::new(max);
    let mut frames = Vec::new();
    let result = match feed {
        Feed::Whole => dec.push(stream, &mut frames),
        Feed::Pushes(chunks) => pushes(&mut dec, stream, chunks, &mut frames),
        Feed::InPlace(chunks) => in_place(&mut dec, stream, chunks, &mut frames, max),
    };
    let end = result.is_ok().then(|| End {
        finish: dec.finish(),
        between_frames: dec.between_frames(),
        first_seq: dec.first_seq(),
        next_seq: dec.next_seq(),
    });
    Outcome {
        frames,
        result,
        end,
    }
}

fn pushes(
    dec: &mut GroupDecoder,
    mut rest: &[u8],
    chunks: &mut Chunks,
    frames: &mut Vec<GroupFrame>,
) -> Result<(), Error> {
    while !rest.is_empty() {
        let n = chunks.next_len().min(rest.len());
        dec.push(&rest[..n], frames)?;
        rest = &rest[n..];
    }
    Ok(())
}

/// As the receiver reads a group stream: headers pushed, bodies written into the frame.
fn in_place(
    dec: &mut GroupDecoder,
    mut rest: &[u8],
    chunks: &mut Chunks,
    frames: &mut Vec<GroupFrame>,
    max: u64,
) -> Result<(), Error> {
    while !rest.is_empty() {
        let n = chunks.next_len().min(rest.len());
        let push_body = chunks.coin() && chunks.coin();
        match dec.body_space() {
            Some(space) if !push_body => {
                assert!(!space.is_empty(), "no room while a body is incomplete");
                assert!(space.len() as u64 <= max, "room beyond the frame limit");
                let n = n.min(space.len());
                space[..n].copy_from_slice(&rest[..n]);
                dec.filled(n, frames);
                rest = &rest[n..];
            }
            _ => {
                dec.push(&rest[..n], frames)?;
                rest = &rest[n..];
            }
        }
    }
    Ok(())
}

fn check_frames(out: &Outcome, max: u64) {
    let Some(first) = out.frames.first() else {
        return;
    };
    let mut seq = first.header.seq;
    for (i, f) in out.frames.iter().enumerate() {
        let h = &f.header;
        assert_eq!(f.data.len() as u64, h.len, "frame {i} holds not its length");
        assert!(h.len <= max, "frame {i} of {} bytes over the limit", h.len);
        assert_eq!(h.len == 0, h.flags.contains(FrameFlags::SHED), "frame {i}");
        assert_eq!(h.flags.contains(FrameFlags::KEYFRAME), i == 0, "frame {i}");
        assert_eq!(h.flags.0 & !0x7f, 0, "unknown flags on frame {i}");
        assert_eq!(h.pts.is_some(), h.flags.contains(FrameFlags::HAS_PTS));
        assert_eq!(h.dts.is_some(), h.flags.contains(FrameFlags::HAS_DTS));
        assert_eq!(
            h.duration.is_some(),
            h.flags.contains(FrameFlags::HAS_DURATION)
        );
        assert_eq!(h.seq, seq, "frame {i} out of sequence");
        seq = seq.wrapping_add(1);
    }
    if let Some(end) = &out.end {
        assert_eq!(end.first_seq, Some(first.header.seq));
        // A frame whose header is in but not all its body already counts.
        let expect = if end.between_frames {
            seq
        } else {
            seq.wrapping_add(1)
        };
        assert!(end.next_seq == Some(seq) || end.next_seq == Some(expect));
    }
}

fuzz_target!(|data: &[u8]| {
    let Some(input) = Input::parse(data) else {
        return;
    };
    let max = limit(input.limit, MAX_FRAME);
    let whole = decode(max, input.stream, Feed::Whole);
    let pushed = decode(
        max,
        input.stream,
        Feed::Pushes(&mut Chunks::new(input.seed)),
    );
    assert_eq!(whole, pushed, "the reads changed the outcome");
    let in_place = decode(
        max,
        input.stream,
        Feed::InPlace(&mut Chunks::new(input.seed)),
    );
    assert_eq!(
        whole, in_place,
        "reading bodies in place changed the outcome"
    );
    assert_ne!(
        whole.result,
        Err(Error::Incomplete),
        "a partial frame is not an error"
    );
    check_frames(&whole, max);

    let Some(end) = &whole.end else {
        return;
    };
    if end.finish.is_ok() {
        assert!(end.between_frames && !whole.frames.is_empty());
    }
    if let Some(first_seq) = end.first_seq {
        let mut again = Vec::new();
        put_group_opening(&mut again, first_seq);
        for f in &whole.frames {
            f.header.encode(&mut again);
            again.extend_from_slice(&f.data);
        }
        let re = decode(max, &again, Feed::Whole);
        assert_eq!(
            re.frames, whole.frames,
            "re-encoded frames decode differently"
        );
        assert_eq!(
            re.end.map(|e| e.finish.is_ok()),
            Some(!whole.frames.is_empty())
        );
        if end.finish.is_ok() {
            // Shortest varints: never longer than the stream that came in whole.
            assert!(again.len() <= input.stream.len());
        }
    }
});
