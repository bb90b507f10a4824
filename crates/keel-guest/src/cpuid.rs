//! The CPUID a guest sees: the host's, filtered to what keel virtualizes, with Xen's
//! hypervisor leaves at 0x40000000 and a topology consistent with APIC ID = 2 x vCPU id.
//!
//! Rules (xen-abi.md §2.1, §3.9): the real vendor string (Linux picks VMMCALL from it); the
//! hypervisor bit set; SVM, MONITOR/MWAIT, OSVW, TSC-deadline, RDTSCP, machine checks,
//! performance counters and the speculation-control MSRs hidden (keel does not virtualize
//! them); XSAVE exposed when the host has it, with OSXSAVE mirroring the guest's CR4; x2APIC
//! exposed (keel's vLAPIC implements both modes).

/// The base of Xen's hypervisor leaves.
pub const XEN_BASE: u32 = 0x4000_0000;
/// Xen's version as CPUID leaf base+1 reports it (major << 16 | minor): 4.17.
pub const XEN_VERSION: u32 = (4 << 16) | 17;
/// The MSR whose write fills the hypercall page (CPUID base+2 EBX).
pub const HYPERCALL_MSR: u32 = 0x4000_0000;

/// What the answer depends on besides the host.
#[derive(Clone, Copy, Debug, Default)]
pub struct Context {
    /// The asking vCPU.
    pub vcpu_id: u32,
    /// vCPUs in the domain.
    pub vcpus: u32,
    /// The domain.
    pub domid: u16,
    /// Guest TSC frequency in kHz.
    pub tsc_khz: u32,
    /// The guest's CR4 (for OSXSAVE).
    pub guest_cr4: u64,
    /// Guest-physical address width keel's nested paging supports.
    pub phys_addr_bits: u8,
}

/// APIC ID of a vCPU (Xen: 2 x vcpu_id).
pub const fn apic_id(vcpu_id: u32) -> u32 {
    2 * vcpu_id
}

mod leaf1 {
    // ECX
    pub const MONITOR: u32 = 1 << 3;
    pub const DS_CPL: u32 = 1 << 4;
    pub const VMX: u32 = 1 << 5;
    pub const SMX: u32 = 1 << 6;
    pub const EST: u32 = 1 << 7;
    pub const TM2: u32 = 1 << 8;
    pub const SDBG: u32 = 1 << 11;
    pub const XTPR: u32 = 1 << 14;
    pub const PDCM: u32 = 1 << 15;
    pub const DCA: u32 = 1 << 18;
    pub const X2APIC: u32 = 1 << 21;
    pub const TSC_DEADLINE: u32 = 1 << 24;
    pub const XSAVE: u32 = 1 << 26;
    pub const OSXSAVE: u32 = 1 << 27;
    pub const HYPERVISOR: u32 = 1 << 31;
    // EDX
    pub const MCE: u32 = 1 << 7;
    pub const MCA: u32 = 1 << 14;
    pub const DS: u32 = 1 << 21;
    pub const ACPI: u32 = 1 << 22;
    pub const HTT: u32 = 1 << 28;
    pub const TM: u32 = 1 << 29;
    pub const PBE: u32 = 1 << 31;
}

/// Leaf 7 subleaf 0 EBX bits a guest may see (when the host has them).
const LEAF7_EBX_ALLOWED: u32 = (1 << 0) // FSGSBASE
    | (1 << 3)  // BMI1
    | (1 << 5)  // AVX2
    | (1 << 7)  // SMEP
    | (1 << 8)  // BMI2
    | (1 << 9)  // ERMS
    | (1 << 10) // INVPCID
    | (1 << 16) // AVX512F
    | (1 << 17) // AVX512DQ
    | (1 << 18) // RDSEED
    | (1 << 19) // ADX
    | (1 << 20) // SMAP
    | (1 << 21) // AVX512_IFMA
    | (1 << 23) // CLFLUSHOPT
    | (1 << 24) // CLWB
    | (1 << 28) // AVX512CD
    | (1 << 29) // SHA
    | (1 << 30) // AVX512BW
    | (1 << 31); // AVX512VL
/// Leaf 7 subleaf 0 ECX bits a guest may see.
const LEAF7_ECX_ALLOWED: u32 = (1 << 1) // AVX512_VBMI
    | (1 << 6)  // AVX512_VBMI2
    | (1 << 8)  // GFNI
    | (1 << 9)  // VAES
    | (1 << 10) // VPCLMULQDQ
    | (1 << 11) // AVX512_VNNI
    | (1 << 12) // AVX512_BITALG
    | (1 << 14) // AVX512_VPOPCNTDQ
    | (1 << 22); // RDPID needs TSC_AUX: hidden below with RDTSCP
