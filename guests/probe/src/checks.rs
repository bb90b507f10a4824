//! The probe's checks, in the order they run. Each prints one TAP line.

use core::fmt;
use core::sync::atomic::{AtomicU64, Ordering};

use pvh_rt::xen::{cpuid, cpuid_base, hypercall, install_hypercall_page, Via};
use xen_abi::start_info::HvmStartInfo;

use crate::console;

/// Hypercall numbers used here (Xen's public xen.h).
mod nr {
    pub const XEN_VERSION: u64 = 17;
    pub const CONSOLE_IO: u64 = 18;
    pub const SCHED_OP: u64 = 29;
}
const XENVER_VERSION: u64 = 0;
const XENVER_EXTRAVERSION: u64 = 1;
const XENVER_GET_FEATURES: u64 = 6;
const SCHEDOP_SHUTDOWN: u64 = 2;
const ENOSYS: i64 = -38;

/// Counts and numbers the checks.
pub struct Tap {
    n: u32,
    /// Checks passed.
    pub passed: u32,
    /// Checks failed.
    pub failed: u32,
}

impl Tap {
    /// No checks yet.
    pub fn new() -> Self {
        Tap { n: 0, passed: 0, failed: 0 }
    }

    /// Record a check: `detail` is printed when it fails.
    pub fn check(&mut self, name: &str, ok: bool, detail: fmt::Arguments<'_>) {
        self.n += 1;
        if ok {
            self.passed += 1;
            console::line(format_args!("ok {} - {}", self.n, name));
        } else {
            self.failed += 1;
            console::line(format_args!("not ok {} - {}: {}", self.n, name, detail));
        }
    }
}

impl Tap {
    /// Record a check that says why it failed: `Err(why)` becomes the detail.
    pub fn run<E: fmt::Display>(&mut self, name: &str, result: Result<(), E>) {
        match result {
            Ok(()) => self.check(name, true, format_args!("")),
            Err(why) => self.check(name, false, format_args!("{why}")),
        }
    }
}

/// The TSC.
pub fn rdtsc() -> u64 {
    // SAFETY: RDTSC has no side effects.
    unsafe { core::arch::x86_64::_rdtsc() }
}

/// Busy-wait `us` microseconds.
pub fn spin_us(us: u64) {
    let end = rdtsc() + us * tsc_per_ms() / 1000;
    while rdtsc() < end {
        core::hint::spin_loop();
    }
}

/// This vCPU's local APIC id (xAPIC ID register).
pub fn lapic_id() -> u32 {
    lapic_read(0x20) >> 24
}

/// TSC ticks per millisecond, from Xen's CPUID leaf base+3 (guest TSC kHz), else 1 GHz.
pub fn tsc_per_ms() -> u64 {
    match cpuid_base() {
        Some((base, max)) if max >= base + 3 => match cpuid(base + 3, 0)[2] {
            0 => 1_000_000,
            khz => khz as u64,
        },
        _ => 1_000_000,
    }
}

