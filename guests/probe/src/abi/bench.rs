//! Micro-benchmarks (`probe.bench`), in the probe's benchmark line format, times in TSC
//! cycles: an event sent and taken on the same vCPU, sent on vCPU 0 and taken on vCPU 1,
//! and a 4 KiB grant copy.

use core::sync::atomic::Ordering;

use xen_abi::grant_table::{GnttabCopyPtr, GrantRef, GNTCOPY_DEST_GREF, GNTST_OKAY, GTF_PERMIT_ACCESS};
use xen_abi::{DomId, XenPfn};

use super::events::{self, count, rec};
use super::evtchn::{bind_ipi, close, send};
use super::fw::{rdtsc, tsc_per_ms, with_irqs};
use super::{gnt, hvm, pages, time, Ctx};
use crate::console;

/// Samples per benchmark.
const N: usize = 1000;
/// The benchmark's grant reference.
const REF_BENCH: u32 = 21;

static mut SAMPLES: [u64; N] = [0; N];

fn report(name: &str, what: &str, samples: &mut [u64]) {
    samples.sort_unstable();
    let n = samples.len();
    console::line(format_args!(
        "probe: bench {name} median {} cycles, min {}, max {} ({n} {what})",
        samples[n / 2],
        samples[0],
        samples[n - 1]
    ));
}

fn samples() -> &'static mut [u64; N] {
    // SAFETY: only the benchmarks, one at a time on vCPU 0, use the buffer.
    unsafe { &mut *core::ptr::addr_of_mut!(SAMPLES) }
}

/// Send on `port` and time until its upcall ran (on whatever vCPU it is bound to).
fn send_to_upcall(name: &str, port: u32) {
    let s = samples();
    let limit = 100 * tsc_per_ms();
    let ok = with_irqs(|| {
        for slot in s.iter_mut() {
            let seen = count(port);
            let t0 = rdtsc();
            if send(port) != 0 {
                return false;
            }
            while count(port) == seen {
                if rdtsc() - t0 > limit {
                    return false;
                }
                core::hint::spin_loop();
            }
            *slot = rec(port).tsc.load(Ordering::Acquire).saturating_sub(t0);
        }
        true
    });
    if ok {
        report(name, "sends", s);
    } else {
        console::line(format_args!("probe: no bench {name}: an event was not delivered within 100 ms"));
    }
}

fn bench_same_vcpu() {
    let Ok(p) = bind_ipi(0) else {
        console::line(format_args!("probe: no bench evtchn-send-upcall-same-vcpu: bind_ipi failed"));
        return;
    };
    send_to_upcall("evtchn-send-upcall-same-vcpu", p);
    close(p);
}

fn bench_cross_vcpu() {
    if !crate::smp::ap_online(1) && !crate::smp::start_ap64(1) {
        console::line(format_args!("probe: no bench evtchn-send-upcall-cross-vcpu: vCPU 1 does not start"));
        return;
    }
    hvm::set_upcall_vector(1, events::UPCALL_VECTOR);
    let Ok(p) = bind_ipi(1) else {
        console::line(format_args!("probe: no bench evtchn-send-upcall-cross-vcpu: bind_ipi failed"));
        return;
    };
    send_to_upcall("evtchn-send-upcall-cross-vcpu", p);
    close(p);
}

fn bench_grant_copy(ctx: &Ctx) {
    if !gnt::ensure_frame0() {
        console::line(format_args!("probe: no bench grant-copy-4k: grant frame 0 cannot be mapped"));
        return;
    }
    gnt::grant(REF_BENCH, ctx.domid, pages::gfn(pages::BENCH), GTF_PERMIT_ACCESS);
    let s = samples();
    let mut ok = true;
    for slot in s.iter_mut() {
        let t0 = rdtsc();
        let st = gnt::copy(
            GnttabCopyPtr::by_gmfn(XenPfn(pages::gfn(pages::COPY_SRC)), DomId::SELF, 0),
            GnttabCopyPtr::by_gref(GrantRef(REF_BENCH), DomId::SELF, 0),
            4096,
            GNTCOPY_DEST_GREF,
        );
        *slot = rdtsc() - t0;
        if st != GNTST_OKAY {
            ok = false;
            break;
        }
    }
    gnt::revoke(REF_BENCH);
    if ok {
        report("grant-copy-4k", "copies", s);
    } else {
        console::line(format_args!("probe: no bench grant-copy-4k: GNTTABOP_copy failed"));
    }
}

/// Run the benchmarks (after the null-hypercall one).
pub fn run(ctx: &Ctx) {
    if !time::ensure_shared_info() {
        console::line(format_args!("probe: no event benchmarks: shared_info cannot be mapped"));
        return;
    }
    super::fw::lapic_write(0xf0, 0x1ff);
    hvm::set_upcall_vector(0, events::UPCALL_VECTOR);
    events::STAMP_TIME.store(false, Ordering::Release);
    bench_same_vcpu();
    if ctx.smp() {
        bench_cross_vcpu();
    }
    bench_grant_copy(ctx);
    events::STAMP_TIME.store(true, Ordering::Release);
}
