use crate::element::errors::{self, Direction};
use crate::element::properties::{self, CongestionControl, Mode};
use crate::element::stats::{message_poster, Snapshot};
use crate::element::uri;
use crate::element::{log, messages};
use crate::media::timeline::Timeline;
use crate::net::capture::Capture;
use crate::net::client::Client;
use crate::net::client::ClientSettings;
use crate::net::known_hosts::host_key;
use crate::net::known_hosts::user_file;
use crate::net::known_hosts::KnownHosts;
use crate::net::link::Interrupted;
use crate::net::moq::{Dial, Subscriber, SubscriberSettings};
use crate::net::stats::ClientStats;
use crate::net::stats::Reporter;
use crate::net::tls::Fingerprint;
use crate::net::trust::{Asked, Trust};
use crate::policy::reconnect::Reconnect;
use crate::protocol::{FrameFlags, DEFAULT_MAX_COMMAND_SIZE, DEFAULT_MAX_FRAME_SIZE};
use crate::receiver::inbox::Event;
use crate::receiver::inbox::ReceivedFrame;
use gst::glib;
use gst::prelude::*;
use gst::subclass::prelude::*;
use gst_base::prelude::*;
use gst_base::subclass::base_src::CreateSuccess;
use gst_base::subclass::prelude::*;
use gst_plugin_meta::{Flags, QuicNaluMeta};
use once_cell::sync::Lazy;
use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

static CAT: Lazy<gst::DebugCategory> = Lazy::new(|| {
    gst::DebugCategory::new(
        "quicnalusrc",
        gst::DebugColorFlags::empty(),
        Some("H.265 over QUIC receiver"),
    )
});

const DEFAULT_MODE: Mode = Mode::Caller;
/// Where a caller calls, and where a listener listens, when `address` is unset.
const DEFAULT_ADDRESS: &str = "127.0.0.1";
const DEFAULT_LISTEN_ADDRESS: &str = "0.0.0.0";
const DEFAULT_PORT: u32 = 4443;
const DEFAULT_TLS_VERIFY: bool = true;
const DEFAULT_LATENCY_MS: u32 = 200;
const DEFAULT_TIMEOUT_MS: u32 = 10_000;
const DEFAULT_RECONNECT: bool = true;
const DEFAULT_RECONNECT_DELAY_MAX_MS: u32 = 2_000;
/// 0: keep trying.
const DEFAULT_RECONNECT_TIMEOUT_MS: u32 = 0;
/// Access units the element may hold before the network thread stops reading.
const QUEUE_LEN: usize = 64;

#[derive(Debug, Clone)]
struct Settings {
    mode: Mode,
    /// None: DEFAULT_ADDRESS, or DEFAULT_LISTEN_ADDRESS when listening.
    address: Option<String>,
    port: u32,
    server_name: Option<String>,
    ca_file: Option<String>,
    /// None: not set, which lets trust on first use apply.
    tls_verify: Option<bool>,
    known_hosts: Option<String>,
    latency_ms: u32,
    timeout_ms: u32,
    congestion_control: CongestionControl,
    reconnect: bool,
    reconnect_delay_max_ms: u32,
    reconnect_timeout_ms: u32,
    token: Option<String>,
    certificate_fingerprint: Option<String>,
    max_frame_size: u32,
    max_command_size: u32,
    qlog_dir: Option<String>,
    keylog_file: Option<String>,
    stats_interval_ms: u32,
    moq_url: Option<String>,
    moq_broadcast: String,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            mode: DEFAULT_MODE,
            address: None,
            port: DEFAULT_PORT,
            server_name: None,
            ca_file: None,
            tls_verify: None,
            known_hosts: None,
            latency_ms: DEFAULT_LATENCY_MS,
            timeout_ms: DEFAULT_TIMEOUT_MS,
            congestion_control: CongestionControl::default(),
            reconnect: DEFAULT_RECONNECT,
            reconnect_delay_max_ms: DEFAULT_RECONNECT_DELAY_MAX_MS,
            reconnect_timeout_ms: DEFAULT_RECONNECT_TIMEOUT_MS,
            token: None,
            certificate_fingerprint: None,
            max_frame_size: DEFAULT_MAX_FRAME_SIZE as u32,
            max_command_size: DEFAULT_MAX_COMMAND_SIZE as u32,
            qlog_dir: None,
            keylog_file: None,
            stats_interval_ms: 0,
            moq_url: None,
            moq_broadcast: properties::DEFAULT_MOQ_BROADCAST.into(),
        }
    }
}

