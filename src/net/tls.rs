//! Certificates: the sender's throw-away self-signed one, and SHA-256 fingerprints, with
//! which a receiver can pin the sender's leaf certificate instead of trusting a CA.
//!
//! BoringSSL does the work: quiche already links it, through the `boring` crate.

use crate::net::files;
use boring::asn1::{Asn1Integer, Asn1Time};
use boring::bn::BigNum;
use boring::ec::{EcGroup, EcKey};
use boring::error::ErrorStack;
use boring::hash::MessageDigest;
use boring::nid::Nid;
use boring::pkey::{PKey, Private};
use boring::x509::extension::SubjectAlternativeName;
use boring::x509::{X509Name, X509};
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};

/// How long a throw-away certificate is valid: one process, one session.
const SELF_SIGNED_DAYS: u32 = 30;
/// How long the kept one is: receivers trust it by fingerprint, not by date.
const KEPT_DAYS: u32 = 3650;
/// The names the kept certificate carries, for receivers that check names (ca-file).
const KEPT_NAMES: [&str; 3] = ["localhost", "127.0.0.1", "::1"];

/// Text that is not a SHA-256 fingerprint (`Fingerprint::parse`); it holds the text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NotAFingerprint(pub String);

impl fmt::Display for NotAFingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "'{}' is not a SHA-256 fingerprint (64 hex digits)",
            self.0
        )
    }
}

impl std::error::Error for NotAFingerprint {}

/// Why a certificate could not be read from a file, made, or kept.
#[derive(Debug)]
pub enum CertError {
    /// The file could not be read.
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    /// The file holds no PEM certificate.
    NotPem { path: PathBuf },
    /// The certificate read does not encode again.
    Encode { path: PathBuf, source: ErrorStack },
    /// BoringSSL could not make a self-signed certificate.
    Make(ErrorStack),
    /// The kept identity's file holds no certificate and key.
    NotKept { path: PathBuf, source: ErrorStack },
    /// A new identity could not be saved to be kept.
    Save {
        path: PathBuf,
        source: std::io::Error,
    },
}

impl fmt::Display for CertError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CertError::Read { path, source } => {
                write!(f, "cannot read '{}': {source}", path.display())
            }
            CertError::NotPem { path } => {
                write!(f, "'{}' is not a PEM certificate chain", path.display())
            }
            CertError::Encode { path, source } => write!(f, "'{}': {source}", path.display()),
            CertError::Make(e) => write!(f, "cannot make a self-signed certificate: {e}"),
            CertError::NotKept { path, source } => write!(
                f,
                "'{}' holds no certificate and key: {source} (delete it to make a new one)",
                path.display()
            ),
            CertError::Save { path, source } => write!(
                f,
                "cannot save the certificate in '{}': {source}",
                path.display()
            ),
        }
    }
}

impl std::error::Error for CertError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            CertError::Read { source, .. } | CertError::Save { source, .. } => Some(source),
            CertError::Encode { source, .. } | CertError::NotKept { source, .. } => Some(source),
            CertError::Make(e) => Some(e),
            CertError::NotPem { .. } => None,
        }
    }
}

/// The SHA-256 digest of a DER certificate.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Fingerprint([u8; 32]);

impl Fingerprint {
    pub fn of_der(der: &[u8]) -> Self {
        Fingerprint(boring::sha::sha256(der))
    }

    /// Reads 64 hex digits, in either case, with or without `:` between bytes, after an
    /// optional `sha-256 ` (the form SDP's a=fingerprint uses).
    pub fn parse(text: &str) -> Result<Self, NotAFingerprint> {
        let text = text.trim();
        let digits = text
            .strip_prefix("sha-256 ")
            .or_else(|| text.strip_prefix("SHA-256 "))
            .unwrap_or(text)
            .replace(':', "");
        let bad = || NotAFingerprint(text.to_string());
        // Hex digits only: from_str_radix alone would also take a sign ("+A").
        if digits.len() != 64 || !digits.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(bad());
        }
        let mut out = [0u8; 32];
        for (i, byte) in out.iter_mut().enumerate() {
            *byte = u8::from_str_radix(&digits[2 * i..2 * i + 2], 16).map_err(|_| bad())?;
        }
        Ok(Fingerprint(out))
    }

    /// The leaf (first) certificate of a PEM file.
    pub fn of_pem_file(path: &str) -> Result<Self, CertError> {
        let path = PathBuf::from(path);
        let pem = match files::read(&path, files::MAX_PEM) {
            Ok(pem) => pem,
            Err(source) => return Err(CertError::Read { path, source }),
        };
        let Ok(cert) = X509::from_pem(&pem) else {
            return Err(CertError::NotPem { path });
        };
        match cert.to_der() {
            Ok(der) => Ok(Self::of_der(&der)),
            Err(source) => Err(CertError::Encode { path, source }),
        }
    }
}