/// Run every check of this stage.
pub fn run_all(t: &mut Tap, _si: &HvmStartInfo) {
    // CPUID: the hypervisor leaves.
    let xen = cpuid_base();
    t.check("cpuid-xen-signature", xen.is_some(), format_args!("no 'XenVMMXenVMM' leaf in 0x40000000..0x4000ff00"));
    let Some((base, max)) = xen else { return };
    t.check("cpuid-xen-max-leaf", max >= base + 4, format_args!("max leaf {max:#x}, want at least {:#x}", base + 4));
    let version = cpuid(base + 1, 0)[0];
    t.check("cpuid-xen-version", version >> 16 >= 4, format_args!("version {:#x}: major below 4", version));
    let leaf2 = cpuid(base + 2, 0);
    t.check(
        "cpuid-hypercall-page-msr",
        leaf2[0] == 1 && leaf2[1] == 0x4000_0000,
        format_args!("leaf 2 = {:#x} pages, MSR {:#x}", leaf2[0], leaf2[1]),
    );
    let leaf4 = cpuid(base + 4, 0);
    t.check(
        "cpuid-vcpu-id",
        leaf4[0] & (1 << 3) != 0 && leaf4[1] == 0,
        format_args!("leaf 4 = flags {:#x}, vcpu id {}", leaf4[0], leaf4[1]),
    );
    t.check("cpuid-hypervisor-bit", cpuid(1, 0)[2] & (1 << 31) != 0, format_args!("CPUID.1:ECX[31] clear"));

    // The hypercall page: 32-byte stubs "mov eax, nr; vmmcall/vmcall; ret".
    install_hypercall_page(base);
    let page = pvh_rt::xen::hypercall_page();
    let stub_ok = |i: usize| {
        let s = &page[i * 32..i * 32 + 9];
        s[0] == 0xb8
            && u32::from_le_bytes([s[1], s[2], s[3], s[4]]) == i as u32
            && s[5] == 0x0f
            && s[6] == 0x01
            && (s[7] == 0xd9 || s[7] == 0xc1)
            && s[8] == 0xc3
    };
    let bad = (0..128).filter(|&i| i != 23).find(|&i| !stub_ok(i));
    t.check("hypercall-page-stubs", bad.is_none(), format_args!("stub {} is wrong", bad.unwrap_or(0)));

    // Hypercalls through the page, VMMCALL and VMCALL.
    let msg = b"probe: hello through the hypercall page\n";
    // SAFETY: a valid buffer for the console write.
    let rc = unsafe { hypercall(Via::Page, nr::CONSOLE_IO, [0, msg.len() as u64, msg.as_ptr() as u64, 0, 0]) };
    t.check("console-io-write", rc == 0, format_args!("CONSOLEIO_write returned {rc}"));
    // SAFETY: XENVER_version takes no buffer.
    let v_page = unsafe { hypercall(Via::Page, nr::XEN_VERSION, [XENVER_VERSION, 0, 0, 0, 0]) };
    t.check(
        "xen-version-matches-cpuid",
        v_page == version as i64,
        format_args!("XENVER_version {v_page:#x}, CPUID says {version:#x}"),
    );
    // SAFETY: as above.
    let v_vmmcall = unsafe { hypercall(Via::Vmmcall, nr::XEN_VERSION, [XENVER_VERSION, 0, 0, 0, 0]) };
    t.check("hypercall-vmmcall", v_vmmcall == v_page, format_args!("VMMCALL gave {v_vmmcall:#x}"));
    check_vmcall_ud(t);

    let mut extra = [0xffu8; 16];
    // SAFETY: XENVER_extraversion writes 16 bytes to the buffer.
    let rc =
        unsafe { hypercall(Via::Page, nr::XEN_VERSION, [XENVER_EXTRAVERSION, extra.as_mut_ptr() as u64, 0, 0, 0]) };
    let terminated = extra.contains(&0);
    t.check("xen-extraversion", rc == 0 && terminated, format_args!("rc {rc}, NUL-terminated: {terminated}"));

    let mut fi = [0u32; 2]; // submap_idx, submap
                            // SAFETY: xen_feature_info is 8 bytes: the hypervisor writes the second word.
    let rc = unsafe { hypercall(Via::Page, nr::XEN_VERSION, [XENVER_GET_FEATURES, fi.as_mut_ptr() as u64, 0, 0, 0]) };
    let f = fi[1];
    let want = (1 << 2) | (1 << 8) | (1 << 9); // auto_translated_physmap, hvm_callback_vector, hvm_safe_pvclock
    t.check(
        "xen-features-pvh",
        rc == 0 && f & want == want && f & (1 << 10) == 0,
        format_args!("rc {rc}, submap 0 = {f:#x}: need bits 2, 8, 9 and not 10 (hvm_pirqs)"),
    );
    // SAFETY: an unknown hypercall takes nothing.
    let rc = unsafe { hypercall(Via::Vmmcall, 60, [0; 5]) };
    t.check("unknown-hypercall-enosys", rc == ENOSYS, format_args!("hypercall 60 returned {rc}"));
    let bad = 0xdead_0000_0000u64;
    // SAFETY: deliberately passing an unmapped buffer: the hypervisor must refuse, not fault.
    let rc = unsafe { hypercall(Via::Vmmcall, nr::XEN_VERSION, [XENVER_EXTRAVERSION, bad, 0, 0, 0]) };
    t.check("bad-pointer-efault", rc == -14, format_args!("extraversion into an unmapped buffer returned {rc}"));

    check_lapic_timer(t);
    check_io(t);
    check_sched(t);
    check_shared_info(t);
    check_fpu_state(t);
}

/// Read the 256 bits of YMM0 (or 128 of XMM0 when `avx` is false).
fn read_vector(avx: bool) -> [u64; 4] {
    let mut v = [0u64; 4];
    // SAFETY: SSE (and AVX when asked) were enabled by `check_fpu_state`; the store goes to
    // a local buffer. keel's own code never touches vector registers (soft-float target).
    unsafe {
        if avx {
            core::arch::asm!("vmovdqu [{}], ymm0", in(reg) v.as_mut_ptr(), options(nostack));
        } else {
            core::arch::asm!("movdqu [{}], xmm0", in(reg) v.as_mut_ptr(), options(nostack));
        }
    }
    v
}

