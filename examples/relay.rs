//! The impairment relay on the command line: put it between quicnalusrc (or any UDP
//! receiver) and the sender to try a bad network on loopback.
//!
//!     cargo run --release --example relay -- --server 127.0.0.1:4443 --listen 127.0.0.1:5000 \
//!         --both delay=20ms,loss=1% --outage 10s+2s
//!
//! then point the receiver at port 5000.

mod common;

use std::time::Duration;
use udp_impair::{parse_duration, Impairment, Relay, RelayConfig};

const USAGE: &str = "usage: relay --server ADDR:PORT [--listen ADDR:PORT] [--seed N]
             [--both SPEC] [--to-server SPEC] [--to-client SPEC] [--outage START+LEN,...]
  --server     the sender's address
  --listen     where receivers connect (default 127.0.0.1:0, printed at start)
  --seed       seed for every random choice (default 1)
  --both       impairment both ways; --to-server / --to-client set one direction
  --outage     link cuts after the start, e.g. 10s+2s,30s+500ms
SPEC: comma-separated delay=20ms jitter=5ms reorder loss=1% burst=p:r:loss_good:loss_bad
      rate=3M (bits/s) queue=64k (bytes, the cap's buffer)";

fn main() {
    let flags = common::parse_flags(
        USAGE,
        &[
            "--server",
            "--listen",
            "--seed",
            "--both",
            "--to-server",
            "--to-client",
            "--outage",
        ],
        &[],
    );
    let fail = |why: String| -> ! { common::die(USAGE, &why) };
    let addr = |flag: &str, default: Option<&str>| {
        let text = flags
            .get(flag)
            .map(String::as_str)
            .or(default)
            .unwrap_or_else(|| fail(format!("{flag} is required")));
        text.parse()
            .unwrap_or_else(|_| fail(format!("{flag}: '{text}' is not ADDR:PORT")))
    };
    let spec = |flag: &str| {
        flags
            .get(flag)
            .or(flags.get("--both"))
            .map(|s| Impairment::parse(s).unwrap_or_else(|e| fail(e.to_string())))
            .unwrap_or_default()
    };
    let outages = flags
        .get("--outage")
        .map(|list| {
            list.split(',')
                .map(|o| {
                    let (start, len) = o
                        .split_once('+')
                        .unwrap_or_else(|| fail(format!("outage '{o}' is START+LEN")));
                    let d = |t| parse_duration(t).unwrap_or_else(|e| fail(e.to_string()));
                    (d(start), d(len))
                })
                .collect()
        })
        .unwrap_or_default();
    let config = RelayConfig {
        listen: addr("--listen", Some("127.0.0.1:0")),
        server: addr("--server", None),
        seed: flags
            .get("--seed")
            .map(|s| {
                s.parse()
                    .unwrap_or_else(|_| fail(format!("bad seed '{s}'")))
            })
            .unwrap_or(1),
        to_server: spec("--to-server"),
        to_client: spec("--to-client"),
        outages,
    };
    println!(
        "to server: {:?}\nto client: {:?}",
        config.to_server, config.to_client
    );
    let relay = Relay::start(config).unwrap_or_else(|e| fail(format!("cannot start: {e}")));
    println!(
        "relaying {} -> {}",
        relay.local_addr(),
        addr("--server", None) as std::net::SocketAddr
    );
    loop {
        std::thread::sleep(Duration::from_secs(5));
        let s = relay.stats();
        println!("to server {:?}\nto client {:?}", s.to_server, s.to_client);
    }
}
