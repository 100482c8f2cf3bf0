//! The two lines the project's description promises, run as written with gst-launch-1.0:
//!
//!     gst-launch-1.0 filesrc location=clip.h265 ! h265parse ! quicnalusink
//!     gst-launch-1.0 quicnalusrc ! avdec_h265 ! autovideosink
//!
//! in a network namespace of their own (so the default port, 4443, is theirs alone) with a
//! fresh user data directory: the sink keeps a self-signed certificate and prints its
//! fingerprint, the source trusts it on first use and remembers it, and refuses a sender
//! on that port whose certificate changed.

use crate::common::*;
use std::path::Path;
use std::process::Command;

const SENDER: &str = "gst-launch-1.0 filesrc location=\"$CLIP\" ! h265parse ! quicnalusink";
const RECEIVER: &str = "gst-launch-1.0 quicnalusrc ! avdec_h265 ! autovideosink";

/// What a scripted run printed: each gst-launch-1.0's output and exit status.
struct Run {
    sender: String,
    sender_status: String,
    receiver: String,
    receiver_status: String,
}

/// Runs `sender`, then `receiver`, with bash in a new network namespace with only
/// loopback, as the same user with `data` as the user data directory. A receiver that
/// fails leaves the sender waiting for a receiver: it is stopped then.
fn run(sender: &str, receiver: &str, data: &Path) -> Run {
    let logs = tempfile::tempdir().unwrap();
    let plugins = plugin_dir();
    let script = format!(
        "ip link set lo up || exit 1
         timeout 120 {sender} > \"$LOGS/sender\" 2>&1 &
         s=$!
         timeout 120 {receiver} > \"$LOGS/receiver\" 2>&1
         echo $? > \"$LOGS/receiver.status\"
         if [ \"$(cat \"$LOGS/receiver.status\")\" != 0 ]; then kill -INT $s; fi
         wait $s
         echo $? > \"$LOGS/sender.status\""
    );
    let out = Command::new("unshare")
        .args(["--user", "--map-root-user", "--net", "bash", "-c", &script])
        .env("CLIP", media("vpl-cars_320x240.h265"))
        .env("LOGS", logs.path())
        .env("XDG_DATA_HOME", data)
        .env("GST_PLUGIN_PATH", plugins.path())
        .env("GST_REGISTRY", data.join("registry.bin"))
        // Count decoded pictures: GstVideoDecoder logs each one it pushes.
        .env("GST_DEBUG", "videodecoder:5")
        .env("GST_DEBUG_NO_COLOR", "1")
        // Headless machines: GStreamer 1.22's DirectFB sink crashes while autovideosink
        // probes it; without it autovideosink falls back to a fake sink, as it should.
        .env("GST_PLUGIN_FEATURE_RANK", "dfbvideosink:NONE")
        .output()
        .expect("run unshare");
    assert!(out.status.success(), "the namespace script failed: {out:?}");
    let read = |name: &str| {
        std::fs::read_to_string(logs.path().join(name))
            .unwrap_or_default()
            .trim()
            .to_string()
    };
    Run {
        sender: read("sender"),
        sender_status: read("sender.status"),
        receiver: read("receiver"),
        receiver_status: read("receiver.status"),
    }
}

/// The fingerprint after `SHA-256 ` in `text`.
fn fingerprint_in(text: &str) -> &str {
    let at = text.find("SHA-256 ").expect("a SHA-256 fingerprint") + "SHA-256 ".len();
    &text[at..at + 95]
}

#[test]
fn the_card_lines_work_as_written_and_a_changed_sender_is_refused() {
    let data = tempfile::tempdir().unwrap();
    let first = run(SENDER, RECEIVER, data.path());
    let all = format!(
        "--- sender ({}):\n{}\n--- receiver ({}):\n{}",
        first.sender_status,
        tail(&first.sender),
        first.receiver_status,
        tail(&first.receiver)
    );
    assert_eq!(first.receiver_status, "0", "{all}");
    assert_eq!(first.sender_status, "0", "{all}");
    assert!(first.receiver.contains("Got EOS from element"), "{all}");
    let decoded = first.receiver.matches("pushing buffer").count();
    assert!(
        decoded >= 27,
        "decoded {decoded} of the clip's 30 pictures: {all}"
    );

    // The sink said which certificate it serves with, the source trusted that one, with a
    // warning, and remembered it.
    let kept = data.path().join("quicnalu/sender.pem");
    assert!(
        first.sender.contains(&format!(
            "serving with the self-signed certificate made and kept in {}",
            kept.display()
        )),
        "{all}"
    );
    let served = fingerprint_in(&first.sender);
    assert!(first.receiver.contains("on first use"), "{all}");
    assert_eq!(fingerprint_in(&first.receiver), served, "{all}");
    let known = std::fs::read_to_string(data.path().join("quicnalu/known_hosts")).unwrap();
    assert!(
        known.contains(&format!("127.0.0.1:4443 {served}")),
        "{known}"
    );

    // Again: the same certificate, trusted without a word.
    let again = run(SENDER, RECEIVER, data.path());
    assert_eq!(again.receiver_status, "0", "{}", tail(&again.receiver));
    assert!(
        !again.receiver.contains("on first use"),
        "{}",
        again.receiver
    );

    // A sender with another certificate on the same port is refused, naming both.
    let other = format!("{SENDER} self-signed=true");
    let changed = run(&other, RECEIVER, data.path());
    assert_ne!(changed.receiver_status, "0", "{}", tail(&changed.receiver));
    assert!(
        changed.receiver.contains("127.0.0.1:4443 has CHANGED")
            && changed.receiver.contains(served),
        "{}",
        tail(&changed.receiver)
    );
    assert_eq!(
        std::fs::read_to_string(data.path().join("quicnalu/known_hosts")).unwrap(),
        known,
        "a refused certificate is not remembered"
    );
}

/// The output without the decoder's per-picture log lines.
fn tail(log: &str) -> String {
    log.lines()
        .filter(|l| !l.contains("pushing buffer"))
        .collect::<Vec<_>>()
        .join("\n")
}
