//! The register state a PVH guest gives a vCPU with `VCPUOP_initialise`
//! (`struct vcpu_hvm_context`), checked the way Xen 4.17 checks it and turned into the state
//! keel loads, whatever the vendor.
//!
//! Segment attributes in the context use the packed 12-bit layout of Xen's public
//! `hvm_vcpu.h` (type 0-3, S 4, DPL 5-6, P 7, AVL 8, L 9, D/B 10, G 11; bits 12-15 zero), which
//! is also the VMCB's.

use xen_abi::vcpu::{VcpuHvmContext, VcpuHvmRegs};

/// One segment register: base, limit (as given) and packed attributes.
#[derive(Clone, Copy, Debug, Default, Eq, PartialEq)]
pub struct SegmentState {
    /// Base.
    pub base: u64,
    /// Limit.
    pub limit: u32,
    /// Attributes (packed layout, see the module doc).
    pub attrib: u16,
}

impl SegmentState {
    fn p(&self) -> bool {
        self.attrib & 0x80 != 0
    }
    fn s(&self) -> bool {
        self.attrib & 0x10 != 0
    }
    fn dpl(&self) -> u16 {
        (self.attrib >> 5) & 3
    }
    fn ty(&self) -> u16 {
        self.attrib & 0xf
    }
    fn g(&self) -> bool {
        self.attrib & 0x800 != 0
    }
}

/// The state to load into a vCPU, validated.
#[derive(Clone, Copy, Debug, Default, Eq, PartialEq)]
pub struct InitialState {
    /// RAX, RCX, RDX, RBX, RSP, RBP, RSI, RDI.
    pub gprs: [u64; 8],
    /// RIP.
    pub rip: u64,
    /// RFLAGS.
    pub rflags: u64,
    /// CR0.
    pub cr0: u64,
    /// CR3.
    pub cr3: u64,
    /// CR4.
    pub cr4: u64,
    /// EFER (LMA follows LME, as Xen sets it).
    pub efer: u64,
    /// CS, DS, SS, ES, TR.
    pub segments: [SegmentState; 5],
}

