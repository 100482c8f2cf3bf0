//! `known_hosts::judge` on arbitrary file contents, input
//! `[fingerprint, 32 bytes] [host length] [host] [contents ...]` (contents read as the
//! receiver reads the file: lossy UTF-8).
//!
//! Invariants: `Changed` names a line within the contents, which has the host and `was`
//! as its first two fields, `was` not the fingerprint presented; `Known` means some line's
//! first two fields are the host and the presented fingerprint (64 hex digits in either
//! case, `:` between bytes or not, as `Fingerprint` reads them); `New` means no line has the
//! host with any fingerprint. For a host a receiver can have (non-empty, no whitespace, no
//! leading `#`): the line the receiver records, `host fingerprint`, appended to any contents
//! (after a newline if they lack a final one) makes them Known; so does the line in any form
//! `Fingerprint::parse` takes; a line with another fingerprint appended instead keeps Known
//! contents Known and makes any other contents Changed on that line.
//!
//! Found here, and fixed: `Fingerprint::parse` read each byte with `u8::from_str_radix`,
//! which takes a leading `+`, so `+A+B...` passed for 64 hex digits.

#![no_main]

use gstquicnalu::net::known_hosts::judge;
use gstquicnalu::net::tls::Fingerprint;
use gstquicnalu::net::known_hosts::Verdict;
use libfuzzer_sys::fuzz_target;

/// The first two whitespace-separated fields of a line.
fn fields(line: &str) -> Option<(&str, &str)> {
    let mut f = line.split_whitespace();
    Some((f.next()?, f.next()?))
}

/// A fingerprint field in any form `Fingerprint` documents: 64 hex digits, either case,
/// with or without `:` between bytes. Returns the digits in upper case.
fn hex_digits(field: &str) -> Option<String> {
    let digits = field.replace(':', "");
    (digits.len() == 64 && digits.bytes().all(|b| b.is_ascii_hexdigit()))
        .then(|| digits.to_ascii_uppercase())
}

fn with_line(contents: &str, line: &str) -> String {
    let mut out = contents.to_string();
    if !out.is_empty() && !out.ends_with('\n') {
        out.push('\n');
    }
    out.push_str(line);
    out.push('\n');
    out
}

fuzz_target!(|data: &[u8]| {
    let Some((print, rest)) = data.split_first_chunk::<32>() else {
        return;
    };
    let Some((&n, rest)) = rest.split_first() else {
        return;
    };
    let n = usize::from(n).min(rest.len());
    let (host, contents) = rest.split_at(n);
    let host = String::from_utf8_lossy(host);
    let contents = String::from_utf8_lossy(contents);
    let got = Fingerprint::parse(&hex(print)).expect("64 hex digits parse");
    assert_eq!(
        got.to_string().replace(':', ""),
        hex(print).to_ascii_uppercase()
    );

    let verdict = judge(&contents, &host, got);
    let lines: Vec<&str> = contents.lines().collect();
    let has = |f: &dyn Fn(&str) -> bool| {
        lines
            .iter()
            .filter_map(|l| fields(l))
            .any(|(name, print)| name == host && f(print))
    };
    let got_digits = got.to_string().replace(':', "");
    match &verdict {
        Verdict::Known => assert!(
            has(&|p| hex_digits(p).as_deref() == Some(got_digits.as_str())),
            "Known, but no line has {host} {got}"
        ),
        Verdict::New => assert!(
            !has(&|p| Fingerprint::parse(p).is_ok()),
            "New, but a line has {host} with a fingerprint"
        ),
        Verdict::Changed { was, line } => {
            assert_ne!(*was, got);
            assert!(
                (1..=lines.len()).contains(line),
                "line {line} of {}",
                lines.len()
            );
            let (name, print) = fields(lines[line - 1]).expect("the line has two fields");
            assert_eq!(name, host);
            assert_eq!(Fingerprint::parse(print), Ok(*was));
            assert!(!has(&|p| Fingerprint::parse(p) == Ok(got)));
        }
    }

    let real_host =
        !host.is_empty() && !host.contains(char::is_whitespace) && !host.starts_with('#');
    if !real_host {
        assert_ne!(verdict, Verdict::Known);
        return;
    }
    // As the receiver records it, and in the other forms Fingerprint reads.
    let forms = [
        got.to_string(),
        got.to_string().to_ascii_lowercase(),
        got_digits.clone(),
    ];
    for form in &forms {
        let appended = with_line(&contents, &format!("{host} {form}"));
        assert_eq!(judge(&appended, &host, got), Verdict::Known, "{form}");
        let prepended = format!("{host}\t{form} # comment\n{contents}");
        assert_eq!(judge(&prepended, &host, got), Verdict::Known, "{form}");
    }
    let mut other_bytes = *print;
    other_bytes[31] ^= 1;
    let other = Fingerprint::parse(&hex(&other_bytes)).unwrap();
    let appended = with_line(&contents, &format!("{host} {other}"));
    let count = appended.lines().count();
    let expected = if verdict == Verdict::Known {
        Verdict::Known
    } else {
        Verdict::Changed {
            was: other,
            line: count,
        }
    };
    assert_eq!(judge(&appended, &host, got), expected);
});

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
