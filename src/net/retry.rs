//! QUIC address validation (RFC 9000, 8.1): the sender answers a new client's first
//! Initial with a Retry carrying a token, and creates a connection only for an Initial that
//! brings the token back. A spoofed source address never sees the token, so it cannot make
//! the sender send handshake data (up to 3x what it got) to a victim, nor hold connection
//! state. It costs one round trip on connect.
//!
//! A token is `expiry (8 bytes, ms) | original DCID length (1) | original DCID |
//! HMAC-SHA256(key, client address | the Retry's connection ID | everything before)`, with
//! a key made per sink. The Retry's connection ID is the one the client's next Initial is
//! addressed to, so a token is good for that one connection only and the connection may
//! keep that ID.
//!
//! An Initial whose token does not validate (forged, stale, from another address or for
//! another connection) is answered with a CONNECTION_CLOSE carrying INVALID_TOKEN (RFC
//! 9000, 8.1.2): the client will not take a second Retry, so without it the client would
//! only time out.

use crate::error::Error;
use std::fmt;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

/// How long a client may take to come back with its token: a few round trips.
const LIFETIME: Duration = Duration::from_secs(10);
const MAC_LEN: usize = 32;
/// The transport error code for a token that does not validate (RFC 9000, 20.1).
pub const INVALID_TOKEN: u64 = 0x0b;

/// The system gave no randomness for the key Retry tokens are signed with.
#[derive(Debug)]
pub struct NoRandomness(pub getrandom::Error);

impl fmt::Display for NoRandomness {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "no randomness for Retry tokens: {}", self.0)
    }
}

// getrandom's error is a std::error::Error only with its `std` feature: no source().
impl std::error::Error for NoRandomness {}

/// The user's error: the system failed us.
impl From<NoRandomness> for Error {
    fn from(e: NoRandomness) -> Error {
        Error::System(e.to_string())
    }
}

pub struct AddressValidator {
    key: [u8; 32],
    epoch: Instant,
}

impl AddressValidator {
    pub fn new() -> Result<Self, NoRandomness> {
        let mut key = [0u8; 32];
        getrandom::fill(&mut key).map_err(NoRandomness)?;
        Ok(AddressValidator {
            key,
            epoch: Instant::now(),
        })
    }

    /// A token for `peer`, whose first Initial went to `odcid`, sent in a Retry that gives
    /// the connection the ID `retry_scid`.
    pub fn mint(&self, now: Instant, peer: SocketAddr, odcid: &[u8], retry_scid: &[u8]) -> Vec<u8> {
        let expiry = self.ms(now) + LIFETIME.as_millis() as u64;
        let mut token = Vec::with_capacity(9 + odcid.len() + MAC_LEN);
        token.extend_from_slice(&expiry.to_be_bytes());
        token.push(odcid.len() as u8);
        token.extend_from_slice(odcid);
        let mac = self.mac(peer, retry_scid, &token);
        token.extend_from_slice(&mac);
        token
    }

    /// The original DCID if `token` was minted here for `peer` in a Retry that gave the ID
    /// `dcid` (the Initial carrying the token is addressed to it), and has not expired.
    pub fn validate(
        &self,
        now: Instant,
        peer: SocketAddr,
        dcid: &[u8],
        token: &[u8],
    ) -> Option<Vec<u8>> {
        let signed = token.len().checked_sub(MAC_LEN)?;
        let (body, mac) = token.split_at(signed);
        let expected = self.mac(peer, dcid, body);
        // memcmp::eq compares in constant time, and panics on unequal lengths.
        if expected.len() != mac.len() || !boring::memcmp::eq(&expected, mac) {
            return None;
        }
        let (expiry, rest) = body.split_first_chunk::<8>()?;
        let (&len, odcid) = rest.split_first()?;
        let fresh = u64::from_be_bytes(*expiry) >= self.ms(now);
        (fresh && odcid.len() == usize::from(len)).then(|| odcid.to_vec())
    }

    fn mac(&self, peer: SocketAddr, cid: &[u8], body: &[u8]) -> Vec<u8> {
        let mut data = Vec::with_capacity(19 + cid.len() + body.len());
        match peer {
            SocketAddr::V4(a) => data.extend_from_slice(&a.ip().octets()),
            SocketAddr::V6(a) => data.extend_from_slice(&a.ip().octets()),
        }
        data.extend_from_slice(&peer.port().to_be_bytes());
        // Its length first, so that no other ID and body can give the same bytes.
        data.push(cid.len() as u8);
        data.extend_from_slice(cid);
        data.extend_from_slice(body);
        let md = boring::hash::MessageDigest::sha256();
        boring::hmac::Hmac::init(&self.key, &md)
            .and_then(|mut h| h.update(&data).and_then(|_| h.finalize()))
            // HMAC-SHA256 in memory does not fail; an empty MAC would never validate.
            .unwrap_or_default()
    }

    fn ms(&self, now: Instant) -> u64 {
        now.saturating_duration_since(self.epoch).as_millis() as u64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_validates_only_for_its_address() {
        let v = AddressValidator::new().unwrap();
        let a: SocketAddr = "127.0.0.1:5000".parse().unwrap();
        let b: SocketAddr = "127.0.0.1:5001".parse().unwrap();
        let now = Instant::now();
        let token = v.mint(now, a, b"original", b"retry-id");
        let valid = |peer, token: &[u8]| v.validate(now, peer, b"retry-id", token);
        assert_eq!(valid(a, &token).as_deref(), Some(&b"original"[..]));
        assert_eq!(valid(b, &token), None);
        let mut forged = token.clone();
        forged[3] ^= 1;
        assert_eq!(valid(a, &forged), None);
        assert_eq!(valid(a, &token[..token.len() - 1]), None);
        assert_eq!(valid(a, b""), None);
        let other = AddressValidator::new().unwrap();
        assert_eq!(other.validate(now, a, b"retry-id", &token), None);
    }

    /// A validator, a client address, the time, and a token minted then for that client's
    /// Retry naming `retry-id`.
    fn minted() -> (AddressValidator, SocketAddr, Instant, Vec<u8>) {
        let v = AddressValidator::new().unwrap();
        let a: SocketAddr = "127.0.0.1:5000".parse().unwrap();
        let now = Instant::now();
        let token = v.mint(now, a, b"original", b"retry-id");
        (v, a, now, token)
    }

    #[test]
    fn a_token_validates_only_for_the_connection_its_retry_named() {
        let (v, a, now, token) = minted();
        assert!(v.validate(now, a, b"retry-id", &token).is_some());
        // Replayed in an Initial to another connection ID: refused.
        assert_eq!(v.validate(now, a, b"retry-ie", &token), None);
        assert_eq!(v.validate(now, a, b"", &token), None);
    }

    #[test]
    fn a_token_is_good_for_its_lifetime_only() {
        let (v, a, now, token) = minted();
        let at = |ms| v.validate(now + Duration::from_millis(ms), a, b"retry-id", &token);
        assert!(at(LIFETIME.as_millis() as u64).is_some());
        assert_eq!(at(LIFETIME.as_millis() as u64 + 1), None);
    }
}
