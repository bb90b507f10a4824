//! `hvm_op` (hypercall 34): the parameters a PVH guest reads and sets, both ways of taking
//! event upcalls, and the small ops.
//!
//! Xen 4.17: `HVMOP_set_evtchn_upcall_vector` takes vectors from 0x10 (`-EINVAL` below,
//! `-ENOENT` for a missing vCPU) and delivers through the local APIC, so the handler sees the
//! vector in service and must EOI; `HVM_PARAM_CALLBACK_IRQ` of type vector injects directly
//! (not in service, no EOI) on every vCPU while `evtchn_upcall_pending` is set. A guest may
//! read the callback, store and console params; it gets `-EPERM` for the params reserved to
//! the toolstack, `-EINVAL` for deprecated ones and indices from 39. The ops moved to `dm_op`
//! (set_pci_intx_level, ...) are `-ENOSYS`, `pagetable_dying` is `-EINVAL` with hardware
//! paging, `flush_tlbs` wants a NULL argument.

use core::sync::atomic::Ordering;

use xen_abi::hvm::*;
use xen_abi::DomId;

use super::events::{self, count, CALLBACK_VECTOR, ISR_SEEN, UPCALLS, UPCALL_VECTOR, WATCH_ISR};
use super::evtchn::{bind_ipi, close, expect_delivery, send, status};
use super::fw::{ensure, hvmop, nr, num, Msg, EFAULT, EINVAL, ENOENT, ENOSYS, EPERM, ESRCH, R, UNMAPPED};
use super::Ctx;
use crate::checks::Tap;

/// `HVMOP_set_evtchn_upcall_vector` for `vcpu`.
pub fn set_upcall_vector(vcpu: u32, vector: u8) -> i64 {
    let mut v = XenHvmEvtchnUpcallVector { vcpu, vector, _pad0: [0; 3] };
    hvmop(HVMOP_SET_EVTCHN_UPCALL_VECTOR, &mut v)
}

fn param(cmd: u32, domid: DomId, index: u32, value: u64) -> (i64, u64) {
    let mut p = XenHvmParam { domid, pad: 0, index, value };
    let rc = hvmop(cmd, &mut p);
    (rc, p.value)
}

/// `HVMOP_get_param` of this domain.
pub fn get_param(index: u32) -> (i64, u64) {
    param(HVMOP_GET_PARAM, DomId::SELF, index, 0)
}

fn upcall_vector_errors() -> R {
    let rc = set_upcall_vector(0, 0x0f);
    ensure!(rc == EINVAL, "vector 0x0f: rc {rc}, want -EINVAL");
    let rc = set_upcall_vector(1000, UPCALL_VECTOR);
    ensure!(rc == ENOENT, "vCPU 1000: rc {rc}, want -ENOENT");
    let rc = num(nr::HVM_OP, [HVMOP_SET_EVTCHN_UPCALL_VECTOR as u64, UNMAPPED, 0, 0, 0]);
    ensure!(rc == EFAULT, "unmapped argument: rc {rc}, want -EFAULT");
    Ok(())
}

/// Send on an IPI port bound to `vcpu` and watch which handler took it, with the local APIC's
/// ISR sampled in the handler. Returns (upcalls by vector 0xf3, by the callback vector).
fn deliver_and_watch(vcpu: u32) -> Result<(u32, u32), Msg> {
    let p = bind_ipi(vcpu).map_err(|rc| Msg::new(format_args!("bind_ipi: rc {rc}")))?;
    let v = vcpu as usize;
    // Let upcalls still on their way (the ones changing the callback raises) finish first.
    super::fw::wait_until(100, || events::upcall_pending(v) == 0);
    super::fw::pause_us(20_000);
    let before = [UPCALLS[v][0].load(Ordering::Acquire), UPCALLS[v][1].load(Ordering::Acquire)];
    ISR_SEEN[0].store(0, Ordering::Release);
    ISR_SEEN[1].store(0, Ordering::Release);
    WATCH_ISR.store(true, Ordering::Release);
    let seen = count(p);
    let rc = send(p);
    let r = expect_delivery(p, seen, "send");
    WATCH_ISR.store(false, Ordering::Release);
    close(p);
    ensure!(rc == 0, "send: rc {rc}");
    r?;
    Ok((UPCALLS[v][0].load(Ordering::Acquire) - before[0], UPCALLS[v][1].load(Ordering::Acquire) - before[1]))
}

