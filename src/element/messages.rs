//! The element messages both elements post for their connections, from the networking
//! thread's [`ConnectionEvent`]s: one set of names and fields for the direct path and for
//! MoQ relays.

use crate::net::events::{ConnectionEvent, OnConnection};
use gst::prelude::*;
use once_cell::sync::Lazy;

static CAT: Lazy<gst::DebugCategory> = Lazy::new(|| {
    gst::DebugCategory::new(
        "quicnalu",
        gst::DebugColorFlags::empty(),
        Some("quicnalu connections"),
    )
});

/// Posts `{prefix}-connected` (`{field}`, `resumed`), `{prefix}-disconnected` (`{field}`,
/// `reason`, `reconnecting`) and `{prefix}-callback-failed` (`{field}`, `reason`), and a
/// WARNING for a peer trusted on first use. The direct path uses the prefix `quicnalusrc`
/// and the field `peer`; a relay `quicnalusink-moq` or `quicnalusrc-moq` and `relay`.
pub fn connections(
    element: &gst::Element,
    prefix: &'static str,
    field: &'static str,
) -> OnConnection {
    let element = element.downgrade();
    Box::new(move |event| {
        let Some(element) = element.upgrade() else {
            return;
        };
        let s = match event {
            ConnectionEvent::Connected { peer, resumed } => {
                gst::info!(CAT, obj = element, "connected to {peer}");
                gst::Structure::builder(format!("{prefix}-connected"))
                    .field(field, peer)
                    .field("resumed", resumed)
                    .build()
            }
            ConnectionEvent::Disconnected {
                peer,
                reason,
                reconnecting,
            } => {
                gst::info!(CAT, obj = element, "disconnected from {peer}: {reason}");
                gst::Structure::builder(format!("{prefix}-disconnected"))
                    .field(field, peer)
                    .field("reason", reason)
                    .field("reconnecting", reconnecting)
                    .build()
            }
            ConnectionEvent::CallbackFailed { peer, reason } => {
                gst::Structure::builder(format!("{prefix}-callback-failed"))
                    .field(field, peer)
                    .field("reason", reason)
                    .build()
            }
            ConnectionEvent::FirstUse {
                peer,
                fingerprint,
                known_hosts,
            } => {
                let mut who = known_hosts.host.clone();
                if who != peer {
                    who.push_str(&format!(" ({peer})"));
                }
                let text = format!(
                    "trusting {who} on first use: its certificate is SHA-256 {fingerprint}, \
                     now remembered in {}; check it against the fingerprint its owner \
                     printed, and pin it in production",
                    known_hosts.path.display()
                );
                gst::element_warning!(element, gst::ResourceError::Settings, ("{}", text));
                return;
            }
        };
        let _ = element.post_message(gst::message::Element::builder(s).src(&element).build());
    })
}
