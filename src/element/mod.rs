//! What both elements share on the GStreamer side: the common properties, `quicnalu://`
//! URIs, the GStreamer error for each transport error, and the bridge from the `log`
//! crate into the elements' debug categories. Only the element layer (this folder, the two
//! element folders and lib.rs) names GStreamer or GLib types.

pub mod errors;
pub mod log;
pub mod messages;
pub mod properties;
pub mod routes;
pub mod stats;
pub mod uri;
