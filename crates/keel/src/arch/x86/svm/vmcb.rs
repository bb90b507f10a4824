//! The VMCB: AMD's virtual machine control block, one 4 KiB page per vCPU.
//!
//! The layout is the AMD64 Architecture Programmer's Manual, vol. 2, appendix B. keel keeps the
//! VMCB as raw little-endian bytes and reaches every field through an accessor that names its
//! offset once, so the layout is written down exactly one time. Every setter of a field that a
//! VMCB clean bit covers also clears that bit: the CPU then reloads the field on the next VMRUN.
//! A field cannot be changed without its clean bit following, because the bytes are private.
//! (QEMU's TCG implements no clean bits; keel still keeps them right for hardware that does.)

/// VMCB clean bits (AMD APM vol. 2, table 15-9).
pub mod clean {
    /// Intercepts, TSC offset, pause filter.
    pub const INTERCEPTS: u32 = 1 << 0;
    /// IOPM and MSRPM base addresses.
    pub const IOPM: u32 = 1 << 1;
    /// ASID.
    pub const ASID: u32 = 1 << 2;
    /// V_TPR, V_IRQ, V_INTR_PRIO, V_IGN_TPR, V_INTR_MASKING, V_INTR_VECTOR.
    pub const TPR: u32 = 1 << 3;
    /// Nested paging: N_CR3 and G_PAT.
    pub const NP: u32 = 1 << 4;
    /// CR0, CR3, CR4, EFER.
    pub const CRX: u32 = 1 << 5;
    /// DR6, DR7.
    pub const DRX: u32 = 1 << 6;
    /// GDTR, IDTR.
    pub const DT: u32 = 1 << 7;
    /// CS, DS, SS, ES, CPL.
    pub const SEG: u32 = 1 << 8;
    /// CR2.
    pub const CR2: u32 = 1 << 9;
    /// DbgCtlMsr, br_from/to, lastint_from/to.
    pub const LBR: u32 = 1 << 10;
    /// AVIC.
    pub const AVIC: u32 = 1 << 11;
    /// Every bit keel manages.
    pub const ALL: u32 = (1 << 12) - 1;
}

/// `misc1` intercept bits (offset 0x0c).
pub mod intercept1 {
    /// Physical interrupts.
    pub const INTR: u32 = 1 << 0;
    /// NMIs.
    pub const NMI: u32 = 1 << 1;
    /// SMIs.
    pub const SMI: u32 = 1 << 2;
    /// INIT.
    pub const INIT: u32 = 1 << 3;
    /// Virtual interrupt window (V_IRQ taken).
    pub const VINTR: u32 = 1 << 4;
    /// CPUID.
    pub const CPUID: u32 = 1 << 18;
    /// INVD.
    pub const INVD: u32 = 1 << 22;
    /// PAUSE.
    pub const PAUSE: u32 = 1 << 23;
    /// HLT.
    pub const HLT: u32 = 1 << 24;
    /// INVLPGA.
    pub const INVLPGA: u32 = 1 << 26;
    /// IN/OUT through the I/O permission map.
    pub const IOIO: u32 = 1 << 27;
    /// RDMSR/WRMSR through the MSR permission map.
    pub const MSR: u32 = 1 << 28;
    /// Task switches.
    pub const TASK_SWITCH: u32 = 1 << 29;
    /// Shutdown (triple fault).
    pub const SHUTDOWN: u32 = 1 << 31;
}

/// `misc2` intercept bits (offset 0x10).
pub mod intercept2 {
    /// VMRUN (must be intercepted).
    pub const VMRUN: u32 = 1 << 0;
    /// VMMCALL (the hypercall instruction).
    pub const VMMCALL: u32 = 1 << 1;
    /// VMLOAD.
    pub const VMLOAD: u32 = 1 << 2;
    /// VMSAVE.
    pub const VMSAVE: u32 = 1 << 3;
    /// STGI.
    pub const STGI: u32 = 1 << 4;
    /// CLGI.
    pub const CLGI: u32 = 1 << 5;
    /// SKINIT.
    pub const SKINIT: u32 = 1 << 6;
    /// RDTSCP.
    pub const RDTSCP: u32 = 1 << 7;
    /// ICEBP.
    pub const ICEBP: u32 = 1 << 8;
    /// MONITOR.
    pub const MONITOR: u32 = 1 << 10;
    /// MWAIT.
    pub const MWAIT: u32 = 1 << 11;
    /// XSETBV.
    pub const XSETBV: u32 = 1 << 13;
}

