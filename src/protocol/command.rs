//! Command messages on the control stream: `type, length, payload`, all varints.

use super::varint::{put_varint, Reader};
use super::{read_preamble, Error, FrameHeader, StreamKind};

/// Longest HELLO token accepted.
pub const MAX_TOKEN_LEN: usize = 1024;

/// Which receiver a connection is a route of, and which route: HELLO's last fields.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Route {
    /// Random, the same on every route of one receiver, never 0.
    pub receiver: u64,
    /// 0 for `address:port`, then 1, 2, ... for each of `paths`.
    pub index: u64,
}

/// One control-stream message. See docs/PROTOCOL.md for the type numbers and payloads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// Receiver to sender, first message: protocol version, option bits, access token, and
    /// the latency it has for frames in ns (its budget unless the sender fixes one; None:
    /// no preference, and absent on the wire).
    Hello {
        version: u64,
        options: u64,
        token: Vec<u8>,
        latency: Option<u64>,
        /// One of several routes of the same receiver (quicnalusrc `paths`); None: its
        /// only one, and absent on the wire.
        route: Option<Route>,
    },
    /// Sender to receiver, answer to HELLO: the stream's caps as a string.
    Describe {
        caps: String,
    },
    /// Receiver to sender: please start a new group with a keyframe soon.
    KeyframeRequest,
    /// Receiver to sender: what has arrived so far.
    ReceiverReport {
        highest_seq: u64,
        received: u64,
        lost: u64,
    },
    Ping(u64),
    Pong(u64),
    /// Sender to receiver: no more media; `groups` group streams were opened for this
    /// receiver and `end_seq` is the number the next frame would have had, so the last
    /// group is known complete even if its FIN never arrives.
    EndOfStream {
        groups: u64,
        end_seq: u64,
    },
    /// Either side: closing, with an error code (docs/PROTOCOL.md) and a reason.
    Goodbye {
        code: u64,
        reason: String,
    },
    /// Either side: an application command, a serialized `GstStructure`. From the sender,
    /// `before_seq` pins it in the stream: the receiver hands it on just before frame
    /// `before_seq` (or where that frame would have been); None: as soon as it arrives.
    Application {
        before_seq: Option<u64>,
        structure: String,
    },
    /// Sender to receiver, before DESCRIBE: how long after sending a frame may still be
    /// output, in ns (0: any time). The receiver drops frames that arrive later.
    LatencyBudget(u64),
    /// Sender to receiver, before DESCRIBE, to a receiver joining mid-group: frames numbered
    /// below `live_seq` are the cached group from its IRAP, sent at once to catch up;
    /// `sender_time` is the sender's CLOCK_MONOTONIC (ns) when they were queued, so their
    /// age is `sender_time` less their send time.
    Join {
        live_seq: u64,
        sender_time: u64,
    },
    /// Sender to receiver: the group on `stream` runs late by design (its keyframe could
    /// not cross within the budget): output its frames, flagged late, if they arrive
    /// within `allowance` ns past the budget. Receivers that do not know it drop them.
    LateGroup {
        stream: u64,
        allowance: u64,
    },
    /// Receiver to sender, bonded routes: bytes `offset .. offset + len` of frame `seq`
    /// did not come (a route's part is missing): send them again over this route.
    RepairRequest {
        seq: u64,
        offset: u64,
        len: u64,
    },
    /// Sender to receiver, bonded routes: part of a frame again, as REPAIR_REQUEST asked;
    /// the header has PART, the bytes follow.
    Repair {
        header: FrameHeader,
        data: Vec<u8>,
    },
    /// A type this version does not know: skipped, so later versions can add messages.
    Unknown(u64),
}

mod ty {
    pub const HELLO: u64 = 0x01;
    pub const DESCRIBE: u64 = 0x02;
    pub const KEYFRAME_REQUEST: u64 = 0x03;
    pub const RECEIVER_REPORT: u64 = 0x04;
    pub const PING: u64 = 0x05;
    pub const PONG: u64 = 0x06;
    pub const END_OF_STREAM: u64 = 0x07;
    pub const GOODBYE: u64 = 0x08;
    pub const APPLICATION: u64 = 0x09;
    pub const LATENCY_BUDGET: u64 = 0x0a;
    pub const JOIN: u64 = 0x0b;
    pub const LATE_GROUP: u64 = 0x0c;
    pub const REPAIR_REQUEST: u64 = 0x0d;
    pub const REPAIR: u64 = 0x0e;
}