#[derive(Default)]
enum State {
    #[default]
    Stopped,
    Started {
        source: Source,
    },
}

/// Where the stream comes from.
#[derive(Clone)]
enum Source {
    /// A quicnalusink, over our protocol.
    Direct(Arc<Client>),
    /// A broadcast on a MoQ relay (moq-url).
    Relay(Arc<Subscriber>),
}

impl Source {
    fn next(&self) -> Result<Event, Interrupted> {
        match self {
            Source::Direct(client) => client.next(),
            Source::Relay(subscriber) => subscriber.next(),
        }
    }

    fn set_flushing(&self, flushing: bool) {
        match self {
            Source::Direct(client) => client.set_flushing(flushing),
            Source::Relay(subscriber) => subscriber.set_flushing(flushing),
        }
    }
}

#[derive(Default)]
pub struct QuicNaluSrc {
    settings: Mutex<Settings>,
    state: Mutex<State>,
    /// What only the streaming thread touches.
    timeline: Mutex<Timeline>,
}

#[glib::object_subclass]
impl ObjectSubclass for QuicNaluSrc {
    const NAME: &'static str = "GstQuicNaluSrc";
    type Type = super::QuicNaluSrc;
    type ParentType = gst_base::PushSrc;
    type Interfaces = (gst::URIHandler,);
}

impl ObjectImpl for QuicNaluSrc {
    fn properties() -> &'static [glib::ParamSpec] {
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

    fn set_property(&self, _id: usize, value: &glib::Value, pspec: &glib::ParamSpec) {
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

    fn property(&self, _id: usize, pspec: &glib::ParamSpec) -> glib::Value {
        let s = self.settings.lock().unwrap();
        match pspec.name() {
            "mode" => s.mode.to_value(),
            "address" => s.address().to_value(),
            "port" => s.port.to_value(),
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

    fn signals() -> &'static [glib::subclass::Signal] {
        static SIGNALS: Lazy<Vec<glib::subclass::Signal>> = Lazy::new(|| {
            // Sends a command to the sender, which emits command-received and posts a
            // quicnalusink-command message naming this receiver. False when not started.
            vec![glib::subclass::Signal::builder("send-command")
                .param_types([gst::Structure::static_type()])
                .return_type::<bool>()
                .action()
                .class_handler(|args| {
                    let sent = (|| {
                        let obj = args[0].get::<super::QuicNaluSrc>().ok()?;
                        let command = args[1].get::<gst::Structure>().ok()?;
                        let client = obj.imp().client().ok()?;
                        Some(client.send_command(command.to_string()))
                    })();
                    Some(sent.unwrap_or(false).to_value())
                })
                .build()]
        });
        SIGNALS.as_ref()
    }

    fn constructed(&self) {
        self.parent_constructed();
        let obj = self.obj();
        obj.set_live(true);
        obj.set_format(gst::Format::Time);
        obj.set_do_timestamp(false);
    }
}

impl GstObjectImpl for QuicNaluSrc {}

impl URIHandlerImpl for QuicNaluSrc {
    const URI_TYPE: gst::URIType = gst::URIType::Src;

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

impl ElementImpl for QuicNaluSrc {
    fn metadata() -> Option<&'static gst::subclass::ElementMetadata> {
        static METADATA: Lazy<gst::subclass::ElementMetadata> = Lazy::new(|| {
            gst::subclass::ElementMetadata::new(
                "QUIC H.265 source",
                "Source/Network",
                "Receives an H.265 stream from quicnalusink over QUIC",
                "quicnalu developers",
            )
        });
        Some(&*METADATA)
    }

    fn pad_templates() -> &'static [gst::PadTemplate] {
        static TEMPLATES: Lazy<Vec<gst::PadTemplate>> = Lazy::new(|| {
            let caps = gst::Caps::builder("video/x-h265")
                .field("stream-format", "byte-stream")
                .field("alignment", "au")
                .build();
            vec![gst::PadTemplate::new(
                "src",
                gst::PadDirection::Src,
                gst::PadPresence::Always,
                &caps,
            )
            .expect("valid template")]
        });
        TEMPLATES.as_ref()
    }
}

impl Settings {
    fn address(&self) -> &str {
        match (&self.address, self.mode) {
            (Some(address), _) => address,
            (None, Mode::Caller) => DEFAULT_ADDRESS,
            (None, Mode::Listener) => DEFAULT_LISTEN_ADDRESS,
        }
    }

