//! How a receiver's connection ended (the [`Outcome`] the reconnect policy takes), and the
//! words for it. The receiver's failure texts are made here, as they are the element's
//! error messages and tests match on them; only the sender's violations (reassembly) and
//! the certificate checks (tls.rs) word their own.

use quiche::ConnectionError;
use std::net::SocketAddr;
use std::time::Duration;

use crate::protocol::error_code;

/// How one connection ended.
#[derive(Debug)]
pub enum Outcome {
    /// The element is stopping.
    Shutdown,
    /// The sender ended the stream and every frame was delivered.
    Ended,
    /// A connection that had been established is gone: worth connecting again.
    Lost(String),
    /// The handshake did not complete in time, or the peer refused it.
    Unanswered(String),
    /// Retrying cannot help (TLS failure, protocol violation).
    Fatal(String),
}

pub fn cannot_create(e: quiche::Error) -> String {
    format!("cannot create connection: {e}")
}

pub fn poll_failed(e: std::io::Error) -> String {
    format!("poll failed: {e}")
}

pub fn no_answer(peer: SocketAddr, within: Duration) -> String {
    format!(
        "no QUIC answer from {peer} within {} ms: is quicnalusink running there?",
        within.as_millis()
    )
}

pub fn violation(e: &str) -> String {
    format!("sender violated the protocol: {e}")
}

/// Reconnecting failed for `limit` since the connection was lost, for `first`.
pub fn gave_up(first: &str, peer: SocketAddr, limit: Duration) -> String {
    format!(
        "lost the connection ({first}) and {peer} did not answer again within {} ms",
        limit.as_millis()
    )
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
    let tls_alert = local_error.is_some_and(is_tls_alert);
    let full = peer_error.is_some_and(|e| e.is_app && e.error_code == error_code::SERVER_FULL);
    if full {
        // Like no answer: fails a first connection, counts towards reconnect-timeout.
        return Outcome::Unanswered(why);
    }
    let refused = peer_error.is_some_and(|e| {
        e.is_app
            && [
                error_code::PROTOCOL_VIOLATION,
                error_code::UNSUPPORTED_VERSION,
                error_code::REJECTED,
            ]
            .contains(&e.error_code)
    });
    if tls_alert || refused {
        Outcome::Fatal(why)
    } else if served {
        Outcome::Lost(why)
    } else {
        Outcome::Unanswered(why)
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
        let Outcome::Unanswered(why) = outcome else {
            panic!("{outcome:?}");
        };
        assert_eq!(
            why,
            "127.0.0.1:5000 closed the connection (code 0x5): maximum of 2"
        );
        let refused = error(true, error_code::REJECTED, "refused");
        let outcome = closed(peer, Some(&refused), None, false, true);
        assert!(matches!(outcome, Outcome::Fatal(_)), "{outcome:?}");
        let alert = error(false, 0x100 + 48, "");
        let outcome = closed(peer, None, Some(&alert), false, false);
        let Outcome::Fatal(why) = outcome else {
            panic!("{outcome:?}");
        };
        assert!(
            why.contains("(alert 48)") && why.contains("not trusted"),
            "{why}"
        );
        let outcome = closed(peer, None, None, true, true);
        let Outcome::Lost(why) = outcome else {
            panic!("{outcome:?}");
        };
        assert!(why.contains("timed out"), "{why}");
        let outcome = closed(peer, None, None, true, false);
        assert!(matches!(outcome, Outcome::Unanswered(_)), "{outcome:?}");
    }
}
