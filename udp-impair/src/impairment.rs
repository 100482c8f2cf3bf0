//! What happens to packets going one way: delay, jitter, loss, bursts, a rate cap.

use std::time::Duration;

/// Bursty loss: a two-state Markov chain, Good and Bad, each with its own loss probability.
/// The chain steps once per packet.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct GilbertElliott {
    /// Chance per packet of going from Good to Bad.
    pub p: f64,
    /// Chance per packet of going from Bad back to Good; 1/r is the mean burst length.
    pub r: f64,
    pub loss_good: f64,
    pub loss_bad: f64,
}

impl GilbertElliott {
    /// Bursts of `mean` packets lost whole, `share` of all packets in them.
    pub fn bursts(share: f64, mean: f64) -> Self {
        let r = 1.0 / mean;
        GilbertElliott {
            p: share * r / (1.0 - share),
            r,
            loss_good: 0.0,
            loss_bad: 1.0,
        }
    }
}

/// What happens to packets going one way. The default passes everything untouched.
#[derive(Debug, Clone, PartialEq)]
pub struct Impairment {
    /// One-way delay added to every packet.
    pub delay: Duration,
    /// A uniformly random extra delay in `[0, jitter)`.
    pub jitter: Duration,
    /// Whether jitter may reorder packets; without it a packet never overtakes an earlier one.
    pub reorder: bool,
    /// Independent random loss probability, 0..=1.
    pub loss: f64,
    /// Bursty loss, applied after `loss`.
    pub burst: Option<GilbertElliott>,
    /// Bandwidth cap in bits per second (UDP payload bytes); None for no cap.
    pub rate_bps: Option<u64>,
    /// Bytes the cap may queue before it drops arrivals (a router's buffer).
    pub queue_bytes: usize,
}

impl Default for Impairment {
    fn default() -> Self {
        Impairment {
            delay: Duration::ZERO,
            jitter: Duration::ZERO,
            reorder: false,
            loss: 0.0,
            burst: None,
            rate_bps: None,
            queue_bytes: 64 * 1024,
        }
    }
}
