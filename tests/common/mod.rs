//! Shared test scaffolding: plugin registration, a throw-away certificate, the shared media,
//! and sender/receiver pipelines on loopback with port 0.
#![allow(dead_code)] // each test binary uses its own subset

use gst::prelude::*;
use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc, Mutex, OnceLock};
use std::time::Duration;

pub mod moq;
pub mod raw;

/// Upper bound for anything a test waits on; reaching it is a failure, never a sync point.
pub const WATCHDOG: Duration = Duration::from_secs(120);

pub fn init() {
    static INIT: OnceLock<()> = OnceLock::new();
    INIT.get_or_init(|| {
        gst::init().expect("gst init");
        gstquicnalu::plugin_register_static().expect("register plugin");
    });
}

pub struct Certs {
    _dir: tempfile::TempDir,
    pub cert: String,
    pub key: String,
}

/// A self-signed certificate for localhost / 127.0.0.1, made once per test binary.
pub fn certs() -> &'static Certs {
    static CERTS: OnceLock<Certs> = OnceLock::new();
    CERTS.get_or_init(|| certs_for("DNS:localhost,IP:127.0.0.1"))
}

/// A self-signed certificate whose subject alternative names are `san` (openssl's form).
pub fn certs_for(san: &str) -> Certs {
    let dir = tempfile::tempdir().expect("tempdir");
    let cert = dir.path().join("cert.pem");
    let key = dir.path().join("key.pem");
    let status = Command::new("openssl")
        .args(["req", "-x509", "-newkey", "ec", "-pkeyopt"])
        .args(["ec_paramgen_curve:prime256v1", "-nodes", "-days", "2"])
        .args(["-subj", "/CN=quicnalu test"])
        .args(["-addext", &format!("subjectAltName={san}")])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output()
        .expect("run openssl");
    assert!(status.status.success(), "openssl: {status:?}");
    Certs {
        cert: cert.to_string_lossy().into_owned(),
        key: key.to_string_lossy().into_owned(),
        _dir: dir,
    }
}

/// The shared test media: `../shared/media` next to the repository, or `$QUICNALU_MEDIA`.
pub fn media(name: &str) -> PathBuf {
    let dir = std::env::var_os("QUICNALU_MEDIA")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/media"));
    assert!(
        dir.is_dir(),
        "test media not found at {}: set QUICNALU_MEDIA",
        dir.display()
    );
    dir.join(name)
}

/// Every usable stream in ../shared/media (the bad one excluded).
pub fn good_media() -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(media(""))
        .expect("../shared/media")
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| !n.ends_with(".md") && !n.starts_with("bad-"))
        .collect();
    names.sort();
    names
}

/// A running pipeline and its bus.
pub struct Running {
    pub pipeline: gst::Pipeline,
}

impl Running {
    pub fn launch(description: &str) -> Running {
        let pipeline = gst::parse::launch(description)
            .unwrap_or_else(|e| panic!("parse '{description}': {e}"))
            .downcast::<gst::Pipeline>()
            .expect("a pipeline");
        Running { pipeline }
    }

    pub fn by_name(&self, name: &str) -> gst::Element {
        self.pipeline.by_name(name).expect(name)
    }

    /// Waits for EOS or an error; returns the error text, if any.
    pub fn finish(&self, timeout: Duration) -> Result<(), String> {
        let bus = self.pipeline.bus().expect("bus");
        let msg = bus
            .timed_pop_filtered(
                gst::ClockTime::from_nseconds(timeout.as_nanos() as u64),
                &[gst::MessageType::Eos, gst::MessageType::Error],
            )
            .ok_or_else(|| format!("no EOS or error within {timeout:?}"))?;
        match msg.view() {
            gst::MessageView::Error(e) => Err(error_text(e)),
            _ => Ok(()),
        }
    }

