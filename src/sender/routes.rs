//! A receiver's routes (quicnalusrc `paths`) at the sender: which connection is a route
//! of whose receiver, whether another route carries the stream, and a bonded receiver's
//! access units cut into parts (bonding.rs).

use super::join::CachedFrame;
use super::{bonding, Fanout, Receiver, Streams, PEER_SILENCE};
use crate::protocol::Route;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

impl<C: Streams> Fanout<C> {
    /// Bonded: frame `f` in parts over one receiver's `routes` (bonding.rs), by what each
    /// has queued and carries; a route not heard from lately gets an empty part, and one
    /// waiting for the next IRAP nothing at all.
    pub(super) fn spread(&mut self, f: &CachedFrame, mut routes: Vec<u64>, queued: Instant) {
        routes.sort_unstable();
        let data = f.frame.data.as_ref().as_ref();
        let lacking = routes.iter().any(|id| {
            self.receivers
                .get(id)
                .is_some_and(|r| r.lacks_parameter_sets())
        });
        let sets = self.parameter_sets.as_ref();
        let prefix = sets.filter(|_| f.frame.keyframe && !f.frame.parameter_sets && lacking);
        let whole: Arc<[u8]> = match prefix {
            Some(sets) => [sets.as_ref(), data].concat().into(),
            None => data.into(),
        };
        // A route waiting for the next IRAP (its group expired) can take no part; one
        // gone quiet gets none while another is heard from.
        let takes = |r: &Receiver<C>| r.group.is_some() || f.frame.keyframe;
        routes.retain(|id| self.receivers.get(id).is_some_and(takes));
        let loads: Vec<bonding::Load> = routes
            .iter()
            .filter_map(|id| self.receivers.get(id))
            .map(|r| bonding::Load {
                queued: r.out_bytes,
                rate: if queued.saturating_duration_since(r.last_rx) > PEER_SILENCE {
                    0.0
                } else {
                    r.route_rate()
                },
            })
            .collect();
        let shares = bonding::split(whole.len(), &loads);
        if let Some(r) = routes.first().and_then(|id| self.receivers.get(id)) {
            let recent = self.recent.entry(r.leader).or_default();
            recent.keep(f.header, whole.clone(), queued);
        }
        let mut offset = 0;
        for (id, share) in routes.iter().zip(shares) {
            if let Some(r) = self.receivers.get_mut(id) {
                r.take_part(f, &whole, (offset, share), prefix.is_some(), queued);
            }
            offset += share;
        }
    }

    /// Whether another route of receiver `id`'s receiver gets the stream now: its media is
    /// under way and it was heard from lately.
    pub(super) fn carried_elsewhere(&self, id: u64, now: Instant) -> bool {
        let Some(me) = self.receivers.get(&id).filter(|r| r.route.is_some()) else {
            return false;
        };
        self.receivers.values().any(|r| {
            r.id != id
                && r.leader == me.leader
                && r.described()
                && r.group.is_some()
                && now.saturating_duration_since(r.last_rx) <= PEER_SILENCE
        })
    }

    /// The admitted, open route of the receiver that `route` (from a HELLO) belongs to.
    pub(super) fn route_leader(&self, id: u64, route: Option<Route>) -> Option<u64> {
        let route = route?;
        self.receivers
            .values()
            .find(|r| {
                r.id != id
                    && r.admitted()
                    && !r.conn.closed_by_us()
                    && r.route.is_some_and(|o| o.receiver == route.receiver)
            })
            .map(|r| r.leader)
    }

    /// The receivers to send an application command to (`to`: the ID one goes by; None:
    /// all): of each receiver's routes, the one heard from last.
    pub(super) fn command_routes(&self, to: Option<u64>) -> Vec<u64> {
        let mut chosen: HashMap<u64, (u64, Instant)> = HashMap::new();
        let addressed = |r: &&Receiver<C>| r.described() && to.is_none_or(|id| id == r.leader);
        for r in self.receivers.values().filter(addressed) {
            let best = chosen.entry(r.leader).or_insert((r.id, r.last_rx));
            if r.last_rx > best.1 {
                *best = (r.id, r.last_rx);
            }
        }
        chosen.into_values().map(|(id, _)| id).collect()
    }

    /// Answers the REPAIR_REQUESTs route `id` sent, from its receiver's kept access units.
    pub(super) fn answer_repairs(&mut self, id: u64) {
        let Some(r) = self.receivers.get_mut(&id) else {
            return;
        };
        let asked = std::mem::take(&mut r.repairs_asked);
        let leader = r.leader;
        for (seq, offset, len) in asked {
            let found = self.recent.get(&leader).and_then(|recent| recent.find(seq));
            let (Some((header, whole)), Some(r)) = (found, self.receivers.get_mut(&id)) else {
                continue;
            };
            // Within the access unit, whatever the request says.
            let start = (offset as usize).min(whole.len());
            let end = start.saturating_add(len as usize).min(whole.len());
            log::debug!("receiver {leader}: {seq} again ({start}..{end}) over route {id}");
            r.queue_repair(&header, &whole, start..end);
        }
    }
}
