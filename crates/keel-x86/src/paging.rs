//! Guest page-table walks: translating a guest linear address to a guest-physical address as the
//! guest's own MMU would.
//!
//! Every pointer a guest passes in a hypercall is a guest *virtual* (linear) address. Before keel
//! can copy from or to it, it walks the guest's page tables with [`translate`], page by page
//! ([`split_by_page`]), and a failed walk becomes the page fault the guest would have taken.
//!
//! All paging modes are implemented: paging off (identity), 32-bit paging (with 4 MiB pages under
//! CR4.PSE, including PSE-36 high address bits), PAE, 4-level and 5-level (CR4.LA57) paging, with
//! 2 MiB and 1 GiB pages, reserved-bit checks against the guest's physical-address width, NX
//! (EFER.NXE) and CR0.WP for supervisor writes. The walk reads the guest's tables through
//! [`GuestPhys`]; their contents are untrusted and nothing here panics on them.
//!
//! Choices where the architecture leaves room or the brief was silent:
//! - **Accessed and dirty bits are set**, as the processor (and Xen's emulated walks) would: on
//!   a successful walk every entry used gets A, and the leaf gets D on a write. A page keel writes
//!   on the guest's behalf must not look clean to the guest's memory manager. Updates are
//!   compare-and-exchange on the entry as it was read; if the guest changed the entry meanwhile,
//!   it is left alone and the translation from the walk stands (the guest owns the race, as with
//!   a TLB). A failed update (read-only memory) is ignored, as a processor's write to ROM is.
//!   Nothing is set on a walk that faults. PAE PDPTEs have no A bit.
//! - **SMEP, SMAP and protection keys are not enforced.** keel's accesses are on the guest
//!   kernel's behalf with explicit user/supervisor intent; CR4.SMEP only decides whether a fetch
//!   fault reports the I/D bit, as on hardware.
//! - PAE PDPTEs are read from memory on every walk, not cached at CR3 load, and a reserved bit in
//!   one is reported as a page fault with the RSVD bit (where a processor without nested paging
//!   would have raised `#GP` at the CR3 write).
//! - 1 GiB pages and PSE-36 are assumed to be available (QEMU's and every 64-bit processor's).
//! - Outside long mode linear addresses are 32 bits; higher bits of `linear` are ignored (the
//!   processor's address arithmetic wraps at 4 GiB there).
//! - A non-canonical address in long mode is [`WalkError::NonCanonical`]: the processor raises
//!   `#GP(0)` (or `#SS(0)` for a stack access), not a page fault.

use keel_mm::{Gpa, PAGE_SIZE};

/// Guest-physical memory could not be accessed at an address (not backed by RAM, or outside the
/// guest).
#[derive(Copy, Clone, Debug, Eq, PartialEq, Hash)]
pub struct GuestMemError;

/// A guest's physical memory as the page-table walker needs it: reads of entries and atomic
/// updates of their accessed and dirty bits.
///
/// Addresses are naturally aligned (4-byte entries at multiples of 4, 8-byte at multiples of 8).
pub trait GuestPhys {
    /// Reads the little-endian `u32` at `gpa`.
    fn read_u32(&self, gpa: Gpa) -> Result<u32, GuestMemError>;
    /// Reads the little-endian `u64` at `gpa`.
    fn read_u64(&self, gpa: Gpa) -> Result<u64, GuestMemError>;
    /// Atomically replaces the `u32` at `gpa` with `new` if it still holds `current`. Returns
    /// whether it did.
    fn compare_exchange_u32(&self, gpa: Gpa, current: u32, new: u32) -> Result<bool, GuestMemError>;
    /// Atomically replaces the `u64` at `gpa` with `new` if it still holds `current`. Returns
    /// whether it did.
    fn compare_exchange_u64(&self, gpa: Gpa, current: u64, new: u64) -> Result<bool, GuestMemError>;
}

