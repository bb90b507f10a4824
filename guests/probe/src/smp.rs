//! The probe's multiprocessor checks: find the other vCPUs in the ACPI MADT, start them the
//! native way (INIT, STARTUP, STARTUP through the local APIC into a real-mode trampoline), and
//! send them an IPI. This is how Linux 6.1 brings up a PVH guest's CPUs.
//!
//! The trampoline lives at guest-physical 0x8000 (STARTUP vector 8). Each AP takes a ticket,
//! counts itself in, and halts. Its local APIC is software-disabled after INIT (as on real
//! hardware) and a real-mode AP cannot reach the APIC page to enable it, so the IPI check
//! sends NMIs, which a disabled APIC still accepts: the real-mode IVT's NMI entry counts them.
//! Counters sit at 0x8f00.
//!
//! For the ABI suite (`probe.abi`) the APs can also run in long mode, each on its own stack,
//! sharing the kernel's page tables and IDT: [`start_ap64`] starts one through a second
//! trampoline (INIT, STARTUP into real mode, then up to long mode, as Linux does), or the
//! caller starts it with `VCPUOP_initialise`/`VCPUOP_up` at [`ap_entry64`]; either way it ends
//! in a loop that runs the tasks [`run_on`] posts and otherwise halts with interrupts on, so
//! it takes event upcalls like any vCPU of a guest.

use core::sync::atomic::{AtomicU32, AtomicU64, Ordering};

use keel_acpi::{AcpiWarning, PhysMemory};

use crate::checks::Tap;

/// Where the trampoline goes (STARTUP vector = page number).
const TRAMPOLINE: u64 = 0x8000;
const SIPI_VECTOR: u32 = (TRAMPOLINE >> 12) as u32;
/// Counters: +0 tickets, +4 APs arrived, +8 IPIs taken.
const COUNTERS: u64 = 0x8f00;
/// The NMI vector (its IVT entry counts NMIs on the APs).
const NMI_VECTOR: u8 = 2;
const LAPIC: u64 = 0xfee0_0000;

core::arch::global_asm!(
    r#"
    .section .rodata.ap_trampoline, "a"
    .code16
    .global probe_ap_start
probe_ap_start:
    cli
    xorw %ax, %ax
    movw %ax, %ds
    movw %ax, %ss
    movl $1, %eax
    lock xaddl %eax, 0x8f00             /* ticket: this AP's index */
    shll $8, %eax
    movw $0x7000, %sp
    subw %ax, %sp                       /* 256-byte stack per AP below 0x7000 */
    lock incl 0x8f04                    /* arrived */
    sti
1:  hlt
    jmp 1b
    .global probe_ap_ipi
probe_ap_ipi:                               /* the NMI handler */
    lock incl 0x8f08
    iret
    .global probe_ap_end
probe_ap_end:
    .code64
"#,
    options(att_syntax)
);

unsafe extern "C" {
    static probe_ap_start: u8;
    static probe_ap_ipi: u8;
    static probe_ap_end: u8;
}

fn counter(i: u64) -> &'static AtomicU32 {
    // SAFETY: the counters are in the trampoline page, guest RAM identity-mapped by pvh-rt;
    // APs update them with locked instructions, so they are accessed atomically here too.
    unsafe { &*((COUNTERS + 4 * i) as *const AtomicU32) }
}

fn lapic_write(reg: u64, v: u32) {
    // SAFETY: the emulated local APIC page.
    unsafe { core::ptr::write_volatile((LAPIC + reg) as *mut u32, v) }
}

fn x2apic_mode() -> bool {
    // SAFETY: IA32_APIC_BASE exists on every x86-64 CPU.
    unsafe { pvh_rt::xen::rdmsr(0x1b) & (1 << 10) != 0 }
}

fn send_ipi(dest: u32, low: u32) {
    if x2apic_mode() {
        // SAFETY: the x2APIC ICR (MSR 0x830) exists in x2APIC mode; one write sends.
        unsafe { pvh_rt::xen::wrmsr(0x830, (dest as u64) << 32 | low as u64) };
    } else {
        lapic_write(0x310, dest << 24);
        lapic_write(0x300, low);
    }
}