/// Extended leaf 0x80000001 ECX bits hidden.
const EXT1_ECX_HIDDEN: u32 = (1 << 2) // SVM
    | (1 << 9)  // OSVW
    | (1 << 10) // IBS
    | (1 << 12) // SKINIT
    | (1 << 13) // WDT
    | (1 << 17) // TCE
    | (1 << 22) // TOPOEXT
    | (1 << 23) // PERFCTR_CORE
    | (1 << 24) // PERFCTR_NB
    | (1 << 26) // DBX
    | (1 << 28) // PERFCTR_LLC
    | (1 << 29); // MONITORX
/// Extended leaf 0x80000001 EDX bits hidden.
const EXT1_EDX_HIDDEN: u32 = (1 << 7) | (1 << 14) // MCE, MCA
    | (1 << 27); // RDTSCP

/// The guest's view of leaf `leaf`, subleaf `sub`. `host` executes CPUID on the host.
pub fn guest_cpuid(host: &dyn Fn(u32, u32) -> [u32; 4], ctx: &Context, leaf: u32, sub: u32) -> [u32; 4] {
    let max_basic = host(0, 0)[0];
    let max_ext = host(0x8000_0000, 0)[0];
    if (XEN_BASE..XEN_BASE + 0x100).contains(&leaf) {
        return xen_leaf(ctx, leaf - XEN_BASE, sub);
    }
    if leaf < 0x8000_0000 && leaf > max_basic
        || leaf >= 0x8000_0000 && leaf > max_ext
        || (0x4000_0100..0x8000_0000).contains(&leaf)
    {
        return [0; 4];
    }
    let [mut a, mut b, mut c, mut d] = host(leaf, sub);
    let apic = apic_id(ctx.vcpu_id);
    match leaf {
        1 => {
            b = (b & 0x0000_ffff) | (apic << 24) | ((2 * ctx.vcpus.max(1)).min(255) << 16);
            c &= !(leaf1::MONITOR
                | leaf1::DS_CPL
                | leaf1::VMX
                | leaf1::SMX
                | leaf1::EST
                | leaf1::TM2
                | leaf1::SDBG
                | leaf1::XTPR
                | leaf1::PDCM
                | leaf1::DCA
                | leaf1::TSC_DEADLINE
                | leaf1::OSXSAVE);
            c |= leaf1::X2APIC | leaf1::HYPERVISOR;
            if c & leaf1::XSAVE != 0 && ctx.guest_cr4 & (1 << 18) != 0 {
                c |= leaf1::OSXSAVE;
            }
            d &= !(leaf1::MCE | leaf1::MCA | leaf1::DS | leaf1::ACPI | leaf1::TM | leaf1::PBE);
            d |= leaf1::HTT;
        }
        4 => {
            // Intel cache parameters: cores per package from the domain's size.
            a = (a & 0x3fff) | ((ctx.vcpus.max(1) - 1).min(63) << 26);
        }
        5 | 6 => return [0; 4], // MONITOR/MWAIT, thermal and power
        7 => {
            if sub == 0 {
                a = a.min(1);
                b &= LEAF7_EBX_ALLOWED;
                c &= LEAF7_ECX_ALLOWED & !(1 << 22);
                d = 0;
            } else {
                return [0; 4];
            }
        }
        0xa => return [0; 4], // architectural performance monitoring
        0xb | 0x1f => {
            // Topology: one thread per core (shift 1, since APIC ids are 2 x vcpu), all vCPUs in
            // one package.
            match sub {
                0 => [a, b, c] = [1, 1, 1 << 8],
                1 => [a, b, c] = [(32 - (2 * ctx.vcpus.max(1)).leading_zeros()).max(1), ctx.vcpus.max(1), 1 | (2 << 8)],
                _ => [a, b, c] = [0, 0, sub & 0xff],
            }
            d = apic;
        }
        0xd => {} // XSAVE layout: the host's answer for the XCR0 currently loaded (the guest's)
        0x8000_0001 => {
            c &= !EXT1_ECX_HIDDEN;
            d &= !EXT1_EDX_HIDDEN;
        }
        0x8000_0007 => {
            // Keep only invariant TSC.
            [a, b, c] = [0, 0, 0];
            d &= 1 << 8;
        }
        0x8000_0008 => {
            let phys = (a & 0xff).min(ctx.phys_addr_bits as u32);
            a = (a & !0xff) | phys;
            b = 0; // no IBPB/IBRS/STIBP/SSBD controls exposed
            c = (ctx.vcpus.max(1) - 1).min(255) | (8 << 12); // NC, ApicIdSize
            d = 0;
        }
        0x8000_000a => return [0; 4], // SVM
        0x8000_001e => {
            a = apic;
            b = 0; // compute unit id 0, one thread per unit
            c = 0; // node 0
            d = 0;
        }
        0x8000_001f..=0x8000_0021 => return [0; 4], // SEV, QoS, extended features
        _ => {}
    }
    [a, b, c, d]
}

