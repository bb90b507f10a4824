//! The `com1=` option: serial port settings in Xen's syntax.
//!
//! Xen's grammar is
//! `com1=<baud>|auto[/<base-baud>][,[DPS][,[<io-base>][,[<irq>][,...]]]]`,
//! where every positional field may be left empty to keep its default, and
//! any comma-separated field may instead be written `name=value`
//! (`baud=`, `data-bits=`, `parity=`, `stop-bits=`, `io-base=`, `irq=`).
//! keel drives a legacy 16550 at an I/O port only, so PCI/AMT discovery,
//! MSI, register shift/width and PCI locations are reported as unsupported
//! and ignored.

use super::number::{parse_uint, split_decimal, TRAILING};

/// Baud rate setting of a serial port.
#[derive(Clone, Copy, Debug, Eq, PartialEq)]
pub enum Baud {
    /// `auto`: firmware or the boot loader already programmed the port; keep
    /// its rate.
    Auto,
    /// An explicit rate in bits per second (never zero).
    Rate(u32),
}

/// Parity setting of a serial port.
#[derive(Clone, Copy, Debug, Eq, PartialEq)]
pub enum Parity {
    /// `n`: no parity bit.
    None,
    /// `o`: odd parity.
    Odd,
    /// `e`: even parity.
    Even,
    /// `m`: parity bit always 1.
    Mark,
    /// `s`: parity bit always 0.
    Space,
}

/// Configuration of the first serial port (`com1=`).
#[derive(Clone, Copy, Debug, Eq, PartialEq)]
pub struct ComConfig {
    /// Line rate.
    pub baud: Baud,
    /// Xen's `/<base-baud>`: the UART's maximum rate, i.e. its input clock
    /// divided by 16. `None` means the PC standard,
    /// [`ComConfig::DEFAULT_BASE_BAUD`] (1.8432 MHz clock).
    pub base_baud: Option<u32>,
    /// Data bits per character, 5 to 8.
    pub data_bits: u8,
    /// Parity.
    pub parity: Parity,
    /// Stop bits, 1 or 2.
    pub stop_bits: u8,
    /// I/O port base of the UART registers (never 0).
    pub io_base: u16,
    /// ISA IRQ line; 0 means polled mode, as in Xen.
    pub irq: u8,
}

impl ComConfig {
    /// Base baud of a PC UART clocked at 1.8432 MHz.
    pub const DEFAULT_BASE_BAUD: u32 = 115_200;

    /// keel's default: 115200 8n1 at I/O port 0x3f8, IRQ 4 (the PC's COM1).
    pub const DEFAULT: Self = Self {
        baud: Baud::Rate(115_200),
        base_baud: None,
        data_bits: 8,
        parity: Parity::None,
        stop_bits: 1,
        io_base: 0x3f8,
        irq: 4,
    };

    /// The divisor latch value for the configured rate, or `None` for
    /// [`Baud::Auto`] (leave the port's divisor alone). Parsing guarantees a
    /// representable divisor for every [`Baud::Rate`] it produces.
    pub fn divisor(&self) -> Option<u16> {
        match self.baud {
            Baud::Auto => None,
            Baud::Rate(rate) => divisor_for(rate, self.base_baud),
        }
    }
}

impl Default for ComConfig {
    fn default() -> Self {
        Self::DEFAULT
    }
}

fn divisor_for(rate: u32, base_baud: Option<u32>) -> Option<u16> {
    let base = base_baud.unwrap_or(ComConfig::DEFAULT_BASE_BAUD);
    let divisor = base.checked_div(rate)?;
    u16::try_from(divisor).ok().filter(|d| *d != 0)
}

/// Parses the value of `com1=`. Settings keel cannot honour are passed to
/// `unsupported` as (sub-value, reason) and skipped; a syntax error rejects
/// the whole value.
pub(crate) fn parse_com<'a>(
    value: &'a str,
    unsupported: &mut dyn FnMut(&'a str, &'static str),
) -> Result<ComConfig, &'static str> {
    if value.is_empty() {
        return Err("a value is required");
    }
    let mut cfg = ComConfig::DEFAULT;
    let mut position = 0;
    for field in value.split(',') {
        match field.split_once('=') {
            Some((key, v)) => named(&mut cfg, key, v, field, unsupported)?,
            None => {
                positional(&mut cfg, position, field, unsupported)?;
                position += 1;
            }
        }
    }
    if let Baud::Rate(rate) = cfg.baud {
        if divisor_for(rate, cfg.base_baud).is_none() {
            return Err("baud rate cannot be generated from the UART clock");
        }
    }
    Ok(cfg)
}

