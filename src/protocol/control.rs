//! The control stream both sides share: its ID, and how much of it one turn of the loop
//! reads. What a peer writes faster than that stays in quiche, whose flow control then
//! holds the peer back, so neither side's memory grows with what the other sends.

use crate::protocol::{self, Command, CommandDecoder, DEFAULT_MAX_COMMAND_SIZE};
use std::fmt;

/// The control stream: the first client-initiated bidirectional stream.
pub const CONTROL_STREAM: u64 = 0;

/// The stream of group number `n` (counted from 0): server-initiated unidirectional
/// streams are 3, 7, 11, ... Saturating: `n` may come from the network (END_OF_STREAM).
pub fn group_stream(n: u64) -> u64 {
    n.saturating_mul(4).saturating_add(3)
}

/// Whether `stream` is one the sender may open for a group.
pub fn is_group_stream(stream: u64) -> bool {
    stream % 4 == 3
}

/// The group stream after `stream`.
pub fn next_group_stream(stream: u64) -> u64 {
    stream.saturating_add(4)
}

/// Whether an application command fits in one APPLICATION message (its position varint, up
/// to 8 bytes, and the text) that the other side accepts at its default limit.
pub fn command_fits(structure: &str) -> bool {
    structure.len() + 8 <= DEFAULT_MAX_COMMAND_SIZE as usize
}

/// Commands decoded from a peer's control stream in one turn. Without a cap one turn took
/// a whole flow-control window: 16 MiB of 2-byte PINGs is 8 million commands held at once.
pub const MAX_COMMANDS_PER_TURN: usize = 256;

/// Bytes of application commands that may wait for the other side, on either element,
/// beyond which `send-command` returns false: 16 of the longest. At the sink they wait for
/// the networking thread, which takes them every turn; at the src, for a connection, or
/// for a sender that does not read its control stream and holds them back by flow control.
pub const MAX_COMMANDS_WAITING: usize = 1 << 20;

/// The bytes of application commands waiting, held within MAX_COMMANDS_WAITING.
#[derive(Debug, Default)]
pub struct Waiting {
    bytes: usize,
}

impl Waiting {
    /// Counts a command of `len` bytes in if it fits; false if not.
    pub fn admit(&mut self, len: usize) -> bool {
        let fits = self.bytes + len <= MAX_COMMANDS_WAITING;
        if fits {
            self.bytes += len;
        }
        fits
    }

    /// A command of `len` bytes went.
    pub fn release(&mut self, len: usize) {
        self.bytes -= len;
    }

    /// Every command went.
    pub fn clear(&mut self) {
        self.bytes = 0;
    }
}

/// Bytes read at a time: the cap is checked between reads, so this bounds what one turn
/// decodes past it.
const READ_SIZE: usize = 4096;

/// Where a turn's reading stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stopped {
    /// Nothing more to read for now.
    Drained,
    /// MAX_COMMANDS_PER_TURN decoded: more may be waiting, read it next turn.
    Capped,
    /// The peer ended the stream.
    Finished,
}

/// Why a peer's control stream cannot be read on: each is a protocol violation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReadError {
    /// The bytes are not commands.
    Bytes(protocol::Error),
    /// The peer reset the stream, with this code.
    Reset(u64),
    /// quiche failed the stream otherwise.
    Stream(quiche::Error),
}

impl fmt::Display for ReadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ReadError::Bytes(e) => write!(f, "control stream: {e}"),
            ReadError::Reset(code) => {
                write!(f, "control stream: reset by the peer (code {code:#x})")
            }
            ReadError::Stream(e) => write!(f, "control stream: {e}"),
        }
    }
}

impl std::error::Error for ReadError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            ReadError::Bytes(e) => Some(e),
            ReadError::Reset(_) => None,
            ReadError::Stream(e) => Some(e),
        }
    }
}