    /// The known_hosts name of the sender: the host and port dialled; a listener's
    /// caller has no fixed address, so it is whoever calls this port.
    fn host_key(&self) -> String {
        match self.mode {
            Mode::Caller => host_key(self.address(), self.port as u16),
            Mode::Listener => host_key("*", self.port as u16),
        }
    }

    /// How the sender's (or the relay's) certificate is trusted, known as `host` in
    /// known_hosts.
    fn trust(&self, host: String, dialled_name: bool) -> Result<Trust, gst::ErrorMessage> {
        let pin = self
            .certificate_fingerprint
            .as_deref()
            .filter(|f| !f.is_empty())
            .map(Fingerprint::parse)
            .transpose()
            .map_err(|e| {
                gst::error_msg!(
                    gst::ResourceError::Settings,
                    ["certificate-fingerprint: {}", e]
                )
            })?;
        let asked = Asked {
            pin,
            verify: self.tls_verify,
            ca_file: self.ca_file.as_deref(),
            server_name: self.server_name.as_deref(),
            dialled_name,
        };
        let path = self.known_hosts.clone().filter(|p| !p.is_empty());
        Ok(Trust::choose(asked, || KnownHosts {
            path: path.map_or_else(
                || user_file(&glib::user_data_dir(), "known_hosts"),
                PathBuf::from,
            ),
            host,
        }))
    }
}

impl QuicNaluSrc {
    fn source(&self) -> Result<Source, gst::FlowError> {
        match &*self.state.lock().unwrap() {
            State::Started { source } => Ok(source.clone()),
            State::Stopped => Err(gst::FlowError::Flushing),
        }
    }

    /// The direct connection: none when subscribed through a relay.
    fn client(&self) -> Result<Arc<Client>, gst::FlowError> {
        match self.source()? {
            Source::Direct(client) => Ok(client),
            Source::Relay(_) => Err(gst::FlowError::NotSupported),
        }
    }

    /// The sender's caps with our output format forced.
    fn output_caps(&self, described: &str) -> Result<gst::Caps, String> {
        let mut caps: gst::Caps = described
            .parse()
            .map_err(|_| format!("sender described its stream as unparsable caps '{described}'"))?;
        let fixed = caps.is_fixed();
        match caps.make_mut().structure_mut(0) {
            Some(s) if fixed && s.name() == "video/x-h265" => {
                s.set("stream-format", "byte-stream");
                s.set("alignment", "au");
                s.remove_field("codec_data");
            }
            _ => {
                return Err(format!(
                    "sender's stream is not fixed H.265 caps: {described}"
                ))
            }
        }
        Ok(caps)
    }

    /// Our running time now, if the element has a clock.
    fn running_time(&self) -> Option<gst::ClockTime> {
        let obj = self.obj();
        let now = obj.clock()?.time();
        now.checked_sub(obj.base_time()?)
    }

