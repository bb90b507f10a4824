//! Finding the S5 (soft-off) sleep type values in the DSDT without an AML interpreter.
//!
//! Powering the host off means writing `SLP_TYPa | SLP_EN` to PM1a_CNT (and `SLP_TYPb` to
//! PM1b_CNT). The SLP_TYP values come from the DSDT object `\_S5_`, which firmware declares as
//! a named package of integer constants. keel scans the AML bytes for that declaration:
//!
//! ```text
//! NameOp 0x08, ['\\' root prefix], "_S5_", PackageOp 0x12, PkgLength, NumElements, elements…
//! ```
//!
//! Elements are decoded as `Zero` (0x00), `One` (0x01), `Ones` (0xFF), `ByteConst` (0x0A nn),
//! `WordConst` (0x0B), `DWordConst` (0x0C), `QWordConst` (0x0E), or a bare byte 2–7 (invalid AML
//! that some firmware ships; SLP_TYP is a 3-bit field). A `_S5_` defined as a method, which this
//! cannot evaluate, is reported as not found. Every read is bounds-checked against the table,
//! the window read around the match, and the package's own length.

use crate::layout::{SDT_HEADER_LEN, SIG_DSDT, SIG_SSDT};
use crate::mem::{open_table, TableReader};
use crate::{AcpiError, PhysMemory, TableRef};

const NAME_OP: u8 = 0x08;
const ROOT_PREFIX: u8 = b'\\';
const PACKAGE_OP: u8 = 0x12;
const S5_NAME: [u8; 4] = *b"_S5_";

/// Bytes read around a `_S5_` match: up to 2 before (NameOp, root prefix), the name,
/// PackageOp, up to 4 PkgLength bytes, NumElements and two elements of up to 9 bytes each.
const BEFORE: u32 = 2;
const AFTER: u32 = 4 + 1 + 4 + 1 + 2 * 9;

/// Returns `(SLP_TYPa, SLP_TYPb)` for S5 from the DSDT (or an SSDT) `dsdt`.
///
/// The first `Name (_S5_, Package …)` declaration is used. With a one-element package, the
/// integer's low byte is SLP_TYPa and its second byte SLP_TYPb (as ACPICA does). Values are
/// truncated to a byte; the caller shifts them into place.
///
/// # Errors
/// [`AcpiError::S5NotFound`] if there is no such declaration, [`AcpiError::S5Malformed`] if one
/// was found but none could be decoded, or the table's own error if it is unreadable, not a
/// DSDT/SSDT, or fails its checksum.
pub fn find_s5(mem: &dyn PhysMemory, dsdt: TableRef) -> Result<(u8, u8), AcpiError> {
    let reader = open_table(mem, dsdt, &[SIG_DSDT, SIG_SSDT], SDT_HEADER_LEN)?;
    let len = reader.len();
    let mut malformed = false;
    let mut chunk = [0u8; 512];
    let mut base = SDT_HEADER_LEN as u32;
    while base < len {
        let n = (len - base).min(chunk.len() as u32) as usize;
        reader.read(base, &mut chunk[..n])?;
        for i in 0..n.saturating_sub(S5_NAME.len() - 1) {
            if chunk[i..i + S5_NAME.len()] == S5_NAME {
                match decode_at(&reader, base + i as u32)? {
                    Candidate::Found(a, b) => return Ok((a, b)),
                    Candidate::NotADeclaration => {}
                    Candidate::Malformed => malformed = true,
                }
            }
        }
        if base + n as u32 >= len {
            break;
        }
        // Overlap by three bytes so a name straddling two chunks is still seen (once).
        base += (n - (S5_NAME.len() - 1)) as u32;
    }
    Err(if malformed { AcpiError::S5Malformed } else { AcpiError::S5NotFound })
}

enum Candidate {
    Found(u8, u8),
    /// The bytes `_S5_` are not the name of a `Name` declaration.
    NotADeclaration,
    /// `Name (_S5_, …)` whose value is not a decodable package.
    Malformed,
}

/// Decodes the declaration around the `_S5_` at table offset `at`.
fn decode_at(reader: &TableReader<'_>, at: u32) -> Result<Candidate, AcpiError> {
    let start = at.saturating_sub(BEFORE).max(SDT_HEADER_LEN as u32);
    let end = at.saturating_add(AFTER).min(reader.len());
    let mut window = [0u8; (BEFORE + AFTER) as usize];
    let w = &mut window[..(end - start) as usize];
    reader.read(start, w)?;
    let name = (at - start) as usize;

    let prefix_ok = match name {
        2 => w[1] == NAME_OP || (w[1] == ROOT_PREFIX && w[0] == NAME_OP),
        1 => w[0] == NAME_OP,
        _ => false,
    };
    if !prefix_ok {
        return Ok(Candidate::NotADeclaration);
    }
    Ok(decode_package(w, name + S5_NAME.len(), reader.len() - start)
        .map_or(Candidate::Malformed, |(a, b)| Candidate::Found(a, b)))
}