/// CR0.WP: supervisor writes honour read-only pages.
pub const CR0_WP: u64 = 1 << 16;
/// CR0.PG: paging enabled.
pub const CR0_PG: u64 = 1 << 31;
/// CR4.PSE: 4 MiB pages in 32-bit paging.
pub const CR4_PSE: u64 = 1 << 4;
/// CR4.PAE: 64-bit page-table entries.
pub const CR4_PAE: u64 = 1 << 5;
/// CR4.LA57: 5-level paging in long mode.
pub const CR4_LA57: u64 = 1 << 12;
/// CR4.SMEP: supervisor-mode execution prevention (only affects the I/D error-code bit here).
pub const CR4_SMEP: u64 = 1 << 20;
/// EFER.NXE: the NX bit exists.
pub const EFER_NXE: u64 = 1 << 11;
/// EFER.LMA: long mode active.
pub const EFER_LMA: u64 = 1 << 10;

/// Page-fault error code: the fault was a protection violation or reserved bit, not a missing page.
pub const PFEC_PRESENT: u32 = 1 << 0;
/// Page-fault error code: the access was a write.
pub const PFEC_WRITE: u32 = 1 << 1;
/// Page-fault error code: the access was a user-mode (CPL 3) access.
pub const PFEC_USER: u32 = 1 << 2;
/// Page-fault error code: a reserved bit was set in a paging-structure entry.
pub const PFEC_RESERVED: u32 = 1 << 3;
/// Page-fault error code: the access was an instruction fetch (reported only with NX or SMEP).
pub const PFEC_FETCH: u32 = 1 << 4;

/// The guest state that decides how linear addresses translate, taken from its registers.
#[derive(Copy, Clone, Debug, Eq, PartialEq, Hash)]
pub struct PagingMode {
    /// CR0 (PG, WP are used).
    pub cr0: u64,
    /// CR3 (the root table's address).
    pub cr3: u64,
    /// CR4 (PSE, PAE, LA57, SMEP are used).
    pub cr4: u64,
    /// EFER (LMA, NXE are used).
    pub efer: u64,
    /// The guest's physical-address width in bits (CPUID 8000_0008h, EAX bits 7:0); entry bits from
    /// here to bit 51 are reserved. Clamped to 32..=52.
    pub maxphyaddr: u8,
}

/// The paging mode a [`PagingMode`] selects.
#[derive(Copy, Clone, Debug, Eq, PartialEq, Hash)]
pub enum PagingKind {
    /// CR0.PG = 0: linear addresses are physical.
    Off,
    /// 32-bit paging: two levels of 4-byte entries.
    Bits32,
    /// PAE paging: a 4-entry PDPT, then two levels of 8-byte entries.
    Pae,
    /// 4-level paging (long mode).
    Level4,
    /// 5-level paging (long mode with CR4.LA57).
    Level5,
}

impl PagingMode {
    /// Which paging mode the registers select. Long mode is EFER.LMA (the processor only sets it
    /// with paging and PAE on).
    pub const fn kind(&self) -> PagingKind {
        if self.cr0 & CR0_PG == 0 {
            PagingKind::Off
        } else if self.efer & EFER_LMA != 0 {
            if self.cr4 & CR4_LA57 != 0 {
                PagingKind::Level5
            } else {
                PagingKind::Level4
            }
        } else if self.cr4 & CR4_PAE != 0 {
            PagingKind::Pae
        } else {
            PagingKind::Bits32
        }
    }

    /// True if the NX bit exists (EFER.NXE with 8-byte entries).
    const fn nx_enabled(&self) -> bool {
        self.efer & EFER_NXE != 0 && !matches!(self.kind(), PagingKind::Off | PagingKind::Bits32)
    }

    /// Physical-address width in bits, clamped to what the architecture allows.
    const fn phys_bits(&self) -> u32 {
        let bits = self.maxphyaddr as u32;
        if bits < 32 {
            32
        } else if bits > 52 {
            52
        } else {
            bits
        }
    }
}

/// The kind of access being translated.
#[derive(Copy, Clone, Debug, Default, Eq, PartialEq, Hash)]
pub struct Access {
    /// A write (otherwise a read or fetch).
    pub write: bool,
    /// A user-mode (CPL 3) access; otherwise supervisor.
    pub user: bool,
    /// An instruction fetch.
    pub fetch: bool,
}