fn positional<'a>(
    cfg: &mut ComConfig,
    position: usize,
    field: &'a str,
    unsupported: &mut dyn FnMut(&'a str, &'static str),
) -> Result<(), &'static str> {
    if field.is_empty() {
        // Xen allows skipping any positional field to keep its default.
        return Ok(());
    }
    match position {
        0 => {
            let (baud, base) = match field.split_once('/') {
                Some((baud, base)) => (baud, Some(base)),
                None => (field, None),
            };
            if !baud.is_empty() {
                cfg.baud = parse_baud(baud)?;
            }
            if let Some(base) = base {
                cfg.base_baud = Some(parse_nonzero_u32(base, "base baud must be 1 or more")?);
            }
        }
        1 => parse_dps(cfg, field)?,
        2 => match field {
            "pci" | "amt" => unsupported(field, "keel drives only a UART at a fixed I/O port"),
            _ => cfg.io_base = parse_io_base(field)?,
        },
        3 => match field {
            "msi" => unsupported(field, "keel drives the UART by legacy IRQ or polling"),
            _ => cfg.irq = parse_irq(field)?,
        },
        4 | 5 => unsupported(field, "keel does not support PCI serial ports"),
        _ => return Err("too many comma-separated fields"),
    }
    Ok(())
}

fn named<'a>(
    cfg: &mut ComConfig,
    key: &str,
    value: &str,
    field: &'a str,
    unsupported: &mut dyn FnMut(&'a str, &'static str),
) -> Result<(), &'static str> {
    match key {
        "baud" => cfg.baud = parse_baud(value)?,
        "data-bits" => cfg.data_bits = parse_data_bits(value)?,
        "parity" => cfg.parity = parse_parity(value)?,
        "stop-bits" => cfg.stop_bits = parse_stop_bits(value)?,
        "io-base" => cfg.io_base = parse_io_base(value)?,
        "irq" => cfg.irq = parse_irq(value)?,
        "clock-hz" | "reg-shift" | "reg-width" => {
            unsupported(field, "keel drives only a standard 16550 with 1-byte registers")
        }
        "dev" | "port" | "bridge" => unsupported(field, "keel does not support PCI serial ports"),
        _ => return Err("unknown com1 setting"),
    }
    Ok(())
}

fn parse_baud(s: &str) -> Result<Baud, &'static str> {
    if s == "auto" {
        return Ok(Baud::Auto);
    }
    // Xen reads the baud rate in decimal.
    match split_decimal(s) {
        Ok((rate, "")) => u32::try_from(rate)
            .ok()
            .filter(|r| *r != 0)
            .map(Baud::Rate)
            .ok_or("baud rate must be 1 to 4294967295 or auto"),
        Ok(_) => Err(TRAILING),
        Err(e) => Err(e),
    }
}

fn parse_nonzero_u32(s: &str, why: &'static str) -> Result<u32, &'static str> {
    u32::try_from(parse_uint(s)?).ok().filter(|v| *v != 0).ok_or(why)
}

/// `DPS`: data bits 5-8, parity n/o/e/m/s, stop bits 1-2, e.g. `8n1`.
fn parse_dps(cfg: &mut ComConfig, s: &str) -> Result<(), &'static str> {
    const WHY: &str = "expected data bits, parity and stop bits such as 8n1";
    let b = s.as_bytes();
    if b.len() != 3 {
        return Err(WHY);
    }
    // Each sub-parser works on one ASCII byte; a non-ASCII byte fails them.
    let one = |i: usize| core::str::from_utf8(&b[i..=i]).map_err(|_| WHY);
    cfg.data_bits = parse_data_bits(one(0)?)?;
    cfg.parity = parse_parity(one(1)?)?;
    cfg.stop_bits = parse_stop_bits(one(2)?)?;
    Ok(())
}

fn parse_data_bits(s: &str) -> Result<u8, &'static str> {
    match s {
        "5" => Ok(5),
        "6" => Ok(6),
        "7" => Ok(7),
        "8" => Ok(8),
        _ => Err("data bits must be 5, 6, 7 or 8"),
    }
}

fn parse_parity(s: &str) -> Result<Parity, &'static str> {
    match s {
        "n" => Ok(Parity::None),
        "o" => Ok(Parity::Odd),
        "e" => Ok(Parity::Even),
        "m" => Ok(Parity::Mark),
        "s" => Ok(Parity::Space),
        _ => Err("parity must be n, o, e, m or s"),
    }
}

fn parse_stop_bits(s: &str) -> Result<u8, &'static str> {
    match s {
        "1" => Ok(1),
        "2" => Ok(2),
        _ => Err("stop bits must be 1 or 2"),
    }
}

