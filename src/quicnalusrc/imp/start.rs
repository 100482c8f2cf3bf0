//! Starting and stopping: the connection to the sender (`ClientSettings` built from the
//! properties) or, with moq-url, the subscription on the relay.

use super::*;
use crate::element::errors::{self, Direction};
use crate::element::stats::message_poster;
use crate::element::{log, messages, properties, routes};
use crate::net::capture::Capture;
use crate::net::client::ClientSettings;
use crate::net::moq::{Dial, SubscriberSettings};
use crate::net::stats::Reporter;
use crate::policy::reconnect::Reconnect;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

impl QuicNaluSrc {
    pub(super) fn start_receiving(&self) -> Result<(), gst::ErrorMessage> {
        let s = self.settings.lock().unwrap().clone();
        if let Some(url) = s.moq_url.as_deref().filter(|u| !u.is_empty()) {
            let subscriber = self.subscriber(&s, url)?;
            *self.timeline.lock().unwrap() = Timeline::new(latency_ns(&s));
            *self.state.lock().unwrap() = State::Started {
                source: Source::Relay(Arc::new(subscriber)),
            };
            return Ok(());
        }
        if s.mode == Mode::Caller && s.port == 0 {
            return Err(gst::error_msg!(
                gst::ResourceError::Settings,
                ["port 0 is no sender's port (only mode=listener may pick a free one)"]
            ));
        }
        let peer = properties::resolve(s.address(), s.port as u16, "address")?;
        let server_name = s.server_name.clone().or_else(|| {
            let named = s.mode == Mode::Caller && s.address().parse::<IpAddr>().is_err();
            named.then(|| s.address().to_string())
        });
        let dialled_name = s.mode == Mode::Caller && s.address().parse::<IpAddr>().is_err();
        let trust = s.trust(s.host_key(), dialled_name)?;
        let bind = bind_ip(s.bind_address.as_deref())?;
        if s.mode == Mode::Listener && matches!(trust, Trust::FirstUse(_)) {
            gst::element_warning!(
                self.obj(),
                gst::ResourceError::Settings,
                ("listening with trust on first use: the first sender to call this port \
                     is remembered and played, whoever it is; set certificate-fingerprint, \
                     or a token both ends share, to answer only your own sender")
            );
        }
        let paths = routes::parse(s.paths.as_deref().unwrap_or_default())?;
        if !paths.is_empty() && s.mode == Mode::Listener {
            return Err(gst::error_msg!(
                gst::ResourceError::Settings,
                ["paths are routes to dial: not with mode=listener"]
            ));
        }
        let capture = Capture::open(s.qlog_dir.as_deref(), s.keylog_file.as_deref())
            .map_err(|e| gst::error_msg!(gst::ResourceError::OpenWrite, ["{}", e]))?;
        let stats_interval =
            (s.stats_interval_ms > 0).then(|| Duration::from_millis(s.stats_interval_ms.into()));
        let client = Client::start(ClientSettings {
            peer: SocketAddr::new(peer.ip(), peer.port()),
            listen: s.mode == Mode::Listener,
            bind,
            server_name,
            trust,
            max_command_size: s.max_command_size.into(),
            capture,
            stats: Reporter::new(stats_interval, message_poster(self.obj().upcast_ref())),
            enter: log::enter(self.obj().upcast_ref(), *CAT),
            connect_timeout: Duration::from_millis(s.timeout_ms.into()),
            congestion_control: s.congestion_control.into(),
            max_frame_size: s.max_frame_size.into(),
            token: s.token.clone().unwrap_or_default().into_bytes(),
            queue_len: QUEUE_LEN,
            latency: Duration::from_millis(s.latency_ms.into()),
            reconnect: Reconnect {
                enabled: s.reconnect,
                max_delay: Duration::from_millis(s.reconnect_delay_max_ms.into()),
                give_up: (s.reconnect_timeout_ms > 0)
                    .then(|| Duration::from_millis(s.reconnect_timeout_ms.into())),
            },
            on_connection: messages::connections(self.obj().upcast_ref(), "quicnalusrc", "peer"),
            paths,
            path_mode: s.path_mode.into(),
        })
        .map_err(|e| errors::message(&e, Direction::Receive, false))?;
        match s.mode {
            Mode::Caller => gst::info!(CAT, imp = self, "connecting to {peer}"),
            Mode::Listener => gst::info!(
                CAT,
                imp = self,
                "waiting on {} for a sender to call",
                client.local_addr()
            ),
        }
        *self.timeline.lock().unwrap() = Timeline::new(latency_ns(&s));
        *self.state.lock().unwrap() = State::Started {
            source: Source::Direct(Arc::new(client)),
        };
        Ok(())
    }

