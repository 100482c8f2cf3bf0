//! Starting and stopping the networking thread: where to bind and whom to call, the
//! certificate, the `ServerSettings` built from the properties, and the receivers' farewells
//! at stop.

use super::*;
use crate::element::errors::{self, Direction};
use crate::element::stats::message_poster;
use crate::element::{log, routes};
use crate::net::capture::Capture;
use crate::net::config::Identity;
use crate::net::known_hosts::user_file;
use crate::net::server::ServerSettings;
use crate::net::stats::Reporter;
use crate::net::tls::SelfSigned;
use crate::sender::budget;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, ToSocketAddrs};

impl Settings {
    /// Where to bind, and with mode=caller whom to call.
    fn endpoints(&self) -> Result<(SocketAddr, Option<SocketAddr>), gst::ErrorMessage> {
        let settings_error =
            |why: String| gst::error_msg!(gst::ResourceError::Settings, ["{}", why]);
        match self.mode {
            Mode::Listener => {
                let ip: IpAddr = self.address.parse().map_err(|_| {
                    settings_error(format!("address '{}' is not an IP address", self.address))
                })?;
                Ok((SocketAddr::new(ip, self.port as u16), None))
            }
            Mode::Caller => {
                let listener = (self.address.as_str(), self.port as u16)
                    .to_socket_addrs()
                    .ok()
                    .and_then(|mut a| a.next())
                    .ok_or_else(|| {
                        gst::error_msg!(
                            gst::ResourceError::NotFound,
                            ["cannot resolve address '{}'", self.address]
                        )
                    })?;
                if listener.ip().is_unspecified() || listener.port() == 0 {
                    return Err(settings_error(format!(
                        "mode=caller calls the quicnalusrc listening at address:port; \
                         {listener} is not one: set address and port"
                    )));
                }
                let any: IpAddr = if listener.is_ipv4() {
                    Ipv4Addr::UNSPECIFIED.into()
                } else {
                    Ipv6Addr::UNSPECIFIED.into()
                };
                Ok((SocketAddr::new(any, 0), Some(listener)))
            }
        }
    }
}

impl QuicNaluSink {
    /// The certificate: the PEM files; with `self-signed` one made now; with neither the
    /// one kept in the user's data directory, made there on first use.
    fn identity(&self, settings: &Settings, ip: IpAddr) -> Result<Identity, gst::ErrorMessage> {
        let files = settings.cert_file.is_some() || settings.key_file.is_some();
        let settings_error = |e: String| gst::error_msg!(gst::ResourceError::Settings, ["{}", e]);
        if files && settings.self_signed {
            return Err(settings_error(
                "self-signed and cert-file/key-file exclude each other".into(),
            ));
        }
        if files {
            return Ok(Identity::Files {
                cert: settings.cert_file.clone().unwrap_or_default(),
                key: settings.key_file.clone().unwrap_or_default(),
            });
        }
        let (identity, told) = if settings.self_signed {
            let address = ip.to_string();
            let mut names = vec!["localhost"];
            if !ip.is_unspecified() {
                names.push(&address);
            }
            let made = SelfSigned::generate(&names).map_err(|e| settings_error(e.to_string()))?;
            (made, "a throw-away self-signed certificate".to_string())
        } else {
            let path = user_file(&glib::user_data_dir(), "sender.pem");
            let (kept, new) =
                SelfSigned::kept_in(&path).map_err(|e| settings_error(e.to_string()))?;
            let how = if new { "made and kept" } else { "kept" };
            (
                kept,
                format!("the self-signed certificate {how} in {}", path.display()),
            )
        };
        // Posted, so gst-launch-1.0 prints it: the receiving side checks it against this.
        let text = format!("serving with {told}, SHA-256 {}", identity.fingerprint());
        gst::info!(CAT, imp = self, "{text}");
        // gst-launch-1.0 prints an INFO message's debug text, not its message.
        gst::element_imp_info!(
            self,
            gst::ResourceError::Settings,
            ("{}", text),
            ["{}", text]
        );
        Ok(Identity::SelfSigned(identity))
    }

