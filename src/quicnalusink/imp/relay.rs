//! The sink's MoQ side (`moq-url`): the relay connection, the access units it is handed,
//! and going on without it when it fails, which never stops the direct receivers.

use super::*;
use crate::element::errors::{self, Direction};
use crate::element::log;
use crate::element::messages;
use crate::element::properties;
use crate::media::frame::{Frame, Payload};
use crate::net::known_hosts::{host_key, user_file, KnownHosts};
use crate::net::moq::{Dial, PublisherSettings};
use crate::net::trust::{Asked, Trust};

/// An access unit's bytes as moq-net's `Bytes`, without a copy.
struct SharedAu(Box<dyn AsRef<[u8]> + Send + Sync>);

impl AsRef<[u8]> for SharedAu {
    fn as_ref(&self) -> &[u8] {
        (*self.0).as_ref()
    }
}

impl QuicNaluSink {
    pub(super) fn publisher_handle(&self) -> Option<Arc<Publisher>> {
        match &*self.state.lock().unwrap() {
            State::Started { publisher, .. } => publisher.clone(),
            State::Stopped => None,
        }
    }

    /// With moq-url: connects to the relay and announces the broadcast.
    pub(super) fn publisher(&self, s: &Settings) -> Result<Option<Publisher>, gst::ErrorMessage> {
        let Some(url) = s.moq_url.as_deref().filter(|u| !u.is_empty()) else {
            return Ok(None);
        };
        let (url, peer) = properties::relay_target(url, &s.moq_broadcast)?;
        let pin = properties::pin("moq-certificate-fingerprint", s.moq_fingerprint.as_deref())?;
        // The sink has no ca-file or tls-verify for its relay: a pin, or first use.
        let asked = Asked {
            pin,
            verify: None,
            ca_file: None,
            server_name: None,
            dialled_name: false,
        };
        let trust = Trust::choose(asked, || KnownHosts {
            path: user_file(&glib::user_data_dir(), "known_hosts"),
            host: host_key(&url.host, url.port),
        });
        let dial = Dial {
            url,
            peer,
            trust,
            timeout: MOQ_TIMEOUT,
            congestion_control: s.congestion_control.into(),
        };
        gst::info!(
            CAT,
            imp = self,
            "publishing '{}' to {}",
            s.moq_broadcast,
            dial.url
        );
        Publisher::start(PublisherSettings {
            dial,
            broadcast: s.moq_broadcast.clone(),
            enter: log::enter(self.obj().upcast_ref(), *CAT),
            on_event: messages::connections(self.obj().upcast_ref(), "quicnalusink-moq", "relay"),
        })
        .map(Some)
        .map_err(|e| errors::message(&e, Direction::Send, false))
    }

    /// Hands the frame to the relay's broadcast too; returns it for the direct receivers,
    /// its bytes shared rather than copied.
    pub(super) fn publish(&self, publisher: &Publisher, frame: Frame) -> Frame {
        if let Some(e) = publisher.failure() {
            self.stop_publishing(&e);
            return frame;
        }
        let frame = frame.map_data(|data| moq_net::bytes::Bytes::from_owner(SharedAu(data)));
        if let Err(e) = publisher.send(&frame) {
            self.stop_publishing(&e);
        }
        frame.map_data(|bytes| -> Payload { Box::new(bytes) })
    }

    /// The relay side failed: direct receivers go on without it, and the user is told once.
    pub(super) fn stop_publishing(&self, e: &crate::error::Error) {
        if let State::Started { publisher, .. } = &mut *self.state.lock().unwrap() {
            *publisher = None;
        }
        let message = errors::message(e, Direction::Send, true);
        gst::element_warning!(
            self.obj(),
            gst::ResourceError::Write,
            (
                "stopped publishing to the MoQ relay; direct receivers go on: {}",
                message
            )
        );
    }
}
