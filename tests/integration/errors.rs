//! Each misconfiguration ends with a clear error on the bus, and nothing hangs.

use crate::common::*;
use gst::prelude::*;
use std::net::UdpSocket;

/// Runs `description` and returns the error it must post.
fn error_of(description: &str) -> String {
    init();
    let running = Running::launch(description);
    let _ = running.pipeline.set_state(gst::State::Playing);
    running.expect_error()
}

fn clip_sender(props: &str) -> String {
    format!(
        "filesrc location={} ! h265parse ! quicnalusink name=sink {props}",
        media("vpl-cars_320x240.h265").display()
    )
}

#[test]
fn missing_certificate() {
    let e = error_of(&clip_sender(&format!(
        "port=0 cert-file=/nonexistent/cert.pem key-file={}",
        certs().key
    )));
    assert!(
        e.contains("cannot read certificate file '/nonexistent/cert.pem'"),
        "{e}"
    );
    assert!(e.contains("[Settings]"), "{e}");
}

#[test]
fn missing_key_property() {
    let e = error_of(&clip_sender(&format!("port=0 cert-file={}", certs().cert)));
    assert!(
        e.contains("cert-file and key-file must be set together"),
        "{e}"
    );
}

#[test]
fn certificate_that_is_not_pem() {
    let dir = tempfile::tempdir().unwrap();
    let bogus = dir.path().join("bogus.pem");
    std::fs::write(&bogus, b"this is not a certificate").unwrap();
    let e = error_of(&clip_sender(&format!(
        "port=0 cert-file={} key-file={}",
        bogus.display(),
        certs().key
    )));
    assert!(e.contains("is not a PEM certificate chain"), "{e}");
}

#[test]
fn port_already_in_use() {
    let taken = UdpSocket::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let e = error_of(&clip_sender(&format!(
        "address=127.0.0.1 port={port} cert-file={} key-file={}",
        certs().cert,
        certs().key
    )));
    assert!(e.contains("cannot bind UDP socket"), "{e}");
    assert!(e.contains("in use") && e.contains("[OpenWrite]"), "{e}");
}

#[test]
fn no_server_at_the_address() {
    // A bound socket that never answers: the handshake can only time out.
    let silent = UdpSocket::bind("127.0.0.1:0").unwrap();
    let port = silent.local_addr().unwrap().port();
    let e = error_of(&format!(
        "quicnalusrc address=127.0.0.1 port={port} timeout=500 ! fakesink"
    ));
    assert!(e.contains("no QUIC answer from 127.0.0.1"), "{e}");
    assert!(e.contains("[OpenRead]"), "{e}");
}

#[test]
fn self_signed_certificate_without_ca() {
    init();
    let (sender, port) = start_sender(&clip_sender(&sink_props()));
    let e = error_of(&format!(
        "quicnalusrc address=127.0.0.1 port={port} tls-verify=true ! fakesink"
    ));
    assert!(e.contains("TLS handshake"), "{e}");
    assert!(
        e.contains("not trusted") && e.contains("[NotAuthorized]"),
        "{e}"
    );
    drop(sender);
}

#[test]
fn caps_that_are_not_h265() {
    init();
    // Linked without caps checks, as an application might: the failure must come at
    // negotiation, as an error on the bus.
    let pipeline = gst::Pipeline::new();
    let src = gst::ElementFactory::make("videotestsrc")
        .property("num-buffers", 10)
        .build()
        .unwrap();
    let sink = gst::ElementFactory::make("quicnalusink")
        .property("port", 0u32)
        .property("cert-file", &certs().cert)
        .property("key-file", &certs().key)
        .build()
        .unwrap();
    pipeline.add_many([&src, &sink]).unwrap();
    src.static_pad("src")
        .unwrap()
        .link_full(
            &sink.static_pad("sink").unwrap(),
            gst::PadLinkCheck::empty(),
        )
        .unwrap();
    let running = Running { pipeline };
    let _ = running.pipeline.set_state(gst::State::Playing);
    let e = running.expect_error();
    assert!(e.contains("not-negotiated"), "{e}");
}

#[test]
fn address_that_is_not_an_ip() {
    let e = error_of(&clip_sender(&format!(
        "address=not-an-ip port=0 cert-file={} key-file={}",
        certs().cert,
        certs().key
    )));
    assert!(
        e.contains("address 'not-an-ip' is not an IP address"),
        "{e}"
    );
}
