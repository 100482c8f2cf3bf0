//! sync=true paces a 3 s, 30 fps clip at real time; sync=false sends it much faster.

use crate::common::*;
use std::path::Path;
use std::sync::OnceLock;

const FRAMES: u32 = 90;
const FPS: u32 = 30;

fn clip() -> &'static Path {
    static CLIP: OnceLock<(tempfile::TempDir, std::path::PathBuf)> = OnceLock::new();
    let (_, path) = CLIP.get_or_init(|| {
        init();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("clip.h265");
        make_clip(&path, FRAMES, 320, 240, FPS);
        (dir, path)
    });
    path
}

/// Seconds between the first and the last frame's arrival at the receiver.
fn arrival_span(sync: bool) -> f64 {
    init();
    let (sender, port) = start_sender(&format!(
        "filesrc location={} ! h265parse ! quicnalusink name=sink sync={sync} {}",
        clip().display(),
        sink_props()
    ));
    let received = receive_all(&sender, port);

    assert_eq!(received.len(), FRAMES as usize);
    // Not the first frame's and the last's: a repaired loss can bring a group's frames in
    // after the next group's, which is read meanwhile.
    let arrivals = received.iter().map(|r| r.meta.expect("meta").arrival_time);
    let span = arrivals.clone().max().unwrap() - arrivals.min().unwrap();
    let span = span as f64 / 1e9;
    eprintln!("sync={sync}: {FRAMES} frames arrived over {span:.3} s");
    span
}

#[test]
fn sync_true_arrives_in_real_time() {
    let duration = f64::from(FRAMES - 1) / f64::from(FPS);
    let span = arrival_span(true);
    assert!(
        span >= 0.9 * duration,
        "arrived in {span:.3} s, faster than real time ({duration:.3} s)"
    );
}

#[test]
fn sync_false_arrives_several_times_faster() {
    let duration = f64::from(FRAMES - 1) / f64::from(FPS);
    let span = arrival_span(false);
    assert!(
        span < duration / 3.0,
        "sync=false took {span:.3} s for a {duration:.3} s clip"
    );
}

#[test]
fn framerate_paces_a_stream_without_timestamps() {
    // No VUI timing: h265parse stamps only the first access unit (30 in all).
    init();
    let (sender, port) = start_sender(&format!(
        "filesrc location={} ! h265parse ! quicnalusink name=sink framerate=20/1 {}",
        media("vpl-cars_320x240.h265").display(),
        sink_props()
    ));
    let received = receive_all(&sender, port);

    assert_eq!(received.len(), 30);
    let arrival = |r: &Received| r.meta.expect("meta").arrival_time as f64 / 1e9;
    let span = arrival(received.last().unwrap()) - arrival(&received[0]);
    let duration = 29.0 / 20.0;
    assert!(span >= 0.9 * duration, "{span:.3} s for {duration:.3} s");
    // The paced running times travel as PTS, 50 ms apart.
    let pts: Vec<_> = received.iter().filter_map(|r| r.pts).collect();
    assert_eq!(pts.len(), 30);
    assert_eq!(pts[2] - pts[1], gst::ClockTime::from_mseconds(50));
}
