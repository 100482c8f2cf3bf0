use super::adapt::Adaptation;
use crate::element::errors::{self, Direction};
use crate::element::log;
use crate::element::properties::{self, CongestionControl, JoinMode, Mode};
use crate::element::stats::{message_poster, Snapshot};
use crate::element::uri;
use crate::media::gather::Gatherer;
use crate::media::h265::{self, AuInfo};
use crate::net::capture::Capture;
use crate::net::config::Identity;
use crate::net::known_hosts::host_key;
use crate::net::known_hosts::user_file;
use crate::net::known_hosts::KnownHosts;
use crate::net::link::Interrupted;
use crate::net::moq::{Picture, Publisher};
use crate::net::server::Server;
use crate::net::server::ServerSettings;
use crate::net::stats::Reporter;
use crate::net::stats::SenderStats;
use crate::net::tls::Fingerprint;
use crate::net::tls::SelfSigned;
use crate::protocol::{DEFAULT_MAX_COMMAND_SIZE, DEFAULT_MAX_FRAME_SIZE};
use crate::sender::budget;
use crate::sender::Admission;
use crate::sender::Estimate;
use crate::sender::MediaFrame;
use crate::sender::ReceiverEvent;
use gst::glib;
use gst::prelude::*;
use gst::subclass::prelude::*;
use gst_base::prelude::*;
use gst_base::subclass::prelude::*;
use once_cell::sync::Lazy;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, ToSocketAddrs};
use std::sync::{Arc, Mutex};
use std::time::Duration;

static CAT: Lazy<gst::DebugCategory> = Lazy::new(|| {
    gst::DebugCategory::new(
        "quicnalusink",
        gst::DebugColorFlags::empty(),
        Some("H.265 over QUIC sender"),
    )
});

const DEFAULT_MODE: Mode = Mode::Listener;
const DEFAULT_ADDRESS: &str = "0.0.0.0";
const DEFAULT_PORT: u32 = 4443;
const DEFAULT_FRAMERATE: gst::Fraction = gst::Fraction::from_integer(0);
const DEFAULT_WAIT_FOR_CONNECTION: bool = true;
const DEFAULT_EOS_TIMEOUT_MS: u32 = 5000;
const DEFAULT_KEYFRAME_REQUEST_INTERVAL_MS: u32 = 250;
/// -1: each receiver's own latency (HELLO), as SRT negotiates it; live by default.
const DEFAULT_LATENCY_BUDGET_MS: i32 = -1;
const DEFAULT_ADAPT_BITRATE: bool = false;
const DEFAULT_MIN_BITRATE_KBPS: u32 = 300;
/// 0: the encoder's own bitrate when adaptation starts.
const DEFAULT_MAX_BITRATE_KBPS: u32 = 0;
/// 0: no limit.
const DEFAULT_MAX_RECEIVERS: u32 = 0;
const DEFAULT_FORWARD_EVENTS: bool = true;
const DEFAULT_SELF_SIGNED: bool = false;
const DEFAULT_ADDRESS_VALIDATION: bool = true;
/// Connections in any state; far above what one sender thread serves (see BENCHMARKS.md).
const DEFAULT_MAX_CONNECTIONS: u32 = 1024;
/// Handshakes in progress hold state before anyone is admitted. Above the 384 receivers
/// the fan-out bench starts at once, which must not wait for retransmitted Initials.
const DEFAULT_MAX_HANDSHAKES: u32 = 512;
/// How long the relay may take to answer, and stay silent once connected.
const MOQ_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, Clone)]
struct Settings {
    mode: Mode,
    address: String,
    port: u32,
    cert_file: Option<String>,
    key_file: Option<String>,
    framerate: gst::Fraction,
    wait_for_connection: bool,
    eos_timeout_ms: u32,
    keyframe_request_interval_ms: u32,
    latency_budget_ms: i32,
    congestion_control: CongestionControl,
    adapt_bitrate: bool,
    min_bitrate_kbps: u32,
    max_bitrate_kbps: u32,
    max_receivers: u32,
    join_mode: JoinMode,
    forward_events: bool,
    self_signed: bool,
    token: Option<String>,
    address_validation: bool,
    max_connections: u32,
    max_handshakes: u32,
    max_frame_size: u32,
    max_command_size: u32,
    qlog_dir: Option<String>,
    keylog_file: Option<String>,
    stats_interval_ms: u32,
    moq_url: Option<String>,
    moq_broadcast: String,
    moq_fingerprint: Option<String>,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            mode: DEFAULT_MODE,
            address: DEFAULT_ADDRESS.into(),
            port: DEFAULT_PORT,
            cert_file: None,
            key_file: None,
            framerate: DEFAULT_FRAMERATE,
            wait_for_connection: DEFAULT_WAIT_FOR_CONNECTION,
            eos_timeout_ms: DEFAULT_EOS_TIMEOUT_MS,
            keyframe_request_interval_ms: DEFAULT_KEYFRAME_REQUEST_INTERVAL_MS,
            latency_budget_ms: DEFAULT_LATENCY_BUDGET_MS,
            congestion_control: CongestionControl::default(),
            adapt_bitrate: DEFAULT_ADAPT_BITRATE,
            min_bitrate_kbps: DEFAULT_MIN_BITRATE_KBPS,
            max_bitrate_kbps: DEFAULT_MAX_BITRATE_KBPS,
            max_receivers: DEFAULT_MAX_RECEIVERS,
            join_mode: JoinMode::default(),
            forward_events: DEFAULT_FORWARD_EVENTS,
            self_signed: DEFAULT_SELF_SIGNED,
            token: None,
            address_validation: DEFAULT_ADDRESS_VALIDATION,
            max_connections: DEFAULT_MAX_CONNECTIONS,
            max_handshakes: DEFAULT_MAX_HANDSHAKES,
            max_frame_size: DEFAULT_MAX_FRAME_SIZE as u32,
            max_command_size: DEFAULT_MAX_COMMAND_SIZE as u32,
            qlog_dir: None,
            keylog_file: None,
            stats_interval_ms: 0,
            moq_url: None,
            moq_broadcast: properties::DEFAULT_MOQ_BROADCAST.into(),
            moq_fingerprint: None,
        }
    }
}

