//! `physdev_op`: physical devices and their interrupts. A PVH domain has no PIRQs (Xen gives
//! PVH domains, dom0 included, no emulated PIRQ routing), so the interrupt sub-ops answer
//! -ENOSYS as on Xen 4.17; the PCI sub-ops are the hardware domain's, and keel does not track
//! PCI devices yet, so they answer -ENOSYS too (Linux's dom0 logs and carries on).

use xen_abi::errno::Errno;

use super::{Call, Gva, HcResult};

/// `physdev_op(cmd, arg)`.
pub fn physdev_op(_c: &mut Call<'_>, _cmd: u32, _arg: Gva) -> HcResult {
    Err(Errno::ENOSYS)
}
