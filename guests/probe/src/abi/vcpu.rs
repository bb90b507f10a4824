//! `vcpu_op` (hypercall 24): vcpu_info registration, runstate accounting, the periodic and
//! single-shot timers and their precision, NMIs, and the life cycle of a second vCPU.
//!
//! Xen 4.17: `register_vcpu_info` wants the 64-byte area inside one page and 8-byte aligned
//! (`-ENXIO`), once per vCPU (`-EINVAL` the second time), for the caller or a vCPU that is
//! down (`-EINVAL` for one that runs); it copies the old contents, marks every event pending
//! in the new area and refreshes the time. The single-shot timer is for the calling vCPU only
//! (`-EINVAL`), fires at once for a deadline already past (with or without
//! `VCPU_SSHOTTMR_future`, which 4.17 ignores) and otherwise at its deadline; the periodic
//! timer wants at least 1 ms. INIT from the local APIC takes a vCPU down and uninitialised:
//! `VCPUOP_up` is then `-EINVAL` until `VCPUOP_initialise` (once: `-EEXIST`) gave it a
//! context; `VCPUOP_down` of another vCPU stops it until `VCPUOP_up`. `get_physid` is
//! `-EINVAL` unless dom0's vCPUs are pinned.

use core::sync::atomic::{AtomicU32, Ordering};

use xen_abi::event_channel::VIRQ_TIMER;
use xen_abi::vcpu::*;
use xen_abi::{GuestHandle, XenPfn};

use super::events::{self, count, rec, xen_now};
use super::evtchn::{bind_ipi, bind_virq, close, expect_delivery, send, DELIVERY_MS};
use super::fw::{
    ensure, nr, num, raw, rdtsc, tsc_per_ms, vcpu_op, vcpu_op0, with_irqs, IdleTick, Msg, MsgSlot, EEXIST, EFAULT,
    EINVAL, ENOENT, ENOSYS, ENXIO, R, UNMAPPED,
};
use super::sched::{singleshot, CLOCK_SKEW_NS};
use super::{hvm, pages, Ctx};
use crate::checks::Tap;
use crate::smp;

fn err(what: &str, rc: i64) -> Msg {
    Msg::new(format_args!("{what} returned {rc}"))
}

fn register_vcpu_info(vcpu: u32, gfn: u64, offset: u32) -> i64 {
    let mut r = VcpuRegisterVcpuInfo { mfn: XenPfn(gfn), offset, rsvd: 0 };
    vcpu_op(VCPUOP_REGISTER_VCPU_INFO, vcpu, &mut r)
}

/// Where vCPU `v`'s registered vcpu_info goes.
fn vcpu_info_slot(v: usize) -> (u64, u32) {
    (pages::gfn(pages::VCPU_INFO), 64 * (v as u32 + 1))
}

fn register_runstate(vcpu: u32, addr: u64) -> i64 {
    let mut r = VcpuRegisterRunstateMemoryArea { addr: GuestHandle::new(addr) };
    // SAFETY: `addr` is a 48-byte runstate slot in the probe's RUNSTATE page (or UNMAPPED);
    // the hypervisor writes only the runstate structure there.
    unsafe {
        raw(nr::VCPU_OP, [VCPUOP_REGISTER_RUNSTATE_MEMORY_AREA as u64, vcpu as u64, &mut r as *mut _ as u64, 0, 0])
    }
}

fn runstate_slot(v: usize) -> u64 {
    pages::addr(pages::RUNSTATE) + 64 * v as u64
}

fn read_runstate(v: usize) -> VcpuRunstateInfo {
    // SAFETY: the registered runstate slot of vCPU v, in the probe's RUNSTATE page.
    unsafe { core::ptr::read_volatile(runstate_slot(v) as *const VcpuRunstateInfo) }
}

fn is_up(vcpu: u32) -> i64 {
    vcpu_op0(VCPUOP_IS_UP, vcpu)
}

fn is_up_self(ctx: &Ctx) -> R {
    let rc = is_up(0);
    ensure!(rc == 1, "is_up(0): rc {rc}, want 1");
    for v in [ctx.nr_vcpus as u32, 1000] {
        let rc = is_up(v);
        ensure!(rc == ENOENT, "is_up({v}) of a domain with {} vCPUs: rc {rc}, want -ENOENT", ctx.nr_vcpus);
    }
    Ok(())
}

