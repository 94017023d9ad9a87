//! When and how fast an edge may replicate: sync windows (days and times) and a token bucket
//! for the bandwidth cap. Pure: time is always an argument.

use std::fmt;
use std::time::Duration;

use crate::text::excerpt;

/// A weekly window, e.g. `Mon-Fri 20:00-06:00` (a window may cross midnight; it then belongs to
/// the day it starts on), `daily 00:00-24:00`, `Sat,Sun 08:00-18:00`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SyncWindow {
    /// Days the window starts on, bit 0 = Monday.
    days: u8,
    /// Start, minutes after midnight.
    start: u16,
    /// End, minutes after midnight (≤ 1440); before `start` when crossing midnight.
    end: u16,
    text: String,
}

const DAYS: [&str; 7] = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"];

/// Why a window does not parse.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("invalid sync window {text:?}: {reason} (expected like \"Mon-Fri 20:00-06:00\" or \"daily 22:00-05:00\")")]
pub struct WindowError {
    /// The text given.
    pub text: String,
    /// What is wrong.
    pub reason: &'static str,
}

impl SyncWindow {
    /// Parses a window.
    pub fn parse(text: &str) -> Result<Self, WindowError> {
        let err = |reason| WindowError { text: text.to_string(), reason };
        let mut parts = text.split_whitespace();
        let (days_text, times) = match (parts.next(), parts.next(), parts.next()) {
            (Some(t), None, None) if t.contains(':') => ("daily", t),
            (Some(d), Some(t), None) => (d, t),
            _ => return Err(err("expected days and a time range")),
        };
        let mut days = 0u8;
        for item in days_text.to_lowercase().split(',') {
            if item == "daily" || item == "*" {
                days = 0x7f;
                continue;
            }
            let day = |d: &str| DAYS.iter().position(|x| d.get(..3) == Some(*x));
            match item.split_once('-') {
                Some((a, b)) => {
                    let (a, b) = (day(a).ok_or_else(|| err("unknown day"))?, day(b).ok_or_else(|| err("unknown day"))?);
                    let mut d = a;
                    loop {
                        days |= 1 << d;
                        if d == b {
                            break;
                        }
                        d = (d + 1) % 7;
                    }
                }
                None => days |= 1 << day(item).ok_or_else(|| err("unknown day"))?,
            }
        }
        let (start, end) = times.split_once('-').ok_or_else(|| err("expected HH:MM-HH:MM"))?;
        let minutes = |t: &str| -> Option<u16> {
            let (h, m) = t.split_once(':')?;
            let (h, m): (u16, u16) = (h.parse().ok()?, m.parse().ok()?);
            (m < 60 && (h < 24 || (h == 24 && m == 0))).then_some(h * 60 + m)
        };
        let start = minutes(start).ok_or_else(|| err("bad start time"))?;
        let end = minutes(end).ok_or_else(|| err("bad end time"))?;
        if start == end || start == 1440 {
            return Err(err("the window is empty"));
        }
        Ok(Self { days, start, end, text: text.to_string() })
    }

    /// True when the window is open at `unix` seconds, with local time = UTC + `offset_minutes`.
    pub fn is_open(&self, unix: i64, offset_minutes: i32) -> bool {
        let local = unix + i64::from(offset_minutes) * 60;
        let day_index = (local.div_euclid(86_400) + 3).rem_euclid(7) as u8; // 1970-01-01 was a Thursday
        let minute = (local.rem_euclid(86_400) / 60) as u16;
        let starts_on = |d: u8| self.days & (1 << d) != 0;
        if self.start < self.end {
            starts_on(day_index) && minute >= self.start && minute < self.end
        } else {
            (starts_on(day_index) && minute >= self.start) || (starts_on((day_index + 6) % 7) && minute < self.end)
        }
    }
}

impl fmt::Display for SyncWindow {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

/// True when syncing is allowed at `unix`: no windows means always.
pub fn sync_allowed(windows: &[SyncWindow], unix: i64, offset_minutes: i32) -> bool {
    windows.is_empty() || windows.iter().any(|w| w.is_open(unix, offset_minutes))
}

/// The local time's offset from UTC, in minutes, at an instant (Unix seconds): a time zone's
/// rules (daylight saving time changes it), or a fixed offset.
pub type OffsetAt<'a> = &'a dyn Fn(i64) -> i32;

/// True when syncing is allowed at `unix`, in a time zone whose offset at each instant is
/// `offset_at(instant)`.
pub fn allowed_at(windows: &[SyncWindow], unix: i64, offset_at: OffsetAt<'_>) -> bool {
    sync_allowed(windows, unix, offset_at(unix))
}

/// How far ahead [`next_change`] looks: a week and a day covers every weekly window.
pub const LOOKAHEAD_SECS: i64 = 8 * 86_400;

/// The first minute after `now` at which the windows change state (they open when closed at
/// `now`, close when open), within [`LOOKAHEAD_SECS`]. `None` when they never change (no
/// windows, or always open).
pub fn next_change(windows: &[SyncWindow], now: i64, offset_at: OffsetAt<'_>) -> Option<i64> {
    if windows.is_empty() {
        return None;
    }
    let open = allowed_at(windows, now, offset_at);
    let first = now.div_euclid(60) * 60 + 60;
    (0..LOOKAHEAD_SECS / 60).map(|k| first + k * 60).find(|&t| allowed_at(windows, t, offset_at) != open)
}

/// A token bucket: `rate` bytes per second, holding at most `burst` bytes.
#[derive(Clone, Debug)]
pub struct TokenBucket {
    rate: f64,
    burst: f64,
    tokens: f64,
    last: Duration,
}

impl TokenBucket {
    /// A full bucket at time `now` (any monotonic clock).
    pub fn new(rate_bytes_per_sec: u64, now: Duration) -> Self {
        let rate = rate_bytes_per_sec.max(1) as f64;
        // A quarter of a second of traffic, at least 256 KiB.
        let burst = (rate / 4.0).max(262_144.0);
        Self { rate, burst, tokens: burst, last: now }
    }

