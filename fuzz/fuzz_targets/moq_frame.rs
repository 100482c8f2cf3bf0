//! A MoQ media frame as a hostile relay delivers it, into `hang::container::Frame::decode`
//! as the subscriber calls it (src/transport/moq/subscribe.rs): the whole frame's bytes.
//!
//! Invariants: decoding never panics; it fails exactly when the input does not start with
//! a whole QUIC varint (every varint, at most 2^62 - 1, is a timestamp); a decoded frame's payload is exactly
//! the bytes after the varint, its timestamp in µs is the varint's value, and it re-encodes
//! to at most the input's length, to bytes that decode to the same frame.

#![no_main]

use bytes::Bytes;
use hang::container::Frame;
use libfuzzer_sys::fuzz_target;

/// A QUIC varint's length from its first byte.
fn varint_len(first: u8) -> usize {
    1 << (first >> 6)
}

/// The value of the varint at the start of `bytes`, if whole.
fn varint(bytes: &[u8]) -> Option<u64> {
    let n = varint_len(*bytes.first()?);
    let raw = bytes.get(..n)?;
    let mut v = u64::from(raw[0] & 0x3f);
    for &b in &raw[1..] {
        v = (v << 8) | u64::from(b);
    }
    Some(v)
}

fuzz_target!(|data: &[u8]| {
    let frame = match Frame::decode(Bytes::copy_from_slice(data)) {
        Ok(frame) => frame,
        Err(e) => {
            if let Some(v) = varint(data) {
                panic!("refused a frame at {v} µs: {e}");
            }
            return;
        }
    };
    let n = varint_len(data[0]);
    let value = varint(data).expect("a decoded frame starts with a varint");
    assert_eq!(frame.payload, data[n..], "payload is the rest");
    assert_eq!(frame.timestamp.as_micros(), u128::from(value));

    let mut wire = Vec::new();
    frame.encode(&mut wire).expect("a decoded frame encodes");
    assert!(wire.len() <= data.len(), "re-encoding grew the frame");
    let again = Frame::decode(Bytes::from(wire)).expect("re-encoded frame decodes");
    assert_eq!(again.timestamp, frame.timestamp);
    assert_eq!(again.payload, frame.payload);
});
