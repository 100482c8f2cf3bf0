//! `quicnalusink`: serves a parsed H.265 stream over QUIC to every receiver that connects.
//!
//! A QUIC server (ALPN `quicnalu/1`). Each receiver gets the stream description on its
//! control stream, then one unidirectional stream per group of pictures. With `sync=true`
//! (the default) buffers leave at the pace of their running time (DTS when PTS is missing);
//! with `sync=false` as fast as the network takes them.
//!
//! Every receiver has its own connection and queue; a slow one loses its own frames and
//! never slows the others. One that connects mid-group gets the current group at once
//! (`join-mode`). Signals `receiver-connecting` (admit or refuse), `receiver-connected`,
//! `receiver-disconnected` and `command-received`, and the action signal `send-command`,
//! carry the application's side; serialized custom downstream events go to every receiver
//! in stream order.
//!
//! With no certificate configured it serves with its own self-signed one, kept in the
//! user's data directory, whose fingerprint it posts at start; receivers trust it on first
//! use. `mode=caller` calls a listening quicnalusrc instead (a camera behind NAT), and
//! `quicnalu://host:port?property=value` URIs set it up.
//!
//! ```text
//! gst-launch-1.0 filesrc location=in.h265 ! h265parse ! quicnalusink
//! gst-launch-1.0 filesrc location=in.h265 ! h265parse ! \
//!     quicnalusink port=4443 cert-file=cert.pem key-file=key.pem
//! ```

use gst::glib;
use gst::prelude::*;

mod adapt;
mod imp;

glib::wrapper! {
    pub struct QuicNaluSink(ObjectSubclass<imp::QuicNaluSink>)
        @extends gst_base::BaseSink, gst::Element, gst::Object,
        @implements gst::URIHandler;
}

pub fn register(plugin: &gst::Plugin) -> Result<(), glib::BoolError> {
    gst::Element::register(
        Some(plugin),
        "quicnalusink",
        gst::Rank::NONE,
        QuicNaluSink::static_type(),
    )
}
