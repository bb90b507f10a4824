//! The Root System Description Pointer: finding it in BIOS memory and validating it.
//!
//! On a legacy-BIOS host the RSDP sits on a 16-byte boundary in the first KiB of the EBDA or in
//! the read-only BIOS area 0xE0000–0xFFFFF. (Under UEFI, or when the boot loader passes it,
//! the caller already has the bytes and only needs [`parse_rsdp`].)

use zerocopy::FromBytes;

use crate::layout::{RawRsdp, RSDP_SIGNATURE, RSDP_V1_LEN, RSDP_V2_LEN};
use crate::mem::read_exact;
use crate::{checksum, AcpiError, PhysMemory};

/// Physical address of the BIOS Data Area word holding the EBDA's real-mode segment.
const EBDA_SEGMENT_PTR: u64 = 0x40E;
/// How much of the EBDA is searched.
const EBDA_SEARCH_LEN: u64 = 1024;
/// The EBDA lies below the VGA hole; a pointer outside `(0x400, 0xA0000)` is garbage.
const EBDA_MIN: u64 = 0x400;
const EBDA_END: u64 = 0xA0000;
/// The BIOS read-only area searched after the EBDA.
const BIOS_AREA: (u64, u64) = (0xE0000, 0x10_0000);
/// The RSDP is on a 16-byte boundary.
const RSDP_ALIGN: u64 = 16;

/// A validated RSDP.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rsdp {
    /// 0 for ACPI 1.0, 2 for ACPI 2.0 and later.
    pub revision: u8,
    /// Firmware vendor.
    pub oem_id: [u8; 6],
    /// Physical address of the RSDT (may be 0 on ACPI 2.0+ systems).
    pub rsdt: u32,
    /// Physical address of the XSDT: `Some` only if the revision is at least 2 and the pointer
    /// is non-zero.
    pub xsdt: Option<u64>,
}

/// Validates an RSDP image: the signature, the ACPI 1.0 checksum over the first 20 bytes and,
/// when the revision is 2 or more, the extended checksum over all 36 bytes.
///
/// Like ACPICA, the RSDP's own length field is not trusted for the extended checksum: it always
/// covers the 36 bytes defined by ACPI 2.0.
///
/// # Errors
/// [`AcpiError::Truncated`] if `bytes` is too short for the revision,
/// [`AcpiError::BadSignature`] or [`AcpiError::BadChecksum`].
pub fn parse_rsdp(bytes: &[u8]) -> Result<Rsdp, AcpiError> {
    let v1 = bytes.get(..RSDP_V1_LEN).ok_or(AcpiError::Truncated)?;
    if v1[..8] != RSDP_SIGNATURE {
        return Err(AcpiError::BadSignature);
    }
    if checksum(v1) != 0 {
        return Err(AcpiError::BadChecksum);
    }
    let revision = v1[15];
    // An ACPI 1.0 RSDP is the first 20 bytes; the rest of the image stays zero.
    let mut image = [0u8; RSDP_V2_LEN];
    if revision >= 2 {
        let v2 = bytes.get(..RSDP_V2_LEN).ok_or(AcpiError::Truncated)?;
        if checksum(v2) != 0 {
            return Err(AcpiError::BadChecksum);
        }
        image.copy_from_slice(v2);
    } else {
        image[..RSDP_V1_LEN].copy_from_slice(v1);
    }
    let raw = RawRsdp::read_from_bytes(&image).map_err(|_| AcpiError::Truncated)?;
    let xsdt = raw.xsdt.get();
    Ok(Rsdp { revision, oem_id: raw.oem_id, rsdt: raw.rsdt.get(), xsdt: (revision >= 2 && xsdt != 0).then_some(xsdt) })
}

