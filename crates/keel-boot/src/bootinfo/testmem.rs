//! A fake physical memory for the boot-info tests: a few readable regions,
//! everything else unreadable.

use super::PhysMemory;
use std::vec;
use std::vec::Vec;

/// Readable regions of fake physical memory; gaps are unreadable.
#[derive(Clone, Debug, Default)]
pub(crate) struct FakeMem {
    regions: Vec<(u64, Vec<u8>)>,
}

impl FakeMem {
    pub(crate) fn new() -> Self {
        Self::default()
    }

    /// Adds a zero-filled readable region.
    pub(crate) fn region(mut self, base: u64, len: usize) -> Self {
        self.regions.push((base, vec![0; len]));
        self
    }

    /// Adds a readable region holding `bytes`.
    pub(crate) fn with(mut self, base: u64, bytes: &[u8]) -> Self {
        self.regions.push((base, bytes.to_vec()));
        self
    }

    fn byte_mut(&mut self, addr: u64) -> &mut u8 {
        for (base, data) in &mut self.regions {
            if let Some(i) = addr.checked_sub(*base).and_then(|o| usize::try_from(o).ok()) {
                if i < data.len() {
                    return &mut data[i];
                }
            }
        }
        panic!("test bug: write to unmapped fake address {addr:#x}");
    }

    /// Writes `bytes` at `addr`, which must be inside regions.
    pub(crate) fn write(&mut self, addr: u64, bytes: &[u8]) {
        for (i, b) in bytes.iter().enumerate() {
            *self.byte_mut(addr + i as u64) = *b;
        }
    }

    pub(crate) fn write_u32(&mut self, addr: u64, v: u32) {
        self.write(addr, &v.to_le_bytes());
    }

    pub(crate) fn write_u64(&mut self, addr: u64, v: u64) {
        self.write(addr, &v.to_le_bytes());
    }

    /// Writes a NUL-terminated string.
    pub(crate) fn write_cstr(&mut self, addr: u64, s: &str) {
        self.write(addr, s.as_bytes());
        self.write(addr + s.len() as u64, &[0]);
    }

    fn byte(&self, addr: u64) -> Option<u8> {
        self.regions.iter().find_map(|(base, data)| {
            let i = usize::try_from(addr.checked_sub(*base)?).ok()?;
            data.get(i).copied()
        })
    }
}

impl PhysMemory for FakeMem {
    fn read(&self, phys: u64, buf: &mut [u8]) -> Result<(), ()> {
        for (i, out) in buf.iter_mut().enumerate() {
            let addr = phys.checked_add(i as u64).ok_or(())?;
            *out = self.byte(addr).ok_or(())?;
        }
        Ok(())
    }
}
