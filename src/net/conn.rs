//! One receiver's connection at the sender: the quiche connection the fan-out core writes
//! through (its [`Streams`]), and what reading and sending on it needs.

use crate::net::paths;
use crate::net::socket::Outbox;
use crate::protocol::control::{self, ReadError, Stopped, CONTROL_STREAM};
use crate::protocol::{Command, CommandDecoder};
use crate::sender::{Path, Streams};
use crate::stats::ConnectionStats;
use std::fmt;

/// One receiver's connection, and what reading and sending it needs.
pub struct Conn {
    pub quiche: quiche::Connection,
    pub control_in: CommandDecoder,
    /// The last turn stopped reading its control stream at the cap (control.rs).
    pub control_unread: bool,
    pub outbox: Outbox,
}

/// How a receiver broke the protocol on its streams; the text is the reason its connection
/// is closed with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Violation {
    /// It opened a stream other than the control stream.
    UnexpectedStream(u64),
    /// Its control stream's bytes are not commands, or the stream failed.
    Control(ReadError),
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Violation::UnexpectedStream(_) => f.write_str("unexpected stream from receiver"),
            Violation::Control(e) => write!(f, "{e}"),
        }
    }
}

impl std::error::Error for Violation {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Violation::UnexpectedStream(_) => None,
            Violation::Control(e) => Some(e),
        }
    }
}

impl Conn {
    /// Reads what a receiver sent on its control stream this turn: the commands, and a
    /// protocol violation if it broke the protocol (a stream it may not open, bad bytes).
    pub fn read_control(&mut self, buf: &mut [u8]) -> (Vec<Command>, Option<Violation>) {
        let mut commands = Vec::new();
        let readable: Vec<u64> = self.quiche.readable().collect();
        self.control_unread = false;
        for stream in readable {
            if stream != CONTROL_STREAM {
                return (commands, Some(Violation::UnexpectedStream(stream)));
            }
            let quiche = &mut self.quiche;
            let read = |buf: &mut [u8]| quiche.stream_recv(CONTROL_STREAM, buf);
            let result = control::read_commands(&mut self.control_in, read, buf, &mut commands);
            self.control_unread = result == Ok(Stopped::Capped);
            if let Err(e) = result {
                return (commands, Some(Violation::Control(e)));
            }
        }
        (commands, None)
    }
}

impl Streams for Conn {
    fn send(&mut self, stream: u64, data: &[u8], fin: bool) -> Result<usize, quiche::Error> {
        self.quiche.stream_send(stream, data, fin)
    }

    fn prioritize(&mut self, stream: u64, urgency: u8, incremental: bool) {
        let _ = self.quiche.stream_priority(stream, urgency, incremental);
    }

    fn reset(&mut self, stream: u64, code: u64) {
        let _ = self
            .quiche
            .stream_shutdown(stream, quiche::Shutdown::Write, code);
    }

    fn close(&mut self, code: u64, reason: &str) {
        let _ = self.quiche.close(true, code, reason.as_bytes());
    }

    fn closed_by_us(&self) -> bool {
        self.quiche.local_error().is_some()
    }

    fn closing(&self) -> bool {
        let c = &self.quiche;
        c.local_error().is_some() || c.is_draining() || c.is_closed()
    }

    fn path(&self) -> Option<Path> {
        paths::measured(&self.quiche).map(|p| Path {
            rtt: p.rtt,
            min_rtt: p.min_rtt.unwrap_or(p.rtt),
            delivery_rate: p.delivery_rate,
            sent_bytes: p.sent_bytes,
            lost_bytes: p.lost_bytes,
            validated: self.quiche.is_established(),
        })
    }

    fn stats(&self) -> ConnectionStats {
        ConnectionStats::of(&self.quiche)
    }
}
