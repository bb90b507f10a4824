//! The host platform as ACPI describes it: where the RSDP is, the CPUs and I/O APICs (MADT),
//! and the fixed hardware for power-off and reset (FADT, `\_S5`). Parsing is done by the
//! host-tested `keel-acpi` crate; this module feeds it memory through the direct map and
//! keeps what it found.

use keel_acpi::{AcpiWarning, Fadt, Madt, PhysMemory};
use keel_boot::bootinfo::AcpiRoot;
use spin::Once;

use super::paging;

/// Physical memory as the ACPI parser reads it: the direct map, bounded.
pub struct DirectMapMemory {
    /// Reads must end below this physical address (the direct map's end).
    pub limit: u64,
}

impl PhysMemory for DirectMapMemory {
    fn read(&self, phys: u64, buf: &mut [u8]) -> Result<(), ()> {
        let end = phys.checked_add(buf.len() as u64).ok_or(())?;
        if end > self.limit {
            return Err(());
        }
        // SAFETY: [phys, end) lies inside the direct map (checked above), which maps all of it
        // readable; firmware tables are plain memory.
        unsafe { core::ptr::copy_nonoverlapping(paging::phys_to_virt(phys) as *const u8, buf.as_mut_ptr(), buf.len()) };
        Ok(())
    }
}

/// What keel learned from the host's ACPI tables.
pub struct Platform {
    /// OEM id of the RSDP.
    pub oem_id: [u8; 6],
    /// The MADT, if there is one.
    pub madt: Option<Madt>,
    /// The FADT, if there is one.
    pub fadt: Option<Fadt>,
    /// SLP_TYPa and SLP_TYPb for S5 (soft off), from the DSDT.
    pub s5: Option<(u8, u8)>,
}

static PLATFORM: Once<Platform> = Once::new();

/// The platform, once `init` ran.
pub fn get() -> Option<&'static Platform> {
    PLATFORM.get()
}

fn ascii(bytes: &[u8]) -> &str {
    core::str::from_utf8(bytes).unwrap_or("?").trim_end()
}

/// Find and read the ACPI tables: the RSDP from the boot loader when it gave one, else from a
/// scan of the BIOS areas. Never fails: a machine without usable ACPI gets an empty platform
/// (one CPU, no power-off) and a warning.
pub fn init(root: Option<&AcpiRoot>, mem: &DirectMapMemory) -> &'static Platform {
    PLATFORM.call_once(|| {
        let empty = Platform { oem_id: *b"      ", madt: None, fadt: None, s5: None };
        let rsdp = match root {
            Some(AcpiRoot::Copy { bytes, len }) => keel_acpi::parse_rsdp(&bytes[..(*len).min(bytes.len())]),
            Some(AcpiRoot::Address(pa)) => read_rsdp(mem, *pa),
            None => match keel_acpi::find_rsdp_bios(mem) {
                Some(pa) => read_rsdp(mem, pa),
                None => {
                    log::warn!("acpi: no RSDP from the boot loader or in the BIOS areas: running on one CPU, no ACPI power-off");
                    return empty;
                }
            },
        };
        let rsdp = match rsdp {
            Ok(r) => r,
            Err(e) => {
                log::warn!("acpi: RSDP unusable ({e}): running on one CPU, no ACPI power-off");
                return empty;
            }
        };
        let tables = match keel_acpi::read_tables(mem, &rsdp, &mut |w: AcpiWarning| log::warn!("acpi: {w}")) {
            Ok(t) => t,
            Err(e) => {
                log::warn!("acpi: root table unusable ({e}): running on one CPU, no ACPI power-off");
                return empty;
            }
        };
        log::info!("acpi: RSDP revision {} (OEM '{}'), {} tables", rsdp.revision, ascii(&rsdp.oem_id), tables.len());
        let madt = tables.find(b"APIC").and_then(|t| {
            keel_acpi::parse_madt(mem, t, &mut |w: AcpiWarning| log::warn!("acpi: MADT: {w}"))
                .map_err(|e| log::warn!("acpi: MADT unusable ({e})"))
                .ok()
        });
        let fadt = tables
            .find(b"FACP")
            .and_then(|t| keel_acpi::parse_fadt(mem, t).map_err(|e| log::warn!("acpi: FADT unusable ({e})")).ok());
        let s5 = tables.find(b"DSDT").and_then(|dsdt| {
            keel_acpi::find_s5(mem, dsdt).map_err(|e| log::warn!("acpi: no S5 sleep type ({e}): no ACPI power-off")).ok()
        });
        Platform { oem_id: rsdp.oem_id, madt, fadt, s5 }
    })
}

fn read_rsdp(mem: &DirectMapMemory, pa: u64) -> Result<keel_acpi::Rsdp, keel_acpi::AcpiError> {
    let mut buf = [0u8; 36];
    // A revision-0 RSDP is only 20 bytes; read what is there.
    if mem.read(pa, &mut buf).is_err() {
        mem.read(pa, &mut buf[..20]).map_err(|_| keel_acpi::AcpiError::Unreadable { phys: pa })?;
    }
    keel_acpi::parse_rsdp(&buf)
}
