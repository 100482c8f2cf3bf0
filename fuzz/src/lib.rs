//! What the fuzz targets and the seed writer share: how a fuzz input is laid out.
//!
//! A stream target's input is `[limit] [chunk seed, 4 bytes LE] [stream bytes ...]`. The
//! stream bytes follow a fixed prefix whole, so a seed is a plain valid encoding and
//! mutations land on the stream itself; the prefix lets the fuzzer choose the decoder's
//! limit and how the stream is cut into reads.

/// Frame limit for the group decoder: small enough that inputs can reach and pass it.
pub const MAX_FRAME: u64 = 64 * 1024;
/// Command payload limit for the control-stream decoder.
pub const MAX_COMMAND: u64 = 4 * 1024;
/// Longest HELLO token a decoder accepts (docs/PROTOCOL.md, HELLO).
pub const MAX_TOKEN: usize = 1024;

/// A stream target's input, split into its parts.
pub struct Input<'a> {
    pub limit: u8,
    pub seed: u32,
    pub stream: &'a [u8],
}

impl<'a> Input<'a> {
    pub fn parse(data: &'a [u8]) -> Option<Input<'a>> {
        let (&limit, rest) = data.split_first()?;
        let (seed, stream) = rest.split_first_chunk::<4>()?;
        Some(Input {
            limit,
            seed: u32::from_le_bytes(*seed),
            stream,
        })
    }

    /// The bytes of a file holding this input, for the seed writer.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = vec![self.limit];
        out.extend_from_slice(&self.seed.to_le_bytes());
        out.extend_from_slice(self.stream);
        out
    }
}

/// The decoder limit a limit byte asks for: `large` when the top bit is clear, else the low
/// seven bits, so that "exactly at the limit" and "one past it" are a few bytes away.
pub fn limit(byte: u8, large: u64) -> u64 {
    if byte & 0x80 == 0 {
        large
    } else {
        u64::from(byte & 0x7f)
    }
}

/// Read lengths drawn from an input's chunk seed (xorshift32): the low three bits pick the
/// largest read, from single bytes to everything at once.
pub struct Chunks {
    state: u32,
    max: usize,
}

impl Chunks {
    pub fn new(seed: u32) -> Self {
        const MAX: [usize; 8] = [1, 2, 3, 7, 16, 64, 1500, usize::MAX];
        Chunks {
            // xorshift never leaves 0, so the state must not start there.
            state: seed.wrapping_mul(0x9e37_79b9) | 1,
            max: MAX[(seed & 7) as usize],
        }
    }

    fn next(&mut self) -> u32 {
        let mut x = self.state;
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        self.state = x;
        x
    }

    /// The next read's length; now and then 0, which must change nothing.
    pub fn next_len(&mut self) -> usize {
        let r = self.next();
        if r.is_multiple_of(16) {
            0
        } else if self.max == usize::MAX {
            usize::MAX
        } else {
            1 + (r as usize >> 4) % self.max
        }
    }

    /// A fair coin, for choices between two ways of feeding the same bytes.
    pub fn coin(&mut self) -> bool {
        self.next() & 0x100 != 0
    }
}
