//! How a receiver that connects mid-stream starts: the sender keeps the current group of
//! pictures from its IRAP and sends it at once, so the new receiver's first decodable frame
//! comes after one handshake and one group's bytes rather than at the next keyframe.

use crate::media::frame::Frame;
use crate::protocol::FrameHeader;
use std::sync::Arc;

/// The sink's `join-mode` property.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum JoinMode {
    /// Send the cached group at once; if it was too large to cache, ask for a keyframe.
    #[default]
    Cached,
    Keyframe,
    Request,
}

/// Largest group kept for joiners; a longer group is dropped from the cache until the next
/// IRAP (its joiners then wait for a keyframe asked of upstream). Half what a receiver may
/// have queued before it is cut off (fanout, MAX_BACKLOG), so a joiner has room for it.
pub const MAX_CACHED_BYTES: usize = 8 << 20;

/// One frame of the cached group, as it went to the receivers.
pub struct CachedFrame {
    pub header: FrameHeader,
    pub encoded_header: Arc<[u8]>,
    pub frame: Arc<Frame>,
}

/// Application commands kept in stream order for joiners, at most.
const MAX_CACHED_COMMANDS: usize = 256;

/// The group in progress, from its IRAP, with the commands pinned in it.
#[derive(Default)]
pub struct JoinCache {
    frames: Vec<CachedFrame>,
    /// (before frame number, serialized GstStructure), oldest first.
    commands: Vec<(u64, String)>,
    bytes: usize,
    /// Frames are being kept: an IRAP was seen and the group fits.
    keeping: bool,
}

impl JoinCache {
    /// Keeps a frame just distributed; an IRAP starts a new group.
    pub fn push(&mut self, frame: CachedFrame) {
        if frame.frame.keyframe {
            self.frames.clear();
            // Those pinned just before this IRAP belong to its group.
            let seq = frame.header.seq;
            self.commands.retain(|(before, _)| *before >= seq);
            self.bytes = 0;
            self.keeping = true;
        }
        if !self.keeping {
            return;
        }
        self.bytes += frame.encoded_header.len() + frame.frame.data.as_ref().as_ref().len();
        if self.bytes > MAX_CACHED_BYTES {
            self.frames = Vec::new();
            self.commands = Vec::new();
            self.bytes = 0;
            self.keeping = false;
            return;
        }
        self.frames.push(frame);
    }

    /// Keeps a command pinned before frame `before_seq`.
    pub fn push_command(&mut self, before_seq: u64, structure: String) {
        if self.commands.len() >= MAX_CACHED_COMMANDS {
            self.commands.remove(0);
        }
        self.commands.push((before_seq, structure));
    }

    /// The group so far, starting at its IRAP; empty when nothing usable is kept.
    pub fn frames(&self) -> &[CachedFrame] {
        &self.frames
    }

    /// The commands pinned in the group so far.
    pub fn commands(&self) -> &[(u64, String)] {
        &self.commands
    }
}