fn get_physid(ctx: &Ctx) -> R {
    let mut p = VcpuGetPhysid { phys_id: u64::MAX };
    let rc = vcpu_op(VCPUOP_GET_PHYSID, 0, &mut p);
    // Xen answers for the hardware domain's vCPUs that have one physical CPU as their hard
    // affinity (dom0_vcpus_pin, or a host with one CPU): the APIC and ACPI ids.
    if ctx.initdomain && rc == 0 {
        ensure!(p.phys_id != u64::MAX, "rc 0 but nothing written");
        return Ok(());
    }
    ensure!(rc == EINVAL, "rc {rc}, want -EINVAL (unless the hardware domain's vCPU is pinned)");
    let rc = vcpu_op(VCPUOP_GET_PHYSID, 1000, &mut p);
    ensure!(rc == ENOENT, "vCPU 1000: rc {rc}, want -ENOENT");
    Ok(())
}

static NMIS: AtomicU32 = AtomicU32::new(0);

fn nmi(_: &mut pvh_rt::idt::Frame) {
    NMIS.fetch_add(1, Ordering::Release);
}

fn send_nmi() -> R {
    pvh_rt::idt::register(2, nmi);
    let before = NMIS.load(Ordering::Acquire);
    let rc = vcpu_op0(VCPUOP_SEND_NMI, 0);
    let got = super::fw::wait_until(DELIVERY_MS, || NMIS.load(Ordering::Acquire) > before);
    let mut dummy = 0u64;
    let rc2 = vcpu_op(VCPUOP_SEND_NMI, 0, &mut dummy);
    super::fw::pause_us(10_000);
    pvh_rt::idt::unregister(2);
    ensure!(rc == 0, "send_nmi(0, NULL): rc {rc}");
    ensure!(got, "no NMI arrived");
    ensure!(rc2 == EINVAL, "send_nmi with a non-NULL argument: rc {rc2}, want -EINVAL");
    Ok(())
}

fn unknown() -> R {
    for cmd in [16u64, 100] {
        let rc = num(nr::VCPU_OP, [cmd, 0, UNMAPPED, 0, 0]);
        ensure!(rc == ENOSYS, "command {cmd}: rc {rc}, want -ENOSYS");
    }
    Ok(())
}

fn vcpu_info_errors() -> R {
    let (gfn, _) = vcpu_info_slot(0);
    for (what, offset, want) in [
        ("offset 4033 (past the page)", 4033, ENXIO),
        ("offset 4040 (crossing the page end)", 4040, ENXIO),
        ("offset 4 (misaligned)", 4, ENXIO),
    ] {
        let rc = register_vcpu_info(0, gfn, offset);
        ensure!(rc == want, "{what}: rc {rc}, want {want}");
    }
    let rc = register_vcpu_info(0, 0xf_ffff_ffff, 64);
    ensure!(rc == EINVAL, "a gfn with no memory: rc {rc}, want -EINVAL");
    let rc = num(nr::VCPU_OP, [VCPUOP_REGISTER_VCPU_INFO as u64, 0, UNMAPPED, 0, 0]);
    ensure!(rc == EFAULT, "unmapped argument: rc {rc}, want -EFAULT");
    Ok(())
}

fn vcpu_info_register() -> R {
    let (gfn, offset) = vcpu_info_slot(0);
    let area = (gfn << 12) + offset as u64;
    let rc = register_vcpu_info(0, gfn, offset);
    ensure!(rc == 0, "register_vcpu_info(0): rc {rc}");
    events::set_vcpu_info(0, area);
    // Xen marks everything pending in the new area (the guest rescans once) and has the time.
    let (pending, sel) = (events::upcall_pending(0), events::pending_sel(0));
    ensure!(
        pending == 1 && sel == u64::MAX,
        "new area: upcall_pending {pending}, pending_sel {sel:#x}; want 1 and all ones"
    );
    let t = events::time_info(0).map(|(t, _)| t);
    ensure!(t.is_some_and(|t| t.tsc_to_system_mul != 0), "no valid time info in the new area: {t:?}");
    // Events now arrive through it.
    let p = bind_ipi(0).map_err(|rc| err("bind_ipi", rc))?;
    let seen = count(p);
    let sent = send(p);
    let r = expect_delivery(p, seen, "send after registering");
    close(p);
    ensure!(sent == 0, "send: rc {sent}");
    r?;
    let rc = register_vcpu_info(0, gfn, offset);
    ensure!(rc == EINVAL, "registering twice: rc {rc}, want -EINVAL");
    let rc = register_vcpu_info(0, pages::gfn(pages::RUNSTATE), 0);
    ensure!(rc == EINVAL, "registering again elsewhere: rc {rc}, want -EINVAL");
    Ok(())
}

