//! `sched_op`: a vCPU yields, blocks or polls; a domain shuts down, announces its shutdown
//! reason, runs watchdogs. Errnos follow Xen 4.17's `do_sched_op`.

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
            c.domain.shutdown(ShutdownReason::from_xen(s.reason));
            Ok(Outcome::Stop)
        }
        SCHEDOP_SHUTDOWN_CODE => {
            let s: SchedShutdown = c.read(arg)?;
            c.domain.set_shutdown_code(s.reason as u8);
            Ok(Outcome::Ret(0))
        }
        SCHEDOP_REMOTE_SHUTDOWN => {
            let r: SchedRemoteShutdown = c.read(arg)?;
            // By id only (DOMID_SELF names no domain here), then the privilege check.
            if r.domain_id == DomId::SELF {
                return Err(Errno::ESRCH);
            }
            let target = crate::dom::get(r.domain_id.0).ok_or(Errno::ESRCH)?;
            if !c.domain.privileged {
                return Err(Errno::EPERM);
            }
            target.shutdown(ShutdownReason::from_xen(r.reason));
            Ok(if target.id == c.domain.id { Outcome::Stop } else { Outcome::Ret(0) })
        }
        SCHEDOP_WATCHDOG => {
            let w: SchedWatchdog = c.read(arg)?;
            Ok(Outcome::Ret(c.domain.watchdog(w.id, w.timeout)? as i64))
        }
        SCHEDOP_PIN_OVERRIDE => {
            if !c.domain.privileged {
                return Err(Errno::EPERM);
            }
            // keel has no temporary pinning: dom0's vCPUs run where the scheduler puts them.
            Err(Errno::EOPNOTSUPP)
        }
        _ => Err(Errno::ENOSYS),
    }
}
