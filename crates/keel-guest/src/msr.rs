//! The MSRs a guest sees. keel intercepts every MSR except the few whose guest value the
//! hardware switches anyway (syscall MSRs, FS/GS bases, PAT); this module decides what each
//! intercepted access does: answer from emulated state (MTRRs, AMD model-specific fixed
//! values), refuse with #GP (what Xen does for an MSR it does not expose), or hand the access
//! to the part of keel that owns it (EFER, the local APIC, the TSC, the hypercall page).

use crate::cpuid::HYPERCALL_MSR;

/// An MSR whose access the caller performs itself.
#[derive(Clone, Copy, Debug, Eq, PartialEq)]
pub enum Owner {
    /// IA32_EFER (the vCPU's hardware state).
    Efer,
    /// IA32_APIC_BASE (the vLAPIC).
    ApicBase,
    /// The x2APIC range 0x800-0x8FF (the vLAPIC; #GP unless in x2APIC mode).
    X2apic,
    /// IA32_TSC (the vCPU's TSC offset).
    Tsc,
    /// Xen's hypercall-page MSR (write only: fill the page at this guest-physical address).
    HypercallPage,
}

/// What a read yields.
#[derive(Clone, Copy, Debug, Eq, PartialEq)]
pub enum Read {
    /// This value.
    Value(u64),
    /// Inject #GP(0).
    Gp,
    /// The caller answers.
    Owned(Owner),
}

/// What a write does.
#[derive(Clone, Copy, Debug, Eq, PartialEq)]
pub enum Write {
    /// Done (state updated or the write ignored).
    Done,
    /// Inject #GP(0).
    Gp,
    /// The caller performs it.
    Owned(Owner),
}

const MTRR_CAP: u32 = 0xfe;
const MTRR_PHYS_BASE0: u32 = 0x200;
const MTRR_FIX_64K: u32 = 0x250;
const MTRR_FIX_16K_80000: u32 = 0x258;
const MTRR_FIX_16K_A0000: u32 = 0x259;
const MTRR_FIX_4K_C0000: u32 = 0x268;
const MTRR_DEF_TYPE: u32 = 0x2ff;
const PATCH_LEVEL: u32 = 0x8b;
const HWCR: u32 = 0xc001_0015;
const DE_CFG: u32 = 0xc001_1029;

/// Variable MTRR pairs offered (MTRRcap.VCNT).
pub const VAR_MTRRS: usize = 8;
/// MTRRcap: VCNT = 8, fixed ranges, write-combining.
pub const MTRR_CAP_VALUE: u64 = VAR_MTRRS as u64 | (1 << 8) | (1 << 10);
/// MTRRdefType at reset for a PVH guest: enabled, default type write-back (Xen's 0x806).
pub const MTRR_DEF_TYPE_RESET: u64 = 0x806;

/// A vCPU's emulated MSR state.
#[derive(Clone, Debug)]
pub struct MsrState {
    /// MTRRdefType.
    pub mtrr_def_type: u64,
    /// Fixed-range MTRRs in the order 0x250, 0x258, 0x259, 0x268..0x26f.
    pub mtrr_fixed: [u64; 11],
    /// Variable MTRRs (base, mask).
    pub mtrr_var: [(u64, u64); VAR_MTRRS],
}

impl Default for MsrState {
    fn default() -> Self {
        Self {
            mtrr_def_type: MTRR_DEF_TYPE_RESET,
            mtrr_fixed: [0x0606_0606_0606_0606; 11],
            mtrr_var: [(0, 0); VAR_MTRRS],
        }
    }
}

fn fixed_index(msr: u32) -> Option<usize> {
    match msr {
        MTRR_FIX_64K => Some(0),
        MTRR_FIX_16K_80000 => Some(1),
        MTRR_FIX_16K_A0000 => Some(2),
        m @ MTRR_FIX_4K_C0000..=0x26f => Some(3 + (m - MTRR_FIX_4K_C0000) as usize),
        _ => None,
    }
}

/// Memory types an MTRR may hold: UC 0, WC 1, WT 4, WP 5, WB 6.
fn valid_type(t: u64) -> bool {
    matches!(t, 0 | 1 | 4 | 5 | 6)
}

impl MsrState {
    /// RDMSR `msr`.
    pub fn read(&self, msr: u32) -> Read {
        match msr {
            0x10 => Read::Owned(Owner::Tsc),
            0x1b => Read::Owned(Owner::ApicBase),
            0x800..=0x8ff => Read::Owned(Owner::X2apic),
            0xc000_0080 => Read::Owned(Owner::Efer),
            PATCH_LEVEL => Read::Value(0),
            MTRR_CAP => Read::Value(MTRR_CAP_VALUE),
            MTRR_DEF_TYPE => Read::Value(self.mtrr_def_type),
            m if fixed_index(m).is_some() => Read::Value(self.mtrr_fixed[fixed_index(m).unwrap_or(0)]),
            m @ MTRR_PHYS_BASE0..=0x20f if ((m - MTRR_PHYS_BASE0) / 2) < VAR_MTRRS as u32 => {
                let (base, mask) = self.mtrr_var[((m - MTRR_PHYS_BASE0) / 2) as usize];
                Read::Value(if m % 2 == 0 { base } else { mask })
            }
            HWCR => Read::Value(1 << 24),  // TscFreqSel: the TSC runs at the P0 frequency
            DE_CFG => Read::Value(1 << 1), // LFENCE is dispatch-serialising
            _ => Read::Gp,
        }
    }

