//! The probe's multiprocessor checks: find the other vCPUs in the ACPI MADT, start them the
//! native way (INIT, STARTUP, STARTUP through the local APIC into a real-mode trampoline), and
//! send them an IPI. This is how Linux 6.1 brings up a PVH guest's CPUs.
//!
//! The trampoline lives at guest-physical 0x8000 (STARTUP vector 8). Each AP takes a ticket,
//! counts itself in, and halts. Its local APIC is software-disabled after INIT (as on real
//! hardware) and a real-mode AP cannot reach the APIC page to enable it, so the IPI check
//! sends NMIs, which a disabled APIC still accepts: the real-mode IVT's NMI entry counts them.
//! Counters sit at 0x8f00.

use core::sync::atomic::{AtomicU32, Ordering};

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
