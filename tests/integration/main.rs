//! The integration suite: real pipelines over real QUIC on loopback, one module per area.
//!
//! One binary, so the plugin, quiche, BoringSSL, moq-net and GStreamer are linked once for
//! the whole suite. Tests that need a process of their own live apart: tests/process/ (they
//! read the process's memory or count its threads) and tests/meta_registration.rs (it
//! loads the plugin's shared library instead of registering it statically).

#[path = "../common/mod.rs"]
mod common;

mod adaptation;
mod apps;
mod budget;
mod capped;
mod commands;
mod delivery;
mod errors;
mod fanout;
mod impaired;
mod install;
mod keyframes;
mod migration;
mod modes;
mod moq;
mod pacing;
mod protocol_props;
mod reconnect;
mod routes;
mod security;
mod shedding;
mod uri;
mod zero_config;
