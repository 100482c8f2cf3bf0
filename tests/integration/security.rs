//! Access control and observability: the shared token, certificate pinning and the
//! self-signed certificate, connection limits, qlog and key log files, and `stats`.

use crate::common;

use crate::common::*;
use gst::prelude::*;
use std::path::Path;

/// A finite clip from the shared media, served by a sink named `sink` with `sink_extra`.
fn clip_sender(sink_extra: &str) -> (Running, u16) {
    start_sender(&format!(
        "filesrc location={} ! h265parse name=parse ! quicnalusink name=sink {} {sink_extra}",
        media("oh-1104x622.h265").display(),
        sink_props()
    ))
}

/// A receiver into a fakesink, with reconnect off so that a refusal is an error.
fn plain_receiver(port: u16, extra: &str) -> Running {
    let r = Running::launch(&format!(
        "quicnalusrc name=src {} reconnect=false {extra} ! fakesink",
        src_props(port)
    ));
    r.pipeline.set_state(gst::State::Playing).unwrap();
    r
}

#[test]
fn a_receiver_without_the_token_is_refused_and_the_sender_is_told() {
    init();
    let description = live_sender_description("width=320,height=240", "", 30, 0)
        .replace("name=sink", "name=sink token=s3cret stats-interval=50");
    let (sender, port) = start_sender(&description);
    let messages = element_messages(&sender);

    for (extra, shown) in [("token=guess", "a wrong token"), ("", "no token")] {
        let error = plain_receiver(port, extra).expect_error();
        assert!(error.contains("0x4") && error.contains(shown), "{error}");
        let m = next_message(&messages, "quicnalusink-receiver-rejected");
        assert_eq!(m.get::<u64>("code").unwrap(), 4, "{m}");
        assert_eq!(m.get::<String>("reason").unwrap(), shown, "{m}");
        assert!(m
            .get::<String>("address")
            .unwrap()
            .starts_with("127.0.0.1:"));
    }

    let _admitted = plain_receiver(port, "token=s3cret");
    next_message(&messages, "quicnalusink-receiver-connected");
    // The stats count the refusals.
    while next_message(&messages, "quicnalusink-stats")
        .get::<u64>("receivers-rejected")
        .unwrap()
        < 2
    {}
}

#[test]
fn receivers_pin_the_self_signed_certificate_by_fingerprint() {
    init();
    let (sender, port) = start_sender(
        "videotestsrc is-live=true ! video/x-raw,width=320,height=240,framerate=30/1 ! \
         x265enc speed-preset=ultrafast tune=zerolatency ! h265parse ! \
         quicnalusink name=sink port=0 self-signed=true",
    );
    let messages = element_messages(&sender);
    let pinned: String = sender
        .by_name("sink")
        .property::<Option<String>>("certificate-fingerprint")
        .expect("fingerprint once started");
    assert_eq!(pinned.len(), 95, "{pinned}");

    let receive = |fingerprint: Option<&str>| {
        let r = Running::launch(&format!(
            "quicnalusrc name=src address=127.0.0.1 port={port} reconnect=false \
             timeout=20000 tls-verify=true ! fakesink"
        ));
        r.by_name("src")
            .set_property("certificate-fingerprint", fingerprint);
        r.pipeline.set_state(gst::State::Playing).unwrap();
        r
    };

    // tls-verify=true asks for a CA: without a pin the self-signed certificate is refused.
    let error = receive(None).expect_error();
    assert!(error.contains("not trusted"), "{error}");

    let mut wrong = pinned.clone().into_bytes();
    wrong[0] = if wrong[0] == b'0' { b'1' } else { b'0' };
    let wrong = String::from_utf8(wrong).unwrap();
    let error = receive(Some(&wrong)).expect_error();
    assert!(
        error.contains("certificate fingerprint mismatch") && error.contains(&pinned),
        "{error}"
    );

    // The pin as quicnalusink shows it, and as plain lower-case hex.
    let _colons = receive(Some(&pinned));
    next_message(&messages, "quicnalusink-receiver-connected");
    let plain = pinned.replace(':', "").to_lowercase();
    let _plain = receive(Some(&plain));
    next_message(&messages, "quicnalusink-receiver-connected");
}

