//! `vcpu_op`: a guest manages its vCPUs — bring-up (initialise, up, down, is_up), Xen timers,
//! where its vcpu_info and runstate live, NMIs. Behaviour and errnos follow Xen 4.17's
//! `do_vcpu_op` / `common_vcpu_op` for an HVM (PVH) domain.

use alloc::sync::Arc;
use core::sync::atomic::Ordering;

use keel_mm::Gfn;
use xen_abi::errno::Errno;
use xen_abi::vcpu::*;

use super::{Call, Gva, HcResult, Outcome};
use crate::dom::exits;
use crate::dom::memory::PinnedPage;
use crate::dom::shared::{RegisteredVcpuInfo, VCPU_INFO_SIZE};
use crate::dom::vcpu::{RunState, Vcpu};

/// Longest periodic timer period Xen accepts (`STIME_DELTA_MAX`, 2^62 ns).
const PERIOD_MAX_NS: u64 = 1 << 62;
/// Shortest periodic timer period (1 ms).
const PERIOD_MIN_NS: u64 = 1_000_000;

/// `vcpu_op(cmd, vcpuid, arg)`.
pub fn vcpu_op(c: &mut Call<'_>, cmd: u32, vcpuid: u32, arg: Gva) -> HcResult {
    let v = c.domain.vcpus.get(vcpuid as usize).ok_or(Errno::ENOENT)?.clone();
    let is_current = Arc::ptr_eq(&v, c.vcpu);
    match cmd {
        VCPUOP_INITIALISE => initialise(c, &v, arg),
        VCPUOP_UP => {
            if !v.initialised.load(Ordering::Acquire) {
                return Err(Errno::EINVAL);
            }
            if v.state() == RunState::Offline {
                v.start();
            }
            Ok(Outcome::Ret(0))
        }
        VCPUOP_DOWN => {
            // The last vCPU going down powers the domain off (Xen's rule).
            let others_up = c.domain.vcpus.iter().any(|o| o.id != v.id && o.state() != RunState::Offline);
            if !others_up {
                c.domain.shutdown(crate::dom::ShutdownReason::Poweroff);
                return Ok(Outcome::Stop);
            }
            v.stop();
            Ok(if is_current { Outcome::Offline } else { Outcome::Ret(0) })
        }
        VCPUOP_IS_UP => Ok(Outcome::Ret((v.state() != RunState::Offline) as i64)),
        VCPUOP_GET_RUNSTATE_INFO => {
            c.write(arg, &v.runstate_info())?;
            Ok(Outcome::Ret(0))
        }
        VCPUOP_REGISTER_RUNSTATE_MEMORY_AREA => {
            let area: VcpuRegisterRunstateMemoryArea = c.read(arg)?;
            v.runstate_area.store(area.addr.addr(), Ordering::Release);
            // Written at once (through the caller's page tables), faults ignored, as Xen.
            let _ = c.write(Gva(area.addr.addr()), &v.runstate_info());
            Ok(Outcome::Ret(0))
        }
        VCPUOP_SET_PERIODIC_TIMER => {
            let set: VcpuSetPeriodicTimer = c.read(arg)?;
            if !(PERIOD_MIN_NS..=PERIOD_MAX_NS).contains(&set.period_ns) {
                return Err(Errno::EINVAL);
            }
            v.set_periodic(set.period_ns);
            Ok(Outcome::Ret(0))
        }
        VCPUOP_STOP_PERIODIC_TIMER => {
            v.set_periodic(0);
            Ok(Outcome::Ret(0))
        }
        VCPUOP_SET_SINGLESHOT_TIMER => {
            if !is_current {
                return Err(Errno::EINVAL);
            }
            let set: VcpuSetSingleshotTimer = c.read(arg)?;
            // Xen 4.17 ignores the flags (VCPU_SSHOTTMR_future included): a deadline already
            // past fires at once.
            v.set_singleshot(Some(set.timeout_abs_ns));
            Ok(Outcome::Ret(0))
        }
        VCPUOP_STOP_SINGLESHOT_TIMER => {
            if !is_current {
                return Err(Errno::EINVAL);
            }
            v.set_singleshot(None);
            Ok(Outcome::Ret(0))
        }
        VCPUOP_REGISTER_VCPU_INFO => {
            let info: VcpuRegisterVcpuInfo = c.read(arg)?;
            register_vcpu_info(c, &v, is_current, info)?;
            Ok(Outcome::Ret(0))
        }
        VCPUOP_SEND_NMI => {
            if arg.0 != 0 {
                return Err(Errno::EINVAL);
            }
            v.inject_nmi();
            Ok(Outcome::Ret(0))
        }
        // Only a hardware domain whose vCPUs are pinned one-to-one to physical CPUs may ask;
        // keel never pins them (nor does Xen by default).
        VCPUOP_GET_PHYSID => Err(Errno::EINVAL),
        VCPUOP_REGISTER_VCPU_TIME_MEMORY_AREA => {
            let area: VcpuRegisterTimeMemoryArea = c.read(arg)?;
            // keel's pvclock parameters never change (see `dom::shared`): one write is all the
            // updates the area will ever need. Faults are ignored, as Xen ignores them.
            let info = crate::dom::shared::time_info(2);
            let _ = c.write(Gva(area.addr.addr()), &info);
            Ok(Outcome::Ret(0))
        }
        _ => Err(Errno::ENOSYS),
    }
}

