//! Dates as CloudStack writes them (`yyyy-MM-dd'T'HH:mm:ssZ`, e.g.
//! `2026-04-14T09:25:51+0000`) and the `expires` forms it accepts.

use chrono::{DateTime, NaiveDateTime, Utc};

/// A date in CloudStack's response format.
pub fn format(t: DateTime<Utc>) -> String {
    t.format("%Y-%m-%dT%H:%M:%S%z").to_string()
}

/// Parses a signature-v3 `expires` as `DateUtil.parseTZDateString` does:
/// `2024-01-01T12:00:00+0000`, `...Z`, `...+00:00`, with or without
/// fractional seconds, and the legacy `2024-01-01T12:00:00Z+0000`.
/// A space stands for a `+` that a client sent unencoded in a query string.
pub fn parse_expires(s: &str) -> Option<DateTime<Utc>> {
    let s = s.trim().replace(' ', "+");
    let s = s.as_str();
    // The legacy form: a literal Z followed by an offset.
    if let Some((time, offset)) = s.split_once("Z")
        && !offset.is_empty()
    {
        return parse_expires(&format!("{time}{offset}"));
    }
    if let Ok(t) = DateTime::parse_from_rfc3339(s) {
        return Some(t.with_timezone(&Utc));
    }
    for f in ["%Y-%m-%dT%H:%M:%S%z", "%Y-%m-%dT%H:%M:%S%.f%z"] {
        if let Ok(t) = DateTime::parse_from_str(s, f) {
            return Some(t.with_timezone(&Utc));
        }
    }
    let naive = s.strip_suffix('Z')?;
    NaiveDateTime::parse_from_str(naive, "%Y-%m-%dT%H:%M:%S%.f")
        .ok()
        .map(|t| t.and_utc())
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn formats_with_a_numeric_offset() {
        let t = Utc.with_ymd_and_hms(2026, 4, 14, 9, 25, 51).unwrap();
        assert_eq!(format(t), "2026-04-14T09:25:51+0000");
    }

    #[test]
    fn parses_every_expires_form_clients_send() {
        let t = Utc.with_ymd_and_hms(2024, 1, 1, 12, 0, 0).unwrap();
        for s in [
            "2024-01-01T12:00:00+0000",        // cs, legacy cloudmonkey
            "2024-01-01T12:00:00Z",            // cloudstack-go (RFC 3339)
            "2024-01-01T12:00:00+00:00",       // RFC 3339 with a colon
            "2024-01-01T13:00:00+0100",        // another offset
            "2024-01-01T12:00:00.000000+0000", // microseconds
            "2024-01-01T12:00:00.000Z",
            "2024-01-01T12:00:00Z+0000", // the legacy literal-Z form
            "2024-01-01T12:00:00 0000",  // a '+' sent unencoded, decoded as a space
        ] {
            assert_eq!(parse_expires(s), Some(t), "{s}");
        }
        for s in [
            "",
            "yesterday",
            "2024-01-01",
            "2024-13-01T12:00:00Z",
            "1704110400",
        ] {
            assert_eq!(parse_expires(s), None, "{s}");
        }
    }
}