/// A certificate the receiver trusts, but for another name and address: connecting to
/// 127.0.0.1 by IP is refused before HELLO, naming both; asking for its name works.
#[test]
fn a_trusted_certificate_for_another_address_is_refused() {
    init();
    let other = certs_for("DNS:camera.example,IP:192.0.2.7");
    let (sender, port) = start_sender(&format!(
        "videotestsrc is-live=true ! video/x-raw,width=320,height=240,framerate=30/1 ! \
         x265enc speed-preset=ultrafast tune=zerolatency ! h265parse ! \
         quicnalusink name=sink port=0 cert-file={} key-file={}",
        other.cert, other.key
    ));
    let messages = element_messages(&sender);
    let receive = |extra: &str| {
        let r = Running::launch(&format!(
            "quicnalusrc name=src address=127.0.0.1 port={port} ca-file={} reconnect=false \
             timeout=20000 {extra} ! fakesink",
            other.cert
        ));
        r.pipeline.set_state(gst::State::Playing).unwrap();
        r
    };
    let error = receive("").expect_error();
    for shown in [
        "DNS:camera.example",
        "IP:192.0.2.7",
        "127.0.0.1",
        "server-name",
    ] {
        assert!(error.contains(shown), "'{shown}' missing from: {error}");
    }
    let _named = receive("server-name=camera.example");
    next_message(&messages, "quicnalusink-receiver-connected");
}

#[test]
fn a_certificate_file_has_the_fingerprint_openssl_gives() {
    init();
    let (sender, _port) = clip_sender("wait-for-connection=true");
    let shown: Option<String> = sender.by_name("sink").property("certificate-fingerprint");
    let out = std::process::Command::new("openssl")
        .args([
            "x509",
            "-noout",
            "-fingerprint",
            "-sha256",
            "-in",
            &certs().cert,
        ])
        .output()
        .expect("run openssl");
    let text = String::from_utf8_lossy(&out.stdout);
    let expected = text.trim().rsplit('=').next().unwrap().to_string();
    assert_eq!(shown.as_deref(), Some(expected.as_str()));
}

#[test]
fn the_connection_limit_holds_a_new_receiver_off_until_there_is_room() {
    init();
    let description = live_sender_description("width=320,height=240", "", 30, 0)
        .replace("name=sink", "name=sink max-connections=1");
    let (sender, port) = start_sender(&description);
    let messages = element_messages(&sender);
    let first = plain_receiver(port, "");
    next_message(&messages, "quicnalusink-receiver-connected");

    let error = plain_receiver(port, "timeout=1000").expect_error();
    assert!(error.contains("no QUIC answer"), "{error}");

    // Once the first is gone, a waiting receiver gets in (its Initials are retransmitted).
    let waiting = plain_receiver(port, "");
    drop(first);
    next_message(&messages, "quicnalusink-receiver-disconnected");
    next_message(&messages, "quicnalusink-receiver-connected");
    drop(waiting);
}

#[test]
fn without_address_validation_receivers_still_connect() {
    init();
    let (sender, port) = clip_sender("address-validation=false");
    let received = receive_all(&sender, port);
    assert_eq!(received.len(), 300);
}

/// qlog's JSON-SEQ (RFC 7464): every record starts with RS (0x1E) and is one JSON text.
fn qlog_records(path: &Path) -> Vec<serde_json::Value> {
    let text = std::fs::read(path).unwrap();
    assert_eq!(
        text.first(),
        Some(&0x1E),
        "{} starts with RS",
        path.display()
    );
    text.split(|&b| b == 0x1E)
        .skip(1)
        .map(|record| {
            serde_json::from_slice(record).unwrap_or_else(|e| {
                panic!(
                    "{}: record is not JSON ({e}): {}",
                    path.display(),
                    String::from_utf8_lossy(record)
                )
            })
        })
        .collect()
}

fn files_in(dir: &Path) -> Vec<std::path::PathBuf> {
    std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .collect()
}

