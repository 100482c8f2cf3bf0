//! A raw QUIC peer for hostile tests: one quiche connection driven directly over a UDP
//! socket on loopback, so a test can play a client or a server that writes whatever it
//! likes on whatever streams the transport lets it open.

use super::{certs, WATCHDOG};
use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

/// A raw receiver's first bytes: the control stream's opening and a HELLO with no token,
/// options or latency.
pub fn hello_bytes() -> Vec<u8> {
    use gstquicnalu::protocol::{put_preamble, Command, StreamKind, VERSION};
    let mut out = Vec::new();
    put_preamble(&mut out, StreamKind::Control);
    Command::Hello {
        version: VERSION,
        options: 0,
        token: Vec::new(),
        latency: None,
        route: None,
    }
    .encode(&mut out);
    out
}

/// Flow-control windows a raw peer advertises.
#[derive(Clone, Copy, Debug)]
pub struct Windows {
    pub max_data: u64,
    pub stream_data: u64,
    pub max_streams_uni: u64,
    pub max_streams_bidi: u64,
}

impl Default for Windows {
    /// What quicnalusrc advertises (transport/config.rs).
    fn default() -> Self {
        Windows {
            max_data: 64 << 20,
            stream_data: 16 << 20,
            max_streams_uni: 1000,
            max_streams_bidi: 0,
        }
    }
}

fn config(windows: Windows) -> quiche::Config {
    let mut config = quiche::Config::new(quiche::PROTOCOL_VERSION).expect("quiche config");
    config
        .set_application_protos(&[gstquicnalu::protocol::ALPN])
        .expect("ALPN");
    config.set_max_idle_timeout(WATCHDOG.as_millis() as u64);
    config.set_max_recv_udp_payload_size(65527);
    config.set_max_send_udp_payload_size(1350);
    config.set_initial_max_data(windows.max_data);
    config.set_initial_max_stream_data_bidi_local(windows.stream_data);
    config.set_initial_max_stream_data_bidi_remote(windows.stream_data);
    config.set_initial_max_stream_data_uni(windows.stream_data);
    // Never more than advertised: the peer's credit grows only as the test reads.
    config.set_max_connection_window(windows.max_data);
    config.set_max_stream_window(windows.stream_data);
    config.set_initial_max_streams_uni(windows.max_streams_uni);
    config.set_initial_max_streams_bidi(windows.max_streams_bidi);
    config.set_disable_active_migration(true);
    config
}

/// Settings for a raw client: no certificate check.
pub fn client_config(windows: Windows) -> quiche::Config {
    let mut c = config(windows);
    c.verify_peer(false);
    c
}

/// Settings for a raw server with the tests' self-signed certificate.
pub fn server_config(windows: Windows) -> quiche::Config {
    let mut c = config(windows);
    let certs = certs();
    c.load_cert_chain_from_pem_file(&certs.cert).expect("cert");
    c.load_priv_key_from_pem_file(&certs.key).expect("key");
    c
}

pub struct RawPeer {
    pub conn: quiche::Connection,
    socket: UdpSocket,
    local: SocketAddr,
    buf: Vec<u8>,
    out: Vec<u8>,
}

fn random_cid() -> [u8; quiche::MAX_CONN_ID_LEN] {
    let mut id = [0; quiche::MAX_CONN_ID_LEN];
    getrandom::fill(&mut id).expect("random");
    id
}

impl RawPeer {
    /// A client connection to `server`; [`RawPeer::pump`] drives the handshake (and any
    /// Retry the server asks for).
    pub fn connect(server: SocketAddr, config: &mut quiche::Config) -> RawPeer {
        RawPeer::connect_from("127.0.0.1".parse().unwrap(), server, config)
    }

    /// Like [`RawPeer::connect`], from `ip` (any of 127.0.0.0/8 is this host's).
    pub fn connect_from(
        ip: std::net::IpAddr,
        server: SocketAddr,
        config: &mut quiche::Config,
    ) -> RawPeer {
        let socket = UdpSocket::bind(SocketAddr::new(ip, 0)).expect("bind");
        let local = socket.local_addr().unwrap();
        let scid = random_cid();
        let scid = quiche::ConnectionId::from_ref(&scid);
        let conn = quiche::connect(Some("localhost"), &scid, local, server, config)
            .expect("quiche connect");
        RawPeer::new(socket, conn)
    }

    /// A client connection to `server`, pumped until the handshake completes.
    pub fn connected(server: SocketAddr, windows: Windows) -> RawPeer {
        let mut peer = RawPeer::connect(server, &mut client_config(windows));
        peer.pump_until("the handshake", |c| c.is_established() || c.is_closed());
        assert!(
            peer.conn.is_established(),
            "handshake failed: {:?}",
            peer.conn.peer_error()
        );
        peer
    }

