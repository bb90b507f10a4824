//! `vcpu_op` (hypercall 24): per-vCPU operations (`public/vcpu.h`, `public/hvm/hvm_vcpu.h`).
//!
//! Called as `vcpu_op(cmd, vcpuid, arg)`: the second argument names the target vCPU, the third
//! points to the sub-op's structure.

use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

use crate::guest_handle::GuestHandle;
use crate::memory::XenPfn;
use crate::shared_info::{VcpuInfo, VcpuTimeInfo};

/// Set the initial state of an offline vCPU ([`VcpuHvmContext`] for HVM/PVH).
pub const VCPUOP_INITIALISE: u32 = 0;
/// Bring an initialised vCPU online.
pub const VCPUOP_UP: u32 = 1;
/// Take a vCPU offline.
pub const VCPUOP_DOWN: u32 = 2;
/// Returns 1 if the vCPU is up, 0 if not.
pub const VCPUOP_IS_UP: u32 = 3;
/// Copy the vCPU's [`VcpuRunstateInfo`] to `arg`.
pub const VCPUOP_GET_RUNSTATE_INFO: u32 = 4;
/// Register where Xen keeps the vCPU's runstate ([`VcpuRegisterRunstateMemoryArea`]).
pub const VCPUOP_REGISTER_RUNSTATE_MEMORY_AREA: u32 = 5;
/// Start a periodic timer ([`VcpuSetPeriodicTimer`]).
pub const VCPUOP_SET_PERIODIC_TIMER: u32 = 6;
/// Stop the periodic timer.
pub const VCPUOP_STOP_PERIODIC_TIMER: u32 = 7;
/// Arm the one-shot timer ([`VcpuSetSingleshotTimer`]).
pub const VCPUOP_SET_SINGLESHOT_TIMER: u32 = 8;
/// Disarm the one-shot timer.
pub const VCPUOP_STOP_SINGLESHOT_TIMER: u32 = 9;
/// Move the vCPU's [`VcpuInfo`] out of the shared-info page ([`VcpuRegisterVcpuInfo`]).
pub const VCPUOP_REGISTER_VCPU_INFO: u32 = 10;
/// Send an NMI to the vCPU.
pub const VCPUOP_SEND_NMI: u32 = 11;
/// Read the physical CPU's APIC and ACPI ids ([`VcpuGetPhysid`]; privileged).
pub const VCPUOP_GET_PHYSID: u32 = 12;
/// Register a second copy of the vCPU's time info ([`VcpuRegisterTimeMemoryArea`]).
pub const VCPUOP_REGISTER_VCPU_TIME_MEMORY_AREA: u32 = 13;
/// Like `register_runstate_memory_area` with a guest-physical address. Added in Xen 4.18
/// (4.17 answers `-ENOSYS`).
pub const VCPUOP_REGISTER_RUNSTATE_PHYS_AREA: u32 = 14;
/// Like `register_vcpu_time_memory_area` with a guest-physical address. Added in Xen 4.18.
pub const VCPUOP_REGISTER_VCPU_TIME_PHYS_AREA: u32 = 15;

/// The vCPU is running on a physical CPU.
pub const RUNSTATE_RUNNING: i32 = 0;
/// The vCPU could run but is waiting for a physical CPU.
pub const RUNSTATE_RUNNABLE: i32 = 1;
/// The vCPU is blocked (waiting for an event).
pub const RUNSTATE_BLOCKED: i32 = 2;
/// The vCPU is down or paused.
pub const RUNSTATE_OFFLINE: i32 = 3;

/// Bit 63 of `state_entry_time`: set while Xen updates the runstate area (when the guest
/// enabled `VMASST_TYPE_runstate_update_flag`).
pub const XEN_RUNSTATE_UPDATE: u64 = 1 << 63;

/// `flags` of [`VcpuSetSingleshotTimer`]: fail with `-ETIME` if the timeout has passed. Xen
/// 4.17 honours it; from 4.18 Xen ignores it and always fires.
pub const VCPU_SSHOTTMR_FUTURE: u32 = 1 << 0;

/// `struct vcpu_runstate_info`: how long a vCPU spent in each state.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct VcpuRunstateInfo {
    /// Current `RUNSTATE_*`.
    pub state: i32,
    /// Padding.
    pub _pad0: u32,
    /// System time (ns) when `state` was entered; bit 63 may be [`XEN_RUNSTATE_UPDATE`].
    pub state_entry_time: u64,
    /// Total ns spent in each state, indexed by `RUNSTATE_*`.
    pub time: [u64; 4],
}

