//! The source's GObject subclass: its settings and their defaults, its state, and the
//! GStreamer trait impls, which hand the larger jobs to the submodule that owns it:
//! `properties` (the property specs, set and read), `start` (the networking thread or the
//! relay subscription, and their settings) and `create` (the streaming path: events into
//! caps, buffers, commands and EOS).

use crate::element::properties::{CongestionControl, Mode, DEFAULT_MOQ_BROADCAST};
use crate::element::routes::PathMode;
use crate::element::uri;
use crate::media::timeline::Timeline;
use crate::net::client::Client;
use crate::net::known_hosts::{host_key, user_file, KnownHosts};
use crate::net::link::Interrupted;
use crate::net::moq::Subscriber;
use crate::net::trust::{Asked, Trust};
use crate::protocol::{DEFAULT_MAX_COMMAND_SIZE, DEFAULT_MAX_FRAME_SIZE};
use crate::receiver::inbox::Event;
use gst::glib;
use gst::prelude::*;
use gst::subclass::prelude::*;
use gst_base::prelude::*;
use gst_base::subclass::base_src::CreateSuccess;
use gst_base::subclass::prelude::*;
use once_cell::sync::Lazy;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

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
    /// The local address to send from; None: any.
    bind_address: Option<String>,
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
    /// `paths`: more routes to the sender (element/routes.rs).
    paths: Option<String>,
    path_mode: PathMode,
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
            bind_address: None,
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
            paths: None,
            path_mode: PathMode::default(),
            token: None,
            certificate_fingerprint: None,
            max_frame_size: DEFAULT_MAX_FRAME_SIZE as u32,
            max_command_size: DEFAULT_MAX_COMMAND_SIZE as u32,
            qlog_dir: None,
            keylog_file: None,
            stats_interval_ms: 0,
            moq_url: None,
            moq_broadcast: DEFAULT_MOQ_BROADCAST.into(),
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

mod create;
mod properties;
mod start;

impl ObjectImpl for QuicNaluSrc {
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
        let pin = crate::element::properties::pin(
            "certificate-fingerprint",
            self.certificate_fingerprint.as_deref(),
        )?;
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
}

impl BaseSrcImpl for QuicNaluSrc {
    fn start(&self) -> Result<(), gst::ErrorMessage> {
        self.start_receiving()
    }

    fn stop(&self) -> Result<(), gst::ErrorMessage> {
        self.stop_receiving()
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
        self.next_buffer()
    }
}
