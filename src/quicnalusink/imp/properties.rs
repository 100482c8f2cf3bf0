//! The sink's properties: their specs, and setting and reading them.

use super::*;
use crate::element::properties;
use crate::element::stats::Snapshot;
use crate::stats::SenderStats;

/// Every property, in the order gst-inspect-1.0 shows them.
pub(super) fn specs() -> &'static [glib::ParamSpec] {
    static PROPERTIES: Lazy<Vec<glib::ParamSpec>> = Lazy::new(|| {
        let mut specs = vec![
            properties::mode(
                DEFAULT_MODE,
                "listener: receivers connect to address:port. caller: call the \
                     quicnalusrc listening (mode=listener) at address:port, as a camera \
                     behind NAT pushes to a studio; it connects back, and while no receiver \
                     is connected the sink calls again, at once then backing off to every 2 s",
            ),
            glib::ParamSpecString::builder("address")
                .nick("Address")
                .blurb(
                    "Local address to listen on; with mode=caller, the address or host \
                         name of the listening quicnalusrc",
                )
                .default_value(Some(DEFAULT_ADDRESS))
                .mutable_ready()
                .build(),
            glib::ParamSpecUInt::builder("port")
                .nick("Port")
                .blurb(
                    "UDP port to listen on (0 picks a free port; read bound-port); with \
                         mode=caller, the listening quicnalusrc's port",
                )
                .maximum(u16::MAX.into())
                .default_value(DEFAULT_PORT)
                .mutable_ready()
                .build(),
            glib::ParamSpecString::builder("paths")
                .nick("Paths")
                .blurb(
                    "With mode=caller: more local addresses to call from, besides the main \
                         socket: comma-separated LOCAL-ADDRESS[:PORT] (a second modem's \
                         address; port 0 or none picks a free one). The sink knocks from \
                         each, and the listening quicnalusrc connects back over each as \
                         routes of one receiver. Unset: one socket. Only with mode=caller",
                )
                .mutable_ready()
                .build(),
            glib::ParamSpecUInt::builder("bound-port")
                .nick("Bound port")
                .blurb("The local UDP port, once started")
                .maximum(u16::MAX.into())
                .read_only()
                .build(),
            glib::ParamSpecString::builder("cert-file")
                .nick("Certificate file")
                .blurb(
                    "PEM file with the server's certificate chain, with key-file. Neither \
                         set (and self-signed off): the sender's own self-signed certificate, \
                         made once and kept in $XDG_DATA_HOME/quicnalu/sender.pem, which \
                         receivers trust on first use",
                )
                .mutable_ready()
                .build(),
            glib::ParamSpecString::builder("key-file")
                .nick("Key file")
                .blurb("PEM file with the certificate's private key (with cert-file)")
                .mutable_ready()
                .build(),
            glib::ParamSpecBoolean::builder("self-signed")
                .nick("Self-signed")
                .blurb(
                    "Make a throw-away self-signed certificate at each start instead of \
                         cert-file/key-file or the kept one; receivers pin its \
                         certificate-fingerprint (posted at start)",
                )
                .default_value(DEFAULT_SELF_SIGNED)
                .mutable_ready()
                .build(),
            glib::ParamSpecString::builder("certificate-fingerprint")
                .nick("Certificate fingerprint")
                .blurb(
                    "SHA-256 of the certificate receivers are shown, once started \
                         (for quicnalusrc's certificate-fingerprint)",
                )
                .read_only()
                .build(),
            glib::ParamSpecString::builder("token")
                .nick("Token")
                .blurb(
                    "A receiver must present this token (quicnalusrc's token) or it is \
                         refused with REJECTED (0x4) before any media (NULL: any receiver)",
                )
                .mutable_ready()
                .build(),
            glib::ParamSpecBoolean::builder("address-validation")
                .nick("Address validation")
                .blurb(
                    "Answer a new receiver with a QUIC Retry first, so that a spoofed \
                         source address gets no connection and no amplified traffic \
                         (costs one round trip on connect)",
                )
                .default_value(DEFAULT_ADDRESS_VALIDATION)
                .mutable_ready()
                .build(),
            glib::ParamSpecUInt::builder("max-connections")
                .nick("Maximum connections")
                .blurb(
                    "QUIC connections held at once, in any state; a new one beyond it is \
                         ignored until there is room (0: no limit)",
                )
                .default_value(DEFAULT_MAX_CONNECTIONS)
                .mutable_ready()
                .build(),
            glib::ParamSpecUInt::builder("max-handshakes")
                .nick("Maximum handshakes")
                .blurb(
                    "Connections still in their handshake; a new one beyond it is \
                         ignored until there is room (0: no limit)",
                )
                .default_value(DEFAULT_MAX_HANDSHAKES)
                .mutable_ready()
                .build(),
            glib::ParamSpecUInt::builder("max-frame-size")
                .nick("Maximum frame size")
                .blurb(
                    "Bytes: a larger access unit is an error (receivers refuse frames \
                         above their own max-frame-size)",
                )
                .minimum(1024)
                .default_value(DEFAULT_MAX_FRAME_SIZE as u32)
                .mutable_ready()
                .build(),
            glib::ParamSpecUInt::builder("max-command-size")
                .nick("Maximum command size")
                .blurb(
                    "Bytes: a receiver sending a longer command (or claiming to) is \
                         closed with PROTOCOL_VIOLATION",
                )
                .minimum(1024)
                .default_value(DEFAULT_MAX_COMMAND_SIZE as u32)
                .mutable_ready()
                .build(),
            gst::ParamSpecFraction::builder("framerate")
                .nick("Framerate")
                .blurb(
                    "Pacing for buffers without timestamps when sync=true \
                         (0/1: the caps' framerate, or send them as they come if none)",
                )
                .minimum(gst::Fraction::from_integer(0))
                .maximum(gst::Fraction::from_integer(1000))
                .default_value(DEFAULT_FRAMERATE)
                .mutable_ready()
                .build(),
            glib::ParamSpecBoolean::builder("wait-for-connection")
                .nick("Wait for connection")
                .blurb("Hold the first buffer (and preroll) until a receiver has connected")
                .default_value(DEFAULT_WAIT_FOR_CONNECTION)
                .mutable_ready()
                .build(),
            glib::ParamSpecUInt::builder("eos-timeout")
                .nick("EOS timeout")
                .blurb(
                    "Milliseconds EOS waits for receivers to get every queued frame \
                         before the sink posts EOS anyway",
                )
                .default_value(DEFAULT_EOS_TIMEOUT_MS)
                .mutable_ready()
                .build(),
            glib::ParamSpecUInt::builder("keyframe-request-interval")
                .nick("Keyframe request interval")
                .blurb(
                    "Shortest time in ms between two keyframes asked of upstream \
                         (GstForceKeyUnit) for receivers; requests in between are merged",
                )
                .default_value(DEFAULT_KEYFRAME_REQUEST_INTERVAL_MS)
                .mutable_ready()
                .build(),
            glib::ParamSpecInt::builder("latency-budget")
                .nick("Latency budget")
                .blurb(
                    "Milliseconds from queueing a frame to its arrival at a receiver: a \
                         frame still unsent a round trip before that has its group stream \
                         reset (GROUP_EXPIRED), and that receiver resumes at the next \
                         keyframe; the newest group goes first. -1: each receiver's own \
                         latency (quicnalusrc's latency, 200 ms when it says none); 0: never \
                         drop",
                )
                .minimum(-1)
                .default_value(DEFAULT_LATENCY_BUDGET_MS)
                .mutable_ready()
                .build(),
            properties::congestion_control(),
            glib::ParamSpecEnum::builder_with_default("adapt-bitrate", DEFAULT_ADAPT_BITRATE)
                .nick("Adapt bitrate")
                .blurb(
                    "Steer the bitrate (kbit/s) of the nearest upstream encoder (an element \
                         with a 'bitrate' property: x265enc, x264enc, NVENC, VA, QSV ...) to \
                         what the slowest receiver's path carries, within min-bitrate and \
                         max-bitrate; auto: if there is one, true: and warn if there is not",
                )
                .mutable_ready()
                .build(),
            glib::ParamSpecUInt::builder("min-bitrate")
                .nick("Minimum bitrate")
                .blurb("kbit/s: adapt-bitrate never sets the encoder below this")
                .minimum(1)
                .default_value(DEFAULT_MIN_BITRATE_KBPS)
                .mutable_ready()
                .build(),
            glib::ParamSpecUInt::builder("max-bitrate")
                .nick("Maximum bitrate")
                .blurb(
                    "kbit/s: adapt-bitrate never sets the encoder above this (0: the \
                         encoder's own bitrate when adaptation starts)",
                )
                .default_value(DEFAULT_MAX_BITRATE_KBPS)
                .mutable_ready()
                .build(),
            glib::ParamSpecUInt::builder("max-receivers")
                .nick("Maximum receivers")
                .blurb(
                    "Receivers served at once; one more is refused with SERVER_FULL \
                         (0: no limit)",
                )
                .default_value(DEFAULT_MAX_RECEIVERS)
                .mutable_ready()
                .build(),
            properties::join_mode(),
            glib::ParamSpecBoolean::builder("forward-events")
                .nick("Forward events")
                .blurb(
                    "Send serialized custom downstream events (except GstForceKeyUnit) to \
                         every receiver in stream order; quicnalusrc pushes them downstream \
                         at the same point",
                )
                .default_value(DEFAULT_FORWARD_EVENTS)
                .mutable_ready()
                .build(),
        ];
        specs.extend(properties::capture());
        specs.extend(properties::stats("quicnalusink"));
        specs.extend(properties::moq(
            "also publish the stream there as a hang broadcast, for moq-dev's players \
                 and quicnalusrc moq-url=; keyframe requests and commands stay on direct \
                 connections",
        ));
        specs.push(
            glib::ParamSpecString::builder("moq-certificate-fingerprint")
                .nick("MoQ relay certificate fingerprint")
                .blurb(
                    "SHA-256 of the relay's certificate, hex (NULL: trust it on first \
                         use and remember it in the user's known_hosts, as quicnalusrc does)",
                )
                .mutable_ready()
                .build(),
        );
        specs
    });
    PROPERTIES.as_ref()
}