fn runstate() -> R {
    let rc = register_runstate(0, runstate_slot(0));
    ensure!(rc == 0, "register_runstate_memory_area(0): rc {rc}");
    let r0 = read_runstate(0);
    let t0 = xen_now();
    ensure!(r0.state == RUNSTATE_RUNNING, "state {} right after registering, want running", r0.state);
    let entry = r0.state_entry_time & !XEN_RUNSTATE_UPDATE;
    ensure!(entry > 0 && entry <= t0, "state_entry_time {entry} ns, now {t0} ns");
    ensure!(r0.time[RUNSTATE_RUNNING as usize] > 0, "no running time accounted");
    // Poll for 20 ms: the vCPU is blocked meanwhile, and the area says so afterwards.
    let p = bind_ipi(0).map_err(|rc| err("bind_ipi", rc))?;
    events::mask(p);
    let mut list = [p];
    let mut poll = xen_abi::sched::SchedPoll {
        ports: GuestHandle::new(list.as_mut_ptr() as u64),
        nr_ports: 1,
        _pad0: 0,
        timeout: xen_now() + 20_000_000,
    };
    // SAFETY: a one-port list on the stack.
    let rc = unsafe { raw(nr::SCHED_OP, [xen_abi::sched::SCHEDOP_POLL as u64, &mut poll as *mut _ as u64, 0, 0, 0]) };
    events::clear_mask_bit(p);
    close(p);
    ensure!(rc == 0, "SCHEDOP_poll: rc {rc}");
    let r1 = read_runstate(0);
    let blocked = r1.time[RUNSTATE_BLOCKED as usize] - r0.time[RUNSTATE_BLOCKED as usize];
    ensure!(r1.state == RUNSTATE_RUNNING, "state {} after the poll", r1.state);
    ensure!((r1.state_entry_time & !XEN_RUNSTATE_UPDATE) > entry, "state_entry_time did not move");
    for i in 0..4 {
        ensure!(r1.time[i] >= r0.time[i], "time[{i}] went back: {} -> {}", r0.time[i], r1.time[i]);
    }
    // At least a quarter of it: under emulation the hypervisor's per-CPU clocks disagree by
    // milliseconds, and the poll's timeout and the accounting may use different ones.
    ensure!(blocked >= 5_000_000, "a 20 ms poll added {} us of blocked time", blocked / 1000);
    // get_runstate_info answers the same way.
    let mut info = VcpuRunstateInfo::default();
    let rc = vcpu_op(VCPUOP_GET_RUNSTATE_INFO, 0, &mut info);
    ensure!(rc == 0 && info.state == RUNSTATE_RUNNING, "get_runstate_info: rc {rc}, state {}", info.state);
    ensure!(
        info.time[RUNSTATE_BLOCKED as usize] >= r1.time[RUNSTATE_BLOCKED as usize],
        "get_runstate_info is behind the area"
    );
    Ok(())
}

fn periodic_errors() -> R {
    for (what, period, want) in [("999999 ns", 999_999u64, EINVAL), ("0 ns", 0, EINVAL)] {
        let rc = vcpu_op(VCPUOP_SET_PERIODIC_TIMER, 0, &mut VcpuSetPeriodicTimer { period_ns: period });
        ensure!(rc == want, "period {what}: rc {rc}, want {want}");
    }
    let rc = num(nr::VCPU_OP, [VCPUOP_SET_PERIODIC_TIMER as u64, 0, UNMAPPED, 0, 0]);
    ensure!(rc == EFAULT, "unmapped argument: rc {rc}, want -EFAULT");
    Ok(())
}

fn with_timer_port<T>(f: impl FnOnce(u32) -> Result<T, Msg>) -> Result<T, Msg> {
    let port = bind_virq(VIRQ_TIMER, smp::vcpu_id() as u32).map_err(|rc| err("bind_virq(TIMER)", rc))?;
    let r = f(port);
    vcpu_op0(VCPUOP_STOP_SINGLESHOT_TIMER, smp::vcpu_id() as u32);
    vcpu_op0(VCPUOP_STOP_PERIODIC_TIMER, smp::vcpu_id() as u32);
    close(port);
    r
}

