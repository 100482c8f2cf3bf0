//! One stream's two halves: what we write (sent in order, lost bytes again first, reset on
//! demand), and what we read (bytes put back in order, its end, or the peer's reset).

use super::super::ranges::Ranges;
use std::collections::BTreeMap;

/// quiche's default urgency.
const DEFAULT_URGENCY: u8 = 127;

pub struct SendStream {
    /// Everything written (kept whole: a simulation's streams are small).
    data: Vec<u8>,
    /// The first offset never sent.
    next: u64,
    fin: bool,
    fin_sent: bool,
    fin_acked: bool,
    /// Bytes lost and not acknowledged since: they go before new bytes.
    again: Ranges,
    fin_again: bool,
    acked: Ranges,
    pub urgency: u8,
    pub reset: Option<u64>,
    /// RESET_STREAM is to be sent (again).
    pub reset_due: bool,
}

impl Default for SendStream {
    fn default() -> Self {
        SendStream {
            data: Vec::new(),
            next: 0,
            fin: false,
            fin_sent: false,
            fin_acked: false,
            again: Ranges::default(),
            fin_again: false,
            acked: Ranges::default(),
            urgency: DEFAULT_URGENCY,
            reset: None,
            reset_due: false,
        }
    }
}

/// Bytes taken for one STREAM frame.
pub struct Chunk {
    pub off: u64,
    pub data: Vec<u8>,
    pub fin: bool,
    /// Sent before: a retransmission.
    pub again: bool,
}

impl SendStream {
    pub fn written(&self) -> u64 {
        self.data.len() as u64
    }

    pub fn write(&mut self, bytes: &[u8], fin: bool) {
        if self.fin || self.reset.is_some() {
            return;
        }
        self.data.extend_from_slice(bytes);
        self.fin = fin;
    }

    /// Something is waiting to be sent.
    pub fn pending(&self) -> bool {
        self.reset.is_none()
            && (!self.again.is_empty()
                || self.next < self.written()
                || (self.fin && !self.fin_sent)
                || self.fin_again)
    }

    /// Up to `room` bytes for the next frame: lost bytes first, then new ones.
    pub fn emit(&mut self, room: usize) -> Option<Chunk> {
        if self.reset.is_some() {
            return None;
        }
        let end = self.written();
        if let Some((s, e)) = self.again.first() {
            let n = (e - s).min(room as u64);
            self.again.remove(s, s + n);
            let fin = self.fin_again && s + n == end;
            self.fin_again &= !fin;
            return Some(Chunk {
                off: s,
                data: self.data[s as usize..(s + n) as usize].to_vec(),
                fin,
                again: true,
            });
        }
        if self.next < end || (self.fin && !self.fin_sent) {
            let s = self.next;
            let n = (end - s).min(room as u64);
            self.next += n;
            let fin = self.fin && self.next == end;
            self.fin_sent |= fin;
            return Some(Chunk {
                off: s,
                data: self.data[s as usize..(s + n) as usize].to_vec(),
                fin,
                again: false,
            });
        }
        if self.fin_again {
            self.fin_again = false;
            return Some(Chunk {
                off: end,
                data: Vec::new(),
                fin: true,
                again: true,
            });
        }
        None
    }

    /// A frame of ours got through.
    pub fn acked(&mut self, off: u64, len: u64, fin: bool) {
        self.acked.insert(off, off + len);
        self.again.remove(off, off + len);
        if fin {
            self.fin_acked = true;
            self.fin_again = false;
        }
    }

    /// A frame of ours was lost: what of it was not acknowledged since goes again.
    /// Returns those bytes.
    pub fn lost(&mut self, off: u64, len: u64, fin: bool) -> u64 {
        if self.reset.is_some() {
            return 0;
        }
        let mut marked = 0;
        for (s, e) in self.acked.gaps(off, off + len) {
            self.again.insert(s, e);
            marked += e - s;
        }
        if fin && !self.fin_acked {
            self.fin_again = true;
        }
        marked
    }

    pub fn reset(&mut self, code: u64) {
        if self.reset.is_none() {
            self.reset = Some(code);
            self.reset_due = true;
            self.again = Ranges::default();
            self.fin_again = false;
        }
    }
}

#[derive(Default)]
pub struct RecvStream {
    /// Bytes received and not yet read, by offset (they may overlap).
    chunks: BTreeMap<u64, Vec<u8>>,
    read: u64,
    fin_at: Option<u64>,
    fin_read: bool,
    reset: Option<u64>,
    reset_read: bool,
}

impl RecvStream {
    pub fn take(&mut self, off: u64, data: &[u8], fin: bool) {
        if self.reset.is_some() || self.fin_read {
            return;
        }
        let end = off + data.len() as u64;
        if fin {
            self.fin_at = Some(end);
        }
        if end <= self.read || data.is_empty() {
            return;
        }
        let keep = self.chunks.get(&off).is_none_or(|c| c.len() < data.len());
        if keep {
            self.chunks.insert(off, data.to_vec());
        }
    }

    /// RESET_STREAM: unless the reader has the whole stream already.
    pub fn reset(&mut self, code: u64) {
        if !self.fin_read && self.reset.is_none() {
            self.reset = Some(code);
        }
    }

    /// The chunk holding the next byte to read.
    fn next_chunk(&self) -> Option<(u64, &Vec<u8>)> {
        let read = self.read;
        self.chunks
            .range(..=read)
            .rev()
            .find(|(off, c)| **off + c.len() as u64 > read)
            .map(|(off, c)| (*off, c))
    }

    pub fn readable(&self) -> bool {
        match self.reset {
            Some(_) => !self.reset_read,
            None => {
                !self.fin_read && (self.next_chunk().is_some() || self.fin_at == Some(self.read))
            }
        }
    }

    pub fn read(&mut self, buf: &mut [u8]) -> Result<(usize, bool), quiche::Error> {
        if let Some(code) = self.reset {
            // As quiche: what was received is dropped with the reset.
            self.chunks.clear();
            self.reset_read = true;
            return Err(quiche::Error::StreamReset(code));
        }
        let mut n = 0;
        while n < buf.len() {
            let Some((off, chunk)) = self.next_chunk() else {
                break;
            };
            let start = (self.read - off) as usize;
            let take = (chunk.len() - start).min(buf.len() - n);
            buf[n..n + take].copy_from_slice(&chunk[start..start + take]);
            n += take;
            self.read += take as u64;
        }
        let read = self.read;
        self.chunks.retain(|off, c| *off + c.len() as u64 > read);
        let fin = self.fin_at == Some(self.read) && !self.fin_read;
        if n == 0 && !fin {
            return Err(quiche::Error::Done);
        }
        self.fin_read |= fin;
        Ok((n, fin))
    }

    /// Reads and drops what is in order; returns the bytes read so far in all.
    pub fn skip_all(&mut self) -> u64 {
        let mut buf = [0; 4096];
        while self.read(&mut buf).is_ok_and(|(n, fin)| n > 0 && !fin) {}
        self.read
    }
}