/// Switch this vCPU's local APIC to x2APIC mode (CPUID advertises it) and check the APIC id
/// reads the same through the x2APIC MSR.
pub fn check_x2apic(t: &mut Tap) {
    let xapic_id = crate::checks::lapic_id();
    let has = pvh_rt::xen::cpuid(1, 0)[2] & (1 << 21) != 0;
    if !has {
        t.check("x2apic-mode", false, format_args!("CPUID.1:ECX[21] (x2APIC) is clear"));
        return;
    }
    // SAFETY: setting EXTD with EN set is the architectural switch to x2APIC mode.
    let id = unsafe {
        let base = pvh_rt::xen::rdmsr(0x1b);
        pvh_rt::xen::wrmsr(0x1b, base | (1 << 10) | (1 << 11));
        pvh_rt::xen::rdmsr(0x802)
    };
    t.check("x2apic-mode", x2apic_mode() && id == xapic_id as u64, format_args!("x2APIC id {id}, xAPIC id {xapic_id}"));
}

/// Guest memory as keel-acpi reads it: pvh-rt's identity map of the first 4 GiB.
struct Identity;

impl PhysMemory for Identity {
    fn read(&self, phys: u64, buf: &mut [u8]) -> Result<(), ()> {
        let end = phys.checked_add(buf.len() as u64).ok_or(())?;
        if phys == 0 || end > 1 << 32 {
            return Err(());
        }
        // SAFETY: below 4 GiB and non-null: identity-mapped; ACPI tables are plain memory.
        unsafe { core::ptr::copy_nonoverlapping(phys as *const u8, buf.as_mut_ptr(), buf.len()) };
        Ok(())
    }
}

/// APIC ids of the vCPUs other than this one, from the MADT the start info points at.
fn other_apic_ids(rsdp: u64, me: u32, out: &mut [u32; 64]) -> Option<usize> {
    let mut buf = [0u8; 36];
    Identity.read(rsdp, &mut buf[..20]).ok()?;
    let _ = Identity.read(rsdp, &mut buf);
    let rsdp = keel_acpi::parse_rsdp(&buf).ok()?;
    let tables = keel_acpi::read_tables(&Identity, &rsdp, &mut |_: AcpiWarning| {}).ok()?;
    let madt = keel_acpi::parse_madt(&Identity, tables.find(b"APIC")?, &mut |_: AcpiWarning| {}).ok()?;
    let mut n = 0;
    for cpu in madt.cpus().iter().filter(|c| c.enabled && c.apic_id != me) {
        if n < out.len() {
            out[n] = cpu.apic_id;
            n += 1;
        }
    }
    Some(n)
}

fn wait_for(c: &AtomicU32, want: u32, ms: u64) -> u32 {
    let end = crate::checks::rdtsc() + ms * crate::checks::tsc_per_ms();
    while c.load(Ordering::Acquire) < want && crate::checks::rdtsc() < end {
        core::hint::spin_loop();
    }
    c.load(Ordering::Acquire)
}

/// Start every other vCPU and send each an IPI. Prints nothing for a one-vCPU domain (there
/// is nothing to check there).
pub fn run(t: &mut Tap, rsdp: u64) -> usize {
    let me = crate::checks::lapic_id();
    let mut ids = [0u32; 64];
    let Some(n) = other_apic_ids(rsdp, me, &mut ids) else {
        t.check("acpi-madt", false, format_args!("cannot read the MADT through the start info's RSDP {rsdp:#x}"));
        return 0;
    };
    t.check("acpi-madt", true, format_args!(""));
    if n == 0 {
        return 0;
    }
    let start = core::ptr::addr_of!(probe_ap_start) as usize;
    let len = core::ptr::addr_of!(probe_ap_end) as usize - start;
    let ipi_offset = (core::ptr::addr_of!(probe_ap_ipi) as usize - start) as u16;
    // SAFETY: low guest RAM (the memory map gives RAM from 0), identity-mapped, not used by
    // this kernel (linked at 16 MiB): the trampoline page and the real-mode IVT entry.
    unsafe {
        core::ptr::copy_nonoverlapping(start as *const u8, TRAMPOLINE as *mut u8, len);
        core::ptr::write_bytes(COUNTERS as *mut u8, 0, 16);
        let ivt = (4 * NMI_VECTOR as u64) as *mut u16;
        ivt.write_volatile(ipi_offset);
        ivt.add(1).write_volatile((TRAMPOLINE >> 4) as u16);
    }
    for &id in &ids[..n] {
        send_ipi(id, 0x4500); // INIT, assert
        crate::checks::spin_us(100);
        send_ipi(id, 0x4600 | SIPI_VECTOR); // STARTUP
        crate::checks::spin_us(100);
        send_ipi(id, 0x4600 | SIPI_VECTOR); // STARTUP again (ignored by a running vCPU)
    }
    let arrived = wait_for(counter(1), n as u32, 1000);
    t.check(
        "smp-start-aps-init-sipi",
        arrived == n as u32,
        format_args!("{arrived} of {n} APs reached the trampoline"),
    );
    for &id in &ids[..n] {
        send_ipi(id, 0x0400); // NMI, physical destination
    }
    let nmis = wait_for(counter(2), n as u32, 1000);
    t.check("smp-nmi-ipi", nmis == n as u32, format_args!("{nmis} of {n} APs took the NMI"));
    n
}

