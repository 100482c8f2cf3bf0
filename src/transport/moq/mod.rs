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
pub use session::{Dial, Trust};
pub use subscribe::{Subscriber, SubscriberSettings};

use once_cell::sync::Lazy;
use std::fmt;

static CAT: Lazy<gst::DebugCategory> = Lazy::new(|| {
    gst::DebugCategory::new(
        "quicnalu-moq",
        gst::DebugColorFlags::empty(),
        Some("Media over QUIC sessions with a relay"),
    )
});

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
        let uri = glib::Uri::parse(url, glib::UriFlags::NON_DNS)
            .map_err(|e| format!("'{url}' is not a URL: {e}"))?;
        match uri.scheme().as_str() {
            "moql" => {}
            "https" | "moqt" => {
                return Err(format!(
                    "'{url}': only moq-lite over raw QUIC (moql://) is supported, not \
                     WebTransport (https://) or IETF moq-transport (moqt://)"
                ))
            }
            other => return Err(format!("'{url}': the scheme is {other}, not moql")),
        }
        let host = uri
            .host()
            .filter(|h| !h.is_empty())
            .ok_or_else(|| format!("'{url}' names no host"))?
            .to_string();
        let port = match uri.port() {
            -1 => DEFAULT_PORT,
            p => u16::try_from(p).map_err(|_| format!("'{url}': port {p} is out of range"))?,
        };
        let path = uri.path().trim_matches('/').to_string();
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

/// A change of connection to the relay, for the element to report.
#[derive(Debug, Clone)]
pub enum RelayEvent {
    Connected {
        relay: String,
        resumed: bool,
    },
    Disconnected {
        relay: String,
        reason: String,
    },
    /// The relay's certificate, trusted now for the first time and remembered.
    FirstUse {
        relay: String,
        fingerprint: crate::transport::Fingerprint,
        known_hosts: crate::transport::KnownHosts,
    },
}

/// Posts `{element}-moq-connected` and `{element}-moq-disconnected` element messages (field
/// `relay`; `resumed`, `reason`), and a WARNING when a relay is trusted on first use.
pub fn reporter(element: &gst::Element, name: &'static str) -> Box<dyn Fn(RelayEvent) + Send> {
    use gst::prelude::*;
    let element = element.downgrade();
    Box::new(move |event| {
        let Some(element) = element.upgrade() else {
            return;
        };
        let s = match event {
            RelayEvent::Connected { relay, resumed } => {
                gst::info!(CAT, obj = element, "connected to the relay {relay}");
                gst::Structure::builder(format!("{name}-moq-connected"))
                    .field("relay", relay)
                    .field("resumed", resumed)
                    .build()
            }
            RelayEvent::Disconnected { relay, reason } => {
                gst::info!(CAT, obj = element, "lost the relay {relay}: {reason}");
                gst::Structure::builder(format!("{name}-moq-disconnected"))
                    .field("relay", relay)
                    .field("reason", reason)
                    .build()
            }
            RelayEvent::FirstUse {
                relay,
                fingerprint,
                known_hosts,
            } => {
                let text = format!(
                    "trusting the relay {relay} on first use: its certificate is SHA-256 \
                     {fingerprint}, now remembered in {}; pin it in production",
                    known_hosts.path.display()
                );
                gst::element_warning!(element, gst::ResourceError::Settings, ("{}", text));
                return;
            }
        };
        let _ = element.post_message(gst::message::Element::builder(s).src(&element).build());
    })
}

/// What `moq-url` and `moq-broadcast` name: the URL parsed and the relay's host resolved,
/// or the element's error.
pub fn relay_target(
    url: &str,
    broadcast: &str,
) -> Result<(RelayUrl, std::net::SocketAddr), gst::ErrorMessage> {
    use std::net::ToSocketAddrs;
    let url = RelayUrl::parse(url)
        .map_err(|e| gst::error_msg!(gst::ResourceError::Settings, ["moq-url: {}", e]))?;
    if broadcast.is_empty() {
        return Err(gst::error_msg!(
            gst::ResourceError::Settings,
            ["moq-broadcast is empty"]
        ));
    }
    let peer = (url.host.as_str(), url.port)
        .to_socket_addrs()
        .ok()
        .and_then(|mut addrs| addrs.next())
        .ok_or_else(|| {
            gst::error_msg!(
                gst::ResourceError::NotFound,
                ["cannot resolve the relay's host '{}'", url.host]
            )
        })?;
    Ok((url, peer))
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
