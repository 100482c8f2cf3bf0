//! `uri::query_pairs` on an arbitrary query, the part of a `quicnalu://` URI after `?`,
//! which comes from whoever wrote the playlist or web page (lossy UTF-8, as GStreamer hands
//! it a string).
//!
//! Invariants: every key it returns is in `PROPERTIES`, so never a file path (ca-file,
//! cert-file, key-file, known-hosts, keylog-file, qlog-dir) nor `tls-verify`; Ok returns
//! one pair per non-empty `&`-separated part, in order; each pair, percent-encoded again,
//! gives a query that reads back to the same pairs.
//!
//! Found here, and fixed: a key or value whose escapes decode to bytes that are not UTF-8
//! (`token=%FF`) came back from glib's unescape as a string holding them. The target checks
//! each string itself.
//! The query is cut at a NUL, as the C string GStreamer hands over would be.

#![no_main]

use gstquicnalu::element::uri::{query_pairs, PROPERTIES};
use libfuzzer_sys::fuzz_target;

/// Properties a URI must never set: a path the element would open, or a weaker trust.
const FORBIDDEN: &[&str] = &[
    "ca-file",
    "cert-file",
    "key-file",
    "known-hosts",
    "keylog-file",
    "qlog-dir",
    "tls-verify",
];

/// Percent-encodes everything but RFC 3986's unreserved characters.
fn escape(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                char::from(b).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

fuzz_target!(|data: &[u8]| {
    let data = data.split(|&b| b == 0).next().unwrap_or_default();
    let query = String::from_utf8_lossy(data);
    for p in FORBIDDEN {
        assert!(!PROPERTIES.contains(p), "{p} is settable from a URI");
    }
    let Ok(pairs) = query_pairs(&query) else {
        return;
    };
    let parts = query.split('&').filter(|p| !p.is_empty()).count();
    assert_eq!(pairs.len(), parts);
    for (key, value) in &pairs {
        assert!(std::str::from_utf8(key.as_bytes()).is_ok(), "key not UTF-8");
        assert!(
            std::str::from_utf8(value.as_bytes()).is_ok(),
            "value not UTF-8"
        );
        assert!(PROPERTIES.contains(&key.as_str()), "'{key}' accepted");
        assert!(!FORBIDDEN.contains(&key.as_str()), "'{key}' accepted");
    }
    let again: Vec<String> = pairs
        .iter()
        .map(|(k, v)| format!("{}={}", escape(k), escape(v)))
        .collect();
    assert_eq!(
        query_pairs(&again.join("&")).as_ref(),
        Ok(&pairs),
        "re-encoded"
    );
});
