//! What the source tells the application of its connections: element messages for
//! connects, disconnects and failed call-backs, and a warning on first use.

use super::*;

impl QuicNaluSrc {
    /// Posts `quicnalusrc-connected`, `-disconnected` and `-callback-failed` element
    /// messages, and the warning for a sender trusted on first use.
    pub(super) fn connection_messages(&self) -> Box<dyn Fn(ConnectionEvent) + Send> {
        let element = self.obj().downgrade();
        Box::new(move |event| {
            let Some(element) = element.upgrade() else {
                return;
            };
            let s = match event {
                ConnectionEvent::Connected { peer, resumed } => {
                    gst::info!(CAT, obj = element, "connected to {peer}");
                    gst::Structure::builder("quicnalusrc-connected")
                        .field("peer", peer.to_string())
                        .field("resumed", resumed)
                        .build()
                }
                ConnectionEvent::Disconnected {
                    peer,
                    reason,
                    reconnecting,
                } => {
                    gst::info!(CAT, obj = element, "disconnected from {peer}: {reason}");
                    gst::Structure::builder("quicnalusrc-disconnected")
                        .field("peer", peer.to_string())
                        .field("reason", reason)
                        .field("reconnecting", reconnecting)
                        .build()
                }
                ConnectionEvent::CallbackFailed { peer, reason } => {
                    gst::Structure::builder("quicnalusrc-callback-failed")
                        .field("peer", peer.to_string())
                        .field("reason", reason)
                        .build()
                }
                ConnectionEvent::FirstUse {
                    peer,
                    fingerprint,
                    known_hosts,
                } => {
                    let mut who = known_hosts.host.clone();
                    if who != peer.to_string() {
                        who.push_str(&format!(" ({peer})"));
                    }
                    let text = format!(
                        "trusting {who} on first use: its certificate is SHA-256 \
                         {fingerprint}, now remembered in {}; check it against the \
                         fingerprint quicnalusink printed, and pin it with \
                         certificate-fingerprint in production",
                        known_hosts.path.display()
                    );
                    gst::element_warning!(element, gst::ResourceError::Settings, ("{}", text));
                    return;
                }
            };
            let _ = element.post_message(gst::message::Element::builder(s).src(&element).build());
        })
    }
}