#[test]
fn qlog_and_key_log_files_are_written_and_well_formed() {
    init();
    let dir = tempfile::tempdir().unwrap();
    let keylog = dir.path().join("keys.log");
    let (sink_qlog, src_qlog) = (dir.path().join("sink"), dir.path().join("src"));
    let (sender, port) = clip_sender(&format!(
        "qlog-dir={} keylog-file={}",
        sink_qlog.display(),
        keylog.display()
    ));
    let extra = format!(
        "qlog-dir={} keylog-file={}",
        src_qlog.display(),
        keylog.display()
    );
    let received = receive_all_with(&sender, port, &extra);
    assert_eq!(received.len(), 300);
    // Stopping the sender ends its connections, which completes their qlog files.
    drop(sender);

    for (dir, role) in [(&sink_qlog, "quicnalusink"), (&src_qlog, "quicnalusrc")] {
        let files = files_in(dir);
        assert_eq!(files.len(), 1, "{files:?}");
        let name = files[0].file_name().unwrap().to_string_lossy().into_owned();
        assert!(name.starts_with(role) && name.ends_with(".sqlog"), "{name}");
        let records = qlog_records(&files[0]);
        assert_eq!(
            records[0]["serialization_format"], "JSON-SEQ",
            "{}",
            records[0]
        );
        let events: Vec<&str> = records[1..]
            .iter()
            .map(|r| r["name"].as_str().expect("event name"))
            .collect();
        assert!(events.len() > 300, "{role}: only {} events", events.len());
        assert!(events.iter().any(|n| n.ends_with("packet_sent")), "{role}");
        assert!(
            events.iter().any(|n| n.ends_with("packet_received")),
            "{role}"
        );
        if role == "quicnalusrc" {
            // Address validation is on by default: the receiver's first Initials got a
            // Retry (quiche does not log it as such), so before anything was received it
            // sent Initials to two connection IDs: its own choice, then the Retry's.
            let dcids: std::collections::BTreeSet<&str> = records[1..]
                .iter()
                .take_while(|r| r["name"] != "quic:packet_received")
                .filter(|r| r["data"]["header"]["packet_type"] == "initial")
                .filter_map(|r| r["data"]["header"]["dcid"].as_str())
                .collect();
            assert_eq!(dcids.len(), 2, "no Retry before the handshake: {dcids:?}");
        }
    }

    // NSS key log: `LABEL <client random, 64 hex> <secret, hex>`, both sides' secrets.
    let text = std::fs::read_to_string(&keylog).unwrap();
    let mut labels = std::collections::BTreeMap::new();
    for line in text.lines() {
        let fields: Vec<&str> = line.split(' ').collect();
        assert_eq!(fields.len(), 3, "{line}");
        assert_eq!(fields[1].len(), 64, "{line}");
        assert!(fields[1..]
            .iter()
            .all(|f| f.bytes().all(|b| b.is_ascii_hexdigit())));
        *labels.entry(fields[0].to_string()).or_insert(0) += 1;
    }
    for label in [
        "CLIENT_HANDSHAKE_TRAFFIC_SECRET",
        "SERVER_HANDSHAKE_TRAFFIC_SECRET",
        "CLIENT_TRAFFIC_SECRET_0",
        "SERVER_TRAFFIC_SECRET_0",
    ] {
        // Written by the sender and by the receiver.
        assert_eq!(labels.get(label), Some(&2), "{label} in {labels:?}");
    }
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&keylog).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600, "key log mode {mode:o}");
}

/// The secrets go to no file others can read, and never through a symbolic link: the
/// element fails to start, naming the file.
#[test]
fn a_key_log_open_to_others_or_behind_a_link_is_refused() {
    use std::os::unix::fs::PermissionsExt;
    init();
    let dir = tempfile::tempdir().unwrap();
    let shared = dir.path().join("shared.log");
    std::fs::write(&shared, "").unwrap();
    std::fs::set_permissions(&shared, std::fs::Permissions::from_mode(0o644)).unwrap();
    let link = dir.path().join("link.log");
    let target = dir.path().join("elsewhere.log");
    std::os::unix::fs::symlink(&target, &link).unwrap();
    for (path, shown) in [
        (&shared, "open to others (mode 644)"),
        (&link, "symbolic link"),
    ] {
        let sender = Running::launch(&format!(
            "videotestsrc ! x265enc ! h265parse ! quicnalusink {} keylog-file={}",
            sink_props(),
            path.display()
        ));
        assert!(sender.pipeline.set_state(gst::State::Playing).is_err());
        let error = sender.expect_error();
        assert!(error.contains(shown), "{error}");
    }
    assert!(!target.exists(), "written through the link");
}

