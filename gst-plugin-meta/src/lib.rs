//! `QuicNaluMeta`: per-frame transport facts that `quicnalusrc` attaches to every buffer.
//!
//! The meta is a `GstCustomMeta` named [`META_NAME`] whose structure has these fields, so C and
//! Python applications read the same facts with `gst_buffer_get_custom_meta()`:
//!
//! | field          | type    | meaning                                                        |
//! |----------------|---------|----------------------------------------------------------------|
//! | `seq`          | guint64 | the sender's frame sequence number (one per access unit)       |
//! | `sender-time`  | guint64 | sender's CLOCK_MONOTONIC (ns) when the sink queued the frame for sending |
//! | `arrival-time` | guint64 | receiver's CLOCK_MONOTONIC (ns) when the whole frame arrived   |
//! | `flags`        | guint   | [`Flags`] bits: keyframe, discont, gap, late                   |
//!
//! Both clocks are CLOCK_MONOTONIC, so `arrival-time - sender-time` is the one-way transport
//! latency when sender and receiver run on the same machine.
//!
//! Registration is idempotent: the plugin and an application may both link this crate (each
//! with its own copy of it) and both call [`register`].

use gst::glib;
use std::sync::Mutex;

/// Name under which the custom meta is registered with GStreamer.
pub const META_NAME: &str = "QuicNaluMeta";

/// Bits of [`QuicNaluMeta::flags`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Flags(pub u32);

impl Flags {
    /// The access unit holds an IRAP picture: decoding can start here.
    pub const KEYFRAME: Flags = Flags(1);
    /// First buffer after a start, reconnect or skip: not continuous with the previous one.
    pub const DISCONT: Flags = Flags(1 << 1);
    /// Frames before this one were lost or skipped.
    pub const GAP: Flags = Flags(1 << 2);
    /// The frame arrived after its deadline.
    pub const LATE: Flags = Flags(1 << 3);

    pub fn contains(self, other: Flags) -> bool {
        self.0 & other.0 == other.0
    }
}

impl std::ops::BitOr for Flags {
    type Output = Flags;
    fn bitor(self, rhs: Flags) -> Flags {
        Flags(self.0 | rhs.0)
    }
}

/// The transport facts about one received access unit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct QuicNaluMeta {
    pub seq: u64,
    pub sender_time: u64,
    pub arrival_time: u64,
    pub flags: Flags,
}

static REGISTER_LOCK: Mutex<()> = Mutex::new(());

/// Registers the meta with GStreamer unless it is registered already. Call after `gst::init()`.
pub fn register() {
    let _guard = REGISTER_LOCK.lock().unwrap_or_else(|e| e.into_inner());
    if gst::meta::CustomMeta::is_registered(META_NAME) {
        return;
    }
    // Copy the facts along with the buffer; they describe the bytes, not their memory.
    gst::meta::CustomMeta::register_with_transform(META_NAME, &[], |dest, meta, _src, kind| {
        if kind != glib::Quark::from_str("gst-copy") {
            return false;
        }
        let structure = meta.structure().to_owned();
        match gst::meta::CustomMeta::add(dest, META_NAME) {
            Ok(mut copy) => {
                let target = copy.mut_structure();
                for (name, value) in structure.iter() {
                    target.set_value(name, value.clone());
                }
                true
            }
            Err(_) => false,
        }
    });
}

impl QuicNaluMeta {
    /// Attaches `self` to `buffer`. [`register`] must have been called.
    pub fn add(&self, buffer: &mut gst::BufferRef) -> Result<(), glib::BoolError> {
        let mut meta = gst::meta::CustomMeta::add(buffer, META_NAME)?;
        let s = meta.mut_structure();
        s.set("seq", self.seq);
        s.set("sender-time", self.sender_time);
        s.set("arrival-time", self.arrival_time);
        s.set("flags", self.flags.0);
        Ok(())
    }

    /// Reads the meta from `buffer`, if it has one.
    pub fn from_buffer(buffer: &gst::BufferRef) -> Option<QuicNaluMeta> {
        let meta = gst::meta::CustomMeta::from_buffer(buffer, META_NAME).ok()?;
        let s = meta.structure();
        Some(QuicNaluMeta {
            seq: s.get("seq").ok()?,
            sender_time: s.get("sender-time").ok()?,
            arrival_time: s.get("arrival-time").ok()?,
            flags: Flags(s.get("flags").ok()?),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_double_registration() {
        gst::init().unwrap();
        register();
        register();
        let mut buffer = gst::Buffer::with_size(4).unwrap();
        let meta = QuicNaluMeta {
            seq: 7,
            sender_time: 1_000,
            arrival_time: 2_500,
            flags: Flags::KEYFRAME | Flags::DISCONT,
        };
        meta.add(buffer.get_mut().unwrap()).unwrap();
        let copy = buffer.copy();
        assert_eq!(QuicNaluMeta::from_buffer(&copy), Some(meta));
        assert!(QuicNaluMeta::from_buffer(&gst::Buffer::new()).is_none());
    }
}
