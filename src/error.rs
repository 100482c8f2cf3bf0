//! What goes wrong in the transport, as the cases a user meets. Each carries the text the
//! user reads; the elements choose the GStreamer error for each case.

use std::fmt;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Error {
    /// The UDP socket could not be bound or set up.
    Bind(String),
    /// A setting the transport cannot use: certificate, key or CA files, the key log.
    Setup(String),
    /// The TLS handshake failed with this alert (RFC 8446, 6): the peer's certificate is
    /// not trusted, or ours was refused.
    Tls { alert: u8, message: String },
    /// The sender's certificate is not the pinned one, or not for the address dialled.
    Certificate(String),
    /// The peer closed the connection with one of the protocol's codes (REJECTED,
    /// UNSUPPORTED_VERSION, or PROTOCOL_VIOLATION: it says we broke the protocol).
    Refused { code: u64, message: String },
    /// The sender serves its maximum of receivers.
    ServerFull(String),
    /// No answer in time, or a lost connection not regained in time.
    Timeout(String),
    /// An established connection ended: the peer stopped or went silent.
    Lost(String),
    /// The peer broke the protocol (or said GOODBYE with an error).
    Protocol(String),
    /// The system failed us (poll, threads).
    System(String),
}

impl Error {
    /// This end failed (its socket, settings or system), not the peer.
    pub fn is_local(&self) -> bool {
        matches!(self, Error::Bind(_) | Error::Setup(_) | Error::System(_))
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Bind(m)
            | Error::Setup(m)
            | Error::Certificate(m)
            | Error::ServerFull(m)
            | Error::Timeout(m)
            | Error::Lost(m)
            | Error::Protocol(m)
            | Error::System(m)
            | Error::Tls { message: m, .. }
            | Error::Refused { message: m, .. } => f.write_str(m),
        }
    }
}

impl std::error::Error for Error {}
