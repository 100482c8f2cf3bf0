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
use gstquicnalu::policy::knock::{self, KNOCK_LEN};
use gstquicnalu::net::tls::Fingerprint;
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

fn seed(dir: &Path, name: &str, bytes: &[u8]) {
    std::fs::write(dir.join(format!("seed-{name}")), bytes).unwrap();
}

/// `knock`: datagrams (`[0] [token length] [token] [datagram]`) and Doorman scripts (`[1]
/// [steps ...]`, steps as fuzz_targets/knock.rs reads them).
fn knock_seeds(dir: &Path) {
    let read = |token: &[u8], datagram: &[u8]| {
        let mut out = vec![0, token.len() as u8];
        out.extend_from_slice(token);
        out.extend_from_slice(datagram);
        out
    };
    let token: &[u8] = b"s3cret";
    seed(dir, "signed", &read(token, &knock::knock(Some(token))));
    seed(dir, "unsigned", &read(b"", &knock::knock(None)));
    seed(
        dir,
        "unsigned-under-token",
        &read(token, &knock::knock(None)),
    );
    // Token 0xff: the datagram is zero-padded to KNOCK_LEN.
    seed(dir, "padded", &read(&[0xff], &knock::knock(None)[..16]));
    seed(
        dir,
        "short",
        &read(b"", &knock::knock(None)[..KNOCK_LEN - 1]),
    );
    let mut quic = knock::knock(None);
    quic[0] = 0xc0;
    seed(dir, "quic", &read(b"", &quic));

    let v4 = |ip: [u8; 4], port: u16| {
        let mut a = vec![0x80];
        a.extend_from_slice(&ip);
        a.extend_from_slice(&port.to_le_bytes());
        a
    };
    let v6 = |last: u8, port: u16| {
        let mut a = vec![
            0x81, 0x20, 0x01, 0x0d, 0xb8, 0, 1, 0, 2, 0, 0, 0, 0, 0, 0, 0, last,
        ];
        a.extend_from_slice(&port.to_le_bytes());
        a
    };
    let step = |ms: u16| {
        let mut s = vec![0];
        s.extend_from_slice(&ms.to_le_bytes());
        s
    };
    let script = |steps: &[Vec<u8>]| {
        let mut out = vec![1];
        for s in steps {
            out.extend_from_slice(s);
        }
        out
    };
    let (knock, next, failed, connected) = (1u8, 2u8, 3u8, 4u8);
    let same = |op: u8, index: u8| vec![op, index];
    let with = |op: u8, addr: Vec<u8>| [vec![op], addr].concat();
    // Knock, answered, the call-back fails, held off, knocks again later, connects.
    seed(
        dir,
        "call-back",
        &script(&[
            with(knock, v4([192, 0, 2, 7], 4000)),
            vec![next],
            step(2000),
            same(failed, 0),
            step(500),
            same(knock, 0),
            vec![next],
            step(600),
            same(knock, 0),
            vec![next],
            same(connected, 0),
            same(knock, 0),
            vec![next],
        ]),
    );
    // A stray changing ports in one /64 while a caller knocks; a stale knock.
    let mut steps = Vec::new();
    for i in 0..5 {
        steps.push(with(knock, v6(i, 9)));
        steps.push(vec![next]);
        steps.push(same(failed, i));
    }
    steps.push(with(knock, v4([198, 51, 100, 1], 5000)));
    steps.push(vec![next]);
    steps.push(same(knock, 5));
    steps.push(step(3000));
    steps.push(vec![next]);
    seed(dir, "stray", &script(&steps));
    // A burst of 281 addresses, past what the Doorman remembers, then a long pause.
    seed(
        dir,
        "burst",
        &script(&[
            vec![5, 70, 10, 0, 0, 0],
            vec![next],
            vec![next],
            vec![0x80, 0x10, 0x27],
            with(knock, v4([10, 0, 0, 1], 443)),
        ]),
    );
}

/// `known_hosts`: `[fingerprint, 32 bytes] [host length] [host] [contents]`.
fn known_hosts_seeds(dir: &Path) {
    let print = [0x5a; 32];
    let other = [0xa5; 32];
    let show = |p: [u8; 32]| {
        let hex: String = p.iter().map(|b| format!("{b:02x}")).collect();
        Fingerprint::parse(&hex).unwrap().to_string()
    };
    let input = |host: &str, contents: &str| {
        let mut out = print.to_vec();
        out.push(host.len() as u8);
        out.extend_from_slice(host.as_bytes());
        out.extend_from_slice(contents.as_bytes());
        out
    };
    let (mine, theirs) = (show(print), show(other));
    let host = "sender.example:4433";
    seed(dir, "empty", &input(host, ""));
    seed(
        dir,
        "known",
        &input(
            host,
            &format!("# receivers\nother:1 {theirs}\n{host} {mine}\n"),
        ),
    );
    seed(
        dir,
        "changed",
        &input(host, &format!("{host} {theirs}\r\n\nbroken line\n")),
    );
    seed(
        dir,
        "lowercase",
        &input("[::1]:5000", &format!("[::1]:5000 {}", mine.to_lowercase())),
    );
    seed(
        dir,
        "bare-digits",
        &input(
            host,
            &format!("{host}\t{}  trailing", mine.replace(':', "")),
        ),
    );
    seed(
        dir,
        "new",
        &input(host, &format!("#{host} {mine}\nelse {mine}\n")),
    );
}

