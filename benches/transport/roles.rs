//! The two child processes of a run: a sender (appsrc paced by `identity sync=true`, frames
//! stamped as they leave the pacer, then the transport's sink) and a receiver (one or, in
//! the fan-out, several of the transport's sources, stamps read where access units leave
//! them). Each reports its own CPU time, so sender and receiver costs stay apart.

use crate::stamp::{self, Scanner, Stamp};
use crate::Transport;
use gst::prelude::*;
use std::io::{BufRead, Write};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// What one child process is asked to do, passed as `key=value` arguments.
#[derive(Clone)]
pub struct Job {
    pub transport: Transport,
    pub port: u16,
    pub content: String,
    pub frames: u64,
    pub fps: f64,
    /// srtsink/srtsrc `latency`; ristsrc's `receiver-buffer` for RIST.
    pub srt_latency_ms: u32,
    /// quicnalusrc `latency` for quicnalu-defaults and quicnalu-moq; None leaves its default.
    pub src_latency_ms: Option<u32>,
    pub cert: String,
    pub key: String,
    pub records: String,
    /// Instead of `content`, a live 30 fps x265 encoder: 480x272, small enough to encode in
    /// real time next to the receiver on this 2-core machine (720p does not: it fell to
    /// about 20 fps), yet with the bitrate asked of it (zone-plate fills 4 Mbit/s).
    pub live: Option<Live>,
    /// Source pipelines in the receiver process; an SRT sender waits for this many callers
    /// before it plays (quicnalu receivers wait for their handshakes before READY).
    pub receivers: u32,
    /// Comma-separated HOST:PORT: quicnalusrc's `paths`, or RIST's `bonding-addresses`
    /// (the sender's relays, the receiver's own ports); empty for none (routes.rs).
    pub routes: String,
}

/// A live encoder as the sender: it honours keyframe requests (GstForceKeyUnit) coming
/// back upstream, and quicnalusink's `adapt-bitrate` can steer it.
#[derive(Debug, Clone, Copy)]
pub struct Live {
    pub key_int: u32,
    pub kbps: u32,
    /// quicnalusink `adapt-bitrate` for quicnalu (but quicnalu-defaults, which keeps every
    /// default); None leaves the element's default.
    pub adapt: Option<bool>,
    /// Non-reference B pictures after each P (0: none, x265's zerolatency tune).
    pub bframes: u32,
}

impl Job {
    pub fn to_args(&self) -> Vec<String> {
        vec![
            format!("transport={}", self.transport.name()),
            format!("port={}", self.port),
            format!("content={}", self.content),
            format!("frames={}", self.frames),
            format!("fps={}", self.fps),
            format!("srt-latency={}", self.srt_latency_ms),
            format!(
                "src-latency={}",
                self.src_latency_ms
                    .map_or("default".into(), |l| l.to_string())
            ),
            format!("cert={}", self.cert),
            format!("key={}", self.key),
            format!("records={}", self.records),
            match self.live {
                Some(l) => format!(
                    "live={},{},{},{}",
                    l.key_int,
                    l.kbps,
                    l.adapt.map_or("default".into(), |a| a.to_string()),
                    l.bframes
                ),
                None => "live=none".into(),
            },
            format!("receivers={}", self.receivers),
            format!("routes={}", self.routes),
        ]
    }

