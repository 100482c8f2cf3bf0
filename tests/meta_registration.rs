//! An application that links gst-plugin-meta and registers QuicNaluMeta itself, then loads the
//! plugin's shared library (which has its own copy of the crate): registration happens once,
//! and the application reads the plugin's meta through its own copy.
//!
//! Alone in its binary: the plugin is loaded from the .so here, never registered statically.

mod common;

use gst::prelude::*;
use gst_plugin_meta::QuicNaluMeta;

#[test]
fn app_and_plugin_both_register() {
    gst::init().unwrap();
    gst_plugin_meta::register();
    assert!(gst::meta::CustomMeta::is_registered(
        gst_plugin_meta::META_NAME
    ));
    let library = common::plugin_library();
    let plugin = gst::Plugin::load_file(&library)
        .unwrap_or_else(|e| panic!("load {}: {e}", library.display()));
    assert_eq!(plugin.plugin_name(), "quicnalu");
    gst_plugin_meta::register();

    let certs = common::certs();
    let sender = gst::parse::launch(&format!(
        "filesrc location={} ! h265parse ! quicnalusink name=sink sync=false latency-budget=0 port=0 \
         cert-file={} key-file={}",
        common::media("vpl-cars_128x96.h265").display(),
        certs.cert,
        certs.key
    ))
    .unwrap()
    .downcast::<gst::Pipeline>()
    .unwrap();
    let sender = common::Running { pipeline: sender };
    sender.pipeline.set_state(gst::State::Playing).unwrap();
    let port: u32 = sender.by_name("sink").property("bound-port");
    let receiver = common::Running::launch(&format!(
        "quicnalusrc {} ! appsink name=out sync=false",
        common::src_props(port as u16)
    ));
    let (received, _) = common::collect(&receiver, "out");
    receiver.pipeline.set_state(gst::State::Playing).unwrap();
    receiver
        .finish(common::WATCHDOG)
        .expect("receiver reaches EOS");

    let received = received.lock().unwrap();
    assert!(!received.is_empty());
    for (i, r) in received.iter().enumerate() {
        let meta: QuicNaluMeta = r.meta.expect("meta readable through the app's copy");
        assert_eq!(meta.seq, i as u64);
        assert!(meta.arrival_time >= meta.sender_time);
    }
}
