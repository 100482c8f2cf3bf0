//! NAL-aligned input gathered into access units: one ends where a NAL unit that can only
//! begin an access unit follows a picture, or at a buffer marked as the end of one. Each
//! buffer is inspected once (h265::inspect, in prepare()); the access unit's AuInfo is
//! its buffers' merged.

use crate::media::h265::AuInfo;

/// An access unit gathered whole: its bytes, the buffer that began it (`B`: it carries the
/// timestamps and flags), and what its NAL units hold.
pub struct Gathered<B> {
    pub data: Vec<u8>,
    pub first: B,
    pub info: AuInfo,
}

pub struct Gatherer<B> {
    pending: Option<Gathered<B>>,
}

impl<B> Default for Gatherer<B> {
    fn default() -> Self {
        Gatherer { pending: None }
    }
}

impl<B> Gatherer<B> {
    /// Takes one buffer's NAL units, `data`, which inspected as `info`. Returns the access
    /// unit this buffer completes by beginning the next one.
    pub fn push(&mut self, data: &[u8], info: AuInfo, buffer: B) -> Option<Gathered<B>> {
        let done = if info.begins && self.pending.as_ref().is_some_and(|p| p.info.vcl) {
            self.pending.take()
        } else {
            None
        };
        match &mut self.pending {
            Some(p) => {
                p.data.extend_from_slice(data);
                p.info.merge(&info);
            }
            None => {
                self.pending = Some(Gathered {
                    data: data.to_vec(),
                    first: buffer,
                    info,
                })
            }
        }
        done
    }

    /// The access unit being gathered holds a picture: what comes next may begin another.
    pub fn holds_picture(&self) -> bool {
        self.pending.as_ref().is_some_and(|p| p.info.vcl)
    }

    /// The access unit being gathered, ended here (a MARKER buffer, EOS).
    pub fn flush(&mut self) -> Option<Gathered<B>> {
        self.pending.take()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::media::h265::inspect;

    /// A NAL unit of `nal_type` behind a start code; `first_slice`: for a slice, the first
    /// of its picture.
    fn nal(nal_type: u8, first_slice: bool) -> Vec<u8> {
        let flag = if first_slice { 0x80 } else { 0 };
        vec![0, 0, 0, 1, nal_type << 1, 1, flag | 0x01, 0xaa]
    }

    fn gather(buffers: &[Vec<u8>]) -> Vec<(Vec<u8>, usize, AuInfo)> {
        let mut g = Gatherer::default();
        let mut out = Vec::new();
        for (i, b) in buffers.iter().enumerate() {
            if let Some(au) = g.push(b, inspect(b).unwrap(), i) {
                out.push((au.data, au.first, au.info));
            }
        }
        out.extend(g.flush().map(|au| (au.data, au.first, au.info)));
        out
    }

    #[test]
    fn access_units_end_where_the_next_begins_after_a_picture() {
        let (vps, sps, pps) = (nal(32, false), nal(33, false), nal(34, false));
        let (idr, idr_more, trail) = (nal(19, true), nal(19, false), nal(1, true));
        let buffers = [vps, sps, pps, idr, idr_more, trail.clone(), trail];
        let aus = gather(&buffers);
        let firsts: Vec<usize> = aus.iter().map(|a| a.1).collect();
        assert_eq!(firsts, [0, 5, 6]);
        assert_eq!(aus[0].0, buffers[..5].concat());
        // What the buffers held, merged, is what the access unit holds.
        for (data, _, info) in &aus {
            assert_eq!(*info, inspect(data).unwrap());
        }
        assert!(aus[0].2.irap && aus[0].2.parameter_sets && !aus[1].2.irap);
    }
}