impl Command {
    pub fn encode(&self, out: &mut Vec<u8>) {
        let mut payload = Vec::new();
        let kind = match self {
            Command::Hello {
                version,
                options,
                token,
                latency,
                route,
            } => {
                put_varint(&mut payload, *version);
                put_varint(&mut payload, *options);
                put_bytes(&mut payload, token);
                if latency.is_some() || route.is_some() {
                    put_varint(&mut payload, latency.unwrap_or(0));
                }
                if let Some(route) = route {
                    put_varint(&mut payload, route.receiver);
                    put_varint(&mut payload, route.index);
                }
                ty::HELLO
            }
            Command::Describe { caps } => {
                payload.extend_from_slice(caps.as_bytes());
                ty::DESCRIBE
            }
            Command::KeyframeRequest => ty::KEYFRAME_REQUEST,
            Command::ReceiverReport {
                highest_seq,
                received,
                lost,
            } => {
                for v in [highest_seq, received, lost] {
                    put_varint(&mut payload, *v);
                }
                ty::RECEIVER_REPORT
            }
            Command::Ping(v) => {
                put_varint(&mut payload, *v);
                ty::PING
            }
            Command::Pong(v) => {
                put_varint(&mut payload, *v);
                ty::PONG
            }
            Command::EndOfStream { groups, end_seq } => {
                put_varint(&mut payload, *groups);
                put_varint(&mut payload, *end_seq);
                ty::END_OF_STREAM
            }
            Command::Goodbye { code, reason } => {
                put_varint(&mut payload, *code);
                payload.extend_from_slice(reason.as_bytes());
                ty::GOODBYE
            }
            Command::Application {
                before_seq,
                structure,
            } => {
                // 0: not pinned; n + 1: before frame n.
                put_varint(&mut payload, before_seq.map_or(0, |n| n.saturating_add(1)));
                payload.extend_from_slice(structure.as_bytes());
                ty::APPLICATION
            }
            Command::LatencyBudget(ns) => {
                put_varint(&mut payload, *ns);
                ty::LATENCY_BUDGET
            }
            Command::Join {
                live_seq,
                sender_time,
            } => {
                put_varint(&mut payload, *live_seq);
                put_varint(&mut payload, *sender_time);
                ty::JOIN
            }
            Command::LateGroup { stream, allowance } => {
                put_varint(&mut payload, *stream);
                put_varint(&mut payload, *allowance);
                ty::LATE_GROUP
            }
            Command::RepairRequest { seq, offset, len } => {
                for v in [seq, offset, len] {
                    put_varint(&mut payload, *v);
                }
                ty::REPAIR_REQUEST
            }
            Command::Repair { header, data } => {
                header.encode(&mut payload);
                payload.extend_from_slice(data);
                ty::REPAIR
            }
            Command::Unknown(kind) => *kind,
        };
        put_varint(out, kind);
        put_varint(out, payload.len() as u64);
        out.extend_from_slice(&payload);
    }

    /// Decodes one message whose payload may be at most `max_len` bytes.
    pub fn decode(r: &mut Reader, max_len: u64) -> Result<Command, Error> {
        let kind = r.varint()?;
        let len = r.varint()?;
        if len > max_len {
            return Err(Error::TooLarge("command", len, max_len));
        }
        let payload = r.bytes(len as usize)?;
        // The payload is complete, so a field running past its end is malformed, not
        // incomplete.
        Self::decode_payload(kind, payload).map_err(|e| match e {
            Error::Incomplete => Error::Malformed("truncated command payload"),
            e => e,
        })
    }

