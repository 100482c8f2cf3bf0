//! Writes the seed corpus: valid encodings from the crate's own encoders, so the fuzzer
//! starts past the preamble and header checks. Run from anywhere:
//!
//! ```sh
//! cargo +nightly run --manifest-path fuzz/Cargo.toml --example seeds
//! ```
//!
//! Files are named `seed-*` in fuzz/corpus/<target>/; `cargo fuzz cmin` then keeps the ones
//! that add coverage.

use gstquicnalu::protocol::{
    put_group_opening, put_preamble, put_varint, Command, FrameFlags, FrameHeader, StreamKind,
};
use quicnalu_fuzz::{Input, MAX_COMMAND, MAX_FRAME, MAX_TOKEN};
use std::path::{Path, PathBuf};

/// Limit byte for the large limit; `tiny(n)` asks for a limit of `n` bytes.
const LARGE: u8 = 0;
fn tiny(n: u8) -> u8 {
    0x80 | n
}

fn write(dir: &Path, name: &str, limit: u8, seed: u32, stream: &[u8]) {
    let input = Input {
        limit,
        seed,
        stream,
    };
    std::fs::write(dir.join(format!("seed-{name}")), input.to_bytes()).unwrap();
}

fn commands() -> Vec<(&'static str, Command)> {
    vec![
        (
            "hello",
            Command::Hello {
                version: 1,
                options: 1,
                token: b"token".to_vec(),
                latency: Some(200_000_000),
            },
        ),
        (
            "describe",
            Command::Describe {
                caps: "video/x-h265, stream-format=(string)byte-stream, alignment=(string)au"
                    .into(),
            },
        ),
        ("keyframe-request", Command::KeyframeRequest),
        (
            "receiver-report",
            Command::ReceiverReport {
                highest_seq: 1 << 20,
                received: 900,
                lost: 3,
            },
        ),
        ("ping", Command::Ping(0x1234_5678)),
        ("pong", Command::Pong(1 << 40)),
        (
            "end-of-stream",
            Command::EndOfStream {
                groups: 4,
                end_seq: 120,
            },
        ),
        (
            "goodbye",
            Command::Goodbye {
                code: 5,
                reason: "server full".into(),
            },
        ),
        (
            "application",
            Command::Application {
                before_seq: None,
                structure: "zoom, level=(int)3;".into(),
            },
        ),
        (
            "application-pinned",
            Command::Application {
                before_seq: Some(41),
                structure: "mark, at=(string)\u{e9}t\u{e9};".into(),
            },
        ),
        ("latency-budget", Command::LatencyBudget(200_000_000)),
        (
            "join",
            Command::Join {
                live_seq: 150,
                sender_time: (1 << 62) - 1,
            },
        ),
        ("unknown", Command::Unknown(0x3f)),
    ]
}

fn control(cmds: &[Command]) -> Vec<u8> {
    let mut wire = Vec::new();
    put_preamble(&mut wire, StreamKind::Control);
    for c in cmds {
        c.encode(&mut wire);
    }
    wire
}

fn command_seeds(dir: &Path) {
    write(dir, "preamble", LARGE, 7, &control(&[]));
    let all = commands();
    for (i, (name, c)) in all.iter().enumerate() {
        // Spread the chunk seeds over the read sizes (their low three bits).
        write(
            dir,
            name,
            LARGE,
            i as u32,
            &control(std::slice::from_ref(c)),
        );
    }
    let every: Vec<Command> = all.into_iter().map(|(_, c)| c).collect();
    for seed in 0..8 {
        write(dir, &format!("all-{seed}"), LARGE, seed, &control(&every));
    }
    // At the limits: a payload of exactly MAX_COMMAND, the longest token, a tiny limit.
    let header = 1 + 2; // type and a 2-byte length varint
    let caps = "c".repeat(MAX_COMMAND as usize);
    let mut wire = control(&[]);
    put_varint(&mut wire, 0x02);
    put_varint(&mut wire, caps.len() as u64);
    wire.extend_from_slice(caps.as_bytes());
    assert_eq!(wire.len(), 6 + header + MAX_COMMAND as usize);
    write(dir, "describe-at-limit", LARGE, 6, &wire);
    let hello = Command::Hello {
        version: 1,
        options: 0,
        token: vec![0xa5; MAX_TOKEN],
        latency: None,
    };
    write(dir, "hello-longest-token", LARGE, 5, &control(&[hello]));
    let goodbye = Command::Goodbye {
        code: 1,
        reason: "0123456789abcde".into(),
    };
    write(dir, "goodbye-tiny-limit", tiny(16), 3, &control(&[goodbye]));
}

