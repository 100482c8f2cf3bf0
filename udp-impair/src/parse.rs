//! The impairment spec's text form, `delay=20ms,loss=1%,...`, and the durations, fractions
//! and scaled numbers in it.

use crate::{GilbertElliott, Impairment};
use std::time::Duration;

impl Impairment {
    /// Parses the CLI form, comma-separated `key=value` items, for example
    /// `delay=20ms,jitter=5ms,reorder,loss=1%,burst=0.002:0.2:0:1,rate=3M,queue=64k`.
    /// `burst` is Gilbert-Elliott `p:r:loss_good:loss_bad`; `rate` is bits per second with
    /// an optional k/M/G; `queue` is bytes with an optional k/M.
    pub fn parse(spec: &str) -> Result<Impairment, String> {
        let mut imp = Impairment::default();
        for item in spec.split(',').map(str::trim).filter(|i| !i.is_empty()) {
            let (key, value) = item.split_once('=').unwrap_or((item, ""));
            let bad = |what: &str| format!("'{item}': {what}");
            match key {
                "delay" => imp.delay = parse_duration(value).map_err(|e| bad(&e))?,
                "jitter" => imp.jitter = parse_duration(value).map_err(|e| bad(&e))?,
                "reorder" => imp.reorder = true,
                "loss" => imp.loss = parse_fraction(value).map_err(|e| bad(&e))?,
                "burst" => {
                    let f: Vec<f64> = value
                        .split(':')
                        .map(parse_fraction)
                        .collect::<Result<_, _>>()
                        .map_err(|e| bad(&e))?;
                    let [p, r, loss_good, loss_bad] = f[..] else {
                        return Err(bad("burst is p:r:loss_good:loss_bad"));
                    };
                    imp.burst = Some(GilbertElliott {
                        p,
                        r,
                        loss_good,
                        loss_bad,
                    });
                }
                "rate" => imp.rate_bps = Some(parse_scaled(value, 1000).map_err(|e| bad(&e))?),
                "queue" => {
                    imp.queue_bytes = parse_scaled(value, 1024).map_err(|e| bad(&e))? as usize
                }
                _ => return Err(bad("unknown setting")),
            }
        }
        Ok(imp)
    }
}

/// `20ms`, `1.5s`, `300us`.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let (number, unit) = split_unit(text);
    let value: f64 = number
        .parse()
        .map_err(|_| format!("'{text}' is not a duration"))?;
    let seconds = match unit {
        "s" => value,
        "ms" => value / 1e3,
        "us" => value / 1e6,
        _ => return Err(format!("'{text}': use s, ms or us")),
    };
    Duration::try_from_secs_f64(seconds).map_err(|_| format!("'{text}' is out of range"))
}

/// `1%` or `0.01`.
fn parse_fraction(text: &str) -> Result<f64, String> {
    let (number, scale) = match text.strip_suffix('%') {
        Some(n) => (n, 100.0),
        None => (text, 1.0),
    };
    let v = number
        .parse::<f64>()
        .map(|v| v / scale)
        .map_err(|_| format!("'{text}' is not a probability"))?;
    if (0.0..=1.0).contains(&v) {
        Ok(v)
    } else {
        Err(format!("'{text}' is not between 0 and 1"))
    }
}

/// `3M`, `64k`, `1500`, with `base` 1000 or 1024.
fn parse_scaled(text: &str, base: u64) -> Result<u64, String> {
    let (number, unit) = split_unit(text);
    let scale = match unit {
        "" => 1,
        "k" | "K" => base,
        "M" => base * base,
        "G" => base * base * base,
        _ => return Err(format!("'{text}': unknown unit")),
    };
    let v: f64 = number
        .parse()
        .map_err(|_| format!("'{text}' is not a number"))?;
    Ok((v * scale as f64) as u64)
}

fn split_unit(text: &str) -> (&str, &str) {
    let at = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(text.len());
    text.split_at(at)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_cli_form() {
        let imp =
            Impairment::parse("delay=20ms,jitter=1.5ms,reorder,loss=1%,rate=3M,queue=64k").unwrap();
        assert_eq!(imp.delay, Duration::from_millis(20));
        assert_eq!(imp.jitter, Duration::from_micros(1500));
        assert!(imp.reorder);
        assert!((imp.loss - 0.01).abs() < 1e-12);
        assert_eq!((imp.rate_bps, imp.queue_bytes), (Some(3_000_000), 65536));
        let ge = Impairment::parse("burst=0.01:0.25:0:0.5")
            .unwrap()
            .burst
            .unwrap();
        assert_eq!(
            (ge.p, ge.r, ge.loss_good, ge.loss_bad),
            (0.01, 0.25, 0.0, 0.5)
        );
        for bad in ["delay=20", "loss=150%", "burst=1:2", "speed=3", "rate=3X"] {
            assert!(Impairment::parse(bad).is_err(), "{bad}");
        }
    }
}