#[derive(Default)]
enum State {
    #[default]
    Stopped,
    Started {
        server: Arc<Server>,
        bound_port: u16,
        /// With moq-url: the broadcast on the relay.
        publisher: Option<Arc<Publisher>>,
    },
}

/// What only the streaming thread touches.
#[derive(Default)]
struct Stream {
    nal_aligned: bool,
    /// NAL-aligned input: the access unit being gathered.
    gatherer: Gatherer<gst::Buffer>,
    /// The last buffer prepare() inspected (its address) and what it holds, for render().
    inspected: Option<(usize, AuInfo)>,
    /// Waiting for the first IRAP: a receiver cannot decode anything before it.
    seen_keyframe: bool,
    /// Access units sent so far: an untimestamped one is paced as frame number `sent`.
    sent: u64,
    /// Temporal sub-layers, from the last SPS; None before one (any of H.265's 7 then).
    sub_layers: Option<u8>,
    /// The caps' framerate, the pacing fallback when the property is 0/1.
    caps_framerate: Option<gst::Fraction>,
    connected_once: bool,
}

mod relay;

#[derive(Default)]
pub struct QuicNaluSink {
    settings: Mutex<Settings>,
    state: Mutex<State>,
    stream: Mutex<Stream>,
    /// Set while started with `adapt-bitrate`; used from GStreamer's async pool.
    adaptation: Mutex<Option<Adaptation>>,
}

#[glib::object_subclass]
impl ObjectSubclass for QuicNaluSink {
    const NAME: &'static str = "GstQuicNaluSink";
    type Type = super::QuicNaluSink;
    type ParentType = gst_base::BaseSink;
    type Interfaces = (gst::URIHandler,);
}

impl ObjectImpl for QuicNaluSink {
    fn properties() -> &'static [glib::ParamSpec] {
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
                glib::ParamSpecBoolean::builder("adapt-bitrate")
                    .nick("Adapt bitrate")
                    .blurb(
                        "Steer the bitrate (kbit/s) of the nearest upstream element with a \
                         'bitrate' property (x265enc, ...) to what the slowest receiver's \
                         path carries, within min-bitrate and max-bitrate",
                    )
                    .default_value(DEFAULT_ADAPT_BITRATE)
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