    /// Waits for an error message and returns its text; EOS or silence fail the test.
    pub fn expect_error(&self) -> String {
        match self.finish(WATCHDOG) {
            Err(e) => e,
            Ok(()) => panic!("expected an error, got EOS"),
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.pipeline.set_state(gst::State::Null);
    }
}

/// The error's text, its debug text, and its kind in brackets, such as `[OpenRead]`.
pub fn error_text(e: &gst::message::Error) -> String {
    let err = e.error();
    let kind = err
        .kind::<gst::ResourceError>()
        .map(|k| format!("{k:?}"))
        .or_else(|| err.kind::<gst::StreamError>().map(|k| format!("{k:?}")))
        .unwrap_or_default();
    format!(
        "{} ({}) [{kind}]",
        err,
        e.debug().map(|d| d.to_string()).unwrap_or_default()
    )
}

/// Starts `description` (which must name a quicnalusink `sink` with port=0) and returns it
/// with the port it bound.
pub fn start_sender(description: &str) -> (Running, u16) {
    start_sender_with(description, |_| ())
}

/// Like [`start_sender`], running `prepare` (to add probes, say) before the first buffer.
pub fn start_sender_with(description: &str, prepare: impl FnOnce(&Running)) -> (Running, u16) {
    let sender = Running::launch(description);
    prepare(&sender);
    // READY -> PAUSED starts the sink; with wait-for-connection it then prerolls async.
    sender
        .pipeline
        .set_state(gst::State::Playing)
        .expect("sender to PLAYING");
    let port: u32 = sender.by_name("sink").property("bound-port");
    assert_ne!(port, 0, "sink bound a port");
    (sender, port as u16)
}

/// Like [`start_sender`], also recording every access unit leaving the element named
/// `parse` (the sender's h265parse).
pub fn start_tapped_sender(description: &str) -> (Running, u16, Arc<Mutex<Vec<Vec<u8>>>>) {
    start_tapped_sender_by(description, tap)
}

/// Like [`start_tapped_sender`], recording only [`fingerprints`].
pub fn start_fingerprinted_sender(description: &str) -> (Running, u16, Fingerprints) {
    start_tapped_sender_by(description, fingerprints)
}

/// Starts `description` with `tap` on the src pad of its element named `parse`.
fn start_tapped_sender_by<T>(description: &str, tap: fn(&gst::Pad) -> T) -> (Running, u16, T) {
    let mut sent = None;
    let (sender, port) = start_sender_with(description, |s| {
        sent = Some(tap(&s.by_name("parse").static_pad("src").unwrap()))
    });
    (sender, port, sent.expect("tap installed"))
}

pub fn sink_props() -> String {
    let c = certs();
    format!("port=0 cert-file={} key-file={}", c.cert, c.key)
}

pub fn src_props(port: u16) -> String {
    format!(
        "address=127.0.0.1 port={port} ca-file={} timeout=20000",
        certs().cert
    )
}

/// One buffer as an appsink saw it.
#[derive(Clone)]
pub struct Received {
    pub data: Vec<u8>,
    pub pts: Option<gst::ClockTime>,
    pub dts: Option<gst::ClockTime>,
    pub flags: gst::BufferFlags,
    pub meta: Option<gst_plugin_meta::QuicNaluMeta>,
    /// When the appsink took it, in ns of `gst::get_timestamp()` (QuicNaluMeta's clock).
    pub output_time: u64,
}

/// Collects every buffer reaching the appsink `name` and announces each on a channel.
pub fn collect(
    running: &Running,
    name: &str,
) -> (Arc<Mutex<Vec<Received>>>, mpsc::Receiver<usize>) {
    let out = Arc::new(Mutex::new(Vec::new()));
    let (tx, rx) = mpsc::channel();
    let appsink = running
        .by_name(name)
        .downcast::<gst_app::AppSink>()
        .expect("appsink");
    let store = out.clone();
    appsink.set_callbacks(
        gst_app::AppSinkCallbacks::builder()
            .new_sample(move |sink| {
                let sample = sink.pull_sample().map_err(|_| gst::FlowError::Eos)?;
                let buffer = sample.buffer().ok_or(gst::FlowError::Error)?;
                let map = buffer.map_readable().map_err(|_| gst::FlowError::Error)?;
                let mut v = store.lock().unwrap();
                v.push(Received {
                    data: map.to_vec(),
                    pts: buffer.pts(),
                    dts: buffer.dts(),
                    flags: buffer.flags(),
                    meta: gst_plugin_meta::QuicNaluMeta::from_buffer(buffer),
                    output_time: gst::get_timestamp().nseconds(),
                });
                let _ = tx.send(v.len());
                Ok(gst::FlowSuccess::Ok)
            })
            .build(),
    );
    (out, rx)
}

/// Receives from `port` with `quicnalusrc ! appsink` until EOS, waits for the sender's EOS
/// too, and returns every buffer the receiver output.
pub fn receive_all(sender: &Running, port: u16) -> Vec<Received> {
    receive_all_with(sender, port, "")
}

/// [`receive_all`] with extra quicnalusrc properties.
pub fn receive_all_with(sender: &Running, port: u16, src_extra: &str) -> Vec<Received> {
    receive_to_end(sender, receiver(port, src_extra))
}

/// `quicnalusrc ! appsink name=out` (not started) receiving from `port`, with extra src
/// properties (after the defaults, so they override them).
pub fn receiver(port: u16, src_extra: &str) -> Running {
    Running::launch(&format!(
        "quicnalusrc {} {src_extra} ! appsink name=out sync=false",
        src_props(port)
    ))
}

/// Plays `receiver` (from [`receiver`]) until EOS, waits for the sender's EOS too, and
/// returns every buffer the receiver output.
fn receive_to_end(sender: &Running, receiver: Running) -> Vec<Received> {
    let (received, _) = collect(&receiver, "out");
    receiver.pipeline.set_state(gst::State::Playing).unwrap();
    receiver.finish(WATCHDOG).expect("receiver reaches EOS");
    sender.finish(WATCHDOG).expect("sender reaches EOS");
    let received = received.lock().unwrap().clone();
    received
}

/// Records the bytes of every buffer leaving `pad`.
pub fn tap(pad: &gst::Pad) -> Arc<Mutex<Vec<Vec<u8>>>> {
    let out = Arc::new(Mutex::new(Vec::new()));
    let store = out.clone();
    pad.add_probe(gst::PadProbeType::BUFFER, move |_, info| {
        if let Some(buffer) = info.buffer() {
            if let Ok(map) = buffer.map_readable() {
                store.lock().unwrap().push(map.to_vec());
            }
        }
        gst::PadProbeReturn::Ok
    });
    out
}

/// `ffmpeg -f framemd5` of a file: one line per decoded frame.
pub fn framemd5(path: &Path) -> String {
    let out = Command::new("ffmpeg")
        .args(["-v", "error", "-i"])
        .arg(path)
        .args(["-f", "framemd5", "-"])
        .output()
        .expect("run ffmpeg");
    assert!(out.status.success(), "ffmpeg failed on {path:?}: {out:?}");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| !l.starts_with('#'))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Decodes `data` (an H.265 byte-stream) with ffmpeg; returns the frames it decoded and
/// whatever ffmpeg reported at level error (empty for a clean stream).
pub fn decode_check(data: &[u8]) -> (usize, String) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("received.h265");
    std::fs::write(&path, data).unwrap();
    let out = Command::new("ffmpeg")
        .args(["-v", "error", "-i"])
        .arg(&path)
        .args(["-f", "framemd5", "-"])
        .output()
        .expect("run ffmpeg");
    let frames = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .count();
    let mut errors = String::from_utf8_lossy(&out.stderr).into_owned();
    if !out.status.success() {
        errors.push_str(&format!("ffmpeg exited with {}", out.status));
    }
    (frames, errors)
}

