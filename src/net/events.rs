//! What a networking thread tells its element about its connections, for the element to
//! post. The direct path (quicnalusrc's sender) and the MoQ path (either element's relay)
//! say the same things, so the element turns both into messages with one function.

use crate::net::known_hosts::KnownHosts;
use crate::net::tls::Fingerprint;

/// A change of connection; `peer` is the sender's address or the relay's URL.
#[derive(Debug, Clone)]
pub enum ConnectionEvent {
    Connected {
        peer: String,
        /// A new connection after a lost one.
        resumed: bool,
    },
    Disconnected {
        peer: String,
        reason: String,
        reconnecting: bool,
    },
    /// Listening: the call-back to a knock's source failed (no answer, another
    /// certificate, a refusal); still listening.
    CallbackFailed { peer: String, reason: String },
    /// A peer not seen before, trusted on first use and remembered.
    FirstUse {
        peer: String,
        fingerprint: Fingerprint,
        known_hosts: KnownHosts,
    },
}

/// Where the networking thread sends its [`ConnectionEvent`]s.
pub type OnConnection = Box<dyn Fn(ConnectionEvent) + Send>;