    fn set_property(&self, _id: usize, value: &glib::Value, pspec: &glib::ParamSpec) {
        let mut s = self.settings.lock().unwrap();
        match pspec.name() {
            "mode" => s.mode = value.get().expect("type checked upstream"),
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

    fn property(&self, _id: usize, pspec: &glib::ParamSpec) -> glib::Value {
        let s = self.settings.lock().unwrap();
        match pspec.name() {
            "mode" => s.mode.to_value(),
            "address" => s.address.to_value(),
            "port" => s.port.to_value(),
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

    fn signals() -> &'static [glib::subclass::Signal] {
        static SIGNALS: Lazy<Vec<glib::subclass::Signal>> = Lazy::new(|| {
            use glib::subclass::Signal;
            vec![
                // A receiver said HELLO: return false to refuse it (closed with REJECTED).
                // Args: receiver id, its address, the token it presented ("" if none).
                // Emitted from the networking thread: handlers must return quickly.
                Signal::builder("receiver-connecting")
                    .param_types([
                        u64::static_type(),
                        String::static_type(),
                        String::static_type(),
                    ])
                    .return_type::<bool>()
                    .run_last()
                    .class_handler(|_| Some(true.to_value()))
                    .accumulator(|_, _, value| {
                        // The first handler that refuses decides.
                        if value.get::<bool>().unwrap_or(true) {
                            std::ops::ControlFlow::Continue(value.clone())
                        } else {
                            std::ops::ControlFlow::Break(value.clone())
                        }
                    })
                    .build(),
                // Args: receiver id, address. Media flows to it from now on.
                Signal::builder("receiver-connected")
                    .param_types([u64::static_type(), String::static_type()])
                    .build(),
                // Args: receiver id, address, why.
                Signal::builder("receiver-disconnected")
                    .param_types([
                        u64::static_type(),
                        String::static_type(),
                        String::static_type(),
                    ])
                    .build(),
                // A receiver sent a command (quicnalusrc's send-command). Args: receiver
                // id, the command.
                Signal::builder("command-received")
                    .param_types([u64::static_type(), gst::Structure::static_type()])
                    .build(),
                // Sends a command to receiver `id` (0: every receiver) at once; false if
                // no such receiver is served. For stream order, send a custom downstream
                // event through the pipeline instead (forward-events).
                Signal::builder("send-command")
                    .param_types([u64::static_type(), gst::Structure::static_type()])
                    .return_type::<bool>()
                    .action()
                    .class_handler(|args| {
                        let sent = (|| {
                            let obj = args[0].get::<super::QuicNaluSink>().ok()?;
                            let id = args[1].get::<u64>().ok()?;
                            let command = args[2].get::<gst::Structure>().ok()?;
                            let server = obj.imp().server().ok()?;
                            let to = (id != 0).then_some(id);
                            Some(server.send_command(to, command.to_string()))
                        })();
                        Some(sent.unwrap_or(false).to_value())
                    })
                    .build(),
            ]
        });
        SIGNALS.as_ref()
    }

    fn constructed(&self) {
        self.parent_constructed();
        self.obj().set_sync(true);
    }
}

impl GstObjectImpl for QuicNaluSink {}

impl URIHandlerImpl for QuicNaluSink {
    const URI_TYPE: gst::URIType = gst::URIType::Sink;

    fn protocols() -> &'static [&'static str] {
        &[uri::SCHEME]
    }

    fn uri(&self) -> Option<String> {
        Some(uri::of(self.obj().upcast_ref()))
    }

    fn set_uri(&self, uri: &str) -> Result<(), glib::Error> {
        uri::apply(self.obj().upcast_ref(), uri)
    }
}

impl ElementImpl for QuicNaluSink {
    fn metadata() -> Option<&'static gst::subclass::ElementMetadata> {
        static METADATA: Lazy<gst::subclass::ElementMetadata> = Lazy::new(|| {
            gst::subclass::ElementMetadata::new(
                "QUIC H.265 sink",
                "Sink/Network",
                "Serves a parsed H.265 stream over QUIC to every receiver that connects",
                "quicnalu developers",
            )
        });
        Some(&*METADATA)
    }

    fn pad_templates() -> &'static [gst::PadTemplate] {
        static TEMPLATES: Lazy<Vec<gst::PadTemplate>> = Lazy::new(|| {
            let caps = gst::Caps::builder("video/x-h265")
                .field("stream-format", "byte-stream")
                .field("alignment", gst::List::new(["au", "nal"]))
                .build();
            vec![gst::PadTemplate::new(
                "sink",
                gst::PadDirection::Sink,
                gst::PadPresence::Always,
                &caps,
            )
            .expect("valid template")]
        });
        TEMPLATES.as_ref()
    }
}

