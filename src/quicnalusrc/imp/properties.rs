//! The source's properties: their specs, and setting and reading them.

use super::*;
use crate::element::properties;
use crate::element::stats::Snapshot;
use crate::stats::ClientStats;

/// Every property, in the order gst-inspect-1.0 shows them.
pub(super) fn specs() -> &'static [glib::ParamSpec] {
    static PROPERTIES: Lazy<Vec<glib::ParamSpec>> = Lazy::new(|| {
        let mut specs = vec![
            properties::mode(
                DEFAULT_MODE,
                "caller: connect to the quicnalusink at address:port. listener: wait on \
                     address:port for a quicnalusink with mode=caller to call (a camera \
                     behind NAT pushing to a studio), connect back to it, and after a lost \
                     connection wait for it to call again (until reconnect-timeout)",
            ),
            glib::ParamSpecString::builder("address")
                .nick("Address")
                .blurb(
                    "Address or host name of the quicnalusink to receive from; with \
                         mode=listener the local address to listen on (then 0.0.0.0 by \
                         default)",
                )
                .default_value(Some(DEFAULT_ADDRESS))
                .mutable_ready()
                .build(),
            glib::ParamSpecUInt::builder("port")
                .nick("Port")
                .blurb(
                    "UDP port of the quicnalusink; with mode=listener, the port to listen \
                         on (0 picks a free one: read bound-port)",
                )
                .maximum(u16::MAX.into())
                .default_value(DEFAULT_PORT)
                .mutable_ready()
                .build(),
            glib::ParamSpecString::builder("bind-address")
                .nick("Bind address")
                .blurb(
                    "Local IP address to send from (a second network's, a second \
                         modem's); NULL: any. Changed while playing, the receiver moves its \
                         connection there (QUIC connection migration): no new handshake, \
                         and what was in flight is sent again. With paths, the route to \
                         address:port. Only with mode=caller",
                )
                .mutable_playing()
                .build(),
            glib::ParamSpecUInt::builder("bound-port")
                .nick("Bound port")
                .blurb("The local UDP port, once started")
                .maximum(u16::MAX.into())
                .read_only()
                .build(),
            glib::ParamSpecString::builder("server-name")
                .nick("Server name")
                .blurb(
                    "TLS server name (SNI) the certificate must match; unset: the address \
                         when it is a host name; when it is an IP address, the certificate \
                         must list that IP among its subject alternative names",
                )
                .mutable_ready()
                .build(),
            glib::ParamSpecString::builder("ca-file")
                .nick("CA file")
                .blurb("PEM file with the CA (or the self-signed certificate) to trust")
                .mutable_ready()
                .build(),
            glib::ParamSpecBoolean::builder("tls-verify")
                .nick("TLS verify")
                .blurb(
                    "Verify the sender's certificate chain against ca-file or the system's \
                         CAs, and its name (server-name) or address. Left unset, with no \
                         ca-file, server-name or certificate-fingerprint either, the sender is \
                         trusted on first use (known-hosts). false: no check at all (testing \
                         only)",
                )
                .default_value(DEFAULT_TLS_VERIFY)
                .mutable_ready()
                .build(),
            glib::ParamSpecString::builder("known-hosts")
                .nick("Known hosts")
                .blurb(
                    "File of senders trusted on first use (host:port and SHA-256 \
                         fingerprint, as SSH's known_hosts): a sender not in it is trusted \
                         and added with a warning, one whose certificate changed is refused. \
                         Used only when tls-verify, ca-file, server-name and \
                         certificate-fingerprint are all unset. NULL: \
                         $XDG_DATA_HOME/quicnalu/known_hosts",
                )
                .mutable_ready()
                .build(),
            glib::ParamSpecUInt::builder("latency")
                .nick("Latency")
                .blurb(
                    "Latency in milliseconds: reported to the pipeline (LATENCY query), \
                         and asked of the sender as this receiver's latency budget (unless \
                         its latency-budget fixes one); a group still incomplete while a \
                         later keyframe has waited this long is skipped (DISCONT, keyframe \
                         request)",
                )
                .default_value(DEFAULT_LATENCY_MS)
                .mutable_ready()
                .build(),
            glib::ParamSpecUInt::builder("timeout")
                .nick("Timeout")
                .blurb(
                    "Milliseconds to wait for the QUIC handshake, and, once connected, \
                         for any packet from the sender (at least 1 s), before the \
                         connection counts as failed (first connection) or lost",
                )
                .minimum(1)
                .default_value(DEFAULT_TIMEOUT_MS)
                .mutable_ready()
                .build(),
            properties::congestion_control(),
            glib::ParamSpecBoolean::builder("reconnect")
                .nick("Reconnect")
                .blurb(
                    "Connect again after losing the connection (timeout, sender \
                         stopped) and resume at the next keyframe; false: fail instead. \
                         The first connection is never retried",
                )
                .default_value(DEFAULT_RECONNECT)
                .mutable_ready()
                .build(),
            glib::ParamSpecUInt::builder("reconnect-delay-max")
                .nick("Reconnect delay max")
                .blurb(
                    "Milliseconds: reconnect attempts start at once and each waits twice \
                         as long as the last for an answer (from 100 ms), up to this",
                )
                .minimum(100)
                .default_value(DEFAULT_RECONNECT_DELAY_MAX_MS)
                .mutable_ready()
                .build(),
            glib::ParamSpecUInt::builder("reconnect-timeout")
                .nick("Reconnect timeout")
                .blurb(
                    "Milliseconds without a connection, from when the loss is noticed, \
                         after which reconnecting gives up with an error; checked after each \
                         failed attempt (0: never give up)",
                )
                .default_value(DEFAULT_RECONNECT_TIMEOUT_MS)
                .mutable_ready()
                .build(),
            glib::ParamSpecString::builder("paths")
                .nick("Paths")
                .blurb(
                    "More routes to the same quicnalusink, received at once with \
                         address:port: comma-separated HOST:PORT[@LOCAL-ADDRESS], where \
                         LOCAL-ADDRESS binds that route to a local interface address (a \
                         second modem). Each access unit is output once, from whichever \
                         route brings it first. Unset: one route. Not with mode=listener, \
                         which makes a route of each address a calling sink knocks from",
                )
                .mutable_ready()
                .build(),
            glib::ParamSpecEnum::builder_with_default("path-mode", PathMode::default())
                .nick("Path mode")
                .blurb(
                    "With several routes (paths, or a listener called from several \
                         addresses): redundant sends every access unit over every route, so \
                         losing one loses nothing; bonded spreads each over the routes by \
                         their capacity, so two slow links carry a stream neither could",
                )
                .mutable_ready()
                .build(),
            glib::ParamSpecString::builder("token")
                .nick("Token")
                .blurb(
                    "Access token presented to the sender in HELLO; the sender's \
                         application may admit or refuse receivers by it",
                )
                .mutable_ready()
                .build(),
            glib::ParamSpecString::builder("certificate-fingerprint")
                .nick("Certificate fingerprint")
                .blurb(
                    "SHA-256 of the sender's leaf certificate (64 hex digits, ':' \
                         optional; quicnalusink's certificate-fingerprint): trust exactly \
                         that certificate instead of a CA (ca-file and tls-verify then do \
                         not apply). NULL: verify against the CA",
                )
                .mutable_ready()
                .build(),
            glib::ParamSpecUInt::builder("max-frame-size")
                .nick("Maximum frame size")
                .blurb(
                    "Bytes: a sender announcing a larger access unit is closed with \
                         PROTOCOL_VIOLATION and the element fails",
                )
                .minimum(1024)
                .default_value(DEFAULT_MAX_FRAME_SIZE as u32)
                .mutable_ready()
                .build(),
            glib::ParamSpecUInt::builder("max-command-size")
                .nick("Maximum command size")
                .blurb(
                    "Bytes: a sender sending a longer command (or claiming to) is closed \
                         with PROTOCOL_VIOLATION and the element fails",
                )
                .minimum(1024)
                .default_value(DEFAULT_MAX_COMMAND_SIZE as u32)
                .mutable_ready()
                .build(),
        ];
        specs.extend(properties::capture());
        specs.extend(properties::stats("quicnalusrc"));
        specs.extend(properties::moq(
            "subscribe to the broadcast there instead of connecting to a quicnalusink; \
                 the TLS properties apply to the relay, and keyframe requests and commands \
                 are not carried",
        ));
        specs
    });
    PROPERTIES.as_ref()
}

