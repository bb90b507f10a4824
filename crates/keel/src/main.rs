//! keel: a Xen-compatible type-1 hypervisor.
//!
//! `keel_main` is where the boot CPU arrives in 64-bit mode (from `arch::x86::boot`). It
//! brings the machine up in a fixed order: console and exception handling, boot information
//! and the command line, memory and keel's page tables, the boot CPU's own tables and stack,
//! ACPI, timekeeping and the local APIC, the other CPUs. Each step reports what it found;
//! when all of it works keel prints `keel: ready: <N> cpus, <M> MiB free`.
#![no_std]
#![no_main]

extern crate alloc;

pub mod arch;
pub mod boot;
pub mod console;
pub mod dom;
pub mod heap;
pub mod hypercall;
pub mod mm;
pub mod sched;
pub mod selftest;
pub mod sync;
pub mod timers;

use core::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use arch::x86::{apic, cpu, gdt, percpu, platform, smp, svm, time, traps};

/// The boot CPU's entry from the 32-bit boot code: `magic` tells which loader started keel,
/// `info` is the physical address of its information structure.
#[unsafe(no_mangle)]
pub extern "C" fn keel_main(magic: u32, info: u32) -> ! {
    console::early_init();
    traps::load_idt();
    log::info!("keel {} (x86_64) starting", env!("CARGO_PKG_VERSION"));
    let options = boot::init(magic, info);
    let boot_info = boot::info();
    mm::init(&boot_info);
    drop(boot_info);

    // The boot CPU's own descriptor tables and a stack with a guard page.
    let bsp =
        new_cpu(0, cpu::features().initial_apic_id).unwrap_or_else(|| panic!("no memory for the boot CPU's stacks"));
    percpu::install(bsp);
    gdt::load(bsp);
    OPTIONS.call_once(|| options);
    // SAFETY: the stack was just mapped for this CPU; nothing on the boot stack is used after
    // the switch (everything `bsp_main` needs is in statics).
    unsafe { arch::x86::switch_stack(bsp.stack.top, bsp_main) }
}

static OPTIONS: spin::Once<keel_boot::cmdline::Options> = spin::Once::new();

/// The command-line options (after `keel_main` parsed them).
pub fn options() -> &'static keel_boot::cmdline::Options {
    OPTIONS.get().expect("options are parsed before anything asks for them")
}

/// Allocate, build and publish the per-CPU data (stacks mapped, GDT and TSS filled) of CPU
/// `index` with local APIC id `apic_id`.
fn new_cpu(index: u32, apic_id: u32) -> Option<&'static percpu::PerCpu> {
    let (stack, ists) = mm::map_cpu_stacks(index)?;
    let mut p = alloc::boxed::Box::new(percpu::PerCpu::new(index, apic_id, stack, ists));
    gdt::build(&mut p);
    Some(percpu::publish(alloc::boxed::Box::leak(p)))
}

extern "C" fn bsp_main() -> ! {
    let opts = options();
    let summary = mm::summary();
    let mem = platform::DirectMapMemory { limit: summary.directmap_end };
    let platform = platform::init(boot::acpi_root().as_ref(), &mem);

    let pm_timer = platform
        .fadt
        .as_ref()
        .and_then(|f| f.pm_tmr)
        .filter(|g| g.space == keel_acpi::AddressSpace::SystemIo)
        .map(|g| g.address as u16);
    match time::calibrate(pm_timer) {
        Some((reference, khz)) => {
            log::info!(
                "time: TSC runs at {}.{:03} MHz (calibrated against the {})",
                khz / 1000,
                khz % 1000,
                reference.name()
            )
        }
        None => log::warn!("time: neither the PIT nor the ACPI PM timer counts; assuming a 1 GHz TSC"),
    }
    if arch::x86::rtc::init().is_none() {
        log::warn!("time: the CMOS clock holds no valid date; guests' wall clock starts at 1970");
    }

    apic::init_bsp(|pa| mm::ioremap(pa, 4096).unwrap_or_else(|| panic!("cannot map the local APIC at {pa:#x}")));
    apic::calibrate_timer();
    smp::init();
    percpu::this_cpu().online.store(true, Ordering::SeqCst);
    x86_64::instructions::interrupts::enable();
    selftest::timer_interrupt();

    start_aps(platform, opts.maxcpus);
    selftest::cross_cpu_calls();
    selftest::wx();
    selftest::module_hashes();

    let online = percpu::all().filter(|c| c.online.load(Ordering::SeqCst)).count();
    let free_mib = mm::free_frame_count() * 4096 / (1024 * 1024);
    console::raw_line(format_args!("keel: ready: {online} cpus, {free_mib} MiB free"));

    match opts.test {
        Some(keel_boot::cmdline::TestAction::PageFault) => selftest::provoke_page_fault(),
        Some(keel_boot::cmdline::TestAction::Panic) => selftest::provoke_panic(),
        None => {}
    }

    // Guests: SVM on every CPU, the scheduler, then the domains the boot modules describe.
    if svm::features().is_none() || svm::init_permission_maps().is_none() {
        log::warn!("keel runs no guests on this machine");
        idle(opts.when_idle)
    }
    let me = percpu::this_cpu();
    enable_virtualization(me);
    sched::init(percpu::count() as u32);
    GUESTS_READY.store(true, Ordering::Release);
    for c in percpu::all().filter(|c| c.index != me.index) {
        apic::send_ipi(apic::Dest::Apic(c.apic_id), apic::Delivery::Fixed, apic::KICK_VECTOR);
    }
    // Every CPU takes its SVM pages now; the memory balance starts after that.
    let deadline = time::deadline_after_ms(1_000);
    while !time::passed(deadline) && percpu::all().any(|c| c.online.load(Ordering::Acquire) && c.svm.lock().is_none()) {
        core::hint::spin_loop();
    }
    FREE_BEFORE_DOMAINS.store(mm::free_frame_count(), Ordering::Release);
    if dom::builder::build_boot_domains() == 0 {
        idle(opts.when_idle)
    }
    sched::cpu_loop(me)
}

