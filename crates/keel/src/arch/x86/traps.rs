//! Exceptions and interrupts: the IDT, the entry stubs, dispatch, and the fatal-error report.
//!
//! All 256 vectors enter through one small assembly stub each, which pushes a uniform
//! `TrapFrame` (every general-purpose register, the vector and the error code) and calls
//! `trap_dispatch`. The IDT is hand-written rather than the `x86_64` crate's, whose typed
//! entries are built around the unstable `x86-interrupt` ABI and would not give the full
//! register set an exception report needs.
//!
//! Exceptions in keel itself are fatal: keel prints what happened (vector, error code, every
//! register, CR2 for page faults, a call trace from the frame-pointer chain), stops every other
//! CPU with an NMI, and reboots, or stays halted with `noreboot`. Interrupts (vectors 32..255)
//! go to the handler registered for the vector.

use core::fmt;
use core::sync::atomic::{AtomicBool, AtomicU32, AtomicUsize, Ordering};

use x86_64::registers::control::{Cr0, Cr2, Cr3, Cr4};

use super::percpu::{self, ist};
use super::{apic, cpu, gdt, time};
use crate::console;
use crate::kprintln;

/// Saved state of the interrupted context, as the entry stubs lay it out.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct TrapFrame {
    pub r15: u64,
    pub r14: u64,
    pub r13: u64,
    pub r12: u64,
    pub r11: u64,
    pub r10: u64,
    pub r9: u64,
    pub r8: u64,
    pub rbp: u64,
    pub rdi: u64,
    pub rsi: u64,
    pub rdx: u64,
    pub rcx: u64,
    pub rbx: u64,
    pub rax: u64,
    /// Vector number (pushed by the stub).
    pub vector: u64,
    /// Error code (pushed by the CPU, or 0 by the stub).
    pub error_code: u64,
    pub rip: u64,
    pub cs: u64,
    pub rflags: u64,
    pub rsp: u64,
    pub ss: u64,
}

const _: () = assert!(core::mem::size_of::<TrapFrame>() == 22 * 8);

/// Page-fault vector.
pub const PAGE_FAULT: u8 = 14;
/// NMI vector.
pub const NMI: u8 = 2;
/// First vector that is an interrupt rather than an exception.
pub const FIRST_INTERRUPT: u8 = 32;

core::arch::global_asm!(
    r#"
    .section .text, "ax"
    .code64
    .p2align 4
    .global trap_stubs
trap_stubs:
    .set vec, 0
    .rept 256
    .p2align 4
    .if (vec == 8) || (vec == 10) || (vec == 11) || (vec == 12) || (vec == 13) || (vec == 14) || (vec == 17) || (vec == 21) || (vec == 29) || (vec == 30)
    .else
    pushq $0
    .endif
    pushq $vec
    jmp trap_common
    .set vec, vec + 1
    .endr

trap_common:
    pushq %rax
    pushq %rbx
    pushq %rcx
    pushq %rdx
    pushq %rsi
    pushq %rdi
    pushq %rbp
    pushq %r8
    pushq %r9
    pushq %r10
    pushq %r11
    pushq %r12
    pushq %r13
    pushq %r14
    pushq %r15
    movq %rsp, %rdi
    cld
    call trap_dispatch
    popq %r15
    popq %r14
    popq %r13
    popq %r12
    popq %r11
    popq %r10
    popq %r9
    popq %r8
    popq %rbp
    popq %rdi
    popq %rsi
    popq %rdx
    popq %rcx
    popq %rbx
    popq %rax
    addq $16, %rsp
    iretq
"#,
    options(att_syntax)
);

unsafe extern "C" {
    static trap_stubs: u8;
}

/// One 16-byte IDT gate.
#[derive(Clone, Copy)]
#[repr(C)]
struct Gate {
    offset_low: u16,
    selector: u16,
    ist: u8,
    type_attr: u8,
    offset_mid: u16,
    offset_high: u32,
    reserved: u32,
}

