//! The `dom0_mem=` option: how much memory dom0 gets, in Xen's syntax.
//!
//! `dom0_mem=List of ( min:<sz> | max:<sz> | <sz> )` where
//! `<sz>` is `[-]<size>`, `[-]<frac>%` or `[-]<size>+<frac>%`, `<frac>` < 100.
//! Sizes follow Xen's `parse_size_and_unit` (no suffix means KiB). A leading
//! `-` means "all available memory but this much". The parsed form is kept;
//! [`Dom0Mem::initial_bytes`] and [`Dom0Mem::max_bytes`] resolve it against
//! the real amount of memory with Xen's rules once keel knows it.

use super::number::{parse_size, parse_uint};

/// One amount: `bytes + percent% of available`, optionally subtracted from
/// the available memory.
#[derive(Clone, Copy, Debug, Default, Eq, PartialEq)]
pub struct MemSize {
    /// Absolute part, in bytes.
    pub bytes: u64,
    /// Fraction of the available memory, in percent (0 to 99).
    pub percent: u8,
    /// A leading `-`: the amount is "all available memory but this much".
    pub all_but: bool,
}

impl MemSize {
    /// The amount in bytes when `avail` bytes are available. Saturates at 0
    /// and `u64::MAX` instead of wrapping.
    pub fn resolve(&self, avail: u64) -> u64 {
        let fraction = u128::from(avail) * u128::from(self.percent) / 100;
        // percent < 100, so the fraction is below `avail` and fits.
        let fraction = u64::try_from(fraction).unwrap_or(u64::MAX);
        let amount = self.bytes.saturating_add(fraction);
        if self.all_but {
            avail.saturating_sub(amount)
        } else {
            amount
        }
    }
}

/// Parsed `dom0_mem=`: each part is `None` when not given.
#[derive(Clone, Copy, Debug, Default, Eq, PartialEq)]
pub struct Dom0Mem {
    /// `<sz>`: the initial allocation.
    pub initial: Option<MemSize>,
    /// `min:<sz>`: lower bound of the initial allocation.
    pub min: Option<MemSize>,
    /// `max:<sz>`: upper bound of the initial allocation and of ballooning.
    pub max: Option<MemSize>,
}

/// Xen's cap on the memory held back for the hypervisor when dom0's size is
/// not given: 1/16 of the available memory, at most 128 MiB.
const DEFAULT_RESERVE_CAP: u64 = 128 << 20;

impl Dom0Mem {
    /// dom0's initial allocation in bytes when `avail` bytes are available,
    /// with Xen's rules: without `<sz>`, all memory but min(1/16, 128 MiB);
    /// then raised to `min`, lowered to `max`, and never above `avail`.
    /// The caller rounds the result down to whole pages.
    pub fn initial_bytes(&self, avail: u64) -> u64 {
        let initial = match self.initial {
            Some(size) => size.resolve(avail),
            None => avail - (avail / 16).min(DEFAULT_RESERVE_CAP),
        };
        let min = self.min.map_or(0, |m| m.resolve(avail));
        let max = self.max.map_or(u64::MAX, |m| m.resolve(avail));
        initial.max(min).min(max).min(avail)
    }

    /// The most memory dom0 may balloon up to, or `None` for no limit.
    pub fn max_bytes(&self, avail: u64) -> Option<u64> {
        self.max.map(|m| m.resolve(avail))
    }
}

/// Parses the value of `dom0_mem=`. Later items override earlier ones of the
/// same kind, as in Xen.
pub(crate) fn parse_dom0_mem(value: &str) -> Result<Dom0Mem, &'static str> {
    if value.is_empty() {
        return Err("a value is required");
    }
    let mut out = Dom0Mem::default();
    for item in value.split(',') {
        if let Some(amount) = item.strip_prefix("min:") {
            out.min = Some(parse_amount(amount)?);
        } else if let Some(amount) = item.strip_prefix("max:") {
            out.max = Some(parse_amount(amount)?);
        } else {
            out.initial = Some(parse_amount(item)?);
        }
    }
    Ok(out)
}