fn xen_leaf(ctx: &Context, off: u32, sub: u32) -> [u32; 4] {
    match off {
        // "XenVMMXenVMM", max leaf base+5.
        0 => [XEN_BASE + 5, 0x566e_6558, 0x6558_4d4d, 0x4d4d_566e],
        1 => [XEN_VERSION, 0, 0, 0],
        // One hypercall page, through this MSR.
        2 => [1, HYPERCALL_MSR, 0, 0],
        // Time: sub 0 flags (host TSC reliable), mode 0, guest TSC kHz; sub 2 host kHz.
        3 => match sub {
            0 => [1 << 1, 0, ctx.tsc_khz, 0],
            2 => [ctx.tsc_khz, 0, 0, 0],
            _ => [0; 4],
        },
        // HVM leaf: IOMMU mappings (2), vCPU id present (3), domid present (4), per-vCPU upcall
        // vector (6); EBX = vCPU id, ECX = domid.
        4 if sub == 0 => [(1 << 2) | (1 << 3) | (1 << 4) | (1 << 6), ctx.vcpu_id, ctx.domid as u32, 0],
        _ => [0; 4],
    }
}

/// The CR4 bits a guest may set, from the features its CPUID shows (as Xen's
/// `hvm_cr4_guest_valid_bits`): the architectural base set plus each feature's bit.
pub fn cr4_valid_bits(host: &dyn Fn(u32, u32) -> [u32; 4], ctx: &Context) -> u64 {
    let l1 = guest_cpuid(host, ctx, 1, 0);
    let l7 = guest_cpuid(host, ctx, 7, 0);
    let (ecx1, edx1, ebx7, ecx7) = (l1[2], l1[3], l7[1], l7[2]);
    let has = |reg: u32, bit: u32| reg & (1 << bit) != 0;
    let mut v = 0u64;
    let mut set = |cond: bool, bit: u32| {
        if cond {
            v |= 1 << bit;
        }
    };
    set(has(edx1, 1), 0); // VME
    set(has(edx1, 1), 1); // PVI
    set(has(edx1, 4), 2); // TSD (with the TSC)
    set(has(edx1, 2), 3); // DE
    set(has(edx1, 3), 4); // PSE
    set(has(edx1, 6), 5); // PAE
    set(has(edx1, 7), 6); // MCE
    set(has(edx1, 13), 7); // PGE
    set(true, 8); // PCE
    set(has(edx1, 24), 9); // OSFXSR
    set(has(edx1, 25), 10); // OSXMMEXCPT
    set(has(ecx7, 2), 11); // UMIP
    set(has(ebx7, 0), 16); // FSGSBASE
    set(has(ecx1, 17), 17); // PCIDE
    set(has(ecx1, 26), 18); // OSXSAVE
    set(has(ebx7, 7), 20); // SMEP
    set(has(ebx7, 20), 21); // SMAP
    set(has(ecx7, 3), 22); // PKE
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A host shaped like QEMU's `-cpu max` on AMD (values that matter here).
    fn host(leaf: u32, sub: u32) -> [u32; 4] {
        match (leaf, sub) {
            (0, _) => [0xd, 0x6874_7541, 0x444d_4163, 0x6974_6e65], // AuthenticAMD
            (1, _) => [0x00a0_0f11, 0x0001_0800, 0xfef8_3203 | (1 << 26) | (1 << 3), 0x178b_fbff],
            (7, 0) => [0, 0xffff_ffff, 0xffff_ffff, 0xffff_ffff],
            (0xd, 0) => [7, 0x340, 0x340, 0],
            (0x8000_0000, _) => [0x8000_0021, 0x6874_7541, 0x444d_4163, 0x6974_6e65],
            (0x8000_0001, _) => [0xa00f11, 0, 0xffff_ffff, 0xffff_ffff],
            (0x8000_0008, _) => [0x3030, 0xffff_ffff, 0x3, 0],
            (0x8000_000a, _) => [1, 16, 0, 0x9],
            _ => [0x1111, 0x2222, 0x3333, 0x4444],
        }
    }

    fn ctx(vcpu: u32) -> Context {
        Context { vcpu_id: vcpu, vcpus: 4, domid: 7, tsc_khz: 2_400_000, guest_cr4: 0, phys_addr_bits: 40 }
    }

    #[test]
    fn xen_leaves() {
        let c = ctx(3);
        let l0 = guest_cpuid(&host, &c, 0x4000_0000, 0);
        assert_eq!(l0[0], 0x4000_0005);
        let sig: Vec<u8> = l0[1..].iter().flat_map(|r| r.to_le_bytes()).collect();
        assert_eq!(&sig, b"XenVMMXenVMM");
        assert_eq!(guest_cpuid(&host, &c, 0x4000_0001, 0)[0], 0x0004_0011);
        assert_eq!(guest_cpuid(&host, &c, 0x4000_0002, 0), [1, 0x4000_0000, 0, 0]);
        let l4 = guest_cpuid(&host, &c, 0x4000_0004, 0);
        assert_eq!(l4[0] & (1 << 3), 1 << 3);
        assert_eq!(l4[0] & (1 << 6), 1 << 6);
        assert_eq!((l4[1], l4[2]), (3, 7));
        assert_eq!(guest_cpuid(&host, &c, 0x4000_0003, 0)[2], 2_400_000);
        assert_eq!(guest_cpuid(&host, &c, 0x4000_0006, 0), [0; 4]);
        assert_eq!(guest_cpuid(&host, &c, 0x4000_0100, 0), [0; 4]);
    }

    #[test]
    fn vendor_and_hypervisor_bit() {
        let c = ctx(0);
        assert_eq!(guest_cpuid(&host, &c, 0, 0), host(0, 0));
        let l1 = guest_cpuid(&host, &c, 1, 0);
        assert_ne!(l1[2] & leaf1::HYPERVISOR, 0);
        assert_ne!(l1[2] & leaf1::X2APIC, 0);
        assert_eq!(l1[2] & (leaf1::MONITOR | leaf1::TSC_DEADLINE), 0);
        assert_eq!(l1[3] & (leaf1::MCE | leaf1::MCA), 0);
    }

    #[test]
    fn apic_ids_agree_everywhere() {
        for v in 0..4 {
            let c = ctx(v);
            assert_eq!(guest_cpuid(&host, &c, 1, 0)[1] >> 24, 2 * v);
            assert_eq!(guest_cpuid(&host, &c, 0xb, 0)[3], 2 * v);
            assert_eq!(guest_cpuid(&host, &c, 0x8000_001e, 0)[0], 2 * v);
        }
    }

    #[test]
    fn osxsave_follows_guest_cr4() {
        let mut c = ctx(0);
        assert_eq!(guest_cpuid(&host, &c, 1, 0)[2] & leaf1::OSXSAVE, 0);
        c.guest_cr4 = 1 << 18;
        assert_ne!(guest_cpuid(&host, &c, 1, 0)[2] & leaf1::OSXSAVE, 0);
    }

    #[test]
    fn svm_and_rdtscp_hidden() {
        let c = ctx(0);
        let e1 = guest_cpuid(&host, &c, 0x8000_0001, 0);
        assert_eq!(e1[2] & (1 << 2), 0);
        assert_eq!(e1[2] & (1 << 9), 0);
        assert_eq!(e1[3] & (1 << 27), 0);
        assert_eq!(guest_cpuid(&host, &c, 0x8000_000a, 0), [0; 4]);
        assert_eq!(guest_cpuid(&host, &c, 5, 0), [0; 4]);
        assert_eq!(guest_cpuid(&host, &c, 7, 0)[3], 0);
    }

    #[test]
    fn leaves_beyond_the_host_maximum_are_zero() {
        let c = ctx(0);
        assert_eq!(guest_cpuid(&host, &c, 0xe, 0), [0; 4]);
        assert_eq!(guest_cpuid(&host, &c, 0x8000_0022, 0), [0; 4]);
        assert_eq!(guest_cpuid(&host, &c, 0x5000_0000, 0), [0; 4]);
    }

    #[test]
    fn physical_address_width_is_capped() {
        let c = ctx(0);
        assert_eq!(guest_cpuid(&host, &c, 0x8000_0008, 0)[0] & 0xff, 40);
    }

    #[test]
    fn cr4_bits_follow_the_features() {
        let ctx = Context { vcpus: 1, ..Default::default() };
        let none = |_: u32, _: u32| [0u32; 4];
        let bare = cr4_valid_bits(&none, &ctx);
        assert_eq!(bare & (1 << 5), 0, "PAE only with CPUID PAE");
        assert_ne!(bare & (1 << 8), 0, "PCE always");
        let pae_sse = |l: u32, _: u32| match l {
            0 => [7, 0, 0, 0],
            1 => [0, 0, 0, (1 << 6) | (1 << 24) | (1 << 25)],
            _ => [0; 4],
        };
        let v = cr4_valid_bits(&pae_sse, &ctx);
        assert_ne!(v & (1 << 5), 0);
        assert_ne!(v & (1 << 9), 0);
        assert_ne!(v & (1 << 10), 0);
        assert_eq!(v & (1 << 18), 0, "no OSXSAVE without XSAVE");
    }
}