impl QuicNaluSink {
    fn server(&self) -> Result<Arc<Server>, gst::FlowError> {
        match &*self.state.lock().unwrap() {
            State::Started { server, .. } => Ok(server.clone()),
            State::Stopped => Err(gst::FlowError::Flushing),
        }
    }

    /// Runs a wait on the network from the streaming thread. `unlock()` ends it; when that
    /// was a PLAYING -> PAUSED change rather than a flush, BaseSink's `wait_preroll()` holds
    /// us until PLAYING again and the wait resumes, so no buffer is dropped.
    fn wait_network<T>(
        &self,
        mut wait: impl FnMut() -> Result<T, Interrupted>,
    ) -> Result<T, gst::FlowError> {
        loop {
            match wait() {
                Ok(v) => return Ok(v),
                Err(Interrupted::Flushing) => {
                    self.obj().wait_preroll()?;
                }
                Err(Interrupted::Failed(e)) => {
                    self.post_error_message(errors::message(&e, Direction::Send, true));
                    return Err(gst::FlowError::Error);
                }
            }
        }
    }

    /// Sends one whole access unit; `buffer` carries its timestamps and flags.
    fn send_au(
        &self,
        server: &Server,
        buffer: &gst::Buffer,
        data: Box<dyn AsRef<[u8]> + Send + Sync>,
        info: AuInfo,
    ) -> Result<gst::FlowSuccess, gst::FlowError> {
        let len = data.as_ref().as_ref().len() as u64;
        let max = self.settings.lock().unwrap().max_frame_size;
        if len > u64::from(max) {
            gst::element_imp_error!(
                self,
                gst::StreamError::Format,
                [
                    "Access unit of {} bytes exceeds the {} byte frame limit (max-frame-size)",
                    len,
                    max
                ]
            );
            return Err(gst::FlowError::Error);
        }
        let (untimed_index, drop_cost) = {
            let mut stream = self.stream.lock().unwrap();
            if !stream.seen_keyframe && !info.irap {
                gst::debug!(
                    CAT,
                    imp = self,
                    "dropping access unit before the first IRAP"
                );
                return Ok(gst::FlowSuccess::Ok);
            }
            stream.seen_keyframe = true;
            stream.sent += 1;
            stream.sub_layers = info.sub_layers.or(stream.sub_layers);
            let untimed = buffer.pts().is_none() && buffer.dts().is_none();
            let cost = info.drop_cost(stream.sub_layers.unwrap_or(7));
            (untimed.then(|| stream.sent - 1), cost)
        };
        let segment = self.obj().segment();
        let segment = segment.downcast_ref::<gst::ClockTime>();
        let running = |t: Option<gst::ClockTime>| {
            t.and_then(|t| segment.and_then(|s| s.to_running_time(t)))
                .map(|t| t.nseconds())
        };
        let (mut pts, dts) = (running(buffer.pts()), running(buffer.dts()));
        if let Some(n) = untimed_index {
            pts = self.pace_untimed(n)?;
        }
        self.wait_network(|| server.wait_for_room())?;
        let data = match self.publisher_handle() {
            Some(publisher) => self.publish(&publisher, data, pts, &info)?,
            None => data,
        };
        server.send(MediaFrame {
            pts,
            dts,
            duration: buffer.duration().map(|d| d.nseconds()),
            keyframe: info.irap,
            parameter_sets: info.parameter_sets,
            temporal_id: info.temporal_id,
            drop_cost,
            discont: buffer.flags().contains(gst::BufferFlags::DISCONT),
            data,
        });
        Ok(gst::FlowSuccess::Ok)
    }

