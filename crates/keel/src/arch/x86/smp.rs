//! Starting the application processors, and calling functions on other CPUs.
//!
//! **Start-up.** The AP trampoline (below) is copied to a page under 1 MiB. Each AP gets
//! INIT, then STARTUP with that page's number, and starts there in real mode. The trampoline
//! switches to protected mode, then to long mode on the boot page tables (which map the
//! trampoline page one-to-one and keel's image), jumps to `ap_start64` in keel's image, which
//! switches to keel's real page tables and the AP's own stack and calls `ap_entry`. APs are
//! started one at a time; the parameters for the one starting sit at the end of the page.
//!
//! **Cross-CPU calls.** `call_on(cpu, f, arg)` puts a request in the target's mailbox, sends
//! it the `CALL_VECTOR` IPI, and waits (bounded) for the answer.

use core::sync::atomic::{AtomicU64, AtomicU8, AtomicUsize, Ordering};

use super::apic::{self, Delivery, Dest};
use super::percpu::{self, PerCpu};
use super::time;
use super::traps::{self, TrapFrame};

core::arch::global_asm!(
    r#"
    .section .boot.trampoline, "ax"
    .code16
    .global ap_trampoline
ap_trampoline:
    cli
    cld
    movw %cs, %ax
    movw %ax, %ds
    movzwl %ax, %ebx
    shll $4, %ebx                           /* ebx = linear address of this page */
    lgdtl (tp_gdt_ptr - ap_trampoline)
    movl %cr0, %eax
    orl $1, %eax
    movl %eax, %cr0
    ljmpl *(tp_far32 - ap_trampoline)

    .code32
tp_protected:
    movw $0x10, %ax
    movw %ax, %ds
    movw %ax, %es
    movw %ax, %ss
    movl %cr4, %eax
    orl $0x20, %eax                         /* PAE */
    movl %eax, %cr4
    movl (tp_boot_cr3 - ap_trampoline)(%ebx), %eax
    movl %eax, %cr3
    movl $0xc0000080, %ecx
    rdmsr
    orl $0x100, %eax                        /* LME */
    orl (tp_efer_extra - ap_trampoline)(%ebx), %eax
    wrmsr
    movl %cr0, %eax
    orl $0x80010001, %eax                   /* PG | WP | PE */
    movl %eax, %cr0
    ljmpl *(tp_far64 - ap_trampoline)(%ebx)

    .code64
tp_long:
    movw $0x10, %ax
    movw %ax, %ds
    movw %ax, %es
    movw %ax, %ss
    movq (tp_cr3 - ap_trampoline)(%rbx), %rcx
    movq (tp_stack - ap_trampoline)(%rbx), %rdx
    movq (tp_percpu - ap_trampoline)(%rbx), %rdi
    movabsq $ap_start64, %rax
    jmpq *%rax

    .balign 8
tp_gdt_ptr:     .word 0
                .long 0
    .balign 8
tp_far32:       .long 0
                .word 0x18
    .balign 8
tp_far64:       .long 0
                .word 0x08
    .balign 8
tp_boot_cr3:    .long 0
tp_efer_extra:  .long 0
tp_cr3:         .quad 0
tp_stack:       .quad 0
tp_percpu:      .quad 0
ap_trampoline_end:

    .global tp_offsets
    .section .rodata, "a"
    .balign 8
tp_offsets:
    .quad tp_gdt_ptr - ap_trampoline
    .quad tp_far32 - ap_trampoline
    .quad tp_far64 - ap_trampoline
    .quad tp_boot_cr3 - ap_trampoline
    .quad tp_efer_extra - ap_trampoline
    .quad tp_cr3 - ap_trampoline
    .quad tp_stack - ap_trampoline
    .quad tp_percpu - ap_trampoline
    .quad tp_protected - ap_trampoline
    .quad tp_long - ap_trampoline
    .quad ap_trampoline_end - ap_trampoline

    .section .text, "ax"
    .code64
    .global ap_start64
ap_start64:
    movq %rcx, %cr3
    movq %rdx, %rsp
    xorl %ebp, %ebp
    call ap_entry
    ud2
"#,
    options(att_syntax)
);

unsafe extern "C" {
    static ap_trampoline: u8;
    static tp_offsets: [u64; 11];
}

/// Byte offsets of the trampoline's parameter slots and labels.
struct Offsets {
    gdt_ptr: usize,
    far32: usize,
    far64: usize,
    boot_cr3: usize,
    efer_extra: usize,
    cr3: usize,
    stack: usize,
    percpu: usize,
    protected: usize,
    long: usize,
    len: usize,
}