impl QuicNaluSink {
    pub(super) fn set_setting(&self, value: &glib::Value, pspec: &glib::ParamSpec) {
        let mut s = self.settings.lock().unwrap();
        match pspec.name() {
            "mode" => s.mode = value.get().expect("type checked upstream"),
            "paths" => s.paths = value.get().expect("type checked upstream"),
            "address" => {
                s.address = value
                    .get::<Option<String>>()
                    .expect("type checked upstream")
                    .unwrap_or_else(|| DEFAULT_ADDRESS.into())
            }
            "port" => s.port = value.get().expect("type checked upstream"),
            "cert-file" => s.cert_file = value.get().expect("type checked upstream"),
            "key-file" => s.key_file = value.get().expect("type checked upstream"),
            "framerate" => s.framerate = value.get().expect("type checked upstream"),
            "wait-for-connection" => {
                s.wait_for_connection = value.get().expect("type checked upstream")
            }
            "eos-timeout" => s.eos_timeout_ms = value.get().expect("type checked upstream"),
            "keyframe-request-interval" => {
                s.keyframe_request_interval_ms = value.get().expect("type checked upstream")
            }
            "latency-budget" => s.latency_budget_ms = value.get().expect("type checked upstream"),
            "congestion-control" => {
                s.congestion_control = value.get().expect("type checked upstream")
            }
            "adapt-bitrate" => s.adapt_bitrate = value.get().expect("type checked upstream"),
            "min-bitrate" => s.min_bitrate_kbps = value.get().expect("type checked upstream"),
            "max-bitrate" => s.max_bitrate_kbps = value.get().expect("type checked upstream"),
            "max-receivers" => s.max_receivers = value.get().expect("type checked upstream"),
            "join-mode" => s.join_mode = value.get().expect("type checked upstream"),
            "forward-events" => s.forward_events = value.get().expect("type checked upstream"),
            "self-signed" => s.self_signed = value.get().expect("type checked upstream"),
            "token" => s.token = value.get().expect("type checked upstream"),
            "address-validation" => {
                s.address_validation = value.get().expect("type checked upstream")
            }
            "max-connections" => s.max_connections = value.get().expect("type checked upstream"),
            "max-handshakes" => s.max_handshakes = value.get().expect("type checked upstream"),
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
            "moq-certificate-fingerprint" => {
                s.moq_fingerprint = value.get().expect("type checked upstream")
            }
            name => unreachable!("property {name}"),
        }
    }

