//! The units load flags are written in: durations (`1us`, `200ms`, `60s`, `5m`) and
//! shares (`0.1%` or `0.001`).

use std::time::Duration;

/// Parses `<number><unit>` with unit `us`/`µs`, `ms`, `s`, `m` or `h`; the number may
/// have a fraction (`1.5s`).
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let bad = || format!("`{text}` is not a duration; write it like 500us, 200ms, 60s or 5m");
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .ok_or_else(bad)?;
    let (number, unit) = text.split_at(split);
    let n: f64 = number.parse().map_err(|_| bad())?;
    let seconds = match unit {
        "us" | "µs" => n / 1e6,
        "ms" => n / 1e3,
        "s" => n,
        "m" => n * 60.0,
        "h" => n * 3600.0,
        _ => return Err(bad()),
    };
    if !seconds.is_finite() || seconds <= 0.0 {
        return Err(format!("`{text}` must be longer than zero"));
    }
    Ok(Duration::from_secs_f64(seconds))
}

/// Parses a share: `0.1%` or `0.001` (both one in a thousand), between 0 and 1.
pub fn parse_share(text: &str) -> Result<f64, String> {
    let bad = || format!("`{text}` is not a share; write it like 0.1% or 0.001");
    let value = match text.strip_suffix('%') {
        Some(p) => p.trim().parse::<f64>().map_err(|_| bad())? / 100.0,
        None => text.parse::<f64>().map_err(|_| bad())?,
    };
    if !(0.0..=1.0).contains(&value) {
        return Err(format!("`{text}` must be between 0 and 100 %"));
    }
    Ok(value)
}

/// A positive rate, decisions per second.
pub fn parse_rate(text: &str) -> Result<f64, String> {
    match text.parse::<f64>() {
        Ok(r) if r.is_finite() && r > 0.0 => Ok(r),
        _ => Err(format!(
            "`{text}` is not a rate; give decisions per second, e.g. 5000"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("1us"), Ok(Duration::from_micros(1)));
        assert_eq!(parse_duration("200ms"), Ok(Duration::from_millis(200)));
        assert_eq!(parse_duration("1.5s"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_duration("5m"), Ok(Duration::from_secs(300)));
        for bad in ["", "5", "ms", "5 weeks", "0s", "-1s", "1.2.3s"] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn shares_and_rates() {
        assert_eq!(parse_share("0.1%"), Ok(0.001));
        assert_eq!(parse_share("0.001"), Ok(0.001));
        assert_eq!(parse_share("0%"), Ok(0.0));
        for bad in ["", "150%", "-1", "x%"] {
            assert!(parse_share(bad).is_err(), "{bad}");
        }
        assert_eq!(parse_rate("5000"), Ok(5000.0));
        for bad in ["0", "-3", "fast", "inf"] {
            assert!(parse_rate(bad).is_err(), "{bad}");
        }
    }
}