/// Every vCPU's FPU/SSE/AVX state is its own: load a pattern unique to this domain into
/// YMM0 (XMM0 without AVX), yield 50 times (other domains run on this CPU meanwhile), and find
/// it intact each time. AVX is enabled through XSETBV, which keel intercepts and checks.
fn check_fpu_state(t: &mut Tap) {
    let domid = cpuid_base().map_or(0, |(b, _)| cpuid(b + 4, 0)[2] as u64);
    let has_xsave = cpuid(1, 0)[2] & (1 << 26) != 0;
    let has_avx = has_xsave && cpuid(1, 0)[2] & (1 << 28) != 0;
    // SAFETY: turning on the guest's own SSE (CR0.MP, no EM; CR4.OSFXSR, OSXMMEXCPT) and, with
    // AVX, CR4.OSXSAVE and XCR0 = x87|SSE|AVX; this kernel uses no vector code of its own.
    let avx = unsafe {
        let mut cr0: u64;
        core::arch::asm!("mov {}, cr0", out(reg) cr0);
        cr0 = (cr0 & !(1 << 2)) | (1 << 1);
        core::arch::asm!("mov cr0, {}", in(reg) cr0);
        let mut cr4: u64;
        core::arch::asm!("mov {}, cr4", out(reg) cr4);
        cr4 |= (1 << 9) | (1 << 10);
        if has_avx {
            cr4 |= 1 << 18;
        }
        core::arch::asm!("mov cr4, {}", in(reg) cr4);
        if has_avx {
            core::arch::asm!("xsetbv", in("ecx") 0, in("eax") 7u32, in("edx") 0u32);
        }
        has_avx
    };
    let pattern = [
        0x5a5a_0000_0000_0000 | domid,
        0xa5a5_0000_0000_0000 | domid,
        0x3c3c_0000_0000_0000 | domid,
        0xc3c3_0000_0000_0000 | domid,
    ];
    // SAFETY: load the pattern from a local buffer into the vector register.
    unsafe {
        if avx {
            core::arch::asm!("vmovdqu ymm0, [{}]", in(reg) pattern.as_ptr(), options(nostack, readonly));
        } else {
            core::arch::asm!("movdqu xmm0, [{}]", in(reg) pattern.as_ptr(), options(nostack, readonly));
        }
    }
    let want = if avx { pattern } else { [pattern[0], pattern[1], 0, 0] };
    let mut bad = None;
    for i in 0..50 {
        // SAFETY: yield takes no argument.
        unsafe { hypercall(Via::Vmmcall, nr::SCHED_OP, [0, 0, 0, 0, 0]) };
        let got = read_vector(avx);
        if got != want {
            bad = Some((i, got));
            break;
        }
    }
    t.check(
        if avx { "fpu-avx-state-own" } else { "fpu-sse-state-own" },
        bad.is_none(),
        format_args!(
            "after yield {:?} the register held {:x?}, expected {:x?}",
            bad.map(|b| b.0),
            bad.map(|b| b.1),
            want
        ),
    );
}

#[repr(C, align(4096))]
struct Page([u8; 4096]);
static mut SHARED_INFO: Page = Page([0xaa; 4096]);

/// XENMEM_add_to_physmap of the shared_info page over one of the probe's own pages: it must
/// succeed and the page must then read as the hypervisor's (zeroed or initialised, but no
/// longer the 0xaa bytes the probe put there).
fn check_shared_info(t: &mut Tap) {
    let gpfn = core::ptr::addr_of!(SHARED_INFO) as u64 >> 12; // identity map: gva = gpa
                                                              // struct xen_add_to_physmap: domid (DOMID_SELF), size, space (shared_info), idx, gpfn.
    let mut xatp = [0u8; 24];
    xatp[0..2].copy_from_slice(&0x7ff0u16.to_le_bytes());
    xatp[16..24].copy_from_slice(&gpfn.to_le_bytes());
    // SAFETY: a valid xen_add_to_physmap; the page it names is the probe's own, unused.
    let rc = unsafe { hypercall(Via::Vmmcall, 12, [7, xatp.as_ptr() as u64, 0, 0, 0]) };
    // SAFETY: the page is now the hypervisor's shared_info, mapped where the probe's was.
    let first = unsafe { core::ptr::read_volatile(core::ptr::addr_of!(SHARED_INFO.0[3000])) };
    t.check("memory-op-shared-info", rc == 0 && first != 0xaa, format_args!("rc {rc}, byte 3000 = {first:#x}"));
}