/// INIT every other vCPU again (they stop: wait-for-SIPI), so that HLT with interrupts off on
/// this one leaves every vCPU of the domain down.
pub fn stop_aps(rsdp: u64, me: u32) {
    let mut ids = [0u32; 64];
    if let Some(n) = other_apic_ids(rsdp, me, &mut ids) {
        for &id in &ids[..n] {
            send_ipi(id, 0x4500);
        }
    }
}

// ---- Long-mode APs for the ABI suite ----

/// vCPUs the suite handles (ids 0 to `MAX_VCPUS - 1`).
pub const MAX_VCPUS: usize = 8;
const AP_STACK_SIZE: usize = 32 * 1024;
/// Where the long-mode trampoline goes (STARTUP vector 9).
const TRAMPOLINE64: u64 = 0x9000;
/// The vector that wakes an idle AP (its handler only acknowledges it).
pub const KICK_VECTOR: u8 = 0xf0;

#[repr(C, align(4096))]
struct ApStacks([[u8; AP_STACK_SIZE]; MAX_VCPUS]);

/// Stack `i` belongs to vCPU `i` (stack 0 is unused: vCPU 0 runs on pvh-rt's stack).
static mut AP_STACKS: ApStacks = ApStacks([[0; AP_STACK_SIZE]; MAX_VCPUS]);

core::arch::global_asm!(
    r#"
    .section .rodata.ap_trampoline64, "a"
    .code16
    .global probe_ap64_start
probe_ap64_start:
    cli
    xorw %ax, %ax
    movw %ax, %ds
    lgdtl (0x9000 + probe_ap64_gdt_ptr - probe_ap64_start)
    movl %cr4, %eax
    orl $0x20, %eax                     /* PAE */
    movl %eax, %cr4
    movl (0x9000 + probe_ap64_cr3 - probe_ap64_start), %eax
    movl %eax, %cr3
    movl $0xc0000080, %ecx
    rdmsr
    orl $0x100, %eax                    /* LME */
    wrmsr
    movl %cr0, %eax
    orl $0x80000001, %eax               /* PG | PE */
    movl %eax, %cr0
    ljmpl $0x08, $(0x9000 + probe_ap64_long - probe_ap64_start)
    .code64
probe_ap64_long:
    movl $0x10, %eax
    movw %ax, %ds
    movw %ax, %es
    movw %ax, %ss
    movq (0x9000 + probe_ap64_stack - probe_ap64_start), %rsp
    movq (0x9000 + probe_ap64_vcpu - probe_ap64_start), %rdi
    movq (0x9000 + probe_ap64_entry - probe_ap64_start), %rax
    jmp *%rax
    .balign 8
probe_ap64_gdt:
    .quad 0
    .quad 0x00af9a000000ffff            /* 0x08: 64-bit code */
    .quad 0x00cf92000000ffff            /* 0x10: data */
probe_ap64_gdt_ptr:
    .word 23
    .long 0x9000 + probe_ap64_gdt - probe_ap64_start
    .balign 8
    .global probe_ap64_cr3
probe_ap64_cr3:
    .quad 0
    .global probe_ap64_stack
probe_ap64_stack:
    .quad 0
    .global probe_ap64_vcpu
probe_ap64_vcpu:
    .quad 0
    .global probe_ap64_entry
probe_ap64_entry:
    .quad 0
    .global probe_ap64_end
probe_ap64_end:

    .section .text, "ax"
    .global probe_ap_entry64
/* A long-mode AP with RSP = its stack top and RDI = its vCPU id, on any GDT (Xen's
   VCPUOP_initialise leaves selectors 0): load ours, reload CS and the data segments. */
probe_ap_entry64:
    lgdt probe_ap_gdt_ptr(%rip)
    pushq $0x08
    leaq 1f(%rip), %rax
    pushq %rax
    lretq
1:  movl $0x10, %eax
    movw %ax, %ds
    movw %ax, %es
    movw %ax, %ss
    movw %ax, %fs
    movw %ax, %gs
    andq $-16, %rsp
    call probe_ap_main
    ud2

    .section .data, "aw"
    .balign 16
probe_ap_gdt:
    .quad 0
    .quad 0x00af9a000000ffff
    .quad 0x00cf92000000ffff
probe_ap_gdt_ptr:
    .word 23
    .quad probe_ap_gdt
    .code64
"#,
    options(att_syntax)
);

