//! Byte sizes on the command line (`512MiB`, `1GiB`, `4096`) and in output.

use std::fmt;

/// A byte count parsed from `<integer>[unit]`: units `B`, `K`/`KiB`, `M`/`MiB`, `G`/`GiB`,
/// `T`/`TiB` (powers of 1024) and `KB`, `MB`, `GB`, `TB` (powers of 1000), case-insensitive.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Size(pub u64);

impl std::str::FromStr for Size {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        let text = text.trim();
        let digits = text
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(text.len());
        let (number, unit) = text.split_at(digits);
        if number.is_empty() {
            return Err(format!(
                "{text:?} is not a size: expected e.g. 4096, 512MiB or 1GiB"
            ));
        }
        let number: u64 = number
            .parse()
            .map_err(|_| format!("{number} is too large for a size"))?;
        let multiplier: u64 = match unit.trim().to_ascii_lowercase().as_str() {
            "" | "b" => 1,
            "k" | "kib" => 1 << 10,
            "m" | "mib" => 1 << 20,
            "g" | "gib" => 1 << 30,
            "t" | "tib" => 1 << 40,
            "kb" => 1_000,
            "mb" => 1_000_000,
            "gb" => 1_000_000_000,
            "tb" => 1_000_000_000_000,
            other => {
                return Err(format!(
                    "unknown size unit {other:?}: use B, KiB, MiB, GiB, TiB (or KB, MB, GB, TB)"
                ))
            }
        };
        number
            .checked_mul(multiplier)
            .map(Size)
            .ok_or_else(|| format!("{text} does not fit in 64 bits"))
    }
}

/// A commit log segment size: a [`Size`] within what the file log accepts (one page to
/// 64 GiB), so that a bad `--segment-size` is a usage error naming the option, not a failure
/// (`ENOMEM`, "too many open files") once the store is in use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SegmentSize(pub u64);

impl std::str::FromStr for SegmentSize {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        use rocketmq_ha_transports::file_log::{MAX_SEGMENT_SIZE, MIN_SEGMENT_SIZE};
        let Size(size) = text.parse()?;
        if size < MIN_SEGMENT_SIZE {
            return Err(format!(
                "{} is below one page: a segment holds at least {MIN_SEGMENT_SIZE} bytes",
                Human(size)
            ));
        }
        if size > MAX_SEGMENT_SIZE {
            return Err(format!(
                "{} is too large: a segment is mapped into memory whole, so at most {} \
                 (RocketMQ's default is 1 GiB)",
                Human(size),
                Human(MAX_SEGMENT_SIZE)
            ));
        }
        Ok(SegmentSize(size))
    }
}

/// Formats a byte count for people: `1.50 GiB`, `12.0 MiB`, `512 B`.
pub struct Human(pub u64);

impl fmt::Display for Human {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
        let mut value = self.0 as f64;
        let mut unit = 0;
        while value >= 1024.0 && unit + 1 < UNITS.len() {
            value /= 1024.0;
            unit += 1;
        }
        match unit {
            0 => write!(f, "{} B", self.0),
            _ if value >= 100.0 => write!(f, "{value:.0} {}", UNITS[unit]),
            _ if value >= 10.0 => write!(f, "{value:.1} {}", UNITS[unit]),
            _ => write!(f, "{value:.2} {}", UNITS[unit]),
        }
    }
}

/// Megabytes (10^6 bytes) per second, the usual unit for throughput.
pub fn mb_per_s(bytes: u64, seconds: f64) -> f64 {
    if seconds > 0.0 {
        bytes as f64 / 1e6 / seconds
    } else {
        0.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_binary_decimal_and_plain_sizes() {
        assert_eq!("4096".parse(), Ok(Size(4096)));
        assert_eq!("512MiB".parse(), Ok(Size(512 << 20)));
        assert_eq!("1GiB".parse(), Ok(Size(1 << 30)));
        assert_eq!("1gib".parse(), Ok(Size(1 << 30)));
        assert_eq!("64k".parse(), Ok(Size(64 << 10)));
        assert_eq!("10MB".parse(), Ok(Size(10_000_000)));
        assert_eq!("7 B".parse(), Ok(Size(7)));
    }

    #[test]
    fn rejects_nonsense_with_a_reason() {
        assert!("".parse::<Size>().unwrap_err().contains("not a size"));
        assert!("MiB".parse::<Size>().unwrap_err().contains("not a size"));
        assert!("12parsecs"
            .parse::<Size>()
            .unwrap_err()
            .contains("unknown size unit"));
        assert!("-5".parse::<Size>().is_err());
        assert!("20000000TiB"
            .parse::<Size>()
            .unwrap_err()
            .contains("64 bits"));
    }

    #[test]
    fn segment_sizes_are_one_page_to_64_gib() {
        assert_eq!("4096".parse(), Ok(SegmentSize(4096)));
        assert_eq!("1GiB".parse(), Ok(SegmentSize(1 << 30)));
        assert_eq!("64GiB".parse(), Ok(SegmentSize(64 << 30)));
        for (text, reason) in [
            ("0", "below one page"),
            ("1000", "below one page"),
            ("4095", "below one page"),
            ("64GiB1", "unknown size unit"),
            ("68719476737", "too large"),
            ("100TiB", "too large"),
        ] {
            let err = text.parse::<SegmentSize>().unwrap_err();
            assert!(err.contains(reason), "{text}: {err}");
        }
    }

    #[test]
    fn formats_for_people() {
        assert_eq!(Human(512).to_string(), "512 B");
        assert_eq!(Human(1536 << 20).to_string(), "1.50 GiB");
        assert_eq!(Human(12 << 20).to_string(), "12.0 MiB");
        assert_eq!(Human(300 << 20).to_string(), "300 MiB");
    }
}