/// Decodes `PackageOp PkgLength NumElements elem0 [elem1]` at `w[op]`. `table_end` is the
/// table's end relative to `w[0]`.
fn decode_package(w: &[u8], op: usize, table_end: u32) -> Option<(u8, u8)> {
    if *w.get(op)? != PACKAGE_OP {
        return None;
    }
    let pkg_start = op + 1;
    let lead = *w.get(pkg_start)?;
    let extra = usize::from(lead >> 6);
    let pkg_len = if extra == 0 {
        u32::from(lead & 0x3F)
    } else {
        // Bits 4-5 must be zero when further length bytes follow.
        if lead & 0x30 != 0 {
            return None;
        }
        let mut value = u32::from(lead & 0x0F);
        for k in 0..extra {
            value |= u32::from(*w.get(pkg_start + 1 + k)?) << (4 + 8 * k);
        }
        value
    };
    // PkgLength counts from its own first byte to the end of the package.
    let pkg_end = u32::try_from(pkg_start).ok()?.checked_add(pkg_len)?;
    if pkg_end > table_end {
        return None;
    }
    let limit = w.len().min(pkg_end as usize);
    let count_at = pkg_start + 1 + extra;
    if count_at >= limit {
        return None;
    }
    let count = w[count_at];
    let (first, next) = integer(w, count_at + 1, limit)?;
    match count {
        0 => None,
        1 => Some((first as u8, (first >> 8) as u8)),
        _ => {
            let (second, _) = integer(w, next, limit)?;
            Some((first as u8, second as u8))
        }
    }
}

