//! Xen's value syntax for integers, sizes and booleans, shared by every option.
//!
//! Kept in one place so every option accepts exactly the same spellings:
//! integers are decimal, `0x` hexadecimal or leading-`0` octal; sizes are an
//! integer with an optional `T`/`G`/`M`/`K`/`B` suffix and default to KiB
//! (Xen's `parse_size_and_unit`); booleans are `yes|on|true|enable|1` and
//! `no|off|false|disable|0`. All of it is case sensitive, as in Xen.

/// Why a number could not be read; each is a complete operator phrase.
pub(crate) const NOT_A_NUMBER: &str = "not a number";
/// The number did not fit in 64 bits.
pub(crate) const TOO_LARGE: &str = "number too large";
/// The number was followed by characters that are not part of it.
pub(crate) const TRAILING: &str = "unexpected characters after the number";

/// Splits a leading unsigned integer off `s` in Xen's notation (decimal,
/// `0x` hex, leading-`0` octal). Returns the value and the unparsed rest.
pub(crate) fn split_uint(s: &str) -> Result<(u64, &str), &'static str> {
    if let Some(hex) = s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")) {
        return split_radix(hex, 16);
    }
    if let Some(oct) = s.strip_prefix('0') {
        // A lone "0" (or "0" followed by a suffix) is decimal zero.
        if !oct.starts_with(|c: char| c.is_ascii_digit()) {
            return Ok((0, oct));
        }
        return split_radix(oct, 8);
    }
    split_radix(s, 10)
}

/// Splits a leading decimal integer off `s`.
pub(crate) fn split_decimal(s: &str) -> Result<(u64, &str), &'static str> {
    split_radix(s, 10)
}

fn split_radix(s: &str, radix: u32) -> Result<(u64, &str), &'static str> {
    let digits = s.bytes().take_while(|b| char::from(*b).is_digit(radix)).count();
    if digits == 0 {
        return Err(NOT_A_NUMBER);
    }
    // `digits` counts ASCII bytes, so it is a char boundary.
    let (number, rest) = s.split_at(digits);
    let mut value: u64 = 0;
    for c in number.chars() {
        let digit = u64::from(c.to_digit(radix).ok_or(NOT_A_NUMBER)?);
        value = value.checked_mul(u64::from(radix)).and_then(|v| v.checked_add(digit)).ok_or(TOO_LARGE)?;
    }
    Ok((value, rest))
}

/// Parses a whole string as an unsigned integer in Xen's notation.
pub(crate) fn parse_uint(s: &str) -> Result<u64, &'static str> {
    match split_uint(s)? {
        (value, "") => Ok(value),
        _ => Err(TRAILING),
    }
}

/// Splits a leading size off `s`: an integer and an optional unit suffix
/// (`T`, `G`, `M`, `K` or `B`, either case). Without a suffix the unit is
/// KiB, as in Xen. Returns the size in bytes and the unparsed rest.
pub(crate) fn split_size(s: &str) -> Result<(u64, &str), &'static str> {
    let (value, rest) = split_uint(s)?;
    let (shift, rest) = match rest.as_bytes().first() {
        Some(b'T' | b't') => (40, &rest[1..]),
        Some(b'G' | b'g') => (30, &rest[1..]),
        Some(b'M' | b'm') => (20, &rest[1..]),
        Some(b'K' | b'k') => (10, &rest[1..]),
        Some(b'B' | b'b') => (0, &rest[1..]),
        _ => (10, rest),
    };
    let bytes = value.checked_mul(1u64 << shift).ok_or(TOO_LARGE)?;
    Ok((bytes, rest))
}

/// Parses a whole string as a size in bytes (see [`split_size`]).
pub(crate) fn parse_size(s: &str) -> Result<u64, &'static str> {
    match split_size(s)? {
        (bytes, "") => Ok(bytes),
        _ => Err("expected a size such as 512M, 4G or 1024K"),
    }
}

