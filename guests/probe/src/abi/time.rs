//! Shared state and time: shared_info placed with `XENMEM_add_to_physmap` (and moved), the
//! pvclock `vcpu_time_info` valid from the moment shared_info is mapped, the wall clock,
//! system time monotonic on each vCPU and across vCPUs, and `HVMOP_get_time` on the same
//! clock.
//!
//! Xen 4.17 maps the shared_info frame at any gfn the guest names (the RAM page there is
//! freed), unmaps it from where it was, and keeps every vCPU's time info current.

use core::sync::atomic::{AtomicU32, AtomicU64, Ordering};

use pvh_rt::xen::{cpuid, cpuid_base};
use xen_abi::hvm::{XenHvmGetTime, HVMOP_GET_TIME};
use xen_abi::memory::{XenAddToPhysmap, XENMAPSPACE_SHARED_INFO, XENMEM_ADD_TO_PHYSMAP};
use xen_abi::DomId;

use super::events::{self, now};
use super::fw::{ensure, hvmop, memop, R};
use super::sched::CLOCK_SKEW_NS;
use super::{mem, pages, Ctx};
use crate::checks::Tap;
use crate::smp;

/// Map shared_info at page `page` of the pool; returns the hypercall's result.
pub fn map_shared_info(page: usize) -> i64 {
    let mut xatp = XenAddToPhysmap {
        domid: DomId::SELF,
        space: XENMAPSPACE_SHARED_INFO,
        idx: 0,
        gpfn: xen_abi::XenPfn(pages::gfn(page)),
        ..Default::default()
    };
    memop(XENMEM_ADD_TO_PHYSMAP, &mut xatp)
}

/// Make sure shared_info is mapped (for the benchmarks, when the suite did not run).
pub fn ensure_shared_info() -> bool {
    if events::shinfo() != 0 {
        return true;
    }
    if map_shared_info(pages::SHINFO_A) == 0 {
        events::set_shinfo(pages::addr(pages::SHINFO_A));
        return true;
    }
    false
}

/// CPUID's guest TSC frequency (leaf base+3, ECX), if given.
fn cpuid_tsc_khz() -> Option<u64> {
    let (base, max) = cpuid_base()?;
    (max >= base + 3).then(|| cpuid(base + 3, 0)[2] as u64).filter(|&k| k != 0)
}

fn shared_info_map() -> R {
    let rc = map_shared_info(pages::SHINFO_A);
    ensure!(rc == 0, "XENMEM_add_to_physmap(shared_info) returned {rc}");
    events::set_shinfo(pages::addr(pages::SHINFO_A));
    Ok(())
}

fn pvclock_valid_at_map() -> R {
    ensure!(events::shinfo() != 0, "shared_info is not mapped");
    // Straight from the freshly mapped page: vCPU 0's slot.
    let Some((t, _)) = events::read_time(events::shinfo() + 32) else {
        return Err(super::fw::Msg::new(format_args!("the time info's version never became stable")));
    };
    ensure!(t.tsc_to_system_mul != 0, "tsc_to_system_mul is 0 (Linux divides by it)");
    ensure!(t.system_time != 0 && t.tsc_timestamp != 0, "system_time {} at TSC {}", t.system_time, t.tsc_timestamp);
    ensure!((-32..=32).contains(&t.tsc_shift), "tsc_shift {}", t.tsc_shift);
    Ok(())
}

fn pvclock_tsc_khz() -> R {
    let Some((t, _)) = events::time_info(0) else {
        return Err(super::fw::Msg::new(format_args!("no time info")));
    };
    let Some(khz) = xen_abi::shared_info::pvclock_tsc_khz(t.tsc_to_system_mul, t.tsc_shift) else {
        return Err(super::fw::Msg::new(format_args!(
            "mul {} shift {} give no frequency",
            t.tsc_to_system_mul, t.tsc_shift
        )));
    };
    if let Some(cpuid_khz) = cpuid_tsc_khz() {
        let diff = khz.abs_diff(cpuid_khz);
        ensure!(diff * 1000 <= cpuid_khz, "pvclock says {khz} kHz, CPUID leaf base+3 says {cpuid_khz} kHz");
    }
    Ok(())
}