impl QuicNaluSrc {
    pub(super) fn set_setting(&self, value: &glib::Value, pspec: &glib::ParamSpec) {
        if pspec.name() == "bind-address" {
            let address = value
                .get::<Option<String>>()
                .expect("type checked upstream")
                .filter(|a| !a.is_empty());
            self.settings.lock().unwrap().bind_address = address.clone();
            // Not under the settings lock: moving a running receiver binds a socket.
            return self.move_to(address.as_deref());
        }
        let mut s = self.settings.lock().unwrap();
        match pspec.name() {
            "mode" => s.mode = value.get().expect("type checked upstream"),
            "address" => {
                s.address = value
                    .get::<Option<String>>()
                    .expect("type checked upstream")
                    .filter(|a| !a.is_empty())
            }
            "port" => s.port = value.get().expect("type checked upstream"),
            "server-name" => s.server_name = value.get().expect("type checked upstream"),
            "ca-file" => s.ca_file = value.get().expect("type checked upstream"),
            "tls-verify" => s.tls_verify = Some(value.get().expect("type checked upstream")),
            "known-hosts" => s.known_hosts = value.get().expect("type checked upstream"),
            "latency" => s.latency_ms = value.get().expect("type checked upstream"),
            "timeout" => s.timeout_ms = value.get().expect("type checked upstream"),
            "congestion-control" => {
                s.congestion_control = value.get().expect("type checked upstream")
            }
            "reconnect" => s.reconnect = value.get().expect("type checked upstream"),
            "reconnect-delay-max" => {
                s.reconnect_delay_max_ms = value.get().expect("type checked upstream")
            }
            "reconnect-timeout" => {
                s.reconnect_timeout_ms = value.get().expect("type checked upstream")
            }
            "paths" => s.paths = value.get().expect("type checked upstream"),
            "path-mode" => s.path_mode = value.get().expect("type checked upstream"),
            "token" => s.token = value.get().expect("type checked upstream"),
            "certificate-fingerprint" => {
                s.certificate_fingerprint = value.get().expect("type checked upstream")
            }
            "max-frame-size" => s.max_frame_size = value.get().expect("type checked upstream"),
            "max-command-size" => s.max_command_size = value.get().expect("type checked upstream"),
            "qlog-dir" => s.qlog_dir = value.get().expect("type checked upstream"),
            "keylog-file" => s.keylog_file = value.get().expect("type checked upstream"),
            "stats-interval" => s.stats_interval_ms = value.get().expect("type checked upstream"),
            "moq-url" => s.moq_url = value.get().expect("type checked upstream"),
            "moq-broadcast" => {
                s.moq_broadcast = value
                    .get::<Option<String>>()
                    .expect("type checked upstream")
                    .unwrap_or_default()
            }
            name => unreachable!("property {name}"),
        }
    }