/// Upper-case hex bytes joined by `:`, as browsers and `openssl x509 -fingerprint` show it.
impl fmt::Display for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        for (i, b) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(":")?;
            }
            write!(f, "{b:02X}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// A certificate made for this run with a fresh P-256 key; receivers pin its fingerprint.
pub struct SelfSigned {
    pub cert: X509,
    pub key: PKey<Private>,
}

/// The kept identity's file, which must be the user's alone: a key others can read is no
/// longer the sender's.
fn read_private(path: &Path) -> std::io::Result<Vec<u8>> {
    use std::io::Read;
    use std::os::unix::fs::PermissionsExt;
    let file = files::open(path, files::MAX_PEM)?;
    let mode = file.metadata()?.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(std::io::Error::new(
            std::io::ErrorKind::PermissionDenied,
            format!("it is open to others (mode {mode:o}): chmod 600 it"),
        ));
    }
    let mut pem = Vec::new();
    file.take(files::MAX_PEM).read_to_end(&mut pem)?;
    Ok(pem)
}

impl SelfSigned {
    /// Valid for `names` (DNS names or IP addresses) from now for SELF_SIGNED_DAYS.
    pub fn generate(names: &[&str]) -> Result<Self, CertError> {
        Self::build(names, SELF_SIGNED_DAYS).map_err(CertError::Make)
    }

    /// The certificate kept in `path` (key and certificate, PEM), made and saved there
    /// first if there is none: the sender's lasting identity when none is configured, so
    /// that receivers which trusted it on first use trust it again. True when made now.
    pub fn kept_in(path: &Path) -> Result<(Self, bool), CertError> {
        let path_buf = || path.to_path_buf();
        match read_private(path) {
            Ok(pem) => {
                return Self::from_pem(&pem)
                    .map(|kept| (kept, false))
                    .map_err(|source| CertError::NotKept {
                        path: path_buf(),
                        source,
                    })
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(source) => {
                return Err(CertError::Read {
                    path: path_buf(),
                    source,
                })
            }
        }
        let made = Self::build(&KEPT_NAMES, KEPT_DAYS).map_err(CertError::Make)?;
        match made.save(path) {
            Ok(()) => Ok((made, true)),
            // Another sender made one first: that one is ours.
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Self::kept_in(path),
            Err(source) => Err(CertError::Save {
                path: path_buf(),
                source,
            }),
        }
    }

    /// Writes key and certificate to `path`, readable by the user only, all at once: a
    /// sender starting at the same moment finds either no file or the whole of it. The
    /// draft has a random name and is made new (never an existing file or a link), and
    /// reaches the disk before it gets its name: a crash leaves no half-written identity.
    fn save(&self, path: &Path) -> std::io::Result<()> {
        use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
        let mut pem = self
            .key
            .private_key_to_pem_pkcs8()
            .map_err(std::io::Error::other)?;
        pem.extend(self.cert.to_pem().map_err(std::io::Error::other)?);
        let dir = path.parent().unwrap_or(Path::new("."));
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)?;
        let mut nonce = [0u8; 8];
        getrandom::fill(&mut nonce).map_err(|e| std::io::Error::other(e.to_string()))?;
        let name = path.file_name().unwrap_or_default().to_string_lossy();
        let draft = dir.join(format!(
            ".{name}.{}",
            nonce.iter().map(|b| format!("{b:02x}")).collect::<String>()
        ));
        let written = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW)
            .open(&draft)
            .and_then(|mut f| {
                std::io::Write::write_all(&mut f, &pem)?;
                f.sync_all()
            });
        // A hard link fails if the name exists, where a rename would replace it.
        let linked = written.and_then(|()| std::fs::hard_link(&draft, path));
        let _ = std::fs::remove_file(&draft);
        linked?;
        std::fs::File::open(dir)?.sync_all()
    }

    fn from_pem(pem: &[u8]) -> Result<Self, ErrorStack> {
        Ok(SelfSigned {
            cert: X509::from_pem(pem)?,
            key: PKey::private_key_from_pem(pem)?,
        })
    }

    fn build(names: &[&str], days: u32) -> Result<Self, ErrorStack> {
        let group = EcGroup::from_curve_name(Nid::X9_62_PRIME256V1)?;
        let key = PKey::from_ec_key(EcKey::generate(&group)?)?;
        let mut name = X509Name::builder()?;
        name.append_entry_by_text("CN", "quicnalusink")?;
        let name = name.build();
        let mut serial = BigNum::new()?;
        serial.rand(64, boring::bn::MsbOption::MAYBE_ZERO, false)?;
        let serial = Asn1Integer::from_bn(&serial)?;

        let mut b = X509::builder()?;
        b.set_version(2)?;
        b.set_serial_number(&serial)?;
        b.set_subject_name(&name)?;
        b.set_issuer_name(&name)?;
        b.set_pubkey(&key)?;
        let (from, until) = (Asn1Time::days_from_now(0)?, Asn1Time::days_from_now(days)?);
        b.set_not_before(&from)?;
        b.set_not_after(&until)?;
        let mut san = SubjectAlternativeName::new();
        for n in names {
            if n.parse::<std::net::IpAddr>().is_ok() {
                san.ip(n);
            } else {
                san.dns(n);
            }
        }
        let san = san.build(&b.x509v3_context(None, None))?;
        b.append_extension(&san)?;
        b.sign(&key, MessageDigest::sha256())?;
        Ok(SelfSigned {
            cert: b.build(),
            key,
        })
    }

    pub fn fingerprint(&self) -> Fingerprint {
        // A certificate just built always encodes.
        Fingerprint::of_der(&self.cert.to_der().unwrap_or_default())
    }
}