    fn make_buffer(&self, frame: ReceivedFrame) -> gst::Buffer {
        let h = frame.header;
        let now = self.running_time().map(gst::ClockTime::nseconds);
        let stamped = self
            .timeline
            .lock()
            .unwrap()
            .map(h.pts, h.dts, frame.catch_up_age, now);
        let keyframe = h.flags.contains(FrameFlags::KEYFRAME);
        let mut buffer = gst::Buffer::from_mut_slice(frame.data);
        {
            let b = buffer.make_mut();
            b.set_pts(stamped.pts.map(gst::ClockTime::from_nseconds));
            b.set_dts(stamped.dts.map(gst::ClockTime::from_nseconds));
            b.set_duration(h.duration.map(gst::ClockTime::from_nseconds));
            let mut flags = gst::BufferFlags::empty();
            flags.set(gst::BufferFlags::DELTA_UNIT, !keyframe);
            flags.set(
                gst::BufferFlags::HEADER,
                h.flags.contains(FrameFlags::HEADER),
            );
            let discont = stamped.first || frame.gap || h.flags.contains(FrameFlags::DISCONT);
            flags.set(gst::BufferFlags::DISCONT, discont);
            flags.set(gst::BufferFlags::DECODE_ONLY, stamped.decode_only);
            b.set_flags(flags);
            let mut meta_flags = Flags::default();
            if keyframe {
                meta_flags = meta_flags | Flags::KEYFRAME;
            }
            if discont {
                meta_flags = meta_flags | Flags::DISCONT;
            }
            if frame.gap {
                meta_flags = meta_flags | Flags::GAP;
            }
            if frame.late {
                meta_flags = meta_flags | Flags::LATE;
            }
            let meta = QuicNaluMeta {
                seq: h.seq,
                sender_time: h.send_time,
                arrival_time: frame.arrival,
                flags: meta_flags,
            };
            if let Err(e) = meta.add(b) {
                gst::warning!(CAT, imp = self, "cannot attach QuicNaluMeta: {e}");
            }
        }
        buffer
    }
}

impl QuicNaluSrc {
    /// A command from the sender: pushed downstream as a custom event here, in stream
    /// order, and posted as a `quicnalusrc-command` message.
    fn command(&self, structure: &str) {
        let Ok(command) = structure.parse::<gst::Structure>() else {
            gst::warning!(
                CAT,
                imp = self,
                "sender sent a command that is not a GstStructure: {structure:?}"
            );
            return;
        };
        gst::debug!(CAT, imp = self, "command {command}");
        let obj = self.obj();
        let message = gst::Structure::builder("quicnalusrc-command")
            .field("command", command.clone())
            .build();
        let _ = obj.post_message(gst::message::Element::builder(message).src(&*obj).build());
        if !obj
            .src_pad()
            .push_event(gst::event::CustomDownstream::new(command))
        {
            gst::debug!(
                CAT,
                imp = self,
                "nothing downstream handled the command event"
            );
        }
    }
}

impl QuicNaluSrc {
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

impl BaseSrcImpl for QuicNaluSrc {
    fn start(&self) -> Result<(), gst::ErrorMessage> {
        let s = self.settings.lock().unwrap().clone();
        if let Some(url) = s.moq_url.as_deref().filter(|u| !u.is_empty()) {
            let subscriber = self.subscriber(&s, url)?;
            *self.timeline.lock().unwrap() = Timeline::default();
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
        let peer = (s.address(), s.port as u16)
            .to_socket_addrs()
            .ok()
            .and_then(|mut addrs| addrs.next())
            .ok_or_else(|| {
                gst::error_msg!(
                    gst::ResourceError::NotFound,
                    ["cannot resolve address '{}'", s.address()]
                )
            })?;
        let server_name = s.server_name.clone().or_else(|| {
            let named = s.mode == Mode::Caller && s.address().parse::<IpAddr>().is_err();
            named.then(|| s.address().to_string())
        });
        let dialled_name = s.mode == Mode::Caller && s.address().parse::<IpAddr>().is_err();
        let trust = s.trust(s.host_key(), dialled_name)?;
        if s.mode == Mode::Listener && matches!(trust, Trust::FirstUse(_)) {
            gst::element_warning!(
                self.obj(),
                gst::ResourceError::Settings,
                ("listening with trust on first use: the first sender to call this port \
                     is remembered and played, whoever it is; set certificate-fingerprint, \
                     or a token both ends share, to answer only your own sender")
            );
        }
        let capture = Capture::open(s.qlog_dir.as_deref(), s.keylog_file.as_deref())
            .map_err(|e| gst::error_msg!(gst::ResourceError::OpenWrite, ["{}", e]))?;
        let stats_interval =
            (s.stats_interval_ms > 0).then(|| Duration::from_millis(s.stats_interval_ms.into()));
        let client = Client::start(ClientSettings {
            peer: SocketAddr::new(peer.ip(), peer.port()),
            listen: s.mode == Mode::Listener,
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
        *self.timeline.lock().unwrap() = Timeline::default();
        *self.state.lock().unwrap() = State::Started {
            source: Source::Direct(Arc::new(client)),
        };
        Ok(())
    }

    fn stop(&self) -> Result<(), gst::ErrorMessage> {
        let state = std::mem::take(&mut *self.state.lock().unwrap());
        drop(state);
        gst::info!(CAT, imp = self, "stopped");
        Ok(())
    }

    fn is_seekable(&self) -> bool {
        false
    }

    fn negotiate(&self) -> Result<(), gst::LoggableError> {
        // Caps come from the sender's description, set in create() when it arrives.
        Ok(())
    }

    fn query(&self, query: &mut gst::QueryRef) -> bool {
        if let gst::QueryViewMut::Latency(q) = query.view_mut() {
            let latency = self.settings.lock().unwrap().latency_ms;
            let latency = gst::ClockTime::from_mseconds(latency.into());
            q.set(true, latency, gst::ClockTime::NONE);
            return true;
        }
        BaseSrcImplExt::parent_query(self, query)
    }

    fn event(&self, event: &gst::Event) -> bool {
        // A decoder or the application wants a keyframe (GstForceKeyUnit upstream, as from
        // gst_video_event_new_upstream_force_key_unit): only the sender can make one.
        let force_key_unit = event.type_() == gst::EventType::CustomUpstream
            && event
                .structure()
                .is_some_and(|s| s.name() == "GstForceKeyUnit");
        if force_key_unit {
            if let Ok(client) = self.client() {
                client.request_keyframe();
                return true;
            }
        }
        self.parent_event(event)
    }

    fn unlock(&self) -> Result<(), gst::ErrorMessage> {
        if let Ok(source) = self.source() {
            source.set_flushing(true);
        }
        Ok(())
    }

    fn unlock_stop(&self) -> Result<(), gst::ErrorMessage> {
        if let Ok(source) = self.source() {
            source.set_flushing(false);
        }
        Ok(())
    }
}

impl PushSrcImpl for QuicNaluSrc {
    fn create(
        &self,
        _buffer: Option<&mut gst::BufferRef>,
    ) -> Result<CreateSuccess, gst::FlowError> {
        let source = self.source()?;
        loop {
            match source.next() {
                Ok(Event::Caps(described)) => {
                    let caps = self.output_caps(&described).map_err(|e| {
                        gst::element_imp_error!(self, gst::StreamError::Format, ["{}", e]);
                        gst::FlowError::NotNegotiated
                    })?;
                    gst::info!(CAT, imp = self, "stream: {caps}");
                    self.obj()
                        .set_caps(&caps)
                        .map_err(|_| gst::FlowError::NotNegotiated)?;
                }
                Ok(Event::Connected) => {
                    // A restarted sender starts its timestamps again: map them afresh.
                    self.timeline.lock().unwrap().reconnected();
                }
                Ok(Event::Command(structure)) => self.command(&structure),
                Ok(Event::Frame(frame)) => {
                    return Ok(CreateSuccess::NewBuffer(self.make_buffer(frame)));
                }
                Ok(Event::Eos) => {
                    gst::info!(CAT, imp = self, "sender ended the stream");
                    return Err(gst::FlowError::Eos);
                }
                Err(Interrupted::Flushing) => return Err(gst::FlowError::Flushing),
                Err(Interrupted::Failed(e)) => {
                    let flowing = self.timeline.lock().unwrap().delivered() > 0;
                    self.post_error_message(errors::message(&e, Direction::Receive, flowing));
                    return Err(gst::FlowError::Error);
                }
            }
        }
    }
}
