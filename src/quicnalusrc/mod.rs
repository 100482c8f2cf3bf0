//! `quicnalusrc`: receives an H.265 stream from `quicnalusink` over QUIC.
//!
//! A live source and QUIC client. It outputs `video/x-h265, stream-format=byte-stream,
//! alignment=au` with timestamps mapped from the sender's running time onto this pipeline's
//! clock, so any H.265 decoder can follow it. Every buffer carries a `QuicNaluMeta`
//! (see the `gst-plugin-meta` crate).
//!
//! The action signal `send-command` sends a `GstStructure` to the sender; commands from the
//! sender come out as custom downstream events, in stream order, and `quicnalusrc-command`
//! messages.
//!
//! ```text
//! gst-launch-1.0 quicnalusrc address=127.0.0.1 port=4443 ca-file=cert.pem ! \
//!     h265parse ! avdec_h265 ! autovideosink
//! ```

use gst::glib;
use gst::prelude::*;

mod imp;
mod timeline;

glib::wrapper! {
    pub struct QuicNaluSrc(ObjectSubclass<imp::QuicNaluSrc>)
        @extends gst_base::PushSrc, gst_base::BaseSrc, gst::Element, gst::Object;
}

pub fn register(plugin: &gst::Plugin) -> Result<(), glib::BoolError> {
    gst::Element::register(
        Some(plugin),
        "quicnalusrc",
        gst::Rank::NONE,
        QuicNaluSrc::static_type(),
    )
}