unsafe extern "C" {
    static probe_ap64_start: u8;
    static probe_ap64_cr3: u8;
    static probe_ap64_stack: u8;
    static probe_ap64_vcpu: u8;
    static probe_ap64_entry: u8;
    static probe_ap64_end: u8;
    fn probe_ap_entry64();
}

/// The long-mode entry of an AP: give it RSP = [`ap_stack_top`] and RDI = its vCPU id.
pub fn ap_entry64() -> u64 {
    probe_ap_entry64 as *const () as u64
}

/// Top of vCPU `vcpu`'s stack.
pub fn ap_stack_top(vcpu: usize) -> u64 {
    let base = core::ptr::addr_of!(AP_STACKS) as u64;
    base + ((vcpu.min(MAX_VCPUS - 1) + 1) * AP_STACK_SIZE) as u64
}

/// The vCPU this code runs on, from the stack it runs on (no hypervisor involved).
pub fn vcpu_id() -> usize {
    let rsp: u64;
    // SAFETY: reading RSP has no side effects.
    unsafe { core::arch::asm!("mov {}, rsp", out(reg) rsp, options(nomem, nostack, preserves_flags)) };
    let base = core::ptr::addr_of!(AP_STACKS) as u64;
    let size = (MAX_VCPUS * AP_STACK_SIZE) as u64;
    if rsp > base && rsp <= base + size {
        ((rsp - base - 1) / AP_STACK_SIZE as u64) as usize
    } else {
        0
    }
}

/// Per-AP state: 0 not started, 1 running the task loop.
static ONLINE: [AtomicU32; MAX_VCPUS] = [const { AtomicU32::new(0) }; MAX_VCPUS];
/// Per-AP mailbox: state (0 idle, 1 posted, 2 running, 3 done), task, argument, result.
static TASK_STATE: [AtomicU32; MAX_VCPUS] = [const { AtomicU32::new(0) }; MAX_VCPUS];
static TASK_FN: [AtomicU64; MAX_VCPUS] = [const { AtomicU64::new(0) }; MAX_VCPUS];
static TASK_ARG: [AtomicU64; MAX_VCPUS] = [const { AtomicU64::new(0) }; MAX_VCPUS];
static TASK_RESULT: [AtomicU64; MAX_VCPUS] = [const { AtomicU64::new(0) }; MAX_VCPUS];
/// Loop iterations of each AP (progress, to see whether it runs at all).
static HEARTBEAT: [AtomicU64; MAX_VCPUS] = [const { AtomicU64::new(0) }; MAX_VCPUS];
/// APIC id of each vCPU (from the MADT; u32::MAX unknown).
static APIC_ID: [AtomicU32; MAX_VCPUS] = [const { AtomicU32::new(u32::MAX) }; MAX_VCPUS];
/// Whether APs switch their local APIC to x2APIC mode (as the BSP did).
static AP_X2APIC: AtomicU32 = AtomicU32::new(0);

fn kick(_: &mut pvh_rt::idt::Frame) {
    crate::abi::fw::eoi();
}

/// The vCPUs of the domain, from the MADT: fills the vCPU-to-APIC-id table and returns how
/// many vCPUs there are (their ids are the MADT's processor UIDs).
pub fn discover_vcpus(rsdp: u64) -> Option<usize> {
    let mut buf = [0u8; 36];
    Identity.read(rsdp, &mut buf[..20]).ok()?;
    let _ = Identity.read(rsdp, &mut buf);
    let rsdp = keel_acpi::parse_rsdp(&buf).ok()?;
    let tables = keel_acpi::read_tables(&Identity, &rsdp, &mut |_: AcpiWarning| {}).ok()?;
    let madt = keel_acpi::parse_madt(&Identity, tables.find(b"APIC")?, &mut |_: AcpiWarning| {}).ok()?;
    let mut n = 0;
    for cpu in madt.cpus().iter().filter(|c| c.enabled) {
        if let Some(slot) = APIC_ID.get(cpu.acpi_uid as usize) {
            slot.store(cpu.apic_id, Ordering::Relaxed);
        }
        n += 1;
    }
    Some(n)
}

