//! Media over QUIC: publishing to and subscribing from moq-dev's relays (moq-relay), with
//! moq-dev's protocol library (moq-net, moq-lite over raw QUIC) driven on our own quiche
//! connection, and their `hang` catalog and container (catalog.rs). docs/ARCHITECTURE.md,
//! "Media over QUIC relays", says why these crates and what a relay cannot carry.

pub mod catalog;
mod publish;
mod quic;
mod session;
mod subscribe;

pub use catalog::Picture;
pub use publish::{Publisher, PublisherSettings};
pub use session::Dial;
pub use subscribe::{Subscriber, SubscriberSettings};

use std::fmt;

/// A relay's address: `moql://host[:port][/path]`. The path goes in moq-lite's SETUP (the
/// relay's root for this session); broadcasts are named below it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RelayUrl {
    pub host: String,
    pub port: u16,
    pub path: String,
}

/// Why text is not a relay's address; each holds the text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BadRelayUrl {
    NotAUrl(String, url::ParseError),
    /// https:// or moqt://: WebTransport or IETF moq-transport, which we do not speak.
    OtherMoq(String),
    /// A scheme that is not MoQ at all.
    Scheme(String, String),
    NoHost(String),
}

impl fmt::Display for BadRelayUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BadRelayUrl::NotAUrl(url, e) => write!(f, "'{url}' is not a URL: {e}"),
            BadRelayUrl::OtherMoq(url) => write!(
                f,
                "'{url}': only moq-lite over raw QUIC (moql://) is supported, not \
                 WebTransport (https://) or IETF moq-transport (moqt://)"
            ),
            BadRelayUrl::Scheme(url, scheme) => {
                write!(f, "'{url}': the scheme is {scheme}, not moql")
            }
            BadRelayUrl::NoHost(url) => write!(f, "'{url}' names no host"),
        }
    }
}

impl std::error::Error for BadRelayUrl {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            BadRelayUrl::NotAUrl(_, e) => Some(e),
            _ => None,
        }
    }
}

/// moq-relay's default port.
const DEFAULT_PORT: u16 = 443;

impl RelayUrl {
    pub fn parse(url: &str) -> Result<RelayUrl, BadRelayUrl> {
        let parsed = url::Url::parse(url).map_err(|e| BadRelayUrl::NotAUrl(url.into(), e))?;
        match parsed.scheme() {
            "moql" => {}
            "https" | "moqt" => return Err(BadRelayUrl::OtherMoq(url.into())),
            other => return Err(BadRelayUrl::Scheme(url.into(), other.into())),
        }
        let host = match parsed.host() {
            Some(url::Host::Ipv6(ip)) => ip.to_string(),
            Some(host) if !host.to_string().is_empty() => host.to_string(),
            _ => return Err(BadRelayUrl::NoHost(url.into())),
        };
        let port = parsed.port().unwrap_or(DEFAULT_PORT);
        let path = parsed.path().trim_matches('/').to_string();
        Ok(RelayUrl { host, port, path })
    }
}

impl fmt::Display for RelayUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let host = match self.host.contains(':') {
            true => format!("[{}]", self.host),
            false => self.host.clone(),
        };
        write!(f, "moql://{host}:{}/{}", self.port, self.path)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relay_urls() {
        let url = RelayUrl::parse("moql://127.0.0.1:4443/live/").unwrap();
        assert_eq!(
            url,
            RelayUrl {
                host: "127.0.0.1".into(),
                port: 4443,
                path: "live".into()
            }
        );
        let url = RelayUrl::parse("moql://[::1]").unwrap();
        assert_eq!(
            (url.host.as_str(), url.port, url.path.as_str()),
            ("::1", 443, "")
        );
        assert_eq!(url.to_string(), "moql://[::1]:443/");
        for (bad, says) in [
            ("https://relay/", "WebTransport"),
            ("udp://relay", "not moql"),
            ("moql:///x", "no host"),
            ("not a url", "not a URL"),
        ] {
            let e = RelayUrl::parse(bad).unwrap_err().to_string();
            assert!(e.contains(says), "{bad}: {e}");
        }
    }
}
