//! Checked reads of firmware memory through [`PhysMemory`], and validation of table headers.
//!
//! Everything that touches host physical memory goes through here, so address overflow,
//! unreadable ranges, absurd lengths and bad checksums are each handled in one place.

use zerocopy::{FromBytes, IntoBytes};

use crate::layout::{SdtHeader, SDT_HEADER_LEN};
use crate::{checksum, AcpiError, PhysMemory, TableRef, MAX_TABLE_LEN};

/// Reads `buf.len()` bytes at `phys`, failing on address overflow or an unreadable range.
pub(crate) fn read_exact(mem: &dyn PhysMemory, phys: u64, buf: &mut [u8]) -> Result<(), AcpiError> {
    let len = u64::try_from(buf.len()).map_err(|_| AcpiError::AddressOverflow)?;
    phys.checked_add(len).ok_or(AcpiError::AddressOverflow)?;
    mem.read(phys, buf).map_err(|()| AcpiError::Unreadable { phys })
}

/// Reads a plain-bytes structure at `phys`.
pub(crate) fn read_obj<T: FromBytes + IntoBytes>(mem: &dyn PhysMemory, phys: u64) -> Result<T, AcpiError> {
    let mut value = T::new_zeroed();
    read_exact(mem, phys, value.as_mut_bytes())?;
    Ok(value)
}

/// The byte sum of `len` bytes at `phys`, read in small chunks (no allocation).
pub(crate) fn sum_region(mem: &dyn PhysMemory, phys: u64, len: u32) -> Result<u8, AcpiError> {
    let mut chunk = [0u8; 256];
    let mut sum = 0u8;
    let mut done: u32 = 0;
    while done < len {
        let n = (len - done).min(chunk.len() as u32) as usize;
        let addr = phys.checked_add(u64::from(done)).ok_or(AcpiError::AddressOverflow)?;
        read_exact(mem, addr, &mut chunk[..n])?;
        sum = sum.wrapping_add(checksum(&chunk[..n]));
        done += n as u32;
    }
    Ok(sum)
}

/// Reads the header at `phys` and verifies its length bounds and the whole table's checksum.
///
/// `min_len` is the smallest length the table type allows (at least the header).
pub(crate) fn load_table(mem: &dyn PhysMemory, phys: u64, min_len: usize) -> Result<SdtHeader, AcpiError> {
    let header: SdtHeader = read_obj(mem, phys)?;
    let length = header.length.get();
    if (length as usize) < min_len.max(SDT_HEADER_LEN) || length > MAX_TABLE_LEN {
        return Err(AcpiError::BadLength { length });
    }
    if sum_region(mem, phys, length)? != 0 {
        return Err(AcpiError::BadChecksum);
    }
    Ok(header)
}

/// Validates `table` before a parser reads it: the header at `table.phys` must carry one of
/// `signatures`, a length of at least `min_len` equal to `table.length` (callers may have mapped
/// exactly that much), and a valid checksum.
pub(crate) fn open_table<'a>(
    mem: &'a dyn PhysMemory,
    table: TableRef,
    signatures: &[[u8; 4]],
    min_len: usize,
) -> Result<TableReader<'a>, AcpiError> {
    let header: SdtHeader = read_obj(mem, table.phys)?;
    if !signatures.contains(&header.signature) {
        return Err(AcpiError::BadSignature);
    }
    if header.length.get() != table.length {
        return Err(AcpiError::BadLength { length: header.length.get() });
    }
    load_table(mem, table.phys, min_len)?;
    Ok(TableReader { mem, phys: table.phys, len: table.length })
}

/// Bounds-checked reads inside one validated table.
pub(crate) struct TableReader<'a> {
    mem: &'a dyn PhysMemory,
    phys: u64,
    len: u32,
}

impl TableReader<'_> {
    /// The table's length in bytes.
    pub(crate) fn len(&self) -> u32 {
        self.len
    }

    /// Reads `buf.len()` bytes at `offset` from the start of the table; fails with
    /// [`AcpiError::Truncated`] if that would run past the table's end.
    pub(crate) fn read(&self, offset: u32, buf: &mut [u8]) -> Result<(), AcpiError> {
        let end = u64::from(offset) + buf.len() as u64;
        if end > u64::from(self.len) {
            return Err(AcpiError::Truncated);
        }
        let addr = self.phys.checked_add(u64::from(offset)).ok_or(AcpiError::AddressOverflow)?;
        read_exact(self.mem, addr, buf)
    }
}