impl Access {
    /// A supervisor read.
    pub const READ: Self = Self { write: false, user: false, fetch: false };
    /// A supervisor write.
    pub const WRITE: Self = Self { write: true, user: false, fetch: false };
    /// A supervisor instruction fetch.
    pub const FETCH: Self = Self { write: false, user: false, fetch: true };

    /// The same access made from user mode (CPL 3).
    pub const fn user(self) -> Self {
        Self { user: true, ..self }
    }
}

/// Why a linear address did not translate.
#[derive(Copy, Clone, Debug, Eq, PartialEq, Hash)]
pub enum WalkError {
    /// The access would raise `#PF` with this error code (see the `PFEC_*` constants); the
    /// faulting address for CR2 is the linear address translated.
    PageFault {
        /// The error code the processor would push.
        error_code: u32,
    },
    /// Not canonical for the current paging mode: the processor raises `#GP(0)` (`#SS(0)` for
    /// stack accesses).
    NonCanonical,
    /// A paging-structure entry could not be read: the guest's tables point outside its memory.
    BadGpa {
        /// Address of the entry.
        gpa: Gpa,
    },
}

// Bits of paging-structure entries.
const PTE_P: u64 = 1 << 0;
const PTE_RW: u64 = 1 << 1;
const PTE_US: u64 = 1 << 2;
const PTE_A: u64 = 1 << 5;
const PTE_D: u64 = 1 << 6;
const PTE_PS: u64 = 1 << 7;
const PTE_NX: u64 = 1 << 63;

/// Bits `hi..=lo` set (`hi >= lo`, both < 64).
const fn bits(hi: u32, lo: u32) -> u64 {
    (u64::MAX >> (63 - hi)) & (u64::MAX << lo)
}

/// Translates guest linear address `linear` for `access`, as the processor would in `mode`.
///
/// On success, accessed (and for writes dirty) bits are set in the entries used; see the module
/// documentation for this and the other choices made.
pub fn translate(mem: &dyn GuestPhys, mode: &PagingMode, linear: u64, access: Access) -> Result<Gpa, WalkError> {
    let mut walk = Walk { mem, mode, access, used: [Used::NONE; 5], n_used: 0 };
    let gpa = match mode.kind() {
        PagingKind::Off => return Ok(Gpa::new(linear & 0xffff_ffff)),
        PagingKind::Bits32 => walk.bits32(linear & 0xffff_ffff)?,
        PagingKind::Pae => walk.wide(linear & 0xffff_ffff, 3)?,
        PagingKind::Level4 => walk.wide(linear, 4)?,
        PagingKind::Level5 => walk.wide(linear, 5)?,
    };
    walk.set_accessed_dirty();
    Ok(gpa)
}

/// A paging-structure entry a walk used, to be marked accessed (and dirty) once it succeeds.
#[derive(Copy, Clone)]
struct Used {
    gpa: Gpa,
    value: u64,
    /// A 4-byte entry (32-bit paging).
    narrow: bool,
    leaf: bool,
}

impl Used {
    const NONE: Self = Self { gpa: Gpa::new(0), value: 0, narrow: false, leaf: false };
}

/// One translation in progress.
struct Walk<'a> {
    mem: &'a dyn GuestPhys,
    mode: &'a PagingMode,
    access: Access,
    used: [Used; 5],
    n_used: usize,
}

