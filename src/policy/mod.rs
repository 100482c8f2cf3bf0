//! Decisions around connections, without I/O: when a receiver connects again
//! ([`reconnect`]), how a connection ended ([`ending`]), which knocks a listener answers
//! ([`knock`]), what a stranger may hold before HELLO ([`gate`]) and how often an admitted
//! receiver may ask for things ([`ratelimit`]). Each takes `now` and is tested on a stepped
//! clock.

pub mod ending;
pub mod gate;
pub mod knock;
pub mod ratelimit;
pub mod reconnect;

/// A random ID, never 0 and below 2^62 (so it fits a varint): a calling sender's in its
/// knocks, a receiver's in its routes' HELLO. Without randomness it is 1: two senders (or
/// receivers) then look like one, and the second's routes are refused by its token or
/// certificate, or carry frames the merge drops as copies.
pub fn random_id() -> u64 {
    let mut bytes = [0u8; 8];
    let _ = getrandom::fill(&mut bytes);
    (u64::from_be_bytes(bytes) >> 2).max(1)
}
