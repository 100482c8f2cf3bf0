//! quicnalu: live H.265 over QUIC, as two GStreamer elements.
//!
//! - `quicnalusink` serves a parsed H.265 stream to every receiver that connects.
//! - `quicnalusrc` receives it and outputs a plain H.265 byte-stream.
//!
//! See README.md for the properties and docs/PROTOCOL.md for the wire format. With the
//! `relay` feature (on for the project's tests, benchmarks and examples only), `relay` is
//! the impairment relay they put between the two.

use gst::glib;

// Layers, top down; each imports only from those below it.
pub mod element;
pub mod error;
pub mod media;
pub mod net;
pub mod policy;
pub mod protocol;
mod quicnalusink;
mod quicnalusrc;
pub mod receiver;
#[cfg(feature = "relay")]
pub mod relay;
pub mod sender;

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
