//! `hvm_op`: HVM parameters, the per-vCPU event upcall vector, and the small HVM services a
//! PVH guest uses. Which parameters a guest may read or write, and every errno, follow Xen
//! 4.17's `do_hvm_op` for a domain with hardware-assisted paging.

use core::sync::atomic::Ordering;

use xen_abi::errno::Errno;
use xen_abi::hvm::*;

use alloc::sync::Arc;

use super::{Call, Gva, HcResult, Outcome};
use crate::arch::x86::time;
use crate::dom::Domain;

/// `hvm_op(op, arg)`.
pub fn hvm_op(c: &mut Call<'_>, op: u64, arg: Gva) -> HcResult {
    match op {
        o if o == HVMOP_SET_EVTCHN_UPCALL_VECTOR as u64 => {
            let a: XenHvmEvtchnUpcallVector = c.read(arg)?;
            if a.vector < 0x10 {
                return Err(Errno::EINVAL);
            }
            let v = c.domain.vcpus.get(a.vcpu as usize).ok_or(Errno::ENOENT)?;
            log::info!("d{}v{}: upcall vector {:#04x}", c.domain.id, v.id, a.vector);
            v.upcall_vector.store(a.vector, Ordering::Release);
            // Deliver what is already pending (Xen's hvm_assert_evtchn_irq).
            if v.vcpu_info(c.domain).is_some_and(|i| i.upcall_pending().load(Ordering::Acquire) != 0) {
                v.raise_upcall();
            }
            Ok(Outcome::Ret(0))
        }
        o if o == HVMOP_SET_PARAM as u64 => {
            let (a, d) = param_target(c, arg, GUEST_SETTABLE)?;
            let value = match a.index {
                HVM_PARAM_X87_FIP_WIDTH if ![0, 4, 8].contains(&a.value) => return Err(Errno::EINVAL),
                HVM_PARAM_TIMER_MODE if a.value > HVMPTM_ONE_MISSED_TICK_PENDING => return Err(Errno::EINVAL),
                // The legacy PM timer block cannot move on keel (a PVH domain has none).
                HVM_PARAM_ACPI_IOPORTS_LOCATION => return Err(Errno::EINVAL),
                _ => a.value,
            };
            if a.index == HVM_PARAM_CALLBACK_IRQ {
                d.set_callback(value);
            }
            d.params.lock()[a.index as usize] = value;
            Ok(Outcome::Ret(0))
        }
        o if o == HVMOP_GET_PARAM as u64 => {
            let (mut a, d) = param_target(c, arg, GUEST_READABLE)?;
            a.value = d.params.lock()[a.index as usize];
            c.write(arg, &a)?;
            Ok(Outcome::Ret(0))
        }
        o if o == HVMOP_FLUSH_TLBS as u64 => {
            if arg.0 != 0 {
                return Err(Errno::EINVAL);
            }
            c.domain.flush_guest_tlbs();
            Ok(Outcome::Ret(0))
        }
        o if o == HVMOP_PAGETABLE_DYING as u64 => {
            let a: XenHvmPagetableDying = c.read(arg)?;
            let d = super::domain_by_any_id(c, a.domid)?;
            // Only meaningful with shadow paging; keel always has nested paging.
            Err(if d.id != c.domain.id { Errno::EOPNOTSUPP } else { Errno::EINVAL })
        }
        o if o == HVMOP_GET_TIME as u64 => {
            c.write(arg, &XenHvmGetTime { now: time::now_ns() })?;
            Ok(Outcome::Ret(0))
        }
        o if o == HVMOP_GUEST_REQUEST_VM_EVENT as u64 => {
            // No monitor is ever attached on keel: the request is accepted and goes nowhere.
            if arg.0 != 0 {
                return Err(Errno::EINVAL);
            }
            Ok(Outcome::Ret(0))
        }
        _ => Err(Errno::ENOSYS),
    }
}

/// Parameters Xen 4.17 no longer supports (-EINVAL to get and set).
/// The parameters a domain may set on itself (Xen 4.17's `hvm_allow_set_param`); the rest
/// are the toolstack's.
const GUEST_SETTABLE: &[u32] = &[
    HVM_PARAM_CALLBACK_IRQ,
    HVM_PARAM_VM86_TSS,
    HVM_PARAM_VM86_TSS_SIZED,
    HVM_PARAM_ACPI_IOPORTS_LOCATION,
    HVM_PARAM_VM_GENERATION_ID_ADDR,
    HVM_PARAM_STORE_EVTCHN,
    HVM_PARAM_CONSOLE_EVTCHN,
    HVM_PARAM_X87_FIP_WIDTH,
];

/// The parameters a domain may read of itself (Xen 4.17's `hvm_allow_get_param`).
const GUEST_READABLE: &[u32] = &[
    HVM_PARAM_CALLBACK_IRQ,
    HVM_PARAM_VM86_TSS,
    HVM_PARAM_VM86_TSS_SIZED,
    HVM_PARAM_ACPI_IOPORTS_LOCATION,
    HVM_PARAM_VM_GENERATION_ID_ADDR,
    HVM_PARAM_STORE_PFN,
    HVM_PARAM_STORE_EVTCHN,
    HVM_PARAM_CONSOLE_PFN,
    HVM_PARAM_CONSOLE_EVTCHN,
    HVM_PARAM_ALTP2M,
    HVM_PARAM_X87_FIP_WIDTH,
];

/// Read a set/get_param argument and find its domain, with Xen's checks in Xen's order: the
/// index, the domain, then the access (`guest_ok` lists what a domain may do to itself;
/// deprecated parameters are -EINVAL for everyone).
fn param_target(c: &Call<'_>, arg: Gva, guest_ok: &[u32]) -> Result<(XenHvmParam, Arc<Domain>), Errno> {
    let a: XenHvmParam = c.read(arg)?;
    if a.index >= HVM_NR_PARAMS {
        return Err(Errno::EINVAL);
    }
    let d = super::target_domain(c, a.domid)?;
    if !guest_ok.contains(&a.index) {
        if deprecated(a.index) {
            return Err(Errno::EINVAL);
        }
        if d.id == c.domain.id {
            return Err(Errno::EPERM);
        }
    }
    Ok((a, d))
}

fn deprecated(index: u32) -> bool {
    matches!(
        index,
        HVM_PARAM_PAE_ENABLED
            | HVM_PARAM_DM_DOMAIN
            | HVM_PARAM_MEMORY_EVENT_CR0
            | HVM_PARAM_MEMORY_EVENT_CR3
            | HVM_PARAM_MEMORY_EVENT_CR4
            | HVM_PARAM_MEMORY_EVENT_INT3
            | HVM_PARAM_NESTEDHVM
            | HVM_PARAM_MEMORY_EVENT_SINGLE_STEP
            | HVM_PARAM_BUFIOREQ_EVTCHN
            | HVM_PARAM_MEMORY_EVENT_MSR
    )
}
