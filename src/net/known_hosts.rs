//! Trust on first use, as SSH does it: with no CA, pin or `tls-verify` configured, a
//! receiver remembers the fingerprint of each sender's certificate under the host and port
//! it dialled, in a `known_hosts` file, and refuses a sender whose certificate has changed.
//!
//! One line per sender, `host:port SHA-256`, fingerprints as `Fingerprint` prints them;
//! lines starting with `#` and lines that do not parse are kept and ignored.

use crate::net::files;
use crate::net::tls::Fingerprint;
use std::fmt;
use std::io::{Read, Write};
use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

/// What a known_hosts file says of a sender presenting a certificate.
#[derive(Debug, PartialEq, Eq)]
pub enum Verdict {
    /// The file has this host with this fingerprint.
    Known,
    /// The file does not name the host: trusted now, and to be recorded.
    New,
    /// The file names the host with another fingerprint, on `line` (from 1).
    Changed { was: Fingerprint, line: usize },
}

/// The verdict of `contents` (a known_hosts file) on `host` presenting `got`.
pub fn judge(contents: &str, host: &str, got: Fingerprint) -> Verdict {
    let mut verdict = Verdict::New;
    for (n, line) in contents.lines().enumerate() {
        let mut fields = line.split_whitespace();
        let (Some(name), Some(print)) = (fields.next(), fields.next()) else {
            continue;
        };
        if name != host || name.starts_with('#') {
            continue;
        }
        match Fingerprint::parse(print) {
            Ok(f) if f == got => return Verdict::Known,
            Ok(was) => verdict = Verdict::Changed { was, line: n + 1 },
            Err(_) => {}
        }
    }
    verdict
}

/// The name a sender is remembered by: `host:port`, an IPv6 address in brackets.
pub fn host_key(host: &str, port: u16) -> String {
    if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

/// Why a known_hosts file does not let a receiver trust the certificate it was shown.
#[derive(Debug)]
pub enum CheckError {
    /// The sender presented no certificate at all.
    NoCertificate { peer: SocketAddr },
    /// The file cannot be opened, locked or read.
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    /// The file is larger than files::MAX_KNOWN_HOSTS.
    TooLarge { path: PathBuf },
    /// The new sender cannot be written down.
    Record {
        path: PathBuf,
        source: std::io::Error,
    },
    /// The file trusts another certificate for `host`, on `line`.
    Changed {
        host: String,
        path: PathBuf,
        line: usize,
        was: Fingerprint,
        got: Fingerprint,
    },
}

impl fmt::Display for CheckError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CheckError::NoCertificate { peer } => {
                write!(f, "{peer} presented no certificate to trust")
            }
            CheckError::Read { path, source } => write!(
                f,
                "cannot read known hosts file '{}': {source}",
                path.display()
            ),
            CheckError::TooLarge { path } => write!(
                f,
                "known hosts file '{}' is larger than {} bytes",
                path.display(),
                files::MAX_KNOWN_HOSTS
            ),
            CheckError::Record { path, source } => write!(
                f,
                "cannot record the sender in '{}': {source}",
                path.display()
            ),
            CheckError::Changed {
                host,
                path,
                line,
                was,
                got,
            } => {
                let path = path.display();
                write!(
                    f,
                    "the certificate of {host} has CHANGED: {path} (line {line}) trusts \
                     SHA-256 {was}, it now presents SHA-256 {got}. Someone may be \
                     impersonating the sender, or its certificate was replaced: if you \
                     know it was, delete line {line} of {path}, or pin the new one with \
                     certificate-fingerprint={got}"
                )
            }
        }
    }
}

impl std::error::Error for CheckError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            CheckError::Read { source, .. } | CheckError::Record { source, .. } => Some(source),
            _ => None,
        }
    }
}

/// One receiver's view of a known_hosts file: the file, and the sender it is about.
#[derive(Debug, Clone)]
pub struct KnownHosts {
    pub path: PathBuf,
    pub host: String,
}

