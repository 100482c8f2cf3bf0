//! A receiver whose address changes keeps its connection: the sender follows a NAT
//! rebinding, and a receiver given a new `bind-address` migrates its QUIC connection to it.
//! Either way no frame is missed and there is no second handshake.

use crate::common::*;
use gst::prelude::*;
use gst_plugin_meta::Flags;
use std::sync::{mpsc, Mutex};
use std::time::Instant;
use udp_impair::Impairment;

/// Frames received before and after the address changes.
const FRAMES: usize = 45;

/// The address the sink's stats give for its one receiver, once it has one.
fn sink_sees(sink: &gst::Element) -> Option<String> {
    let stats = sink.property::<gst::Structure>("stats");
    let receivers = stats.get::<gst::Array>("receivers").ok()?;
    let first = receivers.iter().next()?.get::<gst::Structure>().ok()?;
    first.get::<String>("address").ok()
}

/// Waits, frame by frame, until the sink's stats give its receiver an address other than
/// `old`; returns it.
fn wait_for_new_address(
    sink: &gst::Element,
    old: &str,
    store: &Mutex<Vec<Received>>,
    arrived: &mpsc::Receiver<usize>,
) -> String {
    let deadline = Instant::now() + WATCHDOG;
    loop {
        if let Some(now) = sink_sees(sink).filter(|a| a != old) {
            return now;
        }
        assert!(
            Instant::now() < deadline,
            "the sink still sees {old} ({} frames received)",
            store.lock().unwrap().len()
        );
        let n = store.lock().unwrap().len();
        wait_for(store, arrived, n + 1);
    }
}

/// Every frame after the first came without a gap, the receiver never reconnected, and the
/// sink saw one receiver connect, once.
fn assert_one_unbroken_connection(
    received: &[Received],
    stats: &gst::Structure,
    sink_messages: &mpsc::Receiver<gst::Structure>,
) {
    eprintln!("receiver: {stats}");
    for (i, r) in received.iter().enumerate().skip(1) {
        let meta = r.meta.expect("QuicNaluMeta");
        assert!(
            !meta.flags.contains(Flags::GAP),
            "frame {i} has GAP: {meta:?}"
        );
        assert!(
            !r.flags.contains(gst::BufferFlags::DISCONT),
            "frame {i} follows a gap (DISCONT, {:?}, {meta:?})",
            r.flags
        );
    }
    let seqs: Vec<u64> = received.iter().map(|r| r.meta.unwrap().seq).collect();
    assert!(
        seqs.windows(2).all(|w| w[1] == w[0] + 1),
        "sequence numbers run on without a hole"
    );
    assert_eq!(stats.get::<u64>("reconnects"), Ok(0), "no new handshake");
    let connects = sink_messages
        .try_iter()
        .filter(|s| s.name() == "quicnalusink-receiver-connected")
        .count();
    assert_eq!(connects, 1, "the sink saw one receiver connect");
    assert_decodes(received, "across the address change");
}

#[test]
fn a_nat_rebinding_keeps_the_connection() {
    init();
    let (sender, port) = live_sender("width=320,height=240", "", 30);
    let sink = sender.by_name("sink");
    let sink_messages = element_messages(&sender);
    let relay = relay_to(port, Impairment::default());
    let receiver = receiver_via(&relay, "name=src");
    let (store, arrived) = collect(&receiver, "out");
    receiver.pipeline.set_state(gst::State::Playing).unwrap();
    wait_for(&store, &arrived, FRAMES);
    let before = sink_sees(&sink).expect("the sink serves the receiver");

    relay.rebind().expect("the relay moves to a new port");
    let after = wait_for_new_address(&sink, &before, &store, &arrived);
    eprintln!("the sink saw the receiver move from {before} to {after}");
    let count = store.lock().unwrap().len();
    wait_for(&store, &arrived, count + FRAMES);
    eprintln!("sink: {}", sink.property::<gst::Structure>("stats"));
    let stats = receiver.by_name("src").property::<gst::Structure>("stats");
    receiver.pipeline.set_state(gst::State::Null).unwrap();

    let received = store.lock().unwrap().clone();
    assert_one_unbroken_connection(&received, &stats, &sink_messages);
}

#[test]
fn a_new_bind_address_migrates_the_connection() {
    init();
    let (sender, port) = live_sender("width=320,height=240", "", 30);
    let sink = sender.by_name("sink");
    let sink_messages = element_messages(&sender);
    let receiver = receiver(port, "name=src bind-address=127.0.0.1");
    let (store, arrived) = collect(&receiver, "out");
    receiver.pipeline.set_state(gst::State::Playing).unwrap();
    wait_for(&store, &arrived, FRAMES);
    let before = sink_sees(&sink).expect("the sink serves the receiver");
    assert!(before.starts_with("127.0.0.1:"), "from 127.0.0.1: {before}");

    let src = receiver.by_name("src");
    src.set_property("bind-address", "127.0.0.2");
    let after = wait_for_new_address(&sink, &before, &store, &arrived);
    eprintln!("the sink saw the receiver move from {before} to {after}");
    assert!(after.starts_with("127.0.0.2:"), "from 127.0.0.2: {after}");
    let bound: u32 = src.property("bound-port");
    assert_eq!(after, format!("127.0.0.2:{bound}"), "bound-port follows");
    let count = store.lock().unwrap().len();
    wait_for(&store, &arrived, count + FRAMES);
    let stats = src.property::<gst::Structure>("stats");
    assert_eq!(stats.get::<u64>("migrations"), Ok(1));
    receiver.pipeline.set_state(gst::State::Null).unwrap();

    let received = store.lock().unwrap().clone();
    assert_one_unbroken_connection(&received, &stats, &sink_messages);
}
