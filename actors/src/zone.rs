//! Time zones for schedules written in local time (sync windows): an IANA name
//! (`Europe/Paris`, read from the system's time-zone database), `UTC`, a fixed offset
//! (`+01:00`), or the machine's own zone. The schedule logic itself is pure
//! ([`outpost_protocol::schedule`]) and only asks for the offset at an instant.

use jiff::Timestamp;
use jiff::tz::{Offset, TimeZone};

/// Why a time zone is refused.
#[derive(Debug, thiserror::Error)]
pub enum ZoneError {
    /// An offset out of range.
    #[error("time zone {text:?}: the offset is out of range")]
    Offset { text: String, source: jiff::Error },
    /// A name the time-zone database does not know.
    #[error("unknown time zone {name}: use an IANA name like \"Europe/Paris\", \"UTC\" or an offset like \"+01:00\"")]
    Unknown { name: String, source: jiff::Error },
}

/// A time zone and the name it was given by.
#[derive(Clone, Debug)]
pub struct Zone {
    tz: TimeZone,
    name: String,
}

impl Zone {
    /// Parses a zone: an IANA name, `UTC`, `+HH:MM`/`-HH:MM`, or "" for this machine's zone.
    pub fn parse(text: &str) -> Result<Self, ZoneError> {
        let t = text.trim();
        if t.is_empty() {
            let tz = TimeZone::try_system().unwrap_or(TimeZone::UTC);
            let name = tz.iana_name().unwrap_or("the system's local time").to_string();
            return Ok(Self { tz, name });
        }
        if let Some(minutes) = fixed_offset(t) {
            let offset = Offset::from_seconds(minutes * 60)
                .map_err(|source| ZoneError::Offset { text: t.to_string(), source })?;
            return Ok(Self { tz: TimeZone::fixed(offset), name: format!("UTC{t}") });
        }
        let tz = TimeZone::get(t)
            .map_err(|source| ZoneError::Unknown { name: outpost_protocol::text::excerpt(t, 60), source })?;
        Ok(Self { tz, name: t.to_string() })
    }

    /// A fixed offset in minutes east of UTC.
    pub fn fixed_minutes(minutes: i32) -> Result<Self, ZoneError> {
        let offset = Offset::from_seconds(minutes * 60)
            .map_err(|source| ZoneError::Offset { text: format!("{minutes} minutes"), source })?;
        let sign = if minutes < 0 { '-' } else { '+' };
        let name = format!("UTC{sign}{:02}:{:02}", minutes.abs() / 60, minutes.abs() % 60);
        Ok(Self { tz: TimeZone::fixed(offset), name })
    }

    /// The name it was given (or the system's zone's).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The offset from UTC in minutes at `unix` seconds.
    pub fn offset_minutes(&self, unix: i64) -> i32 {
        Timestamp::from_second(unix).map(|t| self.tz.to_offset(t).seconds() / 60).unwrap_or(0)
    }

    /// `unix` as local time in this zone, like `2026-11-30 20:00 +01:00`.
    pub fn local(&self, unix: i64) -> String {
        match Timestamp::from_second(unix) {
            Ok(t) => t.to_zoned_datetime(self.tz.clone()).strftime("%Y-%m-%d %H:%M %:z").to_string(),
            Err(_) => unix.to_string(),
        }
    }
}

/// `+HH:MM` or `-HH:MM` in minutes.
fn fixed_offset(text: &str) -> Option<i32> {
    let (sign, rest) = match text.as_bytes().first()? {
        b'+' => (1, &text[1..]),
        b'-' => (-1, &text[1..]),
        _ => return None,
    };
    let (h, m) = rest.split_once(':')?;
    let (h, m): (i32, i32) = (h.parse().ok()?, m.parse().ok()?);
    (h <= 14 && m < 60).then_some(sign * (h * 60 + m))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zones_by_name_offset_and_system() {
        // 2026-07-01 12:00 UTC: Paris is at +02:00 in summer, +01:00 in winter.
        let summer = 1_782_907_200;
        let winter = summer - 180 * 86_400;
        if let Ok(paris) = Zone::parse("Europe/Paris") {
            assert_eq!(paris.offset_minutes(summer), 120);
            assert_eq!(paris.offset_minutes(winter), 60);
            assert!(paris.local(summer).ends_with("14:00 +02:00"), "{}", paris.local(summer));
        }
        assert_eq!(Zone::parse("UTC").unwrap().offset_minutes(summer), 0);
        assert_eq!(Zone::parse("+05:30").unwrap().offset_minutes(summer), 330);
        assert_eq!(Zone::parse("-03:00").unwrap().offset_minutes(winter), -180);
        assert!(Zone::parse("").is_ok(), "the system's zone, or UTC without one");
        let e = Zone::parse("Mars/Olympus_Mons").unwrap_err();
        assert!(matches!(&e, ZoneError::Unknown { name, .. } if name == "\"Mars/Olympus_Mons\""), "{e:?}");
        assert!(e.to_string().contains("Europe/Paris"), "{e}");
        assert!(std::error::Error::source(&e).is_some(), "the cause is chained, not repeated");
        assert!(Zone::parse("+25:00").is_err());
    }
}