    /// Frame-rate fallback (the `framerate` property, else the caps' framerate): waits for
    /// the `n`th frame's running time, like the original demo's `-f FPS` timer. Returns the
    /// running time used as PTS.
    fn pace_untimed(&self, n: u64) -> Result<Option<u64>, gst::FlowError> {
        let valid = |r: &gst::Fraction| r.numer() > 0 && r.denom() > 0;
        let property = Some(self.settings.lock().unwrap().framerate).filter(valid);
        let caps = self.stream.lock().unwrap().caps_framerate.filter(valid);
        let Some(rate) = property.or(caps) else {
            return Ok(None);
        };
        let time = gst::ClockTime::SECOND
            .mul_div_floor(n * rate.denom() as u64, rate.numer() as u64)
            .unwrap_or(gst::ClockTime::ZERO);
        if self.obj().is_sync() {
            while let (Err(gst::ClockError::Unscheduled), _) = self.obj().wait_clock(time) {
                // Unscheduled by unlock(): resume after a pause, give up on a flush.
                self.obj().wait_preroll()?;
            }
        }
        Ok(Some(time.nseconds()))
    }

    /// NAL-aligned input: gathers NAL units into access units, sending each once the next
    /// one begins or the buffer is marked as the end of one.
    fn gather_nal(
        &self,
        server: &Server,
        buffer: &gst::Buffer,
        info: AuInfo,
    ) -> Result<gst::FlowSuccess, gst::FlowError> {
        let map = buffer.map_readable().map_err(|_| gst::FlowError::Error)?;
        let complete = self
            .stream
            .lock()
            .unwrap()
            .gatherer
            .push(&map, info, buffer.clone());
        if let Some(au) = complete {
            self.send_au(server, &au.first, Box::new(au.data), au.info)?;
        }
        if buffer.flags().contains(gst::BufferFlags::MARKER) {
            self.flush_pending(server)?;
        }
        Ok(gst::FlowSuccess::Ok)
    }

    fn flush_pending(&self, server: &Server) -> Result<gst::FlowSuccess, gst::FlowError> {
        let pending = self.stream.lock().unwrap().gatherer.flush();
        match pending {
            Some(au) => self.send_au(server, &au.first, Box::new(au.data), au.info),
            None => Ok(gst::FlowSuccess::Ok),
        }
    }

    /// What `buffer` holds: prepare() inspected it just before, unless it was not the one.
    fn inspected(&self, buffer: &gst::Buffer) -> Result<AuInfo, gst::FlowError> {
        let key = buffer.as_ptr() as usize;
        let prepared = self.stream.lock().unwrap().inspected.take();
        if let Some((_, info)) = prepared.filter(|(k, _)| *k == key) {
            return Ok(info);
        }
        let map = buffer.map_readable().map_err(|_| gst::FlowError::Error)?;
        h265::inspect(&map).map_err(|e| {
            gst::element_imp_error!(self, gst::StreamError::Format, ["Invalid H.265: {}", e]);
            gst::FlowError::Error
        })
    }
}

impl QuicNaluSink {
    /// What the networking thread calls when receivers want a keyframe: the upstream
    /// GstForceKeyUnit event goes out from GStreamer's async pool, so the networking thread
    /// never waits on upstream elements.
    fn keyframe_requester(&self) -> Box<dyn Fn() + Send> {
        let weak = self.obj().downgrade();
        Box::new(move || {
            let Some(obj) = weak.upgrade() else {
                return;
            };
            obj.call_async(|obj| {
                let event = gst::event::CustomUpstream::new(
                    gst::Structure::builder("GstForceKeyUnit")
                        .field("all-headers", true)
                        .build(),
                );
                let handled = obj
                    .static_pad("sink")
                    .is_some_and(|pad| pad.push_event(event));
                gst::debug!(
                    CAT,
                    obj = obj,
                    "asked upstream for a keyframe (handled: {handled})"
                );
            });
        })
    }
}