#[test]
fn stats_answer_while_data_flows() {
    init();
    let description = live_sender_description("width=320,height=240", "", 30, 0)
        .replace("name=sink", "name=sink stats-interval=100");
    let (sender, port) = start_sender(&description);
    let sink_messages = element_messages(&sender);
    let receiver = plain_receiver(port, "stats-interval=100");
    let src_messages = element_messages(&receiver);

    // The interval messages: wait until frames have gone out and come in.
    let sent = |s: &gst::Structure| {
        let receivers = s.get::<gst::Array>("receivers").unwrap();
        receivers
            .iter()
            .map(|r| r.get::<gst::Structure>().unwrap())
            .find(|r| r.get::<bool>("admitted").unwrap())
            .filter(|r| r.get::<u64>("frames-sent").unwrap() >= 30)
    };
    while sent(&next_message(&sink_messages, "quicnalusink-stats")).is_none() {}
    while next_message(&src_messages, "quicnalusrc-stats")
        .get::<u64>("frames-output")
        .unwrap()
        < 30
    {}

    // The properties, read while the stream flows.
    let sink_stats = sender.by_name("sink").property::<gst::Structure>("stats");
    assert_eq!(sink_stats.name(), "quicnalusink-stats");
    assert_eq!(sink_stats.get::<u32>("receiver-count").unwrap(), 1);
    assert!(
        sink_stats.get::<u64>("frames-in").unwrap() >= 30,
        "{sink_stats}"
    );
    let r = sent(&sink_stats).expect("an admitted receiver that got frames");
    for field in [
        "rtt",
        "min-rtt",
        "cwnd",
        "packets-sent",
        "bytes-sent",
        "bytes-received",
    ] {
        assert!(r.get::<u64>(field).unwrap() > 0, "{field} in {r}");
    }
    assert!(r.get::<u64>("rtt").unwrap() >= r.get::<u64>("min-rtt").unwrap());
    for field in [
        "packets-lost",
        "bytes-lost",
        "frames-dropped",
        "groups-reset",
    ] {
        assert_eq!(r.get::<u64>(field).unwrap(), 0, "{field} on loopback: {r}");
    }

    let src_stats = receiver.by_name("src").property::<gst::Structure>("stats");
    assert_eq!(src_stats.name(), "quicnalusrc-stats");
    assert!(src_stats.get::<bool>("connected").unwrap(), "{src_stats}");
    assert_eq!(
        src_stats.get::<String>("address").unwrap(),
        format!("127.0.0.1:{port}")
    );
    for field in [
        "rtt",
        "cwnd",
        "packets-received",
        "bytes-received",
        "frames-received",
    ] {
        assert!(
            src_stats.get::<u64>(field).unwrap() > 0,
            "{field} in {src_stats}"
        );
    }
    assert_eq!(
        src_stats.get::<u64>("frames-late").unwrap(),
        0,
        "{src_stats}"
    );

    // Stopped elements still answer, with nothing to count.
    receiver.pipeline.set_state(gst::State::Null).unwrap();
    let idle = receiver.by_name("src").property::<gst::Structure>("stats");
    assert!(!idle.get::<bool>("connected").unwrap());
}

/// RFC 9000, 14.1 and 8.1: an Initial in a datagram under 1200 bytes, which a spoofed
/// source can send cheaply, gets no answer at all; a real client's first datagram gets a
/// Retry well within 3x its size.
#[test]
fn small_initials_get_no_answer_and_a_retry_stays_within_3x() {
    use common::raw::{self, Windows};
    use std::net::{SocketAddr, UdpSocket};
    init();
    let (_sender, port) = clip_sender("");
    let server = SocketAddr::from(([127, 0, 0, 1], port));
    let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    socket.set_read_timeout(Some(WATCHDOG)).unwrap();
    let local = socket.local_addr().unwrap();
    // A client's first datagram, from a connection whose ID marks the answers to it.
    let first_datagram = |scid: &[u8]| {
        let scid = quiche::ConnectionId::from_ref(scid);
        let mut config = raw::client_config(Windows::default());
        let mut conn = quiche::connect(Some("localhost"), &scid, local, server, &mut config)
            .expect("quiche connect");
        let mut out = vec![0; 1500];
        let (n, _) = conn.send(&mut out).expect("an Initial");
        out.truncate(n);
        out
    };
    let (small_id, whole_id) = ([1u8; 16], [2u8; 16]);
    let small = first_datagram(&small_id);
    let mut sent = 0;
    for len in [20, 30, 60, 200, 600, 1199] {
        sent += socket.send_to(&small[..len], server).unwrap();
    }
    let whole = first_datagram(&whole_id);
    assert!(whole.len() >= 1200, "{} bytes", whole.len());
    sent += socket.send_to(&whole, server).unwrap();

    // The sink answers in order: anything for the small ones comes before the Retry.
    let mut buf = vec![0; 65536];
    let mut received = 0;
    loop {
        let (n, _) = socket
            .recv_from(&mut buf)
            .expect("an answer to the whole Initial");
        received += n;
        let hdr = quiche::Header::from_slice(&mut buf[..n], 16).expect("a QUIC packet");
        assert_ne!(
            hdr.dcid.as_ref(),
            &small_id[..],
            "an answer ({:?}, {n} bytes) to a datagram under 1200 bytes",
            hdr.ty
        );
        if hdr.ty == quiche::Type::Retry {
            break;
        }
    }
    let ratio = received as f64 / sent as f64;
    println!("sent {sent} bytes, got {received}: ratio {ratio:.3}");
    assert!(
        received <= 3 * whole.len(),
        "{received} bytes for {}",
        whole.len()
    );
}

