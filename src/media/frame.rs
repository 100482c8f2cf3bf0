//! One access unit and what the transport knows of it: the frame the sink's streaming
//! thread hands over, that the sender's core numbers, queues and sheds, and that the MoQ
//! publisher writes into a group. `B` is how its bytes are held: shared, never copied.

use crate::media::h265::DropCost;

/// The bytes of an access unit as the sink holds them: its mapped GstBuffer, or the
/// MoQ publisher's `Bytes` over it.
pub type Payload = Box<dyn AsRef<[u8]> + Send + Sync>;

pub struct Frame<B = Payload> {
    /// Running time, ns.
    pub pts: Option<u64>,
    pub dts: Option<u64>,
    pub duration: Option<u64>,
    /// An IRAP picture: decoding can start here, and a group starts with it.
    pub keyframe: bool,
    /// It carries VPS, SPS and PPS.
    pub parameter_sets: bool,
    /// Frames before it were lost upstream.
    pub discont: bool,
    /// Its pictures' highest TemporalId.
    pub temporal_id: u8,
    /// What losing it costs: with a deadline, cheaper frames are shed sooner.
    pub drop_cost: DropCost,
    pub data: B,
}

impl<B> Frame<B> {
    /// The same frame with its bytes held another way.
    pub fn map_data<C>(self, f: impl FnOnce(B) -> C) -> Frame<C> {
        Frame {
            pts: self.pts,
            dts: self.dts,
            duration: self.duration,
            keyframe: self.keyframe,
            parameter_sets: self.parameter_sets,
            discont: self.discont,
            temporal_id: self.temporal_id,
            drop_cost: self.drop_cost,
            data: f(self.data),
        }
    }
}