/// How many ticks of a periodic timer of `period_ns` may be delivered in `window_ns` (as
/// measured, give or take `skew_ns`) when each may come up to `late_ns` after its time: at
/// most one per period, plus one for where the window's edges fall and one sent before the
/// window but delivered in it; at least as many as fit when each comes `late_ns` late (Xen
/// arms the next tick one period after the previous one fired, without catching up, so
/// lateness adds up), less one for the edges.
fn tick_bounds(window_ns: u64, skew_ns: u64, period_ns: u64, late_ns: u64) -> (u32, u32) {
    let least = (window_ns.saturating_sub(skew_ns) / (period_ns + late_ns)).saturating_sub(1);
    let most = (window_ns + skew_ns) / period_ns + 2;
    (least as u32, most as u32)
}

fn periodic(ctx: &Ctx) -> R {
    with_timer_port(|port| {
        vcpu_op0(VCPUOP_STOP_SINGLESHOT_TIMER, 0);
        let rc = vcpu_op(VCPUOP_SET_PERIODIC_TIMER, 0, &mut VcpuSetPeriodicTimer { period_ns: 10_000_000 });
        ensure!(rc == 0, "set_periodic_timer(10 ms): rc {rc}");
        // The window in the hypervisor's clock, not the TSC's (see `shot`).
        let (seen, from) = (count(port), xen_now());
        super::fw::pause_us(105_000);
        let (ticks, to) = (count(port) - seen, xen_now());
        let rc = vcpu_op0(VCPUOP_STOP_PERIODIC_TIMER, 0);
        let at_stop = count(port);
        ensure!(rc == 0, "stop_periodic_timer: rc {rc}");
        let window = to.saturating_sub(from);
        let (least, most) = tick_bounds(window, ctx.cpu_clock_skew_ns, 10_000_000, ctx.timer_limit_ns);
        ensure!(
            (least..=most).contains(&ticks),
            "{ticks} ticks of a 10 ms periodic timer in {} us, want {least} to {most}",
            window / 1000
        );
        // Drain: a tick sent just before the stop may still be on its way (it is one pending
        // bit, so at most one delivery; Xen 4.17 under TCG delivers up to about 20 ms late).
        // Three periods later it has arrived; after that, silence.
        super::fw::pause_us(30_000);
        let settled = count(port);
        ensure!(
            settled - at_stop <= 1,
            "{} ticks in the 30 ms after stop_periodic_timer (at most the one already sent)",
            settled - at_stop
        );
        super::fw::pause_us(50_000);
        ensure!(count(port) == settled, "ticks 30 to 80 ms after stop_periodic_timer");
        // The minimum period is accepted.
        let rc = vcpu_op(VCPUOP_SET_PERIODIC_TIMER, 0, &mut VcpuSetPeriodicTimer { period_ns: 1_000_000 });
        vcpu_op0(VCPUOP_STOP_PERIODIC_TIMER, 0);
        ensure!(rc == 0, "set_periodic_timer(1 ms): rc {rc}");
        Ok(())
    })
}

/// How late a timer's upcall may typically come unless the command line says otherwise
/// (`probe.timer-limit-us=<N>`): the median of a series must be within 1 ms of the deadline.
pub const TIMER_LATE_MEDIAN_NS: u64 = 1_000_000;
/// How late any one upcall may come. Under QEMU's TCG the host's other load deschedules the
/// emulated CPUs for milliseconds at a time (Xen 4.17 there: single upcalls up to about 25 ms
/// late while the median is a few ms), so single outliers get this much.
const TIMER_LATE_OUTLIER_NS: i64 = 50_000_000;