/// VCPUOP_initialise for a PVH vCPU: a `vcpu_hvm_context`.
fn initialise(c: &mut Call<'_>, v: &Arc<Vcpu>, arg: Gva) -> HcResult {
    if v.vcpu_info(c.domain).is_none() {
        return Err(Errno::EINVAL);
    }
    let ctx: VcpuHvmContext = c.read(arg)?;
    if v.initialised.load(Ordering::Acquire) {
        return Err(Errno::EEXIST);
    }
    let cr4_valid = keel_guest::cpuid::cr4_valid_bits(&exits::host_cpuid, &exits::cpuid_context(v, c.hw));
    let st = keel_guest::vcpu_context::validate(&ctx, cr4_valid).map_err(|_| Errno::EINVAL)?;
    v.with_hw(|hw| {
        hw.cpu.reset_initial(&st);
        hw.msrs = keel_guest::msr::MsrState::default();
    })
    .ok_or(Errno::EINVAL)?;
    v.initialised.store(true, Ordering::Release);
    Ok(Outcome::Ret(0))
}

/// VCPUOP_register_vcpu_info: move `v`'s vcpu_info into its own RAM (Xen's `map_vcpu_info`).
fn register_vcpu_info(c: &Call<'_>, v: &Arc<Vcpu>, is_current: bool, info: VcpuRegisterVcpuInfo) -> Result<(), Errno> {
    let offset = info.offset as usize;
    if offset > 4096 - VCPU_INFO_SIZE || !offset.is_multiple_of(8) {
        return Err(Errno::ENXIO);
    }
    if v.vcpu_info.get().is_some() {
        return Err(Errno::EINVAL);
    }
    // On itself, or on another vCPU that is down.
    if !is_current && v.state() != RunState::Offline {
        return Err(Errno::EINVAL);
    }
    let page = PinnedPage::pin(&c.domain.mem, Gfn::new(info.mfn.0)).map_err(|_| Errno::EINVAL)?;
    let old = v.vcpu_info(c.domain).map(|i| i.read());
    let mut installed = false;
    v.vcpu_info.call_once(|| {
        installed = true;
        RegisteredVcpuInfo::new(page, offset)
    });
    if !installed {
        return Err(Errno::EINVAL); // another CPU registered one meanwhile
    }
    if let Some(reg) = v.vcpu_info.get() {
        c.domain.evtchn.lock().shared_mut().set_vcpu_info(v.id, reg.va());
    }
    let new = v.vcpu_info(c.domain).ok_or(Errno::EINVAL)?;
    match old {
        Some(bytes) => new.write(&bytes),
        None => {
            // Had none (a vCPU beyond 31): a fresh one, upcalls masked (PV semantics).
            new.write(&[0; VCPU_INFO_SIZE]);
            new.upcall_mask().store(1, Ordering::Relaxed);
        }
    }
    new.publish_time();
    // Everything may be pending: the guest gets a spurious upcall rather than a lost one.
    new.pending_sel().store(u64::MAX, Ordering::Release);
    if new.upcall_pending().swap(1, Ordering::AcqRel) == 0 {
        v.raise_upcall();
    }
    Ok(())
}