    pub(super) fn start_serving(&self) -> Result<(), gst::ErrorMessage> {
        let settings = self.settings.lock().unwrap().clone();
        let (bind, call) = settings.endpoints()?;
        let paths = match call {
            Some(listener) => {
                routes::parse_locals(settings.paths.as_deref().unwrap_or_default(), listener)?
            }
            None if settings
                .paths
                .as_deref()
                .is_some_and(|p| !p.trim().is_empty()) =>
            {
                return Err(gst::error_msg!(
                    gst::ResourceError::Settings,
                    ["paths are local addresses to call from: only with mode=caller"]
                ));
            }
            None => Vec::new(),
        };
        let identity = self.identity(&settings, bind.ip())?;
        let capture = Capture::open(
            settings.qlog_dir.as_deref(),
            settings.keylog_file.as_deref(),
        )
        .map_err(|e| gst::error_msg!(gst::ResourceError::OpenWrite, ["{}", e]))?;
        let stats_interval = (settings.stats_interval_ms > 0)
            .then(|| Duration::from_millis(settings.stats_interval_ms.into()));
        let server = Server::start(ServerSettings {
            addr: bind,
            call,
            paths,
            identity,
            address_validation: settings.address_validation,
            max_connections: settings.max_connections as usize,
            max_handshakes: settings.max_handshakes as usize,
            max_command_size: settings.max_command_size.into(),
            capture,
            token: settings.token.clone().map(String::into_bytes),
            stats: Reporter::new(stats_interval, message_poster(self.obj().upcast_ref())),
            enter: log::enter(self.obj().upcast_ref(), *CAT),
            congestion_control: settings.congestion_control.into(),
            keyframe_interval: Duration::from_millis(settings.keyframe_request_interval_ms.into()),
            request_keyframe: self.keyframe_requester(),
            on_estimate: self.estimate_reporter(),
            max_receivers: settings.max_receivers as usize,
            join_mode: settings.join_mode.into(),
            admit: self.admitter(),
            on_receiver: self.receiver_reporter(),
            budget: budget::Policy::from_ms(settings.latency_budget_ms),
        })
        .map_err(|e| errors::message(&e, Direction::Send, false))?;
        let bound_port = server.local_addr().port();
        match call {
            Some(listener) => gst::info!(
                CAT,
                imp = self,
                "calling {listener} from {}",
                server.local_addr()
            ),
            None => gst::info!(CAT, imp = self, "listening on {}", server.local_addr()),
        }
        *self.stream.lock().unwrap() = Stream::default();
        *self.adaptation.lock().unwrap() = Adaptation::new(
            settings.adapt_bitrate,
            settings.min_bitrate_kbps,
            settings.max_bitrate_kbps,
            *CAT,
        );
        let publisher = self.publisher(&settings)?.map(Arc::new);
        *self.state.lock().unwrap() = State::Started {
            server: Arc::new(server),
            bound_port,
            publisher,
        };
        self.obj().notify("bound-port");
        self.obj().notify("certificate-fingerprint");
        Ok(())
    }

    pub(super) fn stop_serving(&self) -> Result<(), gst::ErrorMessage> {
        let state = std::mem::take(&mut *self.state.lock().unwrap());
        if let State::Started { server, .. } = state {
            // Stopping closes every connection and ends the networking thread; the receivers
            // it served are reported from here, where a handler may change our state. (A
            // send-command in progress holds the server a moment: it stops when that ends.)
            if let Ok(server) = Arc::try_unwrap(server) {
                let report = self.receiver_reporter();
                for farewell in server.stop() {
                    report(farewell);
                }
            }
        }
        *self.adaptation.lock().unwrap() = None;
        gst::info!(CAT, imp = self, "stopped");
        Ok(())
    }
}
