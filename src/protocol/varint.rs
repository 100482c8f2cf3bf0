//! QUIC variable-length integers (RFC 9000, section 16) and a bounds-checked reader.

use super::Error;

/// Largest value a varint can hold.
pub const MAX_VARINT: u64 = (1 << 62) - 1;

/// Appends `v` in the shortest encoding. Values above [`MAX_VARINT`] are clamped: every
/// value we send (sequence numbers, nanosecond times, lengths) stays far below it.
pub fn put_varint(out: &mut Vec<u8>, v: u64) {
    let v = v.min(MAX_VARINT);
    if v < 1 << 6 {
        out.push(v as u8);
    } else if v < 1 << 14 {
        out.extend_from_slice(&((v as u16) | 0x4000).to_be_bytes());
    } else if v < 1 << 30 {
        out.extend_from_slice(&((v as u32) | 0x8000_0000).to_be_bytes());
    } else {
        out.extend_from_slice(&(v | 0xc000_0000_0000_0000).to_be_bytes());
    }
}

/// A cursor over received bytes; every read either succeeds or returns
/// [`Error::Incomplete`] without moving.
pub struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    pub fn new(buf: &'a [u8]) -> Self {
        Reader { buf, pos: 0 }
    }

    /// Bytes consumed so far.
    pub fn position(&self) -> usize {
        self.pos
    }

    /// Moves back to `pos`, to retry a message once more bytes have arrived.
    pub fn rewind(&mut self, pos: usize) {
        self.pos = pos.min(self.pos);
    }

    pub fn remaining(&self) -> usize {
        self.buf.len() - self.pos
    }

    pub fn varint(&mut self) -> Result<u64, Error> {
        let first = *self.buf.get(self.pos).ok_or(Error::Incomplete)?;
        let len = 1usize << (first >> 6);
        let bytes = self.bytes(len)?;
        let mut v = u64::from(first & 0x3f);
        for b in &bytes[1..] {
            v = (v << 8) | u64::from(*b);
        }
        Ok(v)
    }

    pub fn bytes(&mut self, len: usize) -> Result<&'a [u8], Error> {
        if self.remaining() < len {
            return Err(Error::Incomplete);
        }
        let out = &self.buf[self.pos..self.pos + len];
        self.pos += len;
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn boundaries_round_trip() {
        for v in [0, 63, 64, 16383, 16384, (1 << 30) - 1, 1 << 30, MAX_VARINT] {
            let mut out = Vec::new();
            put_varint(&mut out, v);
            let mut r = Reader::new(&out);
            assert_eq!(r.varint(), Ok(v));
            assert_eq!(r.remaining(), 0);
        }
    }

    #[test]
    fn truncated_is_incomplete() {
        let mut r = Reader::new(&[0x80, 0x01]);
        assert_eq!(r.varint(), Err(Error::Incomplete));
        assert_eq!(r.position(), 0);
    }
}