/// What a certificate that does not name an address is instead.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NotNamed {
    /// It is not DER X.509.
    Unreadable,
    /// It has no subject alternative names.
    NoNames,
    /// Its names, `IP:...` and `DNS:...`, none of them the address.
    Others(Vec<String>),
}

/// A phrase for what the certificate is: "a certificate for DNS:localhost, IP:::1".
impl fmt::Display for NotNamed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            NotNamed::Unreadable => f.write_str("an unreadable certificate"),
            NotNamed::NoNames => f.write_str("a certificate with no subject alternative names"),
            NotNamed::Others(names) => write!(f, "a certificate for {}", names.join(", ")),
        }
    }
}

impl std::error::Error for NotNamed {}

/// Whether the DER certificate `der` names `ip` in its IP address SANs, as browsers and curl
/// check a certificate for an address; Err says which names it carries instead.
pub fn names_ip(der: &[u8], ip: IpAddr) -> Result<(), NotNamed> {
    let cert = X509::from_der(der).map_err(|_| NotNamed::Unreadable)?;
    let want = match ip {
        IpAddr::V4(v4) => v4.octets().to_vec(),
        IpAddr::V6(v6) => v6.octets().to_vec(),
    };
    let mut names = Vec::new();
    for name in cert.subject_alt_names().into_iter().flatten() {
        if let Some(bytes) = name.ipaddress() {
            if bytes == want.as_slice() {
                return Ok(());
            }
            let shown = match bytes.len() {
                4 => <[u8; 4]>::try_from(bytes).map(|b| IpAddr::from(b).to_string()),
                16 => <[u8; 16]>::try_from(bytes).map(|b| IpAddr::from(b).to_string()),
                _ => Ok(format!("{bytes:02x?}")),
            };
            names.push(format!("IP:{}", shown.unwrap_or_default()));
        } else if let Some(dns) = name.dnsname() {
            names.push(format!("DNS:{dns}"));
        }
    }
    Err(if names.is_empty() {
        NotNamed::NoNames
    } else {
        NotNamed::Others(names)
    })
}

/// What a receiver checks once TLS has accepted the sender's certificate.
#[derive(Clone, Copy, Debug)]
pub enum Check {
    /// `certificate-fingerprint`: exactly this certificate.
    Pin(Fingerprint),
    /// TLS checked the chain for no name (the address is an IP and `server-name` is
    /// unset): the address must be among its IP names. Else anyone holding a certificate
    /// from a trusted CA could stand in for any address, and would get the HELLO token.
    Address,
    /// TLS checked the name, or `tls-verify` is off.
    Done,
}

