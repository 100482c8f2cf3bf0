//! How a receiver trusts the certificate of the peer it dialled, a sender or a MoQ relay:
//! one [`Trust`], chosen once from the element's settings, and one verdict once TLS has
//! accepted the certificate. The direct path and the MoQ path use both; they differ only in
//! what they were given (the sink's relay connection has no `ca-file` or `tls-verify`).

use crate::error::Error;
use crate::net::known_hosts::{self, KnownHosts};
use crate::net::tls::{self, Check, Fingerprint};
use std::fmt;
use std::net::SocketAddr;

#[derive(Clone, Debug)]
pub enum Trust {
    /// Exactly this certificate (`certificate-fingerprint`).
    Pin(Fingerprint),
    /// The certificate remembered for the peer, or remembered now (known_hosts.rs).
    FirstUse(KnownHosts),
    /// A chain TLS verifies against the system store or `ca_file`. `named`: TLS checks it
    /// for a name (`server-name`, or the host name dialled); else the address dialled must
    /// be among the certificate's IP names (tls::Check::Address says why).
    Verify {
        ca_file: Option<String>,
        named: bool,
    },
    /// No check at all (`tls-verify=false`).
    None,
}

/// Why a certificate TLS accepted is still not the peer's.
#[derive(Debug)]
pub enum Untrusted {
    /// It is not the pinned one, or does not name the address dialled.
    Refused(tls::Refusal),
    /// known_hosts remembers another, or cannot be read or written.
    FirstUse(known_hosts::CheckError),
}

impl fmt::Display for Untrusted {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Untrusted::Refused(e) => write!(f, "{e}"),
            Untrusted::FirstUse(e) => write!(f, "{e}"),
        }
    }
}

impl std::error::Error for Untrusted {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Untrusted::Refused(e) => Some(e),
            Untrusted::FirstUse(e) => Some(e),
        }
    }
}

/// The user's error: the peer's certificate is refused.
impl From<Untrusted> for Error {
    fn from(e: Untrusted) -> Error {
        Error::Certificate(e.to_string())
    }
}

/// What the element was given to choose a [`Trust`] from.
pub struct Asked<'a> {
    pub pin: Option<Fingerprint>,
    /// `tls-verify`, None when left unset.
    pub verify: Option<bool>,
    pub ca_file: Option<&'a str>,
    /// `server-name` as set.
    pub server_name: Option<&'a str>,
    /// The host dialled is a name, not an address.
    pub dialled_name: bool,
}

impl Trust {
    /// A pin wins; asked for nothing stricter, trust on first use in `known_hosts`, as SSH
    /// does; `tls-verify=false` checks nothing; else TLS verifies the chain.
    pub fn choose(asked: Asked, known_hosts: impl FnOnce() -> KnownHosts) -> Trust {
        let set = |o: Option<&str>| o.is_some_and(|v| !v.is_empty());
        match asked.pin {
            Some(pin) => Trust::Pin(pin),
            None if asked.verify.is_none() && !set(asked.ca_file) && !set(asked.server_name) => {
                Trust::FirstUse(known_hosts())
            }
            None if asked.verify == Some(false) => Trust::None,
            None => Trust::Verify {
                ca_file: asked.ca_file.filter(|c| !c.is_empty()).map(str::to_string),
                named: set(asked.server_name) || asked.dialled_name,
            },
        }
    }

    /// Whether TLS itself verifies the chain, and against which CA file.
    pub fn chain(&self) -> (bool, Option<&str>) {
        match self {
            Trust::Verify { ca_file, .. } => (true, ca_file.as_deref()),
            _ => (false, None),
        }
    }