    /// Waits on `socket` for a client's first Initial packet and accepts that client.
    pub fn accept(socket: UdpSocket, config: &mut quiche::Config) -> RawPeer {
        let local = socket.local_addr().unwrap();
        let mut buf = vec![0; 65536];
        socket.set_read_timeout(Some(WATCHDOG)).unwrap();
        loop {
            let (n, from) = socket.recv_from(&mut buf).expect("a client's first packet");
            let Ok(hdr) = quiche::Header::from_slice(&mut buf[..n], quiche::MAX_CONN_ID_LEN) else {
                continue;
            };
            if hdr.ty != quiche::Type::Initial {
                continue;
            }
            let scid = random_cid();
            let scid = quiche::ConnectionId::from_ref(&scid);
            let mut conn = quiche::accept(&scid, None, local, from, config).expect("accept");
            conn.recv(&mut buf[..n], quiche::RecvInfo { from, to: local })
                .expect("first packet");
            return RawPeer::new(socket, conn);
        }
    }

    fn new(socket: UdpSocket, conn: quiche::Connection) -> RawPeer {
        let local = socket.local_addr().unwrap();
        RawPeer {
            conn,
            socket,
            local,
            buf: vec![0; 65536],
            out: vec![0; 1350],
        }
    }

    /// Sends everything quiche has to send (paced or not).
    pub fn flush(&mut self) {
        loop {
            match self.conn.send(&mut self.out) {
                Ok((n, info)) => {
                    let _ = self.socket.send_to(&self.out[..n], info.to);
                }
                Err(quiche::Error::Done) => break,
                Err(e) => panic!("quiche send: {e}"),
            }
        }
    }

    /// Sends, then waits up to `wait` (less when a quiche timer is due) for datagrams and
    /// feeds in all that came; runs due timers; sends again.
    pub fn pump(&mut self, wait: Duration) {
        self.flush();
        let wait = self
            .conn
            .timeout()
            .map_or(wait, |t| t.min(wait))
            .max(Duration::from_millis(1));
        self.socket.set_read_timeout(Some(wait)).unwrap();
        let mut first = true;
        while let Ok((n, from)) = self.socket.recv_from(&mut self.buf) {
            let info = quiche::RecvInfo {
                from,
                to: self.local,
            };
            let _ = self.conn.recv(&mut self.buf[..n], info);
            if first {
                first = false;
                self.socket.set_nonblocking(true).unwrap();
            }
        }
        self.socket.set_nonblocking(false).unwrap();
        self.conn.on_timeout();
        self.flush();
    }

    /// Pumps until `done` says so; panics at the watchdog, naming `what` it waited for.
    pub fn pump_until(
        &mut self,
        what: &str,
        mut done: impl FnMut(&mut quiche::Connection) -> bool,
    ) {
        let give_up = Instant::now() + WATCHDOG;
        while !done(&mut self.conn) {
            assert!(Instant::now() < give_up, "no {what} within {WATCHDOG:?}");
            self.pump(Duration::from_millis(20));
        }
    }

    /// Writes all of `data` on `stream`, pumping while flow control holds it back; stops
    /// early (returning how much went) if the connection closes.
    pub fn send_all(&mut self, stream: u64, data: &[u8], fin: bool) -> usize {
        let mut sent = 0;
        let give_up = Instant::now() + WATCHDOG;
        while sent < data.len() || (fin && sent == 0 && data.is_empty()) {
            if self.conn.is_closed() {
                return sent;
            }
            match self.conn.stream_send(stream, &data[sent..], fin) {
                Ok(n) => sent += n,
                Err(quiche::Error::Done) => {}
                Err(e) => panic!("stream {stream}: {e}"),
            }
            if data.is_empty() {
                break;
            }
            if sent < data.len() {
                assert!(
                    Instant::now() < give_up,
                    "stream {stream} never took the bytes"
                );
                self.pump(Duration::from_millis(5));
            }
        }
        self.flush();
        sent
    }

    /// Reads everything readable on `stream` (None: every stream) and drops it; returns the
    /// bytes read.
    pub fn drain(&mut self, stream: Option<u64>) -> usize {
        let readable: Vec<u64> = self.conn.readable().collect();
        let mut total = 0;
        for s in readable
            .into_iter()
            .filter(|s| stream.is_none_or(|x| x == *s))
        {
            while let Ok((n, _)) = self.conn.stream_recv(s, &mut self.buf) {
                total += n;
            }
        }
        total
    }

    /// The CONNECTION_CLOSE the other side sent, as (application?, code, reason).
    pub fn peer_close(&self) -> Option<(bool, u64, String)> {
        self.conn.peer_error().map(|e| {
            (
                e.is_app,
                e.error_code,
                String::from_utf8_lossy(&e.reason).into_owned(),
            )
        })
    }
}