impl KnownHosts {
    /// Judges `got`, recording it when the host is new. Err: the certificate changed, or
    /// the file cannot be read or written (trusting without remembering would trust
    /// whoever answers next time too).
    pub fn check(&self, got: Fingerprint) -> Result<Verdict, CheckError> {
        let path = || self.path.clone();
        let unreadable = |source| CheckError::Read {
            path: path(),
            source,
        };
        let mut file = self.open_locked().map_err(unreadable)?;
        let mut bytes = Vec::new();
        (&mut file)
            .take(files::MAX_KNOWN_HOSTS + 1)
            .read_to_end(&mut bytes)
            .map_err(unreadable)?;
        if bytes.len() as u64 > files::MAX_KNOWN_HOSTS {
            return Err(CheckError::TooLarge { path: path() });
        }
        let contents = String::from_utf8_lossy(&bytes);
        let verdict = judge(&contents, &self.host, got);
        match &verdict {
            Verdict::Known => {}
            Verdict::New => self
                .record(&mut file, got, contents.is_empty())
                .map_err(|source| CheckError::Record {
                    path: path(),
                    source,
                })?,
            &Verdict::Changed { was, line } => {
                return Err(CheckError::Changed {
                    host: self.host.clone(),
                    path: path(),
                    line,
                    was,
                    got,
                })
            }
        }
        Ok(verdict)
    }

    /// The file, made private if new (in a private folder), a regular file never reached
    /// through a link, held under an exclusive lock so that receivers meeting the same new
    /// sender at once judge one after the other: the first records, the rest see it.
    fn open_locked(&self) -> std::io::Result<std::fs::File> {
        if let Some(dir) = self.path.parent() {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir)?;
        }
        let file = std::fs::File::options()
            .read(true)
            .append(true)
            .create(true)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
            .open(&self.path)
            .map_err(|e| match e.raw_os_error() {
                Some(libc::ELOOP) => std::io::Error::new(
                    std::io::ErrorKind::InvalidInput,
                    "it is a symbolic link: name the file it points to",
                ),
                _ => e,
            })?;
        if !file.metadata()?.is_file() {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                "it is not a regular file (a folder, FIFO, socket or device)",
            ));
        }
        lock(&file)?;
        Ok(file)
    }
    /// What [`KnownHosts::check`] says of the certificate `peer` presented (DER), if any:
    /// Some(fingerprint) when it was trusted now, for the first time.
    pub fn check_peer(
        &self,
        peer: SocketAddr,
        der: Option<&[u8]>,
    ) -> Result<Option<Fingerprint>, CheckError> {
        let der = der.ok_or(CheckError::NoCertificate { peer })?;
        let fingerprint = Fingerprint::of_der(der);
        let verdict = self.check(fingerprint)?;
        Ok((verdict == Verdict::New).then_some(fingerprint))
    }

    fn record(
        &self,
        file: &mut std::fs::File,
        got: Fingerprint,
        fresh: bool,
    ) -> std::io::Result<()> {
        let mut text = String::new();
        if fresh {
            text.push_str("# quicnalusrc: senders trusted on first use (host:port SHA-256)\n");
        }
        text.push_str(&format!("{} {got}\n", self.host));
        file.write_all(text.as_bytes())?;
        file.sync_data()
    }
}

/// How long a receiver waits for another to finish with the file: each holds it for one
/// read and one short write.
const LOCK_WAIT: std::time::Duration = std::time::Duration::from_secs(2);

/// Takes `file`'s exclusive lock (released when it is closed), without ever blocking for
/// longer than LOCK_WAIT.
fn lock(file: &std::fs::File) -> std::io::Result<()> {
    let until = std::time::Instant::now() + LOCK_WAIT;
    loop {
        // SAFETY: flock on a descriptor we own; it touches no memory.
        if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } == 0 {
            return Ok(());
        }
        let e = std::io::Error::last_os_error();
        if e.raw_os_error() != Some(libc::EWOULDBLOCK) || std::time::Instant::now() >= until {
            return Err(e);
        }
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
}

