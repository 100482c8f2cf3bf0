//! The original demo's client: receives the stream and writes the H.265 byte-stream out.
//!
//!     cargo run --example client -- -a 127.0.0.1 -p 4443 -c cert.pem -o - | ffplay -i pipe:0

mod common;

const USAGE: &str = "usage: client -a ADDR -p PORT [-c CA] -o OUT.h265 [--insecure]
  -a ADDR      sender address or host name (default 127.0.0.1)
  -p PORT      sender UDP port (default 4443)
  -c CA        PEM CA or self-signed certificate to trust (default: system store)
  -o OUT       output file, or - for stdout
  --insecure   do not verify the sender's certificate";

fn main() {
    let flags = common::parse_flags(USAGE, &["-a", "-p", "-c", "-o"], &["--insecure"]);
    let output = flags
        .get("-o")
        .cloned()
        .unwrap_or_else(|| common::die(USAGE, "-o is required"));
    let address = flags.get("-a").map_or("127.0.0.1", String::as_str);
    let port = flags.get("-p").map_or("4443", String::as_str);
    let mut src = format!("quicnalusrc address={address} port={port}");
    if let Some(ca) = flags.get("-c") {
        src.push_str(&format!(" ca-file=\"{ca}\""));
    }
    if flags.contains_key("--insecure") {
        src.push_str(" tls-verify=false");
    }
    let sink = if output == "-" {
        "fdsink fd=1 sync=false".to_string()
    } else {
        format!("filesink location=\"{output}\"")
    };
    common::init();
    let pipeline = common::launch(&format!("{src} ! {sink}"));
    if let Err(e) = common::run(&pipeline) {
        eprintln!("error: {e}");
        std::process::exit(1);
    }
}
