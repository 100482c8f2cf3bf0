//! The quicnalu wire format: stream preambles, frame headers and command messages.
//! Pure encode/decode, no GStreamer and no I/O; docs/PROTOCOL.md is the byte layout.
//!
//! Every decoder treats its input as hostile: lengths are bounded, input that cannot be
//! accepted is an [`Error`], and nothing here panics on any byte sequence.

mod command;
pub mod control;
mod frame;
mod varint;

pub use command::{Command, CommandDecoder, Route};
pub use frame::{
    put_group_end, put_group_opening, FrameFlags, FrameHeader, GroupDecoder, GroupFrame, Part,
};
pub use varint::{put_varint, Reader};

/// Largest UDP payload we send; fits any path MTU seen on loopback and the Internet.
pub const MAX_DATAGRAM_SIZE: usize = 1350;

/// ALPN token negotiated in the TLS handshake.
pub const ALPN: &[u8] = b"quicnalu/1";
/// The protocol version carried in every stream preamble and in HELLO.
pub const VERSION: u64 = 1;
/// HELLO option bit: the receiver takes frames with the SHED flag. Senders shed frames only
/// for receivers that set it; others get whole groups or none.
pub const HELLO_TAKES_SHED: u64 = 0x1;
/// HELLO option bit: the receiver's routes are bonded: each access unit is spread over
/// them in parts (FrameFlags::PART) rather than sent whole over each. Only with a route.
pub const HELLO_BONDED: u64 = 0x2;
/// First bytes of every stream.
pub const MAGIC: [u8; 4] = *b"QNLU";

/// Default upper bound for one access unit on the wire.
pub const DEFAULT_MAX_FRAME_SIZE: u64 = 32 * 1024 * 1024;
/// Default upper bound for one command message payload.
pub const DEFAULT_MAX_COMMAND_SIZE: u64 = 64 * 1024;
/// How far past the budget a late group's frames may arrive and still be output (ns): what
/// a sender gives a group it sends late (LATE_GROUP), and what a receiver assumes for a
/// group whose keyframe arrives late. A late picture beats none, but one more than a
/// second behind is no longer live video.
pub const LATE_GROUP_ALLOWANCE: u64 = 1_000_000_000;
/// A route (quicnalusrc `paths`) that has heard nothing from the other side for this long
/// is down, on both sides: a receiver that hears nothing pings every 100 ms, and the sender
/// answers, so a live route is never this quiet.
pub const ROUTE_SILENCE: std::time::Duration = std::time::Duration::from_millis(250);

/// What a stream carries; the byte after the version in the preamble.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StreamKind {
    Control = 0,
    Group = 1,
}

/// Application error codes used in CONNECTION_CLOSE, RESET_STREAM and GOODBYE.
pub mod error_code {
    /// Normal end: end of stream delivered, or the element stopped.
    pub const NO_ERROR: u64 = 0x0;
    /// The peer sent bytes that do not parse (bad magic, version, lengths, flags).
    pub const PROTOCOL_VIOLATION: u64 = 0x1;
    /// The peer speaks a protocol version we do not.
    pub const UNSUPPORTED_VERSION: u64 = 0x2;
    /// Stream reset (RESET_STREAM by the sender): the group's
    /// frames are past the latency budget; the receiver skips to the next group.
    pub const GROUP_EXPIRED: u64 = 0x3;
    /// The sender's application refused this receiver (its address or token): retrying
    /// will not help.
    pub const REJECTED: u64 = 0x4;
    /// The sender serves its maximum number of receivers: try again later.
    pub const SERVER_FULL: u64 = 0x5;
    /// The sender dropped this receiver's queue twice (it was too far behind) with no
    /// group taken whole in between: it does not read, or far slower than the stream.
    pub const TOO_SLOW: u64 = 0x6;
}

/// Why bytes from the network were refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Error {
    /// More bytes are needed; not an error when the stream is still open.
    Incomplete,
    /// The stream does not start with [`MAGIC`].
    BadMagic,
    /// A version or stream kind we do not know.
    Unsupported(&'static str, u64),
    /// A length above the configured bound.
    TooLarge(&'static str, u64, u64),
    /// Any other malformed content.
    Malformed(&'static str),
}

impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Error::Incomplete => write!(f, "truncated message"),
            Error::BadMagic => write!(f, "stream does not start with the quicnalu magic"),
            Error::Unsupported(what, v) => write!(f, "unsupported {what} {v}"),
            Error::TooLarge(what, len, max) => {
                write!(f, "{what} of {len} bytes exceeds the limit of {max} bytes")
            }
            Error::Malformed(what) => write!(f, "malformed {what}"),
        }
    }
}

impl std::error::Error for Error {}

/// Appends the preamble that opens every stream: magic, version, kind.
pub fn put_preamble(out: &mut Vec<u8>, kind: StreamKind) {
    out.extend_from_slice(&MAGIC);
    put_varint(out, VERSION);
    put_varint(out, kind as u64);
}

/// Reads a stream preamble and checks it names `expected`.
pub fn read_preamble(r: &mut Reader, expected: StreamKind) -> Result<(), Error> {
    if r.bytes(MAGIC.len())? != MAGIC {
        return Err(Error::BadMagic);
    }
    let version = r.varint()?;
    if version != VERSION {
        return Err(Error::Unsupported("protocol version", version));
    }
    let kind = r.varint()?;
    if kind != expected as u64 {
        return Err(Error::Unsupported("stream kind", kind));
    }
    Ok(())
}