/// Every received frame decodes with ffmpeg, without an error.
pub fn assert_decodes(received: &[Received], what: &str) {
    let (decoded, errors) = decode_check(&stream_bytes(received));
    assert!(errors.is_empty(), "{what}: {errors}");
    assert_eq!(decoded, received.len(), "{what}: frames decoded");
}

/// [`framemd5`] of a file that never changes (the shared media), cached across runs in
/// the target directory: decoding the 4K streams takes a minute each.
pub fn framemd5_cached(path: &Path) -> String {
    let meta = std::fs::metadata(path).expect("media file");
    let key = format!(
        "{}-{}-{:?}.framemd5",
        path.file_name().unwrap().to_string_lossy(),
        meta.len(),
        meta.modified().ok()
    )
    .replace(
        |c: char| !c.is_ascii_alphanumeric() && c != '.' && c != '-',
        "_",
    );
    let cache = Path::new(env!("CARGO_TARGET_TMPDIR")).join(key);
    if let Ok(hit) = std::fs::read_to_string(&cache) {
        return hit;
    }
    let fresh = framemd5(path);
    let partial = partial_beside(&cache);
    if std::fs::write(&partial, &fresh).is_ok() {
        let _ = std::fs::rename(&partial, &cache);
    }
    fresh
}

/// A file name beside `path` that no other test writes to, for a file renamed into place
/// once whole: tests run in several processes at once, and any of them may fill a cache.
pub fn partial_beside(path: &Path) -> PathBuf {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let mut name = path.file_name().expect("a file name").to_os_string();
    name.push(format!(
        ".{}-{}.partial",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    ));
    path.with_file_name(name)
}

