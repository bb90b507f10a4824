//! `sched_op` (hypercall 29): yield, block, poll, shutdown_code, remote_shutdown, watchdog.
//!
//! Xen 4.17: `SCHEDOP_block` on an HVM vCPU returns at once only when an interrupt is pending
//! and deliverable (RFLAGS.IF set, no interrupt shadow); otherwise it sleeps until the next
//! event wakes the vCPU. `SCHEDOP_poll` returns 0 at once when a port is pending (masked or
//! not), otherwise when one becomes pending or the absolute timeout passes; more than 128
//! ports is `-EINVAL`, an invalid port `-EINVAL`, an unreadable list `-EFAULT`.
//! `SCHEDOP_watchdog` id 0 creates one of two watchdogs (returns its id), timeout 0 destroys.

use core::sync::atomic::{AtomicU32, Ordering};

use xen_abi::event_channel::{NR_EVENT_CHANNELS, VIRQ_TIMER};
use xen_abi::sched::*;
use xen_abi::vcpu::{VcpuSetSingleshotTimer, VCPUOP_SET_SINGLESHOT_TIMER, VCPUOP_STOP_SINGLESHOT_TIMER};
use xen_abi::GuestHandle;

use super::events::{self, count, xen_now};
use super::evtchn::{bind_ipi, bind_virq, close, send, DELIVERY_MS};
use super::fw::{
    ensure, nr, num, raw, rdtsc, schedop, vcpu_op, vcpu_op0, Msg, EFAULT, EINVAL, ENOSPC, ENOSYS, ESRCH, R, UNMAPPED,
};
use super::Ctx;
use crate::checks::Tap;

fn err(what: &str, rc: i64) -> Msg {
    Msg::new(format_args!("{what} returned {rc}"))
}

/// `SCHEDOP_poll` on `ports` with absolute `timeout` (0: none); returns (rc, ns it took).
fn poll(ports: &[u32], timeout: u64) -> (i64, u64) {
    let mut list = [0u32; 130];
    let n = ports.len().min(130);
    list[..n].copy_from_slice(&ports[..n]);
    let mut p = SchedPoll { ports: GuestHandle::new(list.as_ptr() as u64), nr_ports: n as u32, _pad0: 0, timeout };
    let t0 = rdtsc();
    // SAFETY: the port list is a local array of `n` ports; Xen only reads it.
    let rc = unsafe { raw(nr::SCHED_OP, [SCHEDOP_POLL as u64, &mut p as *mut SchedPoll as u64, 0, 0, 0]) };
    (rc, events::tsc_to_ns(rdtsc() - t0))
}

/// How far two readings of the hypervisor's clock may disagree when a check compares them
/// (whether a wake-up or an upcall came before its deadline): pvclock extrapolates from the
/// last update, and a timer fires by the clock of the physical CPU it is on while
/// `HVMOP_get_time` answers by the clock of the one the vCPU runs on then. What the clocks of
/// different physical CPUs may disagree by beyond this is [`Ctx::cpu_clock_skew_ns`].
pub const CLOCK_SKEW_NS: u64 = 300_000;

/// Arm this vCPU's single-shot timer at absolute `deadline` (flags 0).
pub fn singleshot(deadline: u64, flags: u32) -> i64 {
    let mut s = VcpuSetSingleshotTimer { timeout_abs_ns: deadline, flags, _pad0: 0 };
    vcpu_op(VCPUOP_SET_SINGLESHOT_TIMER, crate::smp::vcpu_id() as u32, &mut s)
}

/// `SCHEDOP_block` with interrupts enabled by the STI right before it (so the VMMCALL runs in
/// STI's interrupt shadow, as a guest's `sti; hypercall` does); returns (rc, ns it took).
fn block_in_sti_shadow() -> (i64, u64) {
    let t0 = rdtsc();
    let rc: i64;
    // SAFETY: SCHEDOP_block takes no argument; interrupts are turned off again right after,
    // and every vector that can arrive has a handler.
    unsafe {
        core::arch::asm!("sti", "vmmcall", "cli", inout("rax") nr::SCHED_OP as i64 => rc, inout("rdi") SCHEDOP_BLOCK as u64 => _,
            inout("rsi") 0u64 => _, out("rcx") _, out("rdx") _, out("r8") _, out("r9") _, out("r10") _, out("r11") _);
    }
    (rc, events::tsc_to_ns(rdtsc() - t0))
}