/// Decodes the integer constant at `w[at]` (below `limit`); returns it and the next offset.
fn integer(w: &[u8], at: usize, limit: usize) -> Option<(u64, usize)> {
    if at >= limit {
        return None;
    }
    let op = *w.get(at)?;
    let size = match op {
        0x00 => return Some((0, at + 1)),
        0x01 => return Some((1, at + 1)),
        0xFF => return Some((u64::MAX, at + 1)),
        0x02..=0x07 => return Some((u64::from(op), at + 1)),
        0x0A => 1,
        0x0B => 2,
        0x0C => 4,
        0x0E => 8,
        _ => return None,
    };
    let data = at + 1;
    if data + size > limit {
        return None;
    }
    let mut bytes = [0u8; 8];
    bytes[..size].copy_from_slice(w.get(data..data + size)?);
    Some((u64::from_le_bytes(bytes), data + size))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::*;
    use proptest::prelude::*;

    const AT: u64 = 0x20_0000;

    fn s5_in(aml: &[u8]) -> Result<(u8, u8), AcpiError> {
        let image = sdt(b"DSDT", 2, aml);
        let mut mem = FakeMem::new();
        mem.add(AT, image.clone());
        find_s5(&mem, TableRef { signature: *b"DSDT", phys: AT, length: image.len() as u32 })
    }

    /// `Name (<prefix>_S5_, Package (n) { elements })` with a one-byte PkgLength.
    fn s5_decl(prefix: &[u8], count: u8, elements: &[u8]) -> Vec<u8> {
        let mut v = vec![NAME_OP];
        v.extend_from_slice(prefix);
        v.extend_from_slice(b"_S5_");
        v.push(PACKAGE_OP);
        v.push(2 + elements.len() as u8);
        v.push(count);
        v.extend_from_slice(elements);
        v
    }

    #[test]
    fn byte_const_form() {
        let aml = s5_decl(b"", 4, &[0x0A, 0x05, 0x0A, 0x07, 0x00, 0x00]);
        assert_eq!(s5_in(&aml), Ok((5, 7)));
    }

    #[test]
    fn zero_and_one_forms() {
        assert_eq!(s5_in(&s5_decl(b"", 4, &[0, 0, 0, 0])), Ok((0, 0)));
        assert_eq!(s5_in(&s5_decl(b"", 2, &[1, 0])), Ok((1, 0)));
        assert_eq!(s5_in(&s5_decl(b"", 2, &[0, 1])), Ok((0, 1)));
    }

    #[test]
    fn root_prefix_form() {
        let mut aml = vec![0xA3, 0xA3]; // padding (Noop) so the prefix is not at the header
        aml.extend(s5_decl(b"\\", 4, &[0x0A, 0x07, 0x00, 0x00, 0x00]));
        assert_eq!(s5_in(&aml), Ok((7, 0)));
    }

    #[test]
    fn declaration_right_after_the_header() {
        // NameOp is the first AML byte: the window may not reach back into the header.
        assert_eq!(s5_in(&s5_decl(b"", 2, &[0x0A, 3, 0x0A, 4])), Ok((3, 4)));
    }

    #[test]
    fn word_dword_qword_and_bare_forms() {
        let aml = s5_decl(b"", 2, &[0x0B, 0x05, 0x00, 0x0C, 0x06, 0, 0, 0]);
        assert_eq!(s5_in(&aml), Ok((5, 6)));
        let aml = s5_decl(b"", 2, &[0x0E, 0x07, 0, 0, 0, 0, 0, 0, 0, 0x05]);
        assert_eq!(s5_in(&aml), Ok((7, 5)));
        let aml = s5_decl(b"", 4, &[0x05, 0x05, 0x00, 0x00]);
        assert_eq!(s5_in(&aml), Ok((5, 5)));
        let aml = s5_decl(b"", 2, &[0xFF, 0x00]);
        assert_eq!(s5_in(&aml), Ok((0xFF, 0)));
    }

    #[test]
    fn one_element_package_splits_the_integer() {
        let aml = s5_decl(b"", 1, &[0x0B, 0x05, 0x07]);
        assert_eq!(s5_in(&aml), Ok((5, 7)));
    }

    #[test]
    fn multi_byte_pkg_length() {
        // PkgLength 0x46 0x00 = 2-byte encoding of 6: 6 = 2 (PkgLength) + 1 + 3 elements bytes.
        let mut aml = vec![NAME_OP];
        aml.extend_from_slice(b"_S5_");
        aml.extend_from_slice(&[PACKAGE_OP, 0x46, 0x00, 2, 0x0A, 6, 0]);
        assert_eq!(s5_in(&aml), Ok((6, 0)));
    }

    #[test]
    fn other_sleep_states_and_references_are_skipped() {
        // Name (_S3_, Package (4) { One, One, Zero, Zero }): same shape, other name.
        let mut aml = s5_decl(b"", 4, &[0x01, 0x01, 0, 0]);
        aml[3] = b'3';
        // A method call `_S5_ ()` style reference: not preceded by NameOp.
        aml.extend_from_slice(&[0xA4, b'_', b'S', b'5', b'_']);
        aml.extend(s5_decl(b"", 4, &[0x0A, 0x02, 0x0A, 0x03, 0, 0]));
        assert_eq!(s5_in(&aml), Ok((2, 3)));
    }

    #[test]
    fn missing_s5_is_an_error() {
        assert_eq!(s5_in(&[]), Err(AcpiError::S5NotFound));
        assert_eq!(s5_in(b"\x08_S3_\x12\x06\x04\x01\x01\x00\x00"), Err(AcpiError::S5NotFound));
        // Defined as a method: cannot be evaluated here.
        assert_eq!(s5_in(b"\x14\x09_S5_\x00\xA4\x0A\x05"), Err(AcpiError::S5NotFound));
    }

    #[test]
    fn malformed_packages_are_errors() {
        // Not a package.
        assert_eq!(s5_in(b"\x08_S5_\x0A\x05"), Err(AcpiError::S5Malformed));
        // Zero elements.
        assert_eq!(s5_in(&s5_decl(b"", 0, &[])), Err(AcpiError::S5Malformed));
        // An element that is not an integer (a String).
        assert_eq!(s5_in(&s5_decl(b"", 2, &[0x0D, b'a', 0])), Err(AcpiError::S5Malformed));
        // PkgLength past the end of the table.
        assert_eq!(s5_in(b"\x08_S5_\x12\x3F\x04\x00\x00"), Err(AcpiError::S5Malformed));
        // Second element outside the package's own length.
        assert_eq!(s5_in(b"\x08_S5_\x12\x03\x02\x00\x00\x00"), Err(AcpiError::S5Malformed));
        // ByteConst cut off by the end of the table.
        assert_eq!(s5_in(b"\x08_S5_\x12\x04\x02\x00\x0A"), Err(AcpiError::S5Malformed));
        // Reserved PkgLength bits set.
        assert_eq!(s5_in(b"\x08_S5_\x12\x76\x00\x02\x00\x00"), Err(AcpiError::S5Malformed));
        // A malformed declaration followed by a good one: the good one wins.
        let mut aml = b"\x08_S5_\x0A\x05".to_vec();
        aml.extend(s5_decl(b"", 2, &[0x0A, 5, 0]));
        assert_eq!(s5_in(&aml), Ok((5, 0)));
    }

    #[test]
    fn match_straddling_a_chunk_boundary() {
        // Place the declaration across the 512-byte read boundary at every alignment.
        for pad in 500..520 {
            let mut aml = vec![0xA3u8; pad];
            aml.extend(s5_decl(b"\\", 4, &[0x0A, 0x05, 0, 0, 0]));
            assert_eq!(s5_in(&aml), Ok((5, 0)), "pad {pad}");
        }
    }

    #[test]
    fn wrong_table_is_an_error() {
        let image = madt(0xFEE0_0000, 0, &[]);
        let mut mem = FakeMem::new();
        mem.add(AT, image.clone());
        let table = TableRef { signature: *b"APIC", phys: AT, length: image.len() as u32 };
        assert_eq!(find_s5(&mem, table), Err(AcpiError::BadSignature));
    }

    proptest! {
        #[test]
        fn random_aml_never_panics(
            mut aml in proptest::collection::vec(any::<u8>(), 0..1500),
            spots in proptest::collection::vec(any::<prop::sample::Index>(), 0..6),
        ) {
            // Seed random "_S5_" declarations heads so the decoder actually runs.
            for spot in spots {
                if aml.len() >= 7 {
                    let i = spot.index(aml.len() - 6);
                    aml[i..i + 6].copy_from_slice(b"\x08_S5_\x12");
                }
            }
            let _ = s5_in(&aml);
        }
    }
}
