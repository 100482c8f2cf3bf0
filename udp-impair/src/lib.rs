//! A userspace UDP impairment relay for tests, benchmarks and demos (netem is absent on the
//! machines this project is built on). It sits between receivers and a sender on loopback
//! and, per direction: delays, jitters (with or without reordering), drops at random or in
//! bursts (Gilbert-Elliott), cuts the link for scheduled outages, and caps the bandwidth
//! with a bounded queue. Plain UDP, nothing of GStreamer or QUIC: quicnalu's tests,
//! benchmarks and relay example put it between quicnalusink and quicnalusrc; the elements
//! never use it.
//!
//! Every random choice comes from a generator seeded per direction and is made in packet
//! arrival order, so a given seed and packet sequence always gets the same treatment.
//!
//! ```no_run
//! use udp_impair::{Impairment, Relay, RelayConfig};
//! use std::time::Duration;
//! let lossy = Impairment {
//!     delay: Duration::from_millis(20),
//!     loss: 0.01,
//!     ..Impairment::default()
//! };
//! let relay = Relay::start(RelayConfig::symmetric("127.0.0.1:4443".parse().unwrap(), lossy))
//!     .unwrap();
//! // Point receivers at relay.local_addr() instead of the sender.
//! ```

mod config;
mod error;
mod impairment;
mod lane;
mod parse;
mod relay;
mod rng;
mod worker;

pub use config::{Direction, DirectionStats, RelayConfig, RelayStats};
pub use error::{SpecError, ValueError};
pub use impairment::{GilbertElliott, Impairment};
pub use lane::{Dropped, Lane};
pub use parse::parse_duration;
pub use relay::Relay;
pub use rng::Rng;
