//! quicnalu: live H.265 over QUIC, as two GStreamer elements.
//!
//! - `quicnalusink` serves a parsed H.265 stream to every receiver that connects.
//! - `quicnalusrc` receives it and outputs a plain H.265 byte-stream.
//!
//! See README.md for the properties and docs/PROTOCOL.md for the wire format. The impairment
//! relay the project's tests, benchmarks and examples put between the two is a crate of its
//! own, udp-impair.

use gst::glib;

// The layers, top down (docs/ARCHITECTURE.md); each imports only from those below it.
// The element layer, the only one that names GStreamer or GLib:
pub mod element;
mod quicnalusink;
mod quicnalusrc;

// The networking layer: threads, sockets, quiche, MoQ.
pub mod net;

// The sans-IO cores: what the sender sends and when, how the receiver rebuilds the
// stream, and the decisions around connections.
pub mod policy;
pub mod receiver;
pub mod sender;

// The sender's core driving receivers' cores on a simulated clock (tests only).
#[cfg(test)]
mod pair;

// Wire coding, the media model, and what users read: errors and stats.
pub mod error;
pub mod media;
pub mod protocol;
pub mod stats;

pub use quicnalusink::QuicNaluSink;
pub use quicnalusrc::QuicNaluSrc;

fn plugin_init(plugin: &gst::Plugin) -> Result<(), glib::BoolError> {
    gst_plugin_meta::register();
    element::log::install();
    quicnalusink::register(plugin)?;
    quicnalusrc::register(plugin)
}

gst::plugin_define!(
    quicnalu,
    env!("CARGO_PKG_DESCRIPTION"),
    plugin_init,
    concat!(env!("CARGO_PKG_VERSION"), "-", env!("COMMIT_ID")),
    "MPL-2.0",
    env!("CARGO_PKG_NAME"),
    env!("CARGO_PKG_NAME"),
    env!("CARGO_PKG_REPOSITORY"),
    env!("BUILD_REL_DATE")
);
