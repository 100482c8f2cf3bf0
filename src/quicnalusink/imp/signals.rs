//! The application's side: the signals, and the networking thread's calls that emit
//! them (admission, and receivers' arrival, departure and commands) with the matching
//! element messages.

use super::*;
use crate::sender::{Admission, ReceiverEvent};

/// `receiver-connecting`, `receiver-connected`, `receiver-disconnected`,
/// `command-received`, and the action signal `send-command`.
pub(super) fn specs() -> &'static [glib::subclass::Signal] {
    static SIGNALS: Lazy<Vec<glib::subclass::Signal>> = Lazy::new(|| {
        use glib::subclass::Signal;
        vec![
            // A receiver said HELLO: return false to refuse it (closed with REJECTED).
            // Args: receiver id, its address, the token it presented ("" if none).
            // Emitted from the networking thread: handlers must return quickly.
            Signal::builder("receiver-connecting")
                .param_types([
                    u64::static_type(),
                    String::static_type(),
                    String::static_type(),
                ])
                .return_type::<bool>()
                .run_last()
                .class_handler(|_| Some(true.to_value()))
                .accumulator(|_, _, value| {
                    // The first handler that refuses decides.
                    if value.get::<bool>().unwrap_or(true) {
                        std::ops::ControlFlow::Continue(value.clone())
                    } else {
                        std::ops::ControlFlow::Break(value.clone())
                    }
                })
                .build(),
            // Args: receiver id, address. Media flows to it from now on.
            Signal::builder("receiver-connected")
                .param_types([u64::static_type(), String::static_type()])
                .build(),
            // Args: receiver id, address, why.
            Signal::builder("receiver-disconnected")
                .param_types([
                    u64::static_type(),
                    String::static_type(),
                    String::static_type(),
                ])
                .build(),
            // A receiver sent a command (quicnalusrc's send-command). Args: receiver
            // id, the command.
            Signal::builder("command-received")
                .param_types([u64::static_type(), gst::Structure::static_type()])
                .build(),
            // Sends a command to receiver `id` (0: every receiver) at once; false if
            // no such receiver is served. For stream order, send a custom downstream
            // event through the pipeline instead (forward-events).
            Signal::builder("send-command")
                .param_types([u64::static_type(), gst::Structure::static_type()])
                .return_type::<bool>()
                .action()
                .class_handler(|args| {
                    let sent = (|| {
                        let obj = args[0].get::<crate::quicnalusink::QuicNaluSink>().ok()?;
                        let id = args[1].get::<u64>().ok()?;
                        let command = args[2].get::<gst::Structure>().ok()?;
                        let server = obj.imp().server().ok()?;
                        let to = (id != 0).then_some(id);
                        Some(server.send_command(to, command.to_string()))
                    })();
                    Some(sent.unwrap_or(false).to_value())
                })
                .build(),
        ]
    });
    SIGNALS.as_ref()
}

impl QuicNaluSink {
    /// What the networking thread asks before serving a receiver: `receiver-connecting`.
    pub(super) fn admitter(&self) -> Box<dyn Fn(&Admission) -> bool + Send> {
        let weak = self.obj().downgrade();
        Box::new(move |asking| {
            let Some(obj) = weak.upgrade() else {
                return false;
            };
            let token = String::from_utf8_lossy(asking.token).into_owned();
            let admitted = obj.emit_by_name::<bool>(
                "receiver-connecting",
                &[&asking.id, &asking.peer.to_string(), &token],
            );
            if !admitted {
                gst::info!(
                    CAT,
                    obj = obj,
                    "refused receiver {} ({})",
                    asking.id,
                    asking.peer
                );
            }
            admitted
        })
    }

    /// What the networking thread tells of receivers: signals, emitted there, and the
    /// matching element messages.
    pub(super) fn receiver_reporter(&self) -> Box<dyn Fn(ReceiverEvent) + Send> {
        let weak = self.obj().downgrade();
        Box::new(move |event| {
            let Some(obj) = weak.upgrade() else {
                return;
            };
            let message = match event {
                ReceiverEvent::Connected { id, peer } => {
                    let address = peer.to_string();
                    gst::info!(CAT, obj = obj, "receiver {id} connected from {address}");
                    obj.emit_by_name::<()>("receiver-connected", &[&id, &address]);
                    gst::Structure::builder("quicnalusink-receiver-connected")
                        .field("receiver-id", id)
                        .field("address", address)
                        .build()
                }
                ReceiverEvent::Rejected {
                    id,
                    peer,
                    code,
                    reason,
                } => {
                    let address = peer.to_string();
                    gst::info!(
                        CAT,
                        obj = obj,
                        "receiver {id} ({address}) refused: {reason}"
                    );
                    gst::Structure::builder("quicnalusink-receiver-rejected")
                        .field("receiver-id", id)
                        .field("address", address)
                        .field("code", code)
                        .field("reason", reason)
                        .build()
                }
                ReceiverEvent::Disconnected { id, peer, reason } => {
                    let address = peer.to_string();
                    gst::info!(CAT, obj = obj, "receiver {id} ({address}) left: {reason}");
                    obj.emit_by_name::<()>("receiver-disconnected", &[&id, &address, &reason]);
                    gst::Structure::builder("quicnalusink-receiver-disconnected")
                        .field("receiver-id", id)
                        .field("address", address)
                        .field("reason", reason)
                        .build()
                }
                ReceiverEvent::Command {
                    id,
                    peer,
                    structure,
                } => {
                    let Ok(command) = structure.parse::<gst::Structure>() else {
                        gst::warning!(
                            CAT,
                            obj = obj,
                            "receiver {id} sent a command that is not a GstStructure: {structure:?}"
                        );
                        return;
                    };
                    gst::debug!(CAT, obj = obj, "receiver {id}: command {command}");
                    obj.emit_by_name::<()>("command-received", &[&id, &command]);
                    gst::Structure::builder("quicnalusink-command")
                        .field("receiver-id", id)
                        .field("address", peer.to_string())
                        .field("command", command)
                        .build()
                }
            };
            let _ = obj.post_message(gst::message::Element::builder(message).src(&obj).build());
        })
    }
}
