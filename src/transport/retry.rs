//! QUIC address validation (RFC 9000, 8.1): the sender answers a new client's first
//! Initial with a Retry carrying a token, and creates a connection only for an Initial that
//! brings the token back. A spoofed source address never sees the token, so it cannot make
//! the sender send handshake data (up to 3x what it got) to a victim, nor hold connection
//! state. It costs one round trip on connect.
//!
//! A token is `expiry (8 bytes, ms) | original DCID length (1) | original DCID |
//! HMAC-SHA256(key, client address | everything before)`, with a key made per sink.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

/// How long a client may take to come back with its token: a few round trips.
const LIFETIME: Duration = Duration::from_secs(10);
const MAC_LEN: usize = 32;

pub struct AddressValidator {
    key: [u8; 32],
    epoch: Instant,
}

impl AddressValidator {
    pub fn new() -> Result<Self, String> {
        let mut key = [0u8; 32];
        getrandom::fill(&mut key).map_err(|e| format!("no randomness for Retry tokens: {e}"))?;
        Ok(AddressValidator {
            key,
            epoch: Instant::now(),
        })
    }

    /// A token for `peer`, whose first Initial went to `odcid`.
    pub fn mint(&self, peer: SocketAddr, odcid: &[u8]) -> Vec<u8> {
        let expiry = self.now_ms() + LIFETIME.as_millis() as u64;
        let mut token = Vec::with_capacity(9 + odcid.len() + MAC_LEN);
        token.extend_from_slice(&expiry.to_be_bytes());
        token.push(odcid.len() as u8);
        token.extend_from_slice(odcid);
        let mac = self.mac(peer, &token);
        token.extend_from_slice(&mac);
        token
    }

    /// The original DCID if `token` was minted here for `peer` and has not expired.
    pub fn validate(&self, peer: SocketAddr, token: &[u8]) -> Option<Vec<u8>> {
        let signed = token.len().checked_sub(MAC_LEN)?;
        let (body, mac) = token.split_at(signed);
        let expected = self.mac(peer, body);
        // memcmp::eq compares in constant time, and panics on unequal lengths.
        if expected.len() != mac.len() || !boring::memcmp::eq(&expected, mac) {
            return None;
        }
        let (expiry, rest) = body.split_first_chunk::<8>()?;
        let (&len, odcid) = rest.split_first()?;
        let fresh = u64::from_be_bytes(*expiry) >= self.now_ms();
        (fresh && odcid.len() == usize::from(len)).then(|| odcid.to_vec())
    }

    fn mac(&self, peer: SocketAddr, body: &[u8]) -> Vec<u8> {
        let mut data = Vec::with_capacity(18 + body.len());
        match peer {
            SocketAddr::V4(a) => data.extend_from_slice(&a.ip().octets()),
            SocketAddr::V6(a) => data.extend_from_slice(&a.ip().octets()),
        }
        data.extend_from_slice(&peer.port().to_be_bytes());
        data.extend_from_slice(body);
        let md = boring::hash::MessageDigest::sha256();
        boring::hmac::Hmac::init(&self.key, &md)
            .and_then(|mut h| h.update(&data).and_then(|_| h.finalize()))
            // HMAC-SHA256 in memory does not fail; an empty MAC would never validate.
            .unwrap_or_default()
    }

    fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
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
        let token = v.mint(a, b"original");
        assert_eq!(v.validate(a, &token).as_deref(), Some(&b"original"[..]));
        assert_eq!(v.validate(b, &token), None);
        let mut forged = token.clone();
        forged[3] ^= 1;
        assert_eq!(v.validate(a, &forged), None);
        assert_eq!(v.validate(a, &token[..token.len() - 1]), None);
        assert_eq!(v.validate(a, b""), None);
        let other = AddressValidator::new().unwrap();
        assert_eq!(other.validate(a, &token), None);
    }
}