    /// WRMSR `msr` with `value`.
    pub fn write(&mut self, msr: u32, value: u64) -> Write {
        match msr {
            0x10 => Write::Owned(Owner::Tsc),
            0x1b => Write::Owned(Owner::ApicBase),
            0x800..=0x8ff => Write::Owned(Owner::X2apic),
            0xc000_0080 => Write::Owned(Owner::Efer),
            HYPERCALL_MSR => {
                // Low 12 bits: the page index, and keel has one page.
                if value & 0xfff == 0 {
                    Write::Owned(Owner::HypercallPage)
                } else {
                    Write::Gp
                }
            }
            MTRR_DEF_TYPE => {
                // type (bits 0-7), FE (10), E (11); the rest reserved.
                if value & !0xcff != 0 || !valid_type(value & 0xff) {
                    return Write::Gp;
                }
                self.mtrr_def_type = value;
                Write::Done
            }
            m if fixed_index(m).is_some() => {
                if (0..8).any(|i| !valid_type((value >> (8 * i)) & 0xff)) {
                    return Write::Gp;
                }
                self.mtrr_fixed[fixed_index(m).unwrap_or(0)] = value;
                Write::Done
            }
            m @ MTRR_PHYS_BASE0..=0x20f if ((m - MTRR_PHYS_BASE0) / 2) < VAR_MTRRS as u32 => {
                let pair = &mut self.mtrr_var[((m - MTRR_PHYS_BASE0) / 2) as usize];
                if m % 2 == 0 {
                    if !valid_type(value & 0xff) || value & 0xf00 != 0 {
                        return Write::Gp;
                    }
                    pair.0 = value;
                } else {
                    if value & 0x7ff != 0 {
                        return Write::Gp;
                    }
                    pair.1 = value;
                }
                Write::Done
            }
            DE_CFG | PATCH_LEVEL => Write::Done, // writes ignored, as on Xen
            _ => Write::Gp,
        }
    }
}

/// EFER bits a guest may set: SCE (0), LME (8), LMA (10, hardware-managed), NXE (11),
/// FFXSR (14). SVME (12) is refused: keel offers no nested virtualization.
pub const EFER_GUEST_WRITABLE: u64 = (1 << 0) | (1 << 8) | (1 << 10) | (1 << 11) | (1 << 14);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn owned_msrs_go_to_their_owner() {
        let m = MsrState::default();
        assert_eq!(m.read(0xc000_0080), Read::Owned(Owner::Efer));
        assert_eq!(m.read(0x1b), Read::Owned(Owner::ApicBase));
        assert_eq!(m.read(0x830), Read::Owned(Owner::X2apic));
        assert_eq!(m.read(0x10), Read::Owned(Owner::Tsc));
    }

    #[test]
    fn hypercall_page_msr_is_write_only_and_page_aligned() {
        let mut m = MsrState::default();
        assert_eq!(m.read(HYPERCALL_MSR), Read::Gp);
        assert_eq!(m.write(HYPERCALL_MSR, 0x10_0000), Write::Owned(Owner::HypercallPage));
        assert_eq!(m.write(HYPERCALL_MSR, 0x10_0001), Write::Gp);
    }

    #[test]
    fn mtrrs_store_valid_values_and_refuse_bad_ones() {
        let mut m = MsrState::default();
        assert_eq!(m.read(MTRR_DEF_TYPE), Read::Value(0x806));
        assert_eq!(m.read(MTRR_CAP), Read::Value(0x508));
        assert_eq!(m.write(MTRR_DEF_TYPE, 0xc00), Write::Done);
        assert_eq!(m.read(MTRR_DEF_TYPE), Read::Value(0xc00));
        assert_eq!(m.write(MTRR_DEF_TYPE, 0x802), Write::Gp); // type 2 is reserved
        assert_eq!(m.write(0x202, 0x8000_0006), Write::Done);
        assert_eq!(m.write(0x203, 0xffff_8000_0800), Write::Done);
        assert_eq!(m.read(0x202), Read::Value(0x8000_0006));
        assert_eq!(m.read(0x203), Read::Value(0xffff_8000_0800));
        assert_eq!(m.write(0x268, 0x0606_0606_0606_0603), Write::Gp);
        assert_eq!(m.write(0x26f, 0x0505_0505_0505_0505), Write::Done);
        assert_eq!(m.read(0x26f), Read::Value(0x0505_0505_0505_0505));
        assert_eq!(m.read(0x200 + 2 * VAR_MTRRS as u32), Read::Gp);
    }

    #[test]
    fn unknown_and_hidden_msrs_are_gp() {
        let mut m = MsrState::default();
        for msr in [0x48, 0x49, 0x179, 0x6e0, 0xc000_0103, 0xc001_0140, 0xc001_0000, 0x4b56_4d00, 0xdead_beef] {
            assert_eq!(m.read(msr), Read::Gp, "{msr:#x}");
            assert_eq!(m.write(msr, 0), Write::Gp, "{msr:#x}");
        }
        assert_eq!(m.read(HWCR), Read::Value(1 << 24));
        assert_eq!(m.write(DE_CFG, 2), Write::Done);
    }
}
