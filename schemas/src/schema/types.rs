//! Checking a lexical value against a [`SimpleKind`], exactly as XML Schema would, and turning it
//! into a typed [`Value`].

use super::model::SimpleKind;
use crate::xml::reader::is_xml_whitespace;
use base64::Engine;
use time::{Date, Month, OffsetDateTime, PrimitiveDateTime, Time};

/// A value that passed its type's checks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Value {
    /// `String`, `Token`, `Pattern` and `Enumeration` values (tokens collapsed).
    Text(String),
    /// `Unsigned` values.
    Unsigned(u64),
    /// `Decimal` values.
    Decimal(Decimal),
    /// `DateTime` values.
    DateTime(OffsetDateTime),
    /// `Boolean` values.
    Boolean(bool),
    /// Decoded `Base64` values.
    Bytes(Vec<u8>),
}

/// An exact decimal: `mantissa / 10^scale`, where `scale` is the number of fraction digits written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decimal {
    /// The digits as an integer, with the sign.
    pub mantissa: i128,
    /// How many of the digits are after the point.
    pub scale: u8,
}

impl Decimal {
    /// The value as an integer count of `10^-scale` units, if that is exact and fits.
    pub fn to_scaled(self, scale: u8) -> Option<i128> {
        if scale >= self.scale {
            let factor = 10i128.checked_pow(u32::from(scale - self.scale))?;
            self.mantissa.checked_mul(factor)
        } else {
            let factor = 10i128.checked_pow(u32::from(self.scale - scale))?;
            (self.mantissa % factor == 0).then(|| self.mantissa / factor)
        }
    }

    /// The value as a float, for coordinates and other measurements.
    #[allow(clippy::cast_precision_loss)]
    pub fn to_f64(self) -> f64 {
        self.mantissa as f64 / 10f64.powi(i32::from(self.scale))
    }

    /// Writes the decimal in plain notation with exactly `self.scale` fraction digits.
    pub fn to_plain(self) -> String {
        let sign = if self.mantissa < 0 { "-" } else { "" };
        let digits = self.mantissa.unsigned_abs().to_string();
        let scale = usize::from(self.scale);
        if scale == 0 {
            return format!("{sign}{digits}");
        }
        let padded = format!("{digits:0>width$}", width = scale + 1);
        let (integer, fraction) = padded.split_at(padded.len() - scale);
        format!("{sign}{integer}.{fraction}")
    }
}

/// XML Schema's `collapse` whitespace processing: tabs and line ends become spaces, runs of
/// spaces become one, and leading and trailing spaces go.
pub fn collapse(raw: &str) -> String {
    let mut out = String::with_capacity(raw.len());
    for word in raw.split(is_xml_whitespace).filter(|word| !word.is_empty()) {
        if !out.is_empty() {
            out.push(' ');
        }
        out.push_str(word);
    }
    out
}

/// Checks `raw` against `kind`. On failure, returns what was expected, for the error message.
pub fn check(kind: &SimpleKind, raw: &str) -> Result<Value, String> {
    match kind {
        SimpleKind::String {
            min_chars,
            max_chars,
        } => check_length(raw, *min_chars, *max_chars).map(|()| Value::Text(raw.to_owned())),
        SimpleKind::Token {
            min_chars,
            max_chars,
        } => {
            let value = collapse(raw);
            check_length(&value, *min_chars, *max_chars).map(|()| Value::Text(value))
        }
        SimpleKind::Pattern(pattern) => {
            let value = collapse(raw);
            let short_enough =
                value.chars().count() <= usize::try_from(pattern.max_chars).unwrap_or(usize::MAX);
            if short_enough && (pattern.matches)(&value) {
                Ok(Value::Text(value))
            } else {
                Err(pattern.description.to_owned())
            }
        }
        SimpleKind::Unsigned { max } => check_unsigned(&collapse(raw), *max),
        SimpleKind::Decimal {
            signed,
            integer_digits,
            fraction_digits,
        } => check_decimal(&collapse(raw), *signed, *integer_digits, *fraction_digits),
        SimpleKind::DateTime => parse_date_time(&collapse(raw))
            .map(Value::DateTime)
            .ok_or_else(|| "a UTC date and time such as 2026-11-24T12:00:00Z".to_owned()),
        SimpleKind::Boolean => match collapse(raw).as_str() {
            "true" | "1" => Ok(Value::Boolean(true)),
            "false" | "0" => Ok(Value::Boolean(false)),
            _ => Err("true or false".to_owned()),
        },
        SimpleKind::Enumeration(values) => {
            let value = collapse(raw);
            if values.contains(&value.as_str()) {
                Ok(Value::Text(value))
            } else {
                Err(format!("one of {}", values.join(", ")))
            }
        }
        SimpleKind::Base64 { max_chars } => check_base64(&collapse(raw), *max_chars),
    }
}

