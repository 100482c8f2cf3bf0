//! Memory and service when a receiver or the network is slower than the stream: what the
//! elements keep is bounded, measured as the growth of the heap in use.

use crate::common::*;
use crate::{status_bytes, turn};
use gst::prelude::*;
use std::time::{Duration, Instant};
use udp_impair::Impairment;

/// The process's memory two ways. `heap` is what is allocated and not yet freed: malloc's
/// bytes in use over every arena plus its mmapped blocks (mallinfo2's uordblks + hblkhd),
/// which is what the elements keep. `rss` also counts what malloc has had back and keeps
/// for reuse (`kept`, fordblks), less the pages an earlier test in the process already
/// touched: it depends on what ran before, not only on the elements.
#[derive(Clone, Copy)]
struct Memory {
    heap: u64,
    kept: u64,
    rss: u64,
}

impl Memory {
    fn now() -> Memory {
        // SAFETY: mallinfo2 only reads malloc's own counters.
        let info = unsafe { libc::mallinfo2() };
        Memory {
            heap: (info.uordblks + info.hblkhd) as u64,
            kept: info.fordblks as u64,
            rss: status_bytes("VmRSS"),
        }
    }

    /// The larger of each figure.
    fn max(self, other: Memory) -> Memory {
        Memory {
            heap: self.heap.max(other.heap),
            kept: self.kept.max(other.kept),
            rss: self.rss.max(other.rss),
        }
    }

    fn growth_since(self, start: Memory) -> Memory {
        Memory {
            heap: self.heap.saturating_sub(start.heap),
            kept: self.kept.saturating_sub(start.kept),
            rss: self.rss.saturating_sub(start.rss),
        }
    }
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1 << 20) as f64
}

/// Samples the process's memory every 50 ms until `running` ends (EOS or error); returns
/// how far each figure rose above its value at the start, at its peak.
fn growth_until_end(running: &Running) -> Memory {
    let bus = running.pipeline.bus().expect("bus");
    let start = Memory::now();
    let mut peak = start;
    let give_up = Instant::now() + WATCHDOG;
    while bus
        .timed_pop_filtered(
            gst::ClockTime::from_mseconds(50),
            &[gst::MessageType::Eos, gst::MessageType::Error],
        )
        .is_none()
    {
        peak = peak.max(Memory::now());
        assert!(Instant::now() < give_up, "the receiver never ends");
    }
    let growth = peak.growth_since(start);
    eprintln!(
        "heap in use grew {:.1} MiB at its peak; RSS {:.1} MiB, of which malloc kept up to \
         {:.1} MiB freed for reuse",
        mib(growth.heap),
        mib(growth.rss),
        mib(growth.kept)
    );
    growth
}

#[test]
fn sink_keeps_serving_when_a_receiver_vanishes() {
    let _turn = turn();
    let clip = noise_clip();
    let (sender, port, sent) = start_fingerprinted_sender(&format!(
        "filesrc location={} ! h265parse name=parse ! quicnalusink name=sink \
         eos-timeout=1000 {}",
        clip.display(),
        sink_props()
    ));
    let (steady, received) = fingerprinted_receiver(port);
    steady.pipeline.set_state(gst::State::Playing).unwrap();
    // The one that vanishes: its long timeout keeps the sink's side of it open throughout.
    let relay = relay_to(port, Impairment::default());
    let vanishing = receiver_via(&relay, "timeout=60000");
    let (vanishing_store, vanishing_arrived) = collect(&vanishing, "out");
    vanishing.pipeline.set_state(gst::State::Playing).unwrap();
    wait_for(&vanishing_store, &vanishing_arrived, 5);

    // No goodbye, no more packets either way.
    relay.outage(Duration::from_secs(600));
    let vanished_at = gst::get_timestamp().nseconds();
    let growth = growth_until_end(&steady);
    sender.finish(WATCHDOG).expect("sender reaches EOS");

    assert_every_frame(&received, &sent);
    let received = received.lock().unwrap().clone();
    let after: Vec<u64> = received
        .iter()
        .map(|r| r.1)
        .filter(|&t| t > vanished_at)
        .collect();
    let longest_gap_ms = after
        .windows(2)
        .map(|w| (w[1] - w[0]) as f64 / 1e6)
        .fold(0.0, f64::max);
    let growth_mib = mib(growth.heap);
    eprintln!(
        "{} frames after the vanish; longest gap {longest_gap_ms:.1} ms",
        after.len()
    );
    assert!(after.len() >= 100, "the stream went on after the vanish");
    assert!(
        longest_gap_ms < 1000.0,
        "the steady receiver stalled {longest_gap_ms:.1} ms"
    );
    // What the vanished receiver can cost: the sink's queue for it (MAX_BACKLOG, then it
    // is dropped) and what quiche took for it. Mostly the latter is nothing and the heap
    // grows 2-3 MiB. But while a probe timeout is pending quiche ignores the congestion
    // window (quiche's cwnd_available), so a write then hands it everything the sink holds
    // and what follows, up to the receiver's flow-control window (transport/config.rs:
    // 64 MiB). The budget and MAX_BACKLOG no longer reach those frames; they stay until the
    // connection ends. About one run in four does that, and grows 30 MiB here.
    const MAX_BACKLOG_MIB: f64 = 8.0;
    const FLOW_CONTROL_WINDOW_MIB: f64 = 64.0;
    let bound = MAX_BACKLOG_MIB + FLOW_CONTROL_WINDOW_MIB;
    assert!(
        growth_mib < bound,
        "the heap grew {growth_mib:.1} MiB, beyond {bound} MiB"
    );
}