/// Searches legacy BIOS memory for a valid RSDP and returns its physical address.
///
/// The first KiB of the EBDA (segment word at 0x40E) is searched first, then 0xE0000–0xFFFFF,
/// at 16-byte boundaries, for `"RSD PTR "` with valid checksum(s) ([`parse_rsdp`]). Unreadable
/// ranges are skipped.
pub fn find_rsdp_bios(mem: &dyn PhysMemory) -> Option<u64> {
    let mut segment = [0u8; 2];
    if read_exact(mem, EBDA_SEGMENT_PTR, &mut segment).is_ok() {
        let ebda = u64::from(u16::from_le_bytes(segment)) << 4;
        if ebda > EBDA_MIN && ebda < EBDA_END {
            let len = EBDA_SEARCH_LEN.min(EBDA_END - ebda);
            if let Some(found) = scan(mem, ebda, ebda + len) {
                return Some(found);
            }
        }
    }
    scan(mem, BIOS_AREA.0, BIOS_AREA.1)
}

/// Scans `[start, end)` (start 16-byte aligned) for a valid RSDP, reading a KiB at a time.
fn scan(mem: &dyn PhysMemory, start: u64, end: u64) -> Option<u64> {
    const CHUNK: u64 = 1024;
    let mut chunk = [0u8; CHUNK as usize];
    let mut base = start;
    while base < end {
        let len = CHUNK.min(end - base) as usize;
        if read_exact(mem, base, &mut chunk[..len]).is_ok() {
            let mut offset = 0;
            while offset + RSDP_SIGNATURE.len() <= len {
                if chunk[offset..offset + RSDP_SIGNATURE.len()] == RSDP_SIGNATURE {
                    let addr = base + offset as u64;
                    if is_valid_rsdp_at(mem, addr) {
                        return Some(addr);
                    }
                }
                offset += RSDP_ALIGN as usize;
            }
        }
        base += CHUNK;
    }
    None
}

