//! Live by default: each receiver's `latency` reaches the sender in HELLO and becomes its
//! latency budget, unless quicnalusink's `latency-budget` fixes one or turns budgets off.

use crate::common::*;
use gst::prelude::*;

/// The budgets the sink reports for its admitted receivers, in ms, once `n` are admitted.
fn budgets(sink_extra: &str, receiver_latencies: &[Option<u32>]) -> Vec<u64> {
    let (sender, port) = start_sender(&format!(
        "filesrc location={} ! h265parse ! quicnalusink name=sink stats-interval=50 {} \
         {sink_extra}",
        media("oh-1104x622.h265").display(),
        sink_props()
    ));
    let messages = element_messages(&sender);
    let receivers: Vec<Running> = receiver_latencies
        .iter()
        .map(|latency| {
            let extra = latency.map_or(String::new(), |ms| format!("latency={ms}"));
            let r = Running::launch(&format!(
                "quicnalusrc {} {extra} ! fakesink",
                src_props(port)
            ));
            r.pipeline.set_state(gst::State::Playing).unwrap();
            r
        })
        .collect();
    let admitted = |s: &gst::Structure| -> Vec<u64> {
        s.get::<gst::Array>("receivers")
            .unwrap()
            .iter()
            .map(|r| r.get::<gst::Structure>().unwrap())
            .filter(|r| r.get::<bool>("admitted").unwrap())
            .map(|r| r.get::<u64>("latency-budget").unwrap() / 1_000_000)
            .collect()
    };
    let mut got = loop {
        let b = admitted(&next_message(&messages, "quicnalusink-stats"));
        if b.len() == receiver_latencies.len() {
            break b;
        }
    };
    drop(receivers);
    got.sort_unstable();
    got
}

#[test]
fn each_receiver_gets_the_latency_it_asks_for_by_default() {
    init();
    // quicnalusrc's default latency is 200 ms.
    assert_eq!(budgets("", &[Some(350), None, Some(80)]), [80, 200, 350]);
}

#[test]
fn latency_budget_fixes_the_budget_or_turns_it_off() {
    init();
    assert_eq!(
        budgets("latency-budget=150", &[Some(350), None]),
        [150, 150]
    );
    assert_eq!(budgets("latency-budget=0", &[Some(350)]), [0]);
}
