//! Property tests: the wire decoders accept what the encoders write, in any chunking, and
//! refuse random or mutated input with an error, never a panic or unbounded memory.

use gstquicnalu::protocol::{
    put_group_opening, put_preamble, Command, CommandDecoder, FrameFlags, FrameHeader,
    GroupDecoder, Route, StreamKind,
};
use proptest::prelude::*;

const MAX_FRAME: u64 = 1 << 16;
const MAX_COMMAND: u64 = 4096;

fn command() -> impl Strategy<Value = Command> {
    prop_oneof![
        (
            any::<u32>(),
            any::<u32>(),
            prop::collection::vec(any::<u8>(), 0..64),
            // 0 is no preference, the same as none: it reads back as None.
            prop::option::of(1..(1u64 << 62)),
            prop::option::of((1..(1u64 << 62), 0..(1u64 << 62))),
        )
            .prop_map(|(version, options, token, latency, route)| Command::Hello {
                version: version.into(),
                options: options.into(),
                token,
                latency,
                route: route.map(|(receiver, index)| Route { receiver, index }),
            }),
        "[ -~]{0,100}".prop_map(|caps| Command::Describe { caps }),
        Just(Command::KeyframeRequest),
        (any::<u32>(), any::<u32>(), any::<u32>()).prop_map(|(a, b, c)| {
            Command::ReceiverReport {
                highest_seq: a.into(),
                received: b.into(),
                lost: c.into(),
            }
        }),
        any::<u32>().prop_map(|n| Command::Ping(n.into())),
        any::<u32>().prop_map(|n| Command::Pong(n.into())),
        (any::<u32>(), any::<u32>()).prop_map(|(n, e)| Command::EndOfStream {
            groups: n.into(),
            end_seq: e.into()
        }),
        (any::<u8>(), "\\PC{0,40}").prop_map(|(code, reason)| Command::Goodbye {
            code: code.into(),
            reason
        }),
        (any::<Option<u32>>(), "\\PC{0,80}").prop_map(|(seq, structure)| {
            Command::Application {
                before_seq: seq.map(u64::from),
                structure,
            }
        }),
        (any::<u32>(), 0..(1u64 << 62)).prop_map(|(seq, t)| Command::Join {
            live_seq: seq.into(),
            sender_time: t,
        }),
    ]
}

/// A valid group stream: opening plus `frames` frames, first one a keyframe.
fn group_stream(first_seq: u64, sizes: &[usize]) -> (Vec<u8>, Vec<(FrameHeader, Vec<u8>)>) {
    let mut wire = Vec::new();
    put_group_opening(&mut wire, first_seq);
    let mut frames = Vec::new();
    for (i, &len) in sizes.iter().enumerate() {
        let mut flags = FrameFlags::default();
        flags.set(FrameFlags::KEYFRAME, i == 0);
        let header = FrameHeader {
            seq: first_seq + i as u64,
            flags,
            pts: (i % 2 == 0).then_some(i as u64 * 33_333_333),
            dts: Some(i as u64 * 33_333_333),
            duration: None,
            send_time: 42,
            part: None,
            len: len as u64,
        };
        let data: Vec<u8> = (0..len).map(|b| (b * 7 + i) as u8).collect();
        header.encode(&mut wire);
        wire.extend_from_slice(&data);
        frames.push((header, data));
    }
    (wire, frames)
}

fn decode_group(wire: &[u8], chunk: usize) -> Result<Vec<(FrameHeader, Vec<u8>)>, String> {
    let mut dec = GroupDecoder::new(MAX_FRAME);
    let mut out = Vec::new();
    for piece in wire.chunks(chunk.max(1)) {
        dec.push(piece, &mut out).map_err(|e| e.to_string())?;
    }
    dec.finish().map_err(|e| e.to_string())?;
    Ok(out.into_iter().map(|f| (f.header, f.data)).collect())
}

fn decode_commands(wire: &[u8], chunk: usize) -> Result<Vec<Command>, String> {
    let mut dec = CommandDecoder::new(MAX_COMMAND);
    let mut out = Vec::new();
    for piece in wire.chunks(chunk.max(1)) {
        dec.push(piece, &mut out).map_err(|e| e.to_string())?;
    }
    Ok(out)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn commands_round_trip(cmds in prop::collection::vec(command(), 0..12), chunk in 1usize..64) {
        let mut wire = Vec::new();
        put_preamble(&mut wire, StreamKind::Control);
        for c in &cmds {
            c.encode(&mut wire);
        }
        prop_assert_eq!(decode_commands(&wire, chunk).unwrap(), cmds);
    }

    #[test]
    fn groups_round_trip(
        first in any::<u32>(),
        sizes in prop::collection::vec(1usize..3000, 1..8),
        chunk in 1usize..5000,
    ) {
        let (wire, frames) = group_stream(first.into(), &sizes);
        let got = decode_group(&wire, chunk).unwrap();
        prop_assert_eq!(got.len(), frames.len());
        for ((gh, gd), (h, d)) in got.iter().zip(&frames) {
            prop_assert_eq!(gh.seq, h.seq);
            prop_assert_eq!(gh.pts, h.pts);
            prop_assert_eq!(gh.dts, h.dts);
            prop_assert_eq!(gd, d);
        }
    }

    #[test]
    fn random_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..512), chunk in 1usize..64) {
        let _ = decode_commands(&bytes, chunk);
        let _ = decode_group(&bytes, chunk);
        // Behind a valid preamble the body is what gets parsed.
        let mut control = Vec::new();
        put_preamble(&mut control, StreamKind::Control);
        control.extend_from_slice(&bytes);
        let _ = decode_commands(&control, chunk);
        let mut group = Vec::new();
        put_group_opening(&mut group, 0);
        group.extend_from_slice(&bytes);
        let _ = decode_group(&group, chunk);
    }

    #[test]
    fn mutated_streams_are_refused_or_decoded(
        cmds in prop::collection::vec(command(), 1..6),
        sizes in prop::collection::vec(1usize..500, 1..5),
        edits in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>(), 0u8..3), 1..6),
        chunk in 1usize..64,
    ) {
        let mut control = Vec::new();
        put_preamble(&mut control, StreamKind::Control);
        for c in &cmds {
            c.encode(&mut control);
        }
        let (group, _) = group_stream(7, &sizes);
        for mut wire in [control, group] {
            for (at, byte, kind) in &edits {
                let i = at.index(wire.len().max(1));
                match kind {
                    0 if i < wire.len() => wire[i] ^= byte | 1,
                    1 => wire.insert(i.min(wire.len()), *byte),
                    _ => wire.truncate(i),
                }
            }
            let _ = decode_commands(&wire, chunk);
            let _ = decode_group(&wire, chunk);
        }
    }

    #[test]
    fn lengths_above_the_limit_are_refused(len in (MAX_FRAME + 1)..(1u64 << 40)) {
        let mut wire = Vec::new();
        put_group_opening(&mut wire, 0);
        FrameHeader { seq: 0, flags: FrameFlags::KEYFRAME, len, ..Default::default() }
            .encode(&mut wire);
        let err = decode_group(&wire, 4096).unwrap_err();
        prop_assert!(err.contains("exceeds the limit"), "{}", err);
    }
}