/// Encodes a test clip with x265enc into a raw .h265 file.
pub fn make_clip(path: &Path, frames: u32, width: u32, height: u32, fps: u32) {
    let description = format!(
        "videotestsrc num-buffers={frames} pattern=zone-plate kx2=20 ky2=20 kt=1 kt2=2 ! \
         video/x-raw,format=I420,width={width},height={height},framerate={fps}/1 ! \
         x265enc speed-preset=ultrafast tune=zerolatency key-int-max=30 ! \
         h265parse ! video/x-h265,stream-format=byte-stream ! filesink location={}",
        path.display()
    );
    let running = Running::launch(&description);
    running
        .pipeline
        .set_state(gst::State::Playing)
        .expect("encode");
    running.finish(WATCHDOG).expect("clip encodes");
}

/// Forwards the structure of every element message on `running`'s bus to a channel (a sync
/// handler: the messages still reach the bus for `finish`).
pub fn element_messages(running: &Running) -> mpsc::Receiver<gst::Structure> {
    let (tx, rx) = mpsc::channel();
    let tx = Mutex::new(tx);
    running
        .pipeline
        .bus()
        .expect("bus")
        .set_sync_handler(move |_, msg| {
            if let gst::MessageView::Element(e) = msg.view() {
                if let Some(s) = e.structure() {
                    let _ = tx.lock().unwrap().send(s.to_owned());
                }
            }
            gst::BusSyncReply::Pass
        });
    rx
}

/// Waits for the next element message called `name`, skipping others.
pub fn next_message(messages: &mpsc::Receiver<gst::Structure>, name: &str) -> gst::Structure {
    loop {
        let s = messages
            .recv_timeout(WATCHDOG)
            .unwrap_or_else(|_| panic!("no '{name}' message"));
        if s.name() == name {
            return s;
        }
    }
}