/// Port 0xE9 takes `rep outsb` from a buffer (through the guest's page tables); every other
/// port reads all-ones, also with `rep insw`.
fn check_io(t: &mut Tap) {
    let msg = b"probe: string I/O to port 0xe9 works\n";
    // SAFETY: OUTSB from a valid buffer to the debug port.
    unsafe {
        core::arch::asm!("rep outsb", inout("rsi") msg.as_ptr() => _, inout("rcx") msg.len() => _, in("dx") 0xe9u16,
            options(nostack, readonly))
    };
    let b: u8;
    let l: u32;
    // SAFETY: reads of unassigned ports have no effect.
    unsafe {
        core::arch::asm!("in al, dx", in("dx") 0x80u16, out("al") b, options(nomem, nostack));
        core::arch::asm!("in eax, dx", in("dx") 0xcfcu16, out("eax") l, options(nomem, nostack));
    }
    let mut words = [0u16; 8];
    // SAFETY: INSW into a valid buffer from an unassigned port.
    unsafe {
        core::arch::asm!("rep insw", inout("rdi") words.as_mut_ptr() => _, inout("rcx") words.len() => _, in("dx") 0x60u16,
            options(nostack))
    };
    t.check(
        "io-unassigned-ports-read-ones",
        b == 0xff && l == 0xffff_ffff && words.iter().all(|&w| w == 0xffff),
        format_args!("in 0x80 = {b:#x}, in 0xcfc = {l:#x}, rep insw 0x60 = {words:x?}"),
    );
}

/// SCHEDOP_yield returns 0; SCHEDOP_block returns once an interrupt (a one-shot local APIC
/// timer) is pending.
fn check_sched(t: &mut Tap) {
    // SAFETY: yield takes no argument.
    let rc = unsafe { hypercall(Via::Vmmcall, nr::SCHED_OP, [0, 0, 0, 0, 0]) };
    t.check("sched-yield", rc == 0, format_args!("SCHEDOP_yield returned {rc}"));
    let before = TICKS.load(Ordering::Relaxed);
    lapic_write(0x320, TIMER_VECTOR as u32); // one-shot
    lapic_write(0x380, 2_000_000); // 20 ms at 100 MHz
    let start = rdtsc();
    // SAFETY: block with interrupts enabled: the timer's interrupt wakes the vCPU and is then
    // delivered (STI's shadow covers the VMMCALL, so none is taken before the block).
    let rc = unsafe {
        let rc: i64;
        core::arch::asm!("sti", "vmmcall", "cli", inout("rax") nr::SCHED_OP as i64 => rc, inout("rdi") 1u64 => _,
            inout("rsi") 0u64 => _, out("rcx") _, out("rdx") _, out("r8") _, out("r9") _, out("r10") _, out("r11") _);
        rc
    };
    let waited_ms = (rdtsc() - start) / tsc_per_ms();
    // SAFETY: take the pending timer interrupt.
    unsafe { core::arch::asm!("sti", "nop", "cli") };
    let ticks = TICKS.load(Ordering::Relaxed) - before;
    t.check(
        "sched-block-until-interrupt",
        rc == 0 && ticks >= 1 && waited_ms >= 5,
        format_args!("SCHEDOP_block returned {rc} after {waited_ms} ms, {ticks} timer interrupt(s)"),
    );
}

static UD_TAKEN: AtomicU64 = AtomicU64::new(0);

fn ud_handler(f: &mut pvh_rt::idt::Frame) {
    UD_TAKEN.fetch_add(1, Ordering::Relaxed);
    f.rip += 3; // past the VMCALL
}

/// On an AMD CPU, Intel's VMCALL is not a hypercall: it raises #UD in the guest (Xen 4.17
/// intercepts #UD only for cross-vendor guests). A guest that sees AMD uses VMMCALL.
fn check_vmcall_ud(t: &mut Tap) {
    let vendor = cpuid(0, 0);
    let amd = vendor[1] == u32::from_le_bytes(*b"Auth") || vendor[1] == u32::from_le_bytes(*b"Hygo");
    pvh_rt::idt::register(6, ud_handler);
    // SAFETY: XENVER_version takes no buffer; on AMD the #UD handler skips the instruction.
    let rc = unsafe { hypercall(Via::Vmcall, nr::XEN_VERSION, [XENVER_VERSION, 0, 0, 0, 0]) };
    pvh_rt::idt::unregister(6);
    let ud = UD_TAKEN.load(Ordering::Relaxed);
    t.check(
        "hypercall-vmcall-ud-on-amd",
        if amd { ud == 1 } else { ud == 0 && rc > 0 },
        format_args!("AMD vendor: {amd}; VMCALL raised #UD {ud} time(s), returned {rc:#x}"),
    );
}

