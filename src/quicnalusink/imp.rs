//! The sink's GObject subclass: its settings and their defaults, its state, and the
//! GStreamer trait impls, which hand each job to the submodule that owns it:
//! `properties` (the property specs, set and read), `signals` (the application's side),
//! `start` (the networking thread and its settings), `render` (the streaming path),
//! `events` (caps, custom events, EOS), `upstream` (keyframe requests and the encoder's
//! bitrate) and `relay` (publishing to a MoQ relay).

use super::adapt::{request_keyframe, Adaptation};
use crate::element::properties::{
    AdaptBitrate, CongestionControl, JoinMode, Mode, DEFAULT_MOQ_BROADCAST,
};
use crate::element::uri;
use crate::media::gather::Gatherer;
use crate::media::h265::AuInfo;
use crate::net::moq::Publisher;
use crate::net::server::Server;
use crate::protocol::{DEFAULT_MAX_COMMAND_SIZE, DEFAULT_MAX_FRAME_SIZE};
use crate::sender::intake::Intake;
use gst::glib;
use gst::prelude::*;
use gst::subclass::prelude::*;
use gst_base::prelude::*;
use gst_base::subclass::prelude::*;
use once_cell::sync::Lazy;
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
const DEFAULT_ADAPT_BITRATE: AdaptBitrate = AdaptBitrate::Auto;
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
    /// With mode=caller: more local addresses to knock from (element/routes.rs).
    paths: Option<String>,
    cert_file: Option<String>,
    key_file: Option<String>,
    framerate: gst::Fraction,
    wait_for_connection: bool,
    eos_timeout_ms: u32,
    keyframe_request_interval_ms: u32,
    latency_budget_ms: i32,
    congestion_control: CongestionControl,
    adapt_bitrate: AdaptBitrate,
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
            paths: None,
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
            moq_broadcast: DEFAULT_MOQ_BROADCAST.into(),
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
    /// What goes into the stream: nothing before the first IRAP, then every access unit,
    /// numbered, with its drop cost.
    intake: Intake,
    /// The caps' framerate, the pacing fallback when the property is 0/1.
    caps_framerate: Option<gst::Fraction>,
    connected_once: bool,
}

mod events;
mod properties;
mod relay;
mod render;
mod signals;
mod start;
mod upstream;

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
        properties::specs()
    }

    fn set_property(&self, _id: usize, value: &glib::Value, pspec: &glib::ParamSpec) {
        self.set_setting(value, pspec)
    }

    fn property(&self, _id: usize, pspec: &glib::ParamSpec) -> glib::Value {
        self.setting(pspec)
    }

    fn signals() -> &'static [glib::subclass::Signal] {
        signals::specs()
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
}

impl BaseSinkImpl for QuicNaluSink {
    fn start(&self) -> Result<(), gst::ErrorMessage> {
        self.start_serving()
    }

    fn stop(&self) -> Result<(), gst::ErrorMessage> {
        self.stop_serving()
    }

    fn set_caps(&self, caps: &gst::Caps) -> Result<(), gst::LoggableError> {
        self.describe(caps)
    }

    fn prepare(&self, buffer: &gst::Buffer) -> Result<gst::FlowSuccess, gst::FlowError> {
        self.check_and_hold(buffer)
    }

    fn render(&self, buffer: &gst::Buffer) -> Result<gst::FlowSuccess, gst::FlowError> {
        self.send_buffer(buffer)
    }

    fn event(&self, event: gst::Event) -> bool {
        self.sink_event(event)
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