/// Why the certificate a peer presented, which TLS accepted, is not the peer's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// `certificate-fingerprint` is set, and the peer presented no certificate.
    NothingToPin { peer: SocketAddr },
    /// The peer presented `got`, not the pinned `pin`.
    Mismatch {
        peer: SocketAddr,
        got: Fingerprint,
        pin: Fingerprint,
    },
    /// The certificate does not name the address dialled; None: there was none.
    NotForAddress {
        peer: SocketAddr,
        presented: Option<NotNamed>,
    },
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Refusal::NothingToPin { peer } => write!(
                f,
                "{peer} presented no certificate to check certificate-fingerprint against"
            ),
            Refusal::Mismatch { peer, got, pin } => write!(
                f,
                "certificate fingerprint mismatch: {peer} presented SHA-256 {got}, \
                 but certificate-fingerprint is {pin}"
            ),
            Refusal::NotForAddress { peer, presented } => {
                match presented {
                    Some(shown) => write!(f, "{peer} presented {shown}")?,
                    None => write!(f, "{peer} presented no certificate")?,
                }
                write!(
                    f,
                    ", which does not name {}: set server-name to a name the certificate \
                     carries, or certificate-fingerprint to pin it",
                    peer.ip()
                )
            }
        }
    }
}

impl std::error::Error for Refusal {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Refusal::NotForAddress {
                presented: Some(e), ..
            } => Some(e),
            _ => None,
        }
    }
}