fn parse_io_base(s: &str) -> Result<u16, &'static str> {
    u16::try_from(parse_uint(s)?).ok().filter(|p| *p != 0).ok_or("I/O base must be 0x1 to 0xffff")
}

fn parse_irq(s: &str) -> Result<u8, &'static str> {
    u8::try_from(parse_uint(s)?).map_err(|_| "IRQ must be 0 (polled) to 255")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::vec::Vec;

    fn parse(value: &str) -> (Result<ComConfig, &'static str>, Vec<&str>) {
        let mut unsupported = Vec::new();
        let r = parse_com(value, &mut |v, _| unsupported.push(v));
        (r, unsupported)
    }

    fn ok(value: &str) -> ComConfig {
        let (r, unsupported) = parse(value);
        assert!(unsupported.is_empty(), "{value}: {unsupported:?}");
        r.unwrap_or_else(|e| panic!("{value}: {e}"))
    }

    #[test]
    fn default_is_pc_com1() {
        let d = ComConfig::default();
        assert_eq!(d.baud, Baud::Rate(115_200));
        assert_eq!((d.data_bits, d.parity, d.stop_bits), (8, Parity::None, 1));
        assert_eq!((d.io_base, d.irq), (0x3f8, 4));
        assert_eq!(d.divisor(), Some(1));
    }

    #[test]
    fn positional_forms() {
        assert_eq!(ok("115200"), ComConfig::DEFAULT);
        assert_eq!(ok("115200,8n1"), ComConfig::DEFAULT);
        let c = ok("57600,7e2,0x2f8,3");
        assert_eq!(c.baud, Baud::Rate(57_600));
        assert_eq!((c.data_bits, c.parity, c.stop_bits), (7, Parity::Even, 2));
        assert_eq!((c.io_base, c.irq), (0x2f8, 3));
        assert_eq!(c.divisor(), Some(2));
        let c = ok("auto");
        assert_eq!(c.baud, Baud::Auto);
        assert_eq!(c.divisor(), None);
        let c = ok("9600/230400,5o1,,0");
        assert_eq!(c.base_baud, Some(230_400));
        assert_eq!(c.divisor(), Some(24));
        assert_eq!((c.data_bits, c.parity, c.io_base, c.irq), (5, Parity::Odd, 0x3f8, 0));
        let c = ok("auto/1843200");
        assert_eq!((c.baud, c.base_baud), (Baud::Auto, Some(1_843_200)));
        assert_eq!(ok(",6m1").parity, Parity::Mark);
        assert_eq!(ok(",8s1").parity, Parity::Space);
    }

    #[test]
    fn named_forms() {
        let c = ok("baud=38400,data-bits=7,parity=o,stop-bits=2,io-base=0x3e8,irq=5");
        assert_eq!(c.baud, Baud::Rate(38_400));
        assert_eq!((c.data_bits, c.parity, c.stop_bits), (7, Parity::Odd, 2));
        assert_eq!((c.io_base, c.irq), (0x3e8, 5));
        // Positional and named fields mix; named ones do not use up positions.
        let c = ok("19200,irq=0,7n1");
        assert_eq!((c.baud, c.irq, c.data_bits), (Baud::Rate(19_200), 0, 7));
    }

    #[test]
    fn unsupported_parts_are_skipped() {
        let (r, u) = parse("115200,8n1,pci,msi,00:1f.0,00:1c.0");
        assert_eq!(r, Ok(ComConfig::DEFAULT));
        assert_eq!(u, ["pci", "msi", "00:1f.0", "00:1c.0"]);
        let (r, u) = parse("115200,reg-width=4,reg-shift=2,dev=pci,clock-hz=1");
        assert_eq!(r, Ok(ComConfig::DEFAULT));
        assert_eq!(u, ["reg-width=4", "reg-shift=2", "dev=pci", "clock-hz=1"]);
    }

    #[test]
    fn bad_values() {
        for bad in [
            "",
            "0",
            "fast",
            "115200x",
            "4294967296",
            "115200,9n1",
            "115200,8x1",
            "115200,8n3",
            "115200,8n",
            "115200,8n1x",
            "115200,8é",
            "115200,8n1,0",
            "115200,8n1,0x10000",
            "115200,8n1,port",
            "115200,8n1,0x3f8,256",
            "115200,8n1,0x3f8,4,,,extra",
            "115200/0",
            "230400",
            "1",
            "9600/",
            "speed=9600",
            "baud=",
            "parity=x",
        ] {
            assert!(parse(bad).0.is_err(), "{bad:?} accepted");
        }
    }
}
