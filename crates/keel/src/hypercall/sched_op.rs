//! `sched_op`: yield, block, shutdown.

use xen_abi::domid::DomId;
use xen_abi::errno::Errno;
use xen_abi::sched::*;

use super::{Call, Gva, HcResult, Outcome};
use crate::dom::ShutdownReason;

/// `sched_op(cmd, arg)`.
pub fn sched_op(c: &mut Call<'_>, cmd: u32, arg: Gva) -> HcResult {
    match cmd {
        SCHEDOP_YIELD => Ok(Outcome::Yield),
        SCHEDOP_BLOCK => Ok(Outcome::Block),
        SCHEDOP_SHUTDOWN => {
            let s: SchedShutdown = c.read(arg)?;
            let reason = ShutdownReason::from_xen(s.reason).ok_or(Errno::EINVAL)?;
            c.domain.shutdown(reason);
            Ok(Outcome::Stop)
        }
        SCHEDOP_SHUTDOWN_CODE => {
            let s: SchedShutdown = c.read(arg)?;
            ShutdownReason::from_xen(s.reason).ok_or(Errno::EINVAL)?;
            Ok(Outcome::Ret(0))
        }
        SCHEDOP_REMOTE_SHUTDOWN => {
            if !c.domain.privileged {
                return Err(Errno::EPERM);
            }
            let r: SchedRemoteShutdown = c.read(arg)?;
            let reason = ShutdownReason::from_xen(r.reason).ok_or(Errno::EINVAL)?;
            let id = if r.domain_id == DomId::SELF { c.domain.id } else { r.domain_id.0 };
            let target = crate::dom::get(id).ok_or(Errno::ESRCH)?;
            target.shutdown(reason);
            Ok(if target.id == c.domain.id { Outcome::Stop } else { Outcome::Ret(0) })
        }
        _ => Err(Errno::ENOSYS),
    }
}