/// A client's Retry token that the sink did not mint for that connection is answered at
/// once with CONNECTION_CLOSE carrying INVALID_TOKEN (RFC 9000, 8.1.2), where it used to
/// be dropped in silence until the client timed out: a forged token, and a real one
/// replayed in an Initial to another connection ID (it used to open a connection).
#[test]
fn a_forged_or_replayed_retry_token_is_closed_with_invalid_token() {
    use common::raw::{self, Windows};
    use std::net::{SocketAddr, UdpSocket};
    use std::time::Instant;
    init();
    let (_sender, port) = clip_sender("");
    let server = SocketAddr::from(([127, 0, 0, 1], port));
    for tamper in ["a forged token", "another connection ID"] {
        let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
        socket
            .set_read_timeout(Some(std::time::Duration::from_millis(20)))
            .unwrap();
        let local = socket.local_addr().unwrap();
        let mut config = raw::client_config(Windows::default());
        let client_id = [7u8; 16];
        let scid = quiche::ConnectionId::from_ref(&client_id);
        let mut conn = quiche::connect(Some("localhost"), &scid, local, server, &mut config)
            .expect("quiche connect");
        let mut out = vec![0; 1500];
        let (n, _) = conn.send(&mut out).expect("an Initial");
        let odcid = quiche::Header::from_slice(&mut out[..n], 16)
            .expect("our Initial")
            .dcid
            .to_vec();
        socket.send_to(&out[..n], server).unwrap();

        // The sink's Retry, rebuilt with what the test changes (quiche::retry signs it).
        let mut buf = vec![0; 65536];
        let (retry_id, token) = loop {
            let Ok((n, _)) = socket.recv_from(&mut buf) else {
                continue;
            };
            let hdr = quiche::Header::from_slice(&mut buf[..n], 16).expect("a QUIC packet");
            if hdr.ty == quiche::Type::Retry {
                break (hdr.scid.to_vec(), hdr.token.expect("a Retry token"));
            }
        };
        let (retry_id, token) = match tamper {
            "a forged token" => {
                let mut forged = token;
                forged[0] ^= 1;
                (retry_id, forged)
            }
            _ => (vec![9u8; 16], token),
        };
        let len = quiche::retry(
            &scid,
            &quiche::ConnectionId::from_ref(&odcid),
            &quiche::ConnectionId::from_ref(&retry_id),
            &token,
            quiche::PROTOCOL_VERSION,
            &mut out,
        )
        .expect("a Retry");
        let info = quiche::RecvInfo {
            from: server,
            to: local,
        };
        conn.recv(&mut out[..len], info).expect("the Retry taken");

        let t = Instant::now();
        while conn.peer_error().is_none() && !conn.is_established() && t.elapsed() < WATCHDOG {
            while let Ok((n, _)) = conn.send(&mut out) {
                socket.send_to(&out[..n], server).unwrap();
            }
            if let Ok((n, from)) = socket.recv_from(&mut buf) {
                let _ = conn.recv(&mut buf[..n], quiche::RecvInfo { from, to: local });
            }
            conn.on_timeout();
        }
        let close = conn.peer_error().map(|e| {
            (
                e.is_app,
                e.error_code,
                String::from_utf8_lossy(&e.reason).into_owned(),
            )
        });
        println!("{tamper}: {close:?} after {:?}", t.elapsed());
        assert!(!conn.is_established(), "{tamper}: connected");
        let (app, code, reason) = close.unwrap_or_else(|| panic!("{tamper}: no close"));
        assert!(
            !app && code == 0x0b,
            "{tamper}: closed with {code:#x} ({reason})"
        );
        assert!(reason.contains("token"), "{reason}");
    }
}
