//! The impairment spec's text form, `delay=20ms,loss=1%,...`, and the durations, fractions
//! and scaled numbers in it.

use crate::{GilbertElliott, Impairment, SpecError, ValueError};
use std::time::Duration;

impl Impairment {
    /// Parses the CLI form, comma-separated `key=value` items, for example
    /// `delay=20ms,jitter=5ms,reorder,loss=1%,burst=0.002:0.2:0:1,rate=3M,queue=64k`.
    /// `burst` is Gilbert-Elliott `p:r:loss_good:loss_bad`; `rate` is bits per second with
    /// an optional k/M/G; `queue` is bytes with an optional k/M.
    pub fn parse(spec: &str) -> Result<Impairment, SpecError> {
        let mut imp = Impairment::default();
        for item in spec.split(',').map(str::trim).filter(|i| !i.is_empty()) {
            let (key, value) = item.split_once('=').unwrap_or((item, ""));
            let bad = |error: ValueError| SpecError::Value {
                item: item.to_string(),
                error,
            };
            match key {
                "delay" => imp.delay = parse_duration(value).map_err(bad)?,
                "jitter" => imp.jitter = parse_duration(value).map_err(bad)?,
                "reorder" => imp.reorder = true,
                "loss" => imp.loss = parse_fraction(value).map_err(bad)?,
                "burst" => {
                    let f: Vec<f64> = value
                        .split(':')
                        .map(parse_fraction)
                        .collect::<Result<_, _>>()
                        .map_err(bad)?;
                    let [p, r, loss_good, loss_bad] = f[..] else {
                        return Err(SpecError::BurstShape {
                            item: item.to_string(),
                        });
                    };
                    imp.burst = Some(GilbertElliott {
                        p,
                        r,
                        loss_good,
                        loss_bad,
                    });
                }
                "rate" => imp.rate_bps = Some(parse_scaled(value, 1000).map_err(bad)?),
                "queue" => imp.queue_bytes = parse_scaled(value, 1024).map_err(bad)? as usize,
                _ => {
                    return Err(SpecError::UnknownSetting {
                        item: item.to_string(),
                    })
                }
            }
        }
        Ok(imp)
    }
}

/// `20ms`, `1.5s`, `300us`.
pub fn parse_duration(text: &str) -> Result<Duration, ValueError> {
    let (number, unit) = split_unit(text);
    let value: f64 = number
        .parse()
        .map_err(|_| ValueError::NotADuration(text.to_string()))?;
    let seconds = match unit {
        "s" => value,
        "ms" => value / 1e3,
        "us" => value / 1e6,
        _ => return Err(ValueError::DurationUnit(text.to_string())),
    };
    Duration::try_from_secs_f64(seconds)
        .map_err(|_| ValueError::DurationOutOfRange(text.to_string()))
}

/// `1%` or `0.01`.
fn parse_fraction(text: &str) -> Result<f64, ValueError> {
    let (number, scale) = match text.strip_suffix('%') {
        Some(n) => (n, 100.0),
        None => (text, 1.0),
    };
    let v = number
        .parse::<f64>()
        .map(|v| v / scale)
        .map_err(|_| ValueError::NotAProbability(text.to_string()))?;
    if (0.0..=1.0).contains(&v) {
        Ok(v)
    } else {
        Err(ValueError::ProbabilityOutOfRange(text.to_string()))
    }
}

/// `3M`, `64k`, `1500`, with `base` 1000 or 1024.
fn parse_scaled(text: &str, base: u64) -> Result<u64, ValueError> {
    let (number, unit) = split_unit(text);
    let scale = match unit {
        "" => 1,
        "k" | "K" => base,
        "M" => base * base,
        "G" => base * base * base,
        _ => return Err(ValueError::UnknownUnit(text.to_string())),
    };
    let v: f64 = number
        .parse()
        .map_err(|_| ValueError::NotANumber(text.to_string()))?;
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
    }

    #[test]
    fn says_which_item_is_wrong_and_why() {
        let value = |item: &str, error| SpecError::Value {
            item: item.into(),
            error,
        };
        let cases = [
            (
                "delay=20",
                value("delay=20", ValueError::DurationUnit("20".into())),
            ),
            (
                "jitter=ms",
                value("jitter=ms", ValueError::NotADuration("ms".into())),
            ),
            (
                "delay=1e400s",
                value("delay=1e400s", ValueError::DurationUnit("1e400s".into())),
            ),
            (
                "delay=99999999999999999999999s",
                value(
                    "delay=99999999999999999999999s",
                    ValueError::DurationOutOfRange("99999999999999999999999s".into()),
                ),
            ),
            (
                "loss=150%",
                value(
                    "loss=150%",
                    ValueError::ProbabilityOutOfRange("150%".into()),
                ),
            ),
            (
                "loss=much",
                value("loss=much", ValueError::NotAProbability("much".into())),
            ),
            (
                "burst=1:2",
                value("burst=1:2", ValueError::ProbabilityOutOfRange("2".into())),
            ),
            (
                "burst=0.1:0.2",
                SpecError::BurstShape {
                    item: "burst=0.1:0.2".into(),
                },
            ),
            (
                "speed=3",
                SpecError::UnknownSetting {
                    item: "speed=3".into(),
                },
            ),
            (
                "rate=3X",
                value("rate=3X", ValueError::UnknownUnit("3X".into())),
            ),
            (
                "queue=k",
                value("queue=k", ValueError::NotANumber("k".into())),
            ),
        ];
        for (spec, error) in cases {
            assert_eq!(Impairment::parse(spec), Err(error), "{spec}");
        }
        // The message names the item and then the value's fault.
        let e = Impairment::parse("delay=20ms,loss=150%").unwrap_err();
        assert_eq!(e.to_string(), "'loss=150%': '150%' is not between 0 and 1");
        assert_eq!(
            parse_duration("20").unwrap_err().to_string(),
            "'20': use s, ms or us"
        );
    }
}