fn upcall_vector_lapic() -> R {
    // The vector is only raised while the local APIC is software-enabled.
    super::fw::lapic_write(0xf0, 0x1ff);
    let rc = set_upcall_vector(0, UPCALL_VECTOR);
    ensure!(rc == 0, "HVMOP_set_evtchn_upcall_vector(0, {UPCALL_VECTOR:#x}): rc {rc}");
    let (lapic, _) = deliver_and_watch(0)?;
    ensure!(lapic >= 1, "no upcall through vector {UPCALL_VECTOR:#x}");
    let isr = ISR_SEEN[0].load(Ordering::Acquire);
    ensure!(isr == 1, "vector {UPCALL_VECTOR:#x} was not in service at the local APIC in its handler (seen {isr})");
    Ok(())
}

fn params_guest_reads(ctx: &Ctx) -> R {
    for (name, index) in [
        ("CALLBACK_IRQ", HVM_PARAM_CALLBACK_IRQ),
        ("STORE_PFN", HVM_PARAM_STORE_PFN),
        ("STORE_EVTCHN", HVM_PARAM_STORE_EVTCHN),
        ("CONSOLE_PFN", HVM_PARAM_CONSOLE_PFN),
        ("CONSOLE_EVTCHN", HVM_PARAM_CONSOLE_EVTCHN),
    ] {
        let (rc, value) = get_param(index);
        ensure!(rc == 0, "get {name}: rc {rc}");
        // A port the toolstack put there is a live channel (unbound or connected).
        if (index == HVM_PARAM_STORE_EVTCHN || index == HVM_PARAM_CONSOLE_EVTCHN) && value != 0 {
            let s = status(value as u32).map_err(|rc| Msg::new(format_args!("status of {name} {value}: rc {rc}")))?;
            ensure!(s.status == 1 || s.status == 2, "{name} {value} has status {}", s.status);
        }
        // dom0 is built by the hypervisor: no xenstore or console ring of a toolstack.
        if ctx.initdomain && index != HVM_PARAM_CALLBACK_IRQ {
            ensure!(value == 0, "dom0's {name} is {value:#x}, want 0");
        }
    }
    Ok(())
}

fn params_errors() -> R {
    for (what, cmd, domid, index, want) in [
        ("get index 39", HVMOP_GET_PARAM, DomId::SELF, HVM_NR_PARAMS, EINVAL),
        ("set index 39", HVMOP_SET_PARAM, DomId::SELF, HVM_NR_PARAMS, EINVAL),
        ("get deprecated PAE_ENABLED", HVMOP_GET_PARAM, DomId::SELF, HVM_PARAM_PAE_ENABLED, EINVAL),
        ("set deprecated PAE_ENABLED", HVMOP_SET_PARAM, DomId::SELF, HVM_PARAM_PAE_ENABLED, EINVAL),
        ("get TIMER_MODE", HVMOP_GET_PARAM, DomId::SELF, HVM_PARAM_TIMER_MODE, EPERM),
        ("set TIMER_MODE", HVMOP_SET_PARAM, DomId::SELF, HVM_PARAM_TIMER_MODE, EPERM),
        ("set STORE_PFN", HVMOP_SET_PARAM, DomId::SELF, HVM_PARAM_STORE_PFN, EPERM),
        ("set IDENT_PT", HVMOP_SET_PARAM, DomId::SELF, HVM_PARAM_IDENT_PT, EPERM),
        ("get of dom 1000", HVMOP_GET_PARAM, DomId(1000), HVM_PARAM_CALLBACK_IRQ, ESRCH),
    ] {
        let (rc, _) = param(cmd, domid, index, 0);
        ensure!(rc == want, "{what}: rc {rc}, want {want}");
    }
    let rc = num(nr::HVM_OP, [HVMOP_GET_PARAM as u64, UNMAPPED, 0, 0, 0]);
    ensure!(rc == EFAULT, "unmapped argument: rc {rc}, want -EFAULT");
    Ok(())
}