/// Why the certificate `der` that `peer` presented is not the sender's, if it is not.
pub fn refusal(check: Check, peer: SocketAddr, der: Option<&[u8]>) -> Option<Refusal> {
    match check {
        Check::Pin(pin) => {
            let Some(der) = der else {
                return Some(Refusal::NothingToPin { peer });
            };
            let got = Fingerprint::of_der(der);
            (got != pin).then_some(Refusal::Mismatch { peer, got, pin })
        }
        Check::Address => {
            let presented = match der {
                None => None,
                Some(der) => Some(names_ip(der, peer.ip()).err()?),
            };
            Some(Refusal::NotForAddress { peer, presented })
        }
        Check::Done => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_address_must_be_among_the_ip_names() {
        let cert = SelfSigned::generate(&["localhost", "192.0.2.1", "::1"]).unwrap();
        let der = cert.cert.to_der().unwrap();
        assert!(names_ip(&der, "192.0.2.1".parse().unwrap()).is_ok());
        assert!(names_ip(&der, "::1".parse().unwrap()).is_ok());
        let refused = names_ip(&der, "127.0.0.1".parse().unwrap()).unwrap_err();
        assert_eq!(
            refused.to_string(),
            "a certificate for DNS:localhost, IP:192.0.2.1, IP:::1"
        );
        assert_eq!(
            names_ip(b"junk", "127.0.0.1".parse().unwrap()),
            Err(NotNamed::Unreadable)
        );
    }

    #[test]
    fn a_certificate_is_refused_by_pin_or_by_address() {
        let cert = SelfSigned::generate(&["localhost", "192.0.2.1"]).unwrap();
        let der = cert.cert.to_der().unwrap();
        let other = SelfSigned::generate(&["localhost"]).unwrap().fingerprint();
        let at = |ip: &str| SocketAddr::new(ip.parse().unwrap(), 4443);
        let pinned = Check::Pin(cert.fingerprint());
        assert_eq!(refusal(pinned, at("127.0.0.1"), Some(&der)), None);
        let wrong = refusal(Check::Pin(other), at("127.0.0.1"), Some(&der)).unwrap();
        let wrong = wrong.to_string();
        assert!(
            wrong.starts_with("certificate fingerprint mismatch"),
            "{wrong}"
        );
        assert_eq!(
            refusal(pinned, at("127.0.0.1"), None),
            Some(Refusal::NothingToPin {
                peer: at("127.0.0.1")
            })
        );

        assert_eq!(refusal(Check::Address, at("192.0.2.1"), Some(&der)), None);
        let elsewhere = refusal(Check::Address, at("127.0.0.1"), Some(&der)).unwrap();
        let elsewhere = elsewhere.to_string();
        assert!(
            elsewhere.contains("DNS:localhost, IP:192.0.2.1, which does not name 127.0.0.1"),
            "{elsewhere}"
        );
        let none = refusal(Check::Address, at("127.0.0.1"), None).unwrap();
        assert!(
            none.to_string()
                .starts_with("127.0.0.1:4443 presented no certificate, which does not name"),
            "{none}"
        );
        assert_eq!(refusal(Check::Done, at("127.0.0.1"), None), None);
    }

    #[test]
    fn a_fingerprint_is_hex_digits_and_nothing_else() {
        // Found by fuzz/targets/known_hosts: from_str_radix takes a leading '+'.
        let e = Fingerprint::parse(&"+A".repeat(32)).unwrap_err();
        assert_eq!(
            e.to_string(),
            format!(
                "'{}' is not a SHA-256 fingerprint (64 hex digits)",
                "+A".repeat(32)
            )
        );
        assert!(Fingerprint::parse(&"0A".repeat(32)).is_ok());
    }

    #[test]
    fn fingerprints_print_and_parse_both_ways() {
        let cert = SelfSigned::generate(&["localhost", "127.0.0.1"]).unwrap();
        let f = cert.fingerprint();
        let shown = f.to_string();
        assert_eq!(shown.len(), 32 * 3 - 1);
        assert_eq!(Fingerprint::parse(&shown).unwrap(), f);
        let plain = shown.replace(':', "").to_lowercase();
        assert_eq!(Fingerprint::parse(&plain).unwrap(), f);
        assert_eq!(Fingerprint::parse(&format!("sha-256 {shown}")).unwrap(), f);
        assert!(Fingerprint::parse(&shown[3..]).is_err());
        assert!(Fingerprint::parse(&"zz".repeat(32)).is_err());
        assert!(Fingerprint::parse(&"é".repeat(32)).is_err());
    }

    #[test]
    fn the_kept_certificate_is_made_once_and_found_again() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("quicnalu").join("sender.pem");
        let (made, new) = SelfSigned::kept_in(&path).unwrap();
        assert!(new);
        let (found, new) = SelfSigned::kept_in(&path).unwrap();
        assert!(!new);
        assert_eq!(made.fingerprint(), found.fingerprint());
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        std::fs::write(&path, b"junk").unwrap();
        let e = SelfSigned::kept_in(&path).err().unwrap();
        assert!(matches!(e, CertError::NotKept { .. }), "{e:?}");
        assert!(
            e.to_string().contains("holds no certificate and key"),
            "{e}"
        );
    }

    #[test]
    fn two_generated_certificates_differ() {
        let a = SelfSigned::generate(&["localhost"]).unwrap();
        let b = SelfSigned::generate(&["localhost"]).unwrap();
        assert_ne!(a.fingerprint(), b.fingerprint());
    }

    #[test]
    fn senders_making_the_first_certificate_at_once_all_keep_the_same_one() {
        for round in 0..10 {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("quicnalu/sender.pem");
            let start = std::sync::Barrier::new(6);
            let kept: Vec<_> = std::thread::scope(|s| {
                let threads: Vec<_> = (0..6)
                    .map(|_| {
                        let (path, start) = (&path, &start);
                        s.spawn(move || {
                            start.wait();
                            SelfSigned::kept_in(path).map(|(k, _)| k.fingerprint())
                        })
                    })
                    .collect();
                threads.into_iter().map(|t| t.join().unwrap()).collect()
            });
            let on_disk = SelfSigned::kept_in(&path).unwrap().0.fingerprint();
            for k in &kept {
                assert_eq!(k.as_ref().ok(), Some(&on_disk), "round {round}: {kept:?}");
            }
            let left: Vec<_> = std::fs::read_dir(path.parent().unwrap())
                .unwrap()
                .map(|e| e.unwrap().file_name())
                .collect();
            assert_eq!(left, ["sender.pem"], "no drafts left behind");
        }
    }

    #[test]
    fn a_kept_certificate_open_to_others_is_refused() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sender.pem");
        SelfSigned::kept_in(&path).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let refused = SelfSigned::kept_in(&path).err().expect("refused");
        assert!(matches!(refused, CertError::Read { .. }), "{refused:?}");
        assert!(refused.to_string().contains("open to others"), "{refused}");
    }
}