/// Reads and decodes commands into `out` with `recv` (a `stream_recv` on the control
/// stream) until it has nothing more, the stream ends, or MAX_COMMANDS_PER_TURN are in
/// `out`. Err: the bytes are not commands, or the stream failed (reset by the peer).
pub fn read_commands(
    decoder: &mut CommandDecoder,
    mut recv: impl FnMut(&mut [u8]) -> Result<(usize, bool), quiche::Error>,
    buf: &mut [u8],
    out: &mut Vec<Command>,
) -> Result<Stopped, ReadError> {
    let size = buf.len().min(READ_SIZE);
    while out.len() < MAX_COMMANDS_PER_TURN {
        match recv(&mut buf[..size]) {
            Ok((n, fin)) => {
                decoder.push(&buf[..n], out).map_err(ReadError::Bytes)?;
                if fin {
                    return Ok(Stopped::Finished);
                }
            }
            Err(quiche::Error::Done) => return Ok(Stopped::Drained),
            Err(quiche::Error::StreamReset(code)) => return Err(ReadError::Reset(code)),
            Err(e) => return Err(ReadError::Stream(e)),
        }
    }
    Ok(Stopped::Capped)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::{put_preamble, StreamKind};

    /// A control stream holding `bytes`, read as quiche would hand them out.
    fn stream(
        bytes: Vec<u8>,
        fin: bool,
    ) -> impl FnMut(&mut [u8]) -> Result<(usize, bool), quiche::Error> {
        let mut at = 0;
        move |buf: &mut [u8]| {
            if at == bytes.len() {
                return Err(quiche::Error::Done);
            }
            let n = buf.len().min(bytes.len() - at);
            buf[..n].copy_from_slice(&bytes[at..at + n]);
            at += n;
            Ok((n, fin && at == bytes.len()))
        }
    }

    /// The control stream's opening and `n` PINGs.
    fn pings(n: u64) -> Vec<u8> {
        let mut bytes = Vec::new();
        put_preamble(&mut bytes, StreamKind::Control);
        for i in 0..n {
            Command::Ping(i).encode(&mut bytes);
        }
        bytes
    }

    #[test]
    fn a_flood_is_read_a_capped_amount_per_turn() {
        let mut decoder = CommandDecoder::new(DEFAULT_MAX_COMMAND_SIZE);
        let mut recv = stream(pings(100_000), false);
        let mut buf = vec![0; 65536];
        let mut total = 0;
        let mut turns = 0;
        loop {
            let mut out = Vec::new();
            let stopped = read_commands(&mut decoder, &mut recv, &mut buf, &mut out).unwrap();
            // One read past the cap at most: a read of READ_SIZE bytes holds no more
            // commands than bytes.
            assert!(
                out.len() < MAX_COMMANDS_PER_TURN + READ_SIZE,
                "{}",
                out.len()
            );
            total += out.len();
            turns += 1;
            if stopped == Stopped::Drained {
                break;
            }
            assert_eq!(stopped, Stopped::Capped);
        }
        assert_eq!(total, 100_000);
        assert!(turns > 1, "{turns}");
    }

    #[test]
    fn the_end_and_bad_bytes_are_told() {
        let mut buf = vec![0; 64];
        let mut decoder = CommandDecoder::new(DEFAULT_MAX_COMMAND_SIZE);
        let mut out = Vec::new();
        let stopped = read_commands(&mut decoder, stream(pings(3), true), &mut buf, &mut out);
        assert_eq!((stopped, out.len()), (Ok(Stopped::Finished), 3));

        let mut decoder = CommandDecoder::new(DEFAULT_MAX_COMMAND_SIZE);
        let garbage = stream(vec![0xff; 32], false);
        let e = read_commands(&mut decoder, garbage, &mut buf, &mut Vec::new()).unwrap_err();
        assert!(matches!(e, ReadError::Bytes(_)), "{e:?}");
        assert!(e.to_string().starts_with("control stream: "), "{e}");

        let reset = |_: &mut [u8]| Err(quiche::Error::StreamReset(1));
        let e = read_commands(&mut decoder, reset, &mut buf, &mut Vec::new()).unwrap_err();
        assert_eq!(e, ReadError::Reset(1));
        assert_eq!(
            e.to_string(),
            "control stream: reset by the peer (code 0x1)"
        );
    }
}
