//! A real moq-dev `moq-relay` on loopback, on ports it picks (port 0, read back from its
//! log), for the MoQ tests and the benchmark. The binary is the one
//! scripts/install-moq-peers.sh builds once per machine (`make test` runs it first).
//! Shared with the benchmark (benches/transport), so it stands alone.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{mpsc, OnceLock};
use std::time::Duration;

/// How long the relay may take to say where it listens.
const STARTUP: Duration = Duration::from_secs(60);

/// What scripts/install-moq-peers.sh prints for `peer` (building it once per machine), or
/// the path in the environment variable `env`.
fn peer_path(peer: &str, env: &str) -> PathBuf {
    if let Some(path) = std::env::var_os(env) {
        return PathBuf::from(path);
    }
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/install-moq-peers.sh");
    let out = Command::new(script)
        .arg(peer)
        .stderr(Stdio::inherit())
        .output()
        .expect("run scripts/install-moq-peers.sh");
    assert!(
        out.status.success(),
        "install-moq-peers.sh {peer} failed: {out:?}"
    );
    let path = String::from_utf8_lossy(&out.stdout);
    PathBuf::from(
        path.lines()
            .last()
            .expect("the script prints a path")
            .trim(),
    )
}

/// The moq-relay binary: `$QUICNALU_MOQ_RELAY`, or the one the install script built.
pub fn relay_binary() -> PathBuf {
    static BINARY: OnceLock<PathBuf> = OnceLock::new();
    BINARY
        .get_or_init(|| peer_path("relay", "QUICNALU_MOQ_RELAY"))
        .clone()
}

/// The folder holding moq-dev's GStreamer plugin (moqsink, moqsrc: libgstmoq.so):
/// `$QUICNALU_MOQ_GST`, or the one the install script built.
pub fn moq_gst_dir() -> PathBuf {
    peer_path("gst", "QUICNALU_MOQ_GST")
}

/// Loads moq-dev's plugin into this process, once.
pub fn load_moq_gst() {
    static LOADED: OnceLock<()> = OnceLock::new();
    LOADED.get_or_init(|| {
        gst::Plugin::load_file(moq_gst_dir().join("libgstmoq.so")).expect("load moq-dev's plugin");
    });
}

/// A relay that was stopped, to start again where it was.
pub struct StoppedRelay {
    port: u16,
    tls: Option<(String, String)>,
}

impl StoppedRelay {
    pub fn start(self) -> MoqRelay {
        MoqRelay::start_with(self.port, self.tls, &[])
    }
}

/// A running relay; killed on drop.
pub struct MoqRelay {
    child: Child,
    /// The certificate and key files it serves with, or None: one it made.
    tls: Option<(String, String)>,
    pub quic: SocketAddr,
    pub http: SocketAddr,
}

impl MoqRelay {
    /// One relay with a generated certificate for localhost and no authentication.
    pub fn start() -> MoqRelay {
        Self::start_with(0, None, &[])
    }

    /// One relay serving with this certificate and key (PEM files).
    pub fn with_certificate(cert: &str, key: &str) -> MoqRelay {
        Self::start_with(0, Some((cert.into(), key.into())), &[])
    }

    /// Stops this relay and starts another on the same QUIC port with the same
    /// certificate: what a publisher sees when its relay restarts.
    pub fn restart(self) -> MoqRelay {
        let (port, tls) = (self.quic.port(), self.tls.clone());
        drop(self);
        Self::start_with(port, tls, &[])
    }

    /// Stops this relay; [`StoppedRelay::start`] brings one back on the same port, with
    /// the same certificate.
    pub fn stop(self) -> StoppedRelay {
        StoppedRelay {
            port: self.quic.port(),
            tls: self.tls.clone(),
        }
    }

    /// A relay that joins `peer`'s cluster.
    pub fn clustered_with(peer: &MoqRelay) -> MoqRelay {
        let url = format!("https://localhost:{}/", peer.quic.port());
        Self::start_with(
            0,
            None,
            &["--cluster-connect", &url, "--connect-tls-insecure"],
        )
    }

    fn start_with(port: u16, tls: Option<(String, String)>, extra: &[&str]) -> MoqRelay {
        let identity = match &tls {
            Some((cert, key)) => vec!["--listen-tls-cert", cert, "--listen-tls-key", key],
            None => vec!["--listen-tls-generate", "localhost"],
        };
        let mut child = Command::new(relay_binary())
            .args(["--listen", &format!("127.0.0.1:{port}")])
            .args(identity)
            .args(["--auth-public", "**", "--web-http-listen", "127.0.0.1:0"])
            .args(extra)
            .env("NO_COLOR", "1")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start moq-relay");
        // Its log names the bound addresses; the rest is drained so the pipe never fills.
        let (tx, rx) = mpsc::channel();
        for pipe in [
            Box::new(child.stdout.take().unwrap()) as Box<dyn Read + Send>,
            Box::new(child.stderr.take().unwrap()),
        ] {
            let tx = tx.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(pipe).lines().map_while(Result::ok) {
                    if std::env::var_os("QUICNALU_MOQ_RELAY_LOG").is_some() {
                        eprintln!("moq-relay: {line}");
                    }
                    let _ = tx.send(line);
                }
            });
        }
        let (mut quic, mut http) = (None, None);
        while quic.is_none() || http.is_none() {
            let line = rx
                .recv_timeout(STARTUP)
                .expect("moq-relay says where it listens");
            let addr = line
                .split_whitespace()
                .find_map(|w| w.strip_prefix("addr="))
                .and_then(|a| a.parse::<SocketAddr>().ok());
            if line.contains("listening") && line.contains("kind=\"quic\"") {
                quic = addr;
            } else if line.contains("listening") && line.contains("kind=\"http\"") {
                http = addr;
            }
        }
        MoqRelay {
            child,
            tls,
            quic: quic.unwrap(),
            http: http.unwrap(),
        }
    }

    /// CPU seconds the relay has used (user + system).
    pub fn cpu_seconds(&self) -> f64 {
        let stat =
            std::fs::read_to_string(format!("/proc/{}/stat", self.child.id())).unwrap_or_default();
        let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
        let fields: Vec<f64> = rest
            .split_whitespace()
            .map(|f| f.parse().unwrap_or(0.0))
            .collect();
        (fields.get(11).unwrap_or(&0.0) + fields.get(12).unwrap_or(&0.0)) / 100.0
    }

    /// `moql://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("moql://{}", self.quic)
    }

    /// The SHA-256 of the relay's certificate, from its HTTP endpoint.
    pub fn fingerprint(&self) -> String {
        let mut stream = TcpStream::connect(self.http).expect("relay's HTTP port");
        write!(
            stream,
            "GET /certificate.sha256 HTTP/1.0\r\nHost: localhost\r\n\r\n"
        )
        .unwrap();
        let mut response = String::new();
        stream.read_to_string(&mut response).unwrap();
        let body = response.split("\r\n\r\n").nth(1).expect("an HTTP body");
        body.trim().to_string()
    }

    /// quicnalusink properties publishing `broadcast` here.
    pub fn sink_props(&self, broadcast: &str) -> String {
        format!(
            "moq-url={} moq-broadcast={broadcast} moq-certificate-fingerprint={}",
            self.url(),
            self.fingerprint()
        )
    }

    /// quicnalusrc properties subscribing to `broadcast` here.
    pub fn src_props(&self, broadcast: &str) -> String {
        format!(
            "moq-url={} moq-broadcast={broadcast} certificate-fingerprint={}",
            self.url(),
            self.fingerprint()
        )
    }
}

impl Drop for MoqRelay {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