/// `struct vcpu_register_runstate_memory_area`: where Xen should keep the runstate
/// (a guest-virtual address; a C union of handle, pointer and `u64`, all the same 8 bytes).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct VcpuRegisterRunstateMemoryArea {
    /// Guest-virtual address of a [`VcpuRunstateInfo`].
    pub addr: GuestHandle<VcpuRunstateInfo>,
}

/// `struct vcpu_register_time_memory_area`: where Xen should keep a second copy of the
/// vCPU's time info (guest-virtual; same union as the runstate area).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct VcpuRegisterTimeMemoryArea {
    /// Guest-virtual address of a [`VcpuTimeInfo`].
    pub addr: GuestHandle<VcpuTimeInfo>,
}

/// `struct vcpu_set_periodic_timer`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct VcpuSetPeriodicTimer {
    /// Period in ns (Xen enforces at least 1 ms).
    pub period_ns: u64,
}

/// `struct vcpu_set_singleshot_timer`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct VcpuSetSingleshotTimer {
    /// Absolute system time (ns, the pvclock base) to fire at.
    pub timeout_abs_ns: u64,
    /// [`VCPU_SSHOTTMR_FUTURE`] or 0.
    pub flags: u32,
    /// Padding.
    pub _pad0: u32,
}

/// `struct vcpu_register_vcpu_info`: where the vCPU's [`VcpuInfo`] should live from now on.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct VcpuRegisterVcpuInfo {
    /// Frame holding the area (a guest frame number for HVM/PVH, despite the C name `mfn`).
    pub mfn: XenPfn,
    /// Byte offset of the area in that frame (the whole [`VcpuInfo`] must fit in the page).
    pub offset: u32,
    /// Unused.
    pub rsvd: u32,
}

impl VcpuRegisterVcpuInfo {
    /// True if a [`VcpuInfo`] at `offset` stays inside one page (Xen's first check; it also
    /// wants 8-byte alignment, see [`Self::is_aligned`]).
    pub const fn fits_in_page(&self) -> bool {
        (self.offset as usize) <= crate::XEN_PAGE_SIZE - core::mem::size_of::<VcpuInfo>()
    }

    /// True if `offset` is suitably aligned for a [`VcpuInfo`] (8 bytes).
    pub const fn is_aligned(&self) -> bool {
        self.offset.is_multiple_of(8)
    }
}

/// `struct vcpu_get_physid`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct VcpuGetPhysid {
    /// APIC id in bits 31:0, ACPI id in bits 63:32.
    pub phys_id: u64,
}

impl VcpuGetPhysid {
    /// `xen_vcpu_physid_to_x86_apicid`.
    pub const fn apic_id(&self) -> u32 {
        self.phys_id as u32
    }

    /// `xen_vcpu_physid_to_x86_acpiid`.
    pub const fn acpi_id(&self) -> u32 {
        (self.phys_id >> 32) as u32
    }
}

/// `vcpu_hvm_context.mode`: use the 32-bit register set.
pub const VCPU_HVM_MODE_32B: u32 = 0;
/// `vcpu_hvm_context.mode`: use the 64-bit register set.
pub const VCPU_HVM_MODE_64B: u32 = 1;

/// `struct vcpu_hvm_x86_32`: initial state of a vCPU started in 32-bit protected mode.
/// Segment attributes (`*_ar`) use the VMX access-rights layout.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct VcpuHvmX86_32 {
    /// EAX.
    pub eax: u32,
    /// ECX.
    pub ecx: u32,
    /// EDX.
    pub edx: u32,
    /// EBX.
    pub ebx: u32,
    /// ESP.
    pub esp: u32,
    /// EBP.
    pub ebp: u32,
    /// ESI.
    pub esi: u32,
    /// EDI.
    pub edi: u32,
    /// EIP.
    pub eip: u32,
    /// EFLAGS.
    pub eflags: u32,
    /// CR0.
    pub cr0: u32,
    /// CR3.
    pub cr3: u32,
    /// CR4.
    pub cr4: u32,
    /// Padding (C `pad1`).
    pub pad1: u32,
    /// EFER; only LME/LMA/NXE/SCE are meaningful.
    pub efer: u64,
    /// CS segment base.
    pub cs_base: u32,
    /// DS segment base.
    pub ds_base: u32,
    /// SS segment base.
    pub ss_base: u32,
    /// ES segment base.
    pub es_base: u32,
    /// TR segment base.
    pub tr_base: u32,
    /// CS segment limit.
    pub cs_limit: u32,
    /// DS segment limit.
    pub ds_limit: u32,
    /// SS segment limit.
    pub ss_limit: u32,
    /// ES segment limit.
    pub es_limit: u32,
    /// TR segment limit.
    pub tr_limit: u32,
    /// CS segment access rights (VMX layout).
    pub cs_ar: u16,
    /// DS segment access rights (VMX layout).
    pub ds_ar: u16,
    /// SS segment access rights (VMX layout).
    pub ss_ar: u16,
    /// ES segment access rights (VMX layout).
    pub es_ar: u16,
    /// TR segment access rights (VMX layout).
    pub tr_ar: u16,
    /// Padding (C `pad2`).
    pub pad2: [u16; 3],
}

