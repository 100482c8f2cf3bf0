//! How a relay is set up: where it listens and forwards, its seed, each direction's
//! impairment and the scheduled outages; and what it counts.

use crate::Impairment;
use std::net::SocketAddr;
use std::time::Duration;

/// Which way a packet travels.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Direction {
    /// From a receiver (the relay's clients) to the sender.
    ToServer,
    /// From the sender back to a receiver.
    ToClient,
}

/// Where the relay listens, where it forwards, and how it treats packets.
#[derive(Debug, Clone)]
pub struct RelayConfig {
    /// Address receivers connect to; port 0 picks a free one (see
    /// [`Relay::local_addr`](crate::Relay::local_addr)).
    pub listen: SocketAddr,
    /// The sender's address.
    pub server: SocketAddr,
    pub seed: u64,
    pub to_server: Impairment,
    pub to_client: Impairment,
    /// Link cuts as (start after the relay starts, length); both directions drop everything.
    pub outages: Vec<(Duration, Duration)>,
}

impl RelayConfig {
    /// The same impairment both ways, listening on a free loopback port, seed 1.
    pub fn symmetric(server: SocketAddr, impairment: Impairment) -> Self {
        let loopback: std::net::IpAddr = if server.is_ipv4() {
            std::net::Ipv4Addr::LOCALHOST.into()
        } else {
            std::net::Ipv6Addr::LOCALHOST.into()
        };
        RelayConfig {
            listen: SocketAddr::new(loopback, 0),
            server,
            seed: 1,
            to_server: impairment.clone(),
            to_client: impairment,
            outages: Vec::new(),
        }
    }
}

/// Packet counts for one direction.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DirectionStats {
    pub received: u64,
    pub forwarded: u64,
    /// UDP payload bytes of the datagrams forwarded.
    pub forwarded_bytes: u64,
    pub lost: u64,
    pub outage_dropped: u64,
    pub queue_dropped: u64,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RelayStats {
    pub to_server: DirectionStats,
    pub to_client: DirectionStats,
}