/// Arm this vCPU's single-shot timer `ahead_ns` after the hypervisor's now (in the past when
/// negative) with `flags`, take its upcall, and return its lateness in ns: from the deadline,
/// or for a deadline already past, from the request (which must fire it at once).
///
/// Timed in the hypervisor's own time base: the deadline from `HVMOP_get_time`, the upcall by
/// the pvclock system time the handler reads first thing. Not by TSC intervals: Xen 4.17 under
/// TCG emulates the TSC (CPUID leaf base+3 EAX bit 0) as the vCPU's guest time, which stands
/// still while the vCPU waits for a physical CPU (timer mode `delay_for_missed_ticks`), so
/// TSC intervals fall milliseconds behind Xen's clock, while pvclock is re-based each time.
/// Interrupts are on from before the request and the idle tick is armed before it, so nothing
/// of the probe's own (a local APIC write, an emulated RDTSC) leaves the guest between the
/// hypervisor's injection and the handler: under emulation each such exit costs 0.1 to 3 ms
/// and would count as lateness. Fails if the timer does not fire or fires before its deadline
/// (give or take what the hypervisor's clocks may disagree by, with `skew_ns` for different
/// physical CPUs).
fn shot(port: u32, ahead_ns: i64, flags: u32, skew_ns: u64) -> Result<i64, Msg> {
    let seen = count(port);
    let tick = IdleTick::start();
    let (deadline, asked, rc) = with_irqs(|| {
        let deadline = xen_now().saturating_add_signed(ahead_ns);
        let asked = events::now();
        (deadline, asked, singleshot(deadline, flags))
    });
    ensure!(rc == 0, "set_singleshot_timer({:+} us, flags {flags}): rc {rc}", ahead_ns / 1000);
    let wait_ms = DELIVERY_MS + ahead_ns.max(0) as u64 / 1_000_000;
    let fired = tick.wait(rdtsc() + wait_ms * tsc_per_ms(), || count(port) > seen);
    drop(tick);
    ensure!(fired, "a timer {:+} us ahead never fired", ahead_ns / 1000);
    let at = rec(port).ns.load(Ordering::Acquire);
    ensure!(at != 0 && asked != 0, "no valid pvclock time at the request or the upcall");
    if ahead_ns < 0 {
        return Ok(at as i64 - asked as i64);
    }
    ensure!(
        at + CLOCK_SKEW_NS + skew_ns >= deadline,
        "an upcall came {} us before its deadline {} us ahead (by pvclock)",
        (deadline - at) / 1000,
        ahead_ns / 1000
    );
    Ok(at as i64 - deadline as i64)
}

/// Lateness of `out.len()` single-shot timers `ahead_ns` in the future on this vCPU (see
/// [`shot`]), sorted.
fn timer_lateness(port: u32, ahead_ns: i64, flags: u32, skew_ns: u64, out: &mut [i64]) -> R {
    for slot in out.iter_mut() {
        *slot = shot(port, ahead_ns, flags, skew_ns)?;
    }
    out.sort_unstable();
    Ok(())
}

/// Judge a sorted series of lateness values (median and outliers) against `limit_ns`.
fn judge_lateness(what: &str, late: &[i64], limit_ns: u64) -> R {
    judge(what, late[late.len() / 2], late[late.len() - 1], limit_ns)
}

fn judge(what: &str, median: i64, worst: i64, limit_ns: u64) -> R {
    let limit = limit_ns as i64;
    ensure!(median <= limit, "{what}: median lateness {} us (limit {} us)", median / 1000, limit / 1000);
    ensure!(
        worst <= TIMER_LATE_OUTLIER_NS,
        "{what}: one came {} us late (limit {} us)",
        worst / 1000,
        TIMER_LATE_OUTLIER_NS / 1000
    );
    Ok(())
}

fn print_lateness(what: &str, late: &[i64]) {
    struct Us<'a>(&'a [i64]);
    impl core::fmt::Display for Us<'_> {
        fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
            for (i, v) in self.0.iter().enumerate() {
                write!(f, "{}{}", if i > 0 { " " } else { "" }, v / 1000)?;
            }
            Ok(())
        }
    }
    crate::console::line(format_args!("probe: info {what} lateness in us: {}", Us(late)));
}

fn singleshot_precision(ctx: &Ctx) -> R {
    with_timer_port(|port| {
        let mut late = [0i64; 20];
        timer_lateness(port, 5_000_000, 0, ctx.cpu_clock_skew_ns, &mut late)?;
        print_lateness("vcpu-singleshot-timer 5 ms ahead", &late);
        judge_lateness("20 timers 5 ms ahead", &late, ctx.timer_limit_ns)
    })
}

fn singleshot_past(ctx: &Ctx) -> R {
    with_timer_port(|port| {
        for (what, flags) in [("flags 0", 0), ("VCPU_SSHOTTMR_future", VCPU_SSHOTTMR_FUTURE)] {
            let mut late = [0i64; 5];
            // Xen 4.17 accepts a past deadline (rc 0) and fires it at once, with either flag.
            timer_lateness(port, -1_000_000, flags, ctx.cpu_clock_skew_ns, &mut late)?;
            let label = if flags == 0 {
                "vcpu-singleshot-timer past deadline, flags 0,"
            } else {
                "vcpu-singleshot-timer past deadline, VCPU_SSHOTTMR_future,"
            };
            print_lateness(label, &late);
            judge_lateness(what, &late, ctx.timer_limit_ns)?;
        }
        Ok(())
    })
}