/// `struct vcpu_hvm_x86_64`: initial state of a vCPU started in 64-bit mode (flat segments
/// implied; the guest must load its own GDT before reloading any segment).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct VcpuHvmX86_64 {
    /// RAX.
    pub rax: u64,
    /// RCX.
    pub rcx: u64,
    /// RDX.
    pub rdx: u64,
    /// RBX.
    pub rbx: u64,
    /// RSP.
    pub rsp: u64,
    /// RBP.
    pub rbp: u64,
    /// RSI.
    pub rsi: u64,
    /// RDI.
    pub rdi: u64,
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
    /// EFER.
    pub efer: u64,
}

raw_union!(
    /// C union `cpu_regs` of [`VcpuHvmContext`]: an [`VcpuHvmX86_32`] or an [`VcpuHvmX86_64`].
    pub struct VcpuHvmCpuRegs, 120, 8
);

/// `struct vcpu_hvm_context`: argument of `VCPUOP_initialise` for HVM/PVH vCPUs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct VcpuHvmContext {
    /// `VCPU_HVM_MODE_*`: which member of `cpu_regs` is valid.
    pub mode: u32,
    /// Padding (C `pad`).
    pub pad: u32,
    /// The registers, as raw bytes; read them with [`VcpuHvmContext::regs`].
    pub cpu_regs: VcpuHvmCpuRegs,
}

/// The register set of a [`VcpuHvmContext`], chosen by its `mode`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VcpuHvmRegs {
    /// [`VCPU_HVM_MODE_32B`].
    X86_32(VcpuHvmX86_32),
    /// [`VCPU_HVM_MODE_64B`].
    X86_64(VcpuHvmX86_64),
}

/// A `vcpu_hvm_context.mode` Xen does not define (Xen answers `-EINVAL`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct UnknownHvmMode(pub u32);

impl VcpuHvmContext {
    /// A context with the given registers (mode set to match).
    pub fn new(regs: VcpuHvmRegs) -> Self {
        let mut ctx = Self::default();
        ctx.set_regs(regs);
        ctx
    }

    /// The registers the guest supplied, per `mode`.
    pub fn regs(&self) -> Result<VcpuHvmRegs, UnknownHvmMode> {
        match self.mode {
            VCPU_HVM_MODE_32B => Ok(VcpuHvmRegs::X86_32(self.cpu_regs.read())),
            VCPU_HVM_MODE_64B => Ok(VcpuHvmRegs::X86_64(self.cpu_regs.read())),
            other => Err(UnknownHvmMode(other)),
        }
    }

    /// Sets the registers and the matching `mode`.
    pub fn set_regs(&mut self, regs: VcpuHvmRegs) {
        match regs {
            VcpuHvmRegs::X86_32(r) => {
                self.mode = VCPU_HVM_MODE_32B;
                self.cpu_regs.write(&r);
            }
            VcpuHvmRegs::X86_64(r) => {
                self.mode = VCPU_HVM_MODE_64B;
                self.cpu_regs.write(&r);
            }
        }
    }
}