fn offsets() -> Offsets {
    // SAFETY: `tp_offsets` is an immutable table in .rodata written by the assembler.
    let o = unsafe { &*core::ptr::addr_of!(tp_offsets) };
    let u = |i: usize| o[i] as usize;
    Offsets {
        gdt_ptr: u(0),
        far32: u(1),
        far64: u(2),
        boot_cr3: u(3),
        efer_extra: u(4),
        cr3: u(5),
        stack: u(6),
        percpu: u(7),
        protected: u(8),
        long: u(9),
        len: u(10),
    }
}

/// The trampoline page prepared for starting APs.
pub struct Trampoline {
    /// Physical address (page aligned, below 1 MiB).
    phys: u64,
    /// Where keel reaches it (direct map).
    virt: u64,
}

impl Trampoline {
    /// Copy the trampoline to the low page `phys`, reachable at `virt`, and fill in the parts
    /// that are the same for every AP.
    pub fn install(phys: u64, virt: u64, boot_cr3: u64, nx: bool) -> Trampoline {
        assert!(phys.is_multiple_of(4096) && phys < 0x10_0000, "trampoline page must be below 1 MiB");
        let o = offsets();
        assert!(o.len <= 4096);
        // The .boot section is linked at its physical address, which keel's own page tables
        // do not map one-to-one: read the code through the direct map.
        let src = super::paging::phys_to_virt(core::ptr::addr_of!(ap_trampoline) as u64) as *const u8;
        // SAFETY: `virt` maps the whole low page, reserved for this purpose; the source is the
        // trampoline code in keel's image (reached through the direct map), `o.len` bytes long.
        unsafe { core::ptr::copy_nonoverlapping(src, virt as *mut u8, o.len) };
        let t = Trampoline { phys, virt };
        // The boot GDT (null, 64-bit code, data, 32-bit code) lives in the .boot section; its
        // 6-byte pointer is copied into the page, where real-mode LGDT can reach it.
        let boot_gdt_ptr_phys = super::boot::boot_gdt_ptr_phys();
        // SAFETY: the boot GDT pointer sits in the .boot section, which the direct map covers.
        let gdt_ptr: [u8; 6] = unsafe { *(super::paging::phys_to_virt(boot_gdt_ptr_phys) as *const [u8; 6]) };
        t.write_bytes(o.gdt_ptr, &gdt_ptr);
        t.write_u32(o.far32, (phys + o.protected as u64) as u32);
        t.write_u32(o.far64, (phys + o.long as u64) as u32);
        t.write_u32(o.boot_cr3, boot_cr3 as u32);
        t.write_u32(o.efer_extra, if nx { 1 << 11 } else { 0 });
        t
    }

    fn write_bytes(&self, off: usize, bytes: &[u8]) {
        // SAFETY: `off` is one of the assembler-computed slots inside the copied trampoline.
        unsafe { core::ptr::copy_nonoverlapping(bytes.as_ptr(), (self.virt + off as u64) as *mut u8, bytes.len()) };
    }

    fn write_u32(&self, off: usize, v: u32) {
        self.write_bytes(off, &v.to_le_bytes());
    }

    fn write_u64(&self, off: usize, v: u64) {
        self.write_bytes(off, &v.to_le_bytes());
    }

    /// STARTUP vector (page number).
    fn vector(&self) -> u8 {
        (self.phys >> 12) as u8
    }
}

/// Why an AP did not come up.
#[derive(Debug, Clone, Copy, Eq, PartialEq)]
pub enum StartError {
    /// It never reached `ap_entry`.
    NoResponse,
}

/// What `ap_entry` does once the AP runs keel code on its own stack and tables.
static AP_MAIN: AtomicUsize = AtomicUsize::new(0);

/// Start the AP described by `percpu` (already published, with its stacks mapped) and wait
/// until it is online. `final_cr3` is keel's page-table root; `ap_main` runs on the AP.
pub fn start_ap(
    t: &Trampoline,
    percpu: &'static PerCpu,
    final_cr3: u64,
    ap_main: fn(&'static PerCpu) -> !,
) -> Result<(), StartError> {
    AP_MAIN.store(ap_main as usize, Ordering::Release);
    let o = offsets();
    t.write_u64(o.cr3, final_cr3);
    t.write_u64(o.stack, percpu.stack.top);
    t.write_u64(o.percpu, percpu as *const PerCpu as u64);
    core::sync::atomic::fence(Ordering::SeqCst);

    let apic_id = percpu.apic_id;
    apic::send_ipi(Dest::Apic(apic_id), Delivery::Init, 0);
    time::udelay(1_000);
    for attempt in 0..2 {
        apic::send_ipi(Dest::Apic(apic_id), Delivery::Startup, t.vector());
        let deadline = time::deadline_after_ms(if attempt == 0 { 20 } else { 1_000 });
        while !time::passed(deadline) {
            if percpu.online.load(Ordering::Acquire) {
                return Ok(());
            }
            core::hint::spin_loop();
        }
    }
    Err(StartError::NoResponse)
}

/// First Rust code on an AP (called by `ap_start64` on the AP's own stack).
#[unsafe(no_mangle)]
extern "C" fn ap_entry(percpu: &'static PerCpu) -> ! {
    let f = AP_MAIN.load(Ordering::Acquire);
    // SAFETY: `start_ap` stored a `fn(&'static PerCpu) -> !` before sending STARTUP.
    let ap_main: fn(&'static PerCpu) -> ! = unsafe { core::mem::transmute::<usize, fn(&'static PerCpu) -> !>(f) };
    ap_main(percpu)
}

