//! The properties both elements have, whose values the transport takes.

use crate::net::config;
use crate::net::moq::RelayUrl;
use crate::net::tls::Fingerprint;
use crate::sender::join;
use gst::glib;
use gst::prelude::*;
use std::net::{SocketAddr, ToSocketAddrs};

/// Who dials whom, the `mode` property both elements have (as srtsink and srtsrc have it).
/// QUIC roles stay the same either way: the sender is the QUIC server; a calling sender
/// knocks and the listening receiver connects back (policy/knock.rs).
#[derive(Debug, Clone, Copy, PartialEq, Eq, glib::Enum)]
#[enum_type(name = "GstQuicNaluMode")]
pub enum Mode {
    #[enum_value(name = "Caller: dial address:port", nick = "caller")]
    Caller,
    #[enum_value(
        name = "Listener: wait on address:port to be called",
        nick = "listener"
    )]
    Listener,
}

/// The `mode` property, with the element's default and what `address` then means.
pub fn mode(default: Mode, blurb: &str) -> glib::ParamSpec {
    glib::ParamSpecEnum::builder_with_default("mode", default)
        .nick("Mode")
        .blurb(blurb)
        .mutable_ready()
        .build()
}

/// `congestion-control`: quiche's congestion controllers ([`config::CongestionControl`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, glib::Enum)]
#[enum_type(name = "GstQuicNaluCongestionControl")]
pub enum CongestionControl {
    #[enum_value(name = "Reno: loss-based, classic", nick = "reno")]
    Reno,
    #[enum_value(name = "CUBIC: loss-based", nick = "cubic")]
    Cubic,
    #[enum_value(name = "BBRv2: model-based, paced", nick = "bbr2")]
    Bbr2,
    /// The default, chosen by measurement: see docs/CONGESTION.md.
    #[default]
    #[enum_value(
        name = "BBRv2 for live video: random loss is not taken for congestion",
        nick = "live"
    )]
    Live,
}

impl From<CongestionControl> for config::CongestionControl {
    fn from(c: CongestionControl) -> Self {
        match c {
            CongestionControl::Reno => config::CongestionControl::Reno,
            CongestionControl::Cubic => config::CongestionControl::Cubic,
            CongestionControl::Bbr2 => config::CongestionControl::Bbr2,
            CongestionControl::Live => config::CongestionControl::Live,
        }
    }
}

/// `adapt-bitrate` (quicnalusink): whether to steer an upstream encoder's bitrate to what
/// the receivers' paths carry (quicnalusink/adapt.rs). The nicks keep the boolean it was.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, glib::Enum)]
#[enum_type(name = "GstQuicNaluAdaptBitrate")]
pub enum AdaptBitrate {
    #[enum_value(name = "Never steer the encoder", nick = "false")]
    Off,
    #[enum_value(
        name = "Steer the encoder, and warn if there is none to steer",
        nick = "true"
    )]
    On,
    /// The default: a live encoder is steered, a file or a fixed stream left alone.
    #[default]
    #[enum_value(
        name = "Steer an upstream encoder if there is one (x265enc, x264enc, NVENC, VA, QSV)",
        nick = "auto"
    )]
    Auto,
}

/// `join-mode` (quicnalusink): how a receiver connecting mid-stream starts
/// ([`join::JoinMode`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, glib::Enum)]
#[enum_type(name = "GstQuicNaluJoinMode")]
pub enum JoinMode {
    #[default]
    #[enum_value(name = "Cached: the current group at once", nick = "cached")]
    Cached,
    #[enum_value(name = "Keyframe: wait for the next IRAP", nick = "keyframe")]
    Keyframe,
    #[enum_value(
        name = "Request: ask upstream for a keyframe and wait for it",
        nick = "request"
    )]
    Request,
}

impl From<JoinMode> for join::JoinMode {
    fn from(m: JoinMode) -> Self {
        match m {
            JoinMode::Cached => join::JoinMode::Cached,
            JoinMode::Keyframe => join::JoinMode::Keyframe,
            JoinMode::Request => join::JoinMode::Request,
        }
    }
}

/// The `congestion-control` property both elements have.
pub fn congestion_control() -> glib::ParamSpec {
    glib::ParamSpecEnum::builder_with_default("congestion-control", CongestionControl::default())
        .nick("Congestion control")
        .blurb("quiche's congestion controller for this element's connections")
        .mutable_ready()
        .build()
}