/// APIC id of `vcpu` (from the MADT).
pub fn apic_id_of(vcpu: usize) -> Option<u32> {
    APIC_ID.get(vcpu).map(|a| a.load(Ordering::Relaxed)).filter(|&a| a != u32::MAX)
}

/// Prepare the AP runtime: the kick handler, and whether APs use x2APIC mode.
pub fn ap_runtime_init() {
    pvh_rt::idt::register(KICK_VECTOR, kick);
    AP_X2APIC.store(x2apic_mode() as u32, Ordering::Relaxed);
}

/// Whether `vcpu` runs the task loop.
pub fn ap_online(vcpu: usize) -> bool {
    ONLINE.get(vcpu).is_some_and(|o| o.load(Ordering::Acquire) == 1)
}

/// Forget that `vcpu` runs the task loop (it was sent INIT or taken down).
pub fn ap_mark_offline(vcpu: usize) {
    if let Some(o) = ONLINE.get(vcpu) {
        o.store(0, Ordering::Release);
    }
    if let Some(s) = TASK_STATE.get(vcpu) {
        s.store(0, Ordering::Release);
    }
}

/// Progress counter of `vcpu`'s loop.
pub fn ap_heartbeat(vcpu: usize) -> u64 {
    HEARTBEAT.get(vcpu).map_or(0, |h| h.load(Ordering::Acquire))
}

#[unsafe(no_mangle)]
extern "C" fn probe_ap_main(vcpu: u64) -> ! {
    let me = (vcpu as usize).min(MAX_VCPUS - 1);
    pvh_rt::idt::load();
    // SAFETY: turning on this vCPU's local APIC (x2APIC mode if the BSP uses it), as any
    // kernel does on a secondary CPU; the SVR's spurious vector 0xff has a stub.
    unsafe {
        if AP_X2APIC.load(Ordering::Relaxed) == 1 {
            let base = pvh_rt::xen::rdmsr(0x1b);
            pvh_rt::xen::wrmsr(0x1b, base | (1 << 10) | (1 << 11));
        }
    }
    crate::abi::fw::lapic_write(0xf0, 0x1ff);
    ONLINE[me].store(1, Ordering::Release);
    loop {
        HEARTBEAT[me].fetch_add(1, Ordering::Relaxed);
        if TASK_STATE[me].compare_exchange(1, 2, Ordering::AcqRel, Ordering::Acquire).is_ok() {
            let f = TASK_FN[me].load(Ordering::Acquire);
            let arg = TASK_ARG[me].load(Ordering::Acquire);
            // SAFETY: only `run_on` stores task pointers, and they are `fn(u64) -> u64`.
            let f: fn(u64) -> u64 = unsafe { core::mem::transmute::<usize, fn(u64) -> u64>(f as usize) };
            let r = f(arg);
            TASK_RESULT[me].store(r, Ordering::Release);
            TASK_STATE[me].store(3, Ordering::Release);
            continue;
        }
        // SAFETY: wait for an interrupt (a kick, an upcall) with interrupts on; STI's shadow
        // covers HLT, so one arriving in between still ends the HLT.
        unsafe { core::arch::asm!("sti", "hlt", "cli", options(nomem, nostack)) };
    }
}

