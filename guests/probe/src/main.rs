//! keel's probe guest: a freestanding PVH kernel that checks, one by one, the Xen interface
//! it is given, and reports in TAP style (`ok <n> - <name>` / `not ok <n> - <name>: <why>`),
//! ending with `probe: <N> passed, <M> failed` and a shutdown of its domain.
//!
//! It uses only the Xen ABI (CPUID leaves, the hypercall page, hypercalls, the local APIC a PVH
//! guest has), so the same binary runs on keel and on real Xen for a differential comparison.
//!
//! Options (its command line): `probe.crash=outside-ram|triple-fault` (misbehave on purpose
//! after the checks, to show that only this domain dies), `probe.spin=<ms>` (burn CPU for that
//! long before shutting down: scheduler tests), `probe.bench` (micro-benchmarks), `probe.exit=halt` (end with every vCPU halted
//! with interrupts off, which a Xen-compatible hypervisor treats as power-off), `probe.abi` (the
//! Xen ABI conformance suite, see `abi`), `probe.peer=<domid>` (with `probe.abi`: the
//! two-domain checks against that domain), `probe.timer-limit-us=<N>` (with `probe.abi`: the
//! median timer lateness allowed instead of 1 ms), `probe.clock-skew-us=<N>` (with
//! `probe.abi`: how far the hypervisor's clocks on different CPUs may disagree).
#![no_std]
#![no_main]

mod abi;
mod checks;
mod console;
mod smp;

use xen_abi::start_info::{HvmStartInfo, MAGIC};

/// What the command line asked for.
#[derive(Default)]
pub struct Options {
    /// Misbehave after the checks.
    pub crash: Option<Crash>,
    /// Burn CPU for this many milliseconds before shutting down.
    pub spin_ms: u64,
    /// Run the micro-benchmarks after the checks.
    pub bench: bool,
    /// End by stopping every vCPU (INIT the APs, HLT with interrupts off on this one) instead
    /// of SCHEDOP_shutdown: Xen then powers the domain off.
    pub halt: bool,
    /// Run the ABI conformance suite.
    pub abi: bool,
    /// What the ABI suite is told (the peer domain, the timing allowances).
    pub suite: abi::Options,
}

/// Ways to misbehave.
#[derive(Clone, Copy)]
pub enum Crash {
    /// Read guest-physical memory far outside the domain's RAM.
    OutsideRam,
    /// Load an empty IDT and raise an exception: a triple fault.
    TripleFault,
}

fn parse_options(cmdline: &str) -> Options {
    let mut o = Options::default();
    for word in cmdline.split_ascii_whitespace() {
        match word.split_once('=') {
            Some(("probe.crash", "outside-ram")) => o.crash = Some(Crash::OutsideRam),
            Some(("probe.crash", "triple-fault")) => o.crash = Some(Crash::TripleFault),
            Some(("probe.spin", ms)) => o.spin_ms = ms.parse().unwrap_or(0),
            Some(("probe.exit", "halt")) => o.halt = true,
            Some(("probe.peer", id)) => o.suite.peer = id.parse().ok(),
            Some(("probe.timer-limit-us", us)) => o.suite.timer_limit_us = us.parse().ok(),
            Some(("probe.clock-skew-us", us)) => o.suite.clock_skew_us = us.parse().ok(),
            None if word == "probe.bench" => o.bench = true,
            None if word == "probe.abi" => o.abi = true,
            _ => {}
        }
    }
    o
}

/// Read the NUL-terminated command line at `pa` (identity-mapped), at most 1 KiB.
fn cmdline_at(pa: u64) -> &'static str {
    if pa == 0 {
        return "";
    }
    // SAFETY: the start info's command line pointer names guest RAM below 4 GiB, identity-mapped
    // by pvh-rt; the read is bounded to 1 KiB.
    let bytes = unsafe { core::slice::from_raw_parts(pa as *const u8, 1024) };
    let len = bytes.iter().position(|&b| b == 0).unwrap_or(bytes.len());
    core::str::from_utf8(&bytes[..len]).unwrap_or("")
}

#[unsafe(no_mangle)]
extern "C" fn pvh_main(start_info: u64) -> ! {
    pvh_rt::idt::init();
    pvh_rt::idt::set_fatal_sink(console::line);
    // SAFETY: the hypervisor put the start info at `start_info` (identity-mapped).
    let si: HvmStartInfo = unsafe { core::ptr::read_unaligned(start_info as *const HvmStartInfo) };
    let cmdline = if si.magic == MAGIC { cmdline_at(si.cmdline_paddr) } else { "" };
    let opts = parse_options(cmdline);
    console::init();
    console::line(format_args!("probe: starting (command line '{cmdline}')"));

    let mut t = checks::Tap::new();
    t.check("start-info-magic", si.magic == MAGIC, format_args!("magic {:#x}", si.magic));
    checks::run_all(&mut t, &si);
    let my_apic_id = checks::lapic_id();
    smp::run(&mut t, si.rsdp_paddr);
    smp::check_x2apic(&mut t);
    if opts.abi {
        abi::run(&mut t, &si, &opts.suite);
    }
    console::line(format_args!("probe: {} passed, {} failed", t.passed, t.failed));
    if opts.bench {
        checks::bench_null_hypercall();
        abi::bench(&si);
    }

    if opts.spin_ms > 0 {
        checks::spin(opts.spin_ms);
    }
    match opts.crash {
        Some(Crash::OutsideRam) => {
            console::line(format_args!("probe: reading guest-physical 0xc0000000, outside my RAM"));
            // SAFETY: deliberately touching memory the domain does not own: the hypervisor must
            // crash this domain (and only it).
            let v = unsafe { core::ptr::read_volatile(0xc000_0000 as *const u64) };
            console::line(format_args!("probe: read {v:#x} outside my RAM and was not stopped"));
        }
        Some(Crash::TripleFault) => {
            console::line(format_args!("probe: triple-faulting on purpose"));
            // SAFETY: deliberately fatal: with an empty IDT the breakpoint cannot be delivered,
            // which escalates to a triple fault.
            unsafe {
                let zero = [0u8; 10];
                core::arch::asm!("lidt [{}]", "int3", in(reg) &zero, options(nostack));
            }
        }
        None => {}
    }
    if opts.halt {
        console::line(format_args!("probe: stopping every vCPU"));
        smp::stop_aps(si.rsdp_paddr, my_apic_id);
        loop {
            // SAFETY: HLT with interrupts off on every vCPU: the domain powers off.
            unsafe { core::arch::asm!("cli; hlt") };
        }
    }
    checks::shutdown(xen_abi_shutdown::POWEROFF)
}

/// SCHEDOP_shutdown reasons (kept local until xen-abi grows them).
pub mod xen_abi_shutdown {
    /// Power off.
    pub const POWEROFF: u32 = 0;
    /// Crash.
    pub const CRASH: u32 = 3;
}

#[panic_handler]
fn panic(info: &core::panic::PanicInfo<'_>) -> ! {
    console::line(format_args!("probe: panic: {}", info.message()));
    checks::shutdown(xen_abi_shutdown::CRASH)
}