impl Gate {
    const MISSING: Gate =
        Gate { offset_low: 0, selector: 0, ist: 0, type_attr: 0, offset_mid: 0, offset_high: 0, reserved: 0 };

    /// A present, ring-0, 64-bit interrupt gate (interrupts stay off in the handler).
    fn interrupt(handler: u64, ist: u8) -> Gate {
        Gate {
            offset_low: handler as u16,
            selector: gdt::KERNEL_CS,
            ist,
            type_attr: 0x8e,
            offset_mid: (handler >> 16) as u16,
            offset_high: (handler >> 32) as u32,
            reserved: 0,
        }
    }
}

#[repr(C, align(16))]
struct Idt([Gate; 256]);

/// The IDT, shared by every CPU. Written once by the boot CPU before any other CPU runs.
static IDT: spin::Once<Idt> = spin::Once::new();

/// Build the IDT (first call) and load it on this CPU.
pub fn load_idt() {
    let idt = IDT.call_once(|| {
        let base = core::ptr::addr_of!(trap_stubs) as u64;
        let mut gates = [Gate::MISSING; 256];
        for (v, gate) in gates.iter_mut().enumerate() {
            let ist = match v as u8 {
                8 => ist::DOUBLE_FAULT as u8 + 1,
                NMI => ist::NMI as u8 + 1,
                18 => ist::MACHINE_CHECK as u8 + 1,
                _ => 0,
            };
            *gate = Gate::interrupt(base + 16 * v as u64, ist);
        }
        Idt(gates)
    });
    let ptr = x86_64::structures::DescriptorTablePointer {
        limit: (core::mem::size_of::<Idt>() - 1) as u16,
        base: x86_64::VirtAddr::new(idt as *const Idt as u64),
    };
    // SAFETY: the IDT is a static that lives forever and every gate points at a stub.
    unsafe { x86_64::instructions::tables::lidt(&ptr) };
}

/// Handler for an interrupt vector. Runs with interrupts disabled; the end-of-interrupt is
/// sent by the dispatcher after it returns.
pub type InterruptHandler = fn(&mut TrapFrame);

static HANDLERS: [AtomicUsize; 256] = [const { AtomicUsize::new(0) }; 256];

/// Register `handler` for interrupt `vector` (>= 32).
pub fn register(vector: u8, handler: InterruptHandler) {
    assert!(vector >= FIRST_INTERRUPT, "vectors below 32 are exceptions");
    HANDLERS[vector as usize].store(handler as usize, Ordering::Release);
}

/// Called by `trap_common` with the frame it pushed.
#[unsafe(no_mangle)]
extern "C" fn trap_dispatch(frame: &mut TrapFrame) {
    let vector = frame.vector as u8;
    if vector >= FIRST_INTERRUPT {
        let h = HANDLERS[vector as usize].load(Ordering::Acquire);
        if h != 0 {
            // SAFETY: only `register` stores non-zero values, and it stores `InterruptHandler`s.
            let handler: InterruptHandler = unsafe { core::mem::transmute::<usize, InterruptHandler>(h) };
            handler(frame);
        } else if vector != apic::SPURIOUS_VECTOR {
            log::warn!("interrupt on unexpected vector {vector:#x} ignored");
        }
        if vector != apic::SPURIOUS_VECTOR {
            apic::eoi();
        }
        return;
    }
    if vector == NMI && cpu::is_stopping() {
        // Another CPU is reporting a fatal error and asked everyone to stop.
        if let Some(me) = percpu::try_this_cpu() {
            me.stopped.store(true, Ordering::SeqCst);
        }
        cpu::halt_forever();
    }
    fatal_exception(frame);
}

