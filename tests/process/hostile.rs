//! Malicious peers over real QUIC on loopback. Raw quiche clients (tests/common/raw.rs)
//! attack quicnalusink while a well-behaved quicnalusrc receives beside them and must get
//! every frame, byte-exact; a raw quiche server plays a malicious sender to quicnalusrc.
//! Each test bounds the growth of the process's peak resident memory while the peer
//! pushes or holds more than that. They read the process's memory, so they take turns.

use crate::common::raw::{self, hello_bytes, RawPeer, Windows};
use crate::common::*;
use crate::{status_bytes, turn};
use gst::prelude::*;
use gstquicnalu::protocol::{
    error_code, put_group_opening, put_preamble, put_varint, Command, CommandDecoder, FrameFlags,
    FrameHeader, StreamKind, DEFAULT_MAX_COMMAND_SIZE, DEFAULT_MAX_FRAME_SIZE,
};
use std::net::{SocketAddr, UdpSocket};
use std::sync::{mpsc, Mutex};
use std::time::{Duration, Instant};

const MIB: u64 = 1 << 20;
/// How much the process's peak RSS may grow while a peer attacks.
const MAX_GROWTH: u64 = 256 * MIB;

/// The process's peak RSS from now on: VmHWM, reset first (clear_refs 5) so that it covers
/// only what follows. Where the reset is refused it is the peak since the process
/// started: a looser bound, never a tighter one.
struct Peak {
    base: u64,
}

impl Peak {
    fn start() -> Peak {
        let _ = std::fs::write("/proc/self/clear_refs", "5");
        Peak {
            base: status_bytes("VmRSS"),
        }
    }

    fn growth(&self) -> u64 {
        status_bytes("VmHWM").saturating_sub(self.base)
    }
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / MIB as f64
}