    pub fn from_args(args: &[String]) -> Job {
        let get = |k: &str| {
            args.iter()
                .find_map(|a| a.strip_prefix(&format!("{k}=")))
                .unwrap_or_else(|| panic!("missing {k}="))
                .to_string()
        };
        Job {
            transport: Transport::from_name(&get("transport")),
            port: get("port").parse().expect("port"),
            content: get("content"),
            frames: get("frames").parse().expect("frames"),
            fps: get("fps").parse().expect("fps"),
            srt_latency_ms: get("srt-latency").parse().expect("srt-latency"),
            src_latency_ms: get("src-latency").parse().ok(),
            cert: get("cert"),
            key: get("key"),
            records: get("records"),
            live: {
                let live = get("live");
                let v: Vec<&str> = live.split(',').collect();
                let n = |i: usize| v[i].parse().expect("live=KEY_INT,KBPS,ADAPT,BFRAMES");
                (v.len() == 4).then(|| Live {
                    key_int: n(0),
                    kbps: n(1),
                    adapt: v[2].parse().ok(),
                    bframes: n(3),
                })
            },
            receivers: get("receivers").parse().expect("receivers"),
            routes: get("routes"),
        }
    }
}

/// CPU seconds this process has used (user + system, all threads).
pub fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // Fields after the ")" that ends the command name; utime and stime are 14 and 15.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    (ticks(11) + ticks(12)) / 100.0
}

/// Where the orchestrator's moq-relay is, for quicnalu-moq: "URL FINGERPRINT".
pub const MOQ_ENV: &str = "QUICNALU_BENCH_MOQ";

/// The relay's URL and certificate fingerprint.
pub fn moq_relay() -> (String, String) {
    let v = std::env::var(MOQ_ENV).expect("the orchestrator's moq-relay");
    let (url, fp) = v.split_once(' ').expect("URL FINGERPRINT");
    (url.into(), fp.into())
}

/// quicnalu's `congestion-control` for a comparison run (`QUICNALU_BENCH_CC=cubic`); the
/// elements' default otherwise.
fn cc() -> String {
    std::env::var("QUICNALU_BENCH_CC")
        .map(|cc| format!(" congestion-control={cc}"))
        .unwrap_or_default()
}

/// quicnalusrc's ` latency=...` where the job sets one.
fn src_latency(job: &Job) -> String {
    job.src_latency_ms
        .map(|l| format!(" latency={l}"))
        .unwrap_or_default()
}

fn now_ns() -> u64 {
    gst::get_timestamp().nseconds()
}

fn launch(description: &str) -> gst::Pipeline {
    gst::parse::launch(description)
        .unwrap_or_else(|e| panic!("pipeline '{description}': {e}"))
        .downcast::<gst::Pipeline>()
        .expect("pipeline")
}

/// Access units of a file, as h265parse cuts them, with their IRAP flag.
pub fn load_access_units(path: &str) -> Vec<(Vec<u8>, bool)> {
    let pipeline = launch(&format!(
        "filesrc location={path} ! h265parse ! \
         video/x-h265,stream-format=byte-stream,alignment=au ! appsink name=out sync=false"
    ));
    let sink = pipeline
        .by_name("out")
        .and_then(|e| e.downcast::<gst_app::AppSink>().ok())
        .expect("appsink");
    pipeline.set_state(gst::State::Playing).expect("load");
    let mut aus = Vec::new();
    while let Ok(sample) = sink.pull_sample() {
        let buffer = sample.buffer().expect("buffer");
        let map = buffer.map_readable().expect("map");
        aus.push((
            map.to_vec(),
            !buffer.flags().contains(gst::BufferFlags::DELTA_UNIT),
        ));
    }
    let _ = pipeline.set_state(gst::State::Null);
    aus
}

