//! `make demo`: encodes a clip with x265enc, makes a throw-away certificate, streams the clip
//! over QUIC on 127.0.0.1 with real-time pacing, decodes it, shows it (or, without a display,
//! writes the first decoded picture to a PNG file), and prints what happened.
//!
//!     cargo run --release --example loopback -- [-s SECONDS] [--show | --png FILE]

mod common;

use gst::prelude::*;
use gst_plugin_meta::QuicNaluMeta;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::Instant;

const USAGE: &str = "usage: loopback [-s SECONDS] [--show | --png FILE]
  -s SECONDS  length of the generated 720p30 clip (default 5)
  --show      display the decoded video (default when DISPLAY or WAYLAND_DISPLAY is set)
  --png FILE  write the first decoded picture to FILE instead (default without a display:
              demo-frame.png in the build's target folder)";

#[derive(Default)]
struct Tally {
    sent: u64,
    received: u64,
    decoded: u64,
    first_decoded: Option<Instant>,
    latencies_us: Vec<u64>,
}

fn main() {
    let flags = common::parse_flags(USAGE, &["-s", "--png"], &["--show"]);
    let seconds: u32 = flags
        .get("-s")
        .map(|s| {
            s.parse()
                .unwrap_or_else(|_| common::die(USAGE, "-s takes seconds"))
        })
        .unwrap_or(5);
    if flags.contains_key("--show") && flags.contains_key("--png") {
        common::die(USAGE, "--show and --png exclude each other");
    }
    // autovideosink without a display probes sinks that can crash (dfbvideosink), so a
    // headless run never builds one.
    let output = match flags.get("--png") {
        Some(png) => Output::Png(png.into()),
        None if flags.contains_key("--show") || has_display() => Output::Window,
        None => Output::Png(default_png()),
    };
    common::init();
    let dir = std::env::temp_dir().join(format!("quicnalu-demo-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let clip = dir.join("clip.h265");
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));

    eprintln!("encoding a {seconds} s 720p30 clip with x265enc ...");
    encode_clip(&clip, seconds * 30);
    make_certificate(&cert, &key);

    let sender = common::launch(&format!(
        "filesrc location={} ! h265parse name=parse ! quicnalusink name=sink address=127.0.0.1 \
         port=0 cert-file={} key-file={}",
        clip.display(),
        cert.display(),
        key.display()
    ));
    let tally = Arc::new(Mutex::new(Tally::default()));
    count_buffers(&sender, "parse", "src", &tally, |t, _| t.sent += 1);
    sender
        .set_state(gst::State::Playing)
        .unwrap_or_else(|_| common::die("", "sender failed to start"));
    let port: u32 = sender.by_name("sink").expect("sink").property("bound-port");

    let video_sink = match &output {
        Output::Window => "videoconvert ! autovideosink",
        Output::Png(_) => "fakesink sync=true",
    };
    let receiver = common::launch(&format!(
        "quicnalusrc name=src address=127.0.0.1 port={port} ca-file={} ! \
         h265parse ! avdec_h265 name=dec ! {video_sink}",
        cert.display()
    ));
    count_buffers(&receiver, "src", "src", &tally, |t, buffer| {
        t.received += 1;
        if let Some(meta) = QuicNaluMeta::from_buffer(buffer) {
            let latency = meta.arrival_time.saturating_sub(meta.sender_time);
            t.latencies_us.push(latency / 1000);
        }
    });
    count_buffers(&receiver, "dec", "src", &tally, |t, _| {
        t.decoded += 1;
        t.first_decoded.get_or_insert_with(Instant::now);
    });
    // The first decoded picture, encoded to PNG after the run so it costs the stream nothing
    // (and probed after the count above, so its copy is not in the time to the first frame).
    let first_picture = Arc::new(Mutex::new(None::<gst::Sample>));
    if let Output::Png(_) = &output {
        let store = first_picture.clone();
        let pad = receiver.by_name("dec").and_then(|d| d.static_pad("src"));
        pad.expect("decoder src pad")
            .add_probe(gst::PadProbeType::BUFFER, move |pad, info| {
                let mut first = store.lock().unwrap();
                if let (None, Some(buffer)) = (&*first, info.buffer()) {
                    // A copy: holding the decoder's own buffer could starve its pool.
                    *first = Some(
                        gst::Sample::builder()
                            .buffer(&buffer.copy_deep().expect("copyable picture"))
                            .caps_if_some(pad.current_caps().as_ref())
                            .build(),
                    );
                }
                gst::PadProbeReturn::Ok
            });
    }

    let started = Instant::now();
    eprintln!("streaming over QUIC on 127.0.0.1:{port} ...");
    let received = common::run(&receiver);
    let sent = sender
        .bus()
        .and_then(|bus| {
            bus.timed_pop_filtered(
                gst::ClockTime::from_seconds(10),
                &[gst::MessageType::Eos, gst::MessageType::Error],
            )
        })
        .map(|m| matches!(m.view(), gst::MessageView::Eos(_)));
    let _ = sender.set_state(gst::State::Null);
    let _ = std::fs::remove_dir_all(&dir);
    if let Err(e) = received {
        eprintln!("receiver error: {e}");
        std::process::exit(1);
    }

    let mut t = tally.lock().unwrap();
    t.latencies_us.sort_unstable();
    let pct = |p: f64| {
        let l = &t.latencies_us;
        l.get(((l.len() as f64 - 1.0) * p).round() as usize)
            .map_or(0.0, |us| *us as f64 / 1000.0)
    };
    println!("frames sent:          {}", t.sent);
    println!("frames received:      {}", t.received);
    println!("frames decoded:       {}", t.decoded);
    if let Some(first) = t.first_decoded {
        println!(
            "time to first frame:  {:.1} ms (receiver start to first decoded picture)",
            (first - started).as_secs_f64() * 1000.0
        );
    }
    println!(
        "per-frame latency:    p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms (sink to src, one way)",
        pct(0.5),
        pct(0.99),
        pct(1.0)
    );
    let mut failed = Vec::new();
    if sent != Some(true) {
        failed.push("SENDER DID NOT FINISH");
    }
    if t.sent != t.received || t.received != t.decoded {
        failed.push("FRAMES MISSING");
    }
    match &output {
        Output::Window => println!("shown:                in a window (autovideosink)"),
        Output::Png(png) => {
            let picture = first_picture.lock().unwrap().take();
            match picture.ok_or_else(|| "nothing decoded".to_string()) {
                Ok(sample) => match write_png(&sample, png) {
                    Ok(()) => println!("first decoded frame:  {}", png.display()),
                    Err(e) => {
                        println!(
                            "first decoded frame:  not written to {}: {e}",
                            png.display()
                        );
                        failed.push("NO PNG");
                    }
                },
                Err(e) => {
                    println!("first decoded frame:  none: {e}");
                    failed.push("NO PNG");
                }
            }
        }
    }
    if failed.is_empty() {
        println!("result:               OK");
    } else {
        println!("result:               {}", failed.join(", "));
        std::process::exit(1);
    }
}

/// Where the decoded pictures go.
enum Output {
    Window,
    Png(PathBuf),
}

fn has_display() -> bool {
    ["DISPLAY", "WAYLAND_DISPLAY"]
        .iter()
        .any(|v| std::env::var_os(v).is_some_and(|d| !d.is_empty()))
}

/// target/demo-frame.png: this binary is target/<profile>/examples/loopback.
fn default_png() -> PathBuf {
    std::env::current_exe()
        .ok()
        .and_then(|exe| Some(exe.parent()?.parent()?.parent()?.join("demo-frame.png")))
        .unwrap_or_else(|| PathBuf::from("demo-frame.png"))
}

/// Encodes the picture in `sample` to a PNG file at `png`.
fn write_png(sample: &gst::Sample, png: &Path) -> Result<(), String> {
    let pipeline = common::launch(&format!(
        "appsrc name=in ! videoconvert ! pngenc ! filesink location={}",
        png.display()
    ));
    let appsrc = pipeline
        .by_name("in")
        .and_then(|e| e.downcast::<gst_app::AppSrc>().ok())
        .expect("appsrc");
    appsrc.set_caps(sample.caps_owned().as_ref());
    appsrc.push_sample(sample).map_err(|e| e.to_string())?;
    appsrc.end_of_stream().map_err(|e| e.to_string())?;
    common::run(&pipeline)
}

/// Calls `f` for every buffer leaving `element`'s `pad`.
fn count_buffers(
    pipeline: &gst::Pipeline,
    element: &str,
    pad: &str,
    tally: &Arc<Mutex<Tally>>,
    f: impl Fn(&mut Tally, &gst::BufferRef) + Send + Sync + 'static,
) {
    let tally = tally.clone();
    let pad = pipeline
        .by_name(element)
        .and_then(|e| e.static_pad(pad))
        .expect("pad to probe");
    pad.add_probe(gst::PadProbeType::BUFFER, move |_, info| {
        if let Some(buffer) = info.buffer() {
            f(&mut tally.lock().unwrap(), buffer);
        }
        gst::PadProbeReturn::Ok
    });
}

fn encode_clip(path: &Path, frames: u32) {
    // zone-plate gives x265 real work: ~4 Mbit/s at 720p30 (the ball pattern gives 0.3).
    let pipeline = common::launch(&format!(
        "videotestsrc num-buffers={frames} pattern=zone-plate kx2=20 ky2=20 kt=1 kt2=2 ! \
         video/x-raw,format=I420,width=1280,height=720,framerate=30/1 ! \
         x265enc speed-preset=ultrafast tune=zerolatency bitrate=4000 key-int-max=60 ! \
         h265parse ! video/x-h265,stream-format=byte-stream ! filesink location={}",
        path.display()
    ));
    if let Err(e) = common::run(&pipeline) {
        common::die("", &format!("encoding the clip: {e}"));
    }
}

fn make_certificate(cert: &Path, key: &Path) {
    let out = Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
        ])
        .args(["-nodes", "-days", "1", "-subj", "/CN=localhost"])
        .args([
            "-addext",
            "subjectAltName=DNS:localhost,IP:127.0.0.1",
            "-keyout",
        ])
        .arg(key)
        .arg("-out")
        .arg(cert)
        .output();
    match out {
        Ok(o) if o.status.success() => {}
        other => common::die(
            "",
            &format!("openssl could not make a certificate: {other:?}"),
        ),
    }
}
