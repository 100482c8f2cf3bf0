//! The original demo's server: streams an .h265 file to every receiver that connects.
//!
//!     cargo run --example server -- -a 0.0.0.0 -p 4443 -c cert.pem -k key.pem -i in.h265 -f 24

mod common;

const USAGE: &str = "usage: server -a ADDR -p PORT -c CERT -k KEY -i IN.h265 [-f FPS]
  -a ADDR   address to listen on (default 0.0.0.0)
  -p PORT   UDP port (default 4443)
  -c CERT   PEM certificate chain
  -k KEY    PEM private key
  -i FILE   H.265 byte-stream to send, paced like a live camera
  -f FPS    frame rate for a file whose headers carry none (default: send at once)";

fn main() {
    let flags = common::parse_flags(USAGE, &["-a", "-p", "-c", "-k", "-i", "-f"], &[]);
    let need = |f: &str| {
        flags
            .get(f)
            .cloned()
            .unwrap_or_else(|| common::die(USAGE, &format!("{f} is required")))
    };
    let (cert, key, input) = (need("-c"), need("-k"), need("-i"));
    let address = flags.get("-a").map_or("0.0.0.0", String::as_str);
    let port = flags.get("-p").map_or("4443", String::as_str);
    // Frames h265parse cannot timestamp (no VUI timing) are paced at this rate.
    let rate = match flags.get("-f") {
        Some(fps) => {
            let fps: u32 = fps
                .parse()
                .unwrap_or_else(|_| common::die(USAGE, "-f takes a whole number"));
            format!("framerate={fps}/1")
        }
        None => String::new(),
    };
    common::init();
    let pipeline = common::launch(&format!(
        "filesrc location=\"{input}\" ! h265parse ! quicnalusink address={address} \
         port={port} cert-file=\"{cert}\" key-file=\"{key}\" {rate}"
    ));
    eprintln!("serving {input} on {address}:{port}; waiting for a receiver");
    if let Err(e) = common::run(&pipeline) {
        eprintln!("error: {e}");
        std::process::exit(1);
    }
}
