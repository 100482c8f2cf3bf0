//! quiche configuration for both sides: ALPN, TLS material, flow-control windows.

use crate::error::Error;
use crate::net::files;
use crate::net::tls::{CertError, Fingerprint, SelfSigned};
use crate::protocol::ALPN;
use boring::ssl::{SslContextBuilder, SslMethod};
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Why a quiche configuration cannot be made from the settings given.
#[derive(Debug)]
pub enum SetupError {
    /// quiche refused the ALPN list.
    Alpn(quiche::Error),
    /// quiche could not make a configuration.
    Quiche(quiche::Error),
    /// BoringSSL could not make the TLS context for our certificate.
    Tls(boring::error::ErrorStack),
    /// Only one of cert-file and key-file is set.
    Unpaired,
    /// A file could not be opened; `what` it is for: "certificate file", "key file",
    /// "CA file".
    Open {
        what: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    /// cert-file holds no PEM certificate chain.
    NotCertChain { path: PathBuf },
    /// key-file holds no PEM key for the certificate.
    NotKey { path: PathBuf },
    /// The CA file holds no PEM certificates.
    NotCaFile { path: PathBuf },
    /// The certificate's fingerprint could not be taken.
    Cert(CertError),
}

impl fmt::Display for SetupError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SetupError::Alpn(e) => write!(f, "cannot set ALPN: {e}"),
            SetupError::Quiche(e) => write!(f, "quiche config: {e}"),
            SetupError::Tls(e) => write!(f, "TLS context: {e}"),
            SetupError::Unpaired => {
                f.write_str("cert-file and key-file must be set together (PEM files)")
            }
            SetupError::Open { what, path, source } => {
                write!(f, "cannot read {what} '{}': {source}", path.display())
            }
            SetupError::NotCertChain { path } => {
                write!(f, "'{}' is not a PEM certificate chain", path.display())
            }
            SetupError::NotKey { path } => write!(
                f,
                "'{}' is not a PEM private key for that certificate",
                path.display()
            ),
            SetupError::NotCaFile { path } => {
                write!(f, "'{}' is not a PEM CA certificate file", path.display())
            }
            SetupError::Cert(e) => write!(f, "{e}"),
        }
    }
}

impl std::error::Error for SetupError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            SetupError::Alpn(e) | SetupError::Quiche(e) => Some(e),
            SetupError::Tls(e) => Some(e),
            SetupError::Open { source, .. } => Some(source),
            SetupError::Cert(e) => Some(e),
            SetupError::Unpaired
            | SetupError::NotCertChain { .. }
            | SetupError::NotKey { .. }
            | SetupError::NotCaFile { .. } => None,
        }
    }
}

/// The user's error: a setting the transport cannot use.
impl From<SetupError> for Error {
    fn from(e: SetupError) -> Error {
        Error::Setup(e.to_string())
    }
}

/// quiche's congestion controllers, as the elements' `congestion-control` property.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum CongestionControl {
    Reno,
    Cubic,
    Bbr2,
    /// The default, chosen by measurement: see docs/CONGESTION.md.
    #[default]
    Live,
}

impl CongestionControl {
    fn algorithm(self) -> quiche::CongestionControlAlgorithm {
        match self {
            CongestionControl::Reno => quiche::CongestionControlAlgorithm::Reno,
            CongestionControl::Cubic => quiche::CongestionControlAlgorithm::CUBIC,
            CongestionControl::Bbr2 | CongestionControl::Live => {
                quiche::CongestionControlAlgorithm::Bbr2Gcongestion
            }
        }
    }

    fn apply(self, config: &mut quiche::Config) {
        config.set_cc_algorithm(self.algorithm());
        if self == CongestionControl::Live {
            config.set_custom_bbr_params(live_bbr());
            config.set_initial_congestion_window_packets(LIVE_INITIAL_WINDOW);
        }
    }
}

/// The sender's idle timeout: a silent peer is considered gone after it. The receiver
/// advertises its own, shorter one (its `timeout`), and the shorter applies. The receiver
/// keeps the connection alive with PINGs, so only a vanished peer reaches it.
pub const IDLE_TIMEOUT_MS: u64 = 30_000;
/// Connection IDs each side keeps for the other (quiche's default: 2), and paths it keeps
/// per connection: one in use, the rest for address changes (docs/PROTOCOL.md, "Address
/// changes").
const ACTIVE_CONNECTION_IDS: u64 = 4;
/// The receiver's max_ack_delay transport parameter, ms (quiche's default: 25).
const MAX_ACK_DELAY_MS: u64 = 5;
pub use crate::protocol::MAX_DATAGRAM_SIZE;

/// `live`'s loss threshold: the share of a round's bytes lost above which bbr2 takes the
/// pipe for full and lowers its ceiling (quiche's default 1.5%). Random loss of 10% stays
/// below it; a real bottleneck's tail drops during a probe do not, and bbr2's rate model
/// stops at the bottleneck's rate whatever the threshold (docs/CONGESTION.md).
const LIVE_LOSS_THRESHOLD: f32 = 0.2;
/// `live`'s initial window, packets (quiche's default 10): a 720p keyframe (60 kB) goes in
/// the first round trip instead of the third.
const LIVE_INITIAL_WINDOW: usize = 32;