/// `uri_query`: a URI's query, after the `?`.
fn uri_query_seeds(dir: &Path) {
    for (name, query) in [
        (
            "receiver",
            "latency=80&token=a%20b%26c&reconnect=false&congestion-control=bbr2",
        ),
        (
            "pinned",
            "certificate-fingerprint=5A%3A5A%3A5A&server-name=sender.example&timeout=10",
        ),
        (
            "moq",
            "moq-url=https%3A%2F%2Frelay.example%2Fanon&moq-broadcast=live&join-mode=keyframe",
        ),
        (
            "sender",
            "mode=caller&max-receivers=4&self-signed=true&&latency-budget=200",
        ),
        ("file-path", "ca-file=%2Fdev%2Fzero"),
        ("not-a-pair", "latency"),
    ] {
        seed(dir, name, query.as_bytes());
    }
}

/// `moq_frame`: hang's legacy container frames, a varint timestamp in µs and a payload.
fn moq_frame_seeds(dir: &Path) {
    use hang::container::{Frame, Timestamp};
    for (name, micros, payload) in [
        ("end", 0, &b""[..]),
        ("au", 40_000, &b"\0\0\0\x01\x40\x01\x0c\x01\xff\xff"[..]),
        ("late", 1 << 40, &b"\0\0\x01\x26\x01"[..]),
    ] {
        let frame = Frame {
            timestamp: Timestamp::from_micros(micros).unwrap(),
            payload: bytes::Bytes::from_static(payload),
        };
        let mut wire = Vec::new();
        frame.encode(&mut wire).unwrap();
        seed(dir, name, &wire);
    }
}

/// `moq_catalog`: catalog JSON, ours and others'.
fn moq_catalog_seeds(dir: &Path) {
    use hang::catalog::{Catalog, VideoConfig, H265};
    let mut video = VideoConfig::new(H265 {
        in_band: true,
        profile_space: 0,
        profile_idc: 1,
        profile_compatibility_flags: [0x60, 0, 0, 0],
        tier_flag: false,
        level_idc: 93,
        constraint_flags: [0xb0, 0, 0, 0, 0, 0],
    });
    video.coded_width = Some(1280);
    video.coded_height = Some(720);
    video.framerate = Some(29.97);
    let mut catalog = Catalog::<()>::default();
    catalog.video.insert("video", video).unwrap();
    let json = catalog.to_json().unwrap();
    seed(dir, "hev1", json.as_bytes());
    let ours = json.replacen(
        '{',
        r#"{"quicnalu":{"caps":"video/x-h265, alignment=(string)au"},"#,
        1,
    );
    seed(dir, "ours", ours.as_bytes());
    seed(
        dir,
        "others",
        br#"{"video":{"renditions":{"hi":{"codec":"avc1.64001f","codedWidth":1920,"codedHeight":1080,"bitrate":6000000,"framerate":30.0,"container":{"kind":"legacy"}},"lo":{"codec":"hvc1.1.6.L93.B0","codedWidth":640,"codedHeight":360,"container":{"kind":"legacy"}}}},"audio":{"renditions":{"audio":{"codec":"opus","sampleRate":48000,"numberOfChannels":2,"bitrate":128000,"container":{"kind":"legacy"}}}}}"#,
    );
}

fn main() {
    let corpus = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("corpus");
    for target in [
        "command_stream",
        "group_stream",
        "frame_header",
        "knock",
        "known_hosts",
        "uri_query",
        "moq_frame",
        "moq_catalog",
    ] {
        let dir = corpus.join(target);
        std::fs::create_dir_all(&dir).unwrap();
        match target {
            "command_stream" => command_seeds(&dir),
            "group_stream" => group_seeds(&dir),
            "frame_header" => header_seeds(&dir),
            "knock" => knock_seeds(&dir),
            "known_hosts" => known_hosts_seeds(&dir),
            "uri_query" => uri_query_seeds(&dir),
            "moq_frame" => moq_frame_seeds(&dir),
            _ => moq_catalog_seeds(&dir),
        }
        println!("{}", dir.display());
    }
}
