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

/// moq-relay's default port.
const DEFAULT_PORT: u16 = 443;

impl RelayUrl {
    pub fn parse(url: &str) -> Result<RelayUrl, String> {
        let parsed = url::Url::parse(url).map_err(|e| format!("'{url}' is not a URL: {e}"))?;
        match parsed.scheme() {
            "moql" => {}
            "https" | "moqt" => {
                return Err(format!(
                    "'{url}': only moq-lite over raw QUIC (moql://) is supported, not \
                     WebTransport (https://) or IETF moq-transport (moqt://)"
                ))
            }
            other => return Err(format!("'{url}': the scheme is {other}, not moql")),
        }
        let host = match parsed.host() {
            Some(url::Host::Ipv6(ip)) => ip.to_string(),
            Some(host) if !host.to_string().is_empty() => host.to_string(),
            _ => return Err(format!("'{url}' names no host")),
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
            let e = RelayUrl::parse(bad).unwrap_err();
            assert!(e.contains(says), "{bad}: {e}");
        }
    }
}