/// quiche's bbr2 with the parameters of [`CongestionControl::Live`]. The API is
/// doc-hidden (quiche feature `internal`), so quiche is pinned to one version.
fn live_bbr() -> quiche::BbrParams {
    quiche::BbrParams {
        loss_threshold: Some(LIVE_LOSS_THRESHOLD),
        ..quiche::BbrParams::default()
    }
}

fn common(config: &mut quiche::Config, cc: CongestionControl) -> Result<(), SetupError> {
    cc.apply(config);
    config
        .set_application_protos(&[ALPN])
        .map_err(SetupError::Alpn)?;
    config.set_max_idle_timeout(IDLE_TIMEOUT_MS);
    config.set_max_recv_udp_payload_size(65527);
    config.set_max_send_udp_payload_size(MAX_DATAGRAM_SIZE);
    // Generous windows: a 4K intra picture can be several MB and must not stall on credit.
    config.set_initial_max_data(64 << 20);
    config.set_initial_max_stream_data_bidi_local(1 << 20);
    config.set_initial_max_stream_data_bidi_remote(1 << 20);
    config.set_initial_max_stream_data_uni(16 << 20);
    config.set_max_connection_window(128 << 20);
    config.set_max_stream_window(32 << 20);
    // Room for a receiver to change address: each change takes a spare connection ID and
    // a path slot on both sides.
    config.set_active_connection_id_limit(ACTIVE_CONNECTION_IDS);
    config.enable_pacing(true);
    Ok(())
}

/// `path`, opened as files.rs opens what we read, for a loader that takes a path.
fn open_checked(what: &'static str, path: &str, max: u64) -> Result<std::fs::File, SetupError> {
    files::open(Path::new(path), max).map_err(|source| SetupError::Open {
        what,
        path: path.into(),
        source,
    })
}

/// Where the sender's certificate comes from.
pub enum Identity {
    /// A PEM certificate chain and its private key.
    Files { cert: String, key: String },
    /// Made by us: for this run (`self-signed`), or kept from the first.
    SelfSigned(SelfSigned),
}

/// Server side: our certificate and key. Returns the config and the SHA-256 fingerprint of
/// our leaf certificate, which receivers can pin.
pub fn server(
    identity: &Identity,
    cc: CongestionControl,
) -> Result<(quiche::Config, Fingerprint), SetupError> {
    let (mut config, fingerprint) = match identity {
        Identity::Files { cert, key } => {
            if cert.is_empty() || key.is_empty() {
                return Err(SetupError::Unpaired);
            }
            let cert_file = open_checked("certificate file", cert, files::MAX_PEM)?;
            let key_file = open_checked("key file", key, files::MAX_PEM)?;
            let mut config = new_config()?;
            config
                .load_cert_chain_from_pem_file(&files::path_of(&cert_file))
                .map_err(|_| SetupError::NotCertChain { path: cert.into() })?;
            config
                .load_priv_key_from_pem_file(&files::path_of(&key_file))
                .map_err(|_| SetupError::NotKey { path: key.into() })?;
            let fingerprint = Fingerprint::of_pem_file(cert).map_err(SetupError::Cert)?;
            (config, fingerprint)
        }
        Identity::SelfSigned(made) => {
            let tls = SetupError::Tls;
            let mut ctx = SslContextBuilder::new(SslMethod::tls()).map_err(tls)?;
            ctx.set_certificate(&made.cert).map_err(tls)?;
            ctx.set_private_key(&made.key).map_err(tls)?;
            let config = quiche::Config::with_boring_ssl_ctx_builder(quiche::PROTOCOL_VERSION, ctx)
                .map_err(SetupError::Quiche)?;
            (config, made.fingerprint())
        }
    };
    common(&mut config, cc)?;
    // One control stream per receiver; media streams are ours.
    config.set_initial_max_streams_bidi(1);
    config.set_initial_max_streams_uni(0);
    Ok((config, fingerprint))
}

/// Client side: how to check the server's certificate, and how long a silent sender may
/// stay silent before the connection counts as lost.
pub fn client(
    verify: bool,
    ca_file: Option<&str>,
    cc: CongestionControl,
    idle_timeout: Duration,
) -> Result<quiche::Config, SetupError> {
    let mut config = new_config()?;
    config.verify_peer(verify);
    if let Some(ca) = ca_file.filter(|ca| !ca.is_empty()) {
        let ca_file = open_checked("CA file", ca, files::MAX_CA_FILE)?;
        config
            .load_verify_locations_from_file(&files::path_of(&ca_file))
            .map_err(|_| SetupError::NotCaFile { path: ca.into() })?;
    } else if verify {
        // Fall back to the system trust store, as any TLS client would.
        let _ = config.load_verify_locations_from_directory("/etc/ssl/certs");
    }
    common(&mut config, cc)?;
    config.set_max_idle_timeout(idle_timeout.as_millis().try_into().unwrap_or(u64::MAX));
    // quiche acknowledges as soon as the loop sends, which it does after every read: say
    // so, or the sender's probe timeout waits out 25 ms of ACK delay that never happens.
    config.set_max_ack_delay(MAX_ACK_DELAY_MS);
    config.set_initial_max_streams_bidi(0);
    // Group streams: enough for every group a few seconds of live video can open.
    config.set_initial_max_streams_uni(1000);
    Ok(config)
}

fn new_config() -> Result<quiche::Config, SetupError> {
    quiche::Config::new(quiche::PROTOCOL_VERSION).map_err(SetupError::Quiche)
}
