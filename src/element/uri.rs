//! `quicnalu://host:port?property=value&...`, the URI both elements take as GstURIHandlers
//! (as srt:// does): host and port are the `address` and `port` properties, and each query
//! key names a property, its value in gst-launch-1.0's syntax, percent-encoded where needed.
//!
//! A URI comes from wherever a player got it (a playlist, a web page), so it may set only
//! [`PROPERTIES`]: where the stream is and how to receive it. Never a file path (a FIFO or
//! /dev/zero there would hang or exhaust the process), never a weaker trust (`tls-verify`).

use gst::glib;
use gst::prelude::*;
use std::fmt;

pub const SCHEME: &str = "quicnalu";

/// What a URI's query may set, on the elements that have it.
pub const PROPERTIES: &[&str] = &[
    "mode",
    "latency",
    "latency-budget",
    "timeout",
    "token",
    "certificate-fingerprint",
    "server-name",
    "congestion-control",
    "join-mode",
    "reconnect",
    "reconnect-delay-max",
    "reconnect-timeout",
    "moq-url",
    "moq-broadcast",
    "moq-certificate-fingerprint",
    "self-signed",
    "max-receivers",
];

/// Sets `element`'s properties from `uri`. Every value is checked before any is set, so a
/// bad URI changes nothing.
pub fn apply(element: &gst::Element, uri: &str) -> Result<(), glib::Error> {
    if element.current_state() > gst::State::Ready {
        return Err(glib::Error::new(
            gst::URIError::BadState,
            "the URI can only be changed in the NULL or READY state",
        ));
    }
    let bad = |why: String| glib::Error::new(gst::URIError::BadUri, &why);
    let parsed = glib::Uri::parse(uri, glib::UriFlags::ENCODED_QUERY)
        .map_err(|e| bad(format!("'{uri}' is not a URI: {e}")))?;
    if !parsed.scheme().eq_ignore_ascii_case(SCHEME) {
        return Err(glib::Error::new(
            gst::URIError::UnsupportedProtocol,
            &format!("'{uri}' is not a {SCHEME}:// URI"),
        ));
    }
    let mut values: Vec<(String, glib::Value)> = Vec::new();
    if let Some(host) = parsed.host().filter(|h| !h.is_empty()) {
        values.push(("address".into(), host.to_value()));
    }
    // -1: no port in the URI.
    if parsed.port() >= 0 {
        values.push(("port".into(), (parsed.port() as u32).to_value()));
    }
    let query = parsed.query().unwrap_or_default();
    for (key, text) in query_pairs(&query).map_err(|why| bad(format!("{why} (in '{uri}')")))? {
        let pspec = element
            .find_property(&key)
            .filter(|p| p.flags().contains(glib::ParamFlags::WRITABLE))
            .ok_or_else(|| {
                bad(format!(
                    "{} has no property '{key}' to set (from '{uri}')",
                    element.factory().map_or("the element".into(), |f| f.name())
                ))
            })?;
        let value = glib::Value::deserialize_with_pspec(&text, &pspec)
            .map_err(|_| bad(format!("'{text}' is not a value for {key} (from '{uri}')")))?;
        values.push((key, value));
    }
    for (key, value) in values {
        element.set_property_from_value(&key, &value);
    }
    Ok(())
}

/// Why a URI's query is refused; each holds the part refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum QueryError {
    /// A part without `=`.
    NotAPair(String),
    /// A key not in [`PROPERTIES`].
    NotSettable(String),
    /// A key or value whose escapes are broken or decode to bytes that are not UTF-8.
    NotUtf8(String),
}

impl fmt::Display for QueryError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            QueryError::NotAPair(pair) => write!(f, "'{pair}' is not property=value"),
            QueryError::NotSettable(key) => write!(
                f,
                "a URI cannot set '{key}': only {}; set it on the element",
                PROPERTIES.join(", ")
            ),
            QueryError::NotUtf8(s) => write!(f, "'{s}' is not percent-encoded UTF-8"),
        }
    }
}

impl std::error::Error for QueryError {}

/// A URI's query as (key, value) pairs, percent-decoded, each key one of [`PROPERTIES`].
pub fn query_pairs(query: &str) -> Result<Vec<(String, String)>, QueryError> {
    let mut pairs = Vec::new();
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (key, text) = pair
            .split_once('=')
            .ok_or_else(|| QueryError::NotAPair(pair.into()))?;
        let (key, text) = (percent_decoded(key)?, percent_decoded(text)?);
        if !PROPERTIES.contains(&key.as_str()) {
            return Err(QueryError::NotSettable(key));
        }
        pairs.push((key, text));
    }
    Ok(pairs)
}