// ------------------------------------------------------------------------------------------
// Cross-CPU calls
// ------------------------------------------------------------------------------------------

const IDLE: u8 = 0;
const PENDING: u8 = 1;
const RUNNING: u8 = 2;
const DONE: u8 = 3;

/// A CPU's inbox for cross-CPU function calls (one call at a time).
pub struct CallMailbox {
    lock: spin::Mutex<()>,
    state: AtomicU8,
    func: AtomicUsize,
    arg: AtomicU64,
    result: AtomicU64,
}

impl CallMailbox {
    /// An empty mailbox.
    pub const fn new() -> Self {
        CallMailbox {
            lock: spin::Mutex::new(()),
            state: AtomicU8::new(IDLE),
            func: AtomicUsize::new(0),
            arg: AtomicU64::new(0),
            result: AtomicU64::new(0),
        }
    }
}

impl Default for CallMailbox {
    fn default() -> Self {
        Self::new()
    }
}

/// Why a cross-CPU call failed.
#[derive(Debug, Clone, Copy, Eq, PartialEq)]
pub enum CallError {
    /// No such CPU, or it is not online.
    NoSuchCpu,
    /// It did not answer within the timeout.
    Timeout,
}

/// Run `f(arg)` on CPU `index` and return its result, waiting at most `timeout_ms` for the
/// target to pick the call up (once it runs, the call is waited for to the end). A call to the
/// caller's own CPU runs directly.
pub fn call_on(index: usize, f: fn(u64) -> u64, arg: u64, timeout_ms: u64) -> Result<u64, CallError> {
    let target = percpu::cpu(index).ok_or(CallError::NoSuchCpu)?;
    if target.index == percpu::this_cpu().index {
        return Ok(f(arg));
    }
    if !target.online.load(Ordering::Acquire) {
        return Err(CallError::NoSuchCpu);
    }
    let mb = &target.call;
    let _guard = mb.lock.lock();
    mb.func.store(f as usize, Ordering::Relaxed);
    mb.arg.store(arg, Ordering::Relaxed);
    mb.state.store(PENDING, Ordering::Release);
    apic::send_ipi(Dest::Apic(target.apic_id), Delivery::Fixed, apic::CALL_VECTOR);
    let deadline = time::deadline_after_ms(timeout_ms);
    loop {
        if mb.state.load(Ordering::Acquire) == DONE {
            let r = mb.result.load(Ordering::Relaxed);
            mb.state.store(IDLE, Ordering::Release);
            return Ok(r);
        }
        // Withdraw the request if the target has not picked it up in time.
        if time::passed(deadline)
            && mb.state.compare_exchange(PENDING, IDLE, Ordering::AcqRel, Ordering::Acquire).is_ok()
        {
            return Err(CallError::Timeout);
        }
        core::hint::spin_loop();
    }
}

fn call_interrupt(_: &mut TrapFrame) {
    let mb = &percpu::this_cpu().call;
    if mb.state.compare_exchange(PENDING, RUNNING, Ordering::AcqRel, Ordering::Acquire).is_err() {
        return;
    }
    let f = mb.func.load(Ordering::Relaxed);
    // SAFETY: `call_on` stores a `fn(u64) -> u64` before publishing PENDING.
    let f: fn(u64) -> u64 = unsafe { core::mem::transmute::<usize, fn(u64) -> u64>(f) };
    let r = f(mb.arg.load(Ordering::Relaxed));
    mb.result.store(r, Ordering::Relaxed);
    mb.state.store(DONE, Ordering::Release);
}

/// Install the cross-CPU call interrupt handler (once, on the boot CPU).
pub fn init() {
    traps::register(apic::CALL_VECTOR, call_interrupt);
    traps::register(apic::KICK_VECTOR, |_| {});
}