    /// `bind-address` changed: a running receiver moves its connection to the new local
    /// address (the networking thread migrates it).
    pub(super) fn move_to(&self, address: Option<&str>) {
        let Ok(client) = self.client() else {
            return;
        };
        if self.settings.lock().unwrap().mode == Mode::Listener {
            gst::element_imp_warning!(
                self,
                gst::ResourceError::Settings,
                ["bind-address applies with mode=caller; a listener stays where it listens"]
            );
            return;
        }
        let moved = match address.map(str::parse::<IpAddr>).transpose() {
            Ok(ip) => client.rebind(ip).map_err(|e| e.to_string()),
            Err(_) => Err("not an IP address".to_string()),
        };
        match moved {
            Ok(local) => gst::info!(CAT, imp = self, "moving to {local}"),
            Err(why) => gst::element_imp_warning!(
                self,
                gst::ResourceError::Settings,
                ["staying where it is: bind-address {address:?}: {why}"]
            ),
        }
    }

    pub(super) fn stop_receiving(&self) -> Result<(), gst::ErrorMessage> {
        let state = std::mem::take(&mut *self.state.lock().unwrap());
        drop(state);
        gst::info!(CAT, imp = self, "stopped");
        Ok(())
    }

    /// With moq-url: subscribes to the broadcast on the relay.
    fn subscriber(&self, s: &Settings, url: &str) -> Result<Subscriber, gst::ErrorMessage> {
        let (url, peer) = properties::relay_target(url, &s.moq_broadcast)?;
        let dialled_name = url.host.parse::<IpAddr>().is_err();
        let trust = s.trust(host_key(&url.host, url.port), dialled_name)?;
        gst::info!(
            CAT,
            imp = self,
            "subscribing to '{}' on {url}",
            s.moq_broadcast
        );
        Subscriber::start(SubscriberSettings {
            dial: Dial {
                url,
                peer,
                trust,
                timeout: Duration::from_millis(s.timeout_ms.into()),
                congestion_control: s.congestion_control.into(),
            },
            broadcast: s.moq_broadcast.clone(),
            queue_len: QUEUE_LEN,
            max_frame_size: s.max_frame_size.into(),
            latency: Duration::from_millis(s.latency_ms.into()),
            enter: log::enter(self.obj().upcast_ref(), *CAT),
            on_event: messages::connections(self.obj().upcast_ref(), "quicnalusrc-moq", "relay"),
        })
        .map_err(|e| errors::message(&e, Direction::Receive, false))
    }
}

/// `bind-address` as an IP address; None: any.
fn bind_ip(address: Option<&str>) -> Result<Option<IpAddr>, gst::ErrorMessage> {
    address
        .map(|a| {
            a.parse().map_err(|_| {
                gst::error_msg!(
                    gst::ResourceError::Settings,
                    ["bind-address {a:?} is not an IP address"]
                )
            })
        })
        .transpose()
}

/// The latency the source reports, in ns: what downstream adds to each frame's time.
fn latency_ns(s: &Settings) -> u64 {
    u64::from(s.latency_ms) * 1_000_000
}
