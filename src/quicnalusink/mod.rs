//! `quicnalusink`: serves a parsed H.265 stream over QUIC to every receiver that connects.
//!
//! A QUIC server (ALPN `quicnalu/1`). Each receiver gets the stream description on its
//! control stream, then one unidirectional stream per group of pictures. With `sync=true`
//! (the default) buffers leave at the pace of their running time (DTS when PTS is missing);
//! with `sync=false` as fast as the network takes them.
//!
//! ```text
//! gst-launch-1.0 filesrc location=in.h265 ! h265parse ! \
//!     quicnalusink port=4443 cert-file=cert.pem key-file=key.pem
//! ```

use gst::glib;
use gst::prelude::*;

mod adapt;
mod imp;

glib::wrapper! {
    pub struct QuicNaluSink(ObjectSubclass<imp::QuicNaluSink>)
        @extends gst_base::BaseSink, gst::Element, gst::Object;
}

pub fn register(plugin: &gst::Plugin) -> Result<(), glib::BoolError> {
    gst::Element::register(
        Some(plugin),
        "quicnalusink",
        gst::Rank::NONE,
        QuicNaluSink::static_type(),
    )
}