/// Copy the long-mode trampoline to 0x9000 and fill in its CR3, stack, vCPU id and entry.
fn place_trampoline64(vcpu: usize) {
    let start = core::ptr::addr_of!(probe_ap64_start) as u64;
    let len = core::ptr::addr_of!(probe_ap64_end) as u64 - start;
    let cr3: u64;
    // SAFETY: reading CR3 has no side effects.
    unsafe { core::arch::asm!("mov {}, cr3", out(reg) cr3, options(nomem, nostack)) };
    let slot = |sym: *const u8| TRAMPOLINE64 + (sym as u64 - start);
    // SAFETY: low guest RAM at 0x9000, identity-mapped and unused by this kernel (see the
    // real-mode trampoline above); the slots are 8-byte aligned inside the copied code.
    unsafe {
        core::ptr::copy_nonoverlapping(start as *const u8, TRAMPOLINE64 as *mut u8, len as usize);
        core::ptr::write_volatile(slot(core::ptr::addr_of!(probe_ap64_cr3)) as *mut u64, cr3);
        core::ptr::write_volatile(slot(core::ptr::addr_of!(probe_ap64_stack)) as *mut u64, ap_stack_top(vcpu));
        core::ptr::write_volatile(slot(core::ptr::addr_of!(probe_ap64_vcpu)) as *mut u64, vcpu as u64);
        core::ptr::write_volatile(slot(core::ptr::addr_of!(probe_ap64_entry)) as *mut u64, ap_entry64());
    }
}

/// Send INIT to `vcpu` (it stops: wait-for-SIPI).
pub fn init_ap(vcpu: usize) -> bool {
    let Some(apic) = apic_id_of(vcpu) else { return false };
    ap_mark_offline(vcpu);
    send_ipi(apic, 0x4500);
    crate::checks::spin_us(200);
    true
}

/// Start `vcpu` in long mode with INIT and STARTUP (the way Linux starts CPUs), and wait up
/// to one second for it to reach the task loop.
pub fn start_ap64(vcpu: usize) -> bool {
    if vcpu == 0 || vcpu >= MAX_VCPUS {
        return false;
    }
    let Some(apic) = apic_id_of(vcpu) else { return false };
    place_trampoline64(vcpu);
    ap_mark_offline(vcpu);
    send_ipi(apic, 0x4500);
    crate::checks::spin_us(200);
    send_ipi(apic, 0x4600 | (TRAMPOLINE64 >> 12) as u32);
    wait_online(vcpu, 1000)
}

/// Wait up to `ms` for `vcpu` to reach the task loop.
pub fn wait_online(vcpu: usize, ms: u64) -> bool {
    crate::abi::fw::wait_until(ms, || ap_online(vcpu))
}

/// Run `f(arg)` on `vcpu` and return its result, or `None` if the AP is not online or did
/// not finish within `ms` milliseconds. On vCPU 0 (or the caller's own) it runs here.
pub fn run_on(vcpu: usize, f: fn(u64) -> u64, arg: u64, ms: u64) -> Option<u64> {
    if vcpu == vcpu_id() {
        return Some(f(arg));
    }
    if !ap_online(vcpu) {
        return None;
    }
    let state = &TASK_STATE[vcpu];
    if state.load(Ordering::Acquire) != 0 && state.load(Ordering::Acquire) != 3 {
        return None;
    }
    TASK_FN[vcpu].store(f as usize as u64, Ordering::Release);
    TASK_ARG[vcpu].store(arg, Ordering::Release);
    state.store(1, Ordering::Release);
    if let Some(apic) = apic_id_of(vcpu) {
        send_ipi(apic, KICK_VECTOR as u32);
    }
    let done = crate::abi::fw::wait_until(ms, || state.load(Ordering::Acquire) == 3);
    if !done {
        return None;
    }
    state.store(0, Ordering::Release);
    Some(TASK_RESULT[vcpu].load(Ordering::Acquire))
}

/// Post `f(arg)` to `vcpu` without waiting (collect with [`collect`]).
pub fn post(vcpu: usize, f: fn(u64) -> u64, arg: u64) -> bool {
    if !ap_online(vcpu) || vcpu == 0 {
        return false;
    }
    let state = &TASK_STATE[vcpu];
    let s = state.load(Ordering::Acquire);
    if s != 0 && s != 3 {
        return false;
    }
    TASK_FN[vcpu].store(f as usize as u64, Ordering::Release);
    TASK_ARG[vcpu].store(arg, Ordering::Release);
    state.store(1, Ordering::Release);
    if let Some(apic) = apic_id_of(vcpu) {
        send_ipi(apic, KICK_VECTOR as u32);
    }
    true
}

/// Wait up to `ms` for the task posted to `vcpu` and return its result.
pub fn collect(vcpu: usize, ms: u64) -> Option<u64> {
    let state = TASK_STATE.get(vcpu)?;
    if !crate::abi::fw::wait_until(ms, || state.load(Ordering::Acquire) == 3) {
        return None;
    }
    state.store(0, Ordering::Release);
    Some(TASK_RESULT[vcpu].load(Ordering::Acquire))
}