/// `qlog-dir` and `keylog-file`, which both elements have.
pub fn capture() -> [glib::ParamSpec; 2] {
    [
        glib::ParamSpecString::builder("qlog-dir")
            .nick("qlog folder")
            .blurb(
                "Write a qlog file (JSON-SEQ) per connection into this folder, made if \
                 missing (NULL: none)",
            )
            .mutable_ready()
            .build(),
        glib::ParamSpecString::builder("keylog-file")
            .nick("Key log file")
            .blurb(
                "Append the TLS secrets of every connection to this file, in the NSS key \
                 log format Wireshark reads; for debugging only (NULL: none)",
            )
            .mutable_ready()
            .build(),
    ]
}

/// `stats` and `stats-interval`, which both elements have; `element` names the structure.
pub fn stats(element: &str) -> [glib::ParamSpec; 2] {
    [
        glib::ParamSpecBoxed::builder::<gst::Structure>("stats")
            .nick("Statistics")
            .blurb(&format!(
                "{element}-stats: counters of frames and groups, and per connection RTT, \
                 cwnd, delivery rate, packets and bytes (README.md); at most 100 ms old"
            ))
            .read_only()
            .build(),
        glib::ParamSpecUInt::builder("stats-interval")
            .nick("Statistics interval")
            .blurb(&format!(
                "Milliseconds between {element}-stats element messages carrying the stats \
                 (0: none)"
            ))
            .mutable_ready()
            .build(),
    ]
}

/// `join-mode` (quicnalusink).
pub fn join_mode() -> glib::ParamSpec {
    glib::ParamSpecEnum::builder_with_default("join-mode", JoinMode::default())
        .nick("Join mode")
        .blurb(
            "How a receiver connecting mid-stream starts: with the current group from \
             its IRAP sent at once (cached), at the next keyframe (keyframe), or at a \
             keyframe asked of upstream (request)",
        )
        .mutable_ready()
        .build()
}

/// `moq-broadcast`'s default: hang broadcasts are named `*.hang` by moq-dev's tools.
pub const DEFAULT_MOQ_BROADCAST: &str = "live.hang";

/// `moq-url` and `moq-broadcast`, which both elements have; `role` says what the element
/// does with the broadcast.
pub fn moq(role: &str) -> [glib::ParamSpec; 2] {
    [
        glib::ParamSpecString::builder("moq-url")
            .nick("MoQ relay URL")
            .blurb(&format!(
                "A Media over QUIC relay (moq-relay), moql://host:port[/path]: {role} \
                 (NULL: none; README.md, 'Running at scale with relays')"
            ))
            .mutable_ready()
            .build(),
        glib::ParamSpecString::builder("moq-broadcast")
            .nick("MoQ broadcast")
            .blurb("The broadcast's name on the relay, below the URL's path")
            .default_value(Some(DEFAULT_MOQ_BROADCAST))
            .mutable_ready()
            .build(),
    ]
}

/// What `moq-url` and `moq-broadcast` name: the URL parsed and the relay's host resolved,
/// or the element's error.
pub fn relay_target(
    url: &str,
    broadcast: &str,
) -> Result<(RelayUrl, SocketAddr), gst::ErrorMessage> {
    let url = RelayUrl::parse(url)
        .map_err(|e| gst::error_msg!(gst::ResourceError::Settings, ["moq-url: {}", e]))?;
    if broadcast.is_empty() {
        return Err(gst::error_msg!(
            gst::ResourceError::Settings,
            ["moq-broadcast is empty"]
        ));
    }
    let peer = resolve(&url.host, url.port, "the relay's host")?;
    Ok((url, peer))
}

/// The first address `host` resolves to, or the element's error naming it as `what`.
pub fn resolve(host: &str, port: u16, what: &str) -> Result<SocketAddr, gst::ErrorMessage> {
    (host, port)
        .to_socket_addrs()
        .ok()
        .and_then(|mut addrs| addrs.next())
        .ok_or_else(|| {
            gst::error_msg!(
                gst::ResourceError::NotFound,
                ["cannot resolve {} '{}'", what, host]
            )
        })
}

/// A `certificate-fingerprint` (or `moq-certificate-fingerprint`, the `property` named in
/// the error) as set: None when unset or empty.
pub fn pin(property: &str, value: Option<&str>) -> Result<Option<Fingerprint>, gst::ErrorMessage> {
    value
        .filter(|f| !f.is_empty())
        .map(Fingerprint::parse)
        .transpose()
        .map_err(|e| gst::error_msg!(gst::ResourceError::Settings, ["{}: {}", property, e]))
}
