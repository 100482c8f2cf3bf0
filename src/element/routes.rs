//! `paths` and `path-mode`: a receiver's extra routes to its sender (net/client/routes.rs),
//! and a calling sender's extra local addresses to knock from (net/server/sockets.rs).

use crate::element::properties::resolve;
use crate::net::client::{self, RouteTarget};
use std::net::{IpAddr, SocketAddr};

/// `path-mode` (quicnalusrc): what the sender does with a receiver's routes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, glib::Enum)]
#[enum_type(name = "GstQuicNaluPathMode")]
pub enum PathMode {
    #[enum_value(
        name = "Redundant: every access unit over every route, so losing one loses nothing",
        nick = "redundant"
    )]
    #[default]
    Redundant,
    #[enum_value(
        name = "Bonded: each access unit spread over the routes by their capacity",
        nick = "bonded"
    )]
    Bonded,
}

impl From<PathMode> for client::PathMode {
    fn from(m: PathMode) -> Self {
        match m {
            PathMode::Redundant => client::PathMode::Redundant,
            PathMode::Bonded => client::PathMode::Bonded,
        }
    }
}

/// Reads `paths`: comma-separated `HOST:PORT[@LOCAL-ADDRESS]` (an IPv6 host in brackets).
pub fn parse(paths: &str) -> Result<Vec<RouteTarget>, gst::ErrorMessage> {
    let settings = |why: String| gst::error_msg!(gst::ResourceError::Settings, ["paths: {}", why]);
    let mut routes = Vec::new();
    for item in paths.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (target, local) = match item.split_once('@') {
            Some((t, l)) => (t, Some(l)),
            None => (item, None),
        };
        let (host, port) = target
            .rsplit_once(':')
            .ok_or_else(|| settings(format!("'{item}' is not HOST:PORT[@LOCAL-ADDRESS]")))?;
        let port: u16 = port
            .parse()
            .ok()
            .filter(|&p| p != 0)
            .ok_or_else(|| settings(format!("'{port}' in '{item}' is no port")))?;
        let host = host.trim_start_matches('[').trim_end_matches(']');
        let peer = resolve(host, port, "paths host")?;
        let bind = local
            .map(|l| {
                let l = l.trim_start_matches('[').trim_end_matches(']');
                l.parse::<IpAddr>()
                    .map_err(|_| settings(format!("'{l}' in '{item}' is no local IP address")))
            })
            .transpose()?;
        if bind.is_some_and(|b| b.is_ipv4() != peer.is_ipv4()) {
            return Err(settings(format!(
                "'{item}': the local address is of another family"
            )));
        }
        routes.push(RouteTarget { peer, bind });
    }
    Ok(routes)
}

/// Reads quicnalusink's `paths`: comma-separated `LOCAL-ADDRESS[:PORT]` (an IPv6 address
/// with a port in brackets), each of the family of `listener`, whom they call.
pub fn parse_locals(
    paths: &str,
    listener: SocketAddr,
) -> Result<Vec<SocketAddr>, gst::ErrorMessage> {
    let settings = |why: String| gst::error_msg!(gst::ResourceError::Settings, ["paths: {}", why]);
    let mut locals = Vec::new();
    for item in paths.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let local = item
            .parse::<SocketAddr>()
            .or_else(|_| item.parse::<IpAddr>().map(|ip| SocketAddr::new(ip, 0)))
            .map_err(|_| settings(format!("'{item}' is not LOCAL-ADDRESS[:PORT]")))?;
        if local.is_ipv4() != listener.is_ipv4() {
            return Err(settings(format!(
                "'{item}' is of another family than {listener}, whom it calls"
            )));
        }
        locals.push(local);
    }
    Ok(locals)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_read_with_and_without_a_local_address() {
        gst::init().unwrap();
        let r = parse("127.0.0.1:4000, 127.0.0.1:4001@127.0.0.2,[::1]:5000").unwrap();
        assert_eq!(r.len(), 3);
        assert_eq!(r[1].bind, Some("127.0.0.2".parse().unwrap()));
        assert_eq!(r[2].peer, "[::1]:5000".parse().unwrap());
        assert!(parse("").unwrap().is_empty());
        for bad in [
            "127.0.0.1",
            "127.0.0.1:0",
            "127.0.0.1:x",
            "127.0.0.1:4000@nowhere",
        ] {
            assert!(parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn local_addresses_read_with_and_without_a_port() {
        gst::init().unwrap();
        let v4: SocketAddr = "192.0.2.1:5000".parse().unwrap();
        let l = parse_locals("127.0.0.2, 10.0.0.1:6000", v4).unwrap();
        assert_eq!(
            l,
            [
                "127.0.0.2:0".parse().unwrap(),
                "10.0.0.1:6000".parse().unwrap()
            ]
        );
        let v6: SocketAddr = "[2001:db8::1]:5000".parse().unwrap();
        let l = parse_locals("::1,[::2]:7", v6).unwrap();
        assert_eq!(l, ["[::1]:0".parse().unwrap(), "[::2]:7".parse().unwrap()]);
        assert!(parse_locals("", v4).unwrap().is_empty());
        for bad in ["modem", "127.0.0.2:x", "::1"] {
            assert!(parse_locals(bad, v4).is_err(), "{bad}");
        }
    }
}
