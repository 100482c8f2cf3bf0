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
