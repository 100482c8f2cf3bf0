//! What connections write for offline analysis: a qlog file each (`qlog-dir`, JSON-SEQ,
//! for qvis and similar), and the TLS secrets (`keylog-file`, the NSS key log format that
//! Wireshark reads to decrypt a capture). Both are for debugging: the key log lets anyone
//! with the capture read the stream.

use std::fmt;
use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

/// qlog bytes one connection writes at most: about an hour of a busy connection. The file
/// is then cut short (its last record may be incomplete).
const QLOG_PER_CONNECTION: u64 = 64 << 20;
/// qlog bytes one element writes at most, over all its connections: a receiver that
/// reconnects for days, or a sender with many receivers, does not fill the disk.
const QLOG_TOTAL: u64 = 1 << 30;

/// Why the qlog folder or the key log cannot be used.
#[derive(Debug)]
pub enum OpenError {
    /// qlog-dir cannot be made.
    QlogDir {
        dir: PathBuf,
        source: std::io::Error,
    },
    /// keylog-file is a symbolic link.
    KeylogLink { path: PathBuf },
    /// keylog-file cannot be opened.
    Keylog {
        path: PathBuf,
        source: std::io::Error,
    },
    /// keylog-file, opened, cannot be asked what it is.
    KeylogStat {
        path: PathBuf,
        source: std::io::Error,
    },
    /// keylog-file is a folder, FIFO, socket or device.
    KeylogNotAFile { path: PathBuf },
    /// keylog-file exists and others may read it: these are its permission bits.
    KeylogShared { path: PathBuf, mode: u32 },
}

impl fmt::Display for OpenError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            OpenError::QlogDir { dir, source } => {
                write!(f, "cannot make qlog-dir '{}': {source}", dir.display())
            }
            OpenError::KeylogLink { path } => {
                write!(f, "keylog-file '{}' is a symbolic link", path.display())
            }
            OpenError::Keylog { path, source } => {
                write!(f, "cannot open keylog-file '{}': {source}", path.display())
            }
            OpenError::KeylogStat { path, source } => {
                write!(f, "keylog-file '{}': {source}", path.display())
            }
            OpenError::KeylogNotAFile { path } => {
                write!(f, "keylog-file '{}' is not a regular file", path.display())
            }
            OpenError::KeylogShared { path, mode } => write!(
                f,
                "keylog-file '{}' is open to others (mode {mode:o}): chmod 600 it, or name a \
                 new file",
                path.display()
            ),
        }
    }
}

impl std::error::Error for OpenError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            OpenError::QlogDir { source, .. }
            | OpenError::Keylog { source, .. }
            | OpenError::KeylogStat { source, .. } => Some(source),
            _ => None,
        }
    }
}

#[derive(Clone, Default)]
pub struct Capture {
    qlog_dir: Option<PathBuf>,
    keylog: Option<SharedFile>,
    /// qlog bytes this element may still write.
    qlog_left: Arc<AtomicU64>,
}

impl Capture {
    /// Checks that `qlog_dir` is a writable folder (made if missing) and opens `keylog_file`
    /// for appending (made if missing). Empty strings mean off.
    pub fn open(qlog_dir: Option<&str>, keylog_file: Option<&str>) -> Result<Self, OpenError> {
        let qlog_dir = match qlog_dir.filter(|d| !d.is_empty()) {
            Some(dir) => {
                std::fs::create_dir_all(dir).map_err(|source| OpenError::QlogDir {
                    dir: dir.into(),
                    source,
                })?;
                Some(PathBuf::from(dir))
            }
            None => None,
        };
        let keylog = match keylog_file.filter(|f| !f.is_empty()) {
            Some(path) => Some(SharedFile(Arc::new(Mutex::new(open_keylog(path)?)))),
            None => None,
        };
        Ok(Capture {
            qlog_dir,
            keylog,
            qlog_left: Arc::new(AtomicU64::new(QLOG_TOTAL)),
        })
    }

    /// Whether quiche must be told to export secrets (`Config::log_keys`).
    pub fn logs_keys(&self) -> bool {
        self.keylog.is_some()
    }

    /// Starts both for a new connection. `role` names the file: `<role>-<trace id>.sqlog`.
    pub fn attach(&self, conn: &mut quiche::Connection, role: &str) {
        if let Some(keylog) = &self.keylog {
            conn.set_keylog(Box::new(keylog.clone()));
        }
        let Some(dir) = &self.qlog_dir else {
            return;
        };
        // Named by the connection ID the peer chose: never over a file already there.
        let path = dir.join(format!("{role}-{}.sqlog", conn.trace_id()));
        let created = OpenOptions::new()
            .write(true)
            .create_new(true)
            .custom_flags(libc::O_NOFOLLOW)
            .open(&path);
        match created {
            Ok(file) => conn.set_qlog(
                Box::new(Capped {
                    out: BufWriter::new(file),
                    left: QLOG_PER_CONNECTION,
                    total_left: self.qlog_left.clone(),
                }),
                format!("quicnalu {role}"),
                format!("{role} connection {}", conn.trace_id()),
            ),
            Err(e) => log::warn!("cannot write qlog file {}: {e}", path.display()),
        }
    }
}