/// `SCHEDOP_block` with interrupts disabled; returns (rc, ns it took).
fn block_irqs_off() -> (i64, u64) {
    let t0 = rdtsc();
    let rc = num(nr::SCHED_OP, [SCHEDOP_BLOCK as u64, 0, 0, 0, 0]);
    (rc, events::tsc_to_ns(rdtsc() - t0))
}

fn yield_() -> R {
    for _ in 0..10 {
        let rc = num(nr::SCHED_OP, [SCHEDOP_YIELD as u64, 0, 0, 0, 0]);
        ensure!(rc == 0, "SCHEDOP_yield returned {rc}");
    }
    Ok(())
}

/// Block with nothing pending: a single-shot timer 20 ms ahead (VIRQ_TIMER) wakes the vCPU,
/// not earlier. Whether it returned early is judged by the hypervisor's own clock
/// (`HVMOP_get_time` right after the return), in which the deadline is. Nothing else may wake
/// the vCPU meanwhile: no other timer runs (the waits stop their local APIC tick, see
/// [`super::fw::IdleTick`]), and an interrupt left pending does not count, interrupts being
/// off. Where the hypervisor's clocks on different CPUs disagree ([`Ctx::cpu_clock_skew_ns`])
/// the timer is that much further ahead, so that an early return still shows.
fn block_wakes_on_event(ctx: &Ctx) -> R {
    let port = bind_virq(VIRQ_TIMER, 0).map_err(|rc| err("bind_virq(TIMER)", rc))?;
    let r = (|| {
        let seen = count(port);
        let slack = CLOCK_SKEW_NS + ctx.cpu_clock_skew_ns;
        let deadline = xen_now() + 20_000_000 + 2 * ctx.cpu_clock_skew_ns;
        ensure!(singleshot(deadline, 0) == 0, "set_singleshot_timer failed");
        let (rc, _) = block_irqs_off();
        let after = xen_now();
        ensure!(rc == 0, "SCHEDOP_block: rc {rc}");
        ensure!(
            after + slack >= deadline,
            "SCHEDOP_block returned {} us before the timer ({})",
            (deadline - after) / 1000,
            super::fw::Irr::read()
        );
        ensure!(after < deadline + 2_000_000_000, "SCHEDOP_block took {} ms", (after - deadline) / 1_000_000);
        let c = events::wait_count(port, seen, DELIVERY_MS);
        ensure!(c > seen, "the timer event was not delivered after the wake-up");
        Ok(())
    })();
    vcpu_op0(VCPUOP_STOP_SINGLESHOT_TIMER, 0);
    close(port);
    r
}

/// The local APIC timer's vector for the wake-up below.
const WAKE_VECTOR: u8 = 0x41;
static WAKE_TICKS: AtomicU32 = AtomicU32::new(0);

fn wake_tick(_: &mut pvh_rt::idt::Frame) {
    WAKE_TICKS.fetch_add(1, Ordering::Release);
    super::fw::eoi();
}

/// Block in STI's shadow with an upcall already pending at the local APIC: Xen finds no
/// deliverable interrupt (the shadow blocks it) and sleeps until the next wake-up. That is not
/// a new event of the same selector word (the word's bit is still set, so Xen does not kick
/// the vCPU): the local APIC timer, 30 ms later, wakes it.
fn block_event_pending() -> R {
    let ipi = bind_ipi(0).map_err(|rc| err("bind_ipi", rc))?;
    let r = (|| {
        let seen = count(ipi);
        ensure!(send(ipi) == 0, "send failed");
        ensure!(events::upcall_pending(0) == 1, "evtchn_upcall_pending is not set after the send");
        let ticks = WAKE_TICKS.load(Ordering::Acquire);
        pvh_rt::idt::register(WAKE_VECTOR, wake_tick);
        super::fw::lapic_timer_oneshot(WAKE_VECTOR, 3_000_000); // 30 ms at the 100 MHz APIC bus
        let (rc, took) = block_in_sti_shadow();
        ensure!(rc == 0, "SCHEDOP_block: rc {rc}");
        super::fw::pause_us(1000);
        ensure!(count(ipi) > seen, "the pending event was not delivered after SCHEDOP_block");
        ensure!(WAKE_TICKS.load(Ordering::Acquire) > ticks, "the local APIC timer did not fire");
        ensure!(
            took >= 20_000_000,
            "SCHEDOP_block returned after {} us with the event pending in the STI shadow; Xen sleeps until the next wake-up (the local APIC timer, 30 ms)",
            took / 1000
        );
        Ok(())
    })();
    close(ipi);
    r
}

