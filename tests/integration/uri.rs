//! quicnalu:// URIs: both elements are GstURIHandlers whose query keys set properties, and
//! playbin, uridecodebin and gst-play-1.0 pick quicnalusrc for them.

use crate::common::*;
use gst::prelude::*;
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

const CLIP: &str = "vpl-cars_320x240.h265";

/// A sender playing the clip once, requiring a token.
fn clip_sender() -> (Running, u16) {
    start_sender(&format!(
        "filesrc location={} ! h265parse ! quicnalusink name=sink token=s3cret {}",
        media(CLIP).display(),
        sink_props()
    ))
}

/// The sender's URI, pinning the tests' certificate, with the token and `extra` query.
fn uri_of(port: u16, extra: &str) -> String {
    let pin = gstquicnalu::net::tls::Fingerprint::of_pem_file(&certs().cert).unwrap();
    format!("quicnalu://127.0.0.1:{port}?certificate-fingerprint={pin}&token=s3cret&timeout=20000{extra}")
}

fn frames_in_clip() -> usize {
    framemd5_cached(&media(CLIP)).lines().count()
}

/// Counts the buffers reaching `sink`'s sink pad.
fn count_into(sink: &gst::Element) -> Arc<AtomicUsize> {
    let count = Arc::new(AtomicUsize::new(0));
    let counter = count.clone();
    sink.static_pad("sink")
        .unwrap()
        .add_probe(gst::PadProbeType::BUFFER, move |_, _| {
            counter.fetch_add(1, Ordering::Relaxed);
            gst::PadProbeReturn::Ok
        });
    count
}

#[test]
fn uridecodebin_plays_a_quicnalu_uri_with_properties_from_its_query() {
    init();
    let (sender, port) = clip_sender();
    let receiver = Running::launch(&format!(
        "uridecodebin name=dec uri=\"{}\" ! video/x-raw ! fakesink name=out",
        uri_of(port, "&latency=120")
    ));
    let source = Arc::new(std::sync::Mutex::new(None));
    let seen = source.clone();
    receiver
        .by_name("dec")
        .connect("source-setup", false, move |args| {
            let element = args[1].get::<gst::Element>().unwrap();
            *seen.lock().unwrap() = Some(element);
            None
        });
    let decoded = count_into(&receiver.by_name("out"));
    receiver.pipeline.set_state(gst::State::Playing).unwrap();
    receiver.finish(WATCHDOG).expect("plays to EOS");
    sender.finish(WATCHDOG).expect("sender reaches EOS");

    let source = source
        .lock()
        .unwrap()
        .clone()
        .expect("uridecodebin made a source");
    assert_eq!(source.factory().unwrap().name(), "quicnalusrc");
    assert_eq!(source.property::<u32>("latency"), 120);
    assert_eq!(source.property::<u32>("port"), u32::from(port));
    assert_eq!(
        source.property::<Option<String>>("token").unwrap(),
        "s3cret"
    );
    assert_eq!(decoded.load(Ordering::Relaxed), frames_in_clip());
}

#[test]
fn playbin_plays_a_quicnalu_uri() {
    init();
    let (sender, port) = clip_sender();
    let sink = gst::ElementFactory::make("fakesink").build().unwrap();
    let decoded = count_into(&sink);
    let playbin = gst::ElementFactory::make("playbin")
        .property("uri", uri_of(port, ""))
        .property("video-sink", &sink)
        .build()
        .unwrap()
        .downcast::<gst::Pipeline>()
        .unwrap();
    let receiver = Running { pipeline: playbin };
    receiver.pipeline.set_state(gst::State::Playing).unwrap();
    receiver.finish(WATCHDOG).expect("plays to EOS");
    sender.finish(WATCHDOG).expect("sender reaches EOS");
    assert_eq!(decoded.load(Ordering::Relaxed), frames_in_clip());
}

