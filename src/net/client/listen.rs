//! A listening receiver (`mode=listener`) between connections and while it calls back:
//! waiting for a knock the doorman answers (knock.rs), and holding a call-back to what an
//! address that has not answered may be sent.

use super::Queue;
use crate::net::link::Link;
use crate::net::socket::{Addrs, Endpoint, RecvBatch, Wire};
use crate::net::stats::Reporter;
use crate::policy::ending::poll_failed;
use crate::policy::knock;
use crate::policy::knock::{Call, Doorman, Knock, AMPLIFICATION, HEAR_BACK, KNOCK_LEN};
use crate::stats::{ClientStats, ReceiverCounters};
use mio::Events;
use std::net::SocketAddr;
use std::time::Instant;

pub(super) enum Waited {
    Knock(Call),
    Stopping,
    Expired,
}

/// A listener between connections: what it reads while it waits for a knock.
pub(super) struct Waiting<'a> {
    pub endpoint: &'a mut Endpoint,
    pub link: &'a Link<Queue>,
    pub buf: &'a mut [u8],
    /// Knocks must be signed with it, if not empty (knock.rs).
    pub token: &'a [u8],
    pub counters: &'a mut ReceiverCounters,
    pub stats: &'a mut Reporter<ClientStats>,
}

impl Waiting<'_> {
    /// Reads datagrams, a batch at a time, until `door` answers a knock, the element stops,
    /// or `until` passes; anything else (a lost connection's late packets) is dropped.
    pub fn wait(self, door: &mut Doorman, until: Option<Instant>) -> Waited {
        let mut events = Events::with_capacity(4);
        loop {
            if self.link.lock().shutdown {
                return Waited::Stopping;
            }
            let now = Instant::now();
            let mut batch = RecvBatch::default();
            while let Some(d) = batch.next(self.endpoint, self.buf) {
                for r in d.ranges() {
                    let knock = knock::read(&self.buf[r], Some(self.token));
                    heard(door, knock, d.from, now, self.counters);
                }
            }
            // Knocks heard while the last call-back was under way count too.
            if let Some(caller) = door.next(now) {
                return Waited::Knock(caller);
            }
            if until.is_some_and(|t| now >= t) {
                return Waited::Expired;
            }
            let counters = *self.counters;
            let snapshot = self.stats.poll(now, || ClientStats {
                peer: None,
                connection: None,
                counters,
                routes: Vec::new(),
            });
            if let Some(stats) = snapshot {
                self.link.update(|s| s.inner.stats = stats);
            }
            let deadlines = [until, Some(self.stats.due())];
            if let Err(e) = self.endpoint.wait(&mut events, deadlines, !batch.drained()) {
                self.link.update(|s| s.failure = Some(poll_failed(e)));
                return Waited::Stopping;
            }
        }
    }
}

/// Takes a datagram that was `knock` from `from` to the doorman, and counts it.
pub(super) fn heard(
    door: &mut Doorman,
    knock: Knock,
    from: SocketAddr,
    now: Instant,
    counters: &mut ReceiverCounters,
) {
    match knock {
        Knock::NotAKnock => {}
        Knock::Valid { sender } if door.knocked(now, from, sender) => counters.knocks += 1,
        Knock::Valid { .. } | Knock::Unsigned => {
            log::debug!("ignoring a knock from {from} ({knock:?})");
            counters.knocks_refused += 1;
        }
    }
}

/// A call-back to a knock's source that has not heard from it yet: it gives up after
/// HEAR_BACK, and sends no more than AMPLIFICATION times the source's knocks.
#[derive(Debug, Clone, Copy)]
pub(super) struct HearBack {
    pub until: Instant,
    /// Bytes it may still send.
    pub allowance: usize,
}

impl HearBack {
    pub fn new(started: Instant) -> Self {
        HearBack {
            until: started + HEAR_BACK,
            allowance: AMPLIFICATION * KNOCK_LEN,
        }
    }
}

/// The socket, for a call-back not yet heard from: a datagram past the allowance is not
/// sent, and marks the allowance spent (the attempt then ends).
pub(super) struct Allowed<'a> {
    pub socket: &'a mio::net::UdpSocket,
    pub allowance: &'a std::cell::Cell<usize>,
}

impl Wire for Allowed<'_> {
    fn send(&self, data: &[u8], segment: usize, at: Addrs) -> std::io::Result<()> {
        match self.allowance.get().checked_sub(data.len()) {
            Some(left) => {
                self.allowance.set(left);
                Wire::send(self.socket, data, segment, at)
            }
            None => {
                self.allowance.set(0);
                Ok(())
            }
        }
    }
}