static TICKS: AtomicU64 = AtomicU64::new(0);

const LAPIC: u64 = 0xfee0_0000;
const TIMER_VECTOR: u8 = 0x40;

fn lapic_write(reg: u64, v: u32) {
    // SAFETY: the local APIC page (emulated by the hypervisor), identity-mapped by pvh-rt.
    unsafe { core::ptr::write_volatile((LAPIC + reg) as *mut u32, v) }
}

fn lapic_read(reg: u64) -> u32 {
    // SAFETY: as above.
    unsafe { core::ptr::read_volatile((LAPIC + reg) as *const u32) }
}

fn timer_tick(_: &mut pvh_rt::idt::Frame) {
    TICKS.fetch_add(1, Ordering::Relaxed);
    lapic_write(0xb0, 0); // EOI
}

/// The local APIC timer, periodic at about 1 ms, must interrupt at least 5 times within 1 s.
fn check_lapic_timer(t: &mut Tap) {
    pvh_rt::idt::register(TIMER_VECTOR, timer_tick);
    let id = lapic_id();
    lapic_write(0xf0, 0x1ff); // software enable, spurious vector 0xff
    lapic_write(0x3e0, 0xb); // divide by 1
    lapic_write(0x320, TIMER_VECTOR as u32 | (1 << 17)); // periodic
    lapic_write(0x380, 1_000_000);
    let per_ms = tsc_per_ms();
    let start = rdtsc();
    // SAFETY: the IDT handles the timer vector.
    unsafe { core::arch::asm!("sti") };
    while TICKS.load(Ordering::Relaxed) < 5 && rdtsc() - start < 1000 * per_ms {
        core::hint::spin_loop();
    }
    // SAFETY: interrupts off again.
    unsafe { core::arch::asm!("cli") };
    lapic_write(0x320, 1 << 16); // masked
    let ticks = TICKS.load(Ordering::Relaxed);
    t.check("lapic-id-bsp", id == 0, format_args!("APIC id {id}, expected 0 (2 x vcpu 0)"));
    t.check("lapic-timer-interrupts", ticks >= 5, format_args!("{ticks} timer interrupts in 1 s"));
}

/// Burn CPU for `ms` milliseconds of TSC time.
pub fn spin(ms: u64) {
    let end = rdtsc() + ms * tsc_per_ms();
    let mut n = 0u64;
    while rdtsc() < end {
        n = n.wrapping_add(1);
        core::hint::spin_loop();
    }
    console::line(format_args!("probe: spun {ms} ms ({n} iterations)"));
}

/// SCHEDOP_shutdown with `reason`; never returns (if the hypervisor returns, halt).
pub fn shutdown(reason: u32) -> ! {
    let arg = reason;
    // SAFETY: sched_shutdown is one u32.
    unsafe { hypercall(Via::Vmmcall, nr::SCHED_OP, [SCHEDOP_SHUTDOWN, &arg as *const u32 as u64, 0, 0, 0]) };
    console::line(format_args!("probe: still running after SCHEDOP_shutdown"));
    loop {
        // SAFETY: stopping this vCPU.
        unsafe { core::arch::asm!("cli; hlt") };
    }
}

/// Calls timed by the null-hypercall benchmark.
const BENCH_CALLS: usize = 100_000;
static mut BENCH_SAMPLES: [u32; BENCH_CALLS] = [0; BENCH_CALLS];

/// The cost of a hypercall that does nothing (XENVER_version through VMMCALL), in TSC cycles:
/// median, min and max of 100 000 calls, each timed on its own.
pub fn bench_null_hypercall() {
    // SAFETY: only this single-threaded code touches the sample buffer.
    let samples = unsafe { &mut *core::ptr::addr_of_mut!(BENCH_SAMPLES) };
    for s in samples.iter_mut() {
        let t0 = rdtsc();
        // SAFETY: XENVER_version takes no buffer.
        let v = unsafe { hypercall(Via::Vmmcall, nr::XEN_VERSION, [XENVER_VERSION, 0, 0, 0, 0]) };
        let t1 = rdtsc();
        core::hint::black_box(v);
        *s = (t1 - t0).min(u32::MAX as u64) as u32;
    }
    samples.sort_unstable();
    console::line(format_args!(
        "probe: bench null-hypercall median {} cycles, min {}, max {} ({} calls)",
        samples[BENCH_CALLS / 2],
        samples[0],
        samples[BENCH_CALLS - 1],
        BENCH_CALLS
    ));
}
