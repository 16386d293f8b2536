//! Phone numbers: every form a person types or a call monitor reports, normalised to E.164.

use phonenumber::country;
use std::fmt;

/// A phone number in E.164 form (`+` and digits), known to be valid.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct E164(String);

impl E164 {
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The region (ISO 3166 alpha-2) the number belongs to, if the metadata knows one.
    pub fn region(&self) -> Option<String> {
        let parsed = phonenumber::parse(None, &self.0).ok()?;
        parsed.country().id().map(|id| format!("{id:?}"))
    }

    /// Human form, e.g. `+49 30 1234567`.
    pub fn international(&self) -> String {
        match phonenumber::parse(None, &self.0) {
            Ok(n) => n.format().mode(phonenumber::Mode::International).to_string(),
            Err(_) => self.0.clone(),
        }
    }
}

impl fmt::Display for E164 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Why a number was refused. The message is meant for the person who typed it.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum NumberError {
    #[error("no phone number given")]
    Empty,
    #[error("\"{0}\" is not a phone number: use digits, spaces, dashes and an optional leading + or 00")]
    NotANumber(String),
    #[error("\"{0}\" is too long for a phone number")]
    TooLong(String),
    #[error("unknown region \"{0}\": use a two-letter country code such as DE, US or GB")]
    UnknownRegion(String),
    #[error("\"{0}\" has no country code: write it as +CC… or set the region it should be read in")]
    NoRegion(String),
    #[error("\"{number}\" is not a valid phone number ({why})")]
    Invalid { number: String, why: String },
}

/// Parses a region code such as `DE` (case-insensitive).
pub fn parse_region(region: &str) -> Result<country::Id, NumberError> {
    let upper = region.trim().to_ascii_uppercase();
    upper.parse::<country::Id>().map_err(|_| NumberError::UnknownRegion(region.trim().to_string()))
}

/// Normalises `input` to E.164. National numbers are read in `region`; `+CC…`, `00CC…`
/// and `tel:` forms need none. Spaces, dashes, dots, slashes and brackets are ignored.
pub fn normalize(input: &str, region: Option<&str>) -> Result<E164, NumberError> {
    let trimmed = input.trim();
    if trimmed.is_empty() {
        return Err(NumberError::Empty);
    }
    if trimmed.len() > 64 {
        return Err(NumberError::TooLong(trimmed.chars().take(24).collect::<String>() + "…"));
    }
    let shown = trimmed.to_string();
    let without_scheme =
        trimmed.strip_prefix("tel:").or_else(|| trimmed.strip_prefix("TEL:")).unwrap_or(trimmed);
    // Keep digits and a leading plus; refuse letters and other symbols outright, so that a
    // typo is not silently read as some other number.
    let mut compact = String::with_capacity(without_scheme.len());
    for (i, c) in without_scheme.chars().enumerate() {
        match c {
            '0'..='9' => compact.push(c),
            '+' if i == 0 => compact.push('+'),
            ' ' | '-' | '.' | '/' | '(' | ')' | '\u{a0}' => {}
            _ => return Err(NumberError::NotANumber(shown)),
        }
    }
    if compact.is_empty() || compact == "+" {
        return Err(NumberError::NotANumber(shown));
    }
    if let Some(rest) = compact.strip_prefix("00") {
        compact = format!("+{rest}");
    }
    let region_id = match region {
        Some(r) if !r.trim().is_empty() => Some(parse_region(r)?),
        _ => None,
    };
    if !compact.starts_with('+') && region_id.is_none() {
        return Err(NumberError::NoRegion(shown));
    }
    let parsed = phonenumber::parse(region_id, &compact)
        .map_err(|e| NumberError::Invalid { number: shown.clone(), why: e.to_string() })?;
    if !phonenumber::is_valid(&parsed) {
        return Err(NumberError::Invalid {
            number: shown,
            why: "no such number range in its country".into(),
        });
    }
    Ok(E164(parsed.format().mode(phonenumber::Mode::E164).to_string()))
}

/// Normalises a number as a phone or call monitor reports it: international (`+…`, `00…`),
/// national (with the region's trunk prefix, e.g. `030…` in Germany) or **local** (without
/// area code, e.g. `123456`), the last read in `area_code` (e.g. `30` or `030`).
pub fn normalize_dialed(input: &str, region: &str, area_code: Option<&str>) -> Result<E164, NumberError> {
    let digits: String = input.chars().filter(|c| c.is_ascii_digit() || *c == '+').collect();
    let id = parse_region(region)?;
    let prefix = phonenumber::metadata::DATABASE
        .by_id(format!("{id:?}").as_str())
        .and_then(|m| m.national_prefix().map(str::to_string))
        .unwrap_or_default();
    let international = digits.starts_with('+') || digits.starts_with("00");
    let national = !prefix.is_empty() && digits.starts_with(&prefix);
    match area_code.map(|a| a.trim().trim_start_matches(prefix.as_str())) {
        Some(area) if !international && !national && !area.is_empty() && !digits.is_empty() => {
            normalize(&format!("{prefix}{area}{digits}"), Some(region))
        }
        _ => normalize(input, Some(region)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn common_forms_reach_the_same_number() {
        let want = "+4930123456";
        for form in [
            "+49 30 123456",
            "+49-30-123456",
            "0049 30 123456",
            "030 123456",
            "(030) 12 34 56",
            "030/123456",
            "tel:+49-30-123456",
        ] {
            assert_eq!(normalize(form, Some("DE")).map(|n| n.0), Ok(want.to_string()), "{form}");
        }
    }

    #[test]
    fn bad_numbers_are_refused_with_reasons() {
        assert_eq!(normalize("", Some("DE")), Err(NumberError::Empty));
        assert!(matches!(normalize("030 12x456", Some("DE")), Err(NumberError::NotANumber(_))));
        assert!(matches!(normalize("030 123456", None), Err(NumberError::NoRegion(_))));
        assert!(matches!(normalize("+49 1", None), Err(NumberError::Invalid { .. })));
        assert!(matches!(normalize("123", Some("ZZ")), Err(NumberError::UnknownRegion(_))));
        assert!(matches!(normalize(&"1".repeat(100), Some("DE")), Err(NumberError::TooLong(_))));
    }

    #[test]
    fn dialed_numbers_with_area_code() {
        let n = |s: &str| normalize_dialed(s, "DE", Some("030")).map(|e| e.0);
        assert_eq!(n("123456"), Ok("+4930123456".into()), "local");
        assert_eq!(n("030123456"), Ok("+4930123456".into()), "national");
        assert_eq!(n("004930123456"), Ok("+4930123456".into()), "international");
        assert_eq!(n("015123456789"), Ok("+4915123456789".into()), "mobile");
        assert_eq!(normalize_dialed("123456", "DE", Some("30")).map(|e| e.0), Ok("+4930123456".into()));
    }

    #[test]
    fn region_of_a_number() {
        let n = normalize("+1 212 555 0123", None).expect("valid US number");
        assert_eq!(n.region().as_deref(), Some("US"));
        assert_eq!(n.international(), "+1 212-555-0123");
    }
}