    /// Takes `bytes` at `now`; returns how long to wait before sending them (zero when the
    /// bucket holds enough). The debt is recorded, so callers just wait and go.
    pub fn take(&mut self, bytes: u64, now: Duration) -> Duration {
        let elapsed = now.saturating_sub(self.last).as_secs_f64();
        self.last = now.max(self.last);
        self.tokens = (self.tokens + elapsed * self.rate).min(self.burst);
        self.tokens -= bytes as f64;
        if self.tokens >= 0.0 { Duration::ZERO } else { Duration::from_secs_f64(-self.tokens / self.rate) }
    }
}

/// Longest duration any setting takes (100 years): longer values are refused, not wrapped.
pub const MAX_DURATION_SECS: u64 = 100 * 365 * 86_400;

/// Parses durations like `90s`, `5m`, `2h`, `7d`, `500ms` (a bare number is seconds). Values
/// over [`MAX_DURATION_SECS`] are refused.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let t = text.trim();
    let split = t.find(|c: char| !c.is_ascii_digit() && c != '.').unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let shown = excerpt(text, 40);
    let value: f64 = num.parse().map_err(|_| format!("invalid duration {shown} (expected like 30s, 5m, 2h, 7d)"))?;
    let secs = match unit.trim() {
        "" | "s" => value,
        "ms" => value / 1000.0,
        "m" | "min" => value * 60.0,
        "h" => value * 3600.0,
        "d" => value * 86_400.0,
        "w" => value * 7.0 * 86_400.0,
        _ => {
            return Err(format!(
                "invalid duration {shown}: unknown unit {} (use ms, s, m, h, d, w)",
                excerpt(unit, 10)
            ));
        }
    };
    if !secs.is_finite() || secs < 0.0 {
        return Err(format!("invalid duration {shown}"));
    }
    if secs > MAX_DURATION_SECS as f64 {
        return Err(format!("duration {shown} is too long (at most 100 years)"));
    }
    Duration::try_from_secs_f64(secs).map_err(|_| format!("invalid duration {shown}"))
}