    /// Why the certificate `peer` presented (DER), which TLS accepted, is still not the
    /// peer's; None: trusted. A certificate trusted now for the first time is remembered
    /// and handed to `first_use`.
    pub fn refusal(
        &self,
        peer: SocketAddr,
        der: Option<&[u8]>,
        first_use: &mut dyn FnMut(&KnownHosts, Fingerprint),
    ) -> Option<Untrusted> {
        let check = match self {
            Trust::Pin(pin) => Check::Pin(*pin),
            Trust::FirstUse(known) => {
                return match known.check_peer(peer, der) {
                    Ok(Some(fingerprint)) => {
                        first_use(known, fingerprint);
                        None
                    }
                    Ok(None) => None,
                    Err(why) => Some(Untrusted::FirstUse(why)),
                };
            }
            Trust::Verify { named: false, .. } => Check::Address,
            Trust::Verify { named: true, .. } | Trust::None => Check::Done,
        };
        tls::refusal(check, peer, der).map(Untrusted::Refused)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::net::tls::SelfSigned;

    fn known() -> KnownHosts {
        KnownHosts {
            path: "/nonexistent/known_hosts".into(),
            host: "sender:4443".into(),
        }
    }

    fn asked() -> Asked<'static> {
        Asked {
            pin: None,
            verify: None,
            ca_file: None,
            server_name: None,
            dialled_name: false,
        }
    }

    #[test]
    fn the_strictest_trust_asked_for_is_chosen() {
        let pin = SelfSigned::generate(&["localhost"]).unwrap().fingerprint();
        let chosen = |a: Asked| Trust::choose(a, known);
        assert!(
            matches!(chosen(Asked { pin: Some(pin), verify: Some(false), ..asked() }), Trust::Pin(p) if p == pin)
        );
        assert!(matches!(chosen(asked()), Trust::FirstUse(_)));
        assert!(matches!(
            chosen(Asked {
                ca_file: Some(""),
                ..asked()
            }),
            Trust::FirstUse(_)
        ));
        assert!(matches!(
            chosen(Asked {
                verify: Some(false),
                ..asked()
            }),
            Trust::None
        ));
        assert!(matches!(
            chosen(Asked {
                verify: Some(true),
                ..asked()
            }),
            Trust::Verify {
                ca_file: None,
                named: false
            }
        ));
        assert!(matches!(
            chosen(Asked {
                ca_file: Some("ca.pem"),
                dialled_name: true,
                ..asked()
            }),
            Trust::Verify {
                ca_file: Some(_),
                named: true
            }
        ));
        assert!(matches!(
            chosen(Asked {
                server_name: Some("sender"),
                ..asked()
            }),
            Trust::Verify { named: true, .. }
        ));
    }

    #[test]
    fn a_verdict_for_each_trust() {
        let cert = SelfSigned::generate(&["localhost"]).unwrap();
        let der = cert.cert.to_der().unwrap();
        let peer: SocketAddr = "127.0.0.1:4443".parse().unwrap();
        let mut first = |_: &KnownHosts, _| panic!("not a first use");
        assert!(Trust::Pin(cert.fingerprint())
            .refusal(peer, Some(&der), &mut first)
            .is_none());
        let other = SelfSigned::generate(&["localhost"]).unwrap().fingerprint();
        let wrong = Trust::Pin(other)
            .refusal(peer, Some(&der), &mut first)
            .unwrap();
        assert!(
            matches!(wrong, Untrusted::Refused(tls::Refusal::Mismatch { .. })),
            "{wrong:?}"
        );
        assert!(wrong.to_string().contains("mismatch"), "{wrong}");
        assert!(Trust::None.refusal(peer, None, &mut first).is_none());
        let named = Trust::Verify {
            ca_file: None,
            named: true,
        };
        assert!(named.refusal(peer, Some(&der), &mut first).is_none());
        let dir = tempfile::tempdir().unwrap();
        let known = KnownHosts {
            path: dir.path().join("known_hosts"),
            host: "127.0.0.1:4443".into(),
        };
        let mut seen = Vec::new();
        let first_use = Trust::FirstUse(known);
        assert!(first_use
            .refusal(peer, Some(&der), &mut |_, f| seen.push(f))
            .is_none());
        assert_eq!(seen, vec![cert.fingerprint()]);
        assert!(first_use
            .refusal(peer, Some(&der), &mut |_, f| seen.push(f))
            .is_none());
        assert_eq!(seen.len(), 1, "remembered: not a first use again");
    }
}
