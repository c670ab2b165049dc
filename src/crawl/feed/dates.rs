//! Dates as feeds write them.

use chrono::{DateTime, Utc};

/// Dates as real feeds write them: RFC 2822 with odd zones or day names, RFC 3339, bare dates.
pub(super) fn lenient_timestamp(text: &str) -> Option<DateTime<Utc>> {
    let t = text.trim();
    if let Ok(d) = DateTime::parse_from_rfc2822(t) {
        return Some(d.with_timezone(&Utc));
    }
    if let Ok(d) = DateTime::parse_from_rfc3339(t) {
        return Some(d.with_timezone(&Utc));
    }
    parse_loose_date(t)
}

/// Last-resort date parsing shared with page extraction.
pub fn parse_loose_date(t: &str) -> Option<DateTime<Utc>> {
    let t = t.trim();
    if let Ok(d) = DateTime::parse_from_rfc3339(t) {
        return Some(d.with_timezone(&Utc));
    }
    if let Ok(d) = DateTime::parse_from_rfc2822(t) {
        return Some(d.with_timezone(&Utc));
    }
    // Drop a leading day name ("Tue, ") that is often wrong, and named zones chrono rejects.
    let mut s = t.to_string();
    if let Some((head, rest)) = s.split_once(", ") {
        if head.len() <= 9 && head.chars().all(|c| c.is_ascii_alphabetic()) {
            s = rest.to_string();
        }
    }
    for (zone, offset) in [("EST", "-0500"), ("EDT", "-0400"), ("CST", "-0600"), ("CDT", "-0500"), ("PST", "-0800"), ("PDT", "-0700"), ("UTC", "+0000"), ("GMT", "+0000"), ("KST", "+0900"), ("CET", "+0100"), ("CEST", "+0200"), ("BST", "+0100")] {
        if s.ends_with(zone) {
            s = format!("{}{}", &s[..s.len() - zone.len()], offset);
        }
    }
    let formats = [
        "%d %b %Y %H:%M:%S %z",
        "%d %b %Y %H:%M %z",
        "%d %B %Y %H:%M:%S %z",
        "%Y-%m-%dT%H:%M:%S%z",
        "%Y-%m-%dT%H:%M:%S%.f%z",
        "%Y-%m-%d %H:%M:%S %z",
        "%Y-%m-%d %H:%M:%S%z",
    ];
    for f in formats {
        if let Ok(d) = DateTime::parse_from_str(&s, f) {
            return Some(d.with_timezone(&Utc));
        }
    }
    for f in ["%Y-%m-%dT%H:%M:%S", "%Y-%m-%d %H:%M:%S", "%Y-%m-%dT%H:%M:%S%.f", "%Y-%m-%d %H:%M", "%d %b %Y %H:%M:%S"] {
        if let Ok(d) = chrono::NaiveDateTime::parse_from_str(&s, f) {
            return Some(d.and_utc());
        }
    }
    if let Ok(d) = chrono::NaiveDate::parse_from_str(s.get(..10).unwrap_or(&s), "%Y-%m-%d") {
        return d.and_hms_opt(0, 0, 0).map(|d| d.and_utc());
    }
    None
}