/// Parses sizes like `1048576`, `10MB`, `5MiB`, `2G` into bytes (K/M/G are powers of 1000,
/// KiB/MiB/GiB powers of 1024).
pub fn parse_bytes(text: &str) -> Result<u64, String> {
    let t = text.trim();
    let split = t.find(|c: char| !c.is_ascii_digit() && c != '.').unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let value: f64 =
        num.parse().map_err(|_| format!("invalid size {} (expected like 10MB or 5MiB)", excerpt(text, 40)))?;
    let factor = match unit.trim().to_lowercase().trim_end_matches("/s") {
        "" | "b" => 1.0,
        "k" | "kb" => 1e3,
        "m" | "mb" => 1e6,
        "g" | "gb" => 1e9,
        "kib" => 1024.0,
        "mib" => 1024.0 * 1024.0,
        "gib" => 1024.0 * 1024.0 * 1024.0,
        _ => return Err(format!("invalid size {}: unknown unit {}", excerpt(text, 40), excerpt(unit, 10))),
    };
    let bytes = (value * factor).round();
    if !bytes.is_finite() || bytes >= u64::MAX as f64 {
        return Err(format!("size {} is too large", excerpt(text, 40)));
    }
    Ok(bytes as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    // 2024-01-01 was a Monday.
    const MONDAY: i64 = 1_704_067_200;
    const H: i64 = 3600;

    #[test]
    fn windows_table() {
        let w = SyncWindow::parse("Mon-Fri 20:00-06:00").unwrap();
        let cases = [
            (MONDAY + 19 * H, false),
            (MONDAY + 20 * H, true),
            (MONDAY + 24 * H + 5 * H, true), // Tuesday 05:00, from Monday evening
            (MONDAY + 24 * H + 6 * H, false),
            (MONDAY + 5 * 24 * H + 21 * H, false), // Saturday evening
            (MONDAY + 5 * 24 * H + 3 * H, true),   // Saturday 03:00, from Friday evening
            (MONDAY + 6 * 24 * H + 3 * H, false),  // Sunday 03:00
            (MONDAY + 3 * H, false),               // Monday 03:00: Sunday has no window
        ];
        for (t, open) in cases {
            assert_eq!(w.is_open(t, 0), open, "at +{}h", (t - MONDAY) / H);
        }
        let daily = SyncWindow::parse("22:00-24:00").unwrap();
        assert!(daily.is_open(MONDAY + 23 * H, 0) && !daily.is_open(MONDAY + 21 * H, 0));
        assert!(daily.is_open(MONDAY + 21 * H, 60), "local time is UTC+1");
        let weekend = SyncWindow::parse("Sat,sun 08:00-18:00").unwrap();
        assert!(weekend.is_open(MONDAY + 6 * 24 * H + 9 * H, 0) && !weekend.is_open(MONDAY + 9 * H, 0));
        assert!(sync_allowed(&[], MONDAY, 0));
        for bad in ["", "Mon", "Funday 10:00-11:00", "Mon 25:00-26:00", "Mon 10:00-10:00", "Mon 10-11"] {
            assert!(SyncWindow::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn windows_say_when_they_change_in_any_time_zone() {
        let w = [SyncWindow::parse("Mon-Fri 20:00-06:00").unwrap()];
        let utc = |_: i64| 0;
        // Monday 12:00 UTC: closed; opens at 20:00.
        assert_eq!(next_change(&w, MONDAY + 12 * H, &utc), Some(MONDAY + 20 * H));
        // Monday 21:30: open; closes Tuesday 06:00.
        assert_eq!(next_change(&w, MONDAY + 21 * H + 1800, &utc), Some(MONDAY + 30 * H));
        // Friday 12:00 in UTC+2: local 14:00, opens at 20:00 local = 18:00 UTC.
        let plus2 = |_: i64| 120;
        assert_eq!(next_change(&w, MONDAY + 4 * 24 * H + 12 * H, &plus2), Some(MONDAY + 4 * 24 * H + 18 * H));
        // Saturday 12:00: the next window starts Monday evening.
        assert_eq!(next_change(&w, MONDAY + 5 * 24 * H + 12 * H, &utc), Some(MONDAY + 7 * 24 * H + 20 * H));
        // An offset that changes (daylight saving time starts at Tuesday 00:00 UTC).
        let dst = |t: i64| if t >= MONDAY + 24 * H { 120 } else { 60 };
        assert!(allowed_at(&w, MONDAY + 19 * H + 1800, &dst), "20:30 local on Monday");
        assert!(!allowed_at(&w, MONDAY + 24 * H + 4 * H + 1800, &dst), "06:30 local on Tuesday");
        assert_eq!(next_change(&w, MONDAY + 24 * H + 3 * H, &dst), Some(MONDAY + 24 * H + 4 * H));
        let always = [SyncWindow::parse("daily 00:00-24:00").unwrap()];
        assert_eq!(next_change(&always, MONDAY, &utc), None);
        assert_eq!(next_change(&[], MONDAY, &utc), None);
    }

    #[test]
    fn token_bucket_paces() {
        let mut b = TokenBucket::new(1_000_000, Duration::ZERO);
        // The burst goes at once, then 1 MB/s.
        assert_eq!(b.take(262_144, Duration::ZERO), Duration::ZERO);
        let wait = b.take(500_000, Duration::ZERO);
        assert!((wait.as_secs_f64() - 0.5).abs() < 0.01, "{wait:?}");
        assert_eq!(b.take(0, Duration::from_millis(500)), Duration::ZERO);
        // Sending 10 MB takes about 10 s in all.
        let mut b = TokenBucket::new(1_000_000, Duration::ZERO);
        let mut now = Duration::ZERO;
        for _ in 0..100 {
            now += b.take(100_000, now);
        }
        assert!((now.as_secs_f64() - 9.75).abs() < 0.1, "{now:?}");
    }

    #[test]
    fn durations_and_sizes() {
        assert_eq!(parse_duration("90s").unwrap(), Duration::from_secs(90));
        assert_eq!(parse_duration("2h").unwrap(), Duration::from_secs(7200));
        assert_eq!(parse_duration("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(parse_duration("7d").unwrap(), Duration::from_secs(7 * 86_400));
        assert!(parse_duration("soon").is_err() && parse_duration("5y").is_err());
        assert_eq!(parse_bytes("10MB").unwrap(), 10_000_000);
        assert_eq!(parse_bytes("5MiB/s").unwrap(), 5 * 1024 * 1024);
        assert!(parse_bytes("lots").is_err());
        // Values too large to represent are refused, never wrapped or panicking.
        assert!(parse_duration("99999999999999999999999d").unwrap_err().contains("too long"));
        assert!(parse_duration("101w").is_ok() && parse_duration("5300w").is_err());
        assert!(parse_bytes("99999999999999999999999TB").is_err());
        assert!(parse_bytes("99999999999999999999999").unwrap_err().contains("too large"));
        let long = "9".repeat(10_000);
        assert!(parse_duration(&format!("{long}x")).unwrap_err().len() < 200, "errors quote an excerpt");
    }
}