fn poll_pending() -> R {
    let p = bind_ipi(0).map_err(|rc| err("bind_ipi", rc))?;
    events::mask(p);
    let sent = send(p);
    let (rc, took) = poll(&[p], xen_now() + 2_000_000_000);
    events::clear_pending(p);
    events::clear_mask_bit(p);
    close(p);
    ensure!(sent == 0, "send: rc {sent}");
    ensure!(rc == 0, "poll on a pending (masked) port: rc {rc}");
    ensure!(took < 100_000_000, "poll on a pending port took {} ms", took / 1_000_000);
    Ok(())
}

/// Poll a masked port nobody sends on: the absolute timeout 10 ms ahead ends it, not earlier
/// (judged by `HVMOP_get_time` right after the return, as in [`block_wakes_on_event`]; Xen
/// ends a poll at any wake-up of the vCPU, so nothing else may be pending or running). Xen
/// keeps a vCPU's poll timer on the physical CPU the vCPU was created on, wherever the vCPU
/// runs: where the clocks of the CPUs disagree, the timeout is judged with that allowance.
fn poll_timeout(ctx: &Ctx) -> R {
    let p = bind_ipi(0).map_err(|rc| err("bind_ipi", rc))?;
    events::mask(p);
    let slack = CLOCK_SKEW_NS + ctx.cpu_clock_skew_ns;
    let deadline = xen_now() + 10_000_000 + 2 * ctx.cpu_clock_skew_ns;
    let (rc, _) = poll(&[p], deadline);
    let after = xen_now();
    let irr = super::fw::Irr::read();
    events::clear_mask_bit(p);
    close(p);
    ensure!(rc == 0, "rc {rc}");
    ensure!(after + slack >= deadline, "poll returned {} us before its timeout ({irr})", (deadline - after) / 1000);
    ensure!(after < deadline + 1_000_000_000, "poll returned {} ms after its timeout", (after - deadline) / 1_000_000);
    Ok(())
}

fn poll_errors() -> R {
    let (rc, _) = poll(&[NR_EVENT_CHANNELS], xen_now() + 1_000_000);
    ensure!(rc == EINVAL, "poll on port 4096: rc {rc}, want -EINVAL");
    let many = [1u32; 129];
    let (rc, _) = poll(&many, xen_now() + 1_000_000);
    ensure!(rc == EINVAL, "poll on 129 ports: rc {rc}, want -EINVAL");
    let mut p = SchedPoll { ports: GuestHandle::new(UNMAPPED), nr_ports: 1, _pad0: 0, timeout: xen_now() + 1_000_000 };
    // SAFETY: the port list is UNMAPPED.
    let rc = unsafe { raw(nr::SCHED_OP, [SCHEDOP_POLL as u64, &mut p as *mut SchedPoll as u64, 0, 0, 0]) };
    ensure!(rc == EFAULT, "poll with an unmapped port list: rc {rc}, want -EFAULT");
    let rc = num(nr::SCHED_OP, [SCHEDOP_POLL as u64, UNMAPPED, 0, 0, 0]);
    ensure!(rc == EFAULT, "poll with an unmapped argument: rc {rc}, want -EFAULT");
    Ok(())
}

/// On vCPU 1: poll a masked port until vCPU 0 sends on it.
fn poll_task(port: u64) -> u64 {
    let (rc, took) = poll(&[port as u32], xen_now() + 3_000_000_000);
    if rc != 0 {
        return u64::MAX;
    }
    took
}

fn poll_woken_by_send() -> R {
    let p = bind_ipi(1).map_err(|rc| err("bind_ipi(vcpu 1)", rc))?;
    events::mask(p);
    let r = (|| {
        ensure!(crate::smp::post(1, poll_task, p as u64), "vCPU 1 is not running the task loop");
        super::fw::pause_us(50_000);
        ensure!(send(p) == 0, "send failed");
        let took =
            crate::smp::collect(1, 5000).ok_or_else(|| Msg::new(format_args!("vCPU 1 never returned from poll")))?;
        ensure!(took != u64::MAX, "poll on vCPU 1 failed");
        ensure!(
            took < 2_000_000_000,
            "poll returned after {} ms, at its timeout rather than at the send",
            took / 1_000_000
        );
        Ok(())
    })();
    events::clear_pending(p);
    events::clear_mask_bit(p);
    close(p);
    r
}