/// Parses a Xen boolean value.
pub(crate) fn parse_bool(s: &str) -> Option<bool> {
    match s {
        "yes" | "on" | "true" | "enable" | "1" => Some(true),
        "no" | "off" | "false" | "disable" | "0" => Some(false),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn integers_in_all_radixes() {
        assert_eq!(parse_uint("0"), Ok(0));
        assert_eq!(parse_uint("42"), Ok(42));
        assert_eq!(parse_uint("0x3f8"), Ok(0x3f8));
        assert_eq!(parse_uint("0X3F8"), Ok(0x3f8));
        assert_eq!(parse_uint("017"), Ok(0o17));
        assert_eq!(parse_uint("18446744073709551615"), Ok(u64::MAX));
    }

    #[test]
    fn bad_integers() {
        assert_eq!(parse_uint(""), Err(NOT_A_NUMBER));
        assert_eq!(parse_uint("x"), Err(NOT_A_NUMBER));
        assert_eq!(parse_uint("-1"), Err(NOT_A_NUMBER));
        assert_eq!(parse_uint("0x"), Err(NOT_A_NUMBER));
        assert_eq!(parse_uint("08"), Err(NOT_A_NUMBER));
        assert_eq!(parse_uint("12a"), Err(TRAILING));
        assert_eq!(parse_uint("0k"), Err(TRAILING));
        assert_eq!(parse_uint("18446744073709551616"), Err(TOO_LARGE));
        assert_eq!(parse_uint("0x10000000000000000"), Err(TOO_LARGE));
    }

    #[test]
    fn decimal_only_rejects_prefixes() {
        assert_eq!(split_decimal("0x10"), Ok((0, "x10")));
        assert_eq!(split_decimal("0115200"), Ok((115_200, "")));
    }

    #[test]
    fn sizes_default_to_kib_like_xen() {
        assert_eq!(parse_size("1"), Ok(1024));
        assert_eq!(parse_size("512M"), Ok(512 << 20));
        assert_eq!(parse_size("512m"), Ok(512 << 20));
        assert_eq!(parse_size("4G"), Ok(4 << 30));
        assert_eq!(parse_size("2T"), Ok(2 << 40));
        assert_eq!(parse_size("1024K"), Ok(1 << 20));
        assert_eq!(parse_size("4096B"), Ok(4096));
        assert_eq!(parse_size("4096b"), Ok(4096));
        assert_eq!(parse_size("0x10M"), Ok(16 << 20));
    }

    #[test]
    fn bad_sizes() {
        assert!(parse_size("").is_err());
        assert!(parse_size("M").is_err());
        assert!(parse_size("1Q").is_err());
        assert!(parse_size("1MB").is_err());
        assert_eq!(parse_size("16777216T"), Err(TOO_LARGE));
        assert_eq!(parse_size("18014398509481984"), Err(TOO_LARGE));
    }

    #[test]
    fn booleans() {
        for t in ["yes", "on", "true", "enable", "1"] {
            assert_eq!(parse_bool(t), Some(true), "{t}");
        }
        for f in ["no", "off", "false", "disable", "0"] {
            assert_eq!(parse_bool(f), Some(false), "{f}");
        }
        for bad in ["", "Yes", "TRUE", "2", "y", "enabled"] {
            assert_eq!(parse_bool(bad), None, "{bad}");
        }
    }

    proptest! {
        #[test]
        fn decimal_round_trip(n: u64) {
            prop_assert_eq!(parse_uint(&std::format!("{n}")), Ok(n));
            prop_assert_eq!(parse_uint(&std::format!("{n:#x}")), Ok(n));
        }

        #[test]
        fn split_never_panics_and_rest_is_a_suffix(s in "\\PC{0,24}") {
            if let Ok((_, rest)) = split_size(&s) {
                prop_assert!(s.ends_with(rest));
            }
        }
    }
}