/// A group stream of frames `(flags, pts/dts/duration, len)` from `first_seq`.
fn group(first_seq: u64, frames: &[(FrameFlags, [Option<u64>; 3], usize)]) -> Vec<u8> {
    let mut wire = Vec::new();
    put_group_opening(&mut wire, first_seq);
    for (i, &(flags, [pts, dts, duration], len)) in frames.iter().enumerate() {
        FrameHeader {
            seq: first_seq + i as u64,
            flags,
            pts,
            dts,
            duration,
            send_time: 1_000_000_000 + i as u64,
            len: len as u64,
        }
        .encode(&mut wire);
        // An Annex B start code and NAL header, then filler.
        let mut au = vec![0, 0, 0, 1, 0x26, 0x01];
        au.resize(len, i as u8);
        au.truncate(len);
        wire.extend_from_slice(&au);
    }
    wire
}

fn group_seeds(dir: &Path) {
    let key = FrameFlags::KEYFRAME;
    let plain = FrameFlags::default();
    let all_times = [Some(0), Some(1 << 33), Some(33_333_333)];
    let no_times = [None; 3];
    write(dir, "one-key", LARGE, 0, &group(0, &[(key, no_times, 1)]));
    let mixed = [
        (
            FrameFlags(key.0 | FrameFlags::HEADER.0 | FrameFlags::DISCONT.0),
            all_times,
            300,
        ),
        (plain, [Some(66_666_666), Some(33_333_333), None], 40),
        (FrameFlags::SHED, no_times, 0),
        (plain, [None, Some(99_999_999), None], 2000),
    ];
    for seed in 0..8 {
        write(
            dir,
            &format!("mixed-{seed}"),
            LARGE,
            seed,
            &group(1 << 20, &mixed),
        );
    }
    let frame = (key, all_times, MAX_FRAME as usize);
    write(dir, "frame-at-limit", LARGE, 7, &group(3, &[frame]));
    let frames = [(key, no_times, 127), (plain, no_times, 1)];
    write(dir, "frame-at-tiny-limit", tiny(127), 4, &group(9, &frames));
    let last = (1u64 << 62) - 2;
    write(
        dir,
        "seq-near-max",
        LARGE,
        2,
        &group(last, &[(key, no_times, 5), (plain, no_times, 5)]),
    );
}

fn header_seeds(dir: &Path) {
    let mut n = 0;
    for options in 0..8u64 {
        for (flags, len) in [
            (FrameFlags::KEYFRAME.0, 1000),
            (FrameFlags::SHED.0, 0),
            (0x30, 1),
        ] {
            let has = |bit: FrameFlags| options & (bit.0 >> 1) != 0;
            let mut wire = Vec::new();
            FrameHeader {
                seq: n * 1000,
                flags: FrameFlags(flags),
                pts: has(FrameFlags::HAS_PTS).then_some(1 << 35),
                dts: has(FrameFlags::HAS_DTS).then_some(1 << 20),
                duration: has(FrameFlags::HAS_DURATION).then_some(40),
                send_time: 1 << 50,
                len,
            }
            .encode(&mut wire);
            let mut input = vec![if n % 2 == 0 { LARGE } else { tiny(127) }];
            input.extend_from_slice(&wire);
            std::fs::write(dir.join(format!("seed-header-{n}")), input).unwrap();
            n += 1;
        }
    }
}

fn main() {
    let corpus = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("corpus");
    for target in ["command_stream", "group_stream", "frame_header"] {
        let dir = corpus.join(target);
        std::fs::create_dir_all(&dir).unwrap();
        match target {
            "command_stream" => command_seeds(&dir),
            "group_stream" => group_seeds(&dir),
            _ => header_seeds(&dir),
        }
        println!("{}", dir.display());
    }
}