fn wallclock() -> R {
    let si = events::shinfo();
    ensure!(si != 0, "shared_info is not mapped");
    let version = si + 3072;
    let mut sample = None;
    for _ in 0..10_000 {
        // SAFETY: the wall-clock words of the mapped shared_info page.
        let (v1, sec, nsec, hi, v2) = unsafe {
            let v1 = core::ptr::read_volatile(version as *const u32);
            core::sync::atomic::fence(Ordering::Acquire);
            let sec = core::ptr::read_volatile((si + 3076) as *const u32);
            let nsec = core::ptr::read_volatile((si + 3080) as *const u32);
            let hi = core::ptr::read_volatile((si + 3084) as *const u32);
            core::sync::atomic::fence(Ordering::Acquire);
            (v1, sec, nsec, hi, core::ptr::read_volatile(version as *const u32))
        };
        if v1 & 1 == 0 && v1 == v2 {
            sample = Some(((hi as u64) << 32 | sec as u64, nsec));
            break;
        }
    }
    let Some((sec, nsec)) = sample else {
        return Err(super::fw::Msg::new(format_args!("wc_version never stable")));
    };
    ensure!(nsec < 1_000_000_000, "wc_nsec {nsec}");
    // Wall clock now = wall clock at system time 0 + system time: after 2020, before 2200.
    let now_s = sec + (now() + nsec as u64) / 1_000_000_000;
    ensure!(
        (1_577_836_800..7_258_118_400).contains(&now_s),
        "wall clock {sec}.{nsec:09} + system time = {now_s} s since 1970"
    );
    Ok(())
}

fn shared_info_move() -> R {
    let (a, b) = (pages::addr(pages::SHINFO_A), pages::addr(pages::SHINFO_B));
    ensure!(events::shinfo() == a, "shared_info is not at its first place");
    // Bytes beyond struct shared_info (3136) are part of the same frame: a marker follows it.
    for i in 0..16 {
        super::fw::poke(a, 4000 + i, 0x5a ^ i as u8);
    }
    let rc = map_shared_info(pages::SHINFO_B);
    ensure!(rc == 0, "moving shared_info: rc {rc}");
    events::set_shinfo(b);
    let marker_ok = (0..16).all(|i| super::fw::peek(b, 4000 + i) == 0x5a ^ i as u8);
    ensure!(marker_ok, "the page at the new gfn is not the same frame (marker lost)");
    ensure!(events::time_info(0).is_some_and(|(t, _)| t.tsc_to_system_mul != 0), "no valid time at the new place");
    // The old gfn is empty now: give it RAM again, which reads as zeroes.
    let got = mem::populate(&[pages::gfn(pages::SHINFO_A)]);
    ensure!(got == 1, "repopulating the old gfn: {got} of 1 extent");
    // Xen does not scrub what a domain gives back: only check the page is RAM again.
    super::fw::fill(a, 0x77);
    ensure!(super::fw::holds(a, 0x77, 0, 4096), "the repopulated old gfn does not keep what is written");
    Ok(())
}

/// Non-decreasing over `n` consecutive reads (at most 200 ms) on this vCPU; returns the
/// largest backward step.
fn monotonic(n: u64) -> u64 {
    let mut last = now();
    let mut worst = 0;
    let end = super::fw::rdtsc() + 200 * super::fw::tsc_per_ms();
    for _ in 0..n {
        if super::fw::rdtsc() > end {
            break;
        }
        let t = now();
        worst = worst.max(last.saturating_sub(t));
        last = last.max(t);
    }
    worst
}

fn monotonic_here() -> R {
    let back = monotonic(20_000);
    ensure!(back == 0, "system time went back by {back} ns");
    Ok(())
}

fn monotonic_task(n: u64) -> u64 {
    monotonic(n)
}

fn monotonic_on_ap(vcpu: usize) -> R {
    let Some(back) = smp::run_on(vcpu, monotonic_task, 20_000, 5000) else {
        return Err(super::fw::Msg::new(format_args!("vCPU {vcpu} did not run the task")));
    };
    ensure!(back == 0, "system time on vCPU {vcpu} went back by {back} ns");
    Ok(())
}

/// Ping-pong between vCPU 0 and an AP: each side reads the clock after seeing the other's
/// reading, and must not see a time before it.
static PP_TURN: AtomicU32 = AtomicU32::new(0);
static PP_TIME: AtomicU64 = AtomicU64::new(0);
static PP_WORST: AtomicU64 = AtomicU64::new(0);
const PP_ROUNDS: u32 = 200;

fn wait_turn(want: u32) -> bool {
    let end = super::fw::rdtsc() + 1000 * super::fw::tsc_per_ms();
    while PP_TURN.load(Ordering::Acquire) != want {
        if super::fw::rdtsc() > end {
            return false;
        }
        core::hint::spin_loop();
    }
    true
}

