//! `sched_op`: a vCPU yields, blocks or polls; a domain shuts down, announces its shutdown
//! reason, runs watchdogs. Errnos follow Xen 4.17's `do_sched_op`.

use xen_abi::domid::DomId;
use xen_abi::errno::Errno;
use xen_abi::sched::*;

use super::{Call, Gva, HcResult, Outcome};
use crate::dom::events;
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
        SCHEDOP_POLL => poll(c, arg),
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

/// Most ports one SCHEDOP_poll may name (Xen's "fairly arbitrary limit").
const POLL_MAX_PORTS: u32 = 128;

/// SCHEDOP_poll: return at once if an interrupt or event is pending or one of the ports is,
/// else block until one of the ports becomes pending, the vCPU is woken otherwise, or the
/// timeout (absolute system time; 0: none) passes. Returns 0 in every such case, as Xen.
fn poll(c: &mut Call<'_>, arg: Gva) -> HcResult {
    let p: SchedPoll = c.read(arg)?;
    if p.nr_ports > POLL_MAX_PORTS {
        return Err(Errno::EINVAL);
    }
    let mut ports = [0u32; POLL_MAX_PORTS as usize];
    for (i, slot) in ports.iter_mut().take(p.nr_ports as usize).enumerate() {
        *slot = c.read::<u32>(Gva(p.ports.addr().wrapping_add(4 * i as u64)))?;
    }
    let ports = &ports[..p.nr_ports as usize];
    // Announce the poll before looking, so an event raised meanwhile wakes the vCPU.
    let announce = if ports.len() == 1 { ports[0] } else { events::ANY_PORT };
    c.vcpu.begin_block();
    c.vcpu.polling.store(announce, core::sync::atomic::Ordering::SeqCst);
    if c.vcpu.has_work(c.irqs_open) {
        c.vcpu.polling.store(0, core::sync::atomic::Ordering::Release);
        return Ok(Outcome::Ret(0));
    }
    for &port in ports {
        match events::is_pending(c.domain, xen_abi::EvtchnPort(port)) {
            Ok(false) => {}
            Ok(true) => {
                c.vcpu.polling.store(0, core::sync::atomic::Ordering::Release);
                return Ok(Outcome::Ret(0));
            }
            Err(e) => {
                c.vcpu.polling.store(0, core::sync::atomic::Ordering::Release);
                return Err(e);
            }
        }
    }
    Ok(Outcome::BlockUntil((p.timeout != 0).then_some(p.timeout)))
}
