//! `memory_op`: so far, placing the shared_info page (XENMEM_add_to_physmap).

use keel_mm::Gfn;
use xen_abi::domid::DomId;
use xen_abi::errno::Errno;
use xen_abi::memory::*;

use super::{Call, Gva, HcResult, Outcome};

/// `memory_op(cmd, arg)`: the low bits of `cmd` select the sub-op.
pub fn memory_op(c: &mut Call<'_>, cmd: u64, arg: Gva) -> HcResult {
    match cmd & MEMOP_CMD_MASK {
        XENMEM_ADD_TO_PHYSMAP => {
            let a: XenAddToPhysmap = c.read(arg)?;
            if a.domid != DomId::SELF && a.domid.0 != c.domain.id {
                return Err(Errno::EPERM);
            }
            match a.space {
                XENMAPSPACE_SHARED_INFO if a.idx == 0 => {
                    c.domain.map_shared_info(Gfn::new(a.gpfn.0)).map_err(|_| Errno::EINVAL)?;
                    Ok(Outcome::Ret(0))
                }
                XENMAPSPACE_SHARED_INFO => Err(Errno::EINVAL),
                _ => Err(Errno::ENOSYS),
            }
        }
        _ => Err(Errno::ENOSYS),
    }
}