fn check_length(value: &str, min_chars: u32, max_chars: u32) -> Result<(), String> {
    let count = value.chars().count();
    let min = usize::try_from(min_chars).unwrap_or(usize::MAX);
    let max = usize::try_from(max_chars).unwrap_or(usize::MAX);
    if count < min {
        return Err(if min == 1 {
            "a non-empty value".to_owned()
        } else {
            format!("at least {min} characters")
        });
    }
    if count > max {
        return Err(format!("at most {max} characters (got {count})"));
    }
    Ok(())
}

fn check_unsigned(value: &str, max: u64) -> Result<Value, String> {
    let expected = || {
        if max == u64::MAX {
            "a non-negative integer".to_owned()
        } else {
            format!("a non-negative integer no greater than {max}")
        }
    };
    if value.is_empty() || !value.bytes().all(|b| b.is_ascii_digit()) {
        return Err(expected());
    }
    match value.parse::<u64>() {
        Ok(number) if number <= max => Ok(Value::Unsigned(number)),
        _ => Err(expected()),
    }
}

fn check_decimal(
    value: &str,
    signed: bool,
    integer_digits: u8,
    fraction_digits: u8,
) -> Result<Value, String> {
    let expected = || {
        let sign = if signed {
            "a decimal number"
        } else {
            "a non-negative decimal number"
        };
        if fraction_digits == 0 {
            format!("{sign} of at most {integer_digits} digits")
        } else {
            format!(
                "{sign} with at most {integer_digits} digits before the point and {fraction_digits} after"
            )
        }
    };
    let (negative, unsigned) = match value.strip_prefix('-') {
        Some(rest) if signed => (true, rest),
        _ => (false, value),
    };
    let (integer, fraction) = match unsigned.split_once('.') {
        Some((integer, fraction)) => (integer, Some(fraction)),
        None => (unsigned, None),
    };
    let digits_ok = |part: &str, max: u8| {
        !part.is_empty()
            && part.len() <= usize::from(max)
            && part.bytes().all(|b| b.is_ascii_digit())
    };
    if !digits_ok(integer, integer_digits) {
        return Err(expected());
    }
    let fraction = fraction.unwrap_or("");
    if (!fraction.is_empty() || unsigned.contains('.')) && !digits_ok(fraction, fraction_digits) {
        return Err(expected());
    }
    let mut mantissa: i128 = 0;
    for digit in integer.bytes().chain(fraction.bytes()) {
        mantissa = mantissa * 10 + i128::from(digit - b'0');
    }
    if negative {
        mantissa = -mantissa;
    }
    let scale = u8::try_from(fraction.len()).map_err(|_| expected())?;
    Ok(Value::Decimal(Decimal { mantissa, scale }))
}

/// Parses the one `xs:dateTime` form we accept: `YYYY-MM-DDThh:mm:ss[.fffffffff]Z`.
pub fn parse_date_time(value: &str) -> Option<OffsetDateTime> {
    let bytes = value.as_bytes();
    let number = |range: std::ops::Range<usize>| -> Option<u32> {
        let part = bytes.get(range)?;
        if !part.iter().all(u8::is_ascii_digit) {
            return None;
        }
        std::str::from_utf8(part).ok()?.parse().ok()
    };
    if bytes.len() < 20
        || bytes[4] != b'-'
        || bytes[7] != b'-'
        || bytes[10] != b'T'
        || bytes[13] != b':'
        || bytes[16] != b':'
        || bytes.last() != Some(&b'Z')
    {
        return None;
    }
    let year = number(0..4)?;
    let (month, day) = (number(5..7)?, number(8..10)?);
    let (hour, minute, second) = (number(11..13)?, number(14..16)?, number(17..19)?);
    if year < 1000 || hour > 23 || minute > 59 || second > 59 {
        return None;
    }
    let nanosecond = match &bytes[19..bytes.len() - 1] {
        [] => 0,
        [b'.', fraction @ ..] if (1..=9).contains(&fraction.len()) => {
            let digits = number(20..20 + fraction.len())?;
            digits * 10u32.pow(u32::try_from(9 - fraction.len()).ok()?)
        }
        _ => return None,
    };
    let month = Month::try_from(u8::try_from(month).ok()?).ok()?;
    let date =
        Date::from_calendar_date(i32::try_from(year).ok()?, month, u8::try_from(day).ok()?).ok()?;
    let time = Time::from_hms_nano(
        u8::try_from(hour).ok()?,
        u8::try_from(minute).ok()?,
        u8::try_from(second).ok()?,
        nanosecond,
    )
    .ok()?;
    Some(PrimitiveDateTime::new(date, time).assume_utc())
}