    fn decode_payload(kind: u64, payload: &[u8]) -> Result<Command, Error> {
        let mut p = Reader::new(payload);
        let cmd = match kind {
            ty::HELLO => {
                let version = p.varint()?;
                let options = p.varint()?;
                let token_len = p.varint()?;
                if token_len > MAX_TOKEN_LEN as u64 {
                    return Err(Error::TooLarge("token", token_len, MAX_TOKEN_LEN as u64));
                }
                let token = p.bytes(token_len as usize)?.to_vec();
                let latency = if p.remaining() > 0 {
                    Some(p.varint()?).filter(|&ns| ns > 0)
                } else {
                    None
                };
                let route = if p.remaining() > 0 {
                    let receiver = p.varint()?;
                    if receiver == 0 {
                        return Err(Error::Malformed("route of receiver 0"));
                    }
                    Some(Route {
                        receiver,
                        index: p.varint()?,
                    })
                } else {
                    None
                };
                Command::Hello {
                    version,
                    options,
                    token,
                    latency,
                    route,
                }
            }
            ty::DESCRIBE => Command::Describe {
                caps: text(p.bytes(p.remaining())?)?,
            },
            ty::KEYFRAME_REQUEST => Command::KeyframeRequest,
            ty::RECEIVER_REPORT => Command::ReceiverReport {
                highest_seq: p.varint()?,
                received: p.varint()?,
                lost: p.varint()?,
            },
            ty::PING => Command::Ping(p.varint()?),
            ty::PONG => Command::Pong(p.varint()?),
            ty::END_OF_STREAM => Command::EndOfStream {
                groups: p.varint()?,
                end_seq: p.varint()?,
            },
            ty::GOODBYE => Command::Goodbye {
                code: p.varint()?,
                reason: text(p.bytes(p.remaining())?)?,
            },
            ty::APPLICATION => Command::Application {
                before_seq: p.varint()?.checked_sub(1),
                structure: text(p.bytes(p.remaining())?)?,
            },
            ty::LATENCY_BUDGET => Command::LatencyBudget(p.varint()?),
            ty::JOIN => Command::Join {
                live_seq: p.varint()?,
                sender_time: p.varint()?,
            },
            ty::LATE_GROUP => Command::LateGroup {
                stream: p.varint()?,
                allowance: p.varint()?,
            },
            ty::REPAIR_REQUEST => Command::RepairRequest {
                seq: p.varint()?,
                offset: p.varint()?,
                len: p.varint()?,
            },
            ty::REPAIR => {
                // The part's size is checked against the frame limit by the receiver; its
                // length is bounded by this payload's.
                let header = FrameHeader::decode(&mut p, u64::MAX)?;
                if header.part.is_none() || header.len != p.remaining() as u64 {
                    return Err(Error::Malformed("REPAIR is a part and its bytes"));
                }
                Command::Repair {
                    header,
                    data: p.bytes(p.remaining())?.to_vec(),
                }
            }
            other => {
                p.bytes(p.remaining())?;
                Command::Unknown(other)
            }
        };
        if p.remaining() != 0 {
            return Err(Error::Malformed("command payload has trailing bytes"));
        }
        Ok(cmd)
    }
}

fn put_bytes(out: &mut Vec<u8>, bytes: &[u8]) {
    put_varint(out, bytes.len() as u64);
    out.extend_from_slice(bytes);
}

fn text(bytes: &[u8]) -> Result<String, Error> {
    String::from_utf8(bytes.to_vec()).map_err(|_| Error::Malformed("UTF-8 text"))
}

/// Incremental decoder for the control stream: the preamble, then commands.
pub struct CommandDecoder {
    buf: Vec<u8>,
    preamble_seen: bool,
    max_len: u64,
}

impl CommandDecoder {
    pub fn new(max_len: u64) -> Self {
        CommandDecoder {
            buf: Vec::new(),
            preamble_seen: false,
            max_len,
        }
    }

    /// Decodes `data`, appending every complete command to `out`.
    pub fn push(&mut self, data: &[u8], out: &mut Vec<Command>) -> Result<(), Error> {
        self.buf.extend_from_slice(data);
        let mut r = Reader::new(&self.buf);
        let result = drain(&mut r, &mut self.preamble_seen, self.max_len, out);
        let used = r.position();
        self.buf.drain(..used);
        match result {
            Err(Error::Incomplete) => Ok(()),
            other => other,
        }
    }
}

