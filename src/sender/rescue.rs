//! When a keyframe cannot cross within the budget: the group runs late rather than not at
//! all.
//!
//! A group expires when its oldest unsent frame could no longer arrive by its deadline
//! (receiver.rs, `expire`). On a link slower than the stream, or with a keyframe larger
//! than the budget lets the link carry (60 kB takes 160 ms at 3 Mbit/s), that happens to
//! every group before its keyframe is through: the receiver would show nothing, for good.
//! So the open group, if its keyframe has not gone out whole, is rescued instead: its
//! deadlines move back by [`lag`], the receiver is told (LATE_GROUP) and outputs its
//! frames flagged late, and the group goes on until even that is missed (its tail then
//! expires and the receiver asks for a keyframe). The next group starts at the live edge
//! again, and newest first, so the late one gives way to it.
//!
//! A group whose keyframe went out keeps its deadlines while upstream answers keyframe
//! requests: the receiver has that picture, and the group's expiry (with the keyframe
//! request that follows) brings a fresh one sooner than a growing lag would. From a file
//! or a stream encoded once, no request is answered (keyframes.rs), and expiring would
//! leave the receiver blank until the next natural IRAP, seconds off: such a group is
//! rescued too.
//!
//! Measured in the pair (pair/caps.rs, 20 ms each way, the link at 90, 75 and 50% of a
//! 4 Mbit/s stream whose IRAPs are 4 P pictures): a recording, at latency 120 or 200, went
//! from nothing at all (120) or a picture every 2.2-3.6 s (200) to one at least every
//! 600 ms, frames 0.4-0.7 s old at the median. What the defaults do with frames that
//! cannot all go: non-reference pictures are shed (budget.rs, thinning the frame rate);
//! with none (P pictures only) a group whose keyframe is through holds to the budget and
//! its tail is dropped, with a keyframe request, when upstream answers requests, and runs
//! late otherwise; a group whose keyframe is not through runs late.

use super::queue::StreamOut;
use crate::protocol::LATE_GROUP_ALLOWANCE;
use std::time::Duration;

/// How far past its deadlines a rescued group may run: the protocol's allowance when
/// nothing upstream makes a keyframe on request, and less when something does, since the
/// group's expiry then brings a fresh keyframe (at the rate steering set) sooner.
pub fn lag(keyframes_answered: bool) -> Duration {
    if keyframes_answered {
        LAG_ANSWERED
    } else {
        Duration::from_nanos(LATE_GROUP_ALLOWANCE)
    }
}

const LAG_ANSWERED: Duration = Duration::from_millis(400);

/// Whether `group`, about to expire, is rescued instead; `open`: it is the newest group,
/// with no later keyframe queued to take its place; `keyframes_answered`: upstream makes a
/// keyframe when asked, so that expiring brings a fresh one soon.
pub(super) fn rescues(group: &StreamOut, open: bool, keyframes_answered: bool) -> bool {
    let keyframe_out = group.frames_written > 0;
    open && group.allowance.is_zero() && (!keyframe_out || !keyframes_answered)
}
