//! Xen's CPUID leaves (`public/arch-x86/cpuid.h`).
//!
//! A guest finds Xen by scanning the hypervisor range 0x4000_0000 to 0x4000_FF00 in steps of
//! 0x100 for a leaf whose EBX:ECX:EDX spell `"XenVMMXenVMM"` and whose EAX (the highest leaf)
//! is at least `base + 2`. Xen puts its leaves at [`XEN_CPUID_FIRST_LEAF`] (or 0x100 higher
//! when it also offers Viridian); the leaf numbers below are offsets from that base.

/// Default base of Xen's leaves.
pub const XEN_CPUID_FIRST_LEAF: u32 = 0x4000_0000;
/// Stride a guest scans the hypervisor range with.
pub const XEN_CPUID_LEAF_STRIDE: u32 = 0x100;

/// `XEN_CPUID_LEAF(i)` relative to a base.
pub const fn xen_cpuid_leaf(base: u32, offset: u32) -> u32 {
    base.wrapping_add(offset)
}

/// Leaf `base + 0`: EAX = highest leaf, EBX:ECX:EDX = signature.
pub const LEAF_SIGNATURE: u32 = 0;
/// Leaf `base + 1`: EAX = `major << 16 | minor`.
pub const LEAF_VERSION: u32 = 1;
/// Leaf `base + 2`: EAX = number of hypercall pages, EBX = MSR base (the hypercall-page MSR),
/// ECX = `XEN_CPUID_FEAT1_*`.
pub const LEAF_HYPERCALL: u32 = 2;
/// Leaf `base + 3`: time (sub-leaf 0: TSC mode and frequency; 1: TSC scaling; 2: host kHz).
pub const LEAF_TIME: u32 = 3;
/// Leaf `base + 4`: HVM features (EAX = `XEN_HVM_CPUID_*`, EBX = vCPU id, ECX = domid).
pub const LEAF_HVM: u32 = 4;
/// Leaf `base + 5`: PV features (EBX\[7:0\] = machine address width).
pub const LEAF_PV: u32 = 5;
/// `XEN_CPUID_MAX_NUM_LEAVES`: the highest leaf offset Xen defines.
pub const XEN_CPUID_MAX_NUM_LEAVES: u32 = 5;

/// The signature as it appears in EBX, ECX, EDX.
pub const XEN_CPUID_SIGNATURE: [u8; 12] = *b"XenVMMXenVMM";
/// `XEN_CPUID_SIGNATURE_EBX`: `"XenV"`.
pub const XEN_CPUID_SIGNATURE_EBX: u32 = 0x566e_6558;
/// `XEN_CPUID_SIGNATURE_ECX`: `"MMXe"`.
pub const XEN_CPUID_SIGNATURE_ECX: u32 = 0x6558_4d4d;
/// `XEN_CPUID_SIGNATURE_EDX`: `"nVMM"`.
pub const XEN_CPUID_SIGNATURE_EDX: u32 = 0x4d4d_566e;

/// True if EBX, ECX, EDX of a leaf are Xen's signature.
pub const fn is_xen_signature(ebx: u32, ecx: u32, edx: u32) -> bool {
    ebx == XEN_CPUID_SIGNATURE_EBX && ecx == XEN_CPUID_SIGNATURE_ECX && edx == XEN_CPUID_SIGNATURE_EDX
}

/// Default index of the MSR a guest writes to install the hypercall page (EBX of leaf 2).
pub const HYPERCALL_PAGE_MSR: u32 = 0x4000_0000;

/// Leaf 2 ECX: `mmu_update` can preserve accessed/dirty bits (PV).
pub const XEN_CPUID_FEAT1_MMU_PT_UPDATE_PRESERVE_AD: u32 = 1 << 0;

