//! `physdev_op`: physical devices and their interrupts. A PVH domain has no PIRQs (Xen gives
//! PVH domains, dom0 included, no emulated PIRQ routing), so the interrupt sub-ops answer
//! -ENOSYS as on Xen 4.17, and so does every sub-op for a domain other than the hardware
//! domain. The hardware domain reports the PCI MMCFG areas it found reserved
//! (`pci_mmcfg_reserved`); keel does not take over the host's MCFG segments yet, so it knows
//! none and answers -ENODEV for well-formed reports, as Xen does for a segment it does not
//! know. The PCI device sub-ops are -ENOSYS until keel tracks PCI devices (Linux's dom0 logs
//! that and carries on).

use xen_abi::errno::Errno;
use xen_abi::physdev::{PhysdevPciMmcfgReserved, PHYSDEVOP_PCI_MMCFG_RESERVED, XEN_PCI_MMCFG_RESERVED};

use super::{Call, Gva, HcResult};

/// `physdev_op(cmd, arg)`.
pub fn physdev_op(c: &mut Call<'_>, cmd: u32, arg: Gva) -> HcResult {
    match cmd {
        PHYSDEVOP_PCI_MMCFG_RESERVED if c.domain.privileged => {
            let info: PhysdevPciMmcfgReserved = c.read(arg)?;
            if info.flags & !XEN_PCI_MMCFG_RESERVED != 0 {
                return Err(Errno::EINVAL);
            }
            Err(Errno::ENODEV)
        }
        _ => Err(Errno::ENOSYS),
    }
}