    pub(super) fn setting(&self, pspec: &glib::ParamSpec) -> glib::Value {
        let s = self.settings.lock().unwrap();
        match pspec.name() {
            "mode" => s.mode.to_value(),
            "address" => s.address().to_value(),
            "port" => s.port.to_value(),
            "bind-address" => s.bind_address.to_value(),
            "bound-port" => match &*self.state.lock().unwrap() {
                State::Started {
                    source: Source::Direct(client),
                } => u32::from(client.local_addr().port()),
                _ => 0,
            }
            .to_value(),
            "server-name" => s.server_name.to_value(),
            "ca-file" => s.ca_file.to_value(),
            "tls-verify" => s.tls_verify.unwrap_or(DEFAULT_TLS_VERIFY).to_value(),
            "known-hosts" => s.known_hosts.to_value(),
            "latency" => s.latency_ms.to_value(),
            "timeout" => s.timeout_ms.to_value(),
            "congestion-control" => s.congestion_control.to_value(),
            "reconnect" => s.reconnect.to_value(),
            "reconnect-delay-max" => s.reconnect_delay_max_ms.to_value(),
            "reconnect-timeout" => s.reconnect_timeout_ms.to_value(),
            "paths" => s.paths.to_value(),
            "path-mode" => s.path_mode.to_value(),
            "token" => s.token.to_value(),
            "certificate-fingerprint" => s.certificate_fingerprint.to_value(),
            "max-frame-size" => s.max_frame_size.to_value(),
            "max-command-size" => s.max_command_size.to_value(),
            "qlog-dir" => s.qlog_dir.to_value(),
            "keylog-file" => s.keylog_file.to_value(),
            "stats" => match &*self.state.lock().unwrap() {
                State::Started {
                    source: Source::Direct(client),
                } => client.stats(),
                _ => ClientStats::default(),
            }
            .to_structure()
            .to_value(),
            "stats-interval" => s.stats_interval_ms.to_value(),
            "moq-url" => s.moq_url.to_value(),
            "moq-broadcast" => s.moq_broadcast.to_value(),
            name => unreachable!("property {name}"),
        }
    }
}
