//! Durations and sizes as written in the configuration.

use std::time::Duration;

/// Parses a duration: one or more `NUMBER UNIT` pairs such as `"250ms"`,
/// `"30s"`, `"5min"`, `"1h"`, `"2d"`, `"1min30s"` (spaces between parts are
/// allowed). Units: `ms`, `s`, `sec`, `m`, `min`, `h`, `d`. A unit is
/// required. Returns `None` if malformed or too large; zero is returned as is.
pub fn parse_duration(s: &str) -> Option<Duration> {
    let mut rest = s.trim_start();
    if rest.is_empty() {
        return None;
    }
    let mut total_ms: u64 = 0;
    while !rest.is_empty() {
        let digits = rest.len() - rest.trim_start_matches(|c: char| c.is_ascii_digit()).len();
        if digits == 0 {
            return None;
        }
        let number: u64 = rest[..digits].parse().ok()?;
        rest = rest[digits..].trim_start();
        let letters = rest.len()
            - rest
                .trim_start_matches(|c: char| c.is_ascii_lowercase())
                .len();
        let unit_ms: u64 = match &rest[..letters] {
            "ms" => 1,
            "s" | "sec" => 1_000,
            "m" | "min" => 60_000,
            "h" => 3_600_000,
            "d" => 86_400_000,
            _ => return None,
        };
        rest = rest[letters..].trim_start();
        total_ms = total_ms.checked_add(number.checked_mul(unit_ms)?)?;
    }
    Some(Duration::from_millis(total_ms))
}

/// Parses a size: a number with a unit `K`, `M`, `G` or `T` (powers of 1024),
/// optionally followed by `B`, or a number followed by `B` alone (bytes):
/// `"64K"`, `"256M"`, `"2G"`, `"1T"`, `"512B"`. Returns `None` if malformed
/// or too large; zero is returned as is.
pub fn parse_size(s: &str) -> Option<u64> {
    let digits = s.len() - s.trim_start_matches(|c: char| c.is_ascii_digit()).len();
    if digits == 0 {
        return None;
    }
    let number: u64 = s[..digits].parse().ok()?;
    let shift = match &s[digits..] {
        "B" => 0,
        "K" | "KB" => 10,
        "M" | "MB" => 20,
        "G" | "GB" => 30,
        "T" | "TB" => 40,
        _ => return None,
    };
    number.checked_mul(1u64 << shift)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Option<Duration> {
        Some(Duration::from_millis(n))
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("250ms"), ms(250));
        assert_eq!(parse_duration("30s"), ms(30_000));
        assert_eq!(parse_duration("10sec"), ms(10_000));
        assert_eq!(parse_duration("5min"), ms(300_000));
        assert_eq!(parse_duration("5m"), ms(300_000));
        assert_eq!(parse_duration("1h"), ms(3_600_000));
        assert_eq!(parse_duration("2d"), ms(172_800_000));
        assert_eq!(parse_duration("1min30s"), ms(90_000));
        assert_eq!(parse_duration("1h 1min 1s 1ms"), ms(3_661_001));
        assert_eq!(parse_duration("5 min"), ms(300_000));
        assert_eq!(parse_duration("0s"), ms(0));
    }

    #[test]
    fn malformed_durations() {
        for bad in [
            "",
            " ",
            "30",
            "5 minutes",
            "-5s",
            "+5s",
            "1.5h",
            "s",
            "5S",
            "5s x",
            "5s5",
            "1w",
            "99999999999999999999d",
            "999999999999999d",
        ] {
            assert_eq!(parse_duration(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_size("64K"), Some(64 << 10));
        assert_eq!(parse_size("64KB"), Some(64 << 10));
        assert_eq!(parse_size("256M"), Some(256 << 20));
        assert_eq!(parse_size("2G"), Some(2 << 30));
        assert_eq!(parse_size("2GB"), Some(2 << 30));
        assert_eq!(parse_size("1T"), Some(1 << 40));
        assert_eq!(parse_size("512B"), Some(512));
        assert_eq!(parse_size("0M"), Some(0));
    }

    #[test]
    fn malformed_sizes() {
        for bad in [
            "",
            "64",
            "K",
            "64k",
            "64 M",
            "64MiB",
            "-1K",
            "1.5G",
            "64KBB",
            "1P",
            "99999999999T",
        ] {
            assert_eq!(parse_size(bad), None, "{bad:?}");
        }
    }
}