/// Writes a time in the form [`parse_date_time`] reads (whole seconds unless there is a fraction).
pub fn format_date_time(at: OffsetDateTime) -> String {
    let at = at.to_offset(time::UtcOffset::UTC);
    let base = format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}",
        at.year(),
        u8::from(at.month()),
        at.day(),
        at.hour(),
        at.minute(),
        at.second()
    );
    match at.nanosecond() {
        0 => format!("{base}Z"),
        nanos => {
            let fraction = format!("{nanos:09}");
            format!("{base}.{}Z", fraction.trim_end_matches('0'))
        }
    }
}

fn check_base64(value: &str, max_chars: u32) -> Result<Value, String> {
    let expected = || "base64 text (standard alphabet, padded)".to_owned();
    if value.chars().count() > usize::try_from(max_chars).unwrap_or(usize::MAX) {
        return Err(format!("at most {max_chars} characters of base64"));
    }
    let bytes = value.as_bytes();
    let alphabet = |b: &u8| b.is_ascii_alphanumeric() || *b == b'+' || *b == b'/';
    if !bytes.len().is_multiple_of(4) {
        return Err(expected());
    }
    let padding = bytes.iter().rev().take_while(|b| **b == b'=').count();
    if padding > 2 || !bytes[..bytes.len() - padding].iter().all(alphabet) {
        return Err(expected());
    }
    // The XSD pattern accepts any bits in the last character, so decode leniently too.
    let engine = base64::engine::GeneralPurpose::new(
        &base64::alphabet::STANDARD,
        base64::engine::GeneralPurposeConfig::new().with_decode_allow_trailing_bits(true),
    );
    engine
        .decode(bytes)
        .map(Value::Bytes)
        .map_err(|_| expected())
}

/// Base64 as [`SimpleKind::Base64`] reads it.
pub fn encode_base64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn collapse_matches_xml_schema() {
        assert_eq!(collapse("  a \t\r\n b  "), "a b");
        assert_eq!(collapse(""), "");
    }

    #[test]
    fn unsigned_accepts_only_plain_digits() {
        let kind = SimpleKind::Unsigned { max: 1000 };
        assert_eq!(check(&kind, " 0150 "), Ok(Value::Unsigned(150)));
        for bad in [
            "",
            "+1",
            "-0",
            "1e3",
            "1001",
            "99999999999999999999999",
            "1 2",
            "fast",
        ] {
            assert!(check(&kind, bad).is_err(), "{bad:?} must be refused");
        }
    }

    #[test]
    fn decimals_are_exact() {
        let kind = SimpleKind::Decimal {
            signed: false,
            integer_digits: 6,
            fraction_digits: 6,
        };
        let Ok(Value::Decimal(decimal)) = check(&kind, "10.25") else {
            panic!("valid")
        };
        assert_eq!(decimal.to_scaled(6), Some(10_250_000));
        assert_eq!(decimal.to_scaled(1), None);
        assert_eq!(decimal.to_plain(), "10.25");
        for bad in ["", ".5", "5.", "-1", "1.1234567", "1234567", "1,5"] {
            assert!(check(&kind, bad).is_err(), "{bad:?} must be refused");
        }
        let signed = SimpleKind::Decimal {
            signed: true,
            integer_digits: 3,
            fraction_digits: 3,
        };
        let Ok(Value::Decimal(negative)) = check(&signed, "-0.005") else {
            panic!("valid")
        };
        assert_eq!(negative.to_plain(), "-0.005");
    }

    #[test]
    fn date_times_are_calendar_checked() {
        assert!(parse_date_time("2024-02-29T23:59:59.5Z").is_some());
        for bad in [
            "2023-02-29T00:00:00Z",
            "2026-13-01T00:00:00Z",
            "2026-01-01T24:00:00Z",
            "2026-01-01T00:00:60Z",
            "0999-01-01T00:00:00Z",
            "2026-01-01T00:00:00",
            "2026-01-01T00:00:00+01:00",
            "2026-01-01T00:00:00.Z",
        ] {
            assert!(parse_date_time(bad).is_none(), "{bad:?} must be refused");
        }
        let at = parse_date_time("2026-11-24T12:00:00.25Z").expect("valid");
        assert_eq!(format_date_time(at), "2026-11-24T12:00:00.25Z");
    }

    #[test]
    fn base64_is_checked_and_decoded() {
        let kind = SimpleKind::Base64 { max_chars: 16 };
        assert_eq!(check(&kind, "aGk="), Ok(Value::Bytes(b"hi".to_vec())));
        for bad in ["aGk", "a=Gk", "aGk===", "aG k=", "aGVsbG8gd29ybGQgaGVsbG8="] {
            assert!(check(&kind, bad).is_err(), "{bad:?} must be refused");
        }
    }
}
