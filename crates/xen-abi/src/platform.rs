//! `platform_op` (hypercall 7): the hardware domain's platform requests (`public/platform.h`).
//!
//! Called as `platform_op(arg)` with a [`XenPlatformOp`]: a command, the interface version
//! (which must be [`XENPF_INTERFACE_VERSION`]) and a 128-byte union holding the command's
//! arguments. The payloads are not modelled one by one; [`XenPlatformOpU`] reads and writes
//! any zerocopy type at its start.

use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

/// The only interface version Xen accepts.
pub const XENPF_INTERFACE_VERSION: u32 = 0x0300_0001;

/// Set the wall clock (32-bit seconds).
pub const XENPF_SETTIME32: u32 = 17;
/// Add an MTRR-style memory type range.
pub const XENPF_ADD_MEMTYPE: u32 = 31;
/// Delete a memory type range.
pub const XENPF_DEL_MEMTYPE: u32 = 32;
/// Read a memory type range.
pub const XENPF_READ_MEMTYPE: u32 = 33;
/// Load CPU microcode.
pub const XENPF_MICROCODE_UPDATE: u32 = 35;
/// Apply a platform quirk.
pub const XENPF_PLATFORM_QUIRK: u32 = 39;
/// Read a physical CPU's version.
pub const XENPF_GET_CPU_VERSION: u32 = 48;
/// Call an EFI runtime service.
pub const XENPF_EFI_RUNTIME_CALL: u32 = 49;
/// Read firmware information (EDD, EFI, ...).
pub const XENPF_FIRMWARE_INFO: u32 = 50;
/// Enter an ACPI sleep state.
pub const XENPF_ENTER_ACPI_SLEEP: u32 = 51;
/// Change a CPU's frequency.
pub const XENPF_CHANGE_FREQ: u32 = 52;
/// Read CPUs' idle time.
pub const XENPF_GETIDLETIME: u32 = 53;
/// Pass ACPI processor power-management information.
pub const XENPF_SET_PROCESSOR_PMINFO: u32 = 54;
/// Read a physical CPU's information.
pub const XENPF_GET_CPUINFO: u32 = 55;
/// Bring a physical CPU online.
pub const XENPF_CPU_ONLINE: u32 = 56;
/// Take a physical CPU offline.
pub const XENPF_CPU_OFFLINE: u32 = 57;
/// Hot-add a CPU.
pub const XENPF_CPU_HOTADD: u32 = 58;
/// Hot-add memory.
pub const XENPF_MEM_HOTADD: u32 = 59;
/// Core parking.
pub const XENPF_CORE_PARKING: u32 = 60;
/// Read or write MSRs on physical CPUs.
pub const XENPF_RESOURCE_OP: u32 = 61;
/// Set the wall clock (64-bit seconds).
pub const XENPF_SETTIME64: u32 = 62;
/// Read the hypervisor's symbol table.
pub const XENPF_GET_SYMBOL: u32 = 63;

raw_union!(
    /// C union `u` of `struct xen_platform_op`: the command's arguments (C `pad[128]` sets the
    /// size; its largest members contain 64-bit fields, hence the 8-byte alignment).
    pub struct XenPlatformOpU, 128, 8
);

/// `struct xen_platform_op`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct XenPlatformOp {
    /// `XENPF_*`.
    pub cmd: u32,
    /// [`XENPF_INTERFACE_VERSION`].
    pub interface_version: u32,
    /// Arguments.
    pub u: XenPlatformOpU,
}

assert_layout!(XenPlatformOpU, 128);
assert_layout!(XenPlatformOp, 136, { cmd: 0, interface_version: 4, u: 8 });

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payload_round_trips() {
        let mut op =
            XenPlatformOp { cmd: XENPF_SETTIME64, interface_version: XENPF_INTERFACE_VERSION, ..Default::default() };
        op.u.write(&[1_700_000_000u64, 5, 42]);
        assert_eq!(op.u.read::<[u64; 3]>(), [1_700_000_000, 5, 42]);
        assert_eq!(op.u.read::<u64>(), 1_700_000_000);
        assert!(op.u.0[24..].iter().all(|&b| b == 0));
    }
}