/// Set once the boot CPU has set up guest support; APs wait for it before scheduling.
static GUESTS_READY: AtomicBool = AtomicBool::new(false);
/// Free frames just before the first domain was built.
static FREE_BEFORE_DOMAINS: AtomicU64 = AtomicU64::new(0);

/// Turn SVM on for this CPU and keep its state in its per-CPU data.
fn enable_virtualization(me: &'static percpu::PerCpu) {
    svm::vcpu::enable_host_fpu_features();
    match svm::enable_this_cpu() {
        Some(s) => *me.svm.lock() = Some(s),
        None => log::error!("svm: cannot enable SVM on cpu {}", me.index),
    }
}

/// Every domain has been destroyed: report the memory balance and do what `when_idle=` says.
pub fn all_domains_gone() {
    let before = FREE_BEFORE_DOMAINS.load(Ordering::Acquire);
    let now = mm::free_frame_count();
    log::info!("mm: all domains destroyed: {} KiB free (before the first domain: {} KiB)", now * 4, before * 4);
    match options().when_idle {
        keel_boot::cmdline::WhenIdle::Stay => log::info!("no domain left; keel stays up"),
        when => idle(when),
    }
}

/// Nothing to run: do what `when_idle=` says.
fn idle(when: keel_boot::cmdline::WhenIdle) -> ! {
    use keel_boot::cmdline::WhenIdle;
    match when {
        WhenIdle::PowerOff => arch::x86::power::poweroff(),
        WhenIdle::Reboot => {
            kprintln!("rebooting");
            arch::x86::power::reboot()
        }
        WhenIdle::Stay => loop {
            cpu::wait_for_interrupt();
        },
    }
}

/// Start every enabled CPU in the MADT (up to `maxcpus` in all).
fn start_aps(platform: &platform::Platform, maxcpus: Option<u32>) {
    let Some(madt) = &platform.madt else {
        log::warn!("smp: no MADT: running on the boot CPU only");
        return;
    };
    let limit = maxcpus.unwrap_or(u32::MAX).min(percpu::MAX_CPUS as u32);
    let bsp_apic = apic::id();
    let Some(page) = mm::summary().trampoline_page else {
        log::warn!("smp: no RAM page below 1 MiB for the start-up trampoline: running on the boot CPU only");
        return;
    };
    let trampoline = smp::Trampoline::install(
        page,
        arch::x86::paging::phys_to_virt(page),
        arch::x86::boot::boot_pml4_phys(),
        cpu::features().nx,
    );
    let mut next_index = 1u32;
    let mut skipped = 0;
    for c in madt.cpus() {
        if !c.enabled || c.apic_id == bsp_apic {
            continue;
        }
        if next_index >= limit {
            skipped += 1;
            continue;
        }
        if !apic::is_x2apic() && c.apic_id > 0xfe {
            log::warn!("smp: cpu with apic id {} needs x2APIC mode, which this machine lacks; not started", c.apic_id);
            continue;
        }
        let Some(p) = new_cpu(next_index, c.apic_id) else {
            log::error!("smp: out of memory for cpu {next_index}'s stacks; not started");
            break;
        };
        match smp::start_ap(&trampoline, p, mm::summary().root, ap_main) {
            Ok(()) => {
                log::debug!("smp: cpu {} (apic {}) is up", p.index, p.apic_id);
                next_index += 1;
            }
            Err(e) => log::error!("smp: cpu with apic id {} did not start ({e:?})", c.apic_id),
        }
    }
    if skipped > 0 {
        log::info!("smp: {skipped} more CPUs not started (maxcpus={limit})");
    }
}

/// An application processor, on its own stack and page tables.
fn ap_main(me: &'static percpu::PerCpu) -> ! {
    percpu::install(me);
    gdt::load(me);
    traps::load_idt();
    arch::x86::paging::enable_global_pages();
    apic::init_this_cpu();
    let id = apic::id();
    if id != me.apic_id {
        log::warn!("smp: cpu {} reports apic id {id}, the MADT said {}", me.index, me.apic_id);
    }
    me.online.store(true, Ordering::SeqCst);
    x86_64::instructions::interrupts::enable();
    while !GUESTS_READY.load(Ordering::Acquire) {
        cpu::wait_for_interrupt();
    }
    enable_virtualization(me);
    sched::cpu_loop(me)
}

#[panic_handler]
fn panic(info: &core::panic::PanicInfo<'_>) -> ! {
    let cpu_index = percpu::try_this_cpu().map_or(0, |c| c.index);
    traps::begin_fatal(format_args!("panic on cpu {cpu_index}: {}", info.message()));
    if let Some(loc) = info.location() {
        kprintln!("at {}:{}:{}", loc.file(), loc.line(), loc.column());
    }
    let (rip, rbp): (u64, u64);
    // SAFETY: reads the current instruction and frame pointers; no memory is touched.
    unsafe { core::arch::asm!("lea {}, [rip]", "mov {}, rbp", out(reg) rip, out(reg) rbp, options(nomem, nostack)) };
    traps::call_trace(rip, rbp);
    traps::stop_machine()
}
