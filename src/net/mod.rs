//! The networking layer: one thread per element instance owns the UDP socket, quiche and
//! every connection (the sans-IO loop of quiche's examples), and drives the cores
//! ([`crate::sender`], [`crate::receiver`], [`crate::policy`]) with the clock. The
//! streaming thread talks to it only through a [`link::Link`].

pub mod capture;
pub mod client;
pub mod config;
mod conn;
mod entry;
pub mod events;
mod files;
pub mod known_hosts;
pub mod link;
pub mod moq;
mod paths;
mod retry;
pub mod server;
mod socket;
pub mod stats;
pub mod tls;
pub mod trust;
mod udp;
