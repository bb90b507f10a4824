//! `vm_assist` (hypercall 21): optional hypervisor behaviours a guest opts into
//! (`public/xen.h`).
//!
//! Called as `vm_assist(cmd, type)`. Most types are for PV guests; the one an HVM/PVH Linux
//! enables is [`VMASST_TYPE_RUNSTATE_UPDATE_FLAG`].

/// Turn an assist on.
pub const VMASST_CMD_ENABLE: u32 = 0;
/// Turn an assist off.
pub const VMASST_CMD_DISABLE: u32 = 1;

/// x86-32 PV: emulate full 4 GiB segment limits.
pub const VMASST_TYPE_4GB_SEGMENTS: u32 = 0;
/// x86-32 PV: trap whenever that emulation is used.
pub const VMASST_TYPE_4GB_SEGMENTS_NOTIFY: u32 = 1;
/// PV: writable page tables.
pub const VMASST_TYPE_WRITABLE_PAGETABLES: u32 = 2;
/// x86 PAE PV: page directory pointer tables above 4 GiB.
pub const VMASST_TYPE_PAE_EXTENDED_CR3: u32 = 3;
/// PV: architectural IOPL handling.
pub const VMASST_TYPE_ARCHITECTURAL_IOPL: u32 = 4;
/// All guests: set [`crate::vcpu::XEN_RUNSTATE_UPDATE`] in the runstate area while Xen
/// updates it.
pub const VMASST_TYPE_RUNSTATE_UPDATE_FLAG: u32 = 5;
/// x86-64 PV: hide the machine-to-physical table from user mode strictly.
pub const VMASST_TYPE_M2P_STRICT: u32 = 32;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_are_xens() {
        assert_eq!((VMASST_CMD_ENABLE, VMASST_CMD_DISABLE), (0, 1));
        assert_eq!(VMASST_TYPE_RUNSTATE_UPDATE_FLAG, 5);
        assert_eq!(VMASST_TYPE_M2P_STRICT, 32);
    }
}
