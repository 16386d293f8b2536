//! Phone numbers: every form a person types or a call monitor reports, normalised to E.164.

use phonenumber::country;
use std::fmt;

/// A phone number in E.164 form (`+` and digits), known to be valid.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct E164(String);

impl E164 {
    /// A number normalized before (by another node of the cluster, or a registered user's):
    /// only its form is checked (`+` and 2 to 15 digits), not the numbering plan again, which
    /// costs tens of µs.
    pub fn from_normalized(number: &str) -> Option<E164> {
        let digits = number.strip_prefix('+')?;
        let form = (2..=15).contains(&digits.len()) && digits.bytes().all(|b| b.is_ascii_digit());
        form.then(|| E164(number.to_string()))
    }

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

/// A number as a phone system reports it (dialed, or calling), once read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Dialed {
    /// A number outside.
    Number(E164),
    /// Not a call to or from a number outside — an internal number of the phone system or a
    /// service code: never a data-session request. Says what it was, for the user.
    Internal(String),
}

/// Reads what a phone or call monitor reports: internal numbers (`**610`, an extension such
/// as `21`) and service codes (`*21#`, `#31#` alone, `*#06#`) are [`Dialed::Internal`]; a
/// caller-ID prefix (`#31#`, `*31#`) and a suffix after the number (`#`, and anything after
/// it) are dropped; a carrier-selection ("call by call") prefix in front of a national number
/// is removed (Germany `010xy`/`0100yy`, Austria `10xx`, Switzerland `10xx`/`107xx`); the rest
/// is read as by [`normalize_dialed`].
pub fn read_dialed(input: &str, region: &str, area_code: Option<&str>) -> Result<Dialed, NumberError> {
    let compact: String = input
        .trim()
        .trim_start_matches("tel:")
        .chars()
        .filter(|c| !c.is_whitespace() && !"-/().".contains(*c))
        .collect();
    if compact.len() > 64 {
        return Err(NumberError::TooLong(compact.chars().take(24).collect::<String>() + "…"));
    }
    // Show (*31#) or hide (#31#) the caller ID for this call, then the number.
    let s = ["#31#", "*31#"]
        .iter()
        .find_map(|p| compact.strip_prefix(p).filter(|rest| !rest.is_empty()))
        .unwrap_or(&compact);
    if s.starts_with("**") {
        return Ok(Dialed::Internal(format!("internal number {s}")));
    }
    if s.starts_with('*') || s.starts_with('#') {
        return Ok(Dialed::Internal(format!("service code {s}")));
    }
    // A suffix: `#` dials at once; anything from the first `#` or `*` on is not the number.
    let s = match s.find(['#', '*']) {
        Some(i) => &s[..i],
        None => s,
    };
    if s.is_empty() {
        return Err(NumberError::Empty);
    }
    if s.chars().all(|c| c.is_ascii_digit()) && s.len() <= 4 && !s.starts_with('0') {
        return Ok(Dialed::Internal(format!("internal number {s}")));
    }
    let s = without_carrier_selection(s, region);
    normalize_dialed(s, region, area_code).map(Dialed::Number)
}

/// `s` without a carrier-selection prefix of `region`, when one stands before a national
/// (or international) number.
fn without_carrier_selection<'a>(s: &'a str, region: &str) -> &'a str {
    let rest = match region.trim().to_ascii_uppercase().as_str() {
        // 0100yy (six digits) or 010xy (five), then the number with its leading 0.
        "DE" => match s.strip_prefix("0100") {
            Some(r) => r.get(2..),
            None => s.strip_prefix("010").and_then(|r| r.get(2..)),
        },
        "AT" => s.strip_prefix("10").and_then(|r| r.get(2..)),
        // 107xx (five digits) or 10xx (four).
        "CH" => s.strip_prefix("10").and_then(|r| if r.starts_with('7') { r.get(3..) } else { r.get(2..) }),
        _ => None,
    };
    match rest {
        Some(r) if r.starts_with('0') && r.len() > 4 => r,
        _ => s,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_number_normalized_before_is_taken_only_in_e164_form() {
        assert_eq!(E164::from_normalized("+4930123456").map(|n| n.0), Some("+4930123456".to_string()));
        for bad in
            ["4930123456", "+", "+1", "+49 30 123456", "+49301234567890123", "+49abc", "tel:+4930123456"]
        {
            assert!(E164::from_normalized(bad).is_none(), "{bad}");
        }
    }

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

    fn read(s: &str, region: &str) -> Result<Dialed, NumberError> {
        read_dialed(s, region, Some(if region == "DE" { "030" } else { "01" }))
    }

    fn number(s: &str) -> Dialed {
        Dialed::Number(E164(s.into()))
    }

    #[test]
    fn internal_numbers_and_service_codes_are_never_numbers_outside() {
        for internal in
            ["**610", "**1", "** 9", "21", "620", "1", "*21#", "#21#", "*#06#", "*21*030123456#", "#31#"]
        {
            assert!(
                matches!(read(internal, "DE"), Ok(Dialed::Internal(_))),
                "{internal}: {:?}",
                read(internal, "DE")
            );
        }
        assert_eq!(read("**610", "DE"), Ok(Dialed::Internal("internal number **610".into())));
        assert_eq!(read("*21#", "DE"), Ok(Dialed::Internal("service code *21#".into())));
    }

    #[test]
    fn suffixes_are_dropped_in_every_form() {
        let want = number("+4930123456");
        for form in ["004930123456#", "+4930123456#", "030123456#", "123456#", "030123456#1", "030 123456 *5"]
        {
            assert_eq!(read(form, "DE"), Ok(want.clone()), "{form}");
        }
        // Hiding the caller ID for one call, then the number.
        assert_eq!(read("#31#030123456", "DE"), Ok(want.clone()));
        assert_eq!(read("*31#004930123456#", "DE"), Ok(want));
    }

    #[test]
    fn carrier_selection_prefixes_are_removed() {
        let berlin = number("+4930123456");
        assert_eq!(read("01013030123456", "DE"), Ok(berlin.clone()), "010xy");
        assert_eq!(read("010012030123456", "DE"), Ok(berlin.clone()), "0100yy");
        assert_eq!(read("01013004930123456", "DE"), Ok(berlin.clone()), "then international");
        assert_eq!(read("01013 0151 23456789#", "DE"), Ok(number("+4915123456789")));
        // A German mobile number is not mistaken for one (015…, 017…).
        assert_eq!(read("015123456789", "DE"), Ok(number("+4915123456789")));
        // Austria (10xx) and Switzerland (10xx, 107xx).
        assert_eq!(read("1012 01 5123456", "AT"), Ok(number("+4315123456")));
        assert_eq!(read("1055 044 668 18 00", "CH"), Ok(number("+41446681800")));
        assert_eq!(read("10767 044 668 18 00", "CH"), Ok(number("+41446681800")));
        // Elsewhere nothing is taken for a prefix.
        assert_ne!(read("1012 01 5123456", "DE"), Ok(number("+4315123456")));
    }

    #[test]
    fn region_of_a_number() {
        let n = normalize("+1 212 555 0123", None).expect("valid US number");
        assert_eq!(n.region().as_deref(), Some("US"));
        assert_eq!(n.international(), "+1 212-555-0123");
    }
}
