//! Hypercall numbers (`public/xen.h`) and the x86-64 HVM calling convention.
//!
//! # Calling convention (64-bit HVM/PVH guest)
//!
//! * The guest executes `vmmcall` (AMD) or `vmcall` (Intel), either directly or through a stub
//!   of the hypercall page (see [`HYPERCALL_STUB_SIZE`]).
//! * **RAX** holds the hypercall number, one of [`nr`].
//! * Arguments 1 to 5 are in **RDI, RSI, RDX, R10, R8** ([`ARG_REGISTERS`]). Most hypercalls
//!   take a sub-op in the first and a guest-virtual pointer ([`crate::GuestHandle`]) to the
//!   sub-op's structure in the second.
//! * The result comes back in **RAX** as a signed `long`: `>= 0` is success (often 0, some
//!   sub-ops return a value), negative is `-errno` ([`crate::Errno::as_ret`]).
//! * Xen only accepts hypercalls from CPL 0 (otherwise `-EPERM`), and answers an unknown
//!   number or sub-op with `-ENOSYS`.
//! * A 32-bit guest uses EAX with EBX, ECX, EDX, ESI, EDI and compat structure layouts; the
//!   types in this crate are the 64-bit layouts only.

use core::fmt;

/// Argument registers of a 64-bit hypercall, in order (argument 1 first).
pub const ARG_REGISTERS: [&str; 5] = ["rdi", "rsi", "rdx", "r10", "r8"];

/// Size of one stub in the hypercall page: stub `n` starts at byte `n * 32`.
pub const HYPERCALL_STUB_SIZE: usize = 32;
/// Number of stubs a 4 KiB hypercall page holds.
pub const HYPERCALL_PAGE_STUBS: usize = crate::XEN_PAGE_SIZE / HYPERCALL_STUB_SIZE;