fn singleshot_stop_and_replace(ctx: &Ctx) -> R {
    with_timer_port(|port| {
        let seen = count(port);
        ensure!(singleshot(xen_now() + 10_000_000, 0) == 0, "set failed");
        let rc = vcpu_op0(VCPUOP_STOP_SINGLESHOT_TIMER, 0);
        ensure!(rc == 0, "stop_singleshot_timer: rc {rc}");
        super::fw::pause_us(30_000);
        ensure!(count(port) == seen, "a stopped timer fired");
        // A second set replaces the first deadline (the upcall timed by pvclock, see `shot`).
        let now = xen_now();
        let first = now + 10_000_000;
        ensure!(singleshot(first, 0) == 0, "set failed");
        let second = now + 30_000_000;
        ensure!(singleshot(second, 0) == 0, "set failed");
        let c = events::wait_count(port, seen, DELIVERY_MS);
        ensure!(c == seen + 1, "no timer fired");
        let at = rec(port).ns.load(Ordering::Acquire);
        ensure!(
            at + CLOCK_SKEW_NS + ctx.cpu_clock_skew_ns >= second,
            "the timer fired {} us before the second deadline (the first one?)",
            (second - at) / 1000
        );
        super::fw::pause_us(20_000);
        ensure!(count(port) == seen + 1, "both deadlines fired");
        Ok(())
    })
}

// ---- A second vCPU ----

fn ap_context(vcpu: usize) -> VcpuHvmContext {
    let cr3: u64;
    // SAFETY: reading CR3 has no side effects.
    unsafe { core::arch::asm!("mov {}, cr3", out(reg) cr3, options(nomem, nostack)) };
    VcpuHvmContext::new(VcpuHvmRegs::X86_64(VcpuHvmX86_64 {
        rip: smp::ap_entry64(),
        rsp: smp::ap_stack_top(vcpu),
        rdi: vcpu as u64,
        rflags: 0x2,
        cr0: 0x8000_0011, // PG | ET | PE
        cr3,
        cr4: 0x20,   // PAE
        efer: 0x500, // LME | LMA
        ..Default::default()
    }))
}

fn initialise(vcpu: u32, ctx: &mut VcpuHvmContext) -> i64 {
    vcpu_op(VCPUOP_INITIALISE, vcpu, ctx)
}

fn other_is_up(vcpu: u32) -> R {
    let rc = is_up(vcpu);
    ensure!(rc == 1, "is_up({vcpu}) of a vCPU started with INIT/STARTUP: rc {rc}");
    let (gfn, offset) = vcpu_info_slot(vcpu as usize);
    let rc = register_vcpu_info(vcpu, gfn, offset);
    ensure!(rc == EINVAL, "register_vcpu_info for another vCPU that runs: rc {rc}, want -EINVAL");
    Ok(())
}

fn init_takes_down(vcpu: u32) -> R {
    ensure!(smp::init_ap(vcpu as usize), "no APIC id for vCPU {vcpu}");
    let down = super::fw::wait_until(200, || is_up(vcpu) == 0);
    ensure!(down, "is_up({vcpu}) = {} after INIT, want 0", is_up(vcpu));
    let rc = vcpu_op0(VCPUOP_UP, vcpu);
    ensure!(rc == EINVAL, "VCPUOP_up of a vCPU reset by INIT: rc {rc}, want -EINVAL (not initialised)");
    Ok(())
}

fn vcpu_info_other_down(vcpu: u32) -> R {
    let (gfn, offset) = vcpu_info_slot(vcpu as usize);
    let rc = register_vcpu_info(vcpu, gfn, offset);
    ensure!(rc == 0, "register_vcpu_info for a vCPU that is down: rc {rc}");
    events::set_vcpu_info(vcpu as usize, (gfn << 12) + offset as u64);
    let rc = register_runstate(vcpu, runstate_slot(vcpu as usize));
    ensure!(rc == 0, "register_runstate_memory_area for vCPU {vcpu}: rc {rc}");
    let state = read_runstate(vcpu as usize).state;
    ensure!(state == RUNSTATE_OFFLINE, "the runstate of a vCPU that is down says {state}, want offline (3)");
    Ok(())
}