fn parse_amount(s: &str) -> Result<MemSize, &'static str> {
    let (all_but, s) = match s.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, s),
    };
    if s.is_empty() {
        return Err("expected a size such as 512M, 25% or 1G+25%");
    }
    let (size, percent) = match s.strip_suffix('%') {
        Some(p) => match p.split_once('+') {
            Some((size, percent)) => (Some(size), Some(percent)),
            None => (None, Some(p)),
        },
        None => (Some(s), None),
    };
    let bytes = match size {
        Some(size) => parse_size(size)?,
        None => 0,
    };
    let percent = match percent {
        Some(p) => u8::try_from(parse_uint(p)?).ok().filter(|p| *p < 100).ok_or("a percentage must be below 100")?,
        None => 0,
    };
    Ok(MemSize { bytes, percent, all_but })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const MIB: u64 = 1 << 20;
    const GIB: u64 = 1 << 30;

    fn size(bytes: u64, percent: u8, all_but: bool) -> Option<MemSize> {
        Some(MemSize { bytes, percent, all_but })
    }

    #[test]
    fn xen_forms() {
        assert_eq!(
            parse_dom0_mem("512M,max:1G"),
            Ok(Dom0Mem { initial: size(512 * MIB, 0, false), min: None, max: size(GIB, 0, false) })
        );
        assert_eq!(
            parse_dom0_mem("min:256M,max:2G,1G+25%"),
            Ok(Dom0Mem { initial: size(GIB, 25, false), min: size(256 * MIB, 0, false), max: size(2 * GIB, 0, false) })
        );
        assert_eq!(parse_dom0_mem("-512M").map(|d| d.initial), Ok(size(512 * MIB, 0, true)));
        assert_eq!(parse_dom0_mem("-10%").map(|d| d.initial), Ok(size(0, 10, true)));
        assert_eq!(parse_dom0_mem("max:-1G").map(|d| d.max), Ok(size(GIB, 0, true)));
        // No suffix means KiB, as in Xen.
        assert_eq!(parse_dom0_mem("524288").map(|d| d.initial), Ok(size(512 * MIB, 0, false)));
        // Later items of the same kind win.
        assert_eq!(parse_dom0_mem("1G,2G").map(|d| d.initial), Ok(size(2 * GIB, 0, false)));
    }

    #[test]
    fn bad_forms() {
        for bad in [
            "", ",", "512M,", "-", "max:", "min:x", "100%", "1G+100%", "+5%", "1G+", "1G+5", "5%%", "1G+5k%", "--1G",
            "512Q", "mid:1G", "1G 2G",
        ] {
            assert!(parse_dom0_mem(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn resolve_like_xen() {
        let avail = 16 * GIB;
        let parse = |s| parse_dom0_mem(s).unwrap();
        // Default: all but min(1/16, 128M).
        assert_eq!(Dom0Mem::default().initial_bytes(avail), avail - 128 * MIB);
        assert_eq!(Dom0Mem::default().initial_bytes(GIB), GIB - GIB / 16);
        assert_eq!(Dom0Mem::default().max_bytes(avail), None);
        assert_eq!(parse("512M").initial_bytes(avail), 512 * MIB);
        assert_eq!(parse("-1G").initial_bytes(avail), 15 * GIB);
        assert_eq!(parse("25%").initial_bytes(avail), 4 * GIB);
        assert_eq!(parse("1G+25%").initial_bytes(avail), 5 * GIB);
        assert_eq!(parse("-1G+25%").initial_bytes(avail), 11 * GIB);
        // min raises, max lowers and wins over min, avail caps.
        assert_eq!(parse("min:2G,512M").initial_bytes(avail), 2 * GIB);
        assert_eq!(parse("max:1G,4G").initial_bytes(avail), GIB);
        assert_eq!(parse("min:4G,max:1G").initial_bytes(avail), GIB);
        assert_eq!(parse("64G").initial_bytes(avail), avail);
        assert_eq!(parse("-64G").initial_bytes(avail), 0);
        assert_eq!(parse("max:-2G").max_bytes(avail), Some(14 * GIB));
    }

    proptest! {
        #[test]
        fn resolve_never_exceeds_avail(
            bytes: u64, percent in 0u8..100, all_but: bool, avail: u64,
            min_bytes: u64, max_bytes: u64,
        ) {
            let s = MemSize { bytes, percent, all_but };
            let d = Dom0Mem {
                initial: Some(s),
                min: Some(MemSize { bytes: min_bytes, ..MemSize::default() }),
                max: Some(MemSize { bytes: max_bytes, ..MemSize::default() }),
            };
            prop_assert!(d.initial_bytes(avail) <= avail);
            if all_but {
                prop_assert!(s.resolve(avail) <= avail);
            }
        }
    }
}