/// Opens the key log for appending: made readable by its owner only, a regular file never
/// reached through a symbolic link (nor a FIFO, which would block), and refused if it already exists readable by others, since the secrets
/// in it decrypt every captured connection.
fn open_keylog(path: &str) -> Result<File, OpenError> {
    let path = PathBuf::from(path);
    let file = OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(&path);
    let file = match file {
        Ok(file) => file,
        Err(e) if e.raw_os_error() == Some(libc::ELOOP) => {
            return Err(OpenError::KeylogLink { path })
        }
        Err(source) => return Err(OpenError::Keylog { path, source }),
    };
    let meta = match file.metadata() {
        Ok(meta) => meta,
        Err(source) => return Err(OpenError::KeylogStat { path, source }),
    };
    if !meta.is_file() {
        return Err(OpenError::KeylogNotAFile { path });
    }
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(OpenError::KeylogShared { path, mode });
    }
    Ok(file)
}

/// A qlog file that stops growing at its connection's share or the element's total:
/// past either, writes are dropped (quiche is told they succeeded; qlog is best effort).
struct Capped<W> {
    out: W,
    left: u64,
    total_left: Arc<AtomicU64>,
}

impl<W: Write> Write for Capped<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = buf.len() as u64;
        let granted = n <= self.left
            && self
                .total_left
                .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |t| t.checked_sub(n))
                .is_ok();
        if !granted {
            self.left = 0;
            return Ok(buf.len());
        }
        self.left -= n;
        self.out.write_all(buf)?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.out.flush()
    }
}

/// The key log, shared by every connection: quiche writes a whole line at a time.
#[derive(Clone)]
struct SharedFile(Arc<Mutex<File>>);

impl Write for SharedFile {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).write(buf)
    }

    fn write_all(&mut self, buf: &[u8]) -> std::io::Result<()> {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .write_all(buf)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_qlog_stops_at_its_share_and_all_of_them_at_the_total() {
        let total = Arc::new(AtomicU64::new(250));
        let capped = |left| Capped {
            out: Vec::new(),
            left,
            total_left: total.clone(),
        };
        let (mut a, mut b) = (capped(100), capped(1000));
        for _ in 0..20 {
            a.write_all(&[1; 30]).unwrap();
        }
        assert_eq!(a.out.len(), 90, "whole writes up to its share");
        for _ in 0..20 {
            b.write_all(&[2; 30]).unwrap();
        }
        assert_eq!(b.out.len(), 150, "then what is left of the total");
        assert_eq!(total.load(Ordering::Relaxed), 10);
    }

    #[test]
    fn a_key_log_others_can_read_or_reached_through_a_link_is_refused() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let shared = dir.path().join("keys");
        std::fs::write(&shared, "").unwrap();
        std::fs::set_permissions(&shared, std::fs::Permissions::from_mode(0o644)).unwrap();
        let e = open_keylog(shared.to_str().unwrap()).unwrap_err();
        assert!(
            matches!(e, OpenError::KeylogShared { mode: 0o644, .. }),
            "{e:?}"
        );
        assert_eq!(
            e.to_string(),
            format!(
                "keylog-file '{}' is open to others (mode 644): chmod 600 it, or name a new file",
                shared.display()
            )
        );
        let link = dir.path().join("link");
        std::os::unix::fs::symlink(&shared, &link).unwrap();
        let e = open_keylog(link.to_str().unwrap()).unwrap_err();
        assert!(matches!(e, OpenError::KeylogLink { .. }), "{e:?}");
        assert!(open_keylog(dir.path().join("new").to_str().unwrap()).is_ok());
    }

    /// A qlog file is named by the connection ID the peer chose: one already there, by
    /// chance or placed by someone, is left as it was.
    #[test]
    fn a_qlog_file_never_replaces_one_already_there() {
        let dir = tempfile::tempdir().unwrap();
        let capture = Capture::open(dir.path().to_str(), None).unwrap();
        let mut config = quiche::Config::new(quiche::PROTOCOL_VERSION).unwrap();
        let (local, peer) = (
            "127.0.0.1:1".parse().unwrap(),
            "127.0.0.1:2".parse().unwrap(),
        );
        let scid = quiche::ConnectionId::from_ref(&[7; 16]);
        let mut conn = quiche::connect(None, &scid, local, peer, &mut config).unwrap();
        let path = dir.path().join(format!("test-{}.sqlog", conn.trace_id()));
        std::fs::write(&path, "kept").unwrap();
        capture.attach(&mut conn, "test");
        drop(conn);
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "kept");

        let mut fresh = quiche::connect(None, &scid, local, peer, &mut config).unwrap();
        capture.attach(&mut fresh, "other");
        drop(fresh);
        let written = dir.path().join(format!("other-{}.sqlog", "07".repeat(16)));
        assert!(std::fs::metadata(written).unwrap().len() > 0);
    }
}
