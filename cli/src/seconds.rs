//! Durations on the command line, in seconds (`1`, `0.5`, `2.5e-1`): the parser every duration
//! option shares.

use std::time::Duration;

/// The longest duration an option accepts: one day. Anything longer is a mistake (a unit mixed
/// up), and `Duration::from_secs_f64` panics on values it cannot hold.
const MAX_SECONDS: f64 = 86_400.0;

/// A positive, finite duration of at most a day, parsed from a decimal number of seconds.
/// Infinity, NaN, zero and negative values are refused rather than replaced by a default.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Seconds(pub Duration);

impl std::str::FromStr for Seconds {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        let text = text.trim();
        let value: f64 = text
            .parse()
            .map_err(|_| format!("{text:?} is not a number of seconds: expected e.g. 1 or 0.5"))?;
        if !value.is_finite() {
            return Err(format!("{text} is not a finite number of seconds"));
        }
        if value <= 0.0 {
            return Err(format!("{text} seconds: must be more than 0"));
        }
        if value > MAX_SECONDS {
            return Err(format!(
                "{text} seconds: must be at most {MAX_SECONDS} (a day)"
            ));
        }
        Ok(Seconds(Duration::from_secs_f64(value)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_positive_seconds_up_to_a_day() {
        assert_eq!("1".parse(), Ok(Seconds(Duration::from_secs(1))));
        assert_eq!("0.5".parse(), Ok(Seconds(Duration::from_millis(500))));
        assert_eq!("2.5e-1".parse(), Ok(Seconds(Duration::from_millis(250))));
        assert_eq!(" 3 ".parse(), Ok(Seconds(Duration::from_secs(3))));
        assert_eq!("86400".parse(), Ok(Seconds(Duration::from_secs(86_400))));
    }

    #[test]
    fn rejects_what_is_no_duration_with_a_reason() {
        for text in [
            "inf", "+inf", "-inf", "infinity", "1e400", "NaN", "nan", "-nan",
        ] {
            let error = text.parse::<Seconds>().unwrap_err();
            assert!(error.contains("not a finite number"), "{text}: {error}");
        }
        for text in ["0", "0.0", "-0", "-1", "-1e-9"] {
            let error = text.parse::<Seconds>().unwrap_err();
            assert!(error.contains("more than 0"), "{text}: {error}");
        }
        for text in ["86400.001", "1e9", "1.7e308"] {
            let error = text.parse::<Seconds>().unwrap_err();
            assert!(error.contains("at most 86400"), "{text}: {error}");
        }
        for text in ["", "1s", "one", "0x10"] {
            let error = text.parse::<Seconds>().unwrap_err();
            assert!(error.contains("not a number of seconds"), "{text}: {error}");
        }
    }
}