/// `dir/name`, where `dir` is the user's data directory for quicnalu.
pub fn user_file(data_dir: &Path, name: &str) -> PathBuf {
    data_dir.join("quicnalu").join(name)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::net::tls::SelfSigned;

    fn print() -> Fingerprint {
        SelfSigned::generate(&["localhost"]).unwrap().fingerprint()
    }

    #[test]
    fn a_host_is_new_then_known_then_changed() {
        let (a, b) = (print(), print());
        let host = host_key("127.0.0.1", 4443);
        assert_eq!(judge("", &host, a), Verdict::New);
        let file = format!("# comment\nother:1 {b}\n{host} {a}\n");
        assert_eq!(judge(&file, &host, a), Verdict::Known);
        assert_eq!(judge(&file, &host, b), Verdict::Changed { was: a, line: 3 });
        assert_eq!(judge(&file, "127.0.0.1:4444", b), Verdict::New);
        assert_eq!(
            judge("garbage\n\n127.0.0.1:4443 nope\n", &host, a),
            Verdict::New
        );
        assert_eq!(host_key("::1", 9), "[::1]:9");
    }

    #[test]
    fn the_file_records_the_first_sender_and_refuses_a_changed_one() {
        let dir = tempfile::tempdir().unwrap();
        let known = KnownHosts {
            path: user_file(dir.path(), "known_hosts"),
            host: host_key("camera.local", 4443),
        };
        let (a, b) = (print(), print());
        assert_eq!(known.check(a).unwrap(), Verdict::New);
        assert_eq!(known.check(a).unwrap(), Verdict::Known);
        let changed = known.check(b).unwrap_err();
        assert!(
            matches!(changed, CheckError::Changed { line: 2, was, got, .. } if was == a && got == b),
            "{changed:?}"
        );
        let changed = changed.to_string();
        assert!(
            changed.contains("camera.local:4443 has CHANGED"),
            "{changed}"
        );
        assert!(
            changed.contains(&format!("(line 2) trusts SHA-256 {a}")),
            "{changed}"
        );
        let other = KnownHosts {
            host: host_key("camera.local", 4444),
            ..known.clone()
        };
        assert_eq!(other.check(b).unwrap(), Verdict::New);
        let peer = "192.0.2.1:4444".parse().unwrap();
        assert!(other
            .check_peer(peer, None)
            .unwrap_err()
            .to_string()
            .contains("no certificate"));
        let text = std::fs::read_to_string(&known.path).unwrap();
        assert_eq!(text.lines().count(), 3, "{text}");
    }

    #[test]
    fn receivers_recording_a_first_use_at_once_trust_one_certificate() {
        // Each round, several receivers meet the same new host at once, each shown another
        // certificate: one is trusted, every other is refused as a change.
        let prints: Vec<Fingerprint> = (0..6).map(|_| print()).collect();
        for round in 0..20 {
            let dir = tempfile::tempdir().unwrap();
            let known = KnownHosts {
                path: user_file(dir.path(), "known_hosts"),
                host: host_key("camera.local", 4443),
            };
            let start = std::sync::Barrier::new(prints.len());
            let verdicts: Vec<_> = std::thread::scope(|s| {
                let threads: Vec<_> = prints
                    .iter()
                    .map(|&p| {
                        let (known, start) = (&known, &start);
                        s.spawn(move || {
                            start.wait();
                            known.check(p)
                        })
                    })
                    .collect();
                threads.into_iter().map(|t| t.join().unwrap()).collect()
            });
            let trusted = verdicts.iter().filter(|v| v.is_ok()).count();
            let text = std::fs::read_to_string(&known.path).unwrap();
            assert_eq!(trusted, 1, "round {round}: {verdicts:?}\n{text}");
            assert_eq!(text.matches("camera.local:4443").count(), 1, "{text}");
        }
    }

    #[test]
    fn the_file_is_private_and_never_reached_through_a_link() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let known = KnownHosts {
            path: user_file(dir.path(), "known_hosts"),
            host: host_key("camera.local", 4443),
        };
        // A umask that would leave it readable to everyone.
        let old = unsafe { libc::umask(0o022) };
        let recorded = known.check(print());
        unsafe { libc::umask(old) };
        assert_eq!(recorded.unwrap(), Verdict::New);
        let mode = std::fs::metadata(&known.path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600, "{mode:o}");

        let elsewhere = dir.path().join("elsewhere");
        std::fs::write(&elsewhere, "").unwrap();
        let linked = KnownHosts {
            path: dir.path().join("linked"),
            ..known.clone()
        };
        std::os::unix::fs::symlink(&elsewhere, &linked.path).unwrap();
        let refused = linked.check(print()).unwrap_err();
        assert!(matches!(refused, CheckError::Read { .. }), "{refused:?}");
        assert!(refused.to_string().contains("symbolic link"), "{refused}");
        assert_eq!(std::fs::read_to_string(&elsewhere).unwrap(), "");
    }
}