macro_rules! hypercalls {
    ($($(#[$doc:meta])* $variant:ident = $value:literal => $konst:ident, $name:literal;)*) => {
        /// Hypercall numbers (`__HYPERVISOR_*`) as plain constants, the value RAX carries.
        pub mod nr {
            $($(#[$doc])* pub const $konst: u64 = $value;)*
        }

        /// A hypercall, by number (`__HYPERVISOR_*`).
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
        #[repr(u64)]
        pub enum Hypercall {
            $($(#[$doc])* $variant = $value,)*
        }

        impl Hypercall {
            /// Every hypercall, in increasing order of number.
            pub const ALL: &'static [Hypercall] = &[$(Hypercall::$variant,)*];

            /// The hypercall with number `number`, if Xen defines one.
            pub const fn from_number(number: u64) -> Option<Hypercall> {
                match number {
                    $($value => Some(Hypercall::$variant),)*
                    _ => None,
                }
            }

            /// Xen's name without the `__HYPERVISOR_` prefix, e.g. `"memory_op"`.
            pub const fn name(self) -> &'static str {
                match self {
                    $(Hypercall::$variant => $name,)*
                }
            }
        }
    };
}

hypercalls! {
    /// PV: install the trap table.
    SetTrapTable = 0 => HYPERVISOR_SET_TRAP_TABLE, "set_trap_table";
    /// PV: page-table updates.
    MmuUpdate = 1 => HYPERVISOR_MMU_UPDATE, "mmu_update";
    /// PV: install the GDT.
    SetGdt = 2 => HYPERVISOR_SET_GDT, "set_gdt";
    /// PV: switch the kernel stack.
    StackSwitch = 3 => HYPERVISOR_STACK_SWITCH, "stack_switch";
    /// PV: event and failsafe callbacks.
    SetCallbacks = 4 => HYPERVISOR_SET_CALLBACKS, "set_callbacks";
    /// PV: set or clear CR0.TS.
    FpuTaskswitch = 5 => HYPERVISOR_FPU_TASKSWITCH, "fpu_taskswitch";
    /// Old form of `sched_op` (compat).
    SchedOpCompat = 6 => HYPERVISOR_SCHED_OP_COMPAT, "sched_op_compat";
    /// Platform operations (dom0 only; `xen_platform_op`).
    PlatformOp = 7 => HYPERVISOR_PLATFORM_OP, "platform_op";
    /// PV: write a debug register.
    SetDebugreg = 8 => HYPERVISOR_SET_DEBUGREG, "set_debugreg";
    /// PV: read a debug register.
    GetDebugreg = 9 => HYPERVISOR_GET_DEBUGREG, "get_debugreg";
    /// PV: update a GDT/LDT descriptor.
    UpdateDescriptor = 10 => HYPERVISOR_UPDATE_DESCRIPTOR, "update_descriptor";
    /// Memory reservation and physmap operations (`XENMEM_*`).
    MemoryOp = 12 => HYPERVISOR_MEMORY_OP, "memory_op";
    /// Several hypercalls in one (`multicall_entry` array).
    Multicall = 13 => HYPERVISOR_MULTICALL, "multicall";
    /// PV: update one PTE by virtual address.
    UpdateVaMapping = 14 => HYPERVISOR_UPDATE_VA_MAPPING, "update_va_mapping";
    /// Set the one-shot timer (absolute system time in ns).
    SetTimerOp = 15 => HYPERVISOR_SET_TIMER_OP, "set_timer_op";
    /// Old form of `event_channel_op` (compat).
    EventChannelOpCompat = 16 => HYPERVISOR_EVENT_CHANNEL_OP_COMPAT, "event_channel_op_compat";
    /// Version and feature queries (`XENVER_*`).
    XenVersion = 17 => HYPERVISOR_XEN_VERSION, "xen_version";
    /// Hypervisor console (`CONSOLEIO_*`).
    ConsoleIo = 18 => HYPERVISOR_CONSOLE_IO, "console_io";
    /// Old form of `physdev_op` (compat).
    PhysdevOpCompat = 19 => HYPERVISOR_PHYSDEV_OP_COMPAT, "physdev_op_compat";
    /// Grant-table operations (`GNTTABOP_*`).
    GrantTableOp = 20 => HYPERVISOR_GRANT_TABLE_OP, "grant_table_op";
    /// Enable or disable a VM assist (`VMASST_*`).
    VmAssist = 21 => HYPERVISOR_VM_ASSIST, "vm_assist";
    /// PV: `update_va_mapping` in another domain.
    UpdateVaMappingOtherdomain = 22 => HYPERVISOR_UPDATE_VA_MAPPING_OTHERDOMAIN, "update_va_mapping_otherdomain";
    /// PV: return from an exception (x86 only; `ud2` in an HVM hypercall page).
    Iret = 23 => HYPERVISOR_IRET, "iret";
    /// vCPU operations (`VCPUOP_*`).
    VcpuOp = 24 => HYPERVISOR_VCPU_OP, "vcpu_op";
    /// PV: set FS/GS base (x86-64 only).
    SetSegmentBase = 25 => HYPERVISOR_SET_SEGMENT_BASE, "set_segment_base";
    /// PV: extended MMU operations.
    MmuextOp = 26 => HYPERVISOR_MMUEXT_OP, "mmuext_op";
    /// XSM (FLASK) operations.
    XsmOp = 27 => HYPERVISOR_XSM_OP, "xsm_op";
    /// PV: NMI callback registration.
    NmiOp = 28 => HYPERVISOR_NMI_OP, "nmi_op";
    /// Scheduler operations (`SCHEDOP_*`).
    SchedOp = 29 => HYPERVISOR_SCHED_OP, "sched_op";
    /// PV: callback registration.
    CallbackOp = 30 => HYPERVISOR_CALLBACK_OP, "callback_op";
    /// Profiling (removed in later Xen).
    XenoprofOp = 31 => HYPERVISOR_XENOPROF_OP, "xenoprof_op";
    /// Event-channel operations (`EVTCHNOP_*`).
    EventChannelOp = 32 => HYPERVISOR_EVENT_CHANNEL_OP, "event_channel_op";
    /// Physical-device operations (`PHYSDEVOP_*`).
    PhysdevOp = 33 => HYPERVISOR_PHYSDEV_OP, "physdev_op";
    /// HVM operations (`HVMOP_*`).
    HvmOp = 34 => HYPERVISOR_HVM_OP, "hvm_op";
    /// Toolstack: system control.
    Sysctl = 35 => HYPERVISOR_SYSCTL, "sysctl";
    /// Toolstack: domain control.
    Domctl = 36 => HYPERVISOR_DOMCTL, "domctl";
    /// kexec.
    KexecOp = 37 => HYPERVISOR_KEXEC_OP, "kexec_op";
    /// Transcendent memory (removed).
    TmemOp = 38 => HYPERVISOR_TMEM_OP, "tmem_op";
    /// Argo inter-domain messaging.
    ArgoOp = 39 => HYPERVISOR_ARGO_OP, "argo_op";
    /// PMU virtualisation.
    XenpmuOp = 40 => HYPERVISOR_XENPMU_OP, "xenpmu_op";
    /// Device-model operations.
    DmOp = 41 => HYPERVISOR_DM_OP, "dm_op";
    /// Hypervisor file system.
    HypfsOp = 42 => HYPERVISOR_HYPFS_OP, "hypfs_op";
    /// Architecture-specific 0 (x86: `__HYPERVISOR_mca`, machine-check handling).
    Arch0 = 48 => HYPERVISOR_ARCH_0, "arch_0";
    /// Architecture-specific 1.
    Arch1 = 49 => HYPERVISOR_ARCH_1, "arch_1";
    /// Architecture-specific 2.
    Arch2 = 50 => HYPERVISOR_ARCH_2, "arch_2";
    /// Architecture-specific 3.
    Arch3 = 51 => HYPERVISOR_ARCH_3, "arch_3";
    /// Architecture-specific 4.
    Arch4 = 52 => HYPERVISOR_ARCH_4, "arch_4";
    /// Architecture-specific 5.
    Arch5 = 53 => HYPERVISOR_ARCH_5, "arch_5";
    /// Architecture-specific 6.
    Arch6 = 54 => HYPERVISOR_ARCH_6, "arch_6";
    /// Architecture-specific 7.
    Arch7 = 55 => HYPERVISOR_ARCH_7, "arch_7";
}

impl Hypercall {
    /// `__HYPERVISOR_mca` on x86 (machine-check architecture).
    pub const MCA: Hypercall = Hypercall::Arch0;

    /// The number RAX carries.
    pub const fn number(self) -> u64 {
        self as u64
    }

    /// Offset of this hypercall's stub in the hypercall page.
    pub const fn stub_offset(self) -> usize {
        self as usize * HYPERCALL_STUB_SIZE
    }
}

/// A hypercall number Xen does not define.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct UnknownHypercall(pub u64);

impl fmt::Display for UnknownHypercall {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "unknown hypercall {}", self.0)
    }
}

impl TryFrom<u64> for Hypercall {
    type Error = UnknownHypercall;

    fn try_from(number: u64) -> Result<Self, Self::Error> {
        Self::from_number(number).ok_or(UnknownHypercall(number))
    }
}

impl From<Hypercall> for u64 {
    fn from(h: Hypercall) -> u64 {
        h.number()
    }
}

impl fmt::Display for Hypercall {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::string::ToString;

    #[test]
    fn numbers_are_xens() {
        assert_eq!(nr::HYPERVISOR_PLATFORM_OP, 7);
        assert_eq!(nr::HYPERVISOR_MEMORY_OP, 12);
        assert_eq!(nr::HYPERVISOR_MULTICALL, 13);
        assert_eq!(nr::HYPERVISOR_SET_TIMER_OP, 15);
        assert_eq!(nr::HYPERVISOR_XEN_VERSION, 17);
        assert_eq!(nr::HYPERVISOR_CONSOLE_IO, 18);
        assert_eq!(nr::HYPERVISOR_GRANT_TABLE_OP, 20);
        assert_eq!(nr::HYPERVISOR_VM_ASSIST, 21);
        assert_eq!(nr::HYPERVISOR_IRET, 23);
        assert_eq!(nr::HYPERVISOR_VCPU_OP, 24);
        assert_eq!(nr::HYPERVISOR_SCHED_OP, 29);
        assert_eq!(nr::HYPERVISOR_EVENT_CHANNEL_OP, 32);
        assert_eq!(nr::HYPERVISOR_PHYSDEV_OP, 33);
        assert_eq!(nr::HYPERVISOR_HVM_OP, 34);
        assert_eq!(nr::HYPERVISOR_SYSCTL, 35);
        assert_eq!(nr::HYPERVISOR_DOMCTL, 36);
        assert_eq!(nr::HYPERVISOR_DM_OP, 41);
        assert_eq!(nr::HYPERVISOR_HYPFS_OP, 42);
        assert_eq!(nr::HYPERVISOR_ARCH_0, 48);
        assert_eq!(nr::HYPERVISOR_ARCH_7, 55);
        assert_eq!(Hypercall::MCA.number(), 48);
    }

    #[test]
    fn try_from_known_numbers() {
        assert_eq!(Hypercall::try_from(12), Ok(Hypercall::MemoryOp));
        assert_eq!(Hypercall::try_from(34), Ok(Hypercall::HvmOp));
        assert_eq!(Hypercall::try_from(0), Ok(Hypercall::SetTrapTable));
        for &h in Hypercall::ALL {
            assert_eq!(Hypercall::try_from(h.number()), Ok(h));
            assert_eq!(u64::from(h), h as u64);
        }
        assert_eq!(Hypercall::ALL.len(), 42 + 8);
    }

    #[test]
    fn unknown_numbers_are_errors() {
        for n in [11, 43, 44, 47, 56, 64, 128, u64::MAX, 1 << 32] {
            assert_eq!(Hypercall::try_from(n), Err(UnknownHypercall(n)), "{n}");
        }
    }

    #[test]
    fn names_and_stubs() {
        assert_eq!(Hypercall::MemoryOp.name(), "memory_op");
        assert_eq!(Hypercall::EventChannelOp.to_string(), "event_channel_op");
        assert_eq!(Hypercall::Arch0.name(), "arch_0");
        assert_eq!(Hypercall::Iret.stub_offset(), 23 * 32);
        assert_eq!(HYPERCALL_PAGE_STUBS, 128);
        assert!(Hypercall::ALL.iter().all(|h| h.stub_offset() + HYPERCALL_STUB_SIZE <= crate::XEN_PAGE_SIZE));
        assert_eq!(ARG_REGISTERS, ["rdi", "rsi", "rdx", "r10", "r8"]);
    }

    proptest! {
        #[test]
        fn try_from_agrees_with_the_table(n in any::<u64>()) {
            match Hypercall::try_from(n) {
                Ok(h) => prop_assert_eq!(h.number(), n),
                Err(e) => {
                    prop_assert_eq!(e, UnknownHypercall(n));
                    prop_assert!(Hypercall::ALL.iter().all(|h| h.number() != n));
                }
            }
        }
    }
}
