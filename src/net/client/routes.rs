//! More routes to the same sender (quicnalusrc `paths`): one connection per route, each on
//! its own socket (bound to the route's local address) and thread, saying in HELLO which
//! receiver it is a route of. Each route's core hands its frames to its own inbox; the
//! streaming thread merges them (receiver/merge.rs) as it takes them.

use super::Queue;
use crate::media::monotonic_ns;
use crate::net::link::{Interrupted, NetThread};
use crate::receiver::inbox::{Event, Inbox};
use crate::receiver::merge::Merge;
use crate::stats::RouteStats;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// One route of `paths`: where the sender is on it, and the local address to send from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RouteTarget {
    pub peer: SocketAddr,
    pub bind: Option<IpAddr>,
}

/// How the sender uses a receiver's routes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum PathMode {
    /// Every access unit over every route: losing one loses nothing.
    #[default]
    Redundant,
    /// Each access unit spread over the routes by their capacity.
    Bonded,
}

/// The routes' share of the client's queue.
pub(super) struct Routes {
    /// Per route, what its core handed over and the merge has not taken yet.
    pub inboxes: Vec<Inbox>,
    pub merge: Merge,
    /// Per route, its latest snapshot.
    pub stats: Vec<Option<RouteStats>>,
    /// Routes that failed for good (retrying cannot help, or gave up).
    pub failed: usize,
    /// What to ask for again (REPAIR_REQUEST: frame, offset, length), for the next route
    /// that is up.
    pub repairs_out: Vec<(u64, u64, u64)>,
    /// Wakes each route's thread: one whose inbox filled stopped reading.
    pub wakers: Vec<Arc<mio::Waker>>,
}

impl Routes {
    pub fn new(routes: usize, queue_len: usize, latency: Duration) -> Self {
        Routes {
            inboxes: (0..routes).map(|_| Inbox::new(queue_len)).collect(),
            merge: Merge::new(routes, latency),
            stats: vec![None; routes],
            failed: 0,
            repairs_out: Vec::new(),
            wakers: Vec::new(),
        }
    }

    /// One more route (a listener's call-back), waking `waker`; its index.
    pub fn add(&mut self, queue_len: usize, waker: Arc<mio::Waker>) -> usize {
        self.inboxes.push(Inbox::new(queue_len));
        self.merge.add_route();
        self.stats.push(None);
        self.wakers.push(waker);
        self.inboxes.len() - 1
    }

    /// Moves what every route handed over into the merge; whether an inbox was full.
    fn drain(&mut self, now: u64) -> bool {
        let mut was_full = false;
        for (route, inbox) in self.inboxes.iter_mut().enumerate() {
            loop {
                let (event, full) = inbox.pop();
                was_full |= full;
                let Some(event) = event else {
                    break;
                };
                self.merge.take(route, event, now);
            }
        }
        was_full
    }
}

/// What a wait on the routes gave.
enum Step {
    Event(Event),
    /// The merge's deadline moved: wait again with the new one.
    Again,
}

/// The next merged event: waits until a route brings one or the merge gives up a frame no
/// route brought in time. Without routes (a listener called back by a sender with one
/// socket, or not yet called), the one connection's events, as they come.
pub(super) fn next_merged(net: &NetThread<Queue>) -> Result<Event, Interrupted> {
    let epoch = (Instant::now(), monotonic_ns());
    let ns_to_instant = |ns: u64| epoch.0 + Duration::from_nanos(ns.saturating_sub(epoch.1));
    loop {
        let waited_for = net
            .lock()
            .inner
            .routes
            .as_ref()
            .and_then(|r| r.merge.deadline(monotonic_ns()));
        let mut wake = false;
        let step = net.wait(waited_for.map(ns_to_instant), |q| {
            let Some(routes) = q.routes.as_mut() else {
                let (event, full) = q.events.pop();
                wake |= full;
                return event.map(Step::Event);
            };
            let now = monotonic_ns();
            wake |= routes.drain(now);
            let event = routes.merge.pop(now);
            if std::mem::take(&mut routes.merge.keyframe_wanted) {
                q.keyframe_wanted = true;
                wake = true;
            }
            if !routes.merge.repairs_wanted.is_empty() {
                routes.repairs_out.append(&mut routes.merge.repairs_wanted);
                wake = true;
            }
            match event {
                Some(e) => Some(Step::Event(e)),
                None if routes.merge.deadline(now) != waited_for => Some(Step::Again),
                None => None,
            }
        })?;
        if wake {
            net.wake();
            wake_routes(net);
        }
        match step {
            Some(Step::Event(e)) => return Ok(e),
            Some(Step::Again) | None => continue,
        }
    }
}

/// Wakes every route's thread.
pub(super) fn wake_routes(net: &NetThread<Queue>) {
    let wakers = net
        .lock()
        .inner
        .routes
        .as_ref()
        .map(|r| r.wakers.clone())
        .unwrap_or_default();
    for w in wakers {
        let _ = w.wake();
    }
}
