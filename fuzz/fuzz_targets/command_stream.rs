//! Control-stream bytes into `CommandDecoder`, once whole and once in fuzzer-chosen reads.
//!
//! Invariants: the reads do not change what is decoded or refused (the transport hands the
//! decoder whatever a packet held); every decoded command re-encodes to one that decodes to
//! itself within the same limit; re-encoding never grows the stream.

#![no_main]

use gstquicnalu::protocol::{put_preamble, Command, CommandDecoder, Error, Reader, StreamKind};
use libfuzzer_sys::fuzz_target;
use quicnalu_fuzz::{limit, Chunks, Input, MAX_COMMAND, MAX_TOKEN};

/// Decodes `stream` in the reads `chunks` gives, or in one read; stops at the first error as
/// the transport does (it closes the connection).
fn decode(
    max: u64,
    stream: &[u8],
    chunks: Option<&mut Chunks>,
) -> (Vec<Command>, Result<(), Error>) {
    let mut dec = CommandDecoder::new(max);
    let mut out = Vec::new();
    let Some(chunks) = chunks else {
        let result = dec.push(stream, &mut out);
        return (out, result);
    };
    let mut rest = stream;
    loop {
        let n = chunks.next_len().min(rest.len());
        if let Err(e) = dec.push(&rest[..n], &mut out) {
            return (out, Err(e));
        }
        rest = &rest[n..];
        if rest.is_empty() {
            return (out, Ok(()));
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let Some(input) = Input::parse(data) else {
        return;
    };
    let max = limit(input.limit, MAX_COMMAND);
    let (commands, result) = decode(max, input.stream, None);
    let chunked = decode(max, input.stream, Some(&mut Chunks::new(input.seed)));
    assert_eq!(
        (&commands, &result),
        (&chunked.0, &chunked.1),
        "the reads changed the outcome"
    );
    assert_ne!(
        result,
        Err(Error::Incomplete),
        "a partial message is not an error"
    );

    let mut again = Vec::new();
    put_preamble(&mut again, StreamKind::Control);
    for c in &commands {
        if let Command::Hello { token, .. } = c {
            assert!(token.len() <= MAX_TOKEN, "token of {} bytes", token.len());
        }
        let mut wire = Vec::new();
        c.encode(&mut wire);
        let mut r = Reader::new(&wire);
        assert_eq!(Command::decode(&mut r, max).as_ref(), Ok(c), "{wire:02x?}");
        assert_eq!(r.remaining(), 0, "re-encoding left bytes over: {wire:02x?}");
        again.extend_from_slice(&wire);
    }
    if !commands.is_empty() {
        // Shortest varints, unknown payloads dropped: never longer than what came in.
        assert!(again.len() <= input.stream.len());
        assert_eq!(decode(max, &again, None), (commands, Ok(())));
    }
});