impl Walk<'_> {
    /// The page fault for this access; `present` for protection and reserved-bit faults.
    fn fault(&self, present: bool, reserved: bool) -> WalkError {
        let mut error_code = 0;
        if present {
            error_code |= PFEC_PRESENT;
        }
        if reserved {
            error_code |= PFEC_RESERVED;
        }
        if self.access.write {
            error_code |= PFEC_WRITE;
        }
        if self.access.user {
            error_code |= PFEC_USER;
        }
        if self.access.fetch && (self.mode.nx_enabled() || self.mode.cr4 & CR4_SMEP != 0) {
            error_code |= PFEC_FETCH;
        }
        WalkError::PageFault { error_code }
    }

    fn record(&mut self, gpa: Gpa, value: u64, narrow: bool, leaf: bool) {
        if let Some(slot) = self.used.get_mut(self.n_used) {
            *slot = Used { gpa, value, narrow, leaf };
            self.n_used += 1;
        }
    }

    /// Checks the access against the combined permissions of the entries walked.
    fn check_permissions(&self, writable: bool, user: bool, no_exec: bool) -> Result<(), WalkError> {
        let a = self.access;
        let wp = self.mode.cr0 & CR0_WP != 0;
        let denied = (a.user && !user) || (a.write && !writable && (a.user || wp)) || (a.fetch && no_exec);
        if denied {
            Err(self.fault(true, false))
        } else {
            Ok(())
        }
    }

    /// 32-bit paging: a page directory and page tables of 4-byte entries.
    fn bits32(&mut self, linear: u64) -> Result<Gpa, WalkError> {
        let pde_gpa = Gpa::new((self.mode.cr3 & 0xffff_f000) + ((linear >> 22) & 0x3ff) * 4);
        let pde = u64::from(self.mem.read_u32(pde_gpa).map_err(|_| WalkError::BadGpa { gpa: pde_gpa })?);
        if pde & PTE_P == 0 {
            return Err(self.fault(false, false));
        }
        if pde & PTE_PS != 0 && self.mode.cr4 & CR4_PSE != 0 {
            // 4 MiB page; PDE bits 20:13 hold physical-address bits 39:32 (PSE-36), those at or
            // above the physical-address width are reserved, as is bit 21.
            let high_bits = self.mode.phys_bits().min(40) - 32;
            let reserved = bits(21, 21) | (bits(20, 13) & !bits(12 + high_bits, 0));
            if pde & reserved != 0 {
                return Err(self.fault(true, true));
            }
            self.check_permissions(pde & PTE_RW != 0, pde & PTE_US != 0, false)?;
            self.record(pde_gpa, pde, true, true);
            let base = (pde & 0xffc0_0000) | (((pde >> 13) & 0xff) << 32);
            return Ok(Gpa::new(base | (linear & 0x3f_ffff)));
        }
        self.record(pde_gpa, pde, true, false);
        let pte_gpa = Gpa::new((pde & 0xffff_f000) + ((linear >> 12) & 0x3ff) * 4);
        let pte = u64::from(self.mem.read_u32(pte_gpa).map_err(|_| WalkError::BadGpa { gpa: pte_gpa })?);
        if pte & PTE_P == 0 {
            return Err(self.fault(false, false));
        }
        let writable = pde & pte & PTE_RW != 0;
        let user = pde & pte & PTE_US != 0;
        self.check_permissions(writable, user, false)?;
        self.record(pte_gpa, pte, true, true);
        Ok(Gpa::new((pte & 0xffff_f000) | (linear & 0xfff)))
    }

    /// PAE (`levels` = 3), 4-level and 5-level paging: 8-byte entries.
    fn wide(&mut self, linear: u64, levels: u32) -> Result<Gpa, WalkError> {
        let pae = levels == 3;
        if !pae {
            // Canonical: bits 63..=47 (or 56) all equal.
            let width = 12 + 9 * levels;
            let shift = 64 - width;
            if (((linear << shift) as i64) >> shift) as u64 != linear {
                return Err(WalkError::NonCanonical);
            }
        }
        let phys_bits = self.mode.phys_bits();
        let addr_mask = bits(phys_bits - 1, 12);
        let nx = self.mode.nx_enabled();
        // Reserved in every entry: physical-address bits beyond the width (and in PAE paging
        // bits 62:52 too, which long mode leaves to software), and NX when NX is off.
        let mut reserved_all = if pae { bits(62, phys_bits) } else { bits(51, phys_bits) };
        if !nx {
            reserved_all |= PTE_NX;
        }

        let mut table = if pae { self.mode.cr3 & 0xffff_ffe0 } else { self.mode.cr3 & addr_mask };
        let (mut writable, mut user, mut no_exec) = (true, true, false);
        for level in (1..=levels).rev() {
            let shift = 12 + 9 * (level - 1);
            let index = (linear >> shift) & if pae && level == 3 { 3 } else { 0x1ff };
            let gpa = Gpa::new(table + index * 8);
            let entry = self.mem.read_u64(gpa).map_err(|_| WalkError::BadGpa { gpa })?;
            if entry & PTE_P == 0 {
                return Err(self.fault(false, false));
            }
            let pdpte = pae && level == 3;
            let large = entry & PTE_PS != 0 && (level == 2 || (level == 3 && !pae));
            let reserved = if pdpte {
                // PAE PDPTEs: no R/W, U/S, A, D, PS or NX bits.
                bits(63, phys_bits) | bits(8, 5) | bits(2, 1)
            } else {
                reserved_all
                    | match level {
                        4 | 5 => PTE_PS,
                        3 if large => bits(29, 13),
                        2 if large => bits(20, 13),
                        _ => 0,
                    }
            };
            if entry & reserved != 0 {
                return Err(self.fault(true, true));
            }
            if !pdpte {
                writable &= entry & PTE_RW != 0;
                user &= entry & PTE_US != 0;
                no_exec |= nx && entry & PTE_NX != 0;
            }
            if level == 1 || large {
                self.check_permissions(writable, user, no_exec)?;
                self.record(gpa, entry, false, true);
                let offset_mask = bits(shift - 1, 0);
                return Ok(Gpa::new((entry & addr_mask & !offset_mask) | (linear & offset_mask)));
            }
            if !pdpte {
                self.record(gpa, entry, false, false);
            }
            table = entry & addr_mask;
        }
        // Level 1 always returns above; reaching here means `levels` was 0.
        Err(self.fault(false, false))
    }

    /// Sets the accessed bit in every entry used and the dirty bit in the leaf on a write.
    fn set_accessed_dirty(&self) {
        for u in self.used.iter().take(self.n_used) {
            let mut new = u.value | PTE_A;
            if u.leaf && self.access.write {
                new |= PTE_D;
            }
            if new == u.value {
                continue;
            }
            // A lost race (the guest changed the entry) or unwritable memory leaves the entry as
            // it is; see the module documentation.
            let _ = if u.narrow {
                // 4-byte entries were widened from u32, so the truncation is exact.
                self.mem.compare_exchange_u32(u.gpa, u.value as u32, new as u32)
            } else {
                self.mem.compare_exchange_u64(u.gpa, u.value, new)
            };
        }
    }
}

