//! Trust on first use, as SSH does it: with no CA, pin or `tls-verify` configured, a
//! receiver remembers the fingerprint of each sender's certificate under the host and port
//! it dialled, in a `known_hosts` file, and refuses a sender whose certificate has changed.
//!
//! One line per sender, `host:port SHA-256`, fingerprints as `Fingerprint` prints them;
//! lines starting with `#` and lines that do not parse are kept and ignored.

use super::tls::Fingerprint;
use std::io::Write;
use std::net::SocketAddr;
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
    pub fn check(&self, got: Fingerprint) -> Result<Verdict, String> {
        let path = self.path.display();
        let contents = match std::fs::read_to_string(&self.path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
            Err(e) => return Err(format!("cannot read known hosts file '{path}': {e}")),
        };
        let verdict = judge(&contents, &self.host, got);
        match &verdict {
            Verdict::Known => {}
            Verdict::New => self
                .record(got, contents.is_empty())
                .map_err(|e| format!("cannot record the sender in '{path}': {e}"))?,
            Verdict::Changed { was, line } => {
                return Err(format!(
                    "the certificate of {host} has CHANGED: {path} (line {line}) trusts \
                     SHA-256 {was}, it now presents SHA-256 {got}. Someone may be \
                     impersonating the sender, or its certificate was replaced: if you \
                     know it was, delete line {line} of {path}, or pin the new one with \
                     certificate-fingerprint={got}",
                    host = self.host
                ))
            }
        }
        Ok(verdict)
    }

    /// What [`KnownHosts::check`] says of the certificate `peer` presented (DER), if any:
    /// Some(fingerprint) when it was trusted now, for the first time.
    pub fn check_peer(
        &self,
        peer: SocketAddr,
        der: Option<&[u8]>,
    ) -> Result<Option<Fingerprint>, String> {
        let der = der.ok_or_else(|| format!("{peer} presented no certificate to trust"))?;
        let fingerprint = Fingerprint::of_der(der);
        let verdict = self.check(fingerprint)?;
        Ok((verdict == Verdict::New).then_some(fingerprint))
    }

    fn record(&self, got: Fingerprint, fresh: bool) -> std::io::Result<()> {
        if let Some(dir) = self.path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.path)?;
        let mut text = String::new();
        if fresh {
            text.push_str("# quicnalusrc: senders trusted on first use (host:port SHA-256)\n");
        }
        text.push_str(&format!("{} {got}\n", self.host));
        // One write with O_APPEND: two receivers recording at once do not interleave.
        file.write_all(text.as_bytes())
    }
}

/// `dir/name`, where `dir` is the user's data directory for quicnalu.
pub fn user_file(data_dir: &Path, name: &str) -> PathBuf {
    data_dir.join("quicnalu").join(name)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::transport::tls::SelfSigned;

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
        assert_eq!(known.check(a), Ok(Verdict::New));
        assert_eq!(known.check(a), Ok(Verdict::Known));
        let changed = known.check(b).unwrap_err();
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
        assert_eq!(other.check(b), Ok(Verdict::New));
        let peer = "192.0.2.1:4444".parse().unwrap();
        assert!(other
            .check_peer(peer, None)
            .unwrap_err()
            .contains("no certificate"));
        let text = std::fs::read_to_string(&known.path).unwrap();
        assert_eq!(text.lines().count(), 3, "{text}");
    }
}
