//! quicnalusink's `adapt-bitrate`: behind a link narrower than the encoder's target, the
//! sink steers x265enc's bitrate under the link's rate, and what arrives decodes.

use crate::common::*;
use gst::prelude::*;

#[test]
fn encoder_bitrate_follows_a_capped_link() {
    init();
    let cap_kbps = 1200;
    let (sender, port) = start_sender(&format!(
        "videotestsrc is-live=true pattern=zone-plate kx2=20 ky2=20 kt=1 kt2=2 ! \
         video/x-raw,width=480,height=272,framerate=30/1 ! \
         x265enc name=enc speed-preset=ultrafast tune=zerolatency bitrate=2000 key-int-max=60 ! \
         h265parse ! quicnalusink name=sink latency-budget=200 adapt-bitrate=true \
         min-bitrate=200 {}",
        sink_props()
    ));
    let estimates = element_messages(&sender);
    let relay = relay_to(port, capped_link(cap_kbps * 1000, 64 * 1024));
    let receiver = receiver_via(&relay, "");
    let (store, _) = collect(&receiver, "out");
    receiver.pipeline.set_state(gst::State::Playing).unwrap();

    // 20 estimates, one per 500 ms: about 10 s of streaming.
    let mut steps = Vec::new();
    for _ in 0..20 {
        let m = next_message(&estimates, "quicnalusink-bandwidth");
        let estimate = m.get::<u64>("bitrate").unwrap() / 1000;
        let encoder = m
            .get::<u32>("encoder-bitrate")
            .expect("the sink found x265enc");
        steps.push((estimate, encoder));
    }
    receiver.pipeline.set_state(gst::State::Null).unwrap();
    let final_kbps: u32 = sender.by_name("enc").property("bitrate");
    eprintln!("(estimate, encoder) kbit/s every 500 ms: {steps:?}; final {final_kbps}");

    assert!(
        final_kbps < cap_kbps as u32,
        "encoder at {final_kbps} kbit/s over a {cap_kbps} kbit/s link"
    );
    let received = store.lock().unwrap().clone();
    assert!(received.len() >= 60, "only {} frames", received.len());
    let (decoded, errors) = decode_check(&stream_bytes(&received));
    assert_eq!(errors, "", "ffmpeg reported errors");
    assert_eq!(decoded, received.len(), "every output frame decodes");
}