/// Whether a valid RSDP starts at `addr` (which may extend past the scanned window).
fn is_valid_rsdp_at(mem: &dyn PhysMemory, addr: u64) -> bool {
    let mut bytes = [0u8; RSDP_V2_LEN];
    if read_exact(mem, addr, &mut bytes[..RSDP_V1_LEN]).is_err() {
        return false;
    }
    let len = if bytes[15] >= 2 {
        if read_exact(mem, addr, &mut bytes).is_err() {
            return false;
        }
        RSDP_V2_LEN
    } else {
        RSDP_V1_LEN
    };
    parse_rsdp(&bytes[..len]).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::{rsdp_v1, rsdp_v2, FakeMem};
    use proptest::prelude::*;

    #[test]
    fn parses_v1() {
        let rsdp = parse_rsdp(&rsdp_v1(0x1234_5678)).unwrap();
        assert_eq!(rsdp.revision, 0);
        assert_eq!(&rsdp.oem_id, b"KTEST ");
        assert_eq!(rsdp.rsdt, 0x1234_5678);
        assert_eq!(rsdp.xsdt, None);
    }

    #[test]
    fn parses_v2() {
        let rsdp = parse_rsdp(&rsdp_v2(0x1000, 0x1_2345_6789)).unwrap();
        assert_eq!(rsdp.revision, 2);
        assert_eq!(rsdp.rsdt, 0x1000);
        assert_eq!(rsdp.xsdt, Some(0x1_2345_6789));
    }

    #[test]
    fn v2_with_null_xsdt_has_none() {
        let rsdp = parse_rsdp(&rsdp_v2(0x1000, 0)).unwrap();
        assert_eq!(rsdp.xsdt, None);
    }

    #[test]
    fn v1_ignores_bytes_past_20() {
        let mut bytes = rsdp_v1(0x1000).to_vec();
        bytes.extend_from_slice(&[0xFF; 16]);
        assert_eq!(parse_rsdp(&bytes).unwrap().xsdt, None);
    }

    #[test]
    fn rejects_bad_signature_checksums_and_truncation() {
        let mut bad_sig = rsdp_v1(0x1000);
        bad_sig[0] = b'X';
        assert_eq!(parse_rsdp(&bad_sig), Err(AcpiError::BadSignature));

        let mut bad_sum = rsdp_v1(0x1000);
        bad_sum[16] ^= 1;
        assert_eq!(parse_rsdp(&bad_sum), Err(AcpiError::BadChecksum));

        // The 20-byte checksum is fine, the extended one is not.
        let mut bad_ext = rsdp_v2(0x1000, 0x2000);
        bad_ext[24] ^= 1;
        assert_eq!(parse_rsdp(&bad_ext), Err(AcpiError::BadChecksum));

        assert_eq!(parse_rsdp(&rsdp_v2(0x1000, 0x2000)[..20]), Err(AcpiError::Truncated));
        assert_eq!(parse_rsdp(&rsdp_v1(0x1000)[..19]), Err(AcpiError::Truncated));
        assert_eq!(parse_rsdp(&[]), Err(AcpiError::Truncated));
    }

    /// Low memory with the BDA's EBDA pointer set to `ebda_segment`.
    fn low_mem(ebda_segment: u16) -> FakeMem {
        let mut mem = FakeMem::new();
        mem.add(0, vec![0u8; 0x10_0000]);
        mem.write(EBDA_SEGMENT_PTR, &ebda_segment.to_le_bytes());
        mem
    }

    #[test]
    fn finds_rsdp_in_ebda_first() {
        let mut mem = low_mem(0x9FC0);
        mem.write(0x9FC00 + 0x40, &rsdp_v1(0x1000));
        mem.write(0xF0000, &rsdp_v1(0x2000));
        assert_eq!(find_rsdp_bios(&mem), Some(0x9FC40));
    }

    #[test]
    fn finds_rsdp_in_bios_area() {
        let mut mem = low_mem(0x9FC0);
        mem.write(0xF5A30, &rsdp_v2(0x1000, 0x2000));
        assert_eq!(find_rsdp_bios(&mem), Some(0xF5A30));
    }

    #[test]
    fn skips_unaligned_and_invalid_candidates() {
        let mut mem = low_mem(0);
        // Not on a 16-byte boundary.
        mem.write(0xE0008, &rsdp_v1(0x1000));
        // Signature but bad checksum.
        let mut bad = rsdp_v1(0x1000);
        bad[16] ^= 0x55;
        mem.write(0xE0100, &bad);
        // Valid v1 checksum but broken extended checksum.
        let mut bad_ext = rsdp_v2(0x1000, 0x2000);
        bad_ext[30] ^= 1;
        mem.write(0xE0200, &bad_ext);
        assert_eq!(find_rsdp_bios(&mem), None);
        // The last 16-byte slot that can hold a 36-byte RSDP below 1 MiB.
        mem.write(0xFFFD0, &rsdp_v2(0x1000, 0x2000));
        assert_eq!(find_rsdp_bios(&mem), Some(0xFFFD0));
    }

    #[test]
    fn ebda_pointer_outside_conventional_memory_is_ignored() {
        // Segment 0xA000 -> 0xA0000, the VGA hole: not searched.
        let mut mem = low_mem(0xA000);
        mem.write(0xA0000, &rsdp_v1(0x1000));
        assert_eq!(find_rsdp_bios(&mem), None);
    }

    #[test]
    fn unreadable_memory_finds_nothing() {
        assert_eq!(find_rsdp_bios(&FakeMem::new()), None);
        // Only the BIOS area exists: still found.
        let mut mem = FakeMem::new();
        let mut area = vec![0u8; 0x20000];
        area[0x1230..0x1230 + 20].copy_from_slice(&rsdp_v1(0x1000));
        mem.add(0xE0000, area);
        assert_eq!(find_rsdp_bios(&mem), Some(0xE1230));
    }

    proptest! {
        #[test]
        fn parse_rsdp_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
            let _ = parse_rsdp(&bytes);
        }

        #[test]
        fn parse_rsdp_never_panics_with_signature(
            mut bytes in proptest::collection::vec(any::<u8>(), 8..64),
        ) {
            bytes[..8].copy_from_slice(b"RSD PTR ");
            if let Ok(rsdp) = parse_rsdp(&bytes) {
                prop_assert!(rsdp.xsdt.is_none() || rsdp.revision >= 2);
            }
        }
    }
}
