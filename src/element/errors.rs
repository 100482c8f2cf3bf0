//! The elements' side of the transport's errors: which GStreamer error each case is.

use crate::error::Error;

/// Which way an element's data goes: its I/O errors say so.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// quicnalusink
    Send,
    /// quicnalusrc
    Receive,
}

/// The error message for `e`; `flowing`: the stream had begun, so a failure of the
/// connection is one of reading or writing, not of opening.
pub fn message(e: &Error, direction: Direction, flowing: bool) -> gst::ErrorMessage {
    use gst::ResourceError as R;
    let io = match (direction, flowing) {
        (Direction::Send, false) => R::OpenWrite,
        (Direction::Send, true) => R::Write,
        (Direction::Receive, false) => R::OpenRead,
        (Direction::Receive, true) => R::Read,
    };
    let code = match e {
        Error::Setup(_) => R::Settings,
        Error::Tls { .. } | Error::Certificate(_) | Error::Refused { .. } => R::NotAuthorized,
        Error::ServerFull(_) => R::Busy,
        Error::Protocol(_) => return gst::error_msg!(gst::StreamError::Decode, ["{}", e]),
        Error::System(_) => R::Failed,
        Error::Bind(_) | Error::Timeout(_) | Error::Lost(_) => io,
    };
    gst::error_msg!(code, ["{}", e])
}