/// A live 30 fps x265 pipeline ending in a quicnalusink named `sink` with a 200 ms
/// latency budget; `sink_port` 0 binds any port.
pub fn live_sender_description(size: &str, extra: &str, key_int: u32, sink_port: u16) -> String {
    format!(
        "videotestsrc is-live=true pattern=ball {extra} ! \
         video/x-raw,{size},framerate=30/1 ! \
         x265enc key-int-max={key_int} speed-preset=ultrafast tune=zerolatency bitrate=2000 ! \
         h265parse ! quicnalusink name=sink latency-budget=200 {}",
        sink_props().replace("port=0", &format!("port={sink_port}"))
    )
}

/// A live 30 fps x265 pipeline (zone-plate, about 2 Mbit/s) ending in a quicnalusink with
/// every latency property at its default; started on any port, returned with the port.
pub fn live_sender_with_defaults(size: &str, extra: &str, key_int: u32) -> (Running, u16) {
    start_sender(&format!(
        "videotestsrc is-live=true pattern=zone-plate kx2=20 ky2=20 kt=1 kt2=2 {extra} ! \
         video/x-raw,{size},framerate=30/1 ! \
         x265enc key-int-max={key_int} speed-preset=ultrafast tune=zerolatency bitrate=2000 ! \
         h265parse ! quicnalusink name=sink {}",
        sink_props()
    ))
}

/// [`live_sender_description`] started on any port; returns it with the port.
pub fn live_sender(size: &str, extra: &str, key_int: u32) -> (Running, u16) {
    start_sender(&live_sender_description(size, extra, key_int, 0))
}

/// An impairment relay, seeded, in front of the sender on `port`.
pub fn relay_to(port: u16, impairment: udp_impair::Impairment) -> udp_impair::Relay {
    use udp_impair::{Relay, RelayConfig};
    let server = format!("127.0.0.1:{port}").parse().unwrap();
    Relay::start(RelayConfig {
        seed: 42,
        ..RelayConfig::symmetric(server, impairment)
    })
    .expect("relay starts")
}

/// `quicnalusrc ! appsink name=out` receiving through `relay`, with extra src properties.
pub fn receiver_via(relay: &udp_impair::Relay, src_extra: &str) -> Running {
    receiver(relay.local_addr().port(), src_extra)
}

/// A link capped at `bps` with a queue of `queue_bytes`, 5 ms each way.
pub fn capped_link(bps: u64, queue_bytes: usize) -> udp_impair::Impairment {
    udp_impair::Impairment {
        delay: Duration::from_millis(5),
        rate_bps: Some(bps),
        queue_bytes,
        ..Default::default()
    }
}

/// Like [`receive_all`], through `relay`.
pub fn receive_all_via(sender: &Running, relay: &udp_impair::Relay) -> Vec<Received> {
    receive_to_end(sender, receiver_via(relay, ""))
}

/// The received access units as one byte-stream.
pub fn stream_bytes(received: &[Received]) -> Vec<u8> {
    received
        .iter()
        .flat_map(|r| r.data.iter().copied())
        .collect()
}

/// Decode timestamps never go back, across skips and reconnections too.
pub fn assert_monotonic(received: &[Received]) {
    let times: Vec<_> = received.iter().filter_map(|r| r.dts.or(r.pts)).collect();
    assert!(times.windows(2).all(|w| w[0] <= w[1]), "timestamps go back");
}

/// Waits until `store` holds at least `n` buffers.
pub fn wait_for(store: &Mutex<Vec<Received>>, arrived: &mpsc::Receiver<usize>, n: usize) {
    while store.lock().unwrap().len() < n {
        arrived
            .recv_timeout(WATCHDOG)
            .expect("frames keep arriving");
    }
}

/// 10 s of 320x240 noise at about 25 Mbit/s: a receiver that stops reading falls 8 MiB
/// behind within a few seconds.
pub fn noise_clip() -> PathBuf {
    cached_clip(
        "noise-320x240-300.h265",
        "videotestsrc num-buffers=300 pattern=snow ! \
         video/x-raw,width=320,height=240,framerate=30/1 ! \
         x265enc speed-preset=ultrafast tune=zerolatency bitrate=40000 key-int-max=30",
    )
}

