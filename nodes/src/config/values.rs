//! Values as configuration files and flags write them: durations, sizes, rates, sync windows,
//! time zones; each refused with the field named.

use anyhow::{Context, Result, bail};
use outpost_protocol::schedule::{SyncWindow, parse_bytes, parse_duration};
use std::time::Duration;

/// A duration as written in configuration files (`2h`, `90s`).
pub fn human_duration(d: Duration) -> String {
    let s = d.as_secs();
    match s {
        s if s > 0 && s % 86_400 == 0 => format!("{}d", s / 86_400),
        s if s > 0 && s % 3600 == 0 => format!("{}h", s / 3600),
        s if s > 0 && s % 60 == 0 => format!("{}m", s / 60),
        s => format!("{s}s"),
    }
}

/// Parses a duration field (`30s`, `5m`, `2h`, `7d`), naming the field when it is wrong.
pub fn duration(field: &str, value: &str) -> Result<Duration> {
    parse_duration(value).map_err(|e| anyhow::anyhow!("{field}: {e}"))
}

/// A duration field that must be at least `min` (a zero poll interval would keep a core busy,
/// a zero re-sign period would sign snapshots without end).
pub fn duration_at_least(field: &str, value: &str, min: Duration) -> Result<Duration> {
    let d = duration(field, value)?;
    if d < min {
        bail!("{field}: {value:?} is too short; it must be at least {}", human_duration(min));
    }
    Ok(d)
}

/// A count field that must lie within `range`: outside it, a value is a typo or a setting
/// the daemon would hold to at a cost nobody meant. `unit` says what is counted.
pub fn count(field: &str, value: usize, range: std::ops::RangeInclusive<usize>, unit: &str) -> Result<usize> {
    if !range.contains(&value) {
        bail!("{field}: {value} is out of range; it must be {} to {} ({unit})", range.start(), range.end());
    }
    Ok(value)
}

/// A byte-size field.
pub fn bytes(field: &str, value: &str) -> Result<u64> {
    parse_bytes(value).map_err(|e| anyhow::anyhow!("{field}: {e}"))
}

/// A repository's memory for the ranges served last (`range_memory`): at most 16 GiB.
pub fn range_memory(field: &str, value: &str) -> Result<usize> {
    let n = bytes(field, value)?;
    if n > 16 << 30 {
        bail!(
            "{field}: {value:?} is too large; at most 16GiB (the default, 64MiB, serves a hundred clients of one file)"
        );
    }
    Ok(usize::try_from(n)?)
}

/// A minimum transfer rate field (bytes per second, at least 1 KiB/s).
pub fn min_rate(field: &str, value: &str) -> Result<outpost_actors::transport::Pace> {
    let rate = bytes(field, value)?;
    if rate < 1024 {
        bail!("{field}: {value:?} is too low; it must be at least 1KiB (per second)");
    }
    Ok(outpost_actors::transport::Pace { min_rate: rate })
}

/// Sync windows.
pub fn windows(values: &[String]) -> Result<Vec<SyncWindow>> {
    values.iter().map(|w| SyncWindow::parse(w).map_err(|e| anyhow::anyhow!("sync_windows: {e}"))).collect()
}

/// The time zone of an edge's sync windows: `time_zone`, else the deprecated `utc_offset`,
/// else this machine's zone.
pub fn zone(time_zone: &str, utc_offset_value: &str) -> Result<outpost_actors::zone::Zone> {
    if !time_zone.trim().is_empty() || utc_offset_value.trim().is_empty() {
        return outpost_actors::zone::Zone::parse(time_zone).context("time_zone");
    }
    tracing::warn!("utc_offset is deprecated: write time_zone = \"Europe/Paris\" (or \"{utc_offset_value}\")");
    outpost_actors::zone::Zone::fixed_minutes(utc_offset(utc_offset_value)?).context("utc_offset")
}

/// `+HH:MM` / `-HH:MM` into minutes east of UTC.
pub fn utc_offset(value: &str) -> Result<i32> {
    let v = value.trim();
    let (sign, rest) = match v.as_bytes().first() {
        Some(b'+') => (1, &v[1..]),
        Some(b'-') => (-1, &v[1..]),
        _ => bail!("utc_offset: {value:?} should look like +01:00"),
    };
    let (h, m) = rest.split_once(':').with_context(|| format!("utc_offset: {value:?} should look like +01:00"))?;
    let (h, m): (i32, i32) = (h.parse()?, m.parse()?);
    if h > 14 || m > 59 {
        bail!("utc_offset: {value:?} is out of range");
    }
    Ok(sign * (h * 60 + m))
}

/// A setting that takes one address or a list: the list is kept as `a, b` (the form the
/// `--server` flag takes too).
pub fn one_or_list<'de, D: serde::Deserializer<'de>>(d: D) -> std::result::Result<String, D::Error> {
    #[derive(serde::Deserialize)]
    #[serde(untagged)]
    enum OneOrList {
        One(String),
        List(Vec<String>),
    }
    Ok(match <OneOrList as serde::Deserialize>::deserialize(d)? {
        OneOrList::One(s) => s,
        OneOrList::List(l) => l.join(", "),
    })
}