#[test]
fn memory_stays_flat_when_the_network_is_slower_than_the_stream() {
    let _turn = turn();
    // About 25 Mbit/s through a 16 Mbit/s link: the sink must drop, by the budget.
    let (sender, port) = start_sender(&format!(
        "filesrc location={} ! h265parse ! quicnalusink name=sink latency-budget=200 \
         eos-timeout=1000 {}",
        noise_clip().display(),
        sink_props()
    ));
    let relay = relay_to(port, capped_link(16_000_000, 256 * 1024));
    let receiver = receiver_via(&relay, "");
    let (store, arrived) = collect(&receiver, "out");
    receiver.pipeline.set_state(gst::State::Playing).unwrap();
    wait_for(&store, &arrived, 1);
    let growth = growth_until_end(&receiver);
    sender.finish(WATCHDOG).expect("sender reaches EOS");

    let received = store.lock().unwrap().clone();
    // What this test keeps of the received frames is not the elements' memory.
    let kept: u64 = received.iter().map(|r| r.data.len() as u64).sum();
    let growth_mib = mib(growth.heap) - mib(kept);
    let gaps = received
        .iter()
        .filter(|r| {
            r.meta
                .is_some_and(|m| m.flags.contains(gst_plugin_meta::Flags::GAP))
        })
        .count();
    eprintln!(
        "{} of 300 frames out, {gaps} after a skip; the heap grew {growth_mib:.1} MiB besides \
         the {:.1} MiB of frames kept",
        received.len(),
        mib(kept)
    );
    assert!(gaps > 0, "the sink never had to drop");
    assert!(received.len() >= 30, "only {} frames", received.len());
    let (decoded, errors) = decode_check(&stream_bytes(&received));
    assert_eq!(errors, "", "ffmpeg reported errors");
    assert_eq!(decoded, received.len(), "every output frame decodes");
    // Unbounded, the sink's queue would grow by 9 Mbit/s x 10 s, about 11 MiB.
    assert!(growth_mib < 8.0, "the heap grew {growth_mib:.1} MiB");
}

/// MoQ publishing while its relay is away: moq-net's cache expires groups only while a
/// connection is polled, so the publisher itself must let go of all but the groups a relay
/// can still ask for (transport/moq/publish.rs).
#[test]
fn a_publisher_holds_flat_memory_while_its_relay_is_away_and_after_it_returns() {
    let _turn = turn();
    use crate::common::moq::MoqRelay;
    use std::sync::atomic::{AtomicU64, Ordering};
    let relay = MoqRelay::with_certificate(&certs().cert, &certs().key);
    // A 250 Mbit/s 4K clip, over and over, as fast as the sink takes it.
    let clip = media("vkcts-jellyfish-250-mbps-4k-uhd-GOB-IPB13.h265");
    let sender = Running::launch(&format!(
        "multifilesrc location={} loop=true ! h265parse ! \
         quicnalusink name=sink sync=false wait-for-connection=false {} {}",
        clip.display(),
        sink_props(),
        relay.sink_props("memory.hang")
    ));
    let pushed = std::sync::Arc::new(AtomicU64::new(0));
    let counter = pushed.clone();
    sender
        .by_name("sink")
        .static_pad("sink")
        .unwrap()
        .add_probe(gst::PadProbeType::BUFFER, move |_, info| {
            if let Some(gst::PadProbeData::Buffer(b)) = &info.data {
                counter.fetch_add(b.size() as u64, Ordering::Relaxed);
            }
            gst::PadProbeReturn::Ok
        });
    let messages = element_messages(&sender);
    sender.pipeline.set_state(gst::State::Playing).unwrap();
    next_message(&messages, "quicnalusink-moq-connected");

    // Samples memory every 100 ms until `bytes` more have gone into the sink.
    let sample = |what: &str, bytes: u64| -> Memory {
        let until = pushed.load(Ordering::Relaxed) + bytes;
        let give_up = Instant::now() + WATCHDOG;
        let mut peak = Memory::now();
        let mut line = Vec::new();
        while pushed.load(Ordering::Relaxed) < until {
            std::thread::sleep(Duration::from_millis(100));
            let now = Memory::now();
            line.push(format!("{:.0}", mib(now.rss)));
            peak = peak.max(now);
            assert!(Instant::now() < give_up, "the sink stopped taking buffers");
        }
        eprintln!("{what}: RSS MiB every 100 ms: {}", line.join(" "));
        peak
    };
    const MB: u64 = 1_000_000;
    let warm = sample("relay up", 200 * MB);
    let stopped = relay.stop();
    let away = sample("relay away", 1000 * MB);
    let relay = stopped.start();
    loop {
        let s = next_message(&messages, "quicnalusink-moq-connected");
        if s.get::<bool>("resumed").unwrap() {
            break;
        }
    }
    let back = sample("relay back", 500 * MB);
    drop(sender);
    drop(relay);
    let (away, back) = (away.growth_since(warm), back.growth_since(warm));
    eprintln!(
        "heap above the relay-up peak: {:.1} MiB while away (1 GB pushed), {:.1} MiB after \
         it returned; RSS {:.1} and {:.1} MiB",
        mib(away.heap),
        mib(back.heap),
        mib(away.rss),
        mib(back.rss)
    );
    // Two groups of this clip are a few MB; 64 MiB is two groups at moq-net's 32 MB cap.
    assert!(
        mib(away.heap) < 64.0,
        "grew {:.1} MiB while away",
        mib(away.heap)
    );
    assert!(
        mib(back.heap) < 64.0,
        "grew {:.1} MiB after",
        mib(back.heap)
    );
}