impl QuicNaluSink {
    /// What the networking thread calls with each new estimate: from GStreamer's async
    /// pool, posts it as a `quicnalusink-bandwidth` element message and, with
    /// `adapt-bitrate`, steers the encoder (which may take its lock a while).
    fn estimate_reporter(&self) -> Box<dyn Fn(Estimate) + Send> {
        let weak = self.obj().downgrade();
        Box::new(move |estimate| {
            let Some(obj) = weak.upgrade() else {
                return;
            };
            obj.call_async(move |obj| {
                let imp = obj.imp();
                let encoder_kbps = imp
                    .adaptation
                    .lock()
                    .unwrap()
                    .as_mut()
                    .and_then(|a| a.steer(obj.upcast_ref(), estimate.bitrate));
                let mut s = gst::Structure::builder("quicnalusink-bandwidth")
                    .field("bitrate", estimate.bitrate)
                    .field("receivers", estimate.receivers)
                    .build();
                if let Some(kbps) = encoder_kbps {
                    s.set("encoder-bitrate", kbps);
                }
                let _ = obj.post_message(gst::message::Element::builder(s).src(obj).build());
            });
        })
    }
}

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
            let made = SelfSigned::generate(&names).map_err(settings_error)?;
            (made, "a throw-away self-signed certificate".to_string())
        } else {
            let path = user_file(&glib::user_data_dir(), "sender.pem");
            let (kept, new) = SelfSigned::kept_in(&path).map_err(settings_error)?;
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

    /// What the networking thread asks before serving a receiver: `receiver-connecting`.
    fn admitter(&self) -> Box<dyn Fn(&Admission) -> bool + Send> {
        let weak = self.obj().downgrade();
        Box::new(move |asking| {
            let Some(obj) = weak.upgrade() else {
                return false;
            };
            let token = String::from_utf8_lossy(asking.token).into_owned();
            let admitted = obj.emit_by_name::<bool>(
                "receiver-connecting",
                &[&asking.id, &asking.peer.to_string(), &token],
            );
            if !admitted {
                gst::info!(
                    CAT,
                    obj = obj,
                    "refused receiver {} ({})",
                    asking.id,
                    asking.peer
                );
            }
            admitted
        })
    }

    /// What the networking thread tells of receivers: signals, emitted there, and the
    /// matching element messages.
    fn receiver_reporter(&self) -> Box<dyn Fn(ReceiverEvent) + Send> {
        let weak = self.obj().downgrade();
        Box::new(move |event| {
            let Some(obj) = weak.upgrade() else {
                return;
            };
            let message = match event {
                ReceiverEvent::Connected { id, peer } => {
                    let address = peer.to_string();
                    gst::info!(CAT, obj = obj, "receiver {id} connected from {address}");
                    obj.emit_by_name::<()>("receiver-connected", &[&id, &address]);
                    gst::Structure::builder("quicnalusink-receiver-connected")
                        .field("receiver-id", id)
                        .field("address", address)
                        .build()
                }
                ReceiverEvent::Rejected {
                    id,
                    peer,
                    code,
                    reason,
                } => {
                    let address = peer.to_string();
                    gst::info!(
                        CAT,
                        obj = obj,
                        "receiver {id} ({address}) refused: {reason}"
                    );
                    gst::Structure::builder("quicnalusink-receiver-rejected")
                        .field("receiver-id", id)
                        .field("address", address)
                        .field("code", code)
                        .field("reason", reason)
                        .build()
                }
                ReceiverEvent::Disconnected { id, peer, reason } => {
                    let address = peer.to_string();
                    gst::info!(CAT, obj = obj, "receiver {id} ({address}) left: {reason}");
                    obj.emit_by_name::<()>("receiver-disconnected", &[&id, &address, &reason]);
                    gst::Structure::builder("quicnalusink-receiver-disconnected")
                        .field("receiver-id", id)
                        .field("address", address)
                        .field("reason", reason)
                        .build()
                }
                ReceiverEvent::Command {
                    id,
                    peer,
                    structure,
                } => {
                    let Ok(command) = structure.parse::<gst::Structure>() else {
                        gst::warning!(
                            CAT,
                            obj = obj,
                            "receiver {id} sent a command that is not a GstStructure: {structure:?}"
                        );
                        return;
                    };
                    gst::debug!(CAT, obj = obj, "receiver {id}: command {command}");
                    obj.emit_by_name::<()>("command-received", &[&id, &command]);
                    gst::Structure::builder("quicnalusink-command")
                        .field("receiver-id", id)
                        .field("address", peer.to_string())
                        .field("command", command)
                        .build()
                }
            };
            let _ = obj.post_message(gst::message::Element::builder(message).src(&obj).build());
        })
    }

    /// With wait-for-connection, holds the stream (buffers and forwarded events) until the
    /// first receiver is ready.
    fn wait_first_receiver(&self, server: &Server) -> Result<gst::FlowSuccess, gst::FlowError> {
        let wait = self.settings.lock().unwrap().wait_for_connection
            && !self.stream.lock().unwrap().connected_once;
        if wait {
            gst::debug!(CAT, imp = self, "waiting for the first receiver");
            // Publishing to a relay: the first receiver is the relay's first subscriber,
            // unless the relay fails first.
            let subscribed = match self.publisher_handle() {
                Some(publisher) => self.wait_network(|| match publisher.wait_for_subscriber() {
                    Err(Interrupted::Failed(e)) => {
                        self.stop_publishing(&e);
                        Ok(false)
                    }
                    waited => waited.map(|()| true),
                })?,
                None => false,
            };
            if !subscribed {
                self.wait_network(|| server.wait_for_receiver())?;
            }
            self.stream.lock().unwrap().connected_once = true;
        }
        Ok(gst::FlowSuccess::Ok)
    }

    /// A serialized custom downstream event for the receivers: sent in stream order. With
    /// NAL-aligned input it goes after the access unit being gathered, if that has a
    /// picture (the event came between access units or inside one; either way after that
    /// picture), else before it. Returns whether it went.
    fn forward_event(&self, event: &gst::Event) -> bool {
        let Some(structure) = event.structure() else {
            return false;
        };
        if structure.name() == "GstForceKeyUnit" || !self.settings.lock().unwrap().forward_events {
            return false;
        }
        let Ok(server) = self.server() else {
            return false;
        };
        if self.wait_first_receiver(&server).is_err() {
            return false;
        }
        let after_pending = self.stream.lock().unwrap().gatherer.holds_picture();
        if !server.send_command_in_stream(structure.to_string(), after_pending) {
            gst::element_imp_warning!(
                self,
                gst::StreamError::Encode,
                [
                    "Event {} not forwarded: longer than 64 KiB, or 1 MiB of commands \
                     wait for the networking thread",
                    structure.name()
                ]
            );
            return false;
        }
        gst::debug!(CAT, imp = self, "forwarding {structure}");
        true
    }
}

