//! `FrameHeader::decode` alone, input `[limit] [header bytes ...]`.
//!
//! Invariants: an accepted header obeys the flag rules (SHED and END records have no
//! length, END no other flag) and the limit and re-encodes to at
//! most the bytes it came from, which decode to it again; and a prefix of the input decodes
//! to "incomplete" or to the whole input's own error. `GroupDecoder` depends on that last
//! one: it retries a header from its first byte as more bytes arrive.

#![no_main]

use gstquicnalu::protocol::{Error, FrameFlags, FrameHeader, Reader};
use libfuzzer_sys::fuzz_target;
use quicnalu_fuzz::{limit, MAX_FRAME};

/// Seven 8-byte varints: seq, flags, pts, dts, duration, send time, length.
const LONGEST_HEADER: usize = 7 * 8;

fn decode(bytes: &[u8], max: u64) -> (Result<FrameHeader, Error>, usize) {
    let mut r = Reader::new(bytes);
    let result = FrameHeader::decode(&mut r, max);
    (result, r.position())
}

fuzz_target!(|data: &[u8]| {
    let Some((&limit_byte, bytes)) = data.split_first() else {
        return;
    };
    let max = limit(limit_byte, MAX_FRAME);
    let (result, used) = decode(bytes, max);
    match &result {
        Ok(h) => {
            assert!(used <= LONGEST_HEADER);
            assert!(h.len <= max, "length {} over the limit {max}", h.len);
            let (shed, end) = (
                h.flags.contains(FrameFlags::SHED),
                h.flags.contains(FrameFlags::END),
            );
            assert_eq!(h.len == 0, shed || end);
            assert!(!(shed && h.flags.contains(FrameFlags::KEYFRAME)));
            // END is a group's end record: no other flag.
            assert!(
                !end || h.flags == FrameFlags::END,
                "END with {:#x}",
                h.flags.0
            );
            assert_eq!(h.flags.0 & !0xff, 0, "unknown flags accepted");
            assert_eq!(h.pts.is_some(), h.flags.contains(FrameFlags::HAS_PTS));
            assert_eq!(h.dts.is_some(), h.flags.contains(FrameFlags::HAS_DTS));
            assert_eq!(
                h.duration.is_some(),
                h.flags.contains(FrameFlags::HAS_DURATION)
            );
            let mut wire = Vec::new();
            h.encode(&mut wire);
            assert!(
                wire.len() <= used,
                "re-encoding grew {used} bytes to {}",
                wire.len()
            );
            assert_eq!(decode(&wire, max), (Ok(*h), wire.len()));
        }
        Err(Error::Incomplete) => assert!(bytes.len() < LONGEST_HEADER),
        Err(_) => {}
    }
    // A header that decodes needs all its bytes: any shorter prefix is incomplete.
    let judged = if result.is_ok() {
        used
    } else {
        bytes.len().min(LONGEST_HEADER)
    };
    for k in 0..judged {
        let (prefix, _) = decode(&bytes[..k], max);
        match (&prefix, &result) {
            (Err(Error::Incomplete), _) => {}
            (Err(e), Err(whole)) if e == whole => {}
            _ => panic!("prefix of {k} bytes: {prefix:?}, whole input: {result:?}"),
        }
    }
});
