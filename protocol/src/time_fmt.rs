//! Dates as they appear in controls and manifests. Pure conversions: the current time is always
//! an argument.

use time::format_description::well_known::Rfc3339;
use time::macros::format_description;
use time::{Date, OffsetDateTime, PrimitiveDateTime};

/// Parses `YYYY-MM-DD`, `YYYY-MM-DDTHH:MM:SS` (a space may replace `T`, fractional seconds and
/// a `Z` are allowed) as UTC, into Unix seconds.
pub fn parse_date(text: &str) -> Option<i64> {
    let text = text.trim().trim_end_matches('Z');
    let (date, clock) = match text.split_once(['T', ' ']) {
        Some((d, c)) => (d, Some(c)),
        None => (text, None),
    };
    let date = Date::parse(date, format_description!("[year]-[month]-[day]")).ok()?;
    let datetime = match clock {
        None => date.midnight(),
        Some(clock) => {
            let clock = clock.split_once('.').map_or(clock, |(c, _)| c);
            let fmt = format_description!("[hour]:[minute]:[second]");
            let t = time::Time::parse(clock, fmt)
                .or_else(|_| time::Time::parse(clock, format_description!("[hour]:[minute]")))
                .ok()?;
            PrimitiveDateTime::new(date, t)
        }
    };
    Some(datetime.assume_utc().unix_timestamp())
}

/// Formats Unix seconds as RFC 3339 UTC (`2024-12-08T23:21:37Z`).
pub fn format_unix(secs: i64) -> String {
    OffsetDateTime::from_unix_timestamp(secs)
        .ok()
        .and_then(|t| t.format(&Rfc3339).ok())
        .unwrap_or_else(|| format!("@{secs}"))
}

/// True for WAPT's compact pre-1.7 signature dates (`20180313-172202`).
pub fn is_compact_wapt_date(text: &str) -> bool {
    let b = text.trim().as_bytes();
    b.len() == 15 && b[8] == b'-' && b[..8].iter().all(u8::is_ascii_digit) && b[9..].iter().all(u8::is_ascii_digit)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates() {
        assert_eq!(parse_date("1970-01-02"), Some(86_400));
        assert_eq!(parse_date("2024-12-08T23:21:37.000000"), parse_date("2024-12-08 23:21:37"));
        assert_eq!(parse_date("2024-12-08T23:21:37Z"), Some(1_733_700_097));
        assert_eq!(parse_date("2024-12-08T23:21"), Some(1_733_700_060));
        assert_eq!(parse_date("soon"), None);
        assert_eq!(parse_date("2024-13-01"), None);
        assert_eq!(format_unix(1_733_700_097), "2024-12-08T23:21:37Z");
        assert!(is_compact_wapt_date("20180313-172202"));
        assert!(!is_compact_wapt_date("2024-12-08T23:21:37.000000"));
    }
}
