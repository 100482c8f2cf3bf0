//! PLAYING -> NULL at random moments mid-stream, 20 times: never hangs, panics or leaks a
//! networking thread. It counts the process's networking threads, so it takes its turn
//! with the other tests of this binary.

use crate::common::*;
use crate::turn;
use gst::prelude::*;
use std::sync::mpsc;
use std::time::Duration;

/// Bound for one state change; reaching it means a hang.
const STATE_CHANGE_LIMIT: Duration = Duration::from_secs(20);

/// Our networking threads alive in this process.
fn net_threads() -> usize {
    std::fs::read_dir("/proc/self/task")
        .unwrap()
        .filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("comm")).ok())
        .filter(|name| name.starts_with("quicnalu-"))
        .count()
}

/// A small deterministic generator (xorshift), so a failing sequence can be replayed.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

/// Sets `pipeline` to NULL on another thread; fails the test if that does not return.
fn to_null(pipeline: &gst::Pipeline, what: &str, round: u32) {
    let (tx, rx) = mpsc::channel();
    let p = pipeline.clone();
    std::thread::spawn(move || {
        let _ = tx.send(p.set_state(gst::State::Null));
    });
    let result = rx
        .recv_timeout(STATE_CHANGE_LIMIT)
        .unwrap_or_else(|_| panic!("round {round}: {what} to NULL hung"));
    result.unwrap_or_else(|e| panic!("round {round}: {what} to NULL failed: {e}"));
}

#[test]
fn random_stops_never_hang_or_leak() {
    let _turn = turn();
    let mut rng = Rng(0x5eed_1234_abcd_0001);
    for round in 0..20 {
        // sync=true keeps the stream live (10 s of 1080p30), so stops land mid-stream.
        let (sender, port) = start_sender(&format!(
            "filesrc location={} ! h265parse ! quicnalusink name=sink {}",
            media("oh-1920x1080.h265").display(),
            sink_props()
        ));
        let receiver = Running::launch(&format!(
            "quicnalusrc {} ! h265parse ! avdec_h265 ! appsink name=out sync=false",
            src_props(port)
        ));
        let (_, arrived) = collect(&receiver, "out");
        receiver.pipeline.set_state(gst::State::Playing).unwrap();

        // Stop after a random number of decoded frames (0: before any arrives).
        let wait_for = rng.below(12);
        for _ in 0..wait_for {
            arrived
                .recv_timeout(WATCHDOG)
                .unwrap_or_else(|_| panic!("round {round}: no frame arrived"));
        }
        let (first, second) = if rng.below(2) == 0 {
            ((&sender, "sender"), (&receiver, "receiver"))
        } else {
            ((&receiver, "receiver"), (&sender, "sender"))
        };
        to_null(&first.0.pipeline, first.1, round);
        to_null(&second.0.pipeline, second.1, round);
        assert_eq!(net_threads(), 0, "round {round}: networking threads left");
        for running in [&sender, &receiver] {
            let bus = running.pipeline.bus().unwrap();
            while let Some(msg) = bus.pop_filtered(&[gst::MessageType::Error]) {
                if let gst::MessageView::Error(e) = msg.view() {
                    let text = error_text(e);
                    assert!(!text.contains("Panicked"), "round {round}: {text}");
                }
            }
        }
    }
}
