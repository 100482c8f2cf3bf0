//! Frame stamps that survive every transport: a suffix SEI NAL (user_data_unregistered)
//! appended to each access unit, carrying the frame's sequence number, its send time on
//! CLOCK_MONOTONIC and the frame it needs to decode. Being the AU's last NAL, a stamp seen at the
//! receiver means the whole access unit has arrived. The payload is ASCII hex, so it needs
//! no emulation prevention.

/// 16-byte UUID identifying our SEI (no zero bytes, so no start-code look-alikes).
const UUID: [u8; 16] = *b"quicnalu-stamp!!";
/// Start code + NAL header (type 40 = suffix SEI, layer 0, tid 1) + payload type 5.
const PREFIX: [u8; 6] = [0, 0, 0, 1, 0x50, 0x01];
const HEX_LEN: usize = 16 + 16 + 16;
/// `depends_on` of an IRAP.
const NONE: u64 = u64::MAX;
const PAYLOAD_LEN: usize = UUID.len() + HEX_LEN;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stamp {
    pub seq: u64,
    pub sent_ns: u64,
    /// The latest reference picture before this frame, which it (or the references it
    /// has) needs; None for an IRAP, which decodes alone.
    pub depends_on: Option<u64>,
}

/// Bytes of the SEI NAL unit to append to an access unit.
pub fn encode(stamp: Stamp) -> Vec<u8> {
    let mut out = Vec::with_capacity(PREFIX.len() + 2 + PAYLOAD_LEN + 1);
    out.extend_from_slice(&PREFIX);
    out.push(5); // payloadType: user_data_unregistered
    out.push(PAYLOAD_LEN as u8);
    out.extend_from_slice(&UUID);
    out.extend_from_slice(
        format!(
            "{:016x}{:016x}{:016x}",
            stamp.seq,
            stamp.sent_ns,
            stamp.depends_on.unwrap_or(NONE)
        )
        .as_bytes(),
    );
    out.push(0x80); // rbsp_trailing_bits
    out
}

/// Finds stamps in a byte stream that may split them across buffers: keeps a short tail.
#[derive(Default)]
pub struct Scanner {
    tail: Vec<u8>,
}

impl Scanner {
    pub fn scan(&mut self, data: &[u8], found: &mut impl FnMut(Stamp)) {
        let mut buf = std::mem::take(&mut self.tail);
        buf.extend_from_slice(data);
        let mut pos = 0;
        let mut consumed = 0;
        while let Some(off) = find(&buf[pos..], &UUID) {
            let start = pos + off + UUID.len();
            if buf.len() < start + HEX_LEN {
                consumed = pos + off;
                self.tail = buf[consumed..].to_vec();
                return;
            }
            if let Some(stamp) = parse(&buf[start..start + HEX_LEN]) {
                found(stamp);
            }
            pos = start + HEX_LEN;
            consumed = pos;
        }
        let keep = (buf.len() - consumed).min(UUID.len() - 1);
        self.tail = buf[buf.len() - keep..].to_vec();
    }
}

fn parse(hex: &[u8]) -> Option<Stamp> {
    let text = std::str::from_utf8(hex).ok()?;
    Some(Stamp {
        seq: u64::from_str_radix(&text[..16], 16).ok()?,
        sent_ns: u64::from_str_radix(&text[16..32], 16).ok()?,
        depends_on: Some(u64::from_str_radix(&text[32..48], 16).ok()?).filter(|&d| d != NONE),
    })
}

/// Measurement must not cost the receivers it measures: a SIMD search, not a window compare.
fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    memchr::memmem::find(hay, needle)
}
