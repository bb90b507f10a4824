//! Checks keel runs on itself at every boot, and the test-only faults (`test=`).
//!
//! The boot checks are cheap and prove the machinery the rest of keel relies on: the local
//! APIC timer interrupts, every application processor answers a cross-CPU call, and keel's
//! own mappings are W^X. Each reports a line the integration tests look for.

use core::sync::atomic::Ordering;

use crate::arch::x86::{apic, percpu, smp, time};
use crate::mm;

/// Arm the local APIC timer and wait for its interrupt.
pub fn timer_interrupt() {
    let before = apic::timer_interrupts();
    let start = time::now_ns();
    apic::timer_oneshot(1_000_000);
    let deadline = time::deadline_after_ms(500);
    while apic::timer_interrupts() == before && !time::passed(deadline) {
        core::hint::spin_loop();
    }
    let us = (time::now_ns() - start) / 1000;
    if apic::timer_interrupts() == before {
        log::error!("apic: the timer interrupt did not arrive within 500 ms");
    } else {
        log::info!("apic: timer interrupt arrived after {us} us (armed for 1000 us)");
    }
}

fn my_apic_id(_: u64) -> u64 {
    apic::id() as u64
}

/// Call a function on every other online CPU; each must answer with its own APIC id.
pub fn cross_cpu_calls() {
    let me = percpu::this_cpu().index;
    for c in percpu::all().filter(|c| c.index != me && c.online.load(Ordering::SeqCst)) {
        match smp::call_on(c.index as usize, my_apic_id, 0, 1_000) {
            Ok(id) if id == c.apic_id as u64 => {
                log::info!("smp: cpu {} (apic {}) answered a cross-CPU call", c.index, c.apic_id)
            }
            Ok(id) => {
                log::error!("smp: cpu {} answered a cross-CPU call as apic {id}, expected {}", c.index, c.apic_id)
            }
            Err(e) => log::error!("smp: cpu {} (apic {}) did not answer a cross-CPU call: {e:?}", c.index, c.apic_id),
        }
    }
}

/// Verify no mapping of keel's is both writable and executable.
pub fn wx() {
    match mm::check_wx() {
        Ok((rx, r, rw)) => {
            log::info!("paging: keel's image is W^X: {rx} pages text (RX), {r} read-only, {rw} data (RW, NX)")
        }
        Err(va) => log::error!("paging: {va:#x} is mapped writable and executable"),
    }
}

/// Address `test=pagefault` reads: canonical, in the lower half, never mapped by keel.
pub const TEST_FAULT_ADDRESS: u64 = 0x0000_0bad_c0de_0000;

/// `test=pagefault`: read an unmapped address, which must produce a full fatal report.
#[inline(never)]
pub fn provoke_page_fault() {
    log::info!("test: reading {TEST_FAULT_ADDRESS:#x}, which is not mapped");
    // SAFETY: deliberately unsound: this read faults, and the fault handler never returns
    // here. It exists to test that handler.
    let v = unsafe { core::ptr::read_volatile(TEST_FAULT_ADDRESS as *const u64) };
    log::error!("test: reading {TEST_FAULT_ADDRESS:#x} did not fault (read {v:#x})");
}

/// `test=panic`: panic, which must produce a fatal report naming this place.
#[inline(never)]
pub fn provoke_panic() {
    log::info!("test: panicking on purpose");
    panic!("test=panic asked for a panic");
}

/// Hash every usable boot module now that keel has made its boot-time allocations: the
/// hashes must be those of the files the loader was given (nothing of keel's overwrote them).
pub fn module_hashes() {
    let boot = crate::boot::info();
    let usable = mm::summary().usable_modules;
    for (i, m) in boot.modules().iter().enumerate() {
        if i >= 64 || usable & (1 << i) == 0 {
            continue;
        }
        let va = crate::arch::x86::paging::phys_to_virt(m.start);
        // SAFETY: the module lies in RAM (checked by mm::init), which the direct map covers;
        // keel reserved it at boot, so nothing else writes it.
        let bytes = unsafe { core::slice::from_raw_parts(va as *const u8, (m.end - m.start) as usize) };
        log::info!("boot: module {i} content hash {:#018x}", keel_boot::bootinfo::content_hash(bytes));
    }
}