fn exception_name(vector: u8) -> &'static str {
    match vector {
        0 => "divide error (#DE)",
        1 => "debug (#DB)",
        2 => "non-maskable interrupt (NMI)",
        3 => "breakpoint (#BP)",
        4 => "overflow (#OF)",
        5 => "bound range exceeded (#BR)",
        6 => "invalid opcode (#UD)",
        7 => "device not available (#NM)",
        8 => "double fault (#DF)",
        10 => "invalid TSS (#TS)",
        11 => "segment not present (#NP)",
        12 => "stack-segment fault (#SS)",
        13 => "general protection fault (#GP)",
        14 => "page fault (#PF)",
        16 => "x87 floating-point error (#MF)",
        17 => "alignment check (#AC)",
        18 => "machine check (#MC)",
        19 => "SIMD floating-point exception (#XM)",
        20 => "virtualization exception (#VE)",
        21 => "control protection (#CP)",
        29 => "VMM communication (#VC)",
        30 => "security exception (#SX)",
        _ => "reserved exception",
    }
}

/// Decoded page-fault error code.
struct PfError(u64);

impl fmt::Display for PfError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let e = self.0;
        write!(
            f,
            "{}, {}, {}{}{}",
            if e & 1 != 0 { "protection violation" } else { "not present" },
            if e & 2 != 0 { "write" } else { "read" },
            if e & 4 != 0 { "user" } else { "supervisor" },
            if e & 8 != 0 { ", reserved bit set" } else { "" },
            if e & 16 != 0 { ", instruction fetch" } else { "" },
        )
    }
}

fn fatal_exception(frame: &TrapFrame) -> ! {
    let vector = frame.vector as u8;
    let cpu_index = percpu::try_this_cpu().map_or(0, |c| c.index);
    let cr2 = Cr2::read_raw();
    begin_fatal(format_args!("{} (vector {}) on cpu {}", exception_name(vector), vector, cpu_index));
    if vector == PAGE_FAULT {
        kprintln!("faulting address: {:#018x}", cr2);
        kprintln!("error code: {:#06x} [{}]", frame.error_code, PfError(frame.error_code));
    } else {
        kprintln!("error code: {:#06x}", frame.error_code);
    }
    dump_registers(frame, cr2);
    call_trace(frame.rip, frame.rbp);
    stop_machine()
}

/// Serialises fatal reports: the first CPU to get here reports; others just halt.
static FATAL_OWNER: AtomicU32 = AtomicU32::new(u32::MAX);

/// Start a fatal-error report on this CPU (prints the headline), or halt quietly if another
/// CPU is already reporting one.
pub fn begin_fatal(headline: fmt::Arguments<'_>) {
    let me = percpu::try_this_cpu().map_or(0, |c| c.index);
    if FATAL_OWNER.compare_exchange(u32::MAX, me, Ordering::SeqCst, Ordering::SeqCst).is_err() {
        if let Some(c) = percpu::try_this_cpu() {
            c.stopped.store(true, Ordering::SeqCst);
        }
        cpu::halt_forever();
    }
    cpu::set_stopping();
    console::enter_emergency();
    kprintln!("----[ keel {} x86_64 ]----", env!("CARGO_PKG_VERSION"));
    kprintln!("FATAL: {}", headline);
}

fn dump_registers(f: &TrapFrame, cr2: u64) {
    kprintln!("rip: {:#018x}   cs: {:#06x}   rflags: {:#018x}", f.rip, f.cs, f.rflags);
    kprintln!("rsp: {:#018x}   ss: {:#06x}", f.rsp, f.ss);
    kprintln!("rax: {:016x}   rbx: {:016x}   rcx: {:016x}", f.rax, f.rbx, f.rcx);
    kprintln!("rdx: {:016x}   rsi: {:016x}   rdi: {:016x}", f.rdx, f.rsi, f.rdi);
    kprintln!("rbp: {:016x}   r8:  {:016x}   r9:  {:016x}", f.rbp, f.r8, f.r9);
    kprintln!("r10: {:016x}   r11: {:016x}   r12: {:016x}", f.r10, f.r11, f.r12);
    kprintln!("r13: {:016x}   r14: {:016x}   r15: {:016x}", f.r13, f.r14, f.r15);
    let (cr3, _) = Cr3::read_raw();
    // SAFETY: EFER exists on every x86-64 CPU.
    let efer = unsafe { cpu::rdmsr(cpu::msr::EFER) };
    kprintln!("cr0: {:016x}   cr2: {:016x}   cr3: {:016x}", Cr0::read_raw(), cr2, cr3.start_address().as_u64());
    kprintln!("cr4: {:016x}   efer: {:016x}", Cr4::read_raw(), efer);
}