fn initialise_errors(vcpu: u32) -> R {
    let mut bad = ap_context(vcpu as usize);
    bad.mode = 2;
    let rc = initialise(vcpu, &mut bad);
    ensure!(rc == EINVAL, "mode 2: rc {rc}, want -EINVAL");
    let mut bad = ap_context(vcpu as usize);
    bad.pad = 1;
    let rc = initialise(vcpu, &mut bad);
    ensure!(rc == EINVAL, "pad 1: rc {rc}, want -EINVAL");
    let mut regs = match ap_context(vcpu as usize).regs() {
        Ok(VcpuHvmRegs::X86_64(r)) => r,
        _ => return Err(Msg::new(format_args!("context"))),
    };
    regs.cr0 &= !(1 << 31);
    let mut bad = VcpuHvmContext::new(VcpuHvmRegs::X86_64(regs));
    let rc = initialise(vcpu, &mut bad);
    ensure!(rc == EINVAL, "64-bit mode without paging: rc {rc}, want -EINVAL");
    let rc = num(nr::VCPU_OP, [VCPUOP_INITIALISE as u64, vcpu as u64, UNMAPPED, 0, 0]);
    ensure!(rc == EFAULT, "unmapped context: rc {rc}, want -EFAULT");
    ensure!(is_up(vcpu) == 0, "a failed initialise brought the vCPU up");
    Ok(())
}

fn initialise_up(vcpu: u32) -> R {
    let mut ctx = ap_context(vcpu as usize);
    let rc = initialise(vcpu, &mut ctx);
    ensure!(rc == 0, "VCPUOP_initialise (64-bit context): rc {rc}");
    ensure!(is_up(vcpu) == 0, "initialise alone brought the vCPU up");
    let rc = initialise(vcpu, &mut ctx);
    ensure!(rc == EEXIST, "initialising twice: rc {rc}, want -EEXIST");
    let rc = vcpu_op0(VCPUOP_UP, vcpu);
    ensure!(rc == 0, "VCPUOP_up: rc {rc}");
    ensure!(smp::wait_online(vcpu as usize, 2000), "vCPU {vcpu} did not reach its entry point");
    ensure!(is_up(vcpu) == 1, "is_up({vcpu}) = {} after VCPUOP_up", is_up(vcpu));
    let rc = vcpu_op0(VCPUOP_UP, vcpu);
    ensure!(rc == 0, "VCPUOP_up of a running vCPU: rc {rc}, want 0");
    Ok(())
}

/// Make sure `vcpu` runs the task loop with its upcall vector set, whatever the checks did.
fn ensure_ap_running(vcpu: u32) -> bool {
    if !smp::ap_online(vcpu as usize) {
        smp::start_ap64(vcpu as usize);
    }
    hvm::set_upcall_vector(vcpu, events::UPCALL_VECTOR);
    smp::ap_online(vcpu as usize)
}

fn ap_events(vcpu: u32) -> R {
    let rc = hvm::set_upcall_vector(vcpu, events::UPCALL_VECTOR);
    ensure!(rc == 0, "set_evtchn_upcall_vector({vcpu}): rc {rc}");
    let p = bind_ipi(vcpu).map_err(|rc| err("bind_ipi", rc))?;
    let seen = count(p);
    let sent = send(p);
    let r = expect_delivery(p, seen, "an IPI event for the new vCPU");
    let cpu = rec(p).cpu.load(Ordering::Acquire);
    close(p);
    ensure!(sent == 0, "send: rc {sent}");
    r?;
    ensure!(cpu == vcpu, "taken on vCPU {cpu}");
    let state = read_runstate(vcpu as usize).state;
    ensure!(
        state == RUNSTATE_RUNNING || state == RUNSTATE_BLOCKED || state == RUNSTATE_RUNNABLE,
        "runstate of the running vCPU: {state}"
    );
    Ok(())
}

fn heartbeat_task(_: u64) -> u64 {
    smp::ap_heartbeat(smp::vcpu_id())
}

fn down_up(vcpu: u32) -> R {
    let rc = vcpu_op0(VCPUOP_DOWN, vcpu);
    ensure!(rc == 0, "VCPUOP_down({vcpu}): rc {rc}");
    ensure!(is_up(vcpu) == 0, "is_up({vcpu}) = {} after down", is_up(vcpu));
    let posted = smp::post(vcpu as usize, heartbeat_task, 0);
    ensure!(posted, "vCPU {vcpu} was not running its task loop");
    let early = smp::collect(vcpu as usize, 100);
    let rc = vcpu_op0(VCPUOP_UP, vcpu);
    let late = smp::collect(vcpu as usize, 2000);
    ensure!(early.is_none(), "vCPU {vcpu} ran a task while down");
    ensure!(rc == 0, "VCPUOP_up({vcpu}): rc {rc}");
    ensure!(late.is_some(), "vCPU {vcpu} did not resume after VCPUOP_up");
    ensure!(is_up(vcpu) == 1, "is_up({vcpu}) = {} after up", is_up(vcpu));
    Ok(())
}

