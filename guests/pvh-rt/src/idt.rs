//! Interrupts and exceptions for test kernels: one IDT, 256 stubs that save the scratch
//! registers (and RBX, which they use) and call the kernel's registered handler for the vector.
//!
//! An exception with no handler prints what happened on the console the kernel chose (see
//! `set_fatal_sink`) and stops the CPU, so a failing check never silently hangs.

use core::sync::atomic::{AtomicUsize, Ordering};

/// The interrupted context, as the stubs push it.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct Frame {
    pub r11: u64,
    pub r10: u64,
    pub r9: u64,
    pub r8: u64,
    pub rdi: u64,
    pub rsi: u64,
    pub rdx: u64,
    pub rcx: u64,
    pub rax: u64,
    pub rbx: u64,
    pub vector: u64,
    pub error_code: u64,
    pub rip: u64,
    pub cs: u64,
    pub rflags: u64,
    pub rsp: u64,
    pub ss: u64,
}

core::arch::global_asm!(
    r#"
    .section .text, "ax"
    .code64
    .p2align 4
pvh_rt_stubs:
    .set vec, 0
    .rept 256
    .p2align 4
    .if (vec == 8) || (vec == 10) || (vec == 11) || (vec == 12) || (vec == 13) || (vec == 14) || (vec == 17) || (vec == 21) || (vec == 29) || (vec == 30)
    .else
    pushq $0
    .endif
    pushq $vec
    jmp pvh_rt_trap_common
    .set vec, vec + 1
    .endr
pvh_rt_trap_common:
    pushq %rbx                      /* the stub uses it below: the interrupted code's value */
    pushq %rax
    pushq %rcx
    pushq %rdx
    pushq %rsi
    pushq %rdi
    pushq %r8
    pushq %r9
    pushq %r10
    pushq %r11
    movq %rsp, %rdi
    movq %rsp, %rbx                 /* rbx is callee-saved: it survives the call */
    andq $-16, %rsp
    cld
    call pvh_rt_trap
    movq %rbx, %rsp
    popq %r11
    popq %r10
    popq %r9
    popq %r8
    popq %rdi
    popq %rsi
    popq %rdx
    popq %rcx
    popq %rax
    popq %rbx
    addq $16, %rsp
    iretq
"#,
    options(att_syntax)
);

unsafe extern "C" {
    static pvh_rt_stubs: u8;
}

/// An interrupt or exception handler.
pub type Handler = fn(&mut Frame);

static HANDLERS: [AtomicUsize; 256] = [const { AtomicUsize::new(0) }; 256];
static FATAL_SINK: AtomicUsize = AtomicUsize::new(0);

#[repr(C, packed)]
struct Pointer {
    limit: u16,
    base: u64,
}

static mut IDT: [u128; 256] = [0; 256];

/// Build and load the IDT (every vector points at its stub).
pub fn init() {
    let base = core::ptr::addr_of!(pvh_rt_stubs) as u64;
    // SAFETY: the IDT is only written here, once, before interrupts are enabled on this
    // single-CPU test kernel; afterwards the CPU reads it.
    unsafe {
        let idt = &mut *core::ptr::addr_of_mut!(IDT);
        for (v, gate) in idt.iter_mut().enumerate() {
            let h = base + 16 * v as u64;
            let low = (h & 0xffff) | (0x08 << 16) | (0x8e00 << 32) | ((h >> 16) & 0xffff) << 48;
            *gate = low as u128 | ((h >> 32) as u128) << 64;
        }
        let ptr = Pointer { limit: (core::mem::size_of_val(idt) - 1) as u16, base: idt.as_ptr() as u64 };
        core::arch::asm!("lidt [{}]", in(reg) &ptr, options(nostack));
    }
}

/// Load the IDT built by [`init`] on this CPU (for other CPUs of the kernel: they share it).
pub fn load() {
    // SAFETY: the IDT is a static that `init` filled before any other CPU was started; LIDT
    // only reads the pointer structure.
    unsafe {
        let idt = &*core::ptr::addr_of!(IDT);
        let ptr = Pointer { limit: (core::mem::size_of_val(idt) - 1) as u16, base: idt.as_ptr() as u64 };
        core::arch::asm!("lidt [{}]", in(reg) &ptr, options(nostack));
    }
}

/// Handle `vector` with `handler`.
pub fn register(vector: u8, handler: Handler) {
    HANDLERS[vector as usize].store(handler as usize, Ordering::Release);
}

/// Stop handling `vector` (an exception there is fatal again).
pub fn unregister(vector: u8) {
    HANDLERS[vector as usize].store(0, Ordering::Release);
}

/// Where unhandled exceptions are reported (a function printing one line).
pub fn set_fatal_sink(sink: fn(core::fmt::Arguments<'_>)) {
    FATAL_SINK.store(sink as usize, Ordering::Release);
}

#[unsafe(no_mangle)]
extern "C" fn pvh_rt_trap(frame: &mut Frame) {
    let h = HANDLERS[frame.vector as usize & 0xff].load(Ordering::Acquire);
    if h != 0 {
        // SAFETY: only `register` stores non-zero values, and they are `Handler`s.
        let handler: Handler = unsafe { core::mem::transmute::<usize, Handler>(h) };
        handler(frame);
        return;
    }
    let sink = FATAL_SINK.load(Ordering::Acquire);
    if sink != 0 {
        // SAFETY: only `set_fatal_sink` stores non-zero values, and they are such functions.
        let sink: fn(core::fmt::Arguments<'_>) =
            unsafe { core::mem::transmute::<usize, fn(core::fmt::Arguments<'_>)>(sink) };
        let cr2: u64;
        // SAFETY: reading CR2 has no side effects.
        unsafe { core::arch::asm!("mov {}, cr2", out(reg) cr2, options(nomem, nostack)) };
        sink(format_args!(
            "unhandled exception {} (error {:#x}) at rip {:#x}, cr2 {:#x}",
            frame.vector, frame.error_code, frame.rip, cr2
        ));
    }
    loop {
        // SAFETY: stopping the CPU.
        unsafe { core::arch::asm!("cli; hlt") };
    }
}