impl BaseSinkImpl for QuicNaluSink {
    fn start(&self) -> Result<(), gst::ErrorMessage> {
        let settings = self.settings.lock().unwrap().clone();
        let (bind, call) = settings.endpoints()?;
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
        *self.adaptation.lock().unwrap() = settings
            .adapt_bitrate
            .then(|| Adaptation::new(settings.min_bitrate_kbps, settings.max_bitrate_kbps, *CAT));
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

    fn stop(&self) -> Result<(), gst::ErrorMessage> {
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

    fn set_caps(&self, caps: &gst::Caps) -> Result<(), gst::LoggableError> {
        let s = caps
            .structure(0)
            .ok_or_else(|| gst::loggable_error!(CAT, "empty caps"))?;
        let nal = s.get::<&str>("alignment").ok() == Some("nal");
        {
            let mut stream = self.stream.lock().unwrap();
            stream.nal_aligned = nal;
            stream.caps_framerate = s.get::<gst::Fraction>("framerate").ok();
        }
        // Receivers always get whole access units.
        let mut described = caps.copy();
        described.make_mut().set("alignment", "au");
        self.server()
            .map_err(|_| gst::loggable_error!(CAT, "caps before start"))?
            .set_caps(described.to_string());
        if let Some(publisher) = self.publisher_handle() {
            let picture = Picture {
                width: s
                    .get::<i32>("width")
                    .ok()
                    .and_then(|w| u32::try_from(w).ok()),
                height: s
                    .get::<i32>("height")
                    .ok()
                    .and_then(|h| u32::try_from(h).ok()),
                framerate: s
                    .get::<gst::Fraction>("framerate")
                    .ok()
                    .filter(|r| r.numer() > 0 && r.denom() > 0)
                    .map(|r| f64::from(r.numer()) / f64::from(r.denom())),
            };
            publisher.set_caps(described.to_string(), picture);
        }
        Ok(())
    }

    fn prepare(&self, buffer: &gst::Buffer) -> Result<gst::FlowSuccess, gst::FlowError> {
        // Refuse input that is not Annex B before anything waits or is sent.
        let map = buffer.map_readable().map_err(|_| gst::FlowError::Error)?;
        let info = h265::inspect(&map);
        if let Err(e) = &info {
            gst::element_imp_error!(
                self,
                gst::StreamError::Format,
                [
                    "Input is not an H.265 byte-stream: {} (length-prefixed hvc1/hev1 data \
                     must be converted by h265parse first)",
                    e
                ]
            );
            return Err(gst::FlowError::Error);
        }
        if let Some(publisher) = self.publisher_handle() {
            // The catalog goes out before the wait for a subscriber, who needs it first.
            if let Err(e) = publisher.describe(&map) {
                self.stop_publishing(&e);
            }
        }
        drop(map);
        if let Ok(info) = info {
            self.stream.lock().unwrap().inspected = Some((buffer.as_ptr() as usize, info));
        }
        let server = self.server()?;
        self.wait_first_receiver(&server)
    }

    fn render(&self, buffer: &gst::Buffer) -> Result<gst::FlowSuccess, gst::FlowError> {
        let server = self.server()?;
        let info = self.inspected(buffer)?;
        if self.stream.lock().unwrap().nal_aligned {
            return self.gather_nal(&server, buffer, info);
        }
        let map = buffer
            .clone()
            .into_mapped_buffer_readable()
            .map_err(|_| gst::FlowError::Error)?;
        self.send_au(&server, buffer, Box::new(map), info)
    }

    fn event(&self, event: gst::Event) -> bool {
        if let gst::EventView::FlushStop(_) = event.view() {
            self.stream.lock().unwrap().gatherer = Gatherer::default();
        }
        if let gst::EventView::CustomDownstream(_) = event.view() {
            self.forward_event(&event);
        }
        if let gst::EventView::Eos(_) = event.view() {
            if let Ok(server) = self.server() {
                if self.flush_pending(&server).is_ok() {
                    let timeout = self.settings.lock().unwrap().eos_timeout_ms;
                    match server.finish(Duration::from_millis(timeout.into())) {
                        Ok(true) => gst::debug!(CAT, imp = self, "every receiver drained"),
                        Ok(false) => gst::warning!(
                            CAT,
                            imp = self,
                            "receivers did not confirm the end within {timeout} ms"
                        ),
                        Err(e) => gst::debug!(CAT, imp = self, "EOS drain interrupted: {e:?}"),
                    }
                    if let Some(publisher) = self.publisher_handle() {
                        match publisher.finish(Duration::from_millis(timeout.into())) {
                            Ok(true) => gst::debug!(CAT, imp = self, "the relay has it all"),
                            Ok(false) => gst::warning!(
                                CAT,
                                imp = self,
                                "the relay did not acknowledge the end within {timeout} ms"
                            ),
                            Err(e) => {
                                gst::debug!(CAT, imp = self, "relay drain interrupted: {e:?}")
                            }
                        }
                    }
                }
            }
        }
        self.parent_event(event)
    }

    fn unlock(&self) -> Result<(), gst::ErrorMessage> {
        if let Ok(server) = self.server() {
            server.set_flushing(true);
        }
        if let Some(publisher) = self.publisher_handle() {
            publisher.set_flushing(true);
        }
        Ok(())
    }

    fn unlock_stop(&self) -> Result<(), gst::ErrorMessage> {
        if let Ok(server) = self.server() {
            server.set_flushing(false);
        }
        if let Some(publisher) = self.publisher_handle() {
            publisher.set_flushing(false);
        }
        Ok(())
    }
}