/// The output of `encoder` (a pipeline ending in an H.265 encoder), parsed into a raw
/// .h265 file named `name`. Encoded once per target directory.
pub fn cached_clip(name: &str, encoder: &str) -> PathBuf {
    let path = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(name);
    if !path.exists() {
        let partial = partial_beside(&path);
        let encode = Running::launch(&format!(
            "{encoder} ! h265parse ! filesink location={}",
            partial.display()
        ));
        encode.pipeline.set_state(gst::State::Playing).unwrap();
        encode.finish(WATCHDOG).expect("clip encodes");
        std::fs::rename(&partial, &path).unwrap();
    }
    path
}

/// A buffer's hash and its QuicNaluMeta arrival time (0 without one), per buffer.
pub type Fingerprints = Arc<Mutex<Vec<(u64, u64)>>>;

/// The steady receiver of a test with a misbehaving one got every frame sent, byte-exact.
pub fn assert_every_frame(received: &Fingerprints, sent: &Fingerprints) {
    let received = received.lock().unwrap().clone();
    let sent = sent.lock().unwrap().clone();
    println!(
        "steady receiver: {} of {} frames",
        received.len(),
        sent.len()
    );
    assert_eq!(
        received.len(),
        sent.len(),
        "the steady receiver got every frame"
    );
    assert!(
        received.iter().zip(&sent).all(|(r, s)| r.0 == s.0),
        "byte-exact"
    );
}

/// `quicnalusrc name=src ! fakesink` (not started) receiving from `port`, recording the
/// [`fingerprints`] of what it outputs.
pub fn fingerprinted_receiver(port: u16) -> (Running, Fingerprints) {
    let receiver = Running::launch(&format!(
        "quicnalusrc name=src {} ! fakesink",
        src_props(port)
    ));
    let received = fingerprints(&receiver.by_name("src").static_pad("src").unwrap());
    (receiver, received)
}

/// Hashes of the buffers passing `pad`, with their arrival QuicNaluMeta time when they
/// have one: enough to compare streams without holding megabytes that would hide the
/// element's own memory use.
pub fn fingerprints(pad: &gst::Pad) -> Fingerprints {
    let out = Arc::new(Mutex::new(Vec::new()));
    let store = out.clone();
    pad.add_probe(gst::PadProbeType::BUFFER, move |_, info| {
        if let Some(buffer) = info.buffer() {
            let map = buffer.map_readable().expect("readable buffer");
            let mut hasher = DefaultHasher::new();
            map.as_slice().hash(&mut hasher);
            let arrival =
                gst_plugin_meta::QuicNaluMeta::from_buffer(buffer).map_or(0, |m| m.arrival_time);
            store.lock().unwrap().push((hasher.finish(), arrival));
        }
        gst::PadProbeReturn::Ok
    });
    out
}

/// The plugin's cdylib as this `cargo test` built it: next to the test binary
/// (target/<profile>/deps/), or one level up where `cargo build` copies it. (`cargo test`
/// leaves the copy one level up as the last `cargo build` made it.)
pub fn plugin_library() -> PathBuf {
    let exe = std::env::current_exe().expect("test binary path");
    let deps = exe.parent().expect("deps folder");
    [deps, deps.parent().expect("profile folder")]
        .iter()
        .map(|dir| dir.join("libgstquicnalu.so"))
        .find(|p| p.exists())
        .unwrap_or_else(|| panic!("libgstquicnalu.so not built next to {}", exe.display()))
}

/// A folder holding only [`plugin_library`], for GST_PLUGIN_PATH in child processes (the
/// build folders hold other libraries GStreamer would try to load).
pub fn plugin_dir() -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    std::os::unix::fs::symlink(plugin_library(), dir.path().join("libgstquicnalu.so"))
        .expect("link");
    dir
}
