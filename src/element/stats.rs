//! The `stats` snapshots as GStreamer structures: the `stats` property's value and the
//! interval messages. Field names and units are documented in README.md.

use crate::stats::{ClientStats, ConnectionStats, RouteStats, SenderStats};
use gst::prelude::*;
use std::time::Duration;

/// A snapshot as the `stats` property and the stats messages carry it.
pub trait Snapshot: Clone + Send + 'static {
    fn to_structure(&self) -> gst::Structure;
}

/// For [`Reporter::new`]: posts each snapshot as an element message from `element`
/// (posting never blocks the networking thread).
pub fn message_poster<T: Snapshot>(element: &gst::Element) -> Box<dyn Fn(T) + Send> {
    let weak = element.downgrade();
    Box::new(move |stats: T| {
        if let Some(element) = weak.upgrade() {
            let message = gst::message::Element::builder(stats.to_structure()).src(&element);
            let _ = element.post_message(message.build());
        }
    })
}

impl Snapshot for SenderStats {
    fn to_structure(&self) -> gst::Structure {
        let receivers: Vec<gst::Structure> = self
            .receivers
            .iter()
            .map(|r| {
                let mut s = gst::Structure::builder("receiver")
                    .field("receiver-id", r.id)
                    .field("address", r.peer.to_string())
                    .field("admitted", r.admitted)
                    .field("frames-sent", r.frames_sent)
                    .field("frames-dropped", r.frames_dropped)
                    .field("frames-shed", r.frames_shed)
                    .field("groups-reset", r.groups_reset)
                    .field("groups-late", r.groups_late)
                    .field("path-rate", r.path_rate)
                    .field("keyframe-requests", r.keyframe_requests)
                    .field("keyframe-requests-dropped", r.keyframe_requests_dropped)
                    .field("commands-dropped", r.commands_dropped)
                    .field("queued-bytes", r.queued_bytes)
                    .field("latency-budget", r.latency_budget)
                    .build();
                write_connection(&r.connection, &mut s);
                if !r.routes.is_empty() {
                    s.set("routes", routes(&r.routes));
                }
                s
            })
            .collect();
        gst::Structure::builder("quicnalusink-stats")
            .field("frames-in", self.frames_in)
            .field("keyframe-requests", self.keyframe_requests)
            .field("receivers-rejected", self.receivers_rejected)
            .field("stream-rate", self.stream_rate)
            .field("receiver-count", receivers.len() as u32)
            .field("receivers", gst::Array::new(receivers))
            .build()
    }
}

impl Snapshot for ClientStats {
    fn to_structure(&self) -> gst::Structure {
        let c = &self.counters;
        let mut s = gst::Structure::builder("quicnalusrc-stats")
            .field("connected", self.connection.is_some())
            .field(
                "address",
                self.peer.map(|p| p.to_string()).unwrap_or_default(),
            )
            .field("frames-received", c.frames_received)
            .field("frames-output", c.frames_output)
            .field("frames-late", c.frames_late)
            .field("frames-dropped", c.frames_dropped)
            .field("frames-shed", c.frames_shed)
            .field("groups-reset", c.groups_reset)
            .field("groups-abandoned", c.groups_abandoned)
            .field("keyframe-requests", c.keyframe_requests)
            .field("reconnects", c.reconnects)
            .field("migrations", c.migrations)
            .field("knocks", c.knocks)
            .field("knocks-refused", c.knocks_refused)
            .field("callbacks-failed", c.callbacks_failed)
            .build();
        write_connection(&self.connection.clone().unwrap_or_default(), &mut s);
        if !self.routes.is_empty() {
            s.set("routes", routes(&self.routes));
        }
        s
    }
}

/// A receiver's routes, each a `route` structure.
fn routes(routes: &[RouteStats]) -> gst::Array {
    gst::Array::new(routes.iter().map(|r| {
        let mut s = gst::Structure::builder("route")
            .field("index", r.index)
            .field("address", r.peer.to_string())
            .field("up", r.up)
            .build();
        write_connection(&r.connection, &mut s);
        s
    }))
}

fn write_connection(c: &ConnectionStats, s: &mut gst::StructureRef) {
    let ns = |d: Duration| d.as_nanos() as u64;
    s.set("rtt", ns(c.rtt));
    s.set("min-rtt", ns(c.min_rtt));
    s.set("rtt-variance", ns(c.rtt_variance));
    s.set("cwnd", c.cwnd);
    s.set("delivery-rate", c.delivery_rate.saturating_mul(8));
    s.set("packets-sent", c.packets_sent);
    s.set("packets-received", c.packets_received);
    s.set("packets-lost", c.packets_lost);
    s.set("packets-retransmitted", c.packets_retransmitted);
    s.set("bytes-sent", c.bytes_sent);
    s.set("bytes-received", c.bytes_received);
    s.set("bytes-lost", c.bytes_lost);
    s.set("bytes-retransmitted", c.bytes_retransmitted);
}