fn shutdown_code() -> R {
    let mut s = SchedShutdown { reason: SHUTDOWN_POWEROFF };
    let rc = schedop(SCHEDOP_SHUTDOWN_CODE, &mut s);
    ensure!(rc == 0, "rc {rc}");
    let rc = num(nr::SCHED_OP, [SCHEDOP_SHUTDOWN_CODE as u64, UNMAPPED, 0, 0, 0]);
    ensure!(rc == EFAULT, "unmapped argument: rc {rc}, want -EFAULT");
    Ok(())
}

fn remote_shutdown() -> R {
    let mut s = SchedRemoteShutdown { domain_id: xen_abi::DomId(1000), _pad0: 0, reason: SHUTDOWN_POWEROFF };
    let rc = schedop(SCHEDOP_REMOTE_SHUTDOWN, &mut s);
    ensure!(rc == ESRCH, "dom 1000: rc {rc}, want -ESRCH");
    s.domain_id = xen_abi::DomId::SELF;
    let rc = schedop(SCHEDOP_REMOTE_SHUTDOWN, &mut s);
    ensure!(rc == ESRCH, "DOMID_SELF: rc {rc}, want -ESRCH (remote_shutdown takes real ids only)");
    Ok(())
}

fn watchdog() -> R {
    let wd = |id: u32, timeout: u32| schedop(SCHEDOP_WATCHDOG, &mut SchedWatchdog { id, timeout });
    let a = wd(0, 300);
    let b = wd(0, 300);
    let c = wd(0, 300);
    // Tear down whatever was created before judging.
    for id in [a, b] {
        if id == 1 || id == 2 {
            wd(id as u32, 0);
        }
    }
    if c == 1 || c == 2 {
        wd(c as u32, 0);
    }
    ensure!((a == 1 && b == 2) || (a == 2 && b == 1), "two creations returned {a} and {b}, want ids 1 and 2");
    // Xen 4.17 computes -ENOSPC in an unsigned expression and returns it zero-extended.
    ensure!(
        c == ENOSPC || c == ENOSPC as u32 as i64,
        "a third watchdog: rc {c}, want -ENOSPC (or Xen 4.17's {})",
        ENOSPC as u32
    );
    let again = wd(a as u32, 0);
    ensure!(again == EINVAL, "destroying a destroyed watchdog: rc {again}, want -EINVAL");
    let rc = wd(3, 300);
    ensure!(rc == EINVAL, "id 3: rc {rc}, want -EINVAL");
    let id = wd(0, 300);
    ensure!(id == 1 || id == 2, "creating again: rc {id}");
    let rearm = wd(id as u32, 300);
    let gone = wd(id as u32, 0);
    ensure!(rearm == 0 && gone == 0, "re-arming: rc {rearm}, destroying: rc {gone}");
    Ok(())
}

fn unknown() -> R {
    for cmd in [8u64, 100] {
        let rc = num(nr::SCHED_OP, [cmd, UNMAPPED, 0, 0, 0]);
        ensure!(rc == ENOSYS, "command {cmd}: rc {rc}, want -ENOSYS");
    }
    Ok(())
}

/// The `sched-` checks.
pub fn run(t: &mut Tap, ctx: &Ctx) {
    t.run("sched-yield-repeated", yield_());
    t.run("sched-block-wakes-on-event", block_wakes_on_event(ctx));
    t.run("sched-block-event-pending-sti-shadow", block_event_pending());
    t.run("sched-poll-pending", poll_pending());
    t.run("sched-poll-timeout", poll_timeout(ctx));
    t.run("sched-poll-errors", poll_errors());
    if ctx.smp() && crate::smp::ap_online(1) {
        t.run("sched-poll-woken-by-send", poll_woken_by_send());
    }
    t.run("sched-shutdown-code", shutdown_code());
    t.run("sched-remote-shutdown-errors", remote_shutdown());
    t.run("sched-watchdog", watchdog());
    t.run("sched-unknown-op", unknown());
}