/// Why a context was refused (Xen answers -EINVAL to all of these).
#[derive(Clone, Copy, Debug, Eq, PartialEq)]
pub enum Invalid {
    /// A padding field is not zero.
    Padding,
    /// An unknown `mode`.
    Mode,
    /// A segment's attributes are not acceptable for its register.
    Segment(&'static str),
    /// EIP beyond the CS limit.
    EipOutsideCs,
    /// SS.DPL differs from CS.DPL, or DS/ES.DPL exceeds it.
    Privilege,
    /// A 64-bit context without paging, PAE or long mode, or a non-canonical RIP.
    LongMode(&'static str),
    /// EFER or CR4 with bits the guest may not set.
    ControlRegister(&'static str),
}

const CR0_PG: u64 = 1 << 31;
const CR4_PAE: u64 = 1 << 5;
const EFER_SCE: u64 = 1 << 0;
const EFER_LME: u64 = 1 << 8;
const EFER_LMA: u64 = 1 << 10;
const EFER_NXE: u64 = 1 << 11;
/// The EFER bits a PVH guest may set.
const EFER_VALID: u64 = EFER_SCE | EFER_LME | EFER_LMA | EFER_NXE;

/// Which register a segment is loaded into (the checks differ).
#[derive(Clone, Copy, Eq, PartialEq)]
enum Which {
    Cs,
    Ds,
    Ss,
    Es,
    Tr,
}

/// Xen's per-register segment checks, after setting the accessed (busy for TR) bit of a
/// present segment as Xen does.
fn check_segment(seg: &mut SegmentState, which: Which) -> Result<(), Invalid> {
    if seg.p() {
        seg.attrib |= if which == Which::Tr { 2 } else { 1 };
    }
    if seg.attrib & 0xf000 != 0 {
        return Err(Invalid::Segment("attribute bits 12-15 are not zero"));
    }
    if seg.attrib == 0 {
        return match which {
            Which::Ds | Which::Es => Ok(()),
            _ => Err(Invalid::Segment("null attributes for CS, SS or TR")),
        };
    }
    if which == Which::Tr {
        if seg.s() {
            return Err(Invalid::Segment("code or data segment for TR"));
        }
        if seg.ty() != 0xb {
            return Err(Invalid::Segment("TR is not a busy 32-bit TSS"));
        }
    } else if !seg.s() {
        return Err(Invalid::Segment("system segment for a code or data register"));
    }
    if !seg.p() {
        return Err(Invalid::Segment("segment not present"));
    }
    match which {
        Which::Cs if seg.ty() & 0x8 == 0 => Err(Invalid::Segment("CS is not a code segment")),
        Which::Ss if seg.ty() & 0x8 != 0 || seg.ty() & 0x2 == 0 => Err(Invalid::Segment("SS is not writable data")),
        Which::Ds | Which::Es if seg.ty() & 0x8 != 0 && seg.ty() & 0x2 == 0 => {
            Err(Invalid::Segment("DS or ES is not readable"))
        }
        _ => Ok(()),
    }
}

fn canonical(va: u64) -> bool {
    ((va as i64) << 16 >> 16) as u64 == va
}

/// Check `ctx` as Xen's `arch_set_info_hvm_guest` does; `cr4_valid` is the set of CR4 bits
/// this guest may set (from its CPUID).
pub fn validate(ctx: &VcpuHvmContext, cr4_valid: u64) -> Result<InitialState, Invalid> {
    if ctx.pad != 0 {
        return Err(Invalid::Padding);
    }
    let mut st = match ctx.regs().map_err(|_| Invalid::Mode)? {
        VcpuHvmRegs::X86_32(r) => {
            if r.pad1 != 0 || r.pad2 != [0; 3] {
                return Err(Invalid::Padding);
            }
            let seg = |base: u32, limit: u32, attrib: u16| SegmentState { base: base as u64, limit, attrib };
            let mut segs = [
                seg(r.cs_base, r.cs_limit, r.cs_ar),
                seg(r.ds_base, r.ds_limit, r.ds_ar),
                seg(r.ss_base, r.ss_limit, r.ss_ar),
                seg(r.es_base, r.es_limit, r.es_ar),
                seg(r.tr_base, r.tr_limit, r.tr_ar),
            ];
            for (s, w) in segs.iter_mut().zip([Which::Cs, Which::Ds, Which::Ss, Which::Es, Which::Tr]) {
                check_segment(s, w)?;
            }
            let [cs, ds, ss, es, _] = segs;
            // As Xen computes it (a 32-bit limit scaled by G, wrapping).
            let limit = if cs.g() { (cs.limit << 12) | 0xfff } else { cs.limit };
            if r.eip > limit {
                return Err(Invalid::EipOutsideCs);
            }
            if ss.dpl() != cs.dpl() || (ds.p() && ds.dpl() > cs.dpl()) || (es.p() && es.dpl() > cs.dpl()) {
                return Err(Invalid::Privilege);
            }
            if r.efer & EFER_LMA != 0 && r.efer & EFER_LME == 0 {
                return Err(Invalid::ControlRegister("EFER.LMA without EFER.LME"));
            }
            InitialState {
                gprs: [r.eax, r.ecx, r.edx, r.ebx, r.esp, r.ebp, r.esi, r.edi].map(u64::from),
                rip: r.eip as u64,
                rflags: r.eflags as u64,
                cr0: r.cr0 as u64,
                cr3: r.cr3 as u64,
                cr4: r.cr4 as u64,
                efer: r.efer,
                segments: segs,
            }
        }
        VcpuHvmRegs::X86_64(r) => {
            if !canonical(r.rip) {
                return Err(Invalid::LongMode("non-canonical RIP"));
            }
            if r.cr0 & CR0_PG == 0 {
                return Err(Invalid::LongMode("CR0.PG clear"));
            }
            if r.cr4 & CR4_PAE == 0 {
                return Err(Invalid::LongMode("CR4.PAE clear"));
            }
            if r.efer & EFER_LME == 0 {
                return Err(Invalid::LongMode("EFER.LME clear"));
            }
            let flat = |attrib: u16| SegmentState { base: 0, limit: u32::MAX, attrib };
            InitialState {
                gprs: [r.rax, r.rcx, r.rdx, r.rbx, r.rsp, r.rbp, r.rsi, r.rdi],
                rip: r.rip,
                rflags: r.rflags,
                cr0: r.cr0,
                cr3: r.cr3,
                cr4: r.cr4,
                efer: r.efer,
                segments: [
                    flat(0xa9b),
                    flat(0xc93),
                    flat(0xc93),
                    flat(0xc93),
                    SegmentState { base: 0, limit: 0x67, attrib: 0x8b },
                ],
            }
        }
    };
    if st.efer & EFER_LME != 0 {
        st.efer |= EFER_LMA;
    }
    if st.cr4 & !cr4_valid != 0 {
        return Err(Invalid::ControlRegister("CR4 bits the guest may not set"));
    }
    if st.efer & !EFER_VALID != 0 {
        return Err(Invalid::ControlRegister("EFER bits the guest may not set"));
    }
    Ok(st)
}

#[cfg(test)]
mod tests {
    use super::*;
    use xen_abi::vcpu::{VcpuHvmX86_32, VcpuHvmX86_64};

    const CR4_ALL: u64 = 0x3f_ffff;

    fn flat32() -> VcpuHvmX86_32 {
        VcpuHvmX86_32 {
            eip: 0x1000,
            ebx: 7,
            cr0: 0x11,
            cs_limit: u32::MAX,
            ds_limit: u32::MAX,
            ss_limit: u32::MAX,
            es_limit: u32::MAX,
            tr_limit: 0x67,
            cs_ar: 0xc9b,
            ds_ar: 0xc93,
            ss_ar: 0xc93,
            es_ar: 0xc93,
            tr_ar: 0x8b,
            ..Default::default()
        }
    }

    fn ctx32(r: VcpuHvmX86_32) -> VcpuHvmContext {
        VcpuHvmContext::new(VcpuHvmRegs::X86_32(r))
    }

    #[test]
    fn pvh_style_32_bit_context_is_accepted() {
        let st = validate(&ctx32(flat32()), CR4_ALL).unwrap();
        assert_eq!(st.rip, 0x1000);
        assert_eq!(st.gprs[3], 7);
        assert_eq!(st.segments[0].attrib, 0xc9b);
        assert_eq!(st.segments[4].attrib, 0x8b);
    }

    #[test]
    fn accessed_bits_are_set_as_xen_does() {
        let st = validate(&ctx32(VcpuHvmX86_32 { cs_ar: 0xc9a, ds_ar: 0xc92, ..flat32() }), CR4_ALL).unwrap();
        assert_eq!(st.segments[0].attrib, 0xc9b);
        assert_eq!(st.segments[1].attrib, 0xc93);
    }

    #[test]
    fn bad_32_bit_contexts_are_refused() {
        let cases = [
            VcpuHvmX86_32 { pad1: 1, ..flat32() },
            VcpuHvmX86_32 { cs_ar: 0, ..flat32() },
            VcpuHvmX86_32 { cs_ar: 0xc93, ..flat32() },      // data for CS
            VcpuHvmX86_32 { ss_ar: 0xc9b, ..flat32() },      // code for SS
            VcpuHvmX86_32 { ds_ar: 0xc9a & !2, ..flat32() }, // execute-only for DS
            VcpuHvmX86_32 { tr_ar: 0xc93, ..flat32() },      // data for TR
            VcpuHvmX86_32 { cs_ar: 0x1c9b, ..flat32() },     // bit 12
            VcpuHvmX86_32 { ss_ar: 0xcf3, ..flat32() },      // SS.DPL 3 != CS.DPL 0
            VcpuHvmX86_32 { cs_limit: 0xfff, cs_ar: 0x49b, eip: 0x2000, ..flat32() },
            VcpuHvmX86_32 { efer: EFER_LMA, ..flat32() },
            VcpuHvmX86_32 { efer: 1 << 12, ..flat32() }, // SVME
        ];
        for (i, c) in cases.into_iter().enumerate() {
            assert!(validate(&ctx32(c), CR4_ALL).is_err(), "case {i} accepted");
        }
        // Null DS and ES are fine.
        assert!(validate(&ctx32(VcpuHvmX86_32 { ds_ar: 0, es_ar: 0, ..flat32() }), CR4_ALL).is_ok());
        // CR4 beyond what the guest may set.
        assert!(validate(&ctx32(VcpuHvmX86_32 { cr4: 1 << 13, ..flat32() }), 0xff).is_err());
    }

    #[test]
    fn long_mode_context() {
        let good = VcpuHvmX86_64 {
            rip: 0xffff_ffff_8100_0000,
            cr0: 0x8000_0011,
            cr4: CR4_PAE,
            efer: EFER_LME,
            ..Default::default()
        };
        let st = validate(&VcpuHvmContext::new(VcpuHvmRegs::X86_64(good)), CR4_ALL).unwrap();
        assert_eq!(st.efer, EFER_LME | EFER_LMA);
        assert_eq!(st.segments[0].attrib, 0xa9b);
        for bad in [
            VcpuHvmX86_64 { rip: 0x8000_0000_0000, ..good },
            VcpuHvmX86_64 { cr0: 0x11, ..good },
            VcpuHvmX86_64 { cr4: 0, ..good },
            VcpuHvmX86_64 { efer: 0, ..good },
        ] {
            assert!(validate(&VcpuHvmContext::new(VcpuHvmRegs::X86_64(bad)), CR4_ALL).is_err());
        }
    }

    #[test]
    fn unknown_mode_and_padding() {
        let mut c = ctx32(flat32());
        c.mode = 7;
        assert_eq!(validate(&c, CR4_ALL), Err(Invalid::Mode));
        let mut c = ctx32(flat32());
        c.pad = 1;
        assert_eq!(validate(&c, CR4_ALL), Err(Invalid::Padding));
    }
}