fn singleshot_other(vcpu: u32) -> R {
    let mut s = VcpuSetSingleshotTimer { timeout_abs_ns: xen_now() + 1_000_000_000, flags: 0, _pad0: 0 };
    let rc = vcpu_op(VCPUOP_SET_SINGLESHOT_TIMER, vcpu, &mut s);
    ensure!(rc == EINVAL, "set_singleshot_timer for vCPU {vcpu} from vCPU 0: rc {rc}, want -EINVAL");
    let rc = vcpu_op0(VCPUOP_STOP_SINGLESHOT_TIMER, vcpu);
    ensure!(rc == EINVAL, "stop_singleshot_timer for vCPU {vcpu} from vCPU 0: rc {rc}, want -EINVAL");
    Ok(())
}

/// Why the AP's timers failed (see [`ap_timer_task`]).
static AP_TIMER_FAILURE: MsgSlot = MsgSlot::new();

/// On the AP: 9 single-shot timers 5 ms ahead of its own (`skew_ns`: see [`shot`]); returns one more than the median
/// lateness in ns in the low 32 bits and the worst in the high ones (both clamped), or 0 after
/// leaving the reason in [`AP_TIMER_FAILURE`].
fn ap_timer_task(skew_ns: u64) -> u64 {
    let mut late = [0i64; 9];
    match with_timer_port(|port| timer_lateness(port, 5_000_000, 0, skew_ns, &mut late)) {
        Ok(()) => {
            let median = late[late.len() / 2].clamp(0, u32::MAX as i64 - 1) as u64 + 1;
            let worst = late[late.len() - 1].clamp(0, u32::MAX as i64) as u64;
            worst << 32 | median
        }
        Err(m) => {
            AP_TIMER_FAILURE.put(&m);
            0
        }
    }
}

fn singleshot_on_ap(ctx: &Ctx, vcpu: u32) -> R {
    let Some(r) = smp::run_on(vcpu as usize, ap_timer_task, ctx.cpu_clock_skew_ns, 5000) else {
        return Err(Msg::new(format_args!("vCPU {vcpu} did not run the task")));
    };
    ensure!(r != 0, "on vCPU {vcpu}: {}", AP_TIMER_FAILURE.get());
    let median = (r & 0xffff_ffff) as i64 - 1;
    let worst = (r >> 32) as i64;
    crate::console::line(format_args!(
        "probe: info vcpu-singleshot-timer-on-ap lateness median {} us, worst {} us",
        median / 1000,
        worst / 1000
    ));
    judge("vCPU 1's timers", median, worst, ctx.timer_limit_ns)
}

/// The `vcpu-` checks; with a second vCPU, they also bring it into the task loop the later
/// checks use.
pub fn run(t: &mut Tap, ctx: &Ctx) {
    t.run("vcpu-is-up", is_up_self(ctx));
    t.run("vcpu-get-physid", get_physid(ctx));
    t.run("vcpu-send-nmi", send_nmi());
    t.run("vcpu-unknown-op", unknown());
    t.run("vcpu-register-vcpu-info-errors", vcpu_info_errors());
    t.run("vcpu-register-vcpu-info", vcpu_info_register());
    t.run("vcpu-runstate", runstate());
    t.run("vcpu-periodic-timer-errors", periodic_errors());
    t.run("vcpu-periodic-timer", periodic(ctx));
    t.run("vcpu-singleshot-timer-precision", singleshot_precision(ctx));
    t.run("vcpu-singleshot-timer-past-deadline", singleshot_past(ctx));
    t.run("vcpu-singleshot-timer-stop-replace", singleshot_stop_and_replace(ctx));
    if !ctx.smp() {
        return;
    }
    t.run("vcpu-register-vcpu-info-other-running", other_is_up(1));
    t.run("vcpu-init-takes-down", init_takes_down(1));
    t.run("vcpu-register-vcpu-info-other-down", vcpu_info_other_down(1));
    t.run("vcpu-initialise-errors", initialise_errors(1));
    t.run("vcpu-initialise-up", initialise_up(1));
    let running = ensure_ap_running(1);
    if !running {
        t.check("vcpu-ap-events", false, format_args!("vCPU 1 could not be started at all"));
        return;
    }
    t.run("vcpu-ap-events", ap_events(1));
    t.run("vcpu-down-up", down_up(1));
    t.run("vcpu-singleshot-timer-other-vcpu", singleshot_other(1));
    t.run("vcpu-singleshot-timer-on-ap", singleshot_on_ap(ctx, 1));
}