/// TLB_CONTROL values (offset 0x5c).
#[derive(Clone, Copy, Debug, Eq, PartialEq)]
#[repr(u8)]
pub enum TlbControl {
    /// Flush nothing.
    None = 0,
    /// Flush every TLB entry of every ASID.
    FlushAll = 1,
    /// Flush this guest's ASID.
    FlushAsid = 3,
}

/// A segment register in the VMCB's format (attributes compressed to 12 bits:
/// type/S/DPL/P in bits 0-7, AVL/L/D/G in bits 8-11).
#[derive(Clone, Copy, Debug, Default, Eq, PartialEq)]
pub struct Segment {
    /// Selector.
    pub selector: u16,
    /// Attributes.
    pub attrib: u16,
    /// Limit.
    pub limit: u32,
    /// Base.
    pub base: u64,
}

/// The segment registers, by their slot in the save area.
#[derive(Clone, Copy, Debug, Eq, PartialEq)]
pub enum Seg {
    /// ES.
    Es = 0,
    /// CS.
    Cs = 1,
    /// SS.
    Ss = 2,
    /// DS.
    Ds = 3,
    /// FS.
    Fs = 4,
    /// GS.
    Gs = 5,
    /// GDTR (base and limit only).
    Gdtr = 6,
    /// LDTR.
    Ldtr = 7,
    /// IDTR (base and limit only).
    Idtr = 8,
    /// TR.
    Tr = 9,
}

impl Seg {
    /// The clean bit covering this register (FS, GS, LDTR, TR are VMLOAD/VMSAVE state, not cached).
    fn clean_bit(self) -> u32 {
        match self {
            Seg::Es | Seg::Cs | Seg::Ss | Seg::Ds => clean::SEG,
            Seg::Gdtr | Seg::Idtr => clean::DT,
            Seg::Fs | Seg::Gs | Seg::Ldtr | Seg::Tr => 0,
        }
    }
}

/// The VMCB page.
#[repr(C, align(4096))]
pub struct Vmcb {
    bytes: [u8; 4096],
}

const _: () = assert!(core::mem::size_of::<Vmcb>() == 4096);

/// Offset of the state-save area.
const SAVE: usize = 0x400;