/// Leaf 3 sub-leaf 0 EAX: the TSC is emulated.
pub const XEN_CPUID_TSC_EMULATED: u32 = 1 << 0;
/// Leaf 3 sub-leaf 0 EAX: the host TSC is reliable.
pub const XEN_CPUID_HOST_TSC_RELIABLE: u32 = 1 << 1;
/// Leaf 3 sub-leaf 0 EAX: RDTSCP is available.
pub const XEN_CPUID_RDTSCP_INSTR_AVAIL: u32 = 1 << 2;
/// Leaf 3 sub-leaf 0 EBX (TSC mode): default.
pub const XEN_CPUID_TSC_MODE_DEFAULT: u32 = 0;
/// TSC mode: always emulate.
pub const XEN_CPUID_TSC_MODE_ALWAYS_EMULATE: u32 = 1;
/// TSC mode: never emulate.
pub const XEN_CPUID_TSC_MODE_NEVER_EMULATE: u32 = 2;
/// TSC mode: PV RDTSCP (obsolete).
pub const XEN_CPUID_TSC_MODE_PVRDTSCP: u32 = 3;

/// Leaf 4 EAX: APIC register accesses are virtualised in hardware.
pub const XEN_HVM_CPUID_APIC_ACCESS_VIRT: u32 = 1 << 0;
/// Leaf 4 EAX: x2APIC accesses are virtualised in hardware.
pub const XEN_HVM_CPUID_X2APIC_VIRT: u32 = 1 << 1;
/// Leaf 4 EAX: the IOMMU maps memory (meaningful for dom0).
pub const XEN_HVM_CPUID_IOMMU_MAPPINGS: u32 = 1 << 2;
/// Leaf 4 EAX: EBX holds the vCPU id.
pub const XEN_HVM_CPUID_VCPU_ID_PRESENT: u32 = 1 << 3;
/// Leaf 4 EAX: ECX holds the domid.
pub const XEN_HVM_CPUID_DOMID_PRESENT: u32 = 1 << 4;
/// Leaf 4 EAX: MSI and IOAPIC destinations may use the extended (15-bit) id.
pub const XEN_HVM_CPUID_EXT_DEST_ID: u32 = 1 << 5;
/// Leaf 4 EAX: `HVMOP_set_evtchn_upcall_vector` is available.
pub const XEN_HVM_CPUID_UPCALL_VECTOR: u32 = 1 << 6;

/// Leaf 5 EBX: mask of the machine address width.
pub const XEN_CPUID_MACHINE_ADDRESS_WIDTH_MASK: u32 = 0xff;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signature_words_spell_the_string() {
        let mut bytes = [0u8; 12];
        bytes[..4].copy_from_slice(&XEN_CPUID_SIGNATURE_EBX.to_le_bytes());
        bytes[4..8].copy_from_slice(&XEN_CPUID_SIGNATURE_ECX.to_le_bytes());
        bytes[8..].copy_from_slice(&XEN_CPUID_SIGNATURE_EDX.to_le_bytes());
        assert_eq!(&bytes, &XEN_CPUID_SIGNATURE);
        assert!(is_xen_signature(0x566e_6558, 0x6558_4d4d, 0x4d4d_566e));
        assert!(!is_xen_signature(0x6874_7541, 0x444d_4163, 0x6974_6e65)); // "AuthenticAMD"
    }

    #[test]
    fn leaves_and_bits() {
        assert_eq!(xen_cpuid_leaf(XEN_CPUID_FIRST_LEAF, LEAF_HVM), 0x4000_0004);
        assert_eq!(xen_cpuid_leaf(XEN_CPUID_FIRST_LEAF + XEN_CPUID_LEAF_STRIDE, LEAF_HYPERCALL), 0x4000_0102);
        assert_eq!(xen_cpuid_leaf(u32::MAX, 1), 0);
        assert_eq!(XEN_HVM_CPUID_VCPU_ID_PRESENT, 8);
        assert_eq!(XEN_HVM_CPUID_UPCALL_VECTOR, 64);
        assert_eq!(HYPERCALL_PAGE_MSR, 0x4000_0000);
    }
}