    pub(super) fn setting(&self, pspec: &glib::ParamSpec) -> glib::Value {
        let s = self.settings.lock().unwrap();
        match pspec.name() {
            "mode" => s.mode.to_value(),
            "address" => s.address.to_value(),
            "port" => s.port.to_value(),
            "paths" => s.paths.to_value(),
            "bound-port" => match *self.state.lock().unwrap() {
                State::Started { bound_port, .. } => u32::from(bound_port).to_value(),
                State::Stopped => 0u32.to_value(),
            },
            "cert-file" => s.cert_file.to_value(),
            "key-file" => s.key_file.to_value(),
            "framerate" => s.framerate.to_value(),
            "wait-for-connection" => s.wait_for_connection.to_value(),
            "eos-timeout" => s.eos_timeout_ms.to_value(),
            "keyframe-request-interval" => s.keyframe_request_interval_ms.to_value(),
            "latency-budget" => s.latency_budget_ms.to_value(),
            "congestion-control" => s.congestion_control.to_value(),
            "adapt-bitrate" => s.adapt_bitrate.to_value(),
            "min-bitrate" => s.min_bitrate_kbps.to_value(),
            "max-bitrate" => s.max_bitrate_kbps.to_value(),
            "max-receivers" => s.max_receivers.to_value(),
            "join-mode" => s.join_mode.to_value(),
            "forward-events" => s.forward_events.to_value(),
            "self-signed" => s.self_signed.to_value(),
            "certificate-fingerprint" => match &*self.state.lock().unwrap() {
                State::Started { server, .. } => Some(server.fingerprint().to_string()),
                State::Stopped => None,
            }
            .to_value(),
            "token" => s.token.to_value(),
            "address-validation" => s.address_validation.to_value(),
            "max-connections" => s.max_connections.to_value(),
            "max-handshakes" => s.max_handshakes.to_value(),
            "max-frame-size" => s.max_frame_size.to_value(),
            "max-command-size" => s.max_command_size.to_value(),
            "qlog-dir" => s.qlog_dir.to_value(),
            "keylog-file" => s.keylog_file.to_value(),
            "stats" => match &*self.state.lock().unwrap() {
                State::Started { server, .. } => server.stats(),
                State::Stopped => SenderStats::default(),
            }
            .to_structure()
            .to_value(),
            "stats-interval" => s.stats_interval_ms.to_value(),
            "moq-url" => s.moq_url.to_value(),
            "moq-broadcast" => s.moq_broadcast.to_value(),
            "moq-certificate-fingerprint" => s.moq_fingerprint.to_value(),
            name => unreachable!("property {name}"),
        }
    }
}