/// Polls `done` for up to 10 s; a run that is not ready by then shows it in its results.
fn wait_for(done: impl Fn() -> bool) {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !done() && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn wait_line(expect: &str) {
    let mut line = String::new();
    let _ = std::io::stdin().lock().read_line(&mut line);
    assert_eq!(line.trim(), expect, "orchestrator protocol");
}

fn say(line: &str) {
    println!("{line}");
    let _ = std::io::stdout().flush();
}

fn error_of(bus: &gst::Bus) -> Option<String> {
    let msg = bus.pop_filtered(&[gst::MessageType::Error])?;
    match msg.view() {
        gst::MessageView::Error(e) => Some(format!("{} ({:?})", e.error(), e.debug())),
        _ => None,
    }
}

/// The transport's sink element(s), named `sink`.
fn sink_description(job: &Job) -> String {
    match job.transport {
        Transport::Quicnalu => format!(
            "quicnalusink name=sink address=127.0.0.1 port=0 sync=false cert-file={} key-file={} \
             latency-budget={}{}",
            job.cert,
            job.key,
            crate::BUDGET_MS,
            cc()
        ),
        Transport::QuicnaluDefaults | Transport::QuicnaluPaths | Transport::QuicnaluBonded => {
            format!(
                "quicnalusink name=sink address=127.0.0.1 port=0 sync=false cert-file={} \
                 key-file={}",
                job.cert, job.key
            )
        }
        Transport::QuicnaluMoq => {
            let (url, fp) = moq_relay();
            format!(
                "quicnalusink name=sink address=127.0.0.1 port=0 sync=false cert-file={} \
                 key-file={} moq-url={url} moq-certificate-fingerprint={fp}",
                job.cert, job.key
            )
        }
        Transport::MoqDev => {
            crate::moq_relay::load_moq_gst();
            let (url, _) = moq_relay();
            // moqsink has no `sync`: the identity before it paces the clip.
            format!("moqsink name=sink url={url} broadcast=moq-dev.hang tls-disable-verify=true")
        }
        Transport::Srt | Transport::SrtLow | Transport::Srt120 => format!(
            "srtsink name=sink uri=srt://127.0.0.1:{}?mode=listener latency={} sync=false \
             wait-for-connection=true",
            job.port, job.srt_latency_ms
        ),
        Transport::Rist | Transport::RistRoundRobin => rist_sink(job),
        Transport::Tcp => "tcpserversink name=sink host=127.0.0.1 port=0 sync=false".into(),
        Transport::Udp => format!(
            "rtph265pay mtu=1400 config-interval=-1 ! udpsink name=sink host=127.0.0.1 \
             port={} sync=false buffer-size=8388608",
            job.port
        ),
    }
}

/// Stamps every buffer leaving `pace` (see stamp.rs); past `limit` frames buffers are
/// dropped and `done` is told once.
fn stamp_frames(
    pipeline: &gst::Pipeline,
    limit: u64,
    done: std::sync::mpsc::Sender<()>,
) -> Arc<Mutex<u64>> {
    let sent = Arc::new(Mutex::new(0u64));
    let counter = sent.clone();
    let done = Mutex::new(Some(done));
    // The latest reference picture stamped (see Stamp::depends_on).
    let last_reference: Mutex<Option<u64>> = Mutex::new(None);
    let pad = pipeline
        .by_name("pace")
        .and_then(|p| p.static_pad("src"))
        .expect("pace pad");
    pad.add_probe(gst::PadProbeType::BUFFER, move |_, info| {
        let Some(buffer) = info.buffer() else {
            return gst::PadProbeReturn::Ok;
        };
        let mut seq = counter.lock().unwrap();
        if *seq >= limit {
            if let Some(done) = done.lock().unwrap().take() {
                let _ = done.send(());
            }
            return gst::PadProbeReturn::Drop;
        }
        // The bench's encoders have one temporal sub-layer.
        let au = buffer
            .map_readable()
            .ok()
            .and_then(|m| gstquicnalu::media::h265::inspect(&m).ok())
            .unwrap_or_default();
        let mut last_reference = last_reference.lock().unwrap();
        let depends_on = if au.irap { None } else { *last_reference };
        if au.drop_cost(1) != gstquicnalu::media::h265::DropCost::Alone {
            *last_reference = Some(*seq);
        }
        let stamp = stamp::encode(Stamp {
            seq: *seq,
            sent_ns: now_ns(),
            depends_on,
        });
        *seq += 1;
        let mut stamped = buffer.copy();
        stamped
            .make_mut()
            .append_memory(gst::Memory::from_slice(stamp));
        info.data = Some(gst::PadProbeData::Buffer(stamped));
        gst::PadProbeReturn::Ok
    });
    sent
}

pub fn sender(job: &Job) {
    let mut sink = sink_description(job);
    // quicnalu-defaults keeps every default. Set as a string, which parses into the
    // property whether it is a boolean or an enum (nicks "false", "true", "auto").
    let t = job.transport;
    let adapt = job.live.and_then(|l| l.adapt);
    if let Some(a) = adapt.filter(|_| t.is_quicnalu() && t != Transport::QuicnaluDefaults) {
        sink.push_str(&format!(" adapt-bitrate={a}"));
    }
    let live = job.live.is_some();
    let source = if let Some(l) = job.live {
        // x265's zerolatency tune rules out B pictures; without it, three non-reference
        // ones (TRAIL_N) after each P.
        let pictures = match l.bframes {
            0 => "tune=zerolatency".to_string(),
            n => format!("option-string=bframes={n}:b-pyramid=0"),
        };
        format!(
            "videotestsrc is-live=true pattern=zone-plate kx2=20 ky2=20 kt=1 kt2=2 ! \
             video/x-raw,format=I420,width=480,height=272,framerate=30/1 ! \
             x265enc speed-preset=ultrafast {pictures} bitrate={} key-int-max={} ! \
             h265parse ! video/x-h265,stream-format=byte-stream,alignment=au ! identity name=pace",
            l.kbps, l.key_int
        )
    } else {
        "appsrc name=src is-live=true format=time do-timestamp=false block=true \
         max-bytes=67108864 caps=video/x-h265,stream-format=byte-stream,alignment=au ! \
         identity name=pace sync=true"
            .into()
    };
    let aus = if live {
        Vec::new()
    } else {
        load_access_units(&job.content)
    };
    let pipeline = launch(&format!("{source} ! {sink}"));
    let (done_tx, done) = std::sync::mpsc::channel();
    let sent = stamp_frames(&pipeline, job.frames, done_tx);
    // srtsink's wait-for-connection holds the stream for its first caller only: in a
    // fan-out the others would join mid-group.
    let callers = Arc::new(AtomicU32::new(0));
    if job.transport.is_srt() {
        let callers = callers.clone();
        pipeline
            .by_name("sink")
            .expect("sink")
            .connect("caller-added", false, move |_| {
                callers.fetch_add(1, Ordering::Relaxed);
                None
            });
    }
    // PAUSED binds the sink; a live source only starts producing at PLAYING (after GO).
    pipeline
        .set_state(gst::State::Paused)
        .expect("sender pauses");
    let sink = pipeline.by_name("sink").expect("sink");
    match job.transport {
        t if t.is_quicnalu() => say(&format!("PORT {}", sink.property::<u32>("bound-port"))),
        Transport::Tcp => say(&format!("PORT {}", sink.property::<i32>("current-port"))),
        _ => say(&format!("PORT {}", job.port)),
    }
    wait_line("GO");
    if job.transport.is_srt() {
        wait_for(|| callers.load(Ordering::Relaxed) >= job.receivers);
    }
    let cpu0 = cpu_seconds();
    pipeline
        .set_state(gst::State::Playing)
        .expect("sender plays");
    let clock = pipeline.clock().expect("clock");
    let interval = 1e9 / job.fps;
    let last = if live {
        let run = Duration::from_secs_f64(job.frames as f64 / job.fps);
        let _ = done.recv_timeout(run + Duration::from_secs(60));
        clock.time()
    } else {
        let src = pipeline
            .by_name("src")
            .and_then(|e| e.downcast::<gst_app::AppSrc>().ok())
            .expect("appsrc");
        let start = clock.time() - pipeline.base_time().expect("base time")
            + gst::ClockTime::from_mseconds(50);
        for i in 0..job.frames {
            let (data, irap) = &aus[(i as usize) % aus.len()];
            let mut buffer = gst::Buffer::from_slice(data.clone());
            {
                let b = buffer.get_mut().unwrap();
                let t = start + gst::ClockTime::from_nseconds((i as f64 * interval) as u64);
                b.set_pts(t);
                b.set_dts(t);
                if !irap {
                    b.set_flags(gst::BufferFlags::DELTA_UNIT);
                }
            }
            if src.push_buffer(buffer).is_err() {
                break;
            }
        }
        start
            + gst::ClockTime::from_nseconds((job.frames as f64 * interval) as u64)
            + pipeline.base_time().expect("base time")
    };
    // Linger until the last frame has left the pacer and had the budget to arrive: some
    // sinks (srtsink) drop what is still buffered when EOS closes them.
    let linger = last + gst::ClockTime::from_mseconds(u64::from(crate::BUDGET_MS) + 300);
    let _ = clock.new_single_shot_id(linger).wait();
    pipeline.send_event(gst::event::Eos::new());
    let bus = pipeline.bus().expect("bus");
    // ristsink (1.22) never posts EOS, its RTCP branch runs on: the linger gave the last
    // frame its time, and only an error counts.
    let rist = job.transport.is_rist();
    let wait = gst::ClockTime::from_seconds(if rist { 0 } else { 60 });
    let end = bus.timed_pop_filtered(wait, &[gst::MessageType::Eos, gst::MessageType::Error]);
    let error = match end.as_ref().map(|m| m.view()) {
        Some(gst::MessageView::Error(e)) => Some(format!("{}", e.error())),
        None if !rist => Some("no EOS within 60 s".into()),
        _ => None,
    };
    let cpu = cpu_seconds() - cpu0;
    let _ = pipeline.set_state(gst::State::Null);
    let sent = *sent.lock().unwrap();
    say(&format!(
        "SENT {sent} {cpu:.3} {}",
        error.unwrap_or_else(|| "ok".into()).replace(' ', "_")
    ));
}

/// What the receiver's probe collects: (seq, latency ns, depends on, arrival on
/// CLOCK_MONOTONIC ns, bytes out of the source since the stamp before) per stamp, bytes
/// delivered.
#[derive(Default)]
struct Tally {
    frames: Vec<(u64, u64, Option<u64>, u64, u64)>,
    bytes: u64,
    /// Bytes since the last stamp seen.
    pending: u64,
    scanner: Scanner,
}

pub fn receiver(job: &Job) {
    let source = match job.transport {
        Transport::Quicnalu => format!(
            "quicnalusrc name=tap address=127.0.0.1 port={} ca-file={} latency={}{}",
            job.port,
            job.cert,
            crate::BUDGET_MS,
            cc()
        ),
        Transport::QuicnaluDefaults => format!(
            "quicnalusrc name=tap address=127.0.0.1 port={} ca-file={}{}",
            job.port,
            job.cert,
            src_latency(job)
        ),
        Transport::QuicnaluMoq => {
            let (url, fp) = moq_relay();
            format!(
                "quicnalusrc name=tap moq-url={url} certificate-fingerprint={fp}{}",
                src_latency(job)
            )
        }
        Transport::MoqDev => {
            crate::moq_relay::load_moq_gst();
            // Behind an impairment relay, the port is its, in front of the moq-relay.
            let url = match job.port {
                0 => moq_relay().0,
                port => format!("moql://127.0.0.1:{port}"),
            };
            format!("moqsrc name=tap url={url} broadcast=moq-dev.hang tls-disable-verify=true")
        }
        Transport::Srt | Transport::SrtLow | Transport::Srt120 => format!(
            "srtsrc name=tap uri=srt://127.0.0.1:{}?mode=caller latency={}",
            job.port, job.srt_latency_ms
        ),
        Transport::QuicnaluPaths
        | Transport::QuicnaluBonded
        | Transport::Rist
        | Transport::RistRoundRobin => route_source(job),
        Transport::Tcp => format!("tcpclientsrc name=tap host=127.0.0.1 port={}", job.port),
        Transport::Udp => format!(
            "udpsrc port={} buffer-size=8388608 caps=\"application/x-rtp,media=video,\
             clock-rate=90000,encoding-name=H265\" ! rtph265depay name=tap",
            job.port
        ),
    };
    // A fan-out's receivers share this process, one pipeline each: a process apiece
    // would add its own start-up and threads to the two cores the sender runs on, for
    // every transport alike, and measure that rather than the transport.
    let pipelines: Vec<gst::Pipeline> = (0..job.receivers.max(1))
        .map(|_| launch(&format!("{source} ! fakesink sync=false async=false")))
        .inspect(|p| prepare_rist_receiver(p, job.transport))
        .collect();
    let tallies: Vec<Arc<Mutex<Tally>>> = pipelines.iter().map(|_| Default::default()).collect();
    let connected = Arc::new(AtomicU32::new(0));
    for (pipeline, records) in pipelines.iter().zip(&tallies) {
        let records = records.clone();
        let tally = move |_: &gst::Pad, info: &mut gst::PadProbeInfo| {
            if let Some(buffer) = info.buffer() {
                let now = now_ns();
                let mut guard = records.lock().unwrap();
                let Tally {
                    frames,
                    bytes,
                    pending,
                    scanner,
                } = &mut *guard;
                *bytes += buffer.size() as u64;
                *pending += buffer.size() as u64;
                for mem in buffer.iter_memories() {
                    if let Ok(map) = mem.map_readable() {
                        scanner.scan(&map, &mut |s: Stamp| {
                            let latency = now.saturating_sub(s.sent_ns);
                            frames.push((s.seq, latency, s.depends_on, now, *pending));
                            *pending = 0;
                        });
                    }
                }
            }
            gst::PadProbeReturn::Ok
        };
        let tap = pipeline.by_name("tap").expect("tap");
        match tap.static_pad("src") {
            Some(pad) => {
                pad.add_probe(gst::PadProbeType::BUFFER, tally);
            }
            // moqsrc's pads come with the catalog.
            None => {
                let tally = Arc::new(tally);
                tap.connect_pad_added(move |_, pad| {
                    let tally = tally.clone();
                    pad.add_probe(gst::PadProbeType::BUFFER, move |p, i| tally(p, i));
                });
            }
        }
        // Counted as posted; the messages stay on the bus for error_of.
        let connected = connected.clone();
        pipeline
            .bus()
            .expect("bus")
            .set_sync_handler(move |_, msg| {
                if msg.structure().is_some_and(|s| {
                    matches!(
                        s.name().as_str(),
                        "quicnalusrc-connected" | "quicnalusrc-moq-connected"
                    )
                }) {
                    connected.fetch_add(1, Ordering::Relaxed);
                }
                gst::BusSyncReply::Pass
            });
    }
    // A late joiner's time to its first decodable frame counts from here.
    let start = now_ns();
    for pipeline in &pipelines {
        pipeline
            .set_state(gst::State::Playing)
            .expect("receiver plays");
    }
    // READY once every handshake is done, so that all receivers have the stream from its
    // first frame.
    if job.transport.is_quicnalu() {
        wait_for(|| connected.load(Ordering::Relaxed) >= pipelines.len() as u32);
    }
    say(&format!("READY {start}"));
    let cpu0 = cpu_seconds();
    wait_line("STOP");
    let cpu = cpu_seconds() - cpu0;
    let error = pipelines
        .iter()
        .find_map(|p| p.bus().and_then(|b| error_of(&b)));
    let mut out = String::new();
    let (mut frames, mut bytes) = (0, 0);
    for (i, (pipeline, records)) in pipelines.iter().zip(&tallies).enumerate() {
        let _ = pipeline.set_state(gst::State::Null);
        let r = records.lock().unwrap();
        for (seq, latency, depends_on, arrival, size) in &r.frames {
            let depends_on = depends_on.map_or("-".to_string(), |d| d.to_string());
            out.push_str(&format!(
                "{seq} {latency} {depends_on} {arrival} {i} {size}\n"
            ));
        }
        frames += r.frames.len();
        bytes += r.bytes;
    }
    std::fs::write(&job.records, out).expect("write records");
    say(&format!(
        "RECV {frames} {bytes} {cpu:.3} {}",
        error.unwrap_or_else(|| "ok".into()).replace(' ', "_")
    ));
}

// The routes family (routes.rs): quicnalusrc with paths, and RIST with bonding.

/// rtph265pay's payload type (dynamic), which ristsrc cannot map by itself.
const RTP_PT: u32 = 96;

/// The quicnalusrc or ristsrc description for the receiver (roles.rs), named `tap` where
/// the access units leave the transport.
fn route_source(job: &Job) -> String {
    match job.transport {
        Transport::QuicnaluPaths | Transport::QuicnaluBonded => {
            let mode = if job.transport == Transport::QuicnaluBonded {
                " path-mode=bonded"
            } else {
                ""
            };
            format!(
                "quicnalusrc name=tap address=127.0.0.1 port={} ca-file={} paths={}{mode}",
                job.port, job.cert, job.routes
            )
        }
        _ => format!(
            "ristsrc name=rist bonding-addresses={} receiver-buffer={} ! rtph265depay name=tap",
            job.routes, job.srt_latency_ms
        ),
    }
}

/// The ristsink description for the sender (roles.rs): to the routes' relays.
fn rist_sink(job: &Job) -> String {
    let method = match job.transport {
        Transport::RistRoundRobin => "round-robin",
        _ => "broadcast",
    };
    // The clip's IRAPs are CRA pictures, before which rtph265pay repeats no parameter
    // sets: h265parse puts them in front of every IRAP, so that a receiver that missed the
    // first one can start at the next.
    format!(
        "h265parse config-interval=-1 ! rtph265pay mtu=1400 config-interval=-1 pt={RTP_PT} ! \
         ristsink name=sink bonding-addresses={} bonding-method={method}",
        job.routes
    )
}

/// Readies ristsrc's rtpbin for H.265 over both routes. ristsrc maps static RTP payload
/// types only (MPEG-TS, RIST's usual payload) and drops every other packet: tell it what
/// rtph265pay's dynamic one carries, as an application of rtpbin does.
fn prepare_rist_receiver(pipeline: &gst::Pipeline, t: Transport) {
    if !t.is_rist() {
        return;
    }
    let rtpbin = pipeline
        .by_name("rist")
        .and_then(|r| r.downcast::<gst::Bin>().ok())
        .and_then(|r| r.by_name("rist_recv_rtpbin"))
        .expect("ristsrc's rtpbin");
    let caps = gst::Caps::builder("application/x-rtp")
        .field("media", "video")
        .field("clock-rate", 90_000i32)
        .field("encoding-name", "H265")
        .build();
    // Each bonded session holds a new sender on probation until it sees two consecutive
    // sequence numbers, which round-robin never gives one session: it then loses about the
    // first second (in a trial, the first IRAP and its 2 s group). ristsrc lifts probation
    // only for its retransmissions; lift it for the stream as well.
    for id in 0..2u32 {
        let session = rtpbin.emit_by_name::<Option<glib::Object>>("get-internal-session", &[&id]);
        if let Some(session) = session {
            session.set_property("probation", 0u32);
        }
    }
    rtpbin.connect("request-pt-map", false, move |args| {
        let pt = args.get(2).and_then(|v| v.get::<u32>().ok());
        (pt == Some(RTP_PT)).then(|| caps.to_value())
    });
}
