//! How a receiver's connection ended (the [`Outcome`] the reconnect policy takes), and the
//! [`Error`] for it; and, at the sender, the words for a receiver gone. The receiver's failure texts are made here, as they are the element's
//! error messages and tests match on them; only the sender's violations (reassembly) and
//! the certificate checks (tls.rs) word their own.

use quiche::ConnectionError;
use std::net::SocketAddr;
use std::time::Duration;

use crate::error::Error;
use crate::protocol::error_code;

/// How one connection ended.
#[derive(Debug)]
pub enum Outcome {
    /// The element is stopping.
    Shutdown,
    /// The sender ended the stream and every frame was delivered.
    Ended,
    /// A connection that had been established is gone: worth connecting again.
    Lost(Error),
    /// The handshake did not complete in time, or the peer refused it.
    Unanswered(Error),
    /// Retrying cannot help (TLS failure, protocol violation).
    Fatal(Error),
}

pub fn cannot_create(e: quiche::Error) -> Error {
    Error::Setup(format!("cannot create connection: {e}"))
}

pub fn poll_failed(e: std::io::Error) -> Error {
    Error::System(format!("poll failed: {e}"))
}

pub fn no_answer(peer: SocketAddr, within: Duration) -> Error {
    Error::Timeout(format!(
        "no QUIC answer from {peer} within {} ms: is quicnalusink running there?",
        within.as_millis()
    ))
}

/// `e` is what the sender broke (receiver::Violation).
pub fn violation(e: &impl std::fmt::Display) -> Error {
    Error::Protocol(format!("sender violated the protocol: {e}"))
}

/// Reconnecting failed for `limit` since the connection was lost, for `first`.
pub fn gave_up(first: &Error, peer: SocketAddr, limit: Duration) -> Error {
    Error::Timeout(format!(
        "lost the connection ({first}) and {peer} did not answer again within {} ms",
        limit.as_millis()
    ))
}

/// How a connection to `peer` that quiche closed ended, by the errors either side closed
/// it with; `served`: it got as far as HELLO.
pub fn closed(
    peer: SocketAddr,
    peer_error: Option<&ConnectionError>,
    local_error: Option<&ConnectionError>,
    timed_out: bool,
    served: bool,
) -> Outcome {
    let why = close_reason(peer, peer_error, local_error, timed_out);
    let full = peer_error.is_some_and(|e| e.is_app && e.error_code == error_code::SERVER_FULL);
    if full {
        // Like no answer: fails a first connection, counts towards reconnect-timeout.
        return Outcome::Unanswered(Error::ServerFull(why));
    }
    if let Some(alert) = local_error.filter(|e| is_tls_alert(e)) {
        let alert = (alert.error_code - 0x100) as u8;
        return Outcome::Fatal(Error::Tls {
            alert,
            message: why,
        });
    }
    let refused = peer_error.filter(|e| {
        e.is_app
            && [
                error_code::PROTOCOL_VIOLATION,
                error_code::UNSUPPORTED_VERSION,
                error_code::REJECTED,
            ]
            .contains(&e.error_code)
    });
    if let Some(e) = refused {
        let code = e.error_code;
        return Outcome::Fatal(Error::Refused { code, message: why });
    }
    let error = if timed_out {
        Error::Timeout(why)
    } else {
        Error::Lost(why)
    };
    if served {
        Outcome::Lost(error)
    } else {
        Outcome::Unanswered(error)
    }
}

/// Transport codes 0x100..=0x1ff are TLS alerts (RFC 9001, 4.8).
fn is_tls_alert(e: &ConnectionError) -> bool {
    !e.is_app && (0x100..=0x1ff).contains(&e.error_code)
}

fn close_reason(
    peer: SocketAddr,
    peer_error: Option<&ConnectionError>,
    local_error: Option<&ConnectionError>,
    timed_out: bool,
) -> String {
    if let Some(e) = peer_error {
        return format!(
            "{peer} closed the connection (code {:#x}): {}",
            e.error_code,
            String::from_utf8_lossy(&e.reason)
        );
    }
    if let Some(e) = local_error {
        if is_tls_alert(e) {
            return format!(
                "TLS handshake with {peer} failed (alert {}): the server's certificate \
                 is not trusted; set ca-file to its CA, or tls-verify=false for testing",
                e.error_code - 0x100
            );
        }
        return format!(
            "connection to {peer} failed (code {:#x}): {}",
            e.error_code,
            String::from_utf8_lossy(&e.reason)
        );
    }
    if timed_out {
        return format!("connection to {peer} timed out: the sender went silent");
    }
    format!("connection to {peer} closed")
}

/// At the sender: why a receiver's connection closed, for the log and
/// receiver-disconnected.
pub fn receiver_gone(conn: &quiche::Connection) -> String {
    match (conn.peer_error(), conn.local_error()) {
        (Some(e), _) => format!(
            "closed by receiver (code {:#x}: {})",
            e.error_code,
            String::from_utf8_lossy(&e.reason)
        ),
        (None, Some(e)) => format!(
            "closed (code {:#x}: {})",
            e.error_code,
            String::from_utf8_lossy(&e.reason)
        ),
        _ if conn.is_timed_out() => "timed out".to_string(),
        _ => "closed".to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn error(is_app: bool, error_code: u64, reason: &str) -> ConnectionError {
        ConnectionError {
            is_app,
            error_code,
            reason: reason.into(),
        }
    }

    #[test]
    fn closes_are_told_apart_by_who_closed_and_why() {
        let peer: SocketAddr = "127.0.0.1:5000".parse().unwrap();
        let full = error(true, error_code::SERVER_FULL, "maximum of 2");
        let outcome = closed(peer, Some(&full), None, false, true);
        let Outcome::Unanswered(Error::ServerFull(why)) = outcome else {
            panic!("{outcome:?}");
        };
        assert_eq!(
            why,
            "127.0.0.1:5000 closed the connection (code 0x5): maximum of 2"
        );
        let refused = error(true, error_code::REJECTED, "refused");
        let outcome = closed(peer, Some(&refused), None, false, true);
        let code = error_code::REJECTED;
        assert!(
            matches!(outcome, Outcome::Fatal(Error::Refused { code: c, .. }) if c == code),
            "{outcome:?}"
        );
        let alert = error(false, 0x100 + 48, "");
        let outcome = closed(peer, None, Some(&alert), false, false);
        let Outcome::Fatal(Error::Tls { alert: 48, message }) = outcome else {
            panic!("{outcome:?}");
        };
        assert!(message.contains("(alert 48)") && message.contains("not trusted"));
        let outcome = closed(peer, None, None, true, true);
        let Outcome::Lost(Error::Timeout(why)) = outcome else {
            panic!("{outcome:?}");
        };
        assert!(why.contains("timed out"), "{why}");
        let outcome = closed(peer, None, None, true, false);
        assert!(
            matches!(outcome, Outcome::Unanswered(Error::Timeout(_))),
            "{outcome:?}"
        );
        let stopped = error(true, error_code::NO_ERROR, "sender stopped");
        let outcome = closed(peer, Some(&stopped), None, false, true);
        assert!(
            matches!(outcome, Outcome::Lost(Error::Lost(_))),
            "{outcome:?}"
        );
    }
}
