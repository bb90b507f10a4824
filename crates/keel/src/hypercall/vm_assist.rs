//! `vm_assist`: the optional behaviours a guest can ask for. An HVM (PVH) guest has one, as on
//! Xen 4.17: `VMASST_TYPE_runstate_update_flag` (XEN_RUNSTATE_UPDATE marks runstate updates
//! in progress).

use core::sync::atomic::Ordering;

use xen_abi::errno::Errno;
use xen_abi::vm_assist::*;

use super::{Call, HcResult, Outcome};

/// The assists an HVM guest may turn on (Xen's `HVM_VM_ASSIST_MASK`).
const VALID: u64 = 1 << VMASST_TYPE_RUNSTATE_UPDATE_FLAG;

/// `vm_assist(cmd, type)`.
pub fn vm_assist(c: &mut Call<'_>, cmd: u32, kind: u32) -> HcResult {
    if kind >= 64 || VALID & (1 << kind) == 0 {
        return Err(Errno::EINVAL);
    }
    match cmd {
        VMASST_CMD_ENABLE => c.domain.vm_assist.fetch_or(1 << kind, Ordering::AcqRel),
        VMASST_CMD_DISABLE => c.domain.vm_assist.fetch_and(!(1 << kind), Ordering::AcqRel),
        _ => return Err(Errno::ENOSYS),
    };
    Ok(Outcome::Ret(0))
}
