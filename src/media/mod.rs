//! The media model: the access unit the transport carries ([`frame`]), the H.265 facts it
//! needs ([`h265`]), NAL-aligned input
//! gathered into access units ([`gather`]), and the sender's timestamps on a receiver's
//! running time ([`timeline`]).

pub mod frame;
pub mod gather;
pub mod h265;
pub mod timeline;

/// CLOCK_MONOTONIC in nanoseconds: the clock frame headers and QuicNaluMeta use
/// (GStreamer's `gst_util_get_timestamp()` reads the same clock).
pub fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec; CLOCK_MONOTONIC always exists on Linux.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}
