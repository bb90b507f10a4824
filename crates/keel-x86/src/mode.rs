//! The processor mode an instruction is decoded in.
//!
//! The same bytes mean different instructions in different modes: `48` is `DEC EAX` in 32-bit code
//! and a REX prefix in 64-bit code, `C4` is `LES` or a VEX prefix, `66` selects 16- or 32-bit
//! operands depending on the code segment's default. [`CpuMode`] captures exactly the state that
//! decides this, so the decoder never has to look at guest registers itself.

/// How the processor interprets instruction bytes: the default operand and address size, and
/// which encodings exist.
///
/// Use [`CpuMode::from_state`] to derive it from a guest's control registers and CS descriptor.
#[derive(Copy, Clone, Debug, Eq, PartialEq, Hash)]
pub enum CpuMode {
    /// Real-address mode (CR0.PE = 0), and virtual-8086 mode: 16-bit defaults, no VEX, EVEX or
    /// XOP (`C4`/`C5`/`62`/`8F` are always `LES`/`LDS`/`BOUND`/`POP`).
    Real,
    /// Protected mode with a 16-bit code segment (CS.D = 0).
    Protected16,
    /// Protected mode with a 32-bit code segment (CS.D = 1).
    Protected32,
    /// 64-bit mode: long mode active and CS.L = 1.
    Long64,
    /// Compatibility mode with a 32-bit code segment: long mode active, CS.L = 0, CS.D = 1.
    Compat32,
    /// Compatibility mode with a 16-bit code segment: long mode active, CS.L = 0, CS.D = 0.
    Compat16,
}

impl CpuMode {
    /// The mode the processor is in, from CR0.PE, RFLAGS.VM, EFER.LMA and the L and D bits of the
    /// CS descriptor (for SVM: the VMCB's CS attributes).
    ///
    /// Virtual-8086 mode decodes like real mode. In long mode RFLAGS.VM is ignored (the processor
    /// cannot enter virtual-8086 mode there) and CS.L = 1 wins over CS.D (L = D = 1 is reserved and
    /// cannot be loaded).
    pub const fn from_state(cr0_pe: bool, rflags_vm: bool, efer_lma: bool, cs_l: bool, cs_d: bool) -> Self {
        if !cr0_pe {
            Self::Real
        } else if efer_lma {
            match (cs_l, cs_d) {
                (true, _) => Self::Long64,
                (false, true) => Self::Compat32,
                (false, false) => Self::Compat16,
            }
        } else if rflags_vm {
            Self::Real
        } else if cs_d {
            Self::Protected32
        } else {
            Self::Protected16
        }
    }

    /// True in 64-bit mode (REX prefixes exist, default address size is 64 bits).
    pub const fn is_64bit(self) -> bool {
        matches!(self, Self::Long64)
    }

    /// True if the code segment's default operand and address size is 16 bits.
    pub const fn is_16bit_default(self) -> bool {
        matches!(self, Self::Real | Self::Protected16 | Self::Compat16)
    }

    /// True if VEX, EVEX and XOP encodings exist (every mode except real and virtual-8086 mode).
    pub const fn has_vex(self) -> bool {
        !matches!(self, Self::Real)
    }

    /// Operand size in bytes for a "v"-sized operand (2, 4 or 8), given an operand-size prefix
    /// (`66`) and REX.W. REX.W wins over `66`; REX.W is ignored outside 64-bit mode.
    pub(crate) const fn operand_size(self, opsize_prefix: bool, rex_w: bool) -> u8 {
        if self.is_64bit() && rex_w {
            8
        } else if self.is_16bit_default() != opsize_prefix {
            2
        } else {
            4
        }
    }

    /// Address size in bytes (2, 4 or 8), given an address-size prefix (`67`).
    pub(crate) const fn address_size(self, addrsize_prefix: bool) -> u8 {
        match (self.is_64bit(), self.is_16bit_default(), addrsize_prefix) {
            (true, _, false) => 8,
            (true, _, true) => 4,
            (false, true, false) | (false, false, true) => 2,
            (false, true, true) | (false, false, false) => 4,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mode_from_state() {
        use CpuMode::*;
        // (cr0_pe, vm, lma, l, d)
        assert_eq!(CpuMode::from_state(false, false, false, false, true), Real);
        assert_eq!(CpuMode::from_state(true, true, false, false, true), Real);
        assert_eq!(CpuMode::from_state(true, false, false, false, false), Protected16);
        assert_eq!(CpuMode::from_state(true, false, false, false, true), Protected32);
        // CS.L means nothing outside long mode.
        assert_eq!(CpuMode::from_state(true, false, false, true, true), Protected32);
        assert_eq!(CpuMode::from_state(true, false, true, true, false), Long64);
        assert_eq!(CpuMode::from_state(true, false, true, true, true), Long64);
        assert_eq!(CpuMode::from_state(true, true, true, true, false), Long64);
        assert_eq!(CpuMode::from_state(true, false, true, false, true), Compat32);
        assert_eq!(CpuMode::from_state(true, false, true, false, false), Compat16);
    }

    #[test]
    fn operand_sizes() {
        use CpuMode::*;
        for m in [Real, Protected16, Compat16] {
            assert_eq!(m.operand_size(false, false), 2);
            assert_eq!(m.operand_size(true, false), 4);
            assert_eq!(m.operand_size(false, true), 2, "REX.W does not exist in {m:?}");
        }
        for m in [Protected32, Compat32] {
            assert_eq!(m.operand_size(false, false), 4);
            assert_eq!(m.operand_size(true, false), 2);
        }
        assert_eq!(Long64.operand_size(false, false), 4);
        assert_eq!(Long64.operand_size(true, false), 2);
        assert_eq!(Long64.operand_size(false, true), 8);
        assert_eq!(Long64.operand_size(true, true), 8);
    }

    #[test]
    fn address_sizes() {
        use CpuMode::*;
        for m in [Real, Protected16, Compat16] {
            assert_eq!(m.address_size(false), 2);
            assert_eq!(m.address_size(true), 4);
        }
        for m in [Protected32, Compat32] {
            assert_eq!(m.address_size(false), 4);
            assert_eq!(m.address_size(true), 2);
        }
        assert_eq!(Long64.address_size(false), 8);
        assert_eq!(Long64.address_size(true), 4);
    }
}