/// Print the return addresses on the frame-pointer chain starting at `rbp`, following it only
/// while it stays inside one of this CPU's known stacks (so a corrupt chain cannot fault).
pub fn call_trace(rip: u64, mut rbp: u64) {
    kprintln!("call trace:");
    kprintln!("  [<{:#018x}>]", rip);
    let stacks = percpu::try_this_cpu().map(|c| (c.stack, c.ist_stacks));
    let boot_stack = super::boot::boot_stack_range();
    let on_a_stack = |addr: u64| {
        boot_stack.contains(addr, 16)
            || stacks.is_some_and(|(s, ists)| s.contains(addr, 16) || ists.iter().any(|i| i.contains(addr, 16)))
    };
    for _ in 0..32 {
        if !rbp.is_multiple_of(8) || !on_a_stack(rbp) {
            break;
        }
        // SAFETY: `rbp` is 8-aligned and [rbp, rbp+16) lies inside a mapped stack of this CPU.
        let (next, ret) = unsafe { (*(rbp as *const u64), *((rbp + 8) as *const u64)) };
        if ret == 0 {
            break;
        }
        kprintln!("  [<{:#018x}>]", ret);
        if next <= rbp {
            break;
        }
        rbp = next;
    }
}

/// Stop every other CPU with an NMI and wait for them; returns (stopped, online).
fn stop_other_cpus() -> (usize, usize) {
    cpu::set_stopping();
    let me = percpu::try_this_cpu().map_or(0, |c| c.index);
    if let Some(c) = percpu::try_this_cpu() {
        c.stopped.store(true, Ordering::SeqCst);
    }
    let online = percpu::all().filter(|c| c.online.load(Ordering::SeqCst)).count().max(1);
    if online > 1 {
        apic::send_nmi_all_but_self();
        let deadline = time::deadline_after_ms(200);
        while !time::passed(deadline) {
            if percpu::all()
                .all(|c| c.index == me || !c.online.load(Ordering::SeqCst) || c.stopped.load(Ordering::SeqCst))
            {
                break;
            }
            core::hint::spin_loop();
        }
    }
    let stopped = percpu::all().filter(|c| c.stopped.load(Ordering::SeqCst)).count().max(1);
    (stopped, online)
}

/// Stop every CPU for good (no fatal report; e.g. when power-off is impossible).
pub fn stop_others_and_halt() -> ! {
    stop_other_cpus();
    kprintln!("all CPUs halted");
    cpu::halt_forever()
}

/// Stop every other CPU with an NMI, wait for them, then reboot or (with `noreboot`) halt.
pub fn stop_machine() -> ! {
    let (stopped, online) = stop_other_cpus();
    if stopped >= online {
        kprintln!("all {} CPUs stopped", stopped);
    } else {
        kprintln!("{} of {} CPUs stopped; the others did not answer the NMI", stopped, online);
    }
    if NOREBOOT.load(Ordering::Relaxed) {
        kprintln!("halted (noreboot)");
        cpu::halt_forever()
    }
    kprintln!("rebooting");
    super::power::reboot()
}

/// `noreboot` from the command line: stay halted after a fatal error.
pub static NOREBOOT: AtomicBool = AtomicBool::new(false);