assert_layout!(VcpuRunstateInfo, 48, { state: 0, state_entry_time: 8, time: 16 });
assert_layout!(VcpuRegisterRunstateMemoryArea, 8, { addr: 0 });
assert_layout!(VcpuRegisterTimeMemoryArea, 8, { addr: 0 });
assert_layout!(VcpuSetPeriodicTimer, 8, { period_ns: 0 });
assert_layout!(VcpuSetSingleshotTimer, 16, { timeout_abs_ns: 0, flags: 8 });
assert_layout!(VcpuRegisterVcpuInfo, 16, { mfn: 0, offset: 8, rsvd: 12 });
assert_layout!(VcpuGetPhysid, 8, { phys_id: 0 });
assert_layout!(VcpuHvmX86_32, 120, {
    eax: 0, ecx: 4, edx: 8, ebx: 12, esp: 16, ebp: 20, esi: 24, edi: 28, eip: 32, eflags: 36,
    cr0: 40, cr3: 44, cr4: 48, pad1: 52, efer: 56,
    cs_base: 64, ds_base: 68, ss_base: 72, es_base: 76, tr_base: 80,
    cs_limit: 84, ds_limit: 88, ss_limit: 92, es_limit: 96, tr_limit: 100,
    cs_ar: 104, ds_ar: 106, ss_ar: 108, es_ar: 110, tr_ar: 112, pad2: 114,
});
assert_layout!(VcpuHvmX86_64, 112, {
    rax: 0, rcx: 8, rdx: 16, rbx: 24, rsp: 32, rbp: 40, rsi: 48, rdi: 56,
    rip: 64, rflags: 72, cr0: 80, cr3: 88, cr4: 96, efer: 104,
});
assert_layout!(VcpuHvmCpuRegs, 120);
assert_layout!(VcpuHvmContext, 128, { mode: 0, pad: 4, cpu_regs: 8 });

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hvm_context_round_trips_both_modes() {
        let r32 = VcpuHvmX86_32 { eip: 0x1000, cs_limit: !0, cs_ar: 0xc9b, tr_ar: 0x8b, ..Default::default() };
        let mut ctx = VcpuHvmContext::new(VcpuHvmRegs::X86_32(r32));
        assert_eq!(ctx.mode, VCPU_HVM_MODE_32B);
        assert_eq!(ctx.regs(), Ok(VcpuHvmRegs::X86_32(r32)));
        // tr_ar sits at byte 8 + 112 of the context, beyond the end of the 64-bit member.
        assert_eq!(&ctx.as_bytes()[120..122], &0x8bu16.to_ne_bytes());

        let r64 = VcpuHvmX86_64 { rip: 0x10_0000, rsp: 0x8000, cr0: 0x8000_0011, efer: 0x500, ..Default::default() };
        ctx.set_regs(VcpuHvmRegs::X86_64(r64));
        assert_eq!(ctx.mode, VCPU_HVM_MODE_64B);
        assert_eq!(ctx.regs(), Ok(VcpuHvmRegs::X86_64(r64)));
        assert_eq!(&ctx.as_bytes()[72..80], &0x10_0000u64.to_ne_bytes());
        // Switching members leaves nothing of the old one behind.
        assert!(ctx.as_bytes()[120..].iter().all(|&b| b == 0));
    }

    #[test]
    fn hvm_context_rejects_unknown_modes() {
        let ctx = VcpuHvmContext { mode: 2, ..Default::default() };
        assert_eq!(ctx.regs(), Err(UnknownHvmMode(2)));
    }

    #[test]
    fn vcpu_info_placement_checks() {
        let at = |offset| VcpuRegisterVcpuInfo { mfn: XenPfn(0x1234), offset, rsvd: 0 };
        assert!(at(0).fits_in_page() && at(0).is_aligned());
        assert!(at(4096 - 64).fits_in_page());
        assert!(!at(4096 - 63).fits_in_page());
        assert!(!at(u32::MAX).fits_in_page());
        assert!(!at(4).is_aligned());
    }

    #[test]
    fn physid_halves() {
        let p = VcpuGetPhysid { phys_id: 0x0000_0007_0000_0002 };
        assert_eq!((p.apic_id(), p.acpi_id()), (2, 7));
    }

    #[test]
    fn sub_ops_are_xens() {
        assert_eq!(VCPUOP_REGISTER_RUNSTATE_MEMORY_AREA, 5);
        assert_eq!(VCPUOP_SET_SINGLESHOT_TIMER, 8);
        assert_eq!(VCPUOP_REGISTER_VCPU_INFO, 10);
        assert_eq!(VCPUOP_REGISTER_VCPU_TIME_MEMORY_AREA, 13);
        assert_eq!(VCPUOP_REGISTER_VCPU_TIME_PHYS_AREA, 15);
        assert_eq!(XEN_RUNSTATE_UPDATE, 0x8000_0000_0000_0000);
    }
}