fn pingpong_ap(_: u64) -> u64 {
    for r in 0..PP_ROUNDS {
        if !wait_turn(2 * r + 1) {
            return 1;
        }
        let t = now();
        let seen = PP_TIME.load(Ordering::Acquire);
        PP_WORST.fetch_max(seen.saturating_sub(t), Ordering::AcqRel);
        PP_TIME.store(now(), Ordering::Release);
        PP_TURN.store(2 * r + 2, Ordering::Release);
    }
    0
}

fn cross_vcpu(vcpu: usize) -> R {
    PP_TURN.store(0, Ordering::Release);
    PP_WORST.store(0, Ordering::Release);
    ensure!(smp::post(vcpu, pingpong_ap, 0), "vCPU {vcpu} is not running the task loop");
    let mut ok = true;
    for r in 0..PP_ROUNDS {
        PP_TIME.store(now(), Ordering::Release);
        PP_TURN.store(2 * r + 1, Ordering::Release);
        if !wait_turn(2 * r + 2) {
            ok = false;
            break;
        }
        let t = now();
        PP_WORST.fetch_max(PP_TIME.load(Ordering::Acquire).saturating_sub(t), Ordering::AcqRel);
    }
    let r = smp::collect(vcpu, 2000);
    ensure!(ok && r == Some(0), "the ping-pong with vCPU {vcpu} stalled ({r:?})");
    let worst = PP_WORST.load(Ordering::Acquire);
    ensure!(worst == 0, "a vCPU read a system time {worst} ns before one the other had already read");
    Ok(())
}

/// `HVMOP_get_time` answers the same clock as pvclock: every answer lies between the pvclock
/// readings just before and just after the call (give or take what two readings of the clock
/// may disagree by), and consecutive answers never go back. Compared with pvclock, not with
/// TSC intervals: those fall behind the hypervisor's clock where it emulates the TSC and stops
/// it while the vCPU waits for a CPU (Xen under TCG), and a rate measured over a few
/// milliseconds is thrown off by any stall inside one call.
fn hvm_get_time(ctx: &Ctx) -> R {
    let get = || {
        let mut gt = XenHvmGetTime { now: 0 };
        (hvmop(HVMOP_GET_TIME, &mut gt), gt.now)
    };
    let (rc, t0) = get();
    ensure!(rc == 0 && t0 > 0, "rc {rc}, time {t0}");
    let slack = CLOCK_SKEW_NS + ctx.cpu_clock_skew_ns;
    let mut worst_outside = 0;
    let mut last = t0;
    for i in 0..50 {
        let before = now();
        let (rc, t) = get();
        let after = now();
        ensure!(rc == 0, "call {i}: rc {rc}");
        ensure!(t + ctx.cpu_clock_skew_ns >= last, "HVMOP_get_time went back: {last} -> {t}");
        ensure!(
            t + slack >= before && t <= after + slack,
            "HVMOP_get_time answered {t}, outside the pvclock readings {before} and {after} around the call"
        );
        worst_outside = worst_outside.max(before.saturating_sub(t)).max(t.saturating_sub(after));
        last = last.max(t);
    }
    crate::console::line(format_args!(
        "probe: info time-hvm-get-time HVMOP_get_time was outside the pvclock readings around it by up to {} us",
        worst_outside / 1000
    ));
    Ok(())
}

/// Map shared_info and check what the guest finds there at once (runs before everything that
/// needs events).
pub fn run_shared_info(t: &mut Tap, _ctx: &Ctx) {
    t.run("mem-add-to-physmap-shared-info", shared_info_map());
    t.run("time-pvclock-valid-at-map", pvclock_valid_at_map());
    t.run("time-pvclock-tsc-khz", pvclock_tsc_khz());
    t.run("time-wallclock", wallclock());
    t.run("mem-add-to-physmap-shared-info-move", shared_info_move());
}

/// The `time-` checks that need the clock running for a while or other vCPUs.
pub fn run(t: &mut Tap, ctx: &Ctx) {
    t.run("time-pvclock-monotonic", monotonic_here());
    t.run("time-hvm-get-time", hvm_get_time(ctx));
    if ctx.smp() {
        t.run("time-pvclock-monotonic-ap", monotonic_on_ap(1));
        t.run("time-pvclock-cross-vcpu", cross_vcpu(1));
    }
}
