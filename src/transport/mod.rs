//! The quiche side of both elements: one networking thread per element instance owns the
//! UDP socket and every connection (sans-IO loop as in quiche's examples); the streaming
//! thread talks to it only through a [`link::Link`].

mod backoff;
pub mod budget;
mod capture;
mod client;
mod config;
mod conn;
mod control;
mod ending;
mod entry;
mod error;
mod fanout;
mod files;
mod gate;
mod inbox;
mod join;
pub mod knock;
mod known_hosts;
mod lateness;
mod link;
pub mod logger;
pub mod moq;
mod pacer;
mod rate;
mod ratelimit;
mod reassembly;
mod repair;
mod retry;
mod server;
mod socket;
pub mod stats;
mod tls;
mod udp;

pub use backoff::Reconnect;
pub use capture::Capture;
pub use client::{Client, ClientSettings, ConnectionEvent};
pub use config::{CongestionControl, Identity};
pub use error::Error;
pub use fanout::{Admission, Estimate, MediaFrame, ReceiverEvent};
pub use inbox::{Event, ReceivedFrame};
pub use join::JoinMode;
pub use known_hosts::{host_key, judge, user_file, KnownHosts, Verdict};
pub use link::Interrupted;
pub use server::{Server, ServerSettings};
pub use stats::{message_poster, ClientStats, Reporter, SenderStats, Snapshot};
pub use tls::{Fingerprint, SelfSigned};

/// CLOCK_MONOTONIC in nanoseconds: the clock frame headers and QuicNaluMeta use.
pub fn monotonic_ns() -> u64 {
    gst::get_timestamp().nseconds()
}