/// `s` with each `%XX` replaced by its byte; the result must be UTF-8 (glib's unescaping
/// hands back whatever bytes were escaped, which a Rust string must not hold).
fn percent_decoded(s: &str) -> Result<String, QueryError> {
    let bad = || QueryError::NotUtf8(s.into());
    let mut bytes = Vec::with_capacity(s.len());
    let mut rest = s.as_bytes();
    while let Some((&b, tail)) = rest.split_first() {
        rest = tail;
        if b != b'%' {
            bytes.push(b);
            continue;
        }
        let hex = rest.get(..2).ok_or_else(bad)?;
        let hex = std::str::from_utf8(hex).map_err(|_| bad())?;
        if !hex.bytes().all(|h| h.is_ascii_hexdigit()) {
            return Err(bad());
        }
        bytes.push(u8::from_str_radix(hex, 16).map_err(|_| bad())?);
        rest = &rest[2..];
    }
    String::from_utf8(bytes).map_err(|_| bad())
}

/// The URI for `element`'s address and port.
pub fn of(element: &gst::Element) -> String {
    let address = element
        .property::<Option<String>>("address")
        .unwrap_or_default();
    let port = element.property::<u32>("port");
    let host = if address.contains(':') {
        format!("[{address}]")
    } else {
        address
    };
    format!("{SCHEME}://{host}:{port}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn src() -> gst::Element {
        // Once per process: two tests registering the plugin at once race in GStreamer.
        static REGISTERED: std::sync::Once = std::sync::Once::new();
        REGISTERED.call_once(|| {
            gst::init().unwrap();
            crate::plugin_register_static().unwrap();
        });
        gst::ElementFactory::make("quicnalusrc").build().unwrap()
    }

    #[test]
    fn host_port_and_query_set_properties() {
        let e = src();
        apply(
            &e,
            "quicnalu://[::1]:5000?latency=80&token=a%20b%26c&reconnect=false&congestion-control=bbr2",
        )
        .unwrap();
        assert_eq!(e.property::<Option<String>>("address").unwrap(), "::1");
        assert_eq!(e.property::<u32>("port"), 5000);
        assert_eq!(e.property::<u32>("latency"), 80);
        assert_eq!(e.property::<Option<String>>("token").unwrap(), "a b&c");
        assert!(!e.property::<bool>("reconnect"));
        assert_eq!(of(&e), "quicnalu://[::1]:5000");
    }

    #[test]
    fn a_bad_uri_changes_nothing() {
        let e = src();
        for (uri, says) in [
            (
                "quicnalu://h:1?latency=80&nonsense=1",
                "cannot set 'nonsense'",
            ),
            (
                "quicnalu://h:1?latency=soon",
                "'soon' is not a value for latency",
            ),
            ("quicnalu://h:1?stats=x", "cannot set 'stats'"),
            (
                "quicnalu://h:1?known-hosts=/dev/zero",
                "cannot set 'known-hosts'",
            ),
            ("quicnalu://h:1?qlog-dir=/tmp/x", "cannot set 'qlog-dir'"),
            ("quicnalu://h:1?tls-verify=false", "cannot set 'tls-verify'"),
            (
                "quicnalu://h:1?latency-budget=5",
                "no property 'latency-budget'",
            ),
            ("quicnalu://h:1?latency", "is not property=value"),
            ("quicnalu://h:1?token=%FF", "not percent-encoded UTF-8"),
            ("srt://h:1", "not a quicnalu:// URI"),
        ] {
            let err = apply(&e, uri).unwrap_err();
            assert!(err.message().contains(says), "{uri}: {err}");
        }
        assert_eq!(e.property::<u32>("latency"), 200);
        assert_eq!(
            e.property::<Option<String>>("address").unwrap(),
            "127.0.0.1"
        );
    }

    #[test]
    fn a_query_is_percent_decoded_into_utf8_or_refused() {
        // Found by fuzz/targets/uri_query: %FF came back as a string that was not UTF-8.
        for bad in ["token=%FF", "token=%4", "token=%+1", "to%ZZken=1"] {
            let e = query_pairs(bad).unwrap_err();
            assert!(matches!(e, QueryError::NotUtf8(_)), "{bad}: {e:?}");
            assert!(e.to_string().contains("UTF-8"), "{bad}: {e}");
        }
        assert_eq!(
            query_pairs("latency=5&ca-file=/etc/passwd"),
            Err(QueryError::NotSettable("ca-file".into()))
        );
        assert_eq!(
            query_pairs("token=a%20b%C3%A9&latency=5").unwrap(),
            [
                ("token".to_string(), "a b\u{e9}".to_string()),
                ("latency".to_string(), "5".to_string())
            ]
        );
    }
}
