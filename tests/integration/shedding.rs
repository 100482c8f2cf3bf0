//! quicnalusink sheds by NAL cost: behind a link narrower than the stream, with a latency
//! budget, it drops non-reference pictures before it gives up a group, and decoding goes on
//! across them.

use crate::common::*;
use gstquicnalu::media::h265;
use std::collections::HashMap;

/// 10 s of 480x272 at about 2.9 Mbit/s with three non-reference B pictures (TRAIL_N) after
/// each P: they carry about half the bytes.
fn b_frame_clip() -> std::path::PathBuf {
    cached_clip(
        "zone-plate-480x272-bframes.h265",
        "videotestsrc num-buffers=300 pattern=zone-plate kx2=20 ky2=20 kt=1 kt2=2 ! \
         video/x-raw,width=480,height=272,framerate=30/1 ! \
         x265enc speed-preset=ultrafast bitrate=3000 key-int-max=60 \
         option-string=bframes=3:b-pyramid=0",
    )
}

#[test]
fn non_reference_pictures_go_first() {
    init();
    let (sender, port, sent) = start_tapped_sender(&format!(
        "filesrc location={} ! h265parse name=parse ! \
         quicnalusink name=sink framerate=30/1 latency-budget=200 {}",
        b_frame_clip().display(),
        sink_props()
    ));
    // 2.2 Mbit/s: about 75% of the stream, more than its reference pictures need.
    let relay = relay_to(port, capped_link(2_200_000, 64 * 1024));
    let received = receive_all_via(&sender, &relay);

    let sent = sent.lock().unwrap().clone();
    let index: HashMap<&[u8], usize> = sent
        .iter()
        .enumerate()
        .map(|(i, au)| (&au[..], i))
        .collect();
    // After a reset group the sender may put the parameter sets in front of an IRAP.
    let sent_as = |data: &[u8]| {
        index.get(data).copied().or_else(|| {
            let i = sent
                .iter()
                .position(|s| data.len() > s.len() && data.ends_with(s))?;
            let prefix = &data[..data.len() - sent[i].len()];
            (h265::merge_parameter_sets(&[], prefix) == prefix).then_some(i)
        })
    };
    let got: Vec<usize> = received
        .iter()
        .map(|r| sent_as(&r.data).expect("every output frame was sent"))
        .collect();
    assert!(got.windows(2).all(|w| w[0] < w[1]), "frames in order");

    // A gap followed by a picture that is not an IRAP means decoding went on across it:
    // every picture missing there must be one nothing references (shed by the sender, or
    // dropped late by the receiver).
    let info = |i: usize| h265::inspect(&sent[i]).unwrap();
    let sub_layers = info(0)
        .sub_layers
        .expect("the first access unit carries the SPS");
    let (mut shed, mut skipped) = (0, 0);
    for w in got.windows(2) {
        let missing = w[0] + 1..w[1];
        if info(w[1]).irap {
            skipped += missing.len();
            continue;
        }
        for i in missing {
            assert!(
                info(i).drop_cost(sub_layers) == h265::DropCost::Alone,
                "reference picture {i} missing, yet picture {} was output",
                w[1]
            );
            shed += 1;
        }
    }
    eprintln!(
        "{} of {} frames output; {shed} non-reference pictures missing inside groups, \
         {skipped} lost to skipped groups",
        got.len(),
        sent.len()
    );
    assert!(shed > 0, "no non-reference picture was dropped");
    let (decoded, errors) = decode_check(&stream_bytes(&received));
    assert_eq!(errors, "", "ffmpeg reported errors");
    assert_eq!(decoded, received.len(), "every output frame decodes");
}
