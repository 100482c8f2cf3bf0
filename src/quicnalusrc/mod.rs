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
//! With no ca-file, server-name, tls-verify or certificate-fingerprint it trusts a sender on
//! first use and remembers its certificate (known-hosts). `mode=listener` waits for a
//! quicnalusink with `mode=caller` to call. As a URI handler for `quicnalu://` with rank
//! primary it plays in playbin and uridecodebin.
//!
//! ```text
//! gst-launch-1.0 quicnalusrc ! avdec_h265 ! autovideosink
//! gst-launch-1.0 quicnalusrc address=127.0.0.1 port=4443 ca-file=cert.pem ! \
//!     h265parse ! avdec_h265 ! autovideosink
//! gst-play-1.0 quicnalu://127.0.0.1:4443
//! ```

use gst::glib;
use gst::prelude::*;

mod imp;

glib::wrapper! {
    pub struct QuicNaluSrc(ObjectSubclass<imp::QuicNaluSrc>)
        @extends gst_base::PushSrc, gst_base::BaseSrc, gst::Element, gst::Object,
        @implements gst::URIHandler;
}

pub fn register(plugin: &gst::Plugin) -> Result<(), glib::BoolError> {
    gst::Element::register(
        Some(plugin),
        "quicnalusrc",
        // playbin and uridecodebin pick URI sources by rank.
        gst::Rank::PRIMARY,
        QuicNaluSrc::static_type(),
    )
}