fn callback_vector(ctx: &Ctx) -> R {
    let via = ((HVM_PARAM_CALLBACK_TYPE_VECTOR as u64) << 56) | CALLBACK_VECTOR as u64;
    let (rc, _) = param(HVMOP_SET_PARAM, DomId::SELF, HVM_PARAM_CALLBACK_IRQ, via);
    ensure!(rc == 0, "set CALLBACK_IRQ to {via:#x}: rc {rc}");
    let (rc, value) = get_param(HVM_PARAM_CALLBACK_IRQ);
    ensure!(rc == 0 && value == via, "get CALLBACK_IRQ: rc {rc}, value {value:#x}");
    let (_, callback) = deliver_and_watch(0)?;
    ensure!(callback >= 1, "no upcall through the callback vector {CALLBACK_VECTOR:#x}");
    let isr = ISR_SEEN[1].load(Ordering::Acquire);
    ensure!(isr == 2, "the callback vector was in service at the local APIC (it is injected directly)");
    if ctx.smp() && crate::smp::ap_online(1) {
        let (_, callback) = deliver_and_watch(1)?;
        ensure!(callback >= 1, "vCPU 1 took no upcall through the callback vector");
    }
    let _ = events::shinfo();
    Ok(())
}

fn pagetable_dying() -> R {
    let mut d = XenHvmPagetableDying { domid: DomId::SELF, pad: [0; 3], gpa: 0 };
    let rc = hvmop(HVMOP_PAGETABLE_DYING, &mut d);
    ensure!(rc == EINVAL, "self: rc {rc}, want -EINVAL (hardware-assisted paging)");
    let mut d = XenHvmPagetableDying { domid: DomId(1000), pad: [0; 3], gpa: 0 };
    let rc = hvmop(HVMOP_PAGETABLE_DYING, &mut d);
    ensure!(rc == ESRCH, "dom 1000: rc {rc}, want -ESRCH");
    Ok(())
}

fn flush_tlbs() -> R {
    let rc = num(nr::HVM_OP, [HVMOP_FLUSH_TLBS as u64, 0, 0, 0, 0]);
    ensure!(rc == 0, "NULL argument: rc {rc}");
    let rc = num(nr::HVM_OP, [HVMOP_FLUSH_TLBS as u64, UNMAPPED, 0, 0, 0]);
    ensure!(rc == EINVAL, "non-NULL argument: rc {rc}, want -EINVAL");
    Ok(())
}

fn unknown_ops() -> R {
    for (what, op) in [
        ("set_pci_intx_level (dm_op now)", HVMOP_SET_PCI_INTX_LEVEL),
        ("set_isa_irq_level (dm_op now)", HVMOP_SET_ISA_IRQ_LEVEL),
        ("set_pci_link_route (dm_op now)", HVMOP_SET_PCI_LINK_ROUTE),
        ("op 100", 100),
    ] {
        let rc = num(nr::HVM_OP, [op as u64, UNMAPPED, 0, 0, 0]);
        ensure!(rc == ENOSYS, "{what}: rc {rc}, want -ENOSYS");
    }
    Ok(())
}

/// The per-vCPU upcall vector: set up early, everything after it relies on event delivery.
pub fn run_upcall_vector(t: &mut Tap, _ctx: &Ctx) {
    t.run("hvm-upcall-vector-errors", upcall_vector_errors());
    t.run("hvm-upcall-vector-lapic", upcall_vector_lapic());
}

/// The other `hvm-` checks; the callback vector last (a PVH domain cannot turn it off again).
pub fn run(t: &mut Tap, ctx: &Ctx) {
    t.run("hvm-params-guest-reads", params_guest_reads(ctx));
    t.run("hvm-params-errors", params_errors());
    t.run("hvm-pagetable-dying", pagetable_dying());
    t.run("hvm-flush-tlbs", flush_tlbs());
    t.run("hvm-unknown-ops", unknown_ops());
    t.run("hvm-callback-vector", callback_vector(ctx));
}