/// Decodes whole messages until the input runs out; a partial message is left unread.
fn drain(
    r: &mut Reader,
    preamble_seen: &mut bool,
    max_len: u64,
    out: &mut Vec<Command>,
) -> Result<(), Error> {
    if !*preamble_seen {
        read_preamble(r, StreamKind::Control).inspect_err(|_| r.rewind(0))?;
        *preamble_seen = true;
    }
    loop {
        let start = r.position();
        let cmd = Command::decode(r, max_len).inspect_err(|_| r.rewind(start))?;
        out.push(cmd);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all() -> Vec<Command> {
        vec![
            Command::Hello {
                version: 1,
                options: 3,
                token: b"secret".to_vec(),
                latency: Some(200_000_000),
                route: None,
            },
            Command::Hello {
                version: 1,
                options: 1,
                token: Vec::new(),
                latency: None,
                route: None,
            },
            Command::Describe {
                caps: "video/x-h265, stream-format=(string)byte-stream".into(),
            },
            Command::KeyframeRequest,
            Command::ReceiverReport {
                highest_seq: 1 << 40,
                received: 5,
                lost: 0,
            },
            Command::Ping(7),
            Command::Pong(7),
            Command::EndOfStream {
                groups: 12,
                end_seq: 345,
            },
            Command::Goodbye {
                code: 1,
                reason: "bye".into(),
            },
            Command::Application {
                before_seq: None,
                structure: "cmd, x=(int)1".into(),
            },
            Command::Application {
                before_seq: Some(0),
                structure: "pinned".into(),
            },
            Command::LatencyBudget(200_000_000),
            Command::Join {
                live_seq: 150,
                sender_time: 1 << 50,
            },
            Command::LateGroup {
                stream: 11,
                allowance: 1_000_000_000,
            },
            Command::Hello {
                version: 1,
                options: 3,
                token: Vec::new(),
                latency: None,
                route: Some(Route {
                    receiver: 1 << 40,
                    index: 2,
                }),
            },
            Command::RepairRequest {
                seq: 300,
                offset: 16384,
                len: 9000,
            },
            Command::Repair {
                header: FrameHeader {
                    seq: 300,
                    // KEYFRAME | PART, as decoding reads it back.
                    flags: crate::protocol::FrameFlags(0x101),
                    part: Some(crate::protocol::Part { offset: 2, size: 5 }),
                    len: 3,
                    ..FrameHeader::default()
                },
                data: b"abc".to_vec(),
            },
            Command::Unknown(0x3f00),
        ]
    }

    #[test]
    fn a_hello_without_a_route_is_what_it_was_before_routes() {
        let mut wire = Vec::new();
        Command::Hello {
            version: 1,
            options: 1,
            token: b"t".to_vec(),
            latency: Some(200_000_000),
            route: None,
        }
        .encode(&mut wire);
        // type, length, version, options, token length, token, latency (a 4-byte varint).
        assert_eq!(wire, [0x01, 8, 1, 1, 1, b't', 0x8b, 0xeb, 0xc2, 0x00]);
    }

    #[test]
    fn a_repair_is_a_part_and_exactly_its_bytes() {
        let mut wire = Vec::new();
        let header = FrameHeader {
            seq: 1,
            part: Some(crate::protocol::Part { offset: 0, size: 4 }),
            len: 2,
            ..FrameHeader::default()
        };
        let mut payload = Vec::new();
        header.encode(&mut payload);
        payload.extend_from_slice(b"abc");
        put_varint(&mut wire, ty::REPAIR);
        put_varint(&mut wire, payload.len() as u64);
        wire.extend_from_slice(&payload);
        let decoded = Command::decode(&mut Reader::new(&wire), 1024);
        assert!(matches!(decoded, Err(Error::Malformed(_))), "{decoded:?}");
    }

    #[test]
    fn every_command_round_trips_in_pieces() {
        let mut wire = Vec::new();
        super::super::put_preamble(&mut wire, StreamKind::Control);
        for c in all() {
            c.encode(&mut wire);
        }
        for chunk in [1, 2, 7, wire.len()] {
            let mut dec = CommandDecoder::new(1024);
            let mut out = Vec::new();
            for piece in wire.chunks(chunk) {
                dec.push(piece, &mut out).unwrap();
            }
            assert_eq!(out, all());
        }
    }

    #[test]
    fn oversized_and_trailing_are_refused() {
        let mut wire = Vec::new();
        super::super::put_preamble(&mut wire, StreamKind::Control);
        put_varint(&mut wire, ty::APPLICATION);
        put_varint(&mut wire, 1 << 30);
        let err = CommandDecoder::new(1024).push(&wire, &mut Vec::new());
        assert!(matches!(err, Err(Error::TooLarge(..))));

        let mut payload = Vec::new();
        put_varint(&mut payload, ty::PING);
        put_varint(&mut payload, 2);
        payload.extend_from_slice(&[1, 2]);
        let mut r = Reader::new(&payload);
        assert!(matches!(
            Command::decode(&mut r, 1024),
            Err(Error::Malformed(_))
        ));
    }
}