macro_rules! field {
    ($(#[$doc:meta])* $get:ident, $set:ident, $ty:ty, $off:expr, $clean:expr) => {
        $(#[$doc])*
        #[inline]
        pub fn $get(&self) -> $ty {
            <$ty>::from_le_bytes(self.bytes[$off..$off + core::mem::size_of::<$ty>()].try_into().unwrap_or_default())
        }
        $(#[$doc])*
        #[inline]
        pub fn $set(&mut self, v: $ty) {
            self.bytes[$off..$off + core::mem::size_of::<$ty>()].copy_from_slice(&v.to_le_bytes());
            self.clear_clean($clean);
        }
    };
}

impl Vmcb {
    /// An all-zero VMCB (no intercepts, nothing loaded).
    pub const fn zeroed() -> Self {
        Vmcb { bytes: [0; 4096] }
    }

    fn clear_clean(&mut self, bits: u32) {
        if bits != 0 {
            let c = self.clean_bits() & !bits;
            self.bytes[0xc0..0xc4].copy_from_slice(&c.to_le_bytes());
        }
    }

    /// The clean bits the next VMRUN will see.
    pub fn clean_bits(&self) -> u32 {
        u32::from_le_bytes([self.bytes[0xc0], self.bytes[0xc1], self.bytes[0xc2], self.bytes[0xc3]])
    }

    /// After a VMRUN the CPU has cached everything: mark all fields clean (only bits the CPU
    /// supports; pass 0 when it has no clean-bit support).
    pub fn mark_all_clean(&mut self, supported: u32) {
        self.bytes[0xc0..0xc4].copy_from_slice(&(clean::ALL & supported).to_le_bytes());
    }

    // ---- control area ----
    field!(/// CR read intercepts (bits 0-15) and write intercepts (bits 16-31).
        cr_intercepts, set_cr_intercepts, u32, 0x000, clean::INTERCEPTS);
    field!(/// DR read/write intercepts.
        dr_intercepts, set_dr_intercepts, u32, 0x004, clean::INTERCEPTS);
    field!(/// Exception intercepts (bit n = vector n).
        exception_intercepts, set_exception_intercepts, u32, 0x008, clean::INTERCEPTS);
    field!(/// Instruction/event intercepts, first word (`intercept1`).
        intercepts1, set_intercepts1, u32, 0x00c, clean::INTERCEPTS);
    field!(/// Instruction intercepts, second word (`intercept2`).
        intercepts2, set_intercepts2, u32, 0x010, clean::INTERCEPTS);
    field!(/// Physical address of the I/O permission map (12 KiB).
        iopm_base, set_iopm_base, u64, 0x040, clean::IOPM);
    field!(/// Physical address of the MSR permission map (8 KiB).
        msrpm_base, set_msrpm_base, u64, 0x048, clean::IOPM);
    field!(/// Added to the host TSC to give the guest's.
        tsc_offset, set_tsc_offset, u64, 0x050, clean::INTERCEPTS);
    field!(/// The guest's address-space identifier (never 0).
        asid, set_asid, u32, 0x058, clean::ASID);
    field!(/// Virtual interrupt control: V_TPR (7:0), V_IRQ (8), V_INTR_PRIO (19:16), V_IGN_TPR (20), V_INTR_MASKING (24).
        vintr, set_vintr, u32, 0x060, clean::TPR);
    field!(/// V_INTR_VECTOR.
        vintr_vector, set_vintr_vector, u8, 0x064, clean::TPR);
    field!(/// Interrupt shadow (bit 0) and guest interrupt mask (bit 1).
        interrupt_shadow, set_interrupt_shadow, u64, 0x068, 0);
    field!(/// Exit code.
        exit_code, set_exit_code, u64, 0x070, 0);
    field!(/// Exit information 1.
        exit_info1, set_exit_info1, u64, 0x078, 0);
    field!(/// Exit information 2.
        exit_info2, set_exit_info2, u64, 0x080, 0);
    field!(/// Event being delivered when the exit happened (valid bit 31).
        exit_int_info, set_exit_int_info, u64, 0x088, 0);
    field!(/// Nested paging enable (bit 0).
        np_control, set_np_control, u64, 0x090, clean::NP);
    field!(/// Event to inject at the next VMRUN (valid bit 31).
        event_inj, set_event_inj, u64, 0x0a8, 0);
    field!(/// Nested page table root (host-physical).
        ncr3, set_ncr3, u64, 0x0b0, clean::NP);
    field!(/// LBR virtualization (bit 0), virtualized VMSAVE/VMLOAD (bit 1).
        virt_ext, set_virt_ext, u64, 0x0b8, clean::LBR);
    field!(/// Next sequential RIP (only with NRIP-save support).
        next_rip, set_next_rip, u64, 0x0c8, 0);
    field!(/// Number of guest instruction bytes fetched (decode assists).
        insn_len, set_insn_len, u8, 0x0d0, 0);

    /// TLB control for the next VMRUN.
    pub fn set_tlb_control(&mut self, c: TlbControl) {
        self.bytes[0x5c] = c as u8;
    }

    /// Guest instruction bytes fetched by the CPU (decode assists only).
    pub fn insn_bytes(&self) -> &[u8] {
        let n = (self.insn_len() as usize).min(15);
        &self.bytes[0xd1..0xd1 + n]
    }

    // ---- state-save area ----
    /// A segment register.
    pub fn segment(&self, s: Seg) -> Segment {
        let off = SAVE + 16 * s as usize;
        let b = &self.bytes[off..off + 16];
        Segment {
            selector: u16::from_le_bytes([b[0], b[1]]),
            attrib: u16::from_le_bytes([b[2], b[3]]),
            limit: u32::from_le_bytes([b[4], b[5], b[6], b[7]]),
            base: u64::from_le_bytes([b[8], b[9], b[10], b[11], b[12], b[13], b[14], b[15]]),
        }
    }

    /// Set a segment register.
    pub fn set_segment(&mut self, s: Seg, v: Segment) {
        let off = SAVE + 16 * s as usize;
        self.bytes[off..off + 2].copy_from_slice(&v.selector.to_le_bytes());
        self.bytes[off + 2..off + 4].copy_from_slice(&v.attrib.to_le_bytes());
        self.bytes[off + 4..off + 8].copy_from_slice(&v.limit.to_le_bytes());
        self.bytes[off + 8..off + 16].copy_from_slice(&v.base.to_le_bytes());
        self.clear_clean(s.clean_bit());
    }

    field!(/// Current privilege level.
        cpl, set_cpl, u8, SAVE + 0xcb, clean::SEG);
    field!(/// EFER as the CPU runs the guest (keel keeps SVME set; see `Vcpu`).
        efer, set_efer, u64, SAVE + 0xd0, clean::CRX);
    field!(/// CR4.
        cr4, set_cr4, u64, SAVE + 0x148, clean::CRX);
    field!(/// CR3.
        cr3, set_cr3, u64, SAVE + 0x150, clean::CRX);
    field!(/// CR0.
        cr0, set_cr0, u64, SAVE + 0x158, clean::CRX);
    field!(/// DR7.
        dr7, set_dr7, u64, SAVE + 0x160, clean::DRX);
    field!(/// DR6.
        dr6, set_dr6, u64, SAVE + 0x168, clean::DRX);
    field!(/// RFLAGS.
        rflags, set_rflags, u64, SAVE + 0x170, 0);
    field!(/// RIP.
        rip, set_rip, u64, SAVE + 0x178, 0);
    field!(/// RSP.
        rsp, set_rsp, u64, SAVE + 0x1d8, 0);
    field!(/// RAX.
        rax, set_rax, u64, SAVE + 0x1f8, 0);
    field!(/// STAR.
        star, set_star, u64, SAVE + 0x200, 0);
    field!(/// LSTAR.
        lstar, set_lstar, u64, SAVE + 0x208, 0);
    field!(/// CSTAR.
        cstar, set_cstar, u64, SAVE + 0x210, 0);
    field!(/// SFMASK.
        sfmask, set_sfmask, u64, SAVE + 0x218, 0);
    field!(/// KernelGSBase.
        kernel_gs_base, set_kernel_gs_base, u64, SAVE + 0x220, 0);
    field!(/// SYSENTER_CS.
        sysenter_cs, set_sysenter_cs, u64, SAVE + 0x228, 0);
    field!(/// SYSENTER_ESP.
        sysenter_esp, set_sysenter_esp, u64, SAVE + 0x230, 0);
    field!(/// SYSENTER_EIP.
        sysenter_eip, set_sysenter_eip, u64, SAVE + 0x238, 0);
    field!(/// CR2.
        cr2, set_cr2, u64, SAVE + 0x240, clean::CR2);
    field!(/// Guest PAT (used with nested paging).
        g_pat, set_g_pat, u64, SAVE + 0x268, clean::NP);
    field!(/// DebugCtl.
        dbgctl, set_dbgctl, u64, SAVE + 0x270, clean::LBR);
}

// The accessors above name the architectural offsets; check a few against the manual's table.
const _: () = {
    assert!(SAVE + 0x178 == 0x578); // RIP
    assert!(SAVE + 0x1f8 == 0x5f8); // RAX
    assert!(SAVE + 0x268 == 0x668); // G_PAT
};

/// Segment attribute words keel uses (VMCB format).
pub mod attr {
    /// 64-bit code, DPL 0: P, S, type 0xB (execute/read, accessed), L.
    pub const CODE64: u16 = 0x29b;
    /// 32-bit code, flat: G, D, P, S, type 0xB (Xen's PVH 0xc9b).
    pub const CODE32: u16 = 0xc9b;
    /// 32-bit data, flat: G, D/B, P, S, type 0x3 (Xen's PVH 0xc93).
    pub const DATA32: u16 = 0xc93;
    /// 16-bit real-mode code/data: P, S, type 0x3 (read/write, accessed) or 0xB.
    pub const REAL_CODE: u16 = 0x9b;
    /// Real-mode data.
    pub const REAL_DATA: u16 = 0x93;
    /// 32-bit busy TSS (Xen's 0x8b).
    pub const TSS32_BUSY: u16 = 0x8b;
    /// LDT.
    pub const LDT: u16 = 0x82;
}
