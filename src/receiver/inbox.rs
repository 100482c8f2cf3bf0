//! What a receiver's networking thread hands its streaming thread, and the commands the
//! streaming thread hands back to send: both bounded in bytes as well as in count, so that
//! neither a sender's large frames nor an application's commands grow memory while the
//! other side does not take them.

use crate::protocol::control::Waiting;
use crate::protocol::FrameHeader;
use std::collections::VecDeque;

/// Bytes of events waiting for the streaming thread beyond which no more are added (but
/// always one): with frames of up to 32 MiB, 64 events alone could hold 2 GiB.
/// Together with the networking thread's own MAX_BUFFERED, a receiver whose application
/// stops reading holds at most about 32 MiB plus one frame.
pub const MAX_EVENT_BYTES: usize = 16 << 20;

/// Bytes by which the sender's commands may take the inbox past MAX_EVENT_BYTES: its
/// control stream (DESCRIBE, END_OF_STREAM) is read while frames wait for room, so that a
/// stalled application never makes the end of the stream look like a lost connection.
const CONTROL_SLACK: usize = 1 << 20;

/// What an event counts for besides its bytes, so that a flood of tiny commands is
/// bounded too.
const EVENT_OVERHEAD: usize = 64;

/// One access unit as it arrived.
#[derive(Debug)]
pub struct ReceivedFrame {
    pub header: FrameHeader,
    pub data: Vec<u8>,
    /// CLOCK_MONOTONIC (ns) when its last byte arrived.
    pub arrival: u64,
    /// Frames before this one were skipped (an expired or abandoned group).
    pub gap: bool,
    /// It arrived after the budget, and is output because later frames reference it.
    pub late: bool,
    /// Sent from the sender's cache to a receiver joining mid-group: how old (ns, by the
    /// sender's clock) it already was then. None for live frames.
    pub catch_up_age: Option<u64>,
}

/// What the streaming thread receives, in order.
#[derive(Debug)]
pub enum Event {
    /// A connection was established; frames after it may come from a restarted sender,
    /// on a new timeline.
    Connected,
    /// The sender's stream description.
    Caps(String),
    Frame(ReceivedFrame),
    /// An application command from the sender (a serialized GstStructure), in stream order
    /// when the sender pinned it there.
    Command(String),
    /// The sender ended the stream and every frame was delivered.
    Eos,
}

impl Event {
    fn bytes(&self) -> usize {
        EVENT_OVERHEAD
            + match self {
                Event::Frame(f) => f.data.len(),
                Event::Caps(s) | Event::Command(s) => s.len(),
                Event::Connected | Event::Eos => 0,
            }
    }
}

/// The events for the streaming thread.
pub struct Inbox {
    events: VecDeque<Event>,
    /// Bytes in `events`.
    bytes: usize,
    /// Events at most (the element's QUEUE_LEN), and bytes at most (MAX_EVENT_BYTES).
    capacity: usize,
    max_bytes: usize,
}

impl Inbox {
    pub fn new(capacity: usize) -> Self {
        Inbox {
            events: VecDeque::new(),
            bytes: 0,
            capacity: capacity.max(1),
            max_bytes: MAX_EVENT_BYTES,
        }
    }

    /// Whether another event may be added: below both bounds, or empty.
    pub fn has_room(&self) -> bool {
        self.events.is_empty() || (self.events.len() < self.capacity && self.bytes < self.max_bytes)
    }

    /// Whether the sender's control stream may be read: commands may go CONTROL_SLACK
    /// past the bound frames stop at.
    pub fn has_room_for_commands(&self) -> bool {
        self.bytes < self.max_bytes.saturating_add(CONTROL_SLACK)
    }

    /// Adds an event whatever the bounds: the caller checks [`Inbox::has_room`] for those
    /// that can wait.
    pub fn push(&mut self, event: Event) {
        self.bytes += event.bytes();
        self.events.push_back(event);
    }

    /// The next event, and whether the inbox was full before it was taken (the networking
    /// thread waits for room then, and must be woken).
    pub fn pop(&mut self) -> (Option<Event>, bool) {
        let was_full = !self.has_room();
        let event = self.events.pop_front();
        if let Some(e) = &event {
            self.bytes -= e.bytes();
        }
        (event, was_full)
    }

    /// No bounds from now on: after the connection closed at the end of the stream, what is
    /// left is handed over whole.
    pub fn unbound(&mut self) {
        self.capacity = usize::MAX;
        self.max_bytes = usize::MAX;
    }
}

/// Application commands for the sender, oldest first.
#[derive(Default)]
pub struct Outgoing {
    commands: VecDeque<String>,
    waiting: Waiting,
}

impl Outgoing {
    /// Queues a command; false when control::MAX_COMMANDS_WAITING bytes wait already.
    pub fn offer(&mut self, structure: String) -> bool {
        let fits = self.waiting.admit(structure.len());
        if fits {
            self.commands.push_back(structure);
        }
        fits
    }

    /// The next command to send.
    pub fn take(&mut self) -> Option<String> {
        let next = self.commands.pop_front()?;
        self.waiting.release(next.len());
        Some(next)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::control::MAX_COMMANDS_WAITING;

    fn frame(len: usize) -> Event {
        Event::Frame(ReceivedFrame {
            header: FrameHeader::default(),
            data: vec![0; len],
            arrival: 0,
            gap: false,
            late: false,
            catch_up_age: None,
        })
    }

    #[test]
    fn the_inbox_is_bounded_in_bytes_as_in_events() {
        let mut inbox = Inbox::new(64);
        // Frames of 8 MiB: full after two, where 64 of them used to be let in (512 MiB).
        let mut added = 0;
        while inbox.has_room() {
            inbox.push(frame(8 << 20));
            added += 1;
        }
        assert_eq!(added, 2);
        let (first, was_full) = inbox.pop();
        assert!(first.is_some() && was_full);
        assert!(inbox.has_room());
        // Small frames: the count bounds it.
        let mut inbox = Inbox::new(4);
        while inbox.has_room() {
            inbox.push(frame(100));
        }
        assert_eq!(inbox.events.len(), 4);
    }

    #[test]
    fn one_event_larger_than_the_bound_still_passes() {
        let mut inbox = Inbox::new(64);
        assert!(inbox.has_room());
        inbox.push(frame(MAX_EVENT_BYTES + 1));
        assert!(!inbox.has_room());
        assert!(matches!(inbox.pop(), (Some(Event::Frame(_)), true)));
        assert_eq!(inbox.bytes, 0);
        inbox.unbound();
        for _ in 0..100 {
            inbox.push(frame(1 << 20));
        }
        assert!(inbox.has_room());
    }

    #[test]
    fn commands_to_send_are_bounded_in_bytes() {
        let mut out = Outgoing::default();
        let command = "x".repeat(60_000);
        let mut taken = 0;
        while out.offer(command.clone()) {
            taken += 1;
        }
        assert_eq!(taken, MAX_COMMANDS_WAITING / 60_000);
        assert!(out.take().is_some());
        assert!(out.offer(command));
    }
}
