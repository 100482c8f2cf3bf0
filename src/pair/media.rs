//! Synthetic live H.265 for the pair: access units with real NAL headers, as a live encoder
//! makes them (an IDR every `gop` frames or on request, P pictures that reference the
//! previous base picture, and optionally non-reference B pictures on a second temporal
//! sub-layer), the Frame the sink would hand the core for each, and a decoder's
//! view of which frames could be decoded.

use super::link::Rng;
use crate::media::frame::{Frame, Payload};
use crate::media::h265::{self, DropCost};
use std::collections::HashSet;

/// What the encoder makes.
#[derive(Debug, Clone, Copy)]
pub struct Stream {
    pub fps: u32,
    pub bitrate: u64,
    /// Frames per group, IRAP included.
    pub gop: u32,
    /// Non-reference B pictures after each P (0: an IPPP stream, one sub-layer).
    pub b_frames: u32,
    /// An IRAP's size over a P picture's.
    pub irap_ratio: f64,
    /// A file or a stream encoded once: keyframe requests go unanswered.
    pub recorded: bool,
}

impl Default for Stream {
    /// 720p30 at about 4 Mbit/s with an IRAP every 2 s, like the benchmark's clip.
    fn default() -> Self {
        Stream {
            fps: 30,
            bitrate: 4_000_000,
            gop: 60,
            b_frames: 0,
            irap_ratio: 4.0,
            recorded: false,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Irap,
    P,
    B,
}

/// One access unit as made.
pub struct Made {
    pub kind: Kind,
    pub bytes: usize,
    /// The frames it references (by sequence number, which the core gives in this order).
    pub refs: Vec<u64>,
    pub frame: Frame,
}

/// A 4-byte start code and a NAL unit: its two header bytes, then `body` bytes, the first
/// with first_slice_segment_in_pic_flag set; no zero bytes, so no start code inside.
fn nal(out: &mut Vec<u8>, header: [u8; 2], body: usize) {
    out.extend_from_slice(&[0, 0, 0, 1, header[0], header[1]]);
    out.push(0x80);
    out.resize(out.len() + body.saturating_sub(1), 0xab);
}

/// Bytes of a P picture for `stream`'s bitrate, its groups and their pictures' shares.
fn unit(stream: &Stream) -> f64 {
    let g = f64::from(stream.gop.max(1));
    let pictures = g - 1.0;
    let ps = (pictures / f64::from(stream.b_frames + 1)).ceil();
    let bs = pictures - ps;
    let per_group = stream.bitrate as f64 / 8.0 / f64::from(stream.fps) * g;
    per_group / (stream.irap_ratio + ps + 0.5 * bs)
}

pub struct Encoder {
    pub stream: Stream,
    rng: Rng,
    made: u64,
    in_group: u32,
    forced: bool,
    /// The base-layer pictures of the current group, latest last.
    bases: Vec<u64>,
    /// Sub-layers, from the last SPS (as quicnalusink reads them).
    sub_layers: Option<u8>,
    /// Bytes of a P picture; IRAPs and B pictures scale from it.
    unit: f64,
}

impl Encoder {
    pub fn new(stream: Stream, seed: u64) -> Self {
        let unit = unit(&stream);
        Encoder {
            stream,
            // Seeded as before the pair shared the relay's generator, so the seeds keep their runs.
            rng: Rng::new(seed ^ 0xe4c0_de00 ^ 0x5851_f42d_4c95_7f2d),
            made: 0,
            in_group: 0,
            forced: false,
            bases: Vec::new(),
            sub_layers: None,
            unit,
        }
    }

    /// quicnalusink's steering set the encoder's `bitrate`: pictures from the next one on
    /// are sized for it (x265 follows within a few frames; this, at once).
    pub fn set_bitrate(&mut self, bps: u64) {
        self.stream.bitrate = bps;
        self.unit = unit(&self.stream);
    }

    /// Upstream GstForceKeyUnit: the next picture is an IRAP (unless the stream is a
    /// recording, which cannot make one).
    pub fn force_keyframe(&mut self) {
        self.forced = !self.stream.recorded;
    }

    /// The next access unit, in decoding order.
    pub fn next(&mut self) -> Made {
        let seq = self.made;
        self.made += 1;
        if self.in_group >= self.stream.gop || std::mem::take(&mut self.forced) {
            self.in_group = 0;
        }
        let i = self.in_group;
        self.in_group += 1;
        let kind = match i {
            0 => Kind::Irap,
            i if (i - 1) % (self.stream.b_frames + 1) == 0 => Kind::P,
            _ => Kind::B,
        };
        let scale = match kind {
            Kind::Irap => self.stream.irap_ratio,
            Kind::P => 1.0,
            Kind::B => 0.5,
        };
        // +-20% around the picture's share.
        let bytes = (self.unit * scale * (0.8 + 0.4 * self.rng.unit())).max(16.0) as usize;
        let mut au = Vec::with_capacity(bytes + 64);
        let refs = match kind {
            Kind::Irap => {
                // As x265: parameter sets before the first IDR only.
                if seq == 0 {
                    let layers = if self.stream.b_frames > 0 { 2 } else { 1 };
                    nal(&mut au, [0x40, 0x01], 16);
                    // sps_max_sub_layers_minus1, then temporal_id_nesting.
                    au.extend_from_slice(&[0, 0, 0, 1, 0x42, 0x01, ((layers - 1) << 1) | 1]);
                    au.extend(1..=24u8);
                    nal(&mut au, [0x44, 0x01], 8);
                }
                // IDR_W_RADL.
                nal(&mut au, [19 << 1, 0x01], bytes);
                self.bases.clear();
                Vec::new()
            }
            // TRAIL_R on the base layer.
            Kind::P => {
                nal(&mut au, [1 << 1, 0x01], bytes);
                self.bases.last().copied().into_iter().collect()
            }
            // TRAIL_N on sub-layer 1: nothing references it.
            Kind::B => {
                nal(&mut au, [0, 0x02], bytes);
                self.bases.iter().rev().take(2).copied().collect()
            }
        };
        if kind != Kind::B {
            self.bases.push(seq);
        }
        let info = h265::inspect(&au).expect("synthetic access units are valid");
        let bytes = au.len();
        self.sub_layers = info.sub_layers.or(self.sub_layers);
        let drop_cost: DropCost = info.drop_cost(self.sub_layers.unwrap_or(7));
        let duration = 1_000_000_000 / u64::from(self.stream.fps);
        let frame = Frame {
            pts: Some(seq * duration),
            dts: Some(seq * duration),
            duration: Some(duration),
            keyframe: info.irap,
            parameter_sets: info.parameter_sets,
            discont: false,
            temporal_id: info.temporal_id,
            drop_cost,
            data: Box::new(au) as Payload,
        };
        Made {
            kind,
            bytes,
            refs,
            frame,
        }
    }
}

/// Which frames a decoder fed the receiver's output could decode: an IRAP once it has the
/// parameter sets, any other picture once every picture it references was decoded.
#[derive(Default)]
pub struct Decoder {
    has_sets: bool,
    decoded: HashSet<u64>,
}

impl Decoder {
    /// Takes frame `seq` with its access unit and what it references; whether it decodes.
    pub fn take(&mut self, seq: u64, au: &[u8], refs: &[u64]) -> bool {
        let Ok(info) = h265::inspect(au) else {
            return false;
        };
        self.has_sets |= info.parameter_sets;
        let ok = if info.irap {
            self.has_sets
        } else {
            refs.iter().all(|r| self.decoded.contains(r))
        };
        if ok {
            self.decoded.insert(seq);
        }
        ok
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_encoder_makes_groups_at_its_bitrate_with_costs_the_sink_reads() {
        let stream = Stream {
            b_frames: 2,
            ..Stream::default()
        };
        let mut e = Encoder::new(stream, 1);
        let made: Vec<Made> = (0..600).map(|_| e.next()).collect();
        let bytes: usize = made.iter().map(|m| m.bytes).sum();
        let bps = bytes as f64 * 8.0 / 20.0;
        assert!((3.8e6..4.2e6).contains(&bps), "{bps}");
        let kinds: Vec<Kind> = made[..8].iter().map(|m| m.kind).collect();
        use Kind::*;
        assert_eq!(kinds, [Irap, P, B, B, P, B, B, P]);
        assert_eq!(made.iter().filter(|m| m.kind == Irap).count(), 10);
        // Only the first IRAP carries the parameter sets (x265's way).
        assert!(made[0].frame.parameter_sets && !made[60].frame.parameter_sets);
        assert!(made[60].frame.keyframe);
        // B pictures stand alone, the rest cost the group.
        assert_eq!(made[2].frame.drop_cost, DropCost::Alone);
        assert_eq!(made[1].frame.drop_cost, DropCost::Group);
        assert_eq!(
            (made[2].refs.clone(), made[4].refs.clone()),
            (vec![1, 0], vec![1])
        );
        // A request restarts the group at once.
        e.force_keyframe();
        assert_eq!(e.next().kind, Irap);
    }

    #[test]
    fn the_decoder_needs_the_sets_and_every_reference() {
        let mut e = Encoder::new(Stream::default(), 1);
        let made: Vec<Made> = (0..70).map(|_| e.next()).collect();
        let au = |i: usize| made[i].frame.data.as_ref().as_ref().to_vec();
        let mut d = Decoder::default();
        // A later IRAP alone lacks the parameter sets.
        assert!(!d.take(60, &au(60), &[]));
        let mut d = Decoder::default();
        assert!(d.take(0, &au(0), &[]));
        assert!(d.take(1, &au(1), &made[1].refs));
        // Frame 2 missing: 3 cannot decode, nor anything after it in the group ...
        assert!(!d.take(3, &au(3), &made[3].refs));
        assert!(!d.take(4, &au(4), &made[4].refs));
        // ... until the next IRAP.
        assert!(d.take(60, &au(60), &[]));
        assert!(d.take(61, &au(61), &made[61].refs));
    }
}