/// Pseudo-random bytes (xorshift), the same for the same seed.
fn garbage(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

/// Writes `chunk` on `stream` over and over (each write continuing where the last stopped)
/// until `limit` bytes went or the other side closed the connection; returns the bytes
/// quiche took.
fn flood(peer: &mut RawPeer, stream: u64, chunk: &[u8], limit: u64) -> u64 {
    let mut pushed = 0;
    let mut at = 0;
    let give_up = Instant::now() + WATCHDOG;
    while pushed < limit && peer.conn.peer_error().is_none() && !peer.conn.is_closed() {
        assert!(Instant::now() < give_up, "flood on stream {stream} stalled");
        match peer.conn.stream_send(stream, &chunk[at..], false) {
            Ok(n) => {
                pushed += n as u64;
                at = (at + n) % chunk.len();
            }
            Err(quiche::Error::Done) => {}
            Err(e) => {
                println!("flood on stream {stream} ends: {e}");
                break;
            }
        }
        peer.pump(Duration::from_millis(1));
    }
    pushed
}

/// Pumps until the other side has closed the connection.
fn until_closed(peer: &mut RawPeer) {
    peer.pump_until("CONNECTION_CLOSE", |c| {
        c.peer_error().is_some() || c.is_closed()
    });
}

// ---- quicnalusink under attack -------------------------------------------------------

/// Frames the steady receiver outputs before an attack starts and after it ends (1 s).
const STEADY_FRAMES: usize = 30;

/// A sender playing 25 Mbit/s of noise in real time, looped, with a steady receiver that
/// records every frame.
struct Stage {
    sender: Running,
    addr: SocketAddr,
    sent: Fingerprints,
    steady: Running,
    received: Fingerprints,
    /// Announces each frame the steady receiver outputs.
    arrived: mpsc::Receiver<()>,
    messages: mpsc::Receiver<gst::Structure>,
    /// Every element message seen so far.
    seen: Vec<gst::Structure>,
}

impl Stage {
    fn start() -> Stage {
        // No latency budget: the limits under test are the backlog's (a budget expires a
        // non-reading peer's groups first, so it is never far enough behind to be closed).
        let (sender, port, sent) = start_fingerprinted_sender(&format!(
            "multifilesrc location={} loop=true ! h265parse name=parse ! \
             quicnalusink name=sink latency-budget=0 eos-timeout=2000 {}",
            noise_clip().display(),
            sink_props()
        ));
        let messages = element_messages(&sender);
        let (steady, received) = fingerprinted_receiver(port);
        let (tx, arrived) = mpsc::channel();
        let tx = Mutex::new(tx);
        let pad = steady.by_name("src").static_pad("src").unwrap();
        pad.add_probe(gst::PadProbeType::BUFFER, move |_, _| {
            let _ = tx.lock().unwrap().send(());
            gst::PadProbeReturn::Ok
        });
        steady.pipeline.set_state(gst::State::Playing).unwrap();
        let mut stage = Stage {
            sender,
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
            sent,
            steady,
            received,
            arrived,
            messages,
            seen: Vec::new(),
        };
        stage.message("quicnalusink-receiver-connected", |_| true);
        stage.frames(STEADY_FRAMES);
        stage
    }

    /// Waits until the steady receiver has output `n` more frames.
    fn frames(&self, n: usize) {
        for _ in 0..n {
            self.arrived
                .recv_timeout(WATCHDOG)
                .expect("the steady receiver keeps getting frames");
        }
    }

    /// Waits for the element message `name` that `matches`.
    fn message(&mut self, name: &str, matches: impl Fn(&gst::Structure) -> bool) -> gst::Structure {
        if let Some(s) = self.seen.iter().find(|s| s.name() == name && matches(s)) {
            return s.clone();
        }
        loop {
            let s = self
                .messages
                .recv_timeout(WATCHDOG)
                .unwrap_or_else(|_| panic!("no '{name}' message"));
            self.seen.push(s.clone());
            if s.name() == name && matches(&s) {
                return s;
            }
        }
    }

    /// Ends the stream: the steady receiver must have got every frame, byte-exact.
    fn finish(mut self) -> Vec<gst::Structure> {
        // The stream goes on after the attack too.
        self.frames(STEADY_FRAMES);
        self.sender.pipeline.send_event(gst::event::Eos::new());
        self.steady
            .finish(WATCHDOG)
            .expect("steady receiver reaches EOS");
        self.sender.finish(WATCHDOG).expect("sender reaches EOS");
        assert_every_frame(&self.received, &self.sent);
        self.seen.extend(self.messages.try_iter());
        self.seen
    }
}

/// A raw client that said HELLO and read its control stream up to DESCRIBE: admitted.
fn admitted(addr: SocketAddr, windows: Windows) -> RawPeer {
    let mut peer = RawPeer::connected(addr, windows);
    peer.send_all(0, &hello_bytes(), false);
    let mut decoder = CommandDecoder::new(DEFAULT_MAX_COMMAND_SIZE);
    let mut commands = Vec::new();
    let mut buf = vec![0; 65536];
    peer.pump_until("DESCRIBE", |c| {
        while let Ok((n, _)) = c.stream_recv(0, &mut buf) {
            decoder
                .push(&buf[..n], &mut commands)
                .expect("sink's commands");
        }
        c.is_closed()
            || commands
                .iter()
                .any(|c| matches!(c, Command::Describe { .. }))
    });
    assert!(!peer.conn.is_closed(), "closed: {:?}", peer.peer_close());
    peer
}

/// The sink's CONNECTION_CLOSE to `peer`: an application close with `code`; returns the
/// reason.
fn closed_with(peer: &RawPeer, code: u64) -> String {
    let (app, got, reason) = peer.peer_close().expect("the sink closed the connection");
    assert!(
        app && got == code,
        "closed with {got:#x} ({reason}), app {app}"
    );
    reason
}

/// The `quicnalusink-receiver-disconnected` reason for a receiver other than the steady
/// one (the first connected), if the sink posted one.
fn hostile_disconnected(stage: &mut Stage) -> String {
    let steady: u64 = stage.seen[0].get("receiver-id").unwrap();
    let s = stage.message("quicnalusink-receiver-disconnected", |s| {
        s.get::<u64>("receiver-id").unwrap() != steady
    });
    s.get("reason").unwrap()
}

#[test]
fn sink_drops_a_peer_writing_garbage_instead_of_its_preamble() {
    let _turn = turn();
    let stage = Stage::start();
    let peak = Peak::start();
    let mut peer = RawPeer::connected(stage.addr, Windows::default());
    let t = Instant::now();
    let pushed = flood(&mut peer, 0, &garbage(1 << 20, 1), 512 * MIB);
    let dropped_after = t.elapsed();
    until_closed(&mut peer);
    let reason = closed_with(&peer, error_code::PROTOCOL_VIOLATION);
    let growth = peak.growth();
    let seen = stage.finish();
    println!(
        "garbage preamble: dropped after {dropped_after:?}, {:.2} MiB pushed, reason \
         '{reason}', peak RSS +{:.1} MiB",
        mib(pushed),
        mib(growth)
    );
    assert!(reason.contains("magic"), "{reason}");
    assert!(growth < MAX_GROWTH, "peak RSS grew {:.1} MiB", mib(growth));
    // Never admitted: no receiver message for it, only the steady receiver's.
    let about_receivers = seen
        .iter()
        .filter(|s| s.name().starts_with("quicnalusink-receiver-"))
        .count();
    assert_eq!(about_receivers, 2, "{seen:?}");
}

#[test]
fn sink_drops_an_admitted_peer_writing_garbage() {
    let _turn = turn();
    let mut stage = Stage::start();
    let peak = Peak::start();
    let mut peer = admitted(stage.addr, Windows::default());
    let t = Instant::now();
    let pushed = flood(&mut peer, 0, &garbage(1 << 20, 2), 512 * MIB);
    let dropped_after = t.elapsed();
    until_closed(&mut peer);
    let reason = closed_with(&peer, error_code::PROTOCOL_VIOLATION);
    let message = hostile_disconnected(&mut stage);
    let growth = peak.growth();
    stage.finish();
    println!(
        "garbage commands: dropped after {dropped_after:?}, {:.2} MiB pushed, reason \
         '{reason}', message '{message}', peak RSS +{:.1} MiB",
        mib(pushed),
        mib(growth)
    );
    assert!(reason.starts_with("control stream: "), "{reason}");
    assert!(message.contains("code 0x1"), "{message}");
    assert!(growth < MAX_GROWTH, "peak RSS grew {:.1} MiB", mib(growth));
}

/// A command header claiming 4 GiB, then its payload a trickle at a time.
fn huge_command(ty: u64) -> Vec<u8> {
    let mut out = Vec::new();
    put_varint(&mut out, ty);
    put_varint(&mut out, 4 << 30);
    out
}

#[test]
fn sink_drops_a_peer_claiming_a_4_gib_command() {
    let _turn = turn();
    let mut stage = Stage::start();
    let peak = Peak::start();

    // Before HELLO: a HELLO of 4 GiB.
    let mut early = RawPeer::connected(stage.addr, Windows::default());
    let mut opening = Vec::new();
    put_preamble(&mut opening, StreamKind::Control);
    opening.extend(huge_command(0x01));
    let t = Instant::now();
    early.send_all(0, &opening, false);
    let trickled = flood(&mut early, 0, &[0x41; 64], 64 * MIB);
    let early_after = t.elapsed();
    until_closed(&mut early);
    let early_reason = closed_with(&early, error_code::PROTOCOL_VIOLATION);

    // Admitted: an APPLICATION of 4 GiB.
    let mut late = admitted(stage.addr, Windows::default());
    let t = Instant::now();
    late.send_all(0, &huge_command(0x09), false);
    let late_trickled = flood(&mut late, 0, &[0x41; 64], 64 * MIB);
    let late_after = t.elapsed();
    until_closed(&mut late);
    let late_reason = closed_with(&late, error_code::PROTOCOL_VIOLATION);
    let message = hostile_disconnected(&mut stage);
    let growth = peak.growth();
    stage.finish();
    println!(
        "4 GiB HELLO: dropped after {early_after:?} ({trickled} B trickled), '{early_reason}'; \
         4 GiB APPLICATION: dropped after {late_after:?} ({late_trickled} B trickled), \
         '{late_reason}', message '{message}'; peak RSS +{:.1} MiB",
        mib(growth)
    );
    for reason in [&early_reason, &late_reason] {
        assert!(
            reason.contains("command of 4294967296 bytes exceeds the limit of 65536 bytes"),
            "{reason}"
        );
    }
    assert!(message.contains("code 0x1"), "{message}");
    assert!(growth < MAX_GROWTH, "peak RSS grew {:.1} MiB", mib(growth));
}

#[test]
fn sink_gives_a_peer_no_credit_for_more_streams() {
    let _turn = turn();
    let stage = Stage::start();
    let peak = Peak::start();
    let mut peer = admitted(stage.addr, Windows::default());
    let (mut refused, mut taken) = (0, 0);
    // Bidirectional 4, 8, ... and unidirectional 2, 6, ...: thousands of each.
    for n in 1..=4000u64 {
        for stream in [4 * n, 4 * n - 2] {
            match peer.conn.stream_send(stream, b"QNLU", false) {
                Err(quiche::Error::StreamLimit) => refused += 1,
                Ok(_) => taken += 1,
                Err(e) => panic!("stream {stream}: {e}"),
            }
        }
        if n % 100 == 0 {
            peer.pump(Duration::from_millis(1));
        }
    }
    let (bidi, uni) = (
        peer.conn.peer_streams_left_bidi(),
        peer.conn.peer_streams_left_uni(),
    );
    let growth = peak.growth();
    assert!(!peer.conn.is_closed());
    drop(peer);
    stage.finish();
    println!(
        "streams: {refused} refused, {taken} taken; credit left: {bidi} bidi, {uni} uni; \
         peak RSS +{:.1} MiB",
        mib(growth)
    );
    assert_eq!(
        taken, 0,
        "the sink gave credit for a stream beyond the control stream"
    );
    assert_eq!((bidi, uni), (0, 0));
}

#[test]
fn sink_bounds_a_flood_of_well_formed_commands() {
    let _turn = turn();
    let stage = Stage::start();
    let peak = Peak::start();
    // A small window on the sink's control stream, never read: its answers pile up.
    let windows = Windows {
        stream_data: 64 << 10,
        ..Windows::default()
    };
    let mut peer = admitted(stage.addr, windows);
    // PINGs (each asks for a PONG) and unknown commands (skipped by their length). Before
    // PINGs went unanswered on a long queue, 64 MiB of them grew the sink by 1 GiB: a
    // queued chunk of about 100 bytes for every 3-byte PONG.
    let mut chunk = Vec::new();
    for n in 0..20_000u64 {
        Command::Ping(n).encode(&mut chunk);
    }
    Command::Unknown(0x3f00).encode(&mut chunk);
    put_varint(&mut chunk, 0x3f01);
    put_varint(&mut chunk, 60_000);
    chunk.extend(garbage(60_000, 3));
    let t = Instant::now();
    let pushed = flood(&mut peer, 0, &chunk, 512 * MIB);
    let took = t.elapsed();
    let growth = peak.growth();
    let close = peer.peer_close();
    drop(peer);
    stage.finish();
    println!(
        "well-formed flood: {:.1} MiB pushed in {took:?}, close {close:?}, peak RSS +{:.1} MiB",
        mib(pushed),
        mib(growth)
    );
    assert!(growth < MAX_GROWTH, "peak RSS grew {:.1} MiB", mib(growth));
}

#[test]
fn sink_drops_a_receiver_that_never_reads() {
    let _turn = turn();
    let mut stage = Stage::start();
    let peak = Peak::start();
    // The windows quicnalusrc advertises; it acknowledges every packet but never reads a
    // byte, so it never extends them. The sink's queue for it stays bounded (dropped at
    // 16 MiB for 1 s), and it used to stay connected for good.
    let mut peer = admitted(stage.addr, Windows::default());
    let t = Instant::now();
    let give_up = t + WATCHDOG;
    while peer.conn.peer_error().is_none() {
        assert!(
            Instant::now() < give_up,
            "the sink kept a receiver that never reads"
        );
        peer.pump(Duration::from_millis(20));
    }
    let dropped_after = t.elapsed();
    let held = peer.conn.stats().recv_bytes;
    let reason = closed_with(&peer, error_code::TOO_SLOW);
    let message = hostile_disconnected(&mut stage);
    let growth = peak.growth();
    drop(peer);
    stage.finish();
    println!(
        "never reads: dropped after {dropped_after:?}, holding {:.1} MiB unread, reason \
         '{reason}', message '{message}', peak RSS +{:.1} MiB",
        mib(held),
        mib(growth)
    );
    assert!(message.contains("code 0x6"), "{message}");
    assert!(growth < MAX_GROWTH, "peak RSS grew {:.1} MiB", mib(growth));
}

/// 200 peers from one address complete the handshake, never say HELLO and keep their
/// connections alive with PINGs: they used to hold every one of the sink's connection slots
/// (100 here) for good. Now that address holds at most gate::PENDING_PER_SOURCE (16) of
/// them, a receiver from another address gets every frame, byte-exact, while they push on,
/// and each is closed 10 s after it connected.
#[test]
fn sink_lets_a_receiver_in_past_200_silent_connections() {
    const SILENT: usize = 200;
    const PER_ADDRESS: usize = 16;
    let _turn = turn();
    let (sender, port, sent) = start_fingerprinted_sender(&format!(
        "filesrc location={} ! h265parse name=parse ! \
         quicnalusink name=sink latency-budget=0 max-connections=100 {}",
        media("oh-1104x622.h265").display(),
        sink_props()
    ));
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let attacker: std::net::IpAddr = "127.0.0.2".parse().unwrap();
    let mut config = raw::client_config(Windows::default());
    let mut silent: Vec<RawPeer> = (0..SILENT)
        .map(|_| RawPeer::connect_from(attacker, addr, &mut config))
        .collect();
    let established = |silent: &[RawPeer]| {
        silent
            .iter()
            .filter(|p| p.conn.is_established() && !p.conn.is_closed())
            .count()
    };
    let keep_alive = |silent: &mut [RawPeer]| {
        for p in silent.iter_mut() {
            let _ = p.conn.send_ack_eliciting();
            p.pump(Duration::from_millis(1));
        }
    };
    // The attack: every handshake the sink takes, until none has completed for a second
    // (at 100 without the limit: the sink is full).
    let (mut most, mut last_change) = (0, Instant::now());
    let give_up = Instant::now() + WATCHDOG;
    while (most == 0 || last_change.elapsed() < Duration::from_secs(1)) && most < 100 {
        assert!(Instant::now() < give_up, "no handshake completed");
        keep_alive(&mut silent);
        let now = established(&silent);
        if now > most {
            (most, last_change) = (now, Instant::now());
        }
    }
    assert!(
        (1..=PER_ADDRESS).contains(&most),
        "{most} silent connections from one address"
    );

    let (receiver, received) = fingerprinted_receiver(port);
    receiver.pipeline.set_state(gst::State::Playing).unwrap();
    let give_up = Instant::now() + WATCHDOG;
    loop {
        keep_alive(&mut silent);
        match receiver.finish(Duration::from_millis(10)) {
            Ok(()) => break,
            Err(e) if e.starts_with("no EOS or error") => {}
            Err(e) => panic!("receiver: {e}"),
        }
        assert!(Instant::now() < give_up, "the receiver never finished");
    }
    sender.finish(WATCHDOG).expect("sender reaches EOS");
    assert_every_frame(&received, &sent);

    // The first of them is closed at its HELLO deadline, as a protocol violation.
    let first = silent
        .iter_mut()
        .find(|p| p.conn.is_established())
        .expect("an established silent peer");
    first.pump_until("the HELLO deadline", |c| c.is_closed());
    let reason = closed_with(first, error_code::PROTOCOL_VIOLATION);
    assert!(reason.contains("no HELLO within 10 s"), "{reason}");
}

/// A receiver that went quiet no longer holds its place (GONE_QUIET, 1 s), even while
/// someone who saw its connection ID sends datagrams under it: only packets that decrypt
/// count as hearing from it. With max-receivers=1 the next receiver gets in.
#[test]
fn sink_counts_only_packets_that_decrypt_as_a_receiver_being_there() {
    use gst_app::AppSink;
    let _turn = turn();
    let description = live_sender_description("width=320,height=240", "", 30, 0)
        .replace("name=sink", "name=sink max-receivers=1");
    let (_sender, port) = start_sender(&description);
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let quiet = admitted(addr, Windows::default());
    // Short-header packets under its connection ID, from another address: they never
    // decrypt.
    let mut junk = vec![0x41];
    junk.extend_from_slice(quiet.conn.destination_id().as_ref());
    junk.extend_from_slice(&garbage(60, 7));
    let spoofer = UdpSocket::bind("127.0.0.3:0").unwrap();
    let went_quiet = Instant::now();
    while went_quiet.elapsed() < Duration::from_millis(1500) {
        spoofer.send_to(&junk, addr).unwrap();
        std::thread::sleep(Duration::from_millis(20));
    }

    let next = receiver(port, "reconnect=false");
    let sink = next.by_name("out").downcast::<AppSink>().unwrap();
    next.pipeline.set_state(gst::State::Playing).unwrap();
    let bus = next.pipeline.bus().unwrap();
    let (mut frames, give_up) = (0, Instant::now() + WATCHDOG);
    while frames < 30 {
        assert!(Instant::now() < give_up, "the next receiver got no frames");
        spoofer.send_to(&junk, addr).unwrap();
        if let Some(m) = bus.pop_filtered(&[gst::MessageType::Error]) {
            let gst::MessageView::Error(e) = m.view() else {
                unreachable!()
            };
            panic!("the next receiver: {}", error_text(e));
        }
        if sink
            .try_pull_sample(gst::ClockTime::from_mseconds(20))
            .is_some()
        {
            frames += 1;
        }
    }
    drop(quiet);
}

/// The id the sink gave the receiver that connected after the steady one.
fn hostile_id(stage: &mut Stage) -> u64 {
    let steady: u64 = stage.seen[0].get("receiver-id").unwrap();
    stage
        .message("quicnalusink-receiver-connected", |s| {
            s.get::<u64>("receiver-id").unwrap() != steady
        })
        .get("receiver-id")
        .unwrap()
}

/// The application sends commands to a receiver that never reads its control stream: they
/// used to pile up in the sink without limit (600 MiB for 20,000 of 32 KB). Now the
/// receiver is closed with TOO_SLOW once 1 MiB waits for it.
#[test]
fn sink_closes_a_receiver_that_never_reads_its_commands() {
    let _turn = turn();
    let mut stage = Stage::start();
    let windows = Windows {
        stream_data: 64 << 10,
        ..Windows::default()
    };
    let mut peer = admitted(stage.addr, windows);
    let id = hostile_id(&mut stage);
    let sink = stage.sender.by_name("sink");
    let command = gst::Structure::builder("big")
        .field("data", "x".repeat(32_000))
        .build();
    let (mut accepted, mut refused) = (0u64, 0u64);
    while peer.conn.peer_error().is_none() && accepted < 20_000 {
        if sink.emit_by_name::<bool>("send-command", &[&id, &command]) {
            accepted += 1;
        } else {
            refused += 1;
        }
        peer.pump(Duration::from_millis(1));
    }
    let reason = closed_with(&peer, error_code::TOO_SLOW);
    let message = hostile_disconnected(&mut stage);
    drop(peer);
    stage.finish();
    println!(
        "commands never read: closed after {accepted} accepted ({refused} refused): \
         '{reason}', message '{message}'"
    );
    assert!(reason.contains("control stream"), "{reason}");
    // 1 MiB waiting, the 64 KiB window and what was on its way: about 40 commands.
    assert!(
        accepted < 200,
        "{accepted} commands accepted before the close"
    );
}

/// A receiver floods the control stream with keyframe requests and commands, 20 of each
/// every 10 ms for 2 s. The sink takes them at the documented rates (ratelimit.rs: 4 then
/// 1/s, 100 then 50/s), counts the rest as dropped in its stats, and the steady receiver
/// beside it gets every frame.
#[test]
fn sink_rate_limits_a_receivers_commands_and_keyframe_requests() {
    let _turn = turn();
    let mut stage = Stage::start();
    let mut peer = admitted(stage.addr, Windows::default());
    let id = hostile_id(&mut stage);
    let mut burst = Vec::new();
    for _ in 0..20 {
        Command::KeyframeRequest.encode(&mut burst);
        Command::Application {
            before_seq: None,
            structure: "flood, n=(int)1".into(),
        }
        .encode(&mut burst);
    }
    let t = Instant::now();
    let mut sent = 0u64;
    while t.elapsed() < Duration::from_secs(2) {
        peer.send_all(0, &burst, false);
        sent += 20;
        peer.pump(Duration::from_millis(10));
    }
    // Every one sent is either taken or dropped, once the sink has read them all.
    let sink = stage.sender.by_name("sink");
    let give_up = Instant::now() + WATCHDOG;
    let entry = loop {
        assert!(Instant::now() < give_up, "the sink never read the flood");
        peer.pump(Duration::from_millis(20));
        let stats = sink.property::<gst::Structure>("stats");
        let receivers = stats.get::<gst::Array>("receivers").unwrap();
        let entry = receivers
            .iter()
            .map(|r| r.get::<gst::Structure>().unwrap())
            .find(|r| r.get::<u64>("receiver-id").unwrap() == id)
            .expect("the flooding receiver in stats");
        let taken = entry.get::<u64>("keyframe-requests").unwrap();
        if taken + entry.get::<u64>("keyframe-requests-dropped").unwrap() == sent {
            break entry;
        }
    };
    let elapsed = t.elapsed().as_secs_f64();
    let keyframes_taken = entry.get::<u64>("keyframe-requests").unwrap();
    let commands_dropped = entry.get::<u64>("commands-dropped").unwrap();
    let seen = stage.finish();
    let commands_taken = seen
        .iter()
        .filter(|s| s.name() == "quicnalusink-command")
        .filter(|s| s.get::<u64>("receiver-id").unwrap() == id)
        .count() as u64;
    drop(peer);
    println!(
        "flood of {sent} each in {elapsed:.2} s: keyframe requests taken {keyframes_taken}, \
         commands taken {commands_taken}, dropped {commands_dropped}"
    );
    assert_eq!(commands_taken + commands_dropped, sent);
    assert!(
        keyframes_taken <= 4 + elapsed as u64 + 1,
        "{keyframes_taken}"
    );
    assert!(
        commands_taken <= 100 + (elapsed * 50.0) as u64 + 1,
        "{commands_taken}"
    );
    assert!(keyframes_taken >= 4 && commands_taken >= 100);
}

// ---- quicnalusrc against a malicious sender ---------------------------------------------

/// A raw QUIC server with a quicnalusrc (reconnect=false) connected to it; the receiver's
/// HELLO has been read.
fn hostile_sender() -> (RawPeer, Running) {
    hostile_sender_with(Windows::default(), |_| {})
}

/// Like [`hostile_sender`], advertising `windows` (but one bidirectional stream and no
/// unidirectional ones), with `prepare` applied to the receiver before it starts.
fn hostile_sender_with(windows: Windows, prepare: impl FnOnce(&Running)) -> (RawPeer, Running) {
    let socket = UdpSocket::bind("127.0.0.1:0").expect("bind");
    let port = socket.local_addr().unwrap().port();
    let receiver = Running::launch(&format!(
        "quicnalusrc name=src {} reconnect=false ! fakesink",
        src_props(port)
    ));
    prepare(&receiver);
    receiver.pipeline.set_state(gst::State::Playing).unwrap();
    let windows = Windows {
        max_streams_bidi: 1,
        max_streams_uni: 0,
        ..windows
    };
    let mut peer = RawPeer::accept(socket, &mut raw::server_config(windows));
    let mut decoder = CommandDecoder::new(DEFAULT_MAX_COMMAND_SIZE);
    let mut commands = Vec::new();
    let mut buf = vec![0; 65536];
    peer.pump_until("HELLO", |c| {
        while let Ok((n, _)) = c.stream_recv(0, &mut buf) {
            decoder
                .push(&buf[..n], &mut commands)
                .expect("receiver's commands");
        }
        !commands.is_empty()
    });
    assert!(matches!(commands[0], Command::Hello { .. }));
    (peer, receiver)
}

/// The sender's control stream opening and DESCRIBE.
fn describe(peer: &mut RawPeer) {
    let mut out = Vec::new();
    put_preamble(&mut out, StreamKind::Control);
    Command::Describe {
        caps: "video/x-h265, stream-format=(string)byte-stream, alignment=(string)au, \
               width=(int)320, height=(int)240, framerate=(fraction)30/1"
            .into(),
    }
    .encode(&mut out);
    peer.send_all(0, &out, false);
}

/// A group stream's opening and the header of its keyframe of `len` bytes.
fn group_start(len: u64) -> Vec<u8> {
    let mut out = Vec::new();
    put_group_opening(&mut out, 0);
    FrameHeader {
        seq: 0,
        flags: FrameFlags::KEYFRAME,
        pts: Some(0),
        send_time: 1,
        len,
        ..FrameHeader::default()
    }
    .encode(&mut out);
    out
}

/// The receiver's error, how long after `t` it came, and the receiver's close to the peer.
fn receiver_error(receiver: &Running, peer: &mut RawPeer, t: Instant) -> (String, Duration) {
    let error = receiver.expect_error();
    let after = t.elapsed();
    until_closed(peer);
    let reason = closed_with(peer, error_code::PROTOCOL_VIOLATION);
    assert!(error.contains(&reason), "'{error}' against '{reason}'");
    receiver.pipeline.set_state(gst::State::Null).unwrap();
    (error, after)
}

#[test]
fn receiver_fails_on_a_frame_claiming_4_gib() {
    let _turn = turn();
    let peak = Peak::start();
    let (mut peer, receiver) = hostile_sender();
    describe(&mut peer);
    let t = Instant::now();
    peer.send_all(3, &group_start(4 << 30), false);
    let trickled = flood(&mut peer, 3, &garbage(1 << 16, 4), 512 * MIB);
    let (error, after) = receiver_error(&receiver, &mut peer, t);
    let growth = peak.growth();
    println!(
        "4 GiB frame: error after {after:?} ({:.2} MiB trickled): {error}; peak RSS +{:.1} MiB",
        mib(trickled),
        mib(growth)
    );
    assert!(
        error.contains(&format!(
            "group stream 3: frame of 4294967296 bytes exceeds the limit of \
             {DEFAULT_MAX_FRAME_SIZE} bytes"
        )),
        "{error}"
    );
    assert!(error.contains("violated the protocol"), "{error}");
    assert!(growth < MAX_GROWTH, "peak RSS grew {:.1} MiB", mib(growth));
}

#[test]
fn receiver_fails_on_garbage_on_a_group_stream() {
    let _turn = turn();
    let peak = Peak::start();
    let (mut peer, receiver) = hostile_sender();
    describe(&mut peer);
    let t = Instant::now();
    let pushed = flood(&mut peer, 3, &garbage(1 << 20, 5), 512 * MIB);
    let (error, after) = receiver_error(&receiver, &mut peer, t);
    let growth = peak.growth();
    println!(
        "garbage group stream: error after {after:?} ({:.2} MiB pushed): {error}; peak RSS \
         +{:.1} MiB",
        mib(pushed),
        mib(growth)
    );
    assert!(error.contains("group stream 3: "), "{error}");
    assert!(error.contains("magic"), "{error}");
    assert!(growth < MAX_GROWTH, "peak RSS grew {:.1} MiB", mib(growth));
}

#[test]
fn receiver_fails_on_garbage_on_the_control_stream() {
    let _turn = turn();
    let peak = Peak::start();
    let (mut peer, receiver) = hostile_sender();
    let t = Instant::now();
    let pushed = flood(&mut peer, 0, &garbage(1 << 20, 6), 512 * MIB);
    let (error, after) = receiver_error(&receiver, &mut peer, t);
    let growth = peak.growth();
    println!(
        "garbage control stream: error after {after:?} ({:.2} MiB pushed): {error}; peak RSS \
         +{:.1} MiB",
        mib(pushed),
        mib(growth)
    );
    assert!(error.contains("control stream: "), "{error}");
    assert!(error.contains("magic"), "{error}");
    assert!(growth < MAX_GROWTH, "peak RSS grew {:.1} MiB", mib(growth));
}

#[test]
fn receiver_bounds_thousands_of_group_streams() {
    let _turn = turn();
    let peak = Peak::start();
    let (mut peer, receiver) = hostile_sender();
    describe(&mut peer);
    // Every group the largest keyframe allowed, none ever finished. Before frames being
    // received counted against MAX_BUFFERED, the receiver read them all (zeroing 1 MiB
    // ahead in each) and kept granting credit: 611 MiB pushed grew it by 1.5 GiB.
    let opening = group_start(DEFAULT_MAX_FRAME_SIZE);
    let mut streams = Vec::new();
    let mut refused = 0;
    for n in 0..4000u64 {
        let stream = 3 + 4 * n;
        loop {
            match peer.conn.stream_send(stream, &opening, false) {
                Ok(_) => streams.push(stream),
                Err(quiche::Error::StreamLimit) => refused += 1,
                // Congestion control: wait for acknowledgements.
                Err(quiche::Error::Done) => {
                    peer.pump(Duration::from_millis(1));
                    continue;
                }
                Err(e) => panic!("stream {stream}: {e}"),
            }
            break;
        }
    }
    // Then frame bytes on every one, round robin, until 768 MiB went or the receiver has
    // given no credit for 2 s (it holds what it took, and reads no more).
    let body = garbage(1 << 16, 7);
    let (mut pushed, mut last_progress) = (0u64, Instant::now());
    while pushed < 768 * MIB && last_progress.elapsed() < Duration::from_secs(2) {
        assert!(peer.conn.peer_error().is_none(), "{:?}", peer.peer_close());
        for &s in &streams {
            if let Ok(n) = peer.conn.stream_send(s, &body, false) {
                if n > 0 {
                    pushed += n as u64;
                    last_progress = Instant::now();
                }
            }
        }
        peer.pump(Duration::from_millis(1));
    }
    let growth = peak.growth();
    println!(
        "{} group streams opened ({refused} refused), {:.1} MiB pushed, peak RSS +{:.1} MiB",
        streams.len(),
        mib(pushed),
        mib(growth)
    );
    receiver.pipeline.set_state(gst::State::Null).unwrap();
    assert!(growth < MAX_GROWTH, "peak RSS grew {:.1} MiB", mib(growth));
}

#[test]
fn receiver_bounds_a_ping_flood_from_a_sender_that_never_reads() {
    let _turn = turn();
    let peak = Peak::start();
    let (mut peer, receiver) = hostile_sender();
    describe(&mut peer);
    // Its own control stream never read, the receiver's PONGs cannot leave: before they
    // went unanswered on a long queue, 384 MiB of PINGs grew the receiver by as much.
    let mut chunk = Vec::new();
    for n in 0..20_000u64 {
        Command::Ping(n).encode(&mut chunk);
    }
    let t = Instant::now();
    let pushed = flood(&mut peer, 0, &chunk, 384 * MIB);
    let took = t.elapsed();
    let growth = peak.growth();
    println!(
        "PING flood: {:.1} MiB pushed in {took:?}, close {:?}, peak RSS +{:.1} MiB",
        mib(pushed),
        peer.peer_close(),
        mib(growth)
    );
    receiver.pipeline.set_state(gst::State::Null).unwrap();
    assert!(growth < MAX_GROWTH, "peak RSS grew {:.1} MiB", mib(growth));
}

/// The application sends commands to a sender that never reads its control stream. They
/// used to move from the element's bounded queue (256) to an unbounded one every turn, so
/// send-command kept saying TRUE; now at most 1 MiB waits and send-command says FALSE.
#[test]
fn receiver_refuses_commands_a_sender_never_reads() {
    let _turn = turn();
    let windows = Windows {
        stream_data: 64 << 10,
        ..Windows::default()
    };
    let (mut peer, receiver) = hostile_sender_with(windows, |_| {});
    let src = receiver.by_name("src");
    let command = gst::Structure::builder("big")
        .field("data", "x".repeat(32_000))
        .build();
    let (mut accepted, mut refused) = (0u64, 0u64);
    for _ in 0..2_000 {
        if src.emit_by_name::<bool>("send-command", &[&command]) {
            accepted += 1;
        } else {
            refused += 1;
        }
        peer.pump(Duration::from_millis(1));
    }
    receiver.pipeline.set_state(gst::State::Null).unwrap();
    let bytes = accepted * 32_000;
    println!(
        "commands never read: {accepted} accepted ({:.1} MiB), {refused} refused",
        mib(bytes)
    );
    // 1 MiB waiting, 64 KiB on the control stream and the 64 KiB window.
    assert!(bytes < 2 * MIB, "{:.1} MiB accepted", mib(bytes));
}

/// A sender sends 8 MiB frames, as fast as flow control lets it, to a receiver whose
/// downstream is blocked. The queue to the streaming thread used to take 64 of them
/// (512 MiB); now it holds 16 MiB, and the receiver about 64 MiB in all.
#[test]
fn receiver_bounds_large_frames_its_application_does_not_take() {
    let _turn = turn();
    let peak = Peak::start();
    let block = |r: &Running| {
        let pad = r.by_name("src").static_pad("src").unwrap();
        pad.add_probe(
            gst::PadProbeType::BLOCK | gst::PadProbeType::BUFFER,
            |_, _| gst::PadProbeReturn::Ok,
        );
    };
    let (mut peer, receiver) = hostile_sender_with(Windows::default(), block);
    describe(&mut peer);
    const FRAME: u64 = 8 << 20;
    let body = vec![0u8; FRAME as usize];
    let mut pending: Vec<u8> = Vec::new();
    let (mut seq, mut pushed, mut at) = (0u64, 0u64, 0usize);
    let mut last_progress = Instant::now();
    while pushed < 384 * MIB && last_progress.elapsed() < Duration::from_secs(2) {
        assert!(peer.conn.peer_error().is_none(), "{:?}", peer.peer_close());
        if at == pending.len() {
            pending.clear();
            if seq == 0 {
                put_group_opening(&mut pending, 0);
            }
            FrameHeader {
                seq,
                flags: if seq == 0 {
                    FrameFlags::KEYFRAME
                } else {
                    FrameFlags::default()
                },
                pts: Some(seq * 33_333_333),
                send_time: 1,
                len: FRAME,
                ..FrameHeader::default()
            }
            .encode(&mut pending);
            pending.extend_from_slice(&body);
            seq += 1;
            at = 0;
        }
        if let Ok(n) = peer.conn.stream_send(3, &pending[at..], false) {
            if n > 0 {
                at += n;
                pushed += n as u64;
                last_progress = Instant::now();
            }
        }
        peer.pump(Duration::from_millis(1));
    }
    let growth = peak.growth();
    println!(
        "8 MiB frames, downstream blocked: {:.1} MiB pushed ({seq} frames begun), peak RSS \
         +{:.1} MiB",
        mib(pushed),
        mib(growth)
    );
    receiver.pipeline.set_state(gst::State::Null).unwrap();
    assert!(
        pushed >= 32 * MIB,
        "the receiver took only {:.1} MiB",
        mib(pushed)
    );
    assert!(growth < 160 * MIB, "peak RSS grew {:.1} MiB", mib(growth));
}
