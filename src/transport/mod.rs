//! The quiche side of both elements: one networking thread per element instance owns the
//! UDP socket and every connection (sans-IO loop as in quiche's examples); the streaming
//! thread talks to it only through a [`link::Link`].

mod client;
mod config;
mod join;
mod lateness;
mod link;
pub mod logger;
mod pacer;
mod rate;
mod server;
mod socket;
mod udp;

pub use client::{Client, ClientSettings, ConnectionEvent, Event, ReceivedFrame, Reconnect};
pub use config::CongestionControl;
pub use join::JoinMode;
pub use link::Interrupted;
pub use server::{Admission, Estimate, MediaFrame, ReceiverEvent, Server, ServerSettings};

/// CLOCK_MONOTONIC in nanoseconds: the clock frame headers and QuicNaluMeta use.
pub fn monotonic_ns() -> u64 {
    gst::get_timestamp().nseconds()
}