/// Splits the guest buffer `linear..linear + len` into pieces that do not cross a 4 KiB page
/// boundary, each to be translated on its own: yields `(linear address, length)` in order.
///
/// Addresses wrap around at 2^64; the lengths always add up to `len`. An empty buffer yields
/// nothing.
pub fn split_by_page(linear: u64, len: usize) -> PageChunks {
    PageChunks { next: linear, remaining: len }
}

/// The iterator [`split_by_page`] returns.
#[derive(Clone, Debug, Eq, PartialEq)]
pub struct PageChunks {
    next: u64,
    remaining: usize,
}

impl Iterator for PageChunks {
    type Item = (u64, usize);

    fn next(&mut self) -> Option<(u64, usize)> {
        if self.remaining == 0 {
            return None;
        }
        let room = PAGE_SIZE - (self.next & (PAGE_SIZE - 1));
        let len = usize::try_from(room).map_or(self.remaining, |room| room.min(self.remaining));
        let chunk = (self.next, len);
        // `len` is at most a page, so it fits in u64.
        self.next = self.next.wrapping_add(len as u64);
        self.remaining -= len;
        Some(chunk)
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        if self.remaining == 0 {
            return (0, Some(0));
        }
        let page = PAGE_SIZE as usize;
        let first = page - (self.next & (PAGE_SIZE - 1)) as usize;
        let n = if self.remaining <= first { 1 } else { 1 + (self.remaining - first).div_ceil(page) };
        (n, Some(n))
    }
}

impl ExactSizeIterator for PageChunks {}

impl core::iter::FusedIterator for PageChunks {}

#[cfg(test)]
mod tests;