#[test]
fn gst_play_plays_a_quicnalu_uri() {
    init();
    let (sender, port) = clip_sender();
    let plugins = plugin_dir();
    let registry = tempfile::tempdir().unwrap();
    let out = Command::new("gst-play-1.0")
        .args([
            "--videosink=fakesink",
            "--no-interactive",
            &uri_of(port, ""),
        ])
        .env("GST_PLUGIN_PATH", plugins.path())
        .env("GST_REGISTRY", registry.path().join("registry.bin"))
        // GstVideoDecoder logs each picture it pushes.
        .env("GST_DEBUG", "videodecoder:5")
        .env("GST_DEBUG_NO_COLOR", "1")
        .output()
        .expect("run gst-play-1.0");
    let log =
        String::from_utf8_lossy(&out.stderr).into_owned() + &String::from_utf8_lossy(&out.stdout);
    let decoded = log.matches("pushing buffer").count();
    sender.finish(WATCHDOG).expect("sender reaches EOS");
    assert!(out.status.success(), "{out:?}");
    assert_eq!(decoded, frames_in_clip(), "gst-play-1.0 decoded");
}

#[test]
fn a_sink_takes_its_settings_from_a_uri() {
    init();
    let sink = gst::Element::make_from_uri(
        gst::URIType::Sink,
        "quicnalu://127.0.0.1:0?self-signed=true&max-receivers=3",
        None,
    )
    .unwrap();
    assert_eq!(sink.factory().unwrap().name(), "quicnalusink");
    assert_eq!(
        sink.property::<Option<String>>("address").unwrap(),
        "127.0.0.1"
    );
    assert_eq!(sink.property::<u32>("port"), 0);
    assert!(sink.property::<bool>("self-signed"));
    assert_eq!(sink.property::<u32>("max-receivers"), 3);
    let handler = sink.dynamic_cast_ref::<gst::URIHandler>().unwrap();
    assert_eq!(handler.uri().unwrap(), "quicnalu://127.0.0.1:0");
    let refused = handler
        .set_uri("quicnalu://127.0.0.1:0?latency=1")
        .unwrap_err();
    assert!(
        refused.message().contains("no property 'latency'"),
        "{refused}"
    );
}

#[test]
fn a_uri_sets_no_file_and_no_weaker_trust() {
    init();
    for (uri, key) in [
        (
            "quicnalu://127.0.0.1:1?known-hosts=/dev/zero",
            "known-hosts",
        ),
        ("quicnalu://127.0.0.1:1?qlog-dir=/tmp/anywhere", "qlog-dir"),
        (
            "quicnalu://127.0.0.1:1?keylog-file=/tmp/keys",
            "keylog-file",
        ),
        ("quicnalu://127.0.0.1:1?ca-file=/dev/zero", "ca-file"),
        ("quicnalu://127.0.0.1:1?tls-verify=false", "tls-verify"),
    ] {
        let refused = gst::Element::make_from_uri(gst::URIType::Src, uri, None)
            .map(|e| e.factory().unwrap().name().to_string())
            .expect_err(uri);
        assert!(
            refused.to_string().contains(&format!("cannot set '{key}'")),
            "{uri}: {refused}"
        );
    }
    let refused = gst::Element::make_from_uri(
        gst::URIType::Sink,
        "quicnalu://127.0.0.1:0?cert-file=/dev/zero&key-file=/dev/zero",
        None,
    )
    .map(|e| e.factory().unwrap().name().to_string())
    .expect_err("a sink URI with files");
    assert!(
        refused.to_string().contains("cannot set 'cert-file'"),
        "{refused}"
    );
}

#[test]
fn a_fifo_or_a_device_named_as_a_file_is_refused_and_stop_returns() {
    init();
    let (_sender, port) = clip_sender();
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("known_hosts");
    let name = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
    assert_eq!(unsafe { libc::mkfifo(name.as_ptr(), 0o600) }, 0);
    for (file, says) in [
        (fifo.to_str().unwrap(), "not a regular file"),
        ("/dev/zero", "not a regular file"),
    ] {
        // Trust on first use: the sender's certificate is looked up in `file`.
        let receiver = Running::launch(&format!(
            "quicnalusrc address=127.0.0.1 port={port} token=s3cret known-hosts={file} ! \
             fakesink"
        ));
        receiver.pipeline.set_state(gst::State::Playing).unwrap();
        let error = receiver.expect_error();
        assert!(error.contains(says), "{file}: {error}");
        receiver.pipeline.set_state(gst::State::Null).unwrap();
    }
}
